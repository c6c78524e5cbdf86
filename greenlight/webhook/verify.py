"""Pure decisions of the GitHub receiver: is a delivery signed, and what does it ask for?

No I/O here: the app (``greenlight.webhook.app``) reads the request, calls these functions and
acts on what they return. Every decision carries a reason, which becomes the delivery's log
line and, for ignored deliveries, the answer's ``{"ignored": reason}``.

The filter: a ``workflow_run`` event, action ``completed``, conclusion ``success``, for a
profile's ``github.repository`` and ``github.workflow``, started by a ``push`` (the run's
``workflow_run.event``) of a commit of that repository itself (``workflow_run.head_repository``:
a pull request from a fork runs our workflow in our repository, on whatever branch name the fork
chose), on that profile's ``github.branch``, releases that profile's environment. Repository
names compare case-insensitively, as GitHub's do. Everything else is ignored.

A release is identified by what the signature covers: the repository, ``workflow_run.id`` and
``workflow_run.run_attempt`` (:class:`RunIdentity`), never by the unsigned ``X-GitHub-Delivery``
header, which anyone holding an old signed body can change.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from greenlight.errors import InputInvalid

SIGNATURE_PREFIX = "sha256="
EVENT_NAME = "github.workflow_run.completed"
EVENT_ID_NAMESPACE = uuid.UUID("5d1f0b1e-6a39-4c4e-9a52-6b8f3f1f6a01")
RELEASING_TRIGGER = "push"


class PayloadInvalid(InputInvalid):
    """The delivery's JSON lacks a field the decision needs, or has it with the wrong type."""

    def __init__(self, field: str, problem: str = "missing") -> None:
        super().__init__(f"field {field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Route:
    """A successful run of ``workflow`` in ``repository`` on ``branch`` releases ``environment``."""

    environment: str
    repository: str
    workflow: str
    branch: str
    receiver_keys: tuple[str, ...] = ()  # github.receiver_keys: the keys the flow checks commit proofs with


@dataclass(frozen=True)
class RunIdentity:
    """One attempt of one workflow run, as the signed payload names it: ``repository`` (lowercased:
    GitHub compares names case-insensitively), ``workflow_run.id`` and ``workflow_run.run_attempt``.

    GitHub sends ``completed`` once per attempt; "Re-run" makes a new attempt of the same id.
    """

    repository: str
    run_id: int
    attempt: int

    @property
    def key(self) -> str:
        """``owner/name/actions/runs/ID/attempts/N``: the dedupe key (and the run's API path)."""
        return f"{self.repository}/actions/runs/{self.run_id}/attempts/{self.attempt}"

    @property
    def event_id(self) -> uuid.UUID:
        """The Prefect event id of this attempt's release: the same for every copy of the signed
        body, whichever receiver and delivery id it comes with, so Prefect keeps one."""
        return uuid.uuid5(EVENT_ID_NAMESPACE, f"{EVENT_NAME}:{self.key}")


@dataclass(frozen=True)
class Decision:
    """What to do with a delivery: ``emit`` (with the event's payload and the run it releases),
    ``ignore`` or ``ping``."""

    action: Literal["emit", "ignore", "ping"]
    reason: str
    environment: str | None = None
    payload: Mapping[str, Any] | None = None
    run: RunIdentity | None = None


def sign(secret: bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` value GitHub sends for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    """True when ``header`` is ``sha256=`` followed by the HMAC-SHA256 of ``body`` under ``secret``.

    The comparison is constant-time over the whole value; a missing header, an empty secret, a
    wrong prefix or any other algorithm (``sha1=``) is False.
    """
    if not secret or not header:
        return False
    expected = sign(secret, body).encode("ascii")
    return hmac.compare_digest(expected, header.strip().encode("utf-8", "replace"))


def build_routes(githubs: Iterable[tuple[str, Any]]) -> tuple[Route, ...]:
    """Routes from ``(environment, profile.github)`` pairs; pairs whose github is None are skipped.

    Raises :class:`InputInvalid` when two environments claim the same repository, workflow and
    branch: one successful run must release exactly one environment.
    """
    routes: dict[tuple[str, str, str], Route] = {}
    for environment, github in githubs:
        if github is None:
            continue
        key = (github.repository.lower(), github.workflow, github.branch)
        if key in routes:
            raise InputInvalid(
                f"environments '{routes[key].environment}' and '{environment}' both release on "
                f"{github.repository} workflow '{github.workflow}' branch '{github.branch}': "
                "give each its own branch"
            )
        keys = tuple(getattr(github, "receiver_keys", ()) or ())
        routes[key] = Route(environment, github.repository, github.workflow, github.branch, keys)
    return tuple(routes.values())


def field(payload: Mapping[str, Any], path: str, kind: type | tuple[type, ...] = str) -> Any:
    """The value at dotted ``path``; :class:`PayloadInvalid` naming ``path`` when it is absent or
    not of ``kind``. A ``None`` value is returned as is when ``kind`` admits ``type(None)``."""
    value: Any = payload
    walked: list[str] = []
    for part in path.split("."):
        walked.append(part)
        if not isinstance(value, Mapping):
            raise PayloadInvalid(".".join(walked[:-1]) or "(body)", "expected an object")
        if part not in value:
            raise PayloadInvalid(path)
        value = value[part]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        raise PayloadInvalid(path, f"expected {_kind_name(kind)}, got {_json_type(value)}")
    return value


def positive(payload: Mapping[str, Any], path: str) -> int:
    """The whole number at ``path``, at least 1 (GitHub's ids and attempt numbers)."""
    value = field(payload, path, int)
    if value < 1:
        raise PayloadInvalid(path, f"expected a positive number, got {value}")
    return int(value)


def decide(event: str, delivery: str, payload: Mapping[str, Any], routes: Iterable[Route]) -> Decision:
    """Decide what the delivery ``delivery`` of GitHub event ``event`` asks for.

    Raises :class:`PayloadInvalid` (naming the field) when a field the decision needs is
    missing or has the wrong type. Checks in order: event, action, repository, workflow, the
    run's head repository (no fork), what started the run (a push), conclusion, branch; the
    first that does not match is the reason it is ignored. ``delivery`` is only carried into
    the event's payload (for the logs): it is not signed, so it decides nothing.
    """
    if event == "ping":
        return Decision("ping", "ping")
    if event != "workflow_run":
        return Decision("ignore", f"event {event} is not workflow_run")
    action = field(payload, "action")
    if action != "completed":
        return Decision("ignore", f"action {action} is not completed")
    repository = field(payload, "repository.full_name")
    candidates = [r for r in routes if r.repository.lower() == repository.lower()]
    if not candidates:
        return Decision("ignore", f"repository {repository} is not configured")
    configured = candidates[0].repository
    workflow = field(payload, "workflow_run.name")
    candidates = [r for r in candidates if r.workflow == workflow]
    if not candidates:
        return Decision("ignore", f"workflow '{workflow}' of {repository} is not configured")
    if field(payload, "workflow_run.head_repository", (dict, type(None))) is None:
        return Decision("ignore", f"run from an unknown head repository (null), not {configured}")
    head = field(payload, "workflow_run.head_repository.full_name")
    if head.lower() != configured.lower():
        return Decision("ignore", f"run from fork {head}, not {configured}")
    trigger = field(payload, "workflow_run.event")
    if trigger != RELEASING_TRIGGER:
        return Decision("ignore", f"event {trigger}, not {RELEASING_TRIGGER}")
    conclusion = field(payload, "workflow_run.conclusion", (str, type(None)))
    if conclusion != "success":
        return Decision("ignore", f"conclusion {conclusion} is not success")
    branch = field(payload, "workflow_run.head_branch", (str, type(None)))
    route = next((r for r in candidates if r.branch == branch), None)
    if route is None:
        return Decision("ignore", f"branch {branch} releases no environment")
    run = RunIdentity(
        repository.lower(),
        positive(payload, "workflow_run.id"),
        positive(payload, "workflow_run.run_attempt"),
    )
    event_payload = {
        "sha": field(payload, "workflow_run.head_sha"),
        "branch": branch,
        "actor": _actor(payload),
        "delivery": delivery,
        "environment": route.environment,
        "repository": repository,
        "workflow": workflow,
        "run_url": field(payload, "workflow_run.html_url", (str, type(None))),
        "run_id": run.run_id,
        "run_attempt": run.attempt,
        "commit_at": commit_time(payload),
    }
    return Decision(
        "emit",
        f"{branch} of {repository} releases {route.environment}",
        route.environment,
        event_payload,
        run,
    )


def commit_time(payload: Mapping[str, Any]) -> str | None:
    """When the released commit was made, from the signed payload: ``workflow_run.head_commit.timestamp``
    (ISO 8601, as GitHub sends it), returned in UTC (``2026-12-01T18:03:07+00:00``); None when the
    payload has no head commit (GitHub sends ``null`` for some runs). A timestamp that is not a
    date-time with its offset is :class:`PayloadInvalid` naming the field."""
    run = payload.get("workflow_run")
    head = run.get("head_commit") if isinstance(run, Mapping) else None
    if head is None:
        return None
    if not isinstance(head, Mapping):
        raise PayloadInvalid("workflow_run.head_commit", f"expected an object, got {_json_type(head)}")
    path = "workflow_run.head_commit.timestamp"
    text = field(payload, path, (str, type(None)))
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise PayloadInvalid(path, f"expected an ISO 8601 date-time, got {text[:40]!r}") from None
    if at.tzinfo is None:
        raise PayloadInvalid(path, f"expected a date-time with its UTC offset, got {text[:40]!r}")
    return at.astimezone(UTC).isoformat()


def resource_id(repository: str) -> str:
    """The Prefect resource id of a repository: ``github.repo.OWNER/NAME``."""
    return f"github.repo.{repository}"


def event_resource(payload: Mapping[str, Any]) -> dict[str, str]:
    """The event's resource: the repository, labelled with the branch and the environment it releases.

    Prefect triggers match resource labels, not the payload, so a deployment's trigger selects
    its environment with ``match: {"prefect.resource.id": "github.repo.OWNER/NAME",
    "greenlight.environment": "staging"}``.
    """
    return {
        "prefect.resource.id": resource_id(payload["repository"]),
        "prefect.resource.name": str(payload["repository"]),
        "github.branch": str(payload["branch"]),
        "greenlight.environment": str(payload["environment"]),
    }


def _actor(payload: Mapping[str, Any]) -> str:
    """Who ran the workflow: ``workflow_run.actor.login``, else ``sender.login``."""
    run = payload.get("workflow_run")
    actor = run.get("actor") if isinstance(run, Mapping) else None
    if isinstance(actor, Mapping) and isinstance(actor.get("login"), str):
        return str(actor["login"])
    try:
        return str(field(payload, "sender.login"))
    except PayloadInvalid:
        raise PayloadInvalid("workflow_run.actor.login") from None


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("null" if k is type(None) else _JSON_NAMES.get(k, k.__name__) for k in kinds)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for k, name in _JSON_NAMES.items() if isinstance(value, k)), type(value).__name__)


_JSON_NAMES: dict[type, str] = {bool: "a boolean", str: "a string", int: "a number", float: "a number"}
_JSON_NAMES.update({dict: "an object", list: "an array"})
