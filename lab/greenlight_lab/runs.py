"""The lab's Prefect runs, found as a person finds them in the UI: for the tests and the bench."""

from __future__ import annotations

import time
from uuid import UUID


def paused_run(commit: str, timeout_s: float = 60) -> UUID:
    """The id of the paused build-promote run for ``commit`` (waits for it to pause)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for r in runs:
                if (r.parameters.get("request") or {}).get("commit") == commit:
                    return r.id
            time.sleep(0.2)
    raise AssertionError(f"no paused run for {commit} within {timeout_s:g} s")
