"""A lab for the length of a ``with`` block, with this process pointed at it: what the test
session's ``lab`` fixture and the tests that need a lab of their own (tests/scale) both do."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from greenlight_lab import supervisor
from greenlight_lab.state import LabState


@contextmanager
def lab_session(prefix: str = "greenlight-lab-", **up: Any) -> Iterator[LabState]:
    """Start a lab in a new temporary directory (``supervisor.up(**up)``), put its environment into
    os.environ and Prefect's settings, and undo all of it on the way out: Prefect's queued logs
    and events sent while its server still runs, the environment restored, the lab stopped and
    its directory removed."""
    import prefect.context

    # not under pytest's basetemp: concurrent pytest runs rotate those directories away
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    saved = dict(os.environ)  # before up: all of it comes back on the way out
    state = supervisor.up(directory, echo=lambda _: None, **up)
    os.environ.update(state.env)
    prefect.context.refresh_global_settings_context()  # Prefect read its settings at import
    try:
        yield state
    finally:
        drain_prefect_workers()
        os.environ.clear()
        os.environ.update(saved)
        prefect.context.refresh_global_settings_context()
        supervisor.down(directory, echo=lambda _: None)
        shutil.rmtree(directory, ignore_errors=True)


def drain_prefect_workers() -> None:
    """Send Prefect's queued logs and events while the lab's server still runs; otherwise they are
    retried at interpreter exit against a stopped server, for up to a minute."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10, at_exit=False)
        except RuntimeError:  # never started
            pass
