"""Architecture configuration for the Flax BERT and MobileBERT encoders.

`ModelConfig` is a frozen, hashable mirror of the Hugging Face `config.json`
fields that the forward pass reads. It is built from a checkpoint's
`config.json` with `ModelConfig.from_hf_dict`, or from a named preset.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("bert", "mobilebert")
SUPPORTED_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh", "tanh", "silu")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of a BERT or MobileBERT encoder and its task head.

    Field names and meanings follow transformers' `BertConfig` and
    `MobileBertConfig`; MobileBERT-only fields are ignored for BERT.
    """

    model_type: str = "mobilebert"
    vocab_size: int = 30522
    hidden_size: int = 512
    num_hidden_layers: int = 24
    num_attention_heads: int = 4
    intermediate_size: int = 512
    hidden_act: str = "relu"
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.1
    classifier_dropout: float | None = None
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    # Task head: 2 outputs (start, end) for extractive QA; the number of
    # classes for classification, or 1 for regression (STS-B).
    num_labels: int = 2
    # MobileBERT only.
    embedding_size: int = 128
    trigram_input: bool = True
    use_bottleneck: bool = True
    intra_bottleneck_size: int = 128
    use_bottleneck_attention: bool = False
    key_query_shared_bottleneck: bool = True
    num_feedforward_networks: int = 4
    normalization_type: str = "no_norm"
    classifier_activation: bool = True

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type={self.model_type!r} is not supported; expected one of "
                f"{SUPPORTED_MODEL_TYPES}."
            )
        if self.hidden_act not in SUPPORTED_ACTIVATIONS:
            raise ValueError(
                f"hidden_act={self.hidden_act!r} is not supported; expected one of "
                f"{SUPPORTED_ACTIVATIONS}."
            )
        if self.normalization_type not in ("no_norm", "layer_norm"):
            raise ValueError(
                f"normalization_type={self.normalization_type!r} is invalid; expected "
                "'no_norm' or 'layer_norm'."
            )
        if self.true_hidden_size % self.num_attention_heads:
            raise ValueError(
                f"The attention width {self.true_hidden_size} is not a multiple of "
                f"num_attention_heads={self.num_attention_heads}."
            )
        if self.num_labels < 1:
            raise ValueError(f"num_labels={self.num_labels} is invalid; it must be >= 1.")

    @property
    def true_hidden_size(self) -> int:
        """Width of the attention and feed-forward blocks (the bottleneck in MobileBERT)."""
        if self.model_type == "mobilebert" and self.use_bottleneck:
            return self.intra_bottleneck_size
        return self.hidden_size

    @classmethod
    def from_hf_dict(cls, hf_config: dict[str, Any], **overrides: Any) -> "ModelConfig":
        """Build a config from the contents of a Hugging Face `config.json`.

        Unknown keys are ignored. Label counts come from `num_labels`, or else
        from the length of `id2label`, as in transformers.
        """
        model_type = hf_config.get("model_type", cls.model_type)
        values = dict(_HF_DEFAULTS.get(model_type, {}))
        values.update(hf_config)
        if "num_labels" not in values and "id2label" in values:
            values["num_labels"] = len(values["id2label"])
        names = {field.name for field in dataclasses.fields(cls)}
        kwargs = {key: value for key, value in values.items() if key in names}
        kwargs.update(overrides)
        return cls(**kwargs)

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides: Any) -> "ModelConfig":
        """Read a Hugging Face `config.json` file."""
        with open(path, encoding="utf-8") as f:
            try:
                hf_config = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path} is not valid JSON: {err}") from err
        if "model_type" not in hf_config:
            raise ValueError(
                f"{path} has no 'model_type'; expected 'bert' or 'mobilebert' as in a "
                "Hugging Face config.json."
            )
        return cls.from_hf_dict(hf_config, **overrides)


# Defaults of transformers' `BertConfig` where they differ from this class's
# (MobileBertConfig) defaults, so that a config.json that omits a field means
# what it means to transformers.
_HF_DEFAULTS: dict[str, dict[str, Any]] = {
    "bert": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                 attention_probs_dropout_prob=0.1, normalization_type="layer_norm"),
    "mobilebert": {},
}


def _bert(**kwargs: Any) -> ModelConfig:
    return ModelConfig(**{**_HF_DEFAULTS["bert"], "model_type": "bert", **kwargs})


# Architectures as published on the Hugging Face hub (`config.json` of
# google/mobilebert-uncased, bert-base-uncased, bert-large-uncased and
# sentence-transformers/all-MiniLM-L6-v2).
PRESETS: dict[str, ModelConfig] = {
    # google/mobilebert-uncased sets classifier_activation to false: the
    # pooler is the first token's state, with no dense layer.
    "mobilebert": ModelConfig(classifier_activation=False),
    "bert-base": _bert(),
    "bert-large": _bert(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                        intermediate_size=4096),
    "minilm-l6": _bert(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                       intermediate_size=1536),
}


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """Return a named architecture preset, optionally with fields replaced."""
    if name not in PRESETS:
        raise ValueError(f"Unknown architecture preset {name!r}; expected one of {sorted(PRESETS)}.")
    return dataclasses.replace(PRESETS[name], **overrides)
