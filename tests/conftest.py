"""The lab, started once per test session for the tests that ask for it (fixture ``lab``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight_lab.session import lab_session
from greenlight_lab.state import LabState


@pytest.fixture(scope="session")
def lab() -> Iterator[LabState]:
    """A whole lab (both clusters with the baseline apps, GCS, PostgreSQL, Monitoring, Slack,
    registry, Prefect server) in a temporary directory; the environment points every client at it."""
    with lab_session() as state:
        yield state


@pytest.fixture
def kube(lab: LabState) -> Iterator[Kube]:
    """A client of the lab's primary cluster (modules that need one for longer define their own)."""
    k = Kube.connect(context="lab-primary")
    yield k
    k.close()


# --- the order files run in: longest first -------------------------------------------------------
# pytest-xdist (``--dist loadfile --no-loadscope-reorder``, the Makefile) hands the workers whole
# files in collection order; the suite's time is the slowest worker's, so the longest files go
# first and the short ones fill the gaps at the end. file_seconds.json holds each file's seconds
# from a CI run (regenerate it from ``--durations=0`` when the suite changes much); a file it does
# not know counts as a minute when it needs the lab, else as nothing.
FILE_SECONDS: dict[str, float] = json.loads((Path(__file__).parent / "file_seconds.json").read_text())


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[Any]) -> None:
    weights: dict[str, float] = {}
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        if path not in weights:
            weights[path] = FILE_SECONDS.get(path, 60.0 if item.get_closest_marker("lab") else 0.0)
    # a stable sort: each file's tests keep their order (some modules rely on it)
    items.sort(key=lambda item: -weights[item.nodeid.split("::", 1)[0]])


# --- the fault-injection suite's report (tests/faults): one line per fault, at the end -----------
# Lines travel as a user property of each case's report, so that they reach this process also when
# the cases ran on pytest-xdist workers; this file is loaded by the controller too.
FAULT_LINE = "greenlight-fault-line"
_fault_lines: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _fault_lines.extend(value for name, value in report.user_properties if name == FAULT_LINE)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = _fault_lines
    if not lines:
        return
    tr = terminalreporter
    width = max(len(x["fault"]) for x in lines)
    tr.section("fault-injection suite")
    tr.write_line(f"{'fault':<{width}}  injected  survived  data lost")
    for x in lines:
        lost = sum(x["lost"].values())
        lost_text = "none" if lost == 0 else ", ".join(f"{v} {k}" for k, v in x["lost"].items() if v)
        if not x["survived"]:
            lost_text = f"{lost_text} ({x['error']})" if x["error"] else lost_text
        survived = "yes" if x["survived"] else "NO"
        tr.write_line(f"{x['fault']:<{width}}  {x['injected']:>8}  {survived:>8}  {lost_text}")
    survived_count = sum(x["survived"] for x in lines)
    lost_total = sum(sum(x["lost"].values()) for x in lines)
    tr.write_line(
        f"{len(lines)} faults injected, {survived_count} survived, "
        f"data lost: {'none' if lost_total == 0 else lost_total}"
    )
