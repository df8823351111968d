"""GLUE tasks: a task table, loaders for local tsv files and the hub, and tokenization.

Every loader returns a list of examples with the same fields for every task:
`text_a` (str), `text_b` (str, or None for single-sentence tasks), `label`
(int class id, or float similarity score for STS-B) and `idx` (0-based position
in the split). Class ids follow the order of the hub dataset `nyu-mll/glue`,
so a model trained on local tsv files and one trained on hub data agree.

Local files use the layout of GLUE's original release (the `download_glue_data.py`
tsv files): `<data_dir>/<TASK>/train.tsv` and `dev.tsv`, or those files directly
in `data_dir`. MNLI has `dev_matched.tsv` and `dev_mismatched.tsv` in place of
`dev.tsv`. CoLA has no header row; every other file has one. Cells are split on
tabs only and never unquoted, because SST-2, CoLA and MRPC sentences contain
unbalanced quote characters.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from hwa_lora_jax.data.common import check_max_length
from hwa_lora_jax.data.errors import DataFormatError, DatasetLoadError

logger = logging.getLogger(__name__)

GLUE_HUB_ID = "nyu-mll/glue"


@dataclasses.dataclass(frozen=True)
class TsvLayout:
    """Column layout of one GLUE tsv file.

    Attributes:
      file_name: name of the file in the task folder, for example `dev.tsv`.
      num_columns: number of tab-separated cells in every row, header included.
      text_columns: 0-based columns of `text_a` and, for pair tasks, `text_b`.
      label_column: 0-based column of the label.
      has_header: whether the first line is a header row.
    """

    file_name: str
    num_columns: int
    text_columns: tuple[int, ...]
    label_column: int
    has_header: bool = True


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """Description of one GLUE task.

    Attributes:
      name: task name as in the hub dataset (`sst2`, `mnli`, ...).
      folder: folder name in GLUE's original release (`SST-2`, `MNLI`, ...).
      hub_text_fields: field names of `text_a` and `text_b` in the hub dataset.
      label_names: class names in class-id order; empty for regression.
      tsv_labels: label cell value in the tsv files -> class id; empty for
        regression.
      splits: split name -> tsv layout of that split's file.
      metrics: names of the task's standard metrics (see `hwa_lora_jax.metrics`).
      main_metric: metric used to compare runs and to select checkpoints.
      score_range: inclusive (min, max) of a regression label; None for
        classification.
    """

    name: str
    folder: str
    hub_text_fields: tuple[str, ...]
    label_names: tuple[str, ...]
    tsv_labels: Mapping[str, int]
    splits: Mapping[str, TsvLayout]
    metrics: tuple[str, ...]
    main_metric: str
    score_range: tuple[float, float] | None = None

    @property
    def is_regression(self) -> bool:
        return self.score_range is not None

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        return len(self.hub_text_fields) == 2


_BINARY_TSV_LABELS = {"0": 0, "1": 1}
_ENTAILMENT_TSV_LABELS = {"entailment": 0, "not_entailment": 1}


def _same_layout(num_columns: int, text_columns: tuple[int, ...], label_column: int,
                 has_header: bool = True) -> dict[str, TsvLayout]:
    """Build the train and validation layouts of a task whose two files share columns."""
    return {
        split: TsvLayout(file_name, num_columns, text_columns, label_column, has_header)
        for split, file_name in (("train", "train.tsv"), ("validation", "dev.tsv"))
    }


# Main metrics: CoLA uses Matthews correlation. MRPC and QQP use F1 and STS-B
# uses Spearman correlation, the scores that the BERT and MobileBERT papers
# report for these tasks. Every other task uses accuracy.
GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask(
        name="cola", folder="CoLA", hub_text_fields=("sentence",),
        label_names=("unacceptable", "acceptable"), tsv_labels=_BINARY_TSV_LABELS,
        # Columns: source code, label, original label mark, sentence.
        splits=_same_layout(4, (3,), 1, has_header=False),
        metrics=("mcc",), main_metric="mcc"),
    "sst2": GlueTask(
        name="sst2", folder="SST-2", hub_text_fields=("sentence",),
        label_names=("negative", "positive"), tsv_labels=_BINARY_TSV_LABELS,
        # Columns: sentence, label.
        splits=_same_layout(2, (0,), 1),
        metrics=("accuracy",), main_metric="accuracy"),
    "mrpc": GlueTask(
        name="mrpc", folder="MRPC", hub_text_fields=("sentence1", "sentence2"),
        label_names=("not_equivalent", "equivalent"), tsv_labels=_BINARY_TSV_LABELS,
        # Columns: Quality, #1 ID, #2 ID, #1 String, #2 String.
        splits=_same_layout(5, (3, 4), 0),
        metrics=("accuracy", "f1", "combined"), main_metric="f1"),
    "qqp": GlueTask(
        name="qqp", folder="QQP", hub_text_fields=("question1", "question2"),
        label_names=("not_duplicate", "duplicate"), tsv_labels=_BINARY_TSV_LABELS,
        # Columns: id, qid1, qid2, question1, question2, is_duplicate.
        splits=_same_layout(6, (3, 4), 5),
        metrics=("accuracy", "f1", "combined"), main_metric="f1"),
    "stsb": GlueTask(
        name="stsb", folder="STS-B", hub_text_fields=("sentence1", "sentence2"),
        label_names=(), tsv_labels={},
        # Columns: index, genre, filename, year, old_index, source1, source2,
        # sentence1, sentence2, score.
        splits=_same_layout(10, (7, 8), 9),
        metrics=("pearson", "spearman", "combined"), main_metric="spearman",
        score_range=(0.0, 5.0)),
    "mnli": GlueTask(
        name="mnli", folder="MNLI", hub_text_fields=("premise", "hypothesis"),
        label_names=("entailment", "neutral", "contradiction"),
        tsv_labels={"entailment": 0, "neutral": 1, "contradiction": 2},
        # Columns: index, promptID, pairID, genre, sentence1_binary_parse,
        # sentence2_binary_parse, sentence1_parse, sentence2_parse, sentence1,
        # sentence2, then one annotator label (train) or five (dev), gold_label.
        splits={
            "train": TsvLayout("train.tsv", 12, (8, 9), 11),
            "validation_matched": TsvLayout("dev_matched.tsv", 16, (8, 9), 15),
            "validation_mismatched": TsvLayout("dev_mismatched.tsv", 16, (8, 9), 15),
        },
        metrics=("accuracy",), main_metric="accuracy"),
    "qnli": GlueTask(
        name="qnli", folder="QNLI", hub_text_fields=("question", "sentence"),
        label_names=("entailment", "not_entailment"), tsv_labels=_ENTAILMENT_TSV_LABELS,
        # Columns: index, question, sentence, label.
        splits=_same_layout(4, (1, 2), 3),
        metrics=("accuracy",), main_metric="accuracy"),
    "rte": GlueTask(
        name="rte", folder="RTE", hub_text_fields=("sentence1", "sentence2"),
        label_names=("entailment", "not_entailment"), tsv_labels=_ENTAILMENT_TSV_LABELS,
        # Columns: index, sentence1, sentence2, label.
        splits=_same_layout(4, (1, 2), 3),
        metrics=("accuracy",), main_metric="accuracy"),
    "wnli": GlueTask(
        name="wnli", folder="WNLI", hub_text_fields=("sentence1", "sentence2"),
        label_names=("not_entailment", "entailment"), tsv_labels=_BINARY_TSV_LABELS,
        # Columns: index, sentence1, sentence2, label.
        splits=_same_layout(4, (1, 2), 3),
        metrics=("accuracy",), main_metric="accuracy"),
}


def get_glue_task(task: str) -> GlueTask:
    """Look up a task by name (case-insensitive; `sst-2` and `sts-b` also match).

    Raises:
      ValueError: the task is not a GLUE task; the message lists the choices.
    """
    key = task.lower().replace("-", "")
    if key not in GLUE_TASKS:
        raise ValueError(
            f"Unknown GLUE task {task!r}. Choose one of: {', '.join(GLUE_TASKS)}."
        )
    return GLUE_TASKS[key]


def _check_split(task: GlueTask, split: str) -> TsvLayout:
    if split not in task.splits:
        raise ValueError(
            f"Unknown split {split!r} for GLUE task {task.name!r}. Choose one of: "
            f"{', '.join(task.splits)} (test splits have no labels and are not supported)."
        )
    return task.splits[split]


def find_glue_file(task: GlueTask, split: str, data_dir: str | os.PathLike) -> str:
    """Return the path of a split's tsv file in `data_dir/<TASK>/` or `data_dir/`.

    Raises:
      FileNotFoundError: neither location has the file; the message names both paths.
    """
    layout = _check_split(task, split)
    data_dir = os.fspath(data_dir)
    candidates = [
        os.path.join(data_dir, task.folder, layout.file_name),
        os.path.join(data_dir, layout.file_name),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        f"No {split} file for GLUE task {task.name!r}: expected {candidates[0]} or "
        f"{candidates[1]} (GLUE's original tsv layout). Pass data_dir= the folder that "
        f"contains {task.folder}/, or data_dir=None to download from the hub."
    )


def _parse_label(task: GlueTask, cell: str, path: str, line: int) -> int | float:
    """Convert one tsv label cell to a class id or score."""
    if task.score_range is not None:
        low, high = task.score_range
        try:
            score = float(cell)
        except ValueError:
            score = float("nan")
        if not low <= score <= high:
            raise DataFormatError(
                f"{path}, line {line}: invalid {task.name} score {cell!r}; expected a number "
                f"in [{low}, {high}]. Check that the file is the {task.name} "
                "file of GLUE's original release.",
                path, line)
        return score
    if cell not in task.tsv_labels:
        raise DataFormatError(
            f"{path}, line {line}: invalid {task.name} label {cell!r}; expected one of "
            f"{sorted(task.tsv_labels)}. Check that the file belongs to task {task.name!r} "
            "and is not a test file without labels.",
            path, line)
    return task.tsv_labels[cell]


def _is_label(task: GlueTask, cell: str) -> bool:
    try:
        _parse_label(task, cell, "", 0)
    except DataFormatError:
        return False
    return True


def read_glue_tsv(path: str | os.PathLike, task: str, split: str, *,
                  skip_invalid_rows: bool = False) -> list[dict[str, Any]]:
    """Parse one GLUE tsv file into examples.

    Args:
      path: the tsv file.
      task: GLUE task name.
      split: split whose column layout the file has (`train`, `validation`,
        or for MNLI `validation_matched` / `validation_mismatched`).
      skip_invalid_rows: log and skip rows with the wrong number of columns
        or an invalid label, in place of raising. Some copies of QQP's train
        file contain such rows.

    Returns:
      Examples with fields `text_a`, `text_b`, `label` and `idx`.

    Raises:
      DataFormatError: a row has the wrong number of columns or an invalid
        label, or a file that should start with a header starts with a data row.
      ValueError: the file has no data rows.
    """
    glue_task = get_glue_task(task)
    layout = _check_split(glue_task, split)
    path = os.fspath(path)
    examples: list[dict[str, Any]] = []
    num_skipped = 0
    # utf-8-sig drops the byte order mark that MRPC's files start with.
    # newline="\n" splits rows on line feeds only, so a stray carriage return
    # or Unicode line separator inside a sentence stays part of its cell.
    with open(path, encoding="utf-8-sig", newline="\n") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cells = line.split("\t")
            if line_number == 1 and layout.has_header:
                if len(cells) == layout.num_columns and _is_label(
                        glue_task, cells[layout.label_column]):
                    raise DataFormatError(
                        f"{path}, line 1: expected a header row but found a data row "
                        f"(label {cells[layout.label_column]!r}). GLUE's original "
                        f"{layout.file_name} for {glue_task.name} starts with a header; "
                        "restore it.",
                        path, 1)
                continue
            try:
                if len(cells) != layout.num_columns:
                    raise DataFormatError(
                        f"{path}, line {line_number}: expected {layout.num_columns} "
                        f"tab-separated columns for {glue_task.name} {layout.file_name}, "
                        f"found {len(cells)}. Check that the file belongs to this task and "
                        "split, or skip such rows with skip_invalid_rows=True "
                        "(--config.data.skip_invalid_rows=true).",
                        path, line_number)
                label = _parse_label(glue_task, cells[layout.label_column], path, line_number)
            except DataFormatError as err:
                if not skip_invalid_rows:
                    raise
                num_skipped += 1
                logger.debug("Skipping row: %s", err)
                continue
            texts = [cells[column] for column in layout.text_columns]
            examples.append({
                "text_a": texts[0],
                "text_b": texts[1] if len(texts) > 1 else None,
                "label": label,
                "idx": len(examples),
            })
    if num_skipped:
        logger.warning("Skipped %d invalid rows of %s.", num_skipped, path)
    if not examples:
        raise ValueError(
            f"{path} contains no {glue_task.name} examples. Check that it is the "
            f"{layout.file_name} of GLUE's original release and not empty."
        )
    return examples


def _load_glue_from_hub(task: GlueTask, split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(GLUE_HUB_ID, task.name, split=split)
    except Exception as err:  # The hub client raises many unrelated types offline.
        raise DatasetLoadError(
            f"Loading GLUE task {task.name!r} split {split!r} from the Hugging Face hub "
            f"({GLUE_HUB_ID}) failed: {err}. Without hub access, pass data_dir= a local "
            f"folder in GLUE's original tsv layout ({task.folder}/"
            f"{task.splits[split].file_name})."
        ) from err
    fields = task.hub_text_fields
    examples = []
    for row in dataset:
        examples.append({
            "text_a": row[fields[0]],
            "text_b": row[fields[1]] if len(fields) > 1 else None,
            "label": float(row["label"]) if task.is_regression else int(row["label"]),
            "idx": len(examples),
        })
    if not examples:
        raise ValueError(f"The hub dataset {GLUE_HUB_ID}/{task.name} split {split} is empty.")
    return examples


def load_glue(task: str, split: str, data_dir: str | os.PathLike | None = None, *,
              skip_invalid_rows: bool = False) -> list[dict[str, Any]]:
    """Load one split of a GLUE task from a local folder or the hub.

    Args:
      task: GLUE task name (`cola`, `sst2`, `mrpc`, `qqp`, `stsb`, `mnli`,
        `qnli`, `rte`, `wnli`).
      split: `train` or `validation`; for MNLI `train`, `validation_matched`
        or `validation_mismatched`.
      data_dir: folder in GLUE's original tsv layout, either the GLUE root
        (with `<TASK>/train.tsv`) or the task folder itself. None downloads
        `nyu-mll/glue` from the hub with `datasets`.
      skip_invalid_rows: see `read_glue_tsv`.

    Returns:
      Examples with fields `text_a`, `text_b`, `label` and `idx`.

    Raises:
      ValueError: unknown task or split, or an empty dataset.
      FileNotFoundError: the tsv file is missing.
      DataFormatError: a row of the file is invalid.
      DatasetLoadError: the hub download failed.
    """
    glue_task = get_glue_task(task)
    _check_split(glue_task, split)
    if data_dir is None:
        return _load_glue_from_hub(glue_task, split)
    path = find_glue_file(glue_task, split, data_dir)
    return read_glue_tsv(path, glue_task.name, split, skip_invalid_rows=skip_invalid_rows)


def encode_glue(examples: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int = 128, *,
                max_position_embeddings: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize GLUE examples into fixed-length model inputs.

    Pairs are truncated with the `longest_first` strategy, as in Hugging Face's
    `run_glue.py`, and every row is padded to `max_length`.

    Args:
      examples: examples from `load_glue` (fields `text_a`, `text_b`, `label`).
      tokenizer: a Hugging Face tokenizer.
      max_length: sequence length in tokens, special tokens included.
      max_position_embeddings: the model's position-embedding count; when
        given, a longer `max_length` raises.

    Returns:
      `input_ids`, `attention_mask`, `token_type_ids` (int32, shape
      `[n, max_length]`) and `labels` (int32 class ids, or float32 scores when
      the labels are floats, shape `[n]`).

    Raises:
      ValueError: no examples, a `max_length` above `max_position_embeddings`,
        or examples that mix single sentences and pairs.
    """
    if not examples:
        raise ValueError("No examples to encode: the dataset is empty.")
    check_max_length(max_length, max_position_embeddings)
    texts_a = [example["text_a"] for example in examples]
    texts_b = [example["text_b"] for example in examples]
    num_pairs = sum(text is not None for text in texts_b)
    if 0 < num_pairs < len(texts_b):
        raise ValueError(
            f"{num_pairs} of {len(texts_b)} examples have a text_b and the rest do not; "
            "a GLUE task has either single sentences or pairs, so the examples come from "
            "different tasks."
        )
    encoded = tokenizer(
        texts_a,
        texts_b if num_pairs else None,
        truncation=True,
        max_length=max_length,
        padding="max_length",
        return_token_type_ids=True,
        return_attention_mask=True,
    )
    input_ids = np.asarray(encoded["input_ids"], dtype=np.int32)
    labels = np.asarray([example["label"] for example in examples])
    if labels.dtype.kind == "f":
        labels = labels.astype(np.float32)
    else:
        labels = labels.astype(np.int32)
    return {
        "input_ids": input_ids,
        "attention_mask": np.asarray(encoded["attention_mask"], dtype=np.int32),
        "token_type_ids": np.asarray(encoded["token_type_ids"], dtype=np.int32),
        "labels": labels,
    }

