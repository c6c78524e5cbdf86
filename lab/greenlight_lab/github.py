"""What GitHub sends for a finished workflow run, signed as GitHub signs it (for the demo and tests)."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from greenlight.webhook.verify import sign


def run_id_for(
    sha: str, branch: str, repository: str = "sma-platform/sma", workflow: str = "build-images"
) -> int:
    """The id GitHub would give the run of ``workflow`` for a push of ``sha`` to ``branch``: one
    run per push, so the same arguments give the same id (the receiver dedupes on it) and a new
    commit a new one."""
    digest = hashlib.sha256(f"{repository.lower()}\n{workflow}\n{branch}\n{sha}".encode()).digest()
    return 1 + int.from_bytes(digest[:5], "big")


def workflow_run(sha: str, branch: str, actor: str = "dave", repository: str = "sma-platform/sma",
                 workflow: str = "build-images", conclusion: str = "success", *, run_id: int | None = None,
                 run_attempt: int = 1, event: str = "push", head_repository: str | None = None,
                 committed_at: datetime | None = None,
                 ) -> dict[str, Any]:  # fmt: skip
    """A ``completed`` run as GitHub sends it: started by ``event`` (a push) of a commit of
    ``head_repository`` (``repository`` itself unless given: a fork's for a pull request from a
    fork), made at ``committed_at`` (default now; GitHub's ``head_commit.timestamp`` carries the
    committer's offset, here UTC as ``...Z``); ``run_id`` defaults to :func:`run_id_for` the push."""
    run_id = run_id_for(sha, branch, repository, workflow) if run_id is None else run_id
    when = (committed_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    person = {"name": actor, "email": f"{actor}@users.noreply.github.com"}
    return {
        "action": "completed",
        "workflow_run": {
            "id": run_id, "name": workflow, "head_sha": sha, "head_branch": branch, "event": event,
            "run_attempt": run_attempt, "conclusion": conclusion, "status": "completed",
            "html_url": f"https://github.com/{repository}/actions/runs/{run_id}",
            "actor": {"login": actor}, "repository": {"full_name": repository},
            "head_repository": {"full_name": head_repository or repository},
            "head_commit": {
                "id": sha, "tree_id": hashlib.sha1(sha.encode()).hexdigest(), "message": f"commit {sha}",
                "timestamp": when.strftime("%Y-%m-%dT%H:%M:%SZ"), "author": person, "committer": person,
            },
        },
        "repository": {"full_name": repository},
        "sender": {"login": actor},
    }  # fmt: skip


def signed(payload: dict[str, Any], secret: str, event: str = "workflow_run") -> tuple[bytes, dict[str, str]]:
    """Body and headers of one delivery (a new X-GitHub-Delivery id each time)."""
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret.encode(), body),
    }
