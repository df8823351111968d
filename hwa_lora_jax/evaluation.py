"""Evaluate a model over a whole dataset, digitally or on programmed analog tiles."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hwa_lora_jax.analog.config import AnalogConfig
from hwa_lora_jax.analog.tiles import TiledLayer
from hwa_lora_jax.analog.tree import drift_tree, program_tree
from hwa_lora_jax.data.batching import EXAMPLE_INDEX_KEY, EXAMPLE_MASK_KEY, eval_batches


def pad_sequence_axis(value: np.ndarray, length: int) -> np.ndarray:
    """Pad axis 1 of a per-token output (e.g. QA start logits) to `length` tokens.

    Padded positions get the lowest float32, so no span decoder picks them.
    """
    if value.ndim < 2 or value.shape[1] >= length:
        return value
    widths = [(0, 0)] * value.ndim
    widths[1] = (0, length - value.shape[1])
    return np.pad(value, widths, constant_values=np.finfo(np.float32).min)


def gather_rows(parts: Sequence[tuple[np.ndarray, np.ndarray]], num_rows: int,
                seq_len: int) -> np.ndarray:
    """Put per-batch results back in row order.

    Args:
      parts: `(row indices, values)` of the real rows of each batch.
      num_rows: rows in the evaluated arrays.
      seq_len: their token length; shorter per-token outputs are padded to it.

    Returns:
      The values of all `num_rows` rows, in the order of the input arrays.
    """
    indices = np.concatenate([index for index, _ in parts])
    values = np.concatenate([pad_sequence_axis(value, seq_len) for _, value in parts])
    ordered = np.empty_like(values)
    ordered[indices] = values
    return ordered


def predict(eval_step: Callable, frozen: Any, trainable: Any,
            analog_layers: Mapping[str, TiledLayer] | None, arrays: Mapping[str, np.ndarray],
            batch_size: int, *, key: jax.Array,
            length_buckets: Sequence[int] = ()) -> dict[str, np.ndarray]:
    """Run `eval_step` over every row of `arrays` in fixed-shape batches.

    Args:
      eval_step: from `training.make_eval_step`.
      frozen, trainable: the model's frozen params and trained pytree.
      analog_layers: programmed/drifted tiles, or None for a digital forward.
      arrays: model inputs, `(n, seq)` each.
      batch_size: rows per batch; the last batch (of each length bucket) is
        padded and the padding dropped from the result.
      key: PRNG key of the forward's output noise; batch i uses `fold_in(key, i)`.
      length_buckets: token lengths to group rows by (see
        `hwa_lora_jax.data.batching`); one compilation per length.

    Returns:
      Each output (`logits`, or `start_logits` and `end_logits`) for all n rows,
      in row order; per-token outputs are padded back to `seq`.
    """
    collected: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    batches = eval_batches(arrays, batch_size, length_buckets=length_buckets)
    for index, batch in enumerate(batches):
        mask = batch.pop(EXAMPLE_MASK_KEY)
        rows = batch.pop(EXAMPLE_INDEX_KEY)[mask]
        outputs = eval_step(frozen, trainable, analog_layers, batch,
                            jax.random.fold_in(key, index))
        for name, value in outputs.items():
            collected.setdefault(name, []).append((rows, np.asarray(value)[mask]))
    num_rows, seq_len = np.shape(next(iter(arrays.values())))[:2]
    return {name: gather_rows(parts, num_rows, seq_len) for name, parts in collected.items()}


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
