"""Task models: an encoder under its Hugging Face prefix plus a task head.

`TaskModel(config, task)` has the parameter layout of transformers'
`{Bert,MobileBert}ForQuestionAnswering` (head `qa_outputs`),
`...ForSequenceClassification` (head `classifier`) or, for `task='base'`,
the bare `...Model` under the same prefix (`bert` or `mobilebert`).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hwa_lora_jax.models.bert import BertModel
from hwa_lora_jax.models.config import ModelConfig
from hwa_lora_jax.models.layers import Dense, kernel_init
from hwa_lora_jax.models.mobilebert import MobileBertModel

Array = jax.Array

TASKS = ("base", "question_answering", "sequence_classification")
# The parameter scope of each task's head, as transformers names it.
HEAD_NAMES = {"base": None, "question_answering": "qa_outputs",
              "sequence_classification": "classifier"}


def check_task(task: str) -> str:
    """Return `task` if it is supported, else raise ValueError naming the choices."""
    if task not in TASKS:
        raise ValueError(f"task={task!r} is not supported; expected one of {TASKS}.")
    return task


class TaskModel(nn.Module):
    """Encoder plus task head.

    Attributes:
      config: the architecture; `num_labels` sets the head width (2 for QA,
        1 for regression).
      task: one of `TASKS`.
    """

    config: ModelConfig
    task: str = "question_answering"

    @nn.compact
    def __call__(self, input_ids: Array, attention_mask: Array | None = None,
                 token_type_ids: Array | None = None, *, deterministic: bool = True
                 ) -> dict[str, Array | tuple[Array, ...]]:
        """Run the model on token ids of shape `(batch, seq)`.

        Dropout needs the `'dropout'` rng stream when `deterministic=False`.

        Returns:
          The encoder outputs (`last_hidden_state`, `hidden_states`, and
          `pooler_output` where the task pools) plus `start_logits` and
          `end_logits` `(batch, seq)` for QA, or `logits` `(batch, num_labels)`
          for sequence classification.
        """
        cfg = self.config
        check_task(self.task)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)

        encoder_cls = MobileBertModel if cfg.model_type == "mobilebert" else BertModel
        encoder = encoder_cls(cfg, add_pooling_layer=self.task != "question_answering",
                              name=cfg.model_type)
        outputs = dict(encoder(input_ids, attention_mask, token_type_ids,
                               deterministic=deterministic))

        if self.task == "question_answering":
            logits = Dense(cfg.num_labels, kernel_init(cfg), name="qa_outputs")(
                outputs["last_hidden_state"])
            outputs["start_logits"] = logits[..., 0]
            outputs["end_logits"] = logits[..., 1]
        elif self.task == "sequence_classification":
            rate = (cfg.classifier_dropout if cfg.classifier_dropout is not None
                    else cfg.hidden_dropout_prob)
            pooled = nn.Dropout(rate)(outputs["pooler_output"], deterministic=deterministic)
            outputs["logits"] = Dense(cfg.num_labels, kernel_init(cfg), name="classifier")(pooled)
        return outputs
