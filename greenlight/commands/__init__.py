"""The CLI's command groups, and how each reports a failure."""

from __future__ import annotations

import sys

from greenlight.errors import exit_code


def failed(error: BaseException | str, code: int | None = None) -> int:
    """Say ``FAILED: <reason>`` on stderr and return the exit code of the error's kind (or ``code``)."""
    print(f"FAILED: {error}", file=sys.stderr, flush=True)
    if code is not None:
        return code
    return exit_code(error) if isinstance(error, BaseException) else 1
