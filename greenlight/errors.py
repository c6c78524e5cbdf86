"""One hierarchy for everything Greenlight raises.

    GreenlightError
     ├── TransientError            retry may help (429, 5xx, timeouts, UNAVAILABLE)
     │    └── (carries retry_after: float | None, honoured by task retries)
     └── PermanentError            retrying will not help
          ├── InputInvalid         bad input: malformed image ref, unknown environment/app, bad profile
          │    └── ProfileInvalid  an environment profile failed validation (file, field, reason)
          ├── NotFound             the thing named does not exist (404, missing bucket/object/image)
          ├── Conflict             stale write / failed precondition (409, 412)
          ├── Forbidden            credentials refused (401/403)
          ├── GateFailed           a health gate said fail or inconclusive
          ├── BackupInvalid        a backup is missing, stale, shrunken, corrupt or does not restore
          └── ReleaseRefused       a release may not proceed (freeze, unapproved digest, approval refused)

Clients in ``greenlight.clients`` translate SDK errors into these, ``raise ... from e``.
Messages name what is wrong and never carry secret values.

Every command exits with the code of the kind of failure (:func:`exit_code`), after
``FAILED: <reason>`` on stderr:

    0 ok                       5 Forbidden (credentials refused)
    1 anything unexpected      6 Conflict (a write lost a race)
    2 InputInvalid (bad input) 7 ReleaseRefused
    3 NotFound                 8 GateFailed (a gate, a drill's target)
    4 TransientError (retry)   9 BackupInvalid (not verified)
"""

from __future__ import annotations

from typing import Any


class GreenlightError(Exception):
    """Base of every error Greenlight raises on purpose."""


class TransientError(GreenlightError):
    """A failure that may pass: retry, after ``retry_after`` seconds when the server said so."""

    def __init__(self, message: str, *, retry_after: float | None = None, exhausted: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        # the client already retried for its whole budget: retrying the task would start it over
        self.exhausted = exhausted

    def __reduce__(self) -> tuple[Any, ...]:  # keyword-only fields survive pickling (Prefect states)
        return (_transient, (str(self), self.retry_after, self.exhausted))


def _transient(message: str, retry_after: float | None, exhausted: bool) -> TransientError:
    return TransientError(message, retry_after=retry_after, exhausted=exhausted)


class PermanentError(GreenlightError):
    """A failure that retrying will not fix."""


class InputInvalid(PermanentError):
    """Bad input from a person or a caller: the message names the field and what is wrong."""


class ProfileInvalid(InputInvalid):
    """An environment profile failed validation."""


class NotFound(PermanentError):
    """The named object does not exist."""


class Conflict(PermanentError):
    """A write lost a race: stale resourceVersion, failed precondition, already exists."""


class Forbidden(PermanentError):
    """The credentials were refused."""


class GateFailed(PermanentError):
    """A health gate did not pass (fail or inconclusive); ``verdicts`` holds what it measured
    (app -> verdict dict) when the gate flow raised it."""

    verdicts: dict[str, Any] | None = None


class BackupInvalid(PermanentError):
    """A backup cannot be trusted: missing, stale, shrunken, corrupt, mismatched or unrestorable."""


class ReleaseRefused(PermanentError):
    """A release may not proceed (freeze, digest not proven in staging, approval refused)."""


def is_transient(exc: BaseException) -> bool:
    """True when retrying ``exc`` may help; used as the tasks' ``retry_condition_fn``."""
    return isinstance(exc, TransientError)


_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (InputInvalid, 2),
    (NotFound, 3),
    (TransientError, 4),
    (Forbidden, 5),
    (Conflict, 6),
    (ReleaseRefused, 7),
    (GateFailed, 8),
    (BackupInvalid, 9),
)


def exit_code(error: BaseException) -> int:
    """The exit code that tells the kind of ``error`` (see the module docstring); 1 for any other."""
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), 1)
