"""What GitHub sends for a finished workflow run, signed as GitHub signs it (for the demo and tests)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from greenlight.webhook.verify import sign


def workflow_run(sha: str, branch: str, actor: str = "dave", repository: str = "sma-platform/sma",
                 workflow: str = "build-images", conclusion: str = "success") -> dict[str, Any]:  # fmt: skip
    return {
        "action": "completed",
        "workflow_run": {
            "name": workflow, "head_sha": sha, "head_branch": branch, "conclusion": conclusion,
            "status": "completed", "html_url": f"https://github.com/{repository}/actions/runs/1",
            "actor": {"login": actor},
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
