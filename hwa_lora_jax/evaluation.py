"""Evaluate a model over a whole dataset, digitally or on programmed analog tiles."""

from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.tiles import TiledLayer
from hwa_lora_jax.analog.tree import drift_tree, program_tree
from hwa_lora_jax.data.batching import EXAMPLE_MASK_KEY, eval_batches


def predict(eval_step: Callable, frozen: Any, trainable: Any,
            analog_layers: Mapping[str, TiledLayer] | None, arrays: Mapping[str, np.ndarray],
            batch_size: int, *, key: jax.Array) -> dict[str, np.ndarray]:
    """Run `eval_step` over every row of `arrays` in fixed-shape batches.

    Args:
      eval_step: from `training.make_eval_step`.
      frozen, trainable: the model's frozen params and trained pytree.
      analog_layers: programmed/drifted tiles, or None for a digital forward.
      arrays: model inputs, `(n, seq)` each.
      batch_size: rows per batch; the last batch is padded and the padding
        dropped from the result.
      key: PRNG key of the forward's output noise; batch i uses `fold_in(key, i)`.

    Returns:
      Each output (`logits`, or `start_logits` and `end_logits`) for all n rows.
    """
    collected: dict[str, list[np.ndarray]] = {}
    for index, batch in enumerate(eval_batches(arrays, batch_size)):
        mask = batch.pop(EXAMPLE_MASK_KEY)
        outputs = eval_step(frozen, trainable, analog_layers, batch,
                            jax.random.fold_in(key, index))
        for name, value in outputs.items():
            collected.setdefault(name, []).append(np.asarray(value)[mask])
    return {name: np.concatenate(parts) for name, parts in collected.items()}


def make_program_and_read(map_fn: Callable, config: AnalogConfig) -> Callable:
    """Build a jitted `(params, key, t_seconds) -> drifted tiles` for one trial.

    `map_fn(params)` maps the analog layers to tiles; the tiles are then
    programmed with fresh programming noise and drift exponents from `key`,
    and read at `t_seconds` after programming (drift, read noise, global drift
    compensation).
    """

    def program_and_read(params, key, t_seconds):
        program_key, read_key = jax.random.split(key)
        programmed = program_tree(map_fn(params), config, key=program_key)
        return drift_tree(programmed, jnp.asarray(t_seconds, jnp.float32), config, key=read_key)

    return jax.jit(program_and_read)
