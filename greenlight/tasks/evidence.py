"""The record: markdown artifacts in the Prefect UI, progress while a run works, and Prefect events
automations can react to."""

from __future__ import annotations

import re
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.context import FlowRunContext
from prefect.events import emit_event

from greenlight.tasks.policy import FRESH, logger, prefect_api_transient, retry_if


def artifact_key(*parts: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")[:200]


@task(
    name="publish-report",
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=retry_if(prefect_api_transient),
    **FRESH,
)
def publish_report(key: str, markdown: str, description: str) -> str:
    """Create (or add a version of) the markdown artifact ``key``; return its id."""
    return str(create_markdown_artifact(markdown=markdown, key=artifact_key(key), description=description))


class Progress:
    """A progress artifact on the current flow run's page in the Prefect UI (a bar and a line of
    text), updated as work is done: the gate's intervals, the bake's windows. Outside a flow run it
    does nothing, and a failure to show progress is logged, never raised (it must not stop a release)."""

    def __init__(self, description: str) -> None:
        self._id: Any = None
        if FlowRunContext.get() is None:
            return
        try:
            self._id = create_progress_artifact(progress=0.0, description=description)
        except Exception as e:
            logger().warning("progress not shown: %s", type(e).__name__)

    def update(self, done: float, total: float, description: str) -> None:
        """Show ``done`` of ``total`` (as a percentage) and ``description``."""
        if self._id is None:
            return
        percent = 100.0 if total <= 0 else max(0.0, min(100.0, 100.0 * done / total))
        try:
            update_progress_artifact(self._id, progress=percent, description=description)
        except Exception as e:
            logger().warning("progress not updated: %s", type(e).__name__)


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
