"""The record: markdown artifacts in the Prefect UI and Prefect events automations can react to."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event

from tasks.policy import FRESH


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


@task(name="publish-report", retries=2, retry_delay_seconds=1, **FRESH)
def publish_report(key: str, markdown: str, description: str) -> str:
    """Create (or add a version of) the markdown artifact ``key``; return its id."""
    return str(create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description))


def emit(
    event: str, resource_id: str, payload: dict[str, Any], related: list[dict[str, str]] | None = None
) -> None:
    """Emit ``greenlight.*`` event about ``resource_id`` (e.g. ``greenlight.environment.production``)."""
    emit_event(
        event=event,
        resource={"prefect.resource.id": resource_id},
        payload=payload,
        related=related or [],
    )
