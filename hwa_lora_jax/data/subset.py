"""Deterministic subsets and held-out splits of a list of examples.

A subset is described by a spec string, so that a run's config can record it:

- `all`: every example;
- `first:N`: the first N examples in file order;
- `range:START:STOP`: examples START to STOP - 1 in file order;
- `random:N`: N examples drawn without replacement with `seed`, kept in file order;
- `fraction:F`: round(F * n) examples drawn like `random`, 0 < F <= 1;
- `holdout_train:F[:BY]` and `holdout_eval:F[:BY]`: the two disjoint parts of
  `split_holdout(examples, F, seed=seed, by=BY)`, with BY `example` (the
  default) or `article`. Use the same F, BY and seed for both parts, for
  example to train on part of SQuAD dev and evaluate on the rest when no
  train file is available.

Every function also returns a JSON-serializable description: the spec, the
seed, the sizes and a fingerprint (SHA-256 prefix of the selected positions),
which changes when the selection changes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence, TypeVar

import numpy as np

Example = TypeVar("Example")

SPEC_HELP = ("all | first:N | range:START:STOP | random:N | fraction:F | "
             "holdout_train:F[:example|article] | holdout_eval:F[:example|article]")


def _fingerprint(positions: Sequence[int]) -> str:
    data = np.asarray(positions, dtype=np.int64).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def _describe(spec: str, seed: int, num_source: int, positions: Sequence[int],
              **extra: Any) -> dict[str, Any]:
    return {"spec": spec, "seed": seed, "num_source": num_source,
            "num_selected": len(positions), "fingerprint": _fingerprint(positions), **extra}


def _invalid_spec(spec: str, reason: str) -> ValueError:
    return ValueError(f"Invalid subset spec {spec!r}: {reason}. Expected one of: {SPEC_HELP}.")


def _parse_int(spec: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise _invalid_spec(spec, f"{text!r} is not an integer") from None


def _parse_fraction(spec: str, text: str) -> float:
    try:
        fraction = float(text)
    except ValueError:
        raise _invalid_spec(spec, f"{text!r} is not a number") from None
    if not 0.0 < fraction <= 1.0:
        raise _invalid_spec(spec, f"the fraction {fraction} is outside (0, 1]")
    return fraction


def _random_positions(num_source: int, count: int, seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(num_source, size=count, replace=False).tolist())


def select_subset(examples: Sequence[Example], spec: str = "all", *,
                  seed: int = 0) -> tuple[list[Example], dict[str, Any]]:
    """Select a deterministic subset of `examples` described by `spec`.

    Args:
      examples: the full split, in file order.
      spec: a subset spec (see the module docstring).
      seed: seed of the `random`, `fraction` and `holdout_*` selections.

    Returns:
      The selected examples and a JSON-serializable description of the selection.

    Raises:
      ValueError: an invalid spec, a size larger than the split, an empty
        selection or an empty split.
    """
    num_source = len(examples)
    if num_source == 0:
        raise ValueError("Cannot select a subset of an empty dataset.")
    kind, _, argument = spec.partition(":")
    extra: dict[str, Any] = {}

    if kind == "all" and not argument:
        positions = list(range(num_source))
    elif kind == "first":
        count = _parse_int(spec, argument)
        positions = list(range(_check_count(spec, count, num_source)))
    elif kind == "range":
        start_text, _, stop_text = argument.partition(":")
        start, stop = _parse_int(spec, start_text), _parse_int(spec, stop_text)
        if not 0 <= start < stop <= num_source:
            raise _invalid_spec(
                spec, f"need 0 <= START < STOP <= {num_source} (the dataset's size)")
        positions = list(range(start, stop))
    elif kind == "random":
        count = _check_count(spec, _parse_int(spec, argument), num_source)
        positions = _random_positions(num_source, count, seed)
    elif kind == "fraction":
        count = round(_parse_fraction(spec, argument) * num_source)
        if count == 0:
            raise _invalid_spec(spec, f"it selects no example of {num_source}")
        positions = _random_positions(num_source, count, seed)
    elif kind in ("holdout_train", "holdout_eval"):
        fraction_text, _, by = argument.partition(":")
        train_positions, eval_positions, extra = _holdout_positions(
            examples, _parse_fraction(spec, fraction_text), seed, by or "example", spec)
        positions = train_positions if kind == "holdout_train" else eval_positions
    else:
        raise _invalid_spec(spec, f"unknown kind {kind!r}")

    description = _describe(spec, seed, num_source, positions, **extra)
    return [examples[i] for i in positions], description


def _check_count(spec: str, count: int, num_source: int) -> int:
    if not 0 < count <= num_source:
        raise _invalid_spec(spec, f"N must be in [1, {num_source}] (the dataset's size)")
    return count


def split_holdout(examples: Sequence[Example], fraction: float, *, seed: int = 0,
                  by: str = "example") -> tuple[list[Example], list[Example], dict[str, Any]]:
    """Split examples into disjoint train and eval parts with a seeded random holdout.

    Args:
      examples: the split to divide, in file order.
      fraction: share of examples (`by="example"`) or of articles
        (`by="article"`) that go to the eval part, 0 < fraction < 1.
      seed: seed of the random choice.
      by: `example` holds out single examples; `article` holds out whole
        articles (examples grouped by their `title` field, as in SQuAD), so no
        context appears in both parts.

    Returns:
      The train part and the eval part, both in file order, and a
      JSON-serializable description (the eval part's article titles included
      when `by="article"`).

    Raises:
      ValueError: fraction outside (0, 1), unknown `by`, examples without a
        `title` for `by="article"`, or a split that leaves a part empty.
    """
    spec = f"holdout:{fraction}:{by}"
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"Holdout fraction {fraction} must be in (0, 1).")
    if not examples:
        raise ValueError("Cannot split an empty dataset.")
    train_positions, eval_positions, extra = _holdout_positions(
        examples, fraction, seed, by, spec)
    description = {
        "spec": spec, "seed": seed, "num_source": len(examples),
        "num_train": len(train_positions), "num_eval": len(eval_positions),
        "train_fingerprint": _fingerprint(train_positions),
        "eval_fingerprint": _fingerprint(eval_positions), **extra,
    }
    return ([examples[i] for i in train_positions], [examples[i] for i in eval_positions],
            description)


def _holdout_positions(examples: Sequence[Any], fraction: float, seed: int, by: str,
                       spec: str) -> tuple[list[int], list[int], dict[str, Any]]:
    """Choose the held-out positions; the rest, in file order, form the train part."""
    if fraction >= 1.0:
        raise _invalid_spec(spec, "a holdout fraction must be below 1")
    rng = np.random.default_rng(seed)
    extra: dict[str, Any] = {}
    if by == "example":
        num_eval = round(fraction * len(examples))
        eval_set = set(rng.choice(len(examples), size=num_eval, replace=False).tolist())
    elif by == "article":
        titles = []
        for i, example in enumerate(examples):
            if not isinstance(example, dict) or "title" not in example:
                raise ValueError(
                    f"Example {i} has no 'title' field, so it cannot be grouped by article; "
                    "use by='example'.")
            titles.append(example["title"])
        unique_titles = list(dict.fromkeys(titles))
        num_eval_titles = round(fraction * len(unique_titles))
        chosen = rng.choice(len(unique_titles), size=num_eval_titles, replace=False)
        eval_titles = sorted(unique_titles[i] for i in chosen)
        eval_title_set = set(eval_titles)
        eval_set = {i for i, title in enumerate(titles) if title in eval_title_set}
        extra["eval_articles"] = eval_titles
    else:
        raise _invalid_spec(spec, f"unknown holdout unit {by!r}; use 'example' or 'article'")

    train_positions = [i for i in range(len(examples)) if i not in eval_set]
    eval_positions = sorted(eval_set)
    if not train_positions or not eval_positions:
        raise _invalid_spec(
            spec, f"it leaves {len(train_positions)} train and {len(eval_positions)} eval "
                  "examples; choose a fraction that leaves both parts non-empty")
    return train_positions, eval_positions, extra
