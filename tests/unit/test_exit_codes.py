"""Every failure's kind has its exit code; subclasses take their family's (a drill missing its
target is a failed gate, a backup not verified an invalid backup)."""

from __future__ import annotations

import pytest

from greenlight.errors import (
    AnswerRefused,
    BackupInvalid,
    BackupNotVerified,
    Conflict,
    DrillFailed,
    Forbidden,
    GateFailed,
    GreenlightError,
    InputInvalid,
    NotFound,
    PermanentError,
    ProfileInvalid,
    ReleaseRefused,
    TransientError,
    exit_code,
)

CASES = [
    (InputInvalid("x"), 2),
    (ProfileInvalid("x"), 2),
    (NotFound("x"), 3),
    (TransientError("x"), 4),
    (Forbidden("x"), 5),
    (Conflict("x"), 6),
    (ReleaseRefused("x"), 7),
    (GateFailed("x"), 8),
    (DrillFailed("x", {}), 8),
    (BackupInvalid("x"), 9),
    (BackupNotVerified("x", {}), 9),
    (AnswerRefused("x"), 10),
    (PermanentError("x"), 1),
    (GreenlightError("x"), 1),
    (RuntimeError("x"), 1),
]


@pytest.mark.parametrize(("error", "code"), CASES, ids=[f"{type(e).__name__}" for e, _ in CASES])
def test_exit_code_tells_the_kind_of_failure(error: BaseException, code: int) -> None:
    assert exit_code(error) == code
