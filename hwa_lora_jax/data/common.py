"""Checks shared by the GLUE and SQuAD tokenization functions."""

from __future__ import annotations


def check_max_length(max_length: int, max_position_embeddings: int | None) -> None:
    """Raise a ValueError when `max_length` cannot fit the model's position embeddings."""
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}.")
    if max_position_embeddings is not None and max_length > max_position_embeddings:
        raise ValueError(
            f"max_length={max_length} exceeds the model's max_position_embeddings="
            f"{max_position_embeddings}. Set max_length to at most {max_position_embeddings}."
        )
