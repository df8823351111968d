"""Tests for subset specs and held-out splits."""

import json

import pytest

from hwa_lora_jax.data import select_subset, split_holdout

EXAMPLES = [{"id": f"q{i}", "title": f"article{i // 10}"} for i in range(100)]


def _ids(examples):
    return [example["id"] for example in examples]


def test_all_keeps_everything():
    subset, description = select_subset(EXAMPLES, "all")
    assert subset == EXAMPLES
    assert description["num_selected"] == 100


def test_first_n():
    subset, description = select_subset(EXAMPLES, "first:3")
    assert _ids(subset) == ["q0", "q1", "q2"]
    assert description["spec"] == "first:3"
    assert description["num_source"] == 100


def test_range():
    subset, _ = select_subset(EXAMPLES, "range:5:8")
    assert _ids(subset) == ["q5", "q6", "q7"]


@pytest.mark.parametrize("spec,size", [("random:7", 7), ("fraction:0.1", 10), ("fraction:1", 100)])
def test_random_selection_seeded(spec, size):
    first, description = select_subset(EXAMPLES, spec, seed=3)
    again, description_again = select_subset(EXAMPLES, spec, seed=3)
    other, _ = select_subset(EXAMPLES, spec, seed=4)
    assert len(first) == size
    assert first == again
    assert description == description_again
    positions = [EXAMPLES.index(example) for example in first]
    assert positions == sorted(positions)
    if size < 100:
        assert _ids(first) != _ids(other)


def test_description_is_json():
    _, description = select_subset(EXAMPLES, "holdout_eval:0.2:article", seed=1)
    assert json.loads(json.dumps(description)) == description
    assert description["seed"] == 1
    assert len(description["eval_articles"]) == 2


def test_fingerprint_tracks_selection():
    _, first = select_subset(EXAMPLES, "first:10")
    _, shifted = select_subset(EXAMPLES, "range:1:11")
    assert first["fingerprint"] != shifted["fingerprint"]


@pytest.mark.parametrize("by", ["example", "article"])
def test_holdout_parts_disjoint_and_complete(by):
    train, evaluation, description = split_holdout(EXAMPLES, 0.3, seed=42, by=by)
    assert set(_ids(train)).isdisjoint(_ids(evaluation))
    assert sorted(_ids(train) + _ids(evaluation)) == sorted(_ids(EXAMPLES))
    assert len(evaluation) == 30
    assert description["num_train"] == 70
    assert description["num_eval"] == 30


def test_holdout_by_article_keeps_articles_whole():
    train, evaluation, description = split_holdout(EXAMPLES, 0.3, seed=42, by="article")
    eval_titles = {example["title"] for example in evaluation}
    assert eval_titles == set(description["eval_articles"])
    assert eval_titles.isdisjoint(example["title"] for example in train)


def test_holdout_spec_matches_function():
    train, evaluation, _ = split_holdout(EXAMPLES, 0.25, seed=9, by="article")
    train_spec, _ = select_subset(EXAMPLES, "holdout_train:0.25:article", seed=9)
    eval_spec, _ = select_subset(EXAMPLES, "holdout_eval:0.25:article", seed=9)
    assert train_spec == train
    assert eval_spec == evaluation


@pytest.mark.parametrize("spec,message", [
    ("first:0", r"N must be in \[1, 100\]"),
    ("first:101", r"N must be in \[1, 100\]"),
    ("first:x", "'x' is not an integer"),
    ("range:8:5", "START < STOP"),
    ("fraction:0", r"outside \(0, 1\]"),
    ("fraction:0.001", "selects no example"),
    ("holdout_eval:1", "below 1"),
    ("holdout_eval:0.5:paragraph", "unknown holdout unit 'paragraph'"),
    ("last:3", "unknown kind 'last'"),
])
def test_invalid_spec_messages(spec, message):
    with pytest.raises(ValueError, match=message) as info:
        select_subset(EXAMPLES, spec)
    assert "first:N" in str(info.value)


def test_holdout_by_article_needs_titles():
    with pytest.raises(ValueError, match="no 'title' field"):
        split_holdout([{"id": "a"}, {"id": "b"}], 0.5, by="article")


def test_empty_examples_rejected():
    with pytest.raises(ValueError, match="empty dataset"):
        select_subset([], "all")
