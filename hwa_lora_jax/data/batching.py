"""Batches of numpy arrays for training and for fixed-shape evaluation.

Length buckets: with `length_buckets=(16, 32)` and inputs padded to 64
tokens, each sequence goes to the smallest of 16, 32 and 64 tokens that fits
it, every batch contains sequences of one bucket only, and the token arrays of
the batch are cut to that length. A jitted step then compiles once per bucket
and does not spend its time on padding. Without buckets every batch keeps
the full length.
"""

from __future__ import annotations

from typing import Iterator, Mapping, Sequence

import numpy as np

# Key of the per-example validity mask that `eval_batches` adds to each batch.
EXAMPLE_MASK_KEY = "example_mask"
# Key of the row index (into the input arrays) that `eval_batches` adds to each batch.
EXAMPLE_INDEX_KEY = "example_index"
# Array whose nonzero entries mark the real tokens of each sequence.
LENGTH_SOURCE = "attention_mask"


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


def sequence_lengths(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Return the tokens of each row up to its last real one, from `attention_mask`."""
    if LENGTH_SOURCE not in arrays or np.ndim(arrays[LENGTH_SOURCE]) != 2:
        raise ValueError(f"Length buckets need a 2-D {LENGTH_SOURCE!r} array; got keys "
                         f"{sorted(arrays)}. Set length_buckets=() for these arrays.")
    real = np.asarray(arrays[LENGTH_SOURCE]) != 0
    seq_len = real.shape[1]
    last = seq_len - np.argmax(real[:, ::-1], axis=1)
    return np.where(real.any(axis=1), last, 0)


def bucket_lengths(arrays: Mapping[str, np.ndarray],
                   length_buckets: Sequence[int]) -> np.ndarray:
    """Return the padded length of each row: the smallest bucket that fits it.

    Args:
      arrays: model inputs with an `attention_mask` of shape `(n, seq_len)`.
      length_buckets: bucket lengths in tokens; those >= seq_len are dropped and
        seq_len is always the last bucket.

    Returns:
      int64 `(n,)` padded lengths.
    """
    for value in length_buckets:
        if int(value) != value or value < 1:
            raise ValueError(f"length_buckets={tuple(length_buckets)} contains {value!r}; every "
                             "bucket must be a positive whole number of tokens, e.g. (16, 32).")
    seq_len = np.shape(arrays[LENGTH_SOURCE])[1] if LENGTH_SOURCE in arrays else 0
    lengths = sequence_lengths(arrays)
    bounds = np.array(sorted({int(b) for b in length_buckets if b < seq_len} | {seq_len}))
    return bounds[np.searchsorted(bounds, lengths)]


def _cut(arrays: Mapping[str, np.ndarray], indices: np.ndarray,
         length: int | None) -> dict[str, np.ndarray]:
    """Gather `indices` and cut the token arrays (2-D, full length) to `length`."""
    seq_len = np.shape(arrays[LENGTH_SOURCE])[1] if LENGTH_SOURCE in arrays else None
    batch = {}
    for key, value in arrays.items():
        rows = value[indices]
        if length is not None and rows.ndim >= 2 and rows.shape[1] == seq_len:
            rows = rows[:, :length]
        batch[key] = rows
    return batch


def batch_plan(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int, epoch: int,
               shuffle: bool = True, drop_remainder: bool = True,
               length_buckets: Sequence[int] = ()) -> list[tuple[np.ndarray, int | None]]:
    """Return one epoch's batches as (row indices, padded length or None) pairs.

    See `batch_iterator` for the arguments. The number of batches does not
    depend on `seed` or `epoch`.
    """
    num_examples = _num_examples(arrays)
    _check_batch_size(batch_size)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(num_examples) if shuffle else np.arange(num_examples)
    if not length_buckets:
        count = num_batches(num_examples, batch_size, drop_remainder)
        return [(order[i * batch_size:(i + 1) * batch_size], None) for i in range(count)]
    padded = bucket_lengths(arrays, length_buckets)[order]
    plan = []
    for length in np.unique(padded):
        members = order[padded == length]
        count = num_batches(len(members), batch_size, drop_remainder)
        plan += [(members[i * batch_size:(i + 1) * batch_size], int(length))
                 for i in range(count)]
    if shuffle:
        plan = [plan[i] for i in rng.permutation(len(plan))]
    return plan


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    """Return the number of batches that `batch_iterator` or `eval_batches` yields."""
    _check_batch_size(batch_size)
    if drop_remainder:
        return num_examples // batch_size
    return -(-num_examples // batch_size)


def batch_iterator(arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int, epoch: int,
                   shuffle: bool = True, drop_remainder: bool = True,
                   length_buckets: Sequence[int] = ()) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches of `arrays`, in an order fixed by (seed, epoch).

    The permutation comes from `np.random.default_rng([seed, epoch])`, so a
    resumed run gets the same batches as an uninterrupted one.

    Args:
      arrays: arrays that share their leading (example) dimension.
      batch_size: examples per batch.
      seed: shuffling seed.
      epoch: epoch number; each epoch gets its own permutation.
      shuffle: permute the examples; False keeps their order.
      drop_remainder: drop the last batch (of each bucket) when it has fewer
        than `batch_size` examples, so every batch has `batch_size` rows.
      length_buckets: bucket lengths in tokens (see the module docstring); the
        batches of all buckets are shuffled together.

    Yields:
      Dicts with the keys of `arrays` and leading dimension `batch_size`
      (the last batch may be smaller when `drop_remainder` is False).

    Raises:
      ValueError: no arrays, arrays of different lengths, no examples, a
        non-positive batch size or an invalid bucket.
    """
    for indices, length in batch_plan(arrays, batch_size, seed=seed, epoch=epoch,
                                      shuffle=shuffle, drop_remainder=drop_remainder,
                                      length_buckets=length_buckets):
        yield _cut(arrays, indices, length)


def eval_batches(arrays: Mapping[str, np.ndarray], batch_size: int, *,
                 length_buckets: Sequence[int] = ()) -> Iterator[dict[str, np.ndarray]]:
    """Yield every example once, in batches of exactly `batch_size` rows.

    Without buckets the examples come in order. With buckets they are grouped
    by bucket (shortest first, in order within a bucket) and cut to the
    bucket's length. The last batch of each group is filled up with copies of
    its last example, so an evaluation step compiles once per length. Each
    batch also contains `EXAMPLE_MASK_KEY`, a bool array that is True for real
    rows and False for the copies, and `EXAMPLE_INDEX_KEY`, each row's index
    in `arrays`; use them to put per-example results back in order.

    Raises:
      ValueError: as for `batch_iterator`, or an input key equal to
        `EXAMPLE_MASK_KEY` or `EXAMPLE_INDEX_KEY`.
    """
    num_examples = _num_examples(arrays)
    _check_batch_size(batch_size)
    for reserved in (EXAMPLE_MASK_KEY, EXAMPLE_INDEX_KEY):
        if reserved in arrays:
            raise ValueError(f"The input arrays already contain the key {reserved!r}.")
    if length_buckets:
        padded = bucket_lengths(arrays, length_buckets)
        groups = [(np.flatnonzero(padded == length), int(length))
                  for length in np.unique(padded)]
    else:
        groups = [(np.arange(num_examples), None)]
    for members, length in groups:
        for start in range(0, len(members), batch_size):
            rows = members[start:start + batch_size]
            num_real = len(rows)
            rows = np.concatenate([rows, np.repeat(rows[-1:], batch_size - num_real)])
            batch = _cut(arrays, rows, length)
            batch[EXAMPLE_MASK_KEY] = np.arange(batch_size) < num_real
            batch[EXAMPLE_INDEX_KEY] = rows
            yield batch
