"""Exceptions raised by the dataset loaders."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A data file does not have the layout its task expects.

    Attributes:
      path: the file that failed to parse.
      line: 1-based line number of the invalid row, or None when the error
        concerns the whole file.
    """

    def __init__(self, message: str, path: str, line: int | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.line = line


class DatasetLoadError(RuntimeError):
    """Loading a dataset from the Hugging Face hub failed."""
