"""Tests for SQuAD v1.1 and GLUE metrics on hand-computed cases."""

import math

import numpy as np
import pytest

from hwa_lora_jax.metrics import (
    accuracy,
    average_ranks,
    binary_f1,
    glue_metrics,
    matthews_corrcoef,
    mnli_metrics,
    normalize_answer,
    pearson_correlation,
    spearman_correlation,
    squad_exact_match,
    squad_f1,
    squad_metrics,
)

TOLERANCE = 1e-12


@pytest.mark.parametrize("text,expected", [
    ("The  Quick, Brown fox!", "quick brown fox"),
    ("an apple a day", "apple day"),
    ("theater and anatomy", "theater and anatomy"),
    ("(a) cat", "cat"),
    ("U.S.A.", "usa"),
    ("the-end", "theend"),
    ("  \tA\n", ""),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("prediction,gold,exact,f1", [
    ("the cat sat on the mat", "a cat sat on a mat", 1.0, 1.0),
    ("cat sat", "the cat sat on mat", 0.0, 2 / 3),
    ("cat cat cat", "cat dog", 0.0, 0.4),
    ("Denver Broncos!", "denver broncos", 1.0, 1.0),
    ("", "cat", 0.0, 0.0),
    # The official v1.1 script scores an empty match with EM 1 but F1 0.
    ("", "the", 1.0, 0.0),
    ("dog", "cat", 0.0, 0.0),
])
def test_squad_pair_scores(prediction, gold, exact, f1):
    assert squad_exact_match(prediction, gold) == exact
    assert squad_f1(prediction, gold) == pytest.approx(f1, abs=TOLERANCE)


def test_squad_metrics_max_over_gold_answers():
    examples = [
        {"id": "a", "answers": {"text": ["Broncos", "Denver Broncos"], "answer_start": [7, 0]}},
        {"id": "b", "answers": {"text": ["Denver Broncos", "Broncos"], "answer_start": [0, 7]}},
        {"id": "c", "answers": {"text": ["Santa Clara"], "answer_start": [0]}},
    ]
    predictions = {"a": "Denver Broncos", "b": "the Broncos team", "c": ""}
    results = squad_metrics(predictions, examples)
    # a: EM 1, F1 1. b: F1 max(0.5, 2/3) = 2/3, EM 0. c: 0 and 0.
    assert results["exact_match"] == pytest.approx(100 / 3, abs=1e-9)
    assert results["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3, abs=1e-9)


def test_squad_metrics_missing_prediction_scores_zero():
    examples = [{"id": "a", "answers": ["cat"]}, {"id": "b", "answers": ["dog"]}]
    results = squad_metrics({"a": "cat"}, examples)
    assert results == {"exact_match": 50.0, "f1": 50.0}


def test_squad_metrics_empty_examples():
    with pytest.raises(ValueError, match="reference set is empty"):
        squad_metrics({}, [])


def test_squad_metrics_no_gold_answers():
    with pytest.raises(ValueError, match="'x' has no gold answers"):
        squad_metrics({"x": "a"}, [{"id": "x", "answers": {"text": [], "answer_start": []}}])


def test_accuracy_and_f1_hand_computed():
    predictions, labels = [1, 0, 1, 1], [1, 1, 1, 0]
    assert accuracy(predictions, labels) == 0.5
    # TP 2, FP 1, FN 1: precision = recall = 2/3.
    assert binary_f1(predictions, labels) == pytest.approx(2 / 3, abs=TOLERANCE)


def test_f1_without_true_positives():
    assert binary_f1([0, 0, 0], [1, 0, 1]) == 0.0


# Binary cases: (TP * TN - FP * FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN)).
# The three-class case: 6 / sqrt(8 * 10) from the multi-class formula.
@pytest.mark.parametrize("predictions,labels,expected", [
    ([1, 0, 1, 1], [1, 1, 1, 0], -1 / 3),
    ([1, 1, 0, 0, 1], [1, 0, 0, 0, 1], 4 / math.sqrt(3 * 2 * 3 * 2)),
    ([0, 2, 2, 0], [0, 1, 2, 0], 6 / math.sqrt(80)),
    ([1, 1, 1, 1], [1, 0, 1, 0], 0.0),
    ([0, 1, 0, 1], [1, 1, 1, 1], 0.0),
    ([0, 1, 1, 0], [0, 1, 1, 0], 1.0),
])
def test_matthews_hand_computed(predictions, labels, expected):
    assert matthews_corrcoef(predictions, labels) == pytest.approx(expected, abs=TOLERANCE)


def test_matthews_matches_binary_formula():
    rng = np.random.default_rng(0)
    predictions = rng.integers(0, 2, 200)
    labels = rng.integers(0, 2, 200)
    tp = np.sum((predictions == 1) & (labels == 1))
    tn = np.sum((predictions == 0) & (labels == 0))
    fp = np.sum((predictions == 1) & (labels == 0))
    fn = np.sum((predictions == 0) & (labels == 1))
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(predictions, labels) == pytest.approx(expected, abs=1e-12)


def test_pearson_hand_computed():
    # Deviations (-1.5, -0.5, 0.5, 1.5) and (-3, -1, 0, 4): 11 / sqrt(5 * 26).
    value = pearson_correlation([1, 2, 3, 4], [2, 4, 5, 9])
    assert value == pytest.approx(11 / math.sqrt(130), abs=TOLERANCE)


@pytest.mark.parametrize("values,expected", [
    ([3, 1, 3, 2, 3], [4, 1, 4, 2, 4]),
    ([2.0, 2.0], [1.5, 1.5]),
    ([5, 4, 3], [3, 2, 1]),
])
def test_average_ranks_ties(values, expected):
    np.testing.assert_array_equal(average_ranks(np.asarray(values)), expected)


def test_spearman_with_ties_hand_computed():
    # Ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): 4.5 / sqrt(4.5 * 5).
    value = spearman_correlation([1, 2, 2, 3], [1, 3, 2, 4])
    assert value == pytest.approx(4.5 / math.sqrt(22.5), abs=TOLERANCE)


def test_correlations_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 6, 300).astype(np.float64)  # Many ties.
    predictions = np.round(labels + rng.normal(0, 1.5, 300), 1)
    assert pearson_correlation(predictions, labels) == pytest.approx(
        stats.pearsonr(predictions, labels)[0], abs=1e-12)
    assert spearman_correlation(predictions, labels) == pytest.approx(
        stats.spearmanr(predictions, labels)[0], abs=1e-12)


def test_constant_correlation_is_zero():
    assert pearson_correlation([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0
    assert spearman_correlation([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]) == 0.0


def test_non_finite_regression_rejected():
    with pytest.raises(ValueError, match="predictions contain 1 non-finite"):
        pearson_correlation([1.0, float("nan"), 2.0], [1.0, 2.0, 3.0])


@pytest.mark.parametrize("function", [accuracy, binary_f1, matthews_corrcoef,
                                      pearson_correlation, spearman_correlation])
def test_empty_predictions_rejected(function):
    with pytest.raises(ValueError, match="No predictions to score"):
        function([], [])


def test_length_mismatch_rejected():
    with pytest.raises(ValueError, match="differ in length: 2 vs 3"):
        accuracy([1, 0], [1, 0, 1])


@pytest.mark.parametrize("task,keys,main", [
    ("cola", {"mcc"}, "mcc"),
    ("sst2", {"accuracy"}, "accuracy"),
    ("mrpc", {"accuracy", "f1", "combined"}, "f1"),
    ("qqp", {"accuracy", "f1", "combined"}, "f1"),
    ("mnli", {"accuracy"}, "accuracy"),
    ("qnli", {"accuracy"}, "accuracy"),
    ("rte", {"accuracy"}, "accuracy"),
    ("wnli", {"accuracy"}, "accuracy"),
])
def test_glue_metric_names(task, keys, main):
    results = glue_metrics(task, [1, 0, 1, 1], [1, 1, 1, 0])
    assert set(results) == keys | {"main"}
    assert results["main"] == results[main]


def test_glue_mrpc_values_in_percent():
    results = glue_metrics("mrpc", [1, 0, 1, 1], [1, 1, 1, 0])
    assert results["accuracy"] == pytest.approx(50.0, abs=1e-9)
    assert results["f1"] == pytest.approx(200 / 3, abs=1e-9)
    assert results["combined"] == pytest.approx((50.0 + 200 / 3) / 2, abs=1e-9)


def test_glue_accepts_logits():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 0.5]])
    assert glue_metrics("sst2", logits, [1, 0, 0])["accuracy"] == pytest.approx(200 / 3)


def test_glue_stsb_regression_outputs():
    outputs = np.array([[1.0], [2.0], [2.0], [3.0]])
    results = glue_metrics("stsb", outputs, [1.0, 3.0, 2.0, 4.0])
    assert results["spearman"] == pytest.approx(100 * 4.5 / math.sqrt(22.5), abs=1e-9)
    assert results["main"] == results["spearman"]
    assert results["combined"] == pytest.approx(
        (results["pearson"] + results["spearman"]) / 2, abs=1e-9)


def test_glue_cola_constant_predictions():
    results = glue_metrics("cola", [1, 1, 1], [1, 0, 1])
    assert results["mcc"] == 0.0
    assert not math.isnan(results["main"])


def test_glue_empty_predictions():
    with pytest.raises(ValueError, match="No predictions to score"):
        glue_metrics("sst2", [], [])


def test_glue_unknown_task():
    with pytest.raises(ValueError, match="Unknown GLUE task 'mnli-m'"):
        glue_metrics("mnli-m", [1], [1])


def test_mnli_matched_and_mismatched():
    results = mnli_metrics([0, 1, 2, 2], [0, 1, 2, 0], [2, 2], [2, 1])
    assert results == {"accuracy_m": 75.0, "accuracy_mm": 50.0, "main": 75.0}
