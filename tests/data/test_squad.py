"""Tests for SQuAD loading, window features and answer post-processing."""

import json
import os

import numpy as np
import pytest

from hwa_lora_jax.data import (
    DataFormatError,
    DatasetLoadError,
    load_squad,
    postprocess_qa_predictions,
    prepare_eval_features,
    prepare_train_features,
)
from hwa_lora_jax.loading import load_tokenizer

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(__file__)), "fixtures")

SHORT_CONTEXT = "The analog chip drifts on the tile."
# About 110 tokens with the tiny vocabulary, so windows of 32 tokens overflow.
LONG_CONTEXT = " ".join(["the noise on the tile is analog."] * 11 + ["which weights drift?"])


def _squad_json(paragraphs):
    return {"version": "1.1", "data": [{"title": "Chips", "paragraphs": paragraphs}]}


def _answer(context, text, occurrence=0):
    start = -1
    for _ in range(occurrence + 1):
        start = context.index(text, start + 1)
    return {"text": text, "answer_start": start}


SQUAD_DATA = _squad_json([
    {"context": SHORT_CONTEXT, "qas": [
        {"id": "q1", "question": "  What drifts?",
         "answers": [_answer(SHORT_CONTEXT, "analog chip"), _answer(SHORT_CONTEXT, "chip")]},
    ]},
    {"context": LONG_CONTEXT, "qas": [
        {"id": "q2", "question": "Which drift?",
         "answers": [_answer(LONG_CONTEXT, "weights drift")]},
        {"id": "q3", "question": "What is analog?",
         "answers": [_answer(LONG_CONTEXT, "the noise", occurrence=5)]},
    ]},
])


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(os.path.join(FIXTURES, "tiny-bert-qa"))


@pytest.fixture()
def squad_dir(tmp_path):
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(SQUAD_DATA), encoding="utf-8")
    return tmp_path


def test_load_squad_examples(squad_dir):
    examples = load_squad("validation", squad_dir)
    assert [e["id"] for e in examples] == ["q1", "q2", "q3"]
    assert examples[0]["title"] == "Chips"
    assert examples[0]["context"] == SHORT_CONTEXT
    assert examples[0]["answers"] == {"text": ["analog chip", "chip"], "answer_start": [4, 11]}


def test_missing_squad_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_squad("train", tmp_path)
    assert str(tmp_path / "train-v1.1.json") in str(info.value)
    assert "data_dir" in str(info.value)


def test_unknown_squad_split(tmp_path):
    with pytest.raises(ValueError, match=r"Unknown SQuAD split 'dev'.*train, validation"):
        load_squad("dev", tmp_path)


def test_invalid_json_names_file(tmp_path):
    path = tmp_path / "dev-v1.1.json"
    path.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(DataFormatError, match="is not valid json"):
        load_squad("validation", tmp_path)


def test_answer_start_outside_context(tmp_path):
    data = _squad_json([{"context": "short", "qas": [
        {"id": "bad", "question": "q", "answers": [{"text": "short", "answer_start": 3}]}]}])
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"question 'bad': answer_start 3"):
        load_squad("validation", tmp_path)


def test_missing_field_names_question(tmp_path):
    data = _squad_json([{"context": "c", "qas": [{"id": "q9", "answers": []}]}])
    (tmp_path / "dev-v1.1.json").write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"question 'q9' has no 'question' field"):
        load_squad("validation", tmp_path)


def test_empty_squad_file(tmp_path):
    (tmp_path / "dev-v1.1.json").write_text(json.dumps({"data": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="contains no questions"):
        load_squad("validation", tmp_path)


def test_squad_hub_failure_suggests_local_folder(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DatasetLoadError, match=r"pass data_dir=.*dev-v1.1.json"):
        load_squad("validation")


def test_train_positions_map_to_gold_text(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    train = prepare_train_features(examples, tokenizer, max_length=32, doc_stride=8)
    evaluation = prepare_eval_features(examples, tokenizer, max_length=32, doc_stride=8)
    np.testing.assert_array_equal(train["input_ids"], evaluation["input_ids"])

    num_inside = 0
    for i, example_index in enumerate(train["example_index"]):
        start, end = train["start_positions"][i], train["end_positions"][i]
        if start == 0:
            assert end == 0
            continue
        num_inside += 1
        example = examples[example_index]
        char_start = evaluation["offset_mapping"][i, start, 0]
        char_end = evaluation["offset_mapping"][i, end, 1]
        assert example["context"][char_start:char_end] == example["answers"]["text"][0]
    # q1 fits one window; q2's and q3's answers each lie inside at least one window.
    assert num_inside >= 3


def test_long_context_overlapping_windows(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    max_length, stride = 32, 8
    features = prepare_eval_features(examples, tokenizer, max_length=max_length,
                                     doc_stride=stride)
    windows = np.flatnonzero(features["example_index"] == 1)
    assert len(windows) >= 3
    assert list(features["example_id"][windows]) == ["q2"] * len(windows)
    assert features["input_ids"].shape == (len(features["example_index"]), max_length)
    assert features["input_ids"].dtype == np.int32

    context_offsets = []
    for i in windows:
        offsets = features["offset_mapping"][i]
        context_offsets.append([tuple(o) for o in offsets if o[0] >= 0])
    for previous, following in zip(context_offsets, context_offsets[1:]):
        # Consecutive windows share exactly `stride` context tokens.
        assert previous[-stride:] == following[:stride]
    assert context_offsets[0][0][0] == 0
    assert context_offsets[-1][-1][1] == len(LONG_CONTEXT)


def test_eval_offsets_outside_context(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    features = prepare_eval_features(examples[:1], tokenizer, max_length=32, doc_stride=8)
    assert features["offset_mapping"].dtype == np.int32
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    question_end = tokens.index("[SEP]")
    # [CLS], the question (left-stripped) and [SEP] are outside the context.
    assert tokens[1:question_end] == ["what", "drift", "##s", "?"]
    np.testing.assert_array_equal(features["offset_mapping"][0, :question_end + 1], -1)
    padding = features["attention_mask"][0] == 0
    assert padding.any()
    np.testing.assert_array_equal(features["offset_mapping"][0][padding], -1)


def test_train_answer_outside_window_uses_cls(tokenizer):
    context = LONG_CONTEXT
    examples = [{"id": "x", "title": "t", "context": context, "question": "Which drift?",
                 "answers": {"text": ["weights drift"],
                             "answer_start": [context.index("weights drift")]}}]
    features = prepare_train_features(examples, tokenizer, max_length=32, doc_stride=8)
    assert features["start_positions"][0] == 0
    assert features["end_positions"][0] == 0
    assert features["start_positions"][-1] > 0


def _peaked_logits(train_features, shape):
    start_logits = np.zeros(shape, np.float32)
    end_logits = np.zeros(shape, np.float32)
    rows = np.arange(shape[0])
    start_logits[rows, train_features["start_positions"]] = 10.0
    end_logits[rows, train_features["end_positions"]] = 10.0
    return start_logits, end_logits


def test_postprocess_recovers_gold_answers(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    train = prepare_train_features(examples, tokenizer, max_length=32, doc_stride=8)
    features = prepare_eval_features(examples, tokenizer, max_length=32, doc_stride=8)
    start_logits, end_logits = _peaked_logits(train, features["input_ids"].shape)
    predictions = postprocess_qa_predictions(examples, features, start_logits, end_logits)
    assert predictions == {"q1": "analog chip", "q2": "weights drift", "q3": "the noise"}


def test_postprocess_respects_max_answer_length(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)[:1]
    features = prepare_eval_features(examples, tokenizer, max_length=32, doc_stride=8)
    tokens = tokenizer.convert_ids_to_tokens(features["input_ids"][0])
    first = tokens.index("the")
    last = tokens.index("tile")
    start_logits = np.zeros((1, 32), np.float32)
    end_logits = np.zeros((1, 32), np.float32)
    start_logits[0, first] = 5.0
    end_logits[0, last] = 5.0
    end_logits[0, first + 1] = 4.0
    full = postprocess_qa_predictions(examples, features, start_logits, end_logits)
    assert full == {"q1": "The analog chip drifts on the tile"}
    short = postprocess_qa_predictions(examples, features, start_logits, end_logits,
                                       max_answer_length=2)
    assert short == {"q1": "The analog"}


def test_postprocess_shape_mismatch(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    features = prepare_eval_features(examples, tokenizer, max_length=32, doc_stride=8)
    logits = np.zeros((len(features["input_ids"]) + 1, 32), np.float32)
    with pytest.raises(ValueError, match="without padding rows"):
        postprocess_qa_predictions(examples, features, logits, logits)


def test_features_reject_long_max_length(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    with pytest.raises(ValueError, match=r"max_length=320 exceeds .*max_position_embeddings=32"):
        prepare_train_features(examples, tokenizer, max_position_embeddings=32)


def test_features_reject_stride_not_below_length(squad_dir, tokenizer):
    examples = load_squad("validation", squad_dir)
    with pytest.raises(ValueError, match=r"doc_stride=32 must be in \[0, max_length=32\)"):
        prepare_eval_features(examples, tokenizer, max_length=32, doc_stride=32)


def test_features_reject_empty_examples(tokenizer):
    with pytest.raises(ValueError, match="dataset is empty"):
        prepare_train_features([], tokenizer)
