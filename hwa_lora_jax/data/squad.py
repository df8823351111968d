"""SQuAD v1.1: loading, feature preparation and post-processing to answer text.

Feature preparation and post-processing follow Hugging Face's question-answering
example (`examples/pytorch/question-answering/run_qa.py` and `utils_qa.py`,
transformers 4.x): the question comes first and the context second, only the
context is truncated, and a long context is split into overlapping windows
that share `doc_stride` tokens, so one example can give several features.

An example is a dict with the fields of the hub dataset `rajpurkar/squad`:
`id`, `title`, `context`, `question` and `answers`, where `answers` is
`{"text": [str, ...], "answer_start": [int, ...]}` (character offsets into
`context`).
"""

from __future__ import annotations

import collections
import json
import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from hwa_lora_jax.data.common import check_max_length
from hwa_lora_jax.data.errors import DataFormatError, DatasetLoadError

logger = logging.getLogger(__name__)

SQUAD_HUB_ID = "rajpurkar/squad"
SQUAD_FILES = {"train": "train-v1.1.json", "validation": "dev-v1.1.json"}
# Tokenizer calls cover this many examples at a time, to bound the memory of
# the Python lists that the tokenizer returns.
_TOKENIZE_CHUNK = 1000


def find_squad_file(split: str, data_dir: str | os.PathLike) -> str:
    """Return the path of a split's SQuAD v1.1 json file in `data_dir`.

    Raises:
      ValueError: unknown split.
      FileNotFoundError: the file is missing; the message names the expected path.
    """
    if split not in SQUAD_FILES:
        raise ValueError(
            f"Unknown SQuAD split {split!r}. Choose one of: {', '.join(SQUAD_FILES)}."
        )
    path = os.path.join(os.fspath(data_dir), SQUAD_FILES[split])
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"No SQuAD {split} file: expected {path} (the official {SQUAD_FILES[split]}). "
            "Pass data_dir= the folder that contains it, or data_dir=None to download "
            "from the hub."
        )
    return path


def read_squad_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Parse a SQuAD v1.1 json file into one example per question.

    Raises:
      DataFormatError: the file is not valid json, lacks a field of the SQuAD
        layout, or has an answer start outside its context.
      ValueError: the file has no questions.
    """
    path = os.fspath(path)
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as err:
            raise DataFormatError(
                f"{path} is not valid json ({err}). Expected the official SQuAD v1.1 file.",
                path, err.lineno) from err
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataFormatError(
            f"{path} has no top-level 'data' list. Expected the official SQuAD v1.1 layout "
            "{'version': '1.1', 'data': [{'title', 'paragraphs': [...]}]}.",
            path)
    version = data.get("version")
    if version != "1.1":
        logger.warning("%s has version %r; this loader expects SQuAD v1.1.", path, version)

    examples = []
    num_misaligned = 0
    for article in data["data"]:
        title = article.get("title", "")
        for paragraph in _require(article, "paragraphs", path, f"article {title!r}"):
            context = _require(paragraph, "context", path, f"a paragraph of {title!r}")
            for qa in _require(paragraph, "qas", path, f"a paragraph of {title!r}"):
                question_id = _require(qa, "id", path, f"a question of {title!r}")
                where = f"question {question_id!r}"
                answers = _require(qa, "answers", path, where)
                texts, starts = [], []
                for answer in answers:
                    text = _require(answer, "text", path, where)
                    start = _require(answer, "answer_start", path, where)
                    if not isinstance(start, int) or not 0 <= start <= len(context) - len(text):
                        raise DataFormatError(
                            f"{path}, {where}: answer_start {start!r} does not fit the answer "
                            f"{text!r} into a context of {len(context)} characters.",
                            path)
                    num_misaligned += context[start:start + len(text)] != text
                    texts.append(text)
                    starts.append(start)
                examples.append({
                    "id": question_id,
                    "title": title,
                    "context": context,
                    "question": _require(qa, "question", path, where),
                    "answers": {"text": texts, "answer_start": starts},
                })
    if num_misaligned:
        logger.warning("%d answers in %s differ from the context text at their answer_start.",
                       num_misaligned, path)
    if not examples:
        raise ValueError(f"{path} contains no questions. Expected the official SQuAD v1.1 file.")
    return examples


def _require(record: Any, key: str, path: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise DataFormatError(
            f"{path}: {where} has no {key!r} field. Expected the official SQuAD v1.1 layout.",
            path)
    return record[key]


def _load_squad_from_hub(split: str) -> list[dict[str, Any]]:
    import datasets

    try:
        dataset = datasets.load_dataset(SQUAD_HUB_ID, split=split)
    except Exception as err:  # The hub client raises many unrelated types offline.
        raise DatasetLoadError(
            f"Loading SQuAD split {split!r} from the Hugging Face hub ({SQUAD_HUB_ID}) "
            f"failed: {err}. Without hub access, pass data_dir= a local folder that "
            f"contains {SQUAD_FILES[split]}."
        ) from err
    examples = [
        {
            "id": row["id"],
            "title": row["title"],
            "context": row["context"],
            "question": row["question"],
            "answers": {"text": list(row["answers"]["text"]),
                        "answer_start": [int(s) for s in row["answers"]["answer_start"]]},
        }
        for row in dataset
    ]
    if not examples:
        raise ValueError(f"The hub dataset {SQUAD_HUB_ID} split {split} is empty.")
    return examples


def load_squad(split: str, data_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Load SQuAD v1.1 `train` or `validation` from a local folder or the hub.

    Args:
      split: `train` (`train-v1.1.json`) or `validation` (`dev-v1.1.json`).
      data_dir: folder with the official json files; None downloads
        `rajpurkar/squad` from the hub with `datasets`.

    Returns:
      One example per question (fields in the module docstring).

    Raises:
      ValueError: unknown split or no questions.
      FileNotFoundError: the json file is missing.
      DataFormatError: the file does not have SQuAD's layout.
      DatasetLoadError: the hub download failed.
    """
    if split not in SQUAD_FILES:
        raise ValueError(
            f"Unknown SQuAD split {split!r}. Choose one of: {', '.join(SQUAD_FILES)}."
        )
    if data_dir is None:
        return _load_squad_from_hub(split)
    return read_squad_json(find_squad_file(split, data_dir))


def _tokenize_windows(examples: Sequence[Mapping[str, Any]], tokenizer: Any, max_length: int,
                      doc_stride: int):
    """Tokenize questions and contexts into overlapping windows (`run_qa.py`'s call)."""
    pad_on_right = tokenizer.padding_side == "right"
    questions = [example["question"].lstrip() for example in examples]
    contexts = [example["context"] for example in examples]
    return tokenizer(
        questions if pad_on_right else contexts,
        contexts if pad_on_right else questions,
        truncation="only_second" if pad_on_right else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
        padding="max_length",
    )


def _tokenize_in_chunks(examples: Sequence[Mapping[str, Any]], tokenizer: Any,
                        max_length: int, doc_stride: int, max_position_embeddings: int | None):
    """Check the window arguments, then yield (chunk start, chunk, encoding) per chunk."""
    _check_window_args(examples, max_length, doc_stride, max_position_embeddings)
    for chunk_start in range(0, len(examples), _TOKENIZE_CHUNK):
        chunk = examples[chunk_start:chunk_start + _TOKENIZE_CHUNK]
        yield chunk_start, chunk, _tokenize_windows(chunk, tokenizer, max_length, doc_stride)


def _check_window_args(examples: Sequence[Any], max_length: int, doc_stride: int,
                       max_position_embeddings: int | None) -> None:
    if not examples:
        raise ValueError("No SQuAD examples to encode: the dataset is empty.")
    check_max_length(max_length, max_position_embeddings)
    if not 0 <= doc_stride < max_length:
        raise ValueError(
            f"doc_stride={doc_stride} must be in [0, max_length={max_length}); "
            "the default is 128 for max_length 320."
        )


def _cls_index(input_ids: list[int], tokenizer: Any) -> int:
    if tokenizer.cls_token_id in input_ids:
        return input_ids.index(tokenizer.cls_token_id)
    if tokenizer.bos_token_id in input_ids:
        return input_ids.index(tokenizer.bos_token_id)
    return 0


def _answer_token_span(answers: Mapping[str, Sequence[Any]], offsets: Sequence[tuple[int, int]],
                       sequence_ids: Sequence[int | None], context_index: int,
                       cls_index: int) -> tuple[int, int]:
    """Find the first gold answer's token span in one window, or (cls, cls) if it is outside."""
    if len(answers["answer_start"]) == 0:
        return cls_index, cls_index
    start_char = answers["answer_start"][0]
    end_char = start_char + len(answers["text"][0])

    token_start = 0
    while sequence_ids[token_start] != context_index:
        token_start += 1
    token_end = len(sequence_ids) - 1
    while sequence_ids[token_end] != context_index:
        token_end -= 1
    if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
        return cls_index, cls_index

    # Move token_start to the last token that starts at or before the answer,
    # and token_end to the first token that ends at or after it.
    while token_start < len(offsets) and offsets[token_start][0] <= start_char:
        token_start += 1
    while offsets[token_end][1] >= end_char:
        token_end -= 1
    return token_start - 1, token_end + 1


def prepare_train_features(examples: Sequence[Mapping[str, Any]], tokenizer: Any,
                           max_length: int = 320, doc_stride: int = 128, *,
                           max_position_embeddings: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize SQuAD examples into training windows with answer token positions.

    The target is the first gold answer. A window that does not contain the
    whole answer points both positions at the CLS token.

    Args:
      examples: examples from `load_squad`.
      tokenizer: a Hugging Face fast tokenizer (offset mapping is required).
      max_length: window length in tokens, special tokens included.
      doc_stride: number of context tokens shared by consecutive windows.
      max_position_embeddings: the model's position-embedding count; when
        given, a longer `max_length` raises.

    Returns:
      `input_ids`, `attention_mask`, `token_type_ids` (int32,
      `[num_features, max_length]`), `start_positions`, `end_positions` and
      `example_index` (int32, `[num_features]`; the index into `examples`).

    Raises:
      ValueError: no examples, `max_length` above `max_position_embeddings`,
        or `doc_stride` not below `max_length`.
    """
    context_index = 1 if tokenizer.padding_side == "right" else 0
    parts = collections.defaultdict(list)
    chunks = _tokenize_in_chunks(examples, tokenizer, max_length, doc_stride,
                                 max_position_embeddings)
    for chunk_start, chunk, encoded in chunks:
        sample_mapping = encoded["overflow_to_sample_mapping"]
        starts, ends = [], []
        for i, offsets in enumerate(encoded["offset_mapping"]):
            input_ids = encoded["input_ids"][i]
            span = _answer_token_span(
                chunk[sample_mapping[i]]["answers"], offsets, encoded.sequence_ids(i),
                context_index, _cls_index(input_ids, tokenizer))
            starts.append(span[0])
            ends.append(span[1])
        _append_common(parts, encoded, chunk_start)
        parts["start_positions"].append(np.asarray(starts, dtype=np.int32))
        parts["end_positions"].append(np.asarray(ends, dtype=np.int32))
    return {key: np.concatenate(values) for key, values in parts.items()}


def prepare_eval_features(examples: Sequence[Mapping[str, Any]], tokenizer: Any,
                          max_length: int = 320, doc_stride: int = 128, *,
                          max_position_embeddings: int | None = None) -> dict[str, np.ndarray]:
    """Tokenize SQuAD examples into evaluation windows that keep their character offsets.

    The arguments are those of `prepare_train_features`, and the windows are the same.

    Returns:
      `input_ids`, `attention_mask`, `token_type_ids` (int32,
      `[num_features, max_length]`); `offset_mapping` (int32,
      `[num_features, max_length, 2]`), the (start, end) character offsets of
      each context token in its example's context and (-1, -1) for question,
      special and padding tokens; `example_index` (int32, `[num_features]`)
      and `example_id` (str array, `[num_features]`).

    Raises:
      ValueError: as for `prepare_train_features`.
    """
    context_index = 1 if tokenizer.padding_side == "right" else 0
    parts = collections.defaultdict(list)
    chunks = _tokenize_in_chunks(examples, tokenizer, max_length, doc_stride,
                                 max_position_embeddings)
    for chunk_start, _, encoded in chunks:
        offsets = np.asarray(encoded["offset_mapping"], dtype=np.int32)
        for i in range(len(offsets)):
            in_context = np.asarray(
                [sequence_id == context_index for sequence_id in encoded.sequence_ids(i)])
            offsets[i][~in_context] = -1
        _append_common(parts, encoded, chunk_start)
        parts["offset_mapping"].append(offsets)
    features = {key: np.concatenate(values) for key, values in parts.items()}
    features["example_id"] = np.asarray(
        [examples[index]["id"] for index in features["example_index"]], dtype=str)
    return features


def _append_common(parts: dict[str, list[np.ndarray]], encoded: Any, chunk_start: int) -> None:
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        parts[key].append(np.asarray(encoded[key], dtype=np.int32))
    sample_mapping = np.asarray(encoded["overflow_to_sample_mapping"], dtype=np.int32)
    parts["example_index"].append(sample_mapping + chunk_start)


def postprocess_qa_predictions(examples: Sequence[Mapping[str, Any]],
                               features: Mapping[str, np.ndarray],
                               start_logits: np.ndarray, end_logits: np.ndarray,
                               n_best_size: int = 20,
                               max_answer_length: int = 30) -> dict[str, str]:
    """Turn per-feature start and end logits into one answer text per example.

    This is the SQuAD v1.1 path (no null answer) of `postprocess_qa_predictions`
    in Hugging Face's `utils_qa.py`: for each feature, every pair of the
    `n_best_size` highest start and end logits that lies inside the context,
    has end >= start and spans at most `max_answer_length` tokens is a
    candidate scored by start logit + end logit; the best candidate over all
    of an example's features gives the answer's character span. An example
    without any valid candidate gets the answer "empty", as in `utils_qa.py`.

    Args:
      examples: the examples that the features came from.
      features: output of `prepare_eval_features` (`offset_mapping`,
        `example_id`).
      start_logits: `[num_features, max_length]` start logits.
      end_logits: `[num_features, max_length]` end logits.
      n_best_size: number of top start and end positions to pair up.
      max_answer_length: maximum answer length in tokens.

    Returns:
      Example id -> predicted answer text.

    Raises:
      ValueError: the logits' shape differs from the features', or a feature
        names an example id that is not in `examples`.
    """
    offset_mapping = np.asarray(features["offset_mapping"])
    start_logits = np.asarray(start_logits)
    end_logits = np.asarray(end_logits)
    expected_shape = offset_mapping.shape[:2]
    for name, logits in (("start_logits", start_logits), ("end_logits", end_logits)):
        if logits.shape != expected_shape:
            raise ValueError(
                f"{name} has shape {logits.shape} but the features have shape {expected_shape} "
                "[num_features, max_length]; pass the logits of exactly these features, "
                "without padding rows."
            )

    example_id_to_index = {example["id"]: i for i, example in enumerate(examples)}
    features_per_example = collections.defaultdict(list)
    for feature_index, example_id in enumerate(features["example_id"]):
        if example_id not in example_id_to_index:
            raise ValueError(
                f"Feature {feature_index} belongs to example {example_id!r}, which is not in "
                "examples; pass the examples that the features were prepared from."
            )
        features_per_example[example_id_to_index[example_id]].append(feature_index)

    predictions = {}
    for example_index, example in enumerate(examples):
        candidates = []
        for feature_index in features_per_example[example_index]:
            candidates.extend(_feature_candidates(
                start_logits[feature_index], end_logits[feature_index],
                offset_mapping[feature_index], n_best_size, max_answer_length))
        # sorted() is stable, so equal scores keep the order of utils_qa.py.
        best = sorted(candidates, key=lambda candidate: candidate[0], reverse=True)[:n_best_size]
        context = example["context"]
        texts = [context[start:end] for _, start, end in best]
        if not texts or (len(texts) == 1 and texts[0] == ""):
            texts.insert(0, "empty")
        predictions[example["id"]] = texts[0]
    return predictions


def _feature_candidates(start_logits: np.ndarray, end_logits: np.ndarray, offsets: np.ndarray,
                        n_best_size: int, max_answer_length: int) -> list[tuple[float, int, int]]:
    """List (score, start char, end char) of the valid spans among one feature's top logits."""
    # The same (unstable) argsort as utils_qa.py, so ties resolve identically.
    start_indexes = np.argsort(start_logits)[-1: -n_best_size - 1: -1].tolist()
    end_indexes = np.argsort(end_logits)[-1: -n_best_size - 1: -1].tolist()
    candidates = []
    for start_index in start_indexes:
        for end_index in end_indexes:
            if offsets[start_index, 0] < 0 or offsets[end_index, 0] < 0:
                continue
            if end_index < start_index or end_index - start_index + 1 > max_answer_length:
                continue
            score = float(start_logits[start_index] + end_logits[end_index])
            candidates.append((score, int(offsets[start_index, 0]), int(offsets[end_index, 1])))
    return candidates
