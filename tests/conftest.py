"""The lab, started once per test session for the tests that ask for it (fixture ``lab``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight.lab import supervisor
from greenlight.lab.state import LabState


@pytest.fixture(scope="session")
def lab() -> Iterator[LabState]:
    """A whole lab (both clusters with the baseline apps, GCS, PostgreSQL, Monitoring, Slack,
    registry, Prefect server) in a temporary directory; the environment points every client at it."""
    # not under pytest's basetemp: concurrent pytest runs rotate those directories away
    directory = Path(tempfile.mkdtemp(prefix="greenlight-lab-"))
    state = supervisor.up(directory, echo=lambda _: None)
    saved = {k: os.environ.get(k) for k in state.env}
    os.environ.update(state.env)
    import prefect.context

    prefect.context.refresh_global_settings_context()  # Prefect read its settings at import
    try:
        yield state
    finally:
        _drain_prefect_workers()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        prefect.context.refresh_global_settings_context()
        supervisor.down(directory, echo=lambda _: None)
        shutil.rmtree(directory, ignore_errors=True)


def _drain_prefect_workers() -> None:
    """Send Prefect's queued logs and events while the lab's server still runs; otherwise they are
    retried at interpreter exit against a stopped server, for up to a minute."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10, at_exit=False)
        except RuntimeError:  # never started
            pass
