"""One hierarchy for everything Greenlight raises.

    GreenlightError                (carries status: int | None, the HTTP status the service answered,
     │                              and code: str | None, its own name for the failure: a gRPC status
     │                              such as UNAVAILABLE, a Slack error, a PostgreSQL SQLSTATE)
     ├── TransientError            retry may help (429, 5xx, timeouts, UNAVAILABLE)
     │    └── (carries retry_after: float | None, the server's Retry-After: a task retried by
     │         greenlight.tasks.policy.retry_transient starts its next try no sooner, and is not
     │         retried when the server asks for more than 30 s; and exhausted: the client already
     │         spent its own retries, so the task is not retried: see is_transient)
     └── PermanentError            retrying will not help
          ├── InputInvalid         bad input: malformed image ref, unknown environment/app, bad profile
          │    ├── ProfileInvalid  an environment profile failed validation (file, field, reason)
          │    └── PayloadInvalid  a webhook delivery lacks a field (greenlight.webhook.verify)
          ├── NotFound             the thing named does not exist (404, missing bucket/object/image)
          ├── Conflict             stale write / failed precondition (409, 412)
          │    └── LockHeld        a lock (a global concurrency limit) stayed held for the wait
          ├── Forbidden            credentials refused (401/403)
          ├── GateFailed           a health gate said fail or inconclusive
          │    └── DrillFailed     a DR drill failed a step or missed RTO/RPO
          ├── BackupInvalid        a backup is missing, stale, shrunken, corrupt or does not restore
          │    └── BackupNotVerified  verification said no
          ├── ReleaseRefused       a release may not proceed (freeze, unapproved digest, approval refused)
          └── AnswerRefused        an approval answer did not count (unverified, not an approver, the
                                   author's own): the release still waits for a valid one

Clients in ``greenlight.clients`` translate SDK errors into these, ``raise ... from e``, keeping
the status (and the code) on the error, as Kopf's APIError keeps ``status``. Flows, tasks and
commands raise nothing outside the tree (tests/unit/test_errors_raised.py holds them to it);
one that tells an error again with more context (:func:`with_message`) keeps its class and fields.
Messages name what is wrong and never carry secret values. Every field survives pickling
(Prefect pickles exceptions into task and flow states).

Every command exits with the code of the kind of failure (:func:`exit_code`), after
``FAILED: <reason>`` on stderr (:data:`OUTCOMES` says what each code means; docs/cli.md shows it):

    0 ok                       5 Forbidden (credentials refused)
    1 anything unexpected      6 Conflict (a write lost a race)
    2 InputInvalid (bad input) 7 ReleaseRefused
    3 NotFound                 8 GateFailed (a gate, a drill's target)
    4 TransientError (retry)   9 BackupInvalid (not verified)
                              10 AnswerRefused (approval answer not counted)
                             130 interrupted
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class GreenlightError(Exception):
    """Base of every error Greenlight raises on purpose.

    ``status`` is the HTTP status the service answered (None when there was no answer, or the
    failure is Greenlight's own judgement); ``code`` is the service's own name for the failure
    (a gRPC status code name, a Slack ``error``, a PostgreSQL SQLSTATE), or None.
    """

    status: int | None
    code: str | None

    def __init__(self, *args: object, status: int | None = None, code: str | None = None) -> None:
        super().__init__(*args)
        self.status = status
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        # every field survives pickling (Prefect states), also for subclasses whose __init__ takes
        # other arguments than the message (BackupNotVerified, DrillFailed, PayloadInvalid)
        return (_rebuild, (type(self), self.args, dict(self.__dict__)))


def _rebuild(cls: type[GreenlightError], args: tuple[Any, ...], fields: dict[str, Any]) -> GreenlightError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(fields)
    return error


class TransientError(GreenlightError):
    """A failure that may pass: retry, after ``retry_after`` seconds when the server said so."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        exhausted: bool = False,
        status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after
        # the client already retried for its whole budget: retrying the task would start it over
        self.exhausted = exhausted


def _transient(message: str, retry_after: float | None, exhausted: bool) -> TransientError:
    # what TransientError pickled to before GreenlightError.__reduce__: states persisted by an
    # earlier version still load
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


class LockHeld(Conflict):
    """A lock (a Prefect global concurrency limit) stayed held for the whole wait
    (greenlight.tasks.locks.hold): someone else is doing the work it guards."""


class Forbidden(PermanentError):
    """The credentials were refused."""


class GateFailed(PermanentError):
    """A health gate did not pass (fail or inconclusive); ``verdicts`` holds what it measured
    (app -> verdict dict) when the gate flow raised it."""

    verdicts: dict[str, Any] | None = None


class BackupInvalid(PermanentError):
    """A backup cannot be trusted: missing, stale, shrunken, corrupt, mismatched or unrestorable."""


class BackupNotVerified(BackupInvalid):
    """The backup verification flow said no; ``result`` carries every check and value (for the CLI)."""

    def __init__(self, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.result = result or {}


class DrillFailed(GateFailed):
    """A DR drill failed a step, missed a target or left something behind; ``result`` has every value."""

    def __init__(self, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.result = result or {}


class ReleaseRefused(PermanentError):
    """A release may not proceed (freeze, digest not proven in staging, approval refused)."""


class AnswerRefused(PermanentError):
    """An answer to a paused release was judged and did not count (not verified by the Slack
    receiver, not an approver, the author's own): nothing was refused, the run still waits."""


def with_message(error: GreenlightError, message: str) -> GreenlightError:
    """``error`` told again with ``message`` (what was done before it, what is left): the same
    class, so the same exit code, and the same fields (status, code, retry_after, ...)."""
    return _rebuild(type(error), (message,), dict(error.__dict__))


def is_transient(exc: BaseException) -> bool:
    """True when retrying the task that raised ``exc`` may help: a TransientError whose client did
    not already spend its own retry budget (starting over would multiply the wait). The tasks'
    ``retry_condition_fn`` (:func:`greenlight.tasks.policy.retry_transient`) asks it."""
    return isinstance(exc, TransientError) and not exc.exhausted


_EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (InputInvalid, 2),
    (NotFound, 3),
    (TransientError, 4),
    (Forbidden, 5),
    (Conflict, 6),
    (ReleaseRefused, 7),
    (GateFailed, 8),
    (BackupInvalid, 9),
    (AnswerRefused, 10),
)
#: the exit code of an interrupted command (Ctrl-C, SIGINT: 128 + 2, as shells report it)
INTERRUPTED = 130


@dataclass(frozen=True)
class Outcome:
    """What one exit code tells: the kind of error behind it and what to do about it."""

    code: int
    kind: str  # the error class, or a description of what exits with the code
    meaning: str
    what_to_do: str


#: every exit code a command can end with, in order; a test holds it to :data:`_EXIT_CODES`
OUTCOMES: tuple[Outcome, ...] = (
    Outcome(0, "(success)", "done: the outcome and the values behind it are on stdout", "nothing"),
    Outcome(
        1,
        "(anything else)",
        "an unexpected error, or `render-kubernetes --check` finding the committed file out of date",
        "read the FAILED line; report a bug if it names a Python exception",
    ),
    Outcome(
        2,
        "InputInvalid, ProfileInvalid",
        "bad input: an unknown environment or app, a malformed image reference, an invalid profile",
        "fix the argument or the profile field the message names",
    ),
    Outcome(
        3,
        "NotFound",
        "what was named does not exist: an image tag, a bucket or dump, a flow run, a Kubernetes object",
        "check the name; push the image or create the object first",
    ),
    Outcome(
        4,
        "TransientError",
        "a failure that may pass: 429, 5xx, timeouts, an unreachable API; already retried, each try no"
        " sooner than the server's Retry-After (a server asking for more than 30 s is not waited for)",
        "run the command again (later); nothing was left half-done",
    ),
    Outcome(
        5,
        "Forbidden",
        "credentials refused (401/403): the identity lacks a role or a token is wrong",
        "grant the role the message names, or fix the credentials",
    ),
    Outcome(
        6,
        "Conflict",
        "a write lost a race (409/412): someone else changed the object, or a lock is held",
        "read the current state (status) and run again",
    ),
    Outcome(
        7,
        "ReleaseRefused",
        "the release may not proceed: a freeze, digests not proven in staging, approval rejected or timed out",
        "lift the freeze, release in staging first, or ask an approver (--force-reason is on the record)",
    ),
    Outcome(
        8,
        "GateFailed, DrillFailed",
        "a health gate failed or was inconclusive (nothing switched, or rolled back); a DR drill failed a step or missed RTO/RPO",
        "read the checks printed on stdout: the failing value and its limit",
    ),
    Outcome(
        9,
        "BackupInvalid, BackupNotVerified",
        "a backup is not verified: missing, stale, shrunken, corrupt, or it did not restore",
        "read the failing check; take a new backup and verify again",
    ),
    Outcome(
        10,
        "AnswerRefused",
        "an approval answer did not count (typed where a verified Slack answer is required, not an approver, the author's own); the release still waits",
        "answer with the Approve button in Slack, as a declared approver",
    ),
    Outcome(INTERRUPTED, "(interrupted)", "Ctrl-C or SIGINT", "run the command again; see `status`"),
)


def exit_code(error: BaseException) -> int:
    """The exit code that tells the kind of ``error`` (see the module docstring); 1 for any other."""
    return next((code for kind, code in _EXIT_CODES if isinstance(error, kind)), 1)
