"""Shared entry-point behaviour of `train.py` and `evaluate.py`."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

# Errors that the library raises for bad input (config, data, checkpoint). A
# user needs their message, not the stack.
INPUT_ERRORS = (ValueError, FileNotFoundError, ImportError)


def report_input_errors(main: Callable[[Sequence[str]], None]) -> Callable[[Sequence[str]], None]:
    """Wrap an absl `main` so that input errors print as one line and exit with status 2."""

    def wrapped(argv: Sequence[str]) -> None:
        try:
            main(argv)
        except INPUT_ERRORS as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapped
