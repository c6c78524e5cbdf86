"""The CLI's command groups, and how each reports: a failure, a JSON document, progress."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Any

from greenlight.errors import exit_code

JSON_HELP = (
    "print the outcome and its values as one JSON document on stdout (progress and FAILED stay on stderr)"
)


def failed(error: BaseException | str, code: int | None = None) -> int:
    """Say ``FAILED: <reason>`` on stderr and return the exit code of the error's kind (or ``code``)."""
    print(f"FAILED: {error}", file=sys.stderr, flush=True)
    if code is not None:
        return code
    return exit_code(error) if isinstance(error, BaseException) else 1


def print_json(doc: Any) -> None:
    """One JSON document on stdout: what ``--json`` prints, success or failure alike."""
    print(json.dumps(doc, indent=2, sort_keys=True, default=str), flush=True)


@contextlib.contextmanager
def stdout_for_json(active: bool) -> Iterator[None]:
    """While ``active`` (a ``--json`` run), anything the flows print goes to stderr, so that stdout
    holds the JSON document alone."""
    if not active:
        yield
        return
    with contextlib.redirect_stdout(sys.stderr):
        yield
