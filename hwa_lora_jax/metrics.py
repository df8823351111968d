"""Evaluation metrics for SQuAD v1.1 and GLUE, computed with numpy only.

SQuAD exact match and F1 reproduce the official v1.1 evaluation script
(`evaluate-v1.1.py` of the SQuAD release). Answers are normalized: lower case,
punctuation removed, the articles a/an/the removed, white space collapsed. F1
is computed over bags of normalized tokens. Each question scores the maximum
over its gold answers, and the totals are percentages (0-100). An empty
prediction therefore matches an empty gold answer exactly but gets F1 0, as in
that script.

The single-metric functions (`accuracy`, `binary_f1`, `matthews_corrcoef`,
`pearson_correlation`, `spearman_correlation`) return fractions or
correlations in [-1, 1], like scikit-learn and scipy. `glue_metrics` scales
every metric by 100, as GLUE tables report them.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from typing import Any, Mapping, Sequence

import numpy as np

from hwa_lora_jax.data.glue import get_glue_task

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


# ---------------------------------------------------------------------------
# SQuAD v1.1


def normalize_answer(text: str) -> str:
    """Normalize an answer as the official SQuAD v1.1 script does.

    Lower case, remove ASCII punctuation, remove the articles a/an/the, and
    collapse white space, in that order.
    """
    text = text.lower()
    text = "".join(char for char in text if char not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def squad_exact_match(prediction: str, ground_truth: str) -> float:
    """Return 1.0 when the normalized answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def squad_f1(prediction: str, ground_truth: str) -> float:
    """Return the F1 score of the normalized token bags of two answers, in [0, 1]."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(ground_truth_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: Mapping[str, str],
                  examples: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Compute SQuAD v1.1 exact match and F1 in percent over `examples`.

    Args:
      predictions: example id -> predicted answer text.
      examples: examples with `id` and `answers` (`{"text": [...]}` or a list
        of gold texts), as `hwa_lora_jax.data.load_squad` returns them.

    Returns:
      `{"exact_match": ..., "f1": ...}`, each in [0, 100]. An example without a
      prediction scores 0 and is logged, as in the official script.

    Raises:
      ValueError: no examples, or an example without gold answers.
    """
    if not examples:
        raise ValueError("No SQuAD examples to score: the reference set is empty.")
    exact_match_total = 0.0
    f1_total = 0.0
    missing = []
    for example in examples:
        answers = example["answers"]
        ground_truths = list(answers["text"] if isinstance(answers, Mapping) else answers)
        if not ground_truths:
            raise ValueError(
                f"Example {example['id']!r} has no gold answers; SQuAD v1.1 scoring needs at "
                "least one per question."
            )
        if example["id"] not in predictions:
            missing.append(example["id"])
            continue
        prediction = predictions[example["id"]]
        exact_match_total += max(squad_exact_match(prediction, gt) for gt in ground_truths)
        f1_total += max(squad_f1(prediction, gt) for gt in ground_truths)
    if missing:
        logger.warning("%d of %d questions have no prediction and score 0 (first: %r).",
                       len(missing), len(examples), missing[0])
    return {
        "exact_match": 100.0 * exact_match_total / len(examples),
        "f1": 100.0 * f1_total / len(examples),
    }


# ---------------------------------------------------------------------------
# GLUE


def _as_pair(predictions: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    predictions = np.asarray(predictions)
    labels = np.asarray(labels)
    if predictions.ndim != 1 or labels.ndim != 1:
        raise ValueError(
            f"predictions and labels must be 1-D, got shapes {predictions.shape} and "
            f"{labels.shape}."
        )
    if len(predictions) != len(labels):
        raise ValueError(
            f"predictions and labels differ in length: {len(predictions)} vs {len(labels)}."
        )
    if len(predictions) == 0:
        raise ValueError("No predictions to score: predictions and labels are empty.")
    return predictions, labels


def accuracy(predictions: Any, labels: Any) -> float:
    """Return the fraction of predictions equal to their labels."""
    predictions, labels = _as_pair(predictions, labels)
    return float(np.mean(predictions == labels))


def binary_f1(predictions: Any, labels: Any, positive_label: int = 1) -> float:
    """Return the F1 score of the positive class; 0.0 when it has no true positive."""
    predictions, labels = _as_pair(predictions, labels)
    predicted = predictions == positive_label
    actual = labels == positive_label
    true_positives = int(np.sum(predicted & actual))
    if true_positives == 0:
        return 0.0
    precision = true_positives / int(np.sum(predicted))
    recall = true_positives / int(np.sum(actual))
    return 2 * precision * recall / (precision + recall)


def matthews_corrcoef(predictions: Any, labels: Any) -> float:
    """Return the Matthews correlation coefficient of (multi-class) predictions.

    Uses the multi-class formula on the confusion matrix that scikit-learn's
    `matthews_corrcoef` uses. Returns 0.0 when the coefficient is undefined,
    which happens when all predictions or all labels are one class.
    """
    predictions, labels = _as_pair(predictions, labels)
    classes, encoded = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    num_classes = len(classes)
    true_ids, predicted_ids = encoded[:len(labels)], encoded[len(labels):]
    confusion = np.zeros((num_classes, num_classes), dtype=np.float64)
    np.add.at(confusion, (true_ids, predicted_ids), 1.0)

    true_counts = confusion.sum(axis=1)
    predicted_counts = confusion.sum(axis=0)
    num_correct = np.trace(confusion)
    num_samples = confusion.sum()
    covariance_true_pred = num_correct * num_samples - true_counts @ predicted_counts
    covariance_pred = num_samples ** 2 - predicted_counts @ predicted_counts
    covariance_true = num_samples ** 2 - true_counts @ true_counts
    if covariance_pred == 0 or covariance_true == 0:
        return 0.0
    return float(covariance_true_pred / np.sqrt(covariance_true * covariance_pred))


def _finite_float_pair(predictions: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    predictions, labels = _as_pair(predictions, labels)
    predictions = predictions.astype(np.float64)
    labels = labels.astype(np.float64)
    for name, values in (("predictions", predictions), ("labels", labels)):
        num_bad = int(np.sum(~np.isfinite(values)))
        if num_bad:
            raise ValueError(f"{name} contain {num_bad} non-finite values (NaN or inf).")
    return predictions, labels


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    x = x - x.mean()
    y = y - y.mean()
    denominator = np.sqrt(np.sum(x * x) * np.sum(y * y))
    if denominator == 0:
        logger.warning("Correlation of a constant sequence is undefined; returning 0.")
        return 0.0
    return float(np.clip(np.sum(x * y) / denominator, -1.0, 1.0))


def pearson_correlation(predictions: Any, labels: Any) -> float:
    """Return the Pearson correlation; 0.0 when either sequence is constant.

    Raises:
      ValueError: empty or non-finite inputs, or inputs of different lengths.
    """
    return _correlation(*_finite_float_pair(predictions, labels))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Rank values from 1 to n, giving tied values the mean of their ranks."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Each run of equal sorted values [start, stop) gets rank (start + stop + 1) / 2.
    run_starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    run_stops = np.r_[run_starts[1:], len(values)]
    run_ranks = (run_starts + run_stops + 1) / 2.0
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.repeat(run_ranks, run_stops - run_starts)
    return ranks


def spearman_correlation(predictions: Any, labels: Any) -> float:
    """Return the Spearman rank correlation, with ties ranked by their average rank.

    Raises:
      ValueError: as for `pearson_correlation`.
    """
    predictions, labels = _finite_float_pair(predictions, labels)
    return _correlation(average_ranks(predictions), average_ranks(labels))


def _predicted_values(predictions: Any, is_regression: bool) -> np.ndarray:
    """Accept 1-D predictions, or logits `[n, num_classes]` / regression outputs `[n, 1]`."""
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        if is_regression:
            if predictions.shape[1] != 1:
                raise ValueError(
                    f"Regression outputs must have shape [n] or [n, 1], got {predictions.shape}."
                )
            return predictions[:, 0]
        return np.argmax(predictions, axis=-1)
    return predictions


def glue_metrics(task: str, predictions: Any, labels: Any) -> dict[str, float]:
    """Compute a GLUE task's standard metrics, in percent.

    Metrics per task: CoLA `mcc`; SST-2, QNLI, RTE, WNLI and MNLI (one
    validation split at a time) `accuracy`; MRPC and QQP `accuracy`, `f1`
    (positive class 1) and `combined` (their mean); STS-B `pearson`,
    `spearman` and `combined` (their mean). The key `main` repeats the value
    of the task's main metric, `GLUE_TASKS[task].main_metric`: `mcc` for
    CoLA, `f1` for MRPC and QQP, `spearman` for STS-B and `accuracy` for the
    others.

    Args:
      task: GLUE task name.
      predictions: class ids `[n]`, logits `[n, num_classes]`, or for STS-B
        scores `[n]` or `[n, 1]`.
      labels: gold class ids or scores `[n]`.

    Returns:
      Metric name -> value; correlations are multiplied by 100 too.

    Raises:
      ValueError: unknown task, empty or mismatched inputs, or non-finite
        STS-B predictions.
    """
    glue_task = get_glue_task(task)
    predictions = _predicted_values(predictions, glue_task.is_regression)
    if glue_task.name == "stsb":
        results = {"pearson": pearson_correlation(predictions, labels),
                   "spearman": spearman_correlation(predictions, labels)}
        results["combined"] = (results["pearson"] + results["spearman"]) / 2
    elif glue_task.name == "cola":
        results = {"mcc": matthews_corrcoef(predictions, labels)}
    elif glue_task.name in ("mrpc", "qqp"):
        results = {"accuracy": accuracy(predictions, labels),
                   "f1": binary_f1(predictions, labels)}
        results["combined"] = (results["accuracy"] + results["f1"]) / 2
    else:
        results = {"accuracy": accuracy(predictions, labels)}
    results = {name: 100.0 * value for name, value in results.items()}
    results["main"] = results[glue_task.main_metric]
    return results


def mnli_metrics(matched_predictions: Any, matched_labels: Any, mismatched_predictions: Any,
                 mismatched_labels: Any) -> dict[str, float]:
    """Compute MNLI matched and mismatched accuracy in percent.

    Returns:
      `accuracy_m` (validation_matched), `accuracy_mm` (validation_mismatched)
      and `main`, which equals `accuracy_m`.
    """
    matched = glue_metrics("mnli", matched_predictions, matched_labels)["accuracy"]
    mismatched = glue_metrics("mnli", mismatched_predictions, mismatched_labels)["accuracy"]
    return {"accuracy_m": matched, "accuracy_mm": mismatched, "main": matched}
