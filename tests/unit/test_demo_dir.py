"""`make demo`'s lab directory: one per checkout, and a running lab there is named, not reused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from greenlight.settings import REPO_ROOT
from greenlight_lab import demo
from greenlight_lab.state import LabState


def test_the_demo_lab_lives_in_this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without GREENLIGHT_LAB_DIR the demo's lab is .lab/demo of this checkout; with it, there."""
    monkeypatch.delenv("GREENLIGHT_LAB_DIR", raising=False)
    assert demo.demo_dir() == (REPO_ROOT / ".lab" / "demo").resolve()
    monkeypatch.setenv("GREENLIGHT_LAB_DIR", "/somewhere/else")
    assert demo.demo_dir() == Path("/somewhere/else")


@pytest.mark.parametrize(
    ("pids", "in_the_way"),
    [
        ({}, False),  # no processes recorded
        ({"daemon": "dead"}, False),  # a lab that stopped (or crashed): up starts afresh
        ({"daemon": "alive", "prefect": "dead"}, True),  # partly running: still someone's
        ({"daemon": "alive", "prefect": "alive"}, True),  # a demo kept with KEEP=1
    ],
)
def test_a_lab_still_running_in_the_demo_directory_is_named_with_how_to_stop_it(
    tmp_path: Path, pids: dict[str, str], in_the_way: bool
) -> None:
    """A lab with a live process in the directory is in the way: the reason names the directory,
    the live processes and the command that stops it; a lab whose processes are all gone is not."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    state = LabState(dir=str(tmp_path), started_at=1.0, env={"PREFECT_UI_URL": "http://127.0.0.1:1234"})
    state.pids = {name: os.getpid() if how == "alive" else dead.pid for name, how in pids.items()}
    state.save()
    reason = demo.lab_in_the_way(tmp_path)
    if not in_the_way:
        assert reason == ""
        return
    assert f"a lab is already running in {tmp_path}" in reason
    assert f"greenlight lab --dir {tmp_path} down" in reason
    assert "http://127.0.0.1:1234" in reason
    running = re.search(r"; its (.*) still run: ", reason)
    assert running is not None, reason
    assert running.group(1).split(", ") == sorted(n for n, how in pids.items() if how == "alive")


def test_no_lab_file_is_not_in_the_way(tmp_path: Path) -> None:
    """An empty (or new) directory holds no lab."""
    assert demo.lab_in_the_way(tmp_path) == ""
    assert demo.lab_in_the_way(tmp_path / "missing") == ""
