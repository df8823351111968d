"""Tests for the training batch iterator and padded evaluation batches."""

import numpy as np
import pytest

from hwa_lora_jax.data import EXAMPLE_INDEX_KEY, EXAMPLE_MASK_KEY, batch_iterator, batch_plan
from hwa_lora_jax.data import bucket_lengths, eval_batches, num_batches

ARRAYS = {"input_ids": np.arange(20, dtype=np.int32).reshape(10, 2),
          "labels": np.arange(10, dtype=np.int32)}


def _labels(batches):
    return [batch["labels"].tolist() for batch in batches]


def test_same_seed_epoch_same_batches():
    first = _labels(batch_iterator(ARRAYS, 3, seed=1, epoch=2))
    again = _labels(batch_iterator(ARRAYS, 3, seed=1, epoch=2))
    assert first == again


@pytest.mark.parametrize("seed,epoch", [(1, 3), (2, 2)])
def test_other_seed_or_epoch_reorders(seed, epoch):
    reference = _labels(batch_iterator(ARRAYS, 3, seed=1, epoch=2))
    assert _labels(batch_iterator(ARRAYS, 3, seed=seed, epoch=epoch)) != reference


def test_rows_stay_aligned():
    for batch in batch_iterator(ARRAYS, 4, seed=0, epoch=0):
        np.testing.assert_array_equal(batch["input_ids"][:, 0], 2 * batch["labels"])


@pytest.mark.parametrize("drop_remainder,sizes", [(True, [3, 3, 3]), (False, [3, 3, 3, 1])])
def test_drop_remainder(drop_remainder, sizes):
    batches = list(batch_iterator(ARRAYS, 3, seed=0, epoch=0, drop_remainder=drop_remainder))
    assert [len(batch["labels"]) for batch in batches] == sizes
    assert num_batches(10, 3, drop_remainder) == len(sizes)


def test_epoch_visits_each_example_once():
    batches = batch_iterator(ARRAYS, 5, seed=7, epoch=0)
    labels = np.concatenate([batch["labels"] for batch in batches])
    assert sorted(labels.tolist()) == list(range(10))
    assert labels.tolist() != list(range(10))


def test_no_shuffle_keeps_order():
    batches = batch_iterator(ARRAYS, 4, seed=0, epoch=0, shuffle=False, drop_remainder=False)
    assert _labels(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_eval_batches_pad_last_batch():
    batches = list(eval_batches(ARRAYS, 4))
    assert [batch["labels"].shape for batch in batches] == [(4,)] * 3
    assert batches[-1]["labels"].tolist() == [8, 9, 9, 9]
    assert batches[-1][EXAMPLE_MASK_KEY].tolist() == [True, True, False, False]
    assert batches[0][EXAMPLE_MASK_KEY].all()
    assert batches[-1]["input_ids"].shape == (4, 2)
    masked = np.concatenate([b["labels"][b[EXAMPLE_MASK_KEY]] for b in batches])
    assert masked.tolist() == list(range(10))


def test_eval_batches_exact_multiple():
    batches = list(eval_batches(ARRAYS, 5))
    assert len(batches) == 2
    assert all(batch[EXAMPLE_MASK_KEY].all() for batch in batches)


def test_eval_batches_string_arrays():
    arrays = {"example_id": np.asarray(["a", "b", "c"])}
    batches = list(eval_batches(arrays, 2))
    assert batches[1]["example_id"].tolist() == ["c", "c"]


@pytest.mark.parametrize("arrays,batch_size,message", [
    ({}, 2, "mapping is empty"),
    ({"a": np.zeros(3), "b": np.zeros(4)}, 2, "same leading dimension"),
    ({"a": np.zeros(0)}, 2, "arrays are empty"),
    ({"a": np.zeros(3)}, 0, "batch_size must be positive"),
])
def test_invalid_inputs(arrays, batch_size, message):
    with pytest.raises(ValueError, match=message):
        list(batch_iterator(arrays, batch_size, seed=0, epoch=0))
    with pytest.raises(ValueError, match=message):
        list(eval_batches(arrays, batch_size))


def test_eval_batches_reject_mask_key():
    with pytest.raises(ValueError, match=EXAMPLE_MASK_KEY):
        list(eval_batches({EXAMPLE_MASK_KEY: np.zeros(2)}, 2))


# Six sequences of 8 tokens with 2, 3, 5, 6, 8 and 1 real tokens.
_LENGTHS = [2, 3, 5, 6, 8, 1]
_MASK = np.arange(8)[None, :] < np.array(_LENGTHS)[:, None]
BUCKETED = {"attention_mask": _MASK.astype(np.int32), "labels": np.arange(6, dtype=np.int32)}
BUCKETED["input_ids"] = BUCKETED["attention_mask"] * (10 + BUCKETED["labels"][:, None])


@pytest.mark.parametrize("buckets,expected", [
    ((4,), [4, 4, 8, 8, 8, 4]),
    ((3, 6), [3, 3, 6, 6, 8, 3]),
    ((2, 4, 8, 16), [2, 4, 8, 8, 8, 2]),
])
def test_bucket_lengths(buckets, expected):
    assert bucket_lengths(BUCKETED, buckets).tolist() == expected


@pytest.mark.parametrize("buckets", [(0,), (-4,), (2.5,)])
def test_invalid_bucket_raises(buckets):
    with pytest.raises(ValueError, match="length_buckets"):
        bucket_lengths(BUCKETED, buckets)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bucketed_batches_hold_one_bucket(seed):
    batches = list(batch_iterator(BUCKETED, 2, seed=seed, epoch=0, length_buckets=(4,)))
    # Bucket 4 contains rows 0, 1 and 5 and bucket 8 rows 2, 3 and 4, one full batch each.
    assert len(batches) == len(batch_plan(BUCKETED, 2, seed=9, epoch=3, length_buckets=(4,)))
    assert len(batches) == 2
    for batch in batches:
        width = batch["input_ids"].shape[1]
        expected = 4 if set(batch["labels"]) <= {0, 1, 5} else 8
        assert width == expected
        np.testing.assert_array_equal(batch["input_ids"][:, 0], 10 + batch["labels"])


def test_bucketed_eval_covers_every_row_once():
    batches = list(eval_batches(BUCKETED, 2, length_buckets=(4,)))
    seen = []
    for batch in batches:
        rows = batch[EXAMPLE_INDEX_KEY][batch[EXAMPLE_MASK_KEY]]
        seen += rows.tolist()
        np.testing.assert_array_equal(batch["labels"], batch[EXAMPLE_INDEX_KEY])
        lengths = batch["attention_mask"].sum(axis=1)
        assert batch["input_ids"].shape[1] == (4 if lengths.max() <= 4 else 8)
    assert sorted(seen) == list(range(6))
    # Shortest bucket first, rows in order within a bucket.
    assert seen == [0, 1, 5, 2, 3, 4]
