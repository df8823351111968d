"""Turn an experiment's `data` config into model-ready arrays and a scoring function.

`load_task_data` reads GLUE or SQuAD (local folder or hub), applies the
configured subsets or holdout, tokenizes, and returns the train arrays plus
one `EvalSet` per evaluation split (two for MNLI: matched and mismatched).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Mapping

import numpy as np

from hwa_lora_jax import metrics
from hwa_lora_jax.data import glue, squad
from hwa_lora_jax.data.subset import select_subset, split_holdout

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
BENCHMARKS = ("glue", "squad")


@dataclasses.dataclass
class EvalSet:
    """One evaluation split.

    Attributes:
      name: split name (`validation`, `validation_matched`, ...).
      arrays: model inputs, `(n, max_length)` int32 each.
      score: maps the model outputs over all rows (`logits`, or
        `start_logits`/`end_logits`) to a metrics dict with a `main` entry.
      length_buckets: token lengths to batch the rows by (`data.length_buckets`).
    """

    name: str
    arrays: dict[str, np.ndarray]
    score: Callable[[Mapping[str, np.ndarray]], dict[str, float]]
    length_buckets: tuple[int, ...] = ()


@dataclasses.dataclass
class TaskData:
    """Everything the trainer needs to know about the task's data.

    Attributes:
      model_task: `TaskModel` task (`question_answering` or
        `sequence_classification`).
      num_labels: head outputs.
      train: training arrays: model inputs plus `labels`, or
        `start_positions` and `end_positions`.
      evals: evaluation splits.
      description: JSON-ready record of the files, subsets and sizes used.
    """

    model_task: str
    num_labels: int
    train: dict[str, np.ndarray]
    evals: list[EvalSet]
    description: dict[str, Any]


def _data_dir(data_config: Mapping[str, Any], variable: str) -> str | None:
    data_dir = data_config.get("data_dir") or os.environ.get(variable) or None
    if data_dir is not None and not os.path.isdir(data_dir):
        raise FileNotFoundError(
            f"data.data_dir={data_dir} is not a folder. Point it at a folder with the "
            f"{'GLUE tsv' if variable == 'GLUE_DIR' else 'SQuAD json'} files."
        )
    return data_dir


def length_buckets(data_config: Mapping[str, Any]) -> tuple[int, ...]:
    """Return `data.length_buckets` as sorted ints, checking each is a positive integer."""
    raw = data_config.get("length_buckets") or ()
    if isinstance(raw, (int, str)):
        raw = (raw,)
    buckets = []
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"data.length_buckets={tuple(raw)} contains {value!r}; give positive "
                             "token counts, e.g. --config.data.length_buckets='(16, 32)'.")
        buckets.append(int(value))
    return tuple(sorted(set(buckets)))


def _glue_score(task: str, labels: np.ndarray) -> Callable:
    def score(outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return metrics.glue_metrics(task, outputs["logits"], labels)
    return score


def load_glue_task(data_config: Mapping[str, Any], tokenizer: Any, *,
                   max_position_embeddings: int, seed: int, include_train: bool = True) -> TaskData:
    """GLUE: tsv or hub data, tokenized pairs, accuracy/F1/MCC/correlation scoring."""
    task = glue.get_glue_task(data_config["task"])
    data_dir = _data_dir(data_config, "GLUE_DIR")
    max_length = int(data_config["max_length"])
    eval_max_length = int(data_config.get("eval_max_length") or max_length)
    for field, value in (("max_length", max_length), ("eval_max_length", eval_max_length)):
        if value > max_position_embeddings:
            raise ValueError(f"data.{field}={value} exceeds the model's max_position_embeddings="
                             f"{max_position_embeddings}; set --config.data.{field} to at most "
                             f"{max_position_embeddings}.")

    skip_invalid = bool(data_config.get("skip_invalid_rows", False))
    train_examples, train_subset, train = [], None, {}
    if include_train:
        train_examples = glue.load_glue(task.name, data_config["train_split"], data_dir,
                                        skip_invalid_rows=skip_invalid)
        train_examples, train_subset = select_subset(train_examples,
                                                     data_config["train_subset"], seed=seed)
        train = glue.encode_glue(train_examples, tokenizer, max_length,
                                 max_position_embeddings=max_position_embeddings)

    eval_split = data_config["eval_split"]
    if task.name == "mnli" and eval_split == "validation":
        eval_splits = ["validation_matched", "validation_mismatched"]
    else:
        eval_splits = [eval_split]
    evals, eval_subsets = [], {}
    for split in eval_splits:
        examples = glue.load_glue(task.name, split, data_dir, skip_invalid_rows=skip_invalid)
        examples, eval_subsets[split] = select_subset(examples, data_config["eval_subset"],
                                                      seed=seed)
        encoded = glue.encode_glue(examples, tokenizer, eval_max_length,
                                   max_position_embeddings=max_position_embeddings)
        arrays = {name: encoded[name] for name in MODEL_INPUTS}
        evals.append(EvalSet(split, arrays, _glue_score(task.name, encoded["labels"]),
                             length_buckets(data_config)))

    description = {"benchmark": "glue", "task": task.name, "data_dir": data_dir or "hub",
                   "max_length": max_length, "eval_max_length": eval_max_length,
                   "length_buckets": list(length_buckets(data_config)),
                   "train_examples": len(train_examples),
                   "train_subset": train_subset, "eval_subsets": eval_subsets}
    return TaskData("sequence_classification", task.num_labels, dict(train), evals, description)


def load_squad_task(data_config: Mapping[str, Any], tokenizer: Any, *,
                    max_position_embeddings: int, seed: int,
                    include_train: bool = True) -> TaskData:
    """SQuAD v1.1: windows over long contexts, n-best span decoding, EM/F1 scoring."""
    data_dir = _data_dir(data_config, "SQUAD_DIR")
    max_length = int(data_config["max_length"])
    doc_stride = int(data_config["doc_stride"])
    train_split, eval_split = data_config["train_split"], data_config["eval_split"]
    fraction = float(data_config.get("holdout_fraction") or 0.0)

    description: dict[str, Any] = {"benchmark": "squad", "data_dir": data_dir or "hub",
                                   "max_length": max_length, "doc_stride": doc_stride}
    eval_examples = squad.load_squad(eval_split, data_dir)
    if train_split == eval_split:
        if fraction <= 0:
            raise ValueError(
                f"data.train_split and data.eval_split are both {train_split!r}; set "
                "data.holdout_fraction (e.g. 0.2) to hold out part of it for evaluation."
            )
        train_examples, eval_examples, description["holdout"] = split_holdout(
            eval_examples, fraction, seed=seed, by="article")
    else:
        train_examples = squad.load_squad(train_split, data_dir)
    train_examples, description["train_subset"] = select_subset(
        train_examples, data_config["train_subset"], seed=seed)
    eval_examples, description["eval_subset"] = select_subset(
        eval_examples, data_config["eval_subset"], seed=seed)

    train = {}
    if include_train:
        train = squad.prepare_train_features(train_examples, tokenizer, max_length, doc_stride,
                                             max_position_embeddings=max_position_embeddings)
    features = squad.prepare_eval_features(eval_examples, tokenizer, max_length, doc_stride,
                                           max_position_embeddings=max_position_embeddings)

    def score(outputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        predictions = squad.postprocess_qa_predictions(
            eval_examples, features, outputs["start_logits"], outputs["end_logits"])
        result = metrics.squad_metrics(predictions, eval_examples)
        result["main"] = result["f1"]
        return result

    description.update(train_examples=len(train_examples),
                       train_features=len(train.get("input_ids", ())),
                       eval_examples=len(eval_examples), eval_features=len(features["input_ids"]))
    train_arrays = {name: train[name] for name in
                    MODEL_INPUTS + ("start_positions", "end_positions") if name in train}
    arrays = {name: features[name] for name in MODEL_INPUTS}
    eval_set = EvalSet(eval_split, arrays, score, length_buckets(data_config))
    description["length_buckets"] = list(eval_set.length_buckets)
    return TaskData("question_answering", 2, train_arrays, [eval_set], description)


def load_task_data(data_config: Mapping[str, Any], tokenizer: Any, *,
                   max_position_embeddings: int, seed: int, include_train: bool = True
                   ) -> TaskData:
    """Load the benchmark named by `data_config['benchmark']`.

    With `include_train=False` only the evaluation splits are tokenized (the
    train split is still read where a holdout needs it).
    """
    benchmark = data_config["benchmark"]
    kwargs = dict(max_position_embeddings=max_position_embeddings, seed=seed,
                  include_train=include_train)
    if benchmark == "glue":
        return load_glue_task(data_config, tokenizer, **kwargs)
    if benchmark == "squad":
        return load_squad_task(data_config, tokenizer, **kwargs)
    raise ValueError(f"data.benchmark={benchmark!r} is invalid; expected one of {BENCHMARKS}.")
