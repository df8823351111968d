"""Batches of numpy arrays for training and for fixed-shape evaluation."""

from __future__ import annotations

from typing import Iterator, Mapping

import numpy as np

# Key of the per-example validity mask that `eval_batches` adds to each batch.
EXAMPLE_MASK_KEY = "example_mask"


def _num_examples(arrays: Mapping[str, np.ndarray]) -> int:
    if not arrays:
        raise ValueError("No arrays to batch: the mapping is empty.")
    sizes = {key: len(value) for key, value in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"All arrays must have the same leading dimension, got {sizes}.")
    num_examples = next(iter(sizes.values()))
    if num_examples == 0:
        raise ValueError("No examples to batch: the arrays are empty.")
    return num_examples


def _check_batch_size(batch_size: int) -> None:
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    """Return the number of batches that `batch_iterator` or `eval_batches` yields."""
    _check_batch_size(batch_size)
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batch_iterator(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int, epoch: int,
                   shuffle: bool = True,
                   drop_remainder: bool = True) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches of `arrays`, in an order fixed by (seed, epoch).

    The permutation comes from `np.random.default_rng([seed, epoch])`, so a
    resumed run sees the same batches as an uninterrupted one.

    Args:
      arrays: arrays that share their leading (example) dimension.
      batch_size: examples per batch.
      seed: shuffling seed.
      epoch: epoch number; each epoch gets its own permutation.
      shuffle: permute the examples; False keeps their order.
      drop_remainder: drop the last batch when it has fewer than `batch_size`
        examples, so every batch has the same shape.

    Yields:
      Dicts with the keys of `arrays` and leading dimension `batch_size`
      (the last batch may be smaller when `drop_remainder` is False).

    Raises:
      ValueError: no arrays, arrays of different lengths, no examples, or a
        non-positive batch size.
    """
    num_examples = _num_examples(arrays)
    _check_batch_size(batch_size)
    if shuffle:
        order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    else:
        order = np.arange(num_examples)
    for batch_index in range(num_batches(num_examples, batch_size, drop_remainder)):
        indices = order[batch_index * batch_size:(batch_index + 1) * batch_size]
        yield {key: value[indices] for key, value in arrays.items()}


def eval_batches(arrays: Mapping[str, np.ndarray],
                 batch_size: int) -> Iterator[dict[str, np.ndarray]]:
    """Yield every example in order, in batches of exactly `batch_size` rows.

    The last batch is filled up with copies of the last example, so an
    evaluation step compiles for one batch shape. Each batch also contains
    `EXAMPLE_MASK_KEY`, a bool array that is True for real rows and False for
    the copies; weight per-example results with it.

    Raises:
      ValueError: as for `batch_iterator`, or an input key equal to
        `EXAMPLE_MASK_KEY`.
    """
    num_examples = _num_examples(arrays)
    _check_batch_size(batch_size)
    if EXAMPLE_MASK_KEY in arrays:
        raise ValueError(f"The input arrays already contain the key {EXAMPLE_MASK_KEY!r}.")
    for start in range(0, num_examples, batch_size):
        stop = min(start + batch_size, num_examples)
        num_padding = batch_size - (stop - start)
        batch = {}
        for key, value in arrays.items():
            rows = value[start:stop]
            if num_padding:
                padding = np.repeat(value[stop - 1:stop], num_padding, axis=0)
                rows = np.concatenate([rows, padding])
            batch[key] = rows
        batch[EXAMPLE_MASK_KEY] = np.arange(batch_size) < stop - start
        yield batch
