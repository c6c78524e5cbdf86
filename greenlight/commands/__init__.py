"""The CLI's command groups, and how each reports: a failure, a JSON document, progress."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

from greenlight.commands.progress import progress
from greenlight.errors import GreenlightError, exit_code

Report = dict[str, Any]

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


def run_and_print(
    work: Callable[[], Report], show: Callable[[Report], None], as_json: bool, label: str | None = None
) -> tuple[int, Report | None]:
    """Run ``work`` (with progress on stderr under ``label``) and print its report: the JSON
    document with ``--json``, else ``show``'s lines. Returns the exit code and the report.

    A Greenlight error that carries a partial ``report`` (what was done before it stopped) has
    that printed the same way before ``FAILED: <reason>``; the report returned is then None.
    """
    try:
        with stdout_for_json(as_json), progress(label) if label else contextlib.nullcontext():
            report = work()
    except GreenlightError as e:
        partial = getattr(e, "report", None)
        if isinstance(partial, dict):
            print_json(partial) if as_json else show(partial)
        return failed(e), None
    print_json(report) if as_json else show(report)
    return 0, report
