"""Deliveries as GitHub sends them, signed or not, and an emitter that records what it was given."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from greenlight.core.approval import new_signing_key
from greenlight.errors import TransientError
from greenlight.webhook.verify import Route, sign

SECRET = "it's a secret to everybody"
REPO = "sma-platform/sma"
WORKFLOW = "build-images"
RUN_ID = 30433642
COMMITTED = "2026-11-30T16:20:05+01:00"  # a head commit's timestamp, with its committer's offset
#: the receiver's approval signing key in these tests, and its public half (the routes' github.receiver_keys)
RECEIVER_KEY, RECEIVER_PUBLIC = new_signing_key()
ROUTES = (
    Route("production", REPO, WORKFLOW, "main", (RECEIVER_PUBLIC,)),
    Route("staging", REPO, WORKFLOW, "develop", (RECEIVER_PUBLIC,)),
)


def run_payload(
    *,
    action: str = "completed",
    repository: str = REPO,
    workflow: str = WORKFLOW,
    conclusion: str | None = "success",
    branch: str | None = "develop",
    sha: str = "3f2a9c1d0e5b7a6c4d3e2f1a0b9c8d7e6f5a4b3c",
    actor: str = "dana",
    run_id: int = RUN_ID,
    run_attempt: int = 1,
    trigger: str = "push",
    head_repository: str | None = None,
    commit_timestamp: str | None = COMMITTED,
) -> dict[str, Any]:
    """A ``workflow_run`` payload trimmed to what GitHub sends that the receiver reads, and a bit more.

    ``trigger`` is the run's ``workflow_run.event`` (what started it: ``push``, ``pull_request``...);
    ``head_repository`` the repository its commit comes from (a fork's for a pull request from a
    fork), ``repository`` unless given; ``commit_timestamp`` the head commit's time as GitHub
    writes it (None: a run with ``head_commit: null``).
    """
    owner, name = repository.split("/")
    head = head_repository or repository
    head_owner, head_name = head.split("/")
    return {
        "action": action,
        "workflow_run": {
            "id": run_id,
            "name": workflow,
            "head_branch": branch,
            "head_sha": sha,
            "run_number": 562,
            "run_attempt": run_attempt,
            "event": trigger,
            "status": "completed",
            "conclusion": conclusion,
            "html_url": f"https://github.com/{repository}/actions/runs/{run_id}",
            "actor": {"login": actor},
            "repository": {"full_name": repository, "name": name, "owner": {"login": owner}},
            "head_repository": {"full_name": head, "name": head_name, "owner": {"login": head_owner}},
            "head_commit": None
            if commit_timestamp is None
            else {
                "id": sha,
                "tree_id": "b1c4e1d0f0a3f2e5d6c7b8a9f0e1d2c3b4a5f6e7",
                "message": "Fix the thing",
                "timestamp": commit_timestamp,
                "author": {"name": actor, "email": f"{actor}@example.com"},
                "committer": {"name": actor, "email": f"{actor}@example.com"},
            },
        },
        "workflow": {"name": workflow},
        "repository": {"full_name": repository, "name": name, "owner": {"login": owner}},
        "sender": {"login": actor},
    }


def delivery(
    payload: dict[str, Any] | bytes,
    *,
    event: str = "workflow_run",
    delivery_id: str | None = None,
    secret: str = SECRET,
    signature: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a delivery, signed with ``secret`` unless ``signature`` is given."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature if signature is not None else sign(secret.encode(), body),
    }
    return body, headers


@dataclass
class RecordingEmitter:
    """Our :class:`Emitter` for tests without Prefect: keeps every event; fails the next
    ``failures`` emissions with a transient error, as an unreachable Prefect API would."""

    events: list[dict[str, Any]] = field(default_factory=list)
    failures: int = 0

    async def emit(
        self, event: str, resource: dict[str, str], payload: dict[str, Any], id: uuid.UUID
    ) -> None:
        """Record the event, or raise while failures remain."""
        if self.failures > 0:
            self.failures -= 1
            raise TransientError("Prefect API did not answer within 5 s")
        self.events.append({"event": event, "resource": resource, "payload": payload, "id": id})


class AppClient:
    """Synchronous requests into an ASGI app through ``httpx.ASGITransport`` (no socket).

    Unlike Starlette's TestClient it sends headers as given (a lying Content-Length stays a lie)
    and streams an async iterator body in chunks.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    def request(
        self, method: str, path: str, content: bytes | AsyncIterator[bytes] | None = None, **kw: Any
    ) -> httpx.Response:
        """Send one request and return the whole response."""

        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
                return await client.request(method, path, content=content, **kw)

        return asyncio.run(send())

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)
