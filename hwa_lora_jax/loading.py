"""Load and save Hugging Face checkpoints for the Flax models.

A checkpoint is a hub id or a local folder in Hugging Face layout:
`config.json` plus `model.safetensors` (or a sharded
`model.safetensors.index.json`), read with safetensors' numpy API, or
`pytorch_model.bin`, which needs torch. Parameter names map one to one:
the Flax path `mobilebert/encoder/layer_3/attention/self/query/kernel` is the
transpose of the tensor `mobilebert.encoder.layer.3.attention.self.query.weight`.

Example:

    model, params, config = load_pretrained("path/to/mobilebert-uncased",
                                            task="question_answering")
    tokenizer = load_tokenizer("path/to/mobilebert-uncased", config)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import zlib
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from hwa_lora_jax.models.config import ModelConfig
from hwa_lora_jax.models.tasks import HEAD_NAMES, TaskModel, check_task

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
TORCH_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
# Files fetched for a hub id: weights, config and tokenizer.
_HUB_PATTERNS = ["config.json", "*.safetensors", "model.safetensors.index.json", "vocab.txt",
                 "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
# Buffers that some checkpoints store and the models recompute.
_IGNORED_SUFFIXES = ("position_ids",)


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: missing weights or wrong shapes."""


@dataclasses.dataclass(frozen=True)
class LoadReport:
    """Outcome of matching a checkpoint's tensors to the model.

    Attributes:
      missing_keys: Hugging Face names the model needs that the checkpoint
        lacks; only task-head weights may be missing, and those are newly
        initialized.
      unexpected_keys: checkpoint tensors the model does not use (for example
        the pre-training heads `cls.*`).
    """

    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]


class Pretrained(NamedTuple):
    model: TaskModel
    params: dict
    config: ModelConfig


def flax_path_to_hf_key(path: tuple[str, ...]) -> str:
    """Map a Flax parameter path to its Hugging Face state-dict key.

    `('mobilebert', 'encoder', 'layer_3', 'ffn_0', 'output', 'dense', 'kernel')`
    becomes `'mobilebert.encoder.layer.3.ffn.0.output.dense.weight'`.
    """
    parts = [re.sub(r"^(.*)_(\d+)$", r"\1.\2", part) for part in path[:-1]]
    leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(path[-1], path[-1])
    return ".".join(parts + [leaf])


def _hf_to_flax_array(path: tuple[str, ...], value: np.ndarray) -> np.ndarray:
    """Convert one tensor to the Flax layout: linear weights are stored transposed."""
    return value.T if path[-1] == "kernel" else value


def _normalize_key(key: str) -> str:
    """Rename legacy TF-style LayerNorm names (`gamma`, `beta`) as transformers does."""
    if key.endswith(".gamma"):
        return key[: -len("gamma")] + "weight"
    if key.endswith(".beta"):
        return key[: -len("beta")] + "bias"
    return key


def read_state_dict(folder: str | os.PathLike) -> tuple[dict[str, np.ndarray], str]:
    """Read every tensor of a checkpoint folder as float32 numpy arrays.

    Returns:
      The state dict and the path of the file (or index) it came from.

    Raises:
      FileNotFoundError: no weights file in `folder`.
      ImportError: only `pytorch_model.bin` exists and torch is not installed.
    """
    folder = os.fspath(folder)
    single = os.path.join(folder, SAFETENSORS_NAME)
    index = os.path.join(folder, SAFETENSORS_INDEX_NAME)
    torch_file = os.path.join(folder, TORCH_NAME)
    if os.path.isfile(single):
        files, source = [single], single
    elif os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        files, source = [os.path.join(folder, shard) for shard in shards], index
    elif os.path.isfile(torch_file):
        return _read_torch_file(torch_file), torch_file
    else:
        raise FileNotFoundError(
            f"No weights in {folder}: expected {SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME} "
            f"or {TORCH_NAME} (Hugging Face layout)."
        )

    from safetensors.numpy import load_file

    state: dict[str, np.ndarray] = {}
    for file in files:
        for key, value in load_file(file).items():
            state[_normalize_key(key)] = np.asarray(value, dtype=np.float32)
    return state, source


def _read_torch_file(path: str) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            f"{path} is a PyTorch pickle and reading it needs torch. Install a CPU build with "
            "`pip install torch==2.13.0`, or convert the checkpoint to model.safetensors "
            "once on a machine with torch (transformers' `save_pretrained(..., "
            "safe_serialization=True)`)."
        ) from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    return {_normalize_key(key): value.float().numpy() for key, value in state.items()}


def _init_leaf(path: tuple[str, ...], shape: tuple[int, ...], config: ModelConfig,
               key: jax.Array) -> np.ndarray:
    """Initialize one weight the way transformers initializes a new layer."""
    if path[-1] in ("kernel", "embedding"):
        key = jax.random.fold_in(key, zlib.crc32("/".join(path).encode()))
        return np.asarray(config.initializer_range * jax.random.normal(key, shape, jnp.float32))
    if path[-1] == "scale":
        return np.ones(shape, np.float32)
    return np.zeros(shape, np.float32)


def params_from_state_dict(
    state: Mapping[str, np.ndarray],
    config: ModelConfig,
    task: str,
    *,
    seed: int = 0,
    source: str = "<state dict>",
    log_new_weights: bool = True,
) -> tuple[dict, LoadReport]:
    """Convert a Hugging Face state dict to the Flax params of `TaskModel(config, task)`.

    Keys may carry the encoder prefix (`bert.`, `mobilebert.`) or not, as in a
    bare `BertModel` checkpoint. Task-head weights missing from the checkpoint
    are newly initialized from `seed` and logged.

    Raises:
      CheckpointError: an encoder weight is missing, or a tensor's shape
        differs from the model's (the message names the key and both shapes).
    """
    check_task(task)
    model = TaskModel(config, task)
    dummy = jnp.zeros((1, 2), jnp.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), dummy))["params"]
    expected = traverse_util.flatten_dict(shapes)

    prefix = config.model_type + "."
    encoder_roots = ("embeddings.", "encoder.", "pooler.")
    available = {}
    for key, value in state.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if not key.startswith(prefix) and key.startswith(encoder_roots):
            key = prefix + key
        available[key] = value

    head = HEAD_NAMES[task]
    init_key = jax.random.key(seed)
    params, missing, mismatched = {}, [], []
    for path, shape_struct in expected.items():
        hf_key = flax_path_to_hf_key(path)
        shape = tuple(shape_struct.shape)
        if hf_key not in available:
            missing.append(hf_key)
            params[path] = _init_leaf(path, shape, config, init_key)
            continue
        raw = available.pop(hf_key)
        value = _hf_to_flax_array(path, raw)
        if value.shape != shape:
            model_shape = shape[::-1] if path[-1] == "kernel" else shape
            mismatched.append(f"{hf_key}: checkpoint {raw.shape} vs model {model_shape}")
            continue
        params[path] = value

    if mismatched:
        raise CheckpointError(
            f"Shape mismatch between {source} and the {config.model_type} {task} model "
            f"(shapes in the checkpoint's [out, in] layout): " + "; ".join(mismatched)
            + ". Check that config.json matches the weights; for a task head of another "
            "size set num_labels accordingly."
        )
    # The task head and the pooler may be new, as when a QA or pre-training
    # checkpoint starts a classifier. Any other missing weight is an error.
    may_be_new = tuple(p + "." for p in (head, prefix + "pooler") if p is not None)
    missing_body = [key for key in missing if not key.startswith(may_be_new)]
    if missing_body:
        shown = ", ".join(missing_body[:8]) + (" ..." if len(missing_body) > 8 else "")
        raise CheckpointError(
            f"{source} lacks {len(missing_body)} encoder weight(s) of the {config.model_type} "
            f"model: {shown}. The checkpoint is incomplete or of another architecture; "
            "check config.json's model_type and sizes."
        )
    if missing and log_new_weights:
        logger.warning(
            "Some weights of the %s %s model were not initialized from %s and are newly "
            "initialized (seed %d): %s. Train them before use.",
            config.model_type, task, source, seed, missing)
    unexpected = tuple(sorted(available))
    if unexpected:
        logger.warning("Some weights of %s were not used by the %s %s model: %s",
                       source, config.model_type, task, _abbreviate(unexpected))
    nested = traverse_util.unflatten_dict({path: jnp.asarray(v) for path, v in params.items()})
    return nested, LoadReport(tuple(missing), unexpected)


def _abbreviate(keys: tuple[str, ...], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown if len(keys) <= limit else f"{shown} ... ({len(keys)} in all)"


def resolve_checkpoint(name_or_path: str | os.PathLike) -> str:
    """Return a local folder for a folder path or a Hugging Face hub id.

    Raises:
      FileNotFoundError: a path that does not exist, or a hub id that cannot
        be downloaded (for example without network access).
    """
    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise FileNotFoundError(f"{path} is a file; pass the checkpoint folder that contains it.")
    if path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"Checkpoint folder {path} does not exist.")
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(path, allow_patterns=_HUB_PATTERNS)
    except Exception as err:  # The hub client raises many error types.
        raise FileNotFoundError(
            f"{path!r} is not a local folder and could not be downloaded from the Hugging Face "
            f"hub ({type(err).__name__}: {err}). Without network access, pass a local folder "
            "that contains config.json and model.safetensors."
        ) from err


def load_config(folder: str | os.PathLike, **overrides: Any) -> ModelConfig:
    """Read `config.json` from a checkpoint folder into a `ModelConfig`."""
    path = os.path.join(os.fspath(folder), CONFIG_NAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No {CONFIG_NAME} in {folder} (Hugging Face layout expected).")
    return ModelConfig.from_json_file(path, **overrides)


def load_pretrained(
    name_or_path: str | os.PathLike,
    task: str = "question_answering",
    *,
    num_labels: int | None = None,
    seed: int = 0,
    log_new_weights: bool = True,
) -> Pretrained:
    """Load a checkpoint into `TaskModel(config, task)` and its params.

    Args:
      name_or_path: local folder in Hugging Face layout, or a hub id.
      task: `'question_answering'`, `'sequence_classification'` or `'base'`.
      num_labels: head width; defaults to the checkpoint's config. Question
        answering always has 2 (start and end).
      seed: seed of newly initialized task-head weights.
      log_new_weights: log the newly initialized weights; off when a saved
        adapter replaces them right after loading.

    Returns:
      `(model, params, config)`; `params` is the Flax params dict.
    """
    check_task(task)
    if task == "question_answering" and num_labels not in (None, 2):
        raise ValueError(f"num_labels={num_labels} is invalid for question answering; it is 2.")
    folder = resolve_checkpoint(name_or_path)
    overrides = {"num_labels": 2 if task == "question_answering" else num_labels}
    config = load_config(folder, **{k: v for k, v in overrides.items() if v is not None})
    state, source = read_state_dict(folder)
    params, _ = params_from_state_dict(state, config, task, seed=seed, source=source,
                                       log_new_weights=log_new_weights)
    return Pretrained(TaskModel(config, task), params, config)


def state_dict_from_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Convert Flax params to a Hugging Face state dict (inverse of loading)."""
    flat = traverse_util.flatten_dict(dict(params))
    return {flax_path_to_hf_key(path): np.ascontiguousarray(_hf_to_flax_array(path, np.asarray(v)))
            for path, v in flat.items()}


def save_pretrained(params: Mapping[str, Any], config: ModelConfig,
                    folder: str | os.PathLike) -> None:
    """Write `config.json` and `model.safetensors` in Hugging Face layout."""
    from safetensors.numpy import save_file

    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    hf_config = dataclasses.asdict(config)
    hf_config["true_hidden_size"] = config.true_hidden_size
    with open(os.path.join(folder, CONFIG_NAME), "w", encoding="utf-8") as f:
        json.dump(hf_config, f, indent=2, sort_keys=True)
    save_file(state_dict_from_params(params), os.path.join(folder, SAFETENSORS_NAME),
              metadata={"format": "pt"})


def load_tokenizer(name_or_path: str | os.PathLike, config: ModelConfig | None = None):
    """Load the checkpoint's tokenizer with transformers' `AutoTokenizer`.

    Raises:
      ValueError: the tokenizer's vocabulary size differs from the config's
        `vocab_size`. Offline, transformers can build a tokenizer with only
        its special tokens from a folder that lacks `vocab.txt` or
        `tokenizer.json`; this check catches that.
    """
    from transformers import AutoTokenizer

    folder = resolve_checkpoint(name_or_path)
    if config is None:
        config = load_config(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if len(tokenizer) != config.vocab_size:
        raise ValueError(
            f"The tokenizer in {folder} has {len(tokenizer)} tokens but config.json says "
            f"vocab_size={config.vocab_size}. Put the checkpoint's vocab.txt or tokenizer.json "
            "in that folder."
        )
    return tokenizer
