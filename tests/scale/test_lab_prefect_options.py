"""`greenlight lab up --prefect-db / --workers / --worker-limit`: where the setting comes from, and
the real CLI starting, reporting and stopping a PostgreSQL-backed server with a worker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from greenlight_lab import supervisor
from greenlight_lab.state import LabState, pid_alive


@pytest.mark.parametrize(
    ("flag", "env", "lab_yaml", "expected"),
    [
        (None, None, None, "sqlite"),  # the default: the fastest to start
        (None, None, "prefect_db: postgres\n", "postgres"),
        (None, "postgres", "prefect_db: sqlite\n", "postgres"),  # the environment over lab.yaml
        ("sqlite", "postgres", "prefect_db: postgres\n", "sqlite"),  # the flag over both
    ],
)
def test_the_prefect_database_comes_from_flag_then_environment_then_lab_yaml(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flag: str | None,
    env: str | None,
    lab_yaml: str | None,
    expected: str,
) -> None:
    """prefect_db_setting takes the first of: the flag, GREENLIGHT_LAB_PREFECT_DB, lab.yaml, sqlite."""
    if env is None:
        monkeypatch.delenv(supervisor.PREFECT_DB_ENV, raising=False)
    else:
        monkeypatch.setenv(supervisor.PREFECT_DB_ENV, env)
    if lab_yaml is not None:
        (tmp_path / "lab.yaml").write_text(lab_yaml)
    assert supervisor.prefect_db_setting(tmp_path, flag) == expected


def test_an_unknown_prefect_database_is_refused_naming_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A value that is neither sqlite nor postgres fails before anything starts, naming its source."""
    monkeypatch.delenv(supervisor.PREFECT_DB_ENV, raising=False)
    (tmp_path / "lab.yaml").write_text("prefect_db: mysql\n")
    with pytest.raises(
        supervisor.LabError, match=r"unknown Prefect database 'mysql' from .*lab.yaml \(prefect_db\)"
    ):
        supervisor.prefect_db_setting(tmp_path)
    with pytest.raises(supervisor.LabError, match="workers must be >= 0"):
        supervisor.up(tmp_path, workers=-1)
    assert not (tmp_path / "lab.json").exists()


def test_bad_worker_counts_are_refused_by_the_cli() -> None:
    """--workers and --worker-limit take whole numbers >= 0: anything else exits 2 naming the value."""
    for args in (["--workers", "-1"], ["--workers", "two"], ["--worker-limit", "1.5"]):
        out = subprocess.run(
            ["greenlight", "lab", "--dir", "/nonexistent-lab", "up", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 2, out
        assert f"{args[1]!r} is not a whole number >= 0" in out.stderr


def gl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["greenlight", *args], capture_output=True, text=True, timeout=300, env=dict(os.environ)
    )


@pytest.mark.lab
def test_lab_up_with_postgres_and_a_worker_reports_them_and_down_stops_the_worker() -> None:
    """`lab up --prefect-db postgres --workers 1 --worker-limit 2` prints where Prefect keeps its
    database and who works the pool; status (text and JSON) says the same; asking again for SQLite
    is told to stop the lab first; down stops the worker with the rest."""
    d = tempfile.mkdtemp(prefix="greenlight-lab-pgprefect-")
    try:
        up = gl("lab", "--dir", d, "up", "--prefect-db", "postgres", "--workers", "1", "--worker-limit", "2")
        assert up.returncode == 0, up.stdout + up.stderr
        described = (
            "PostgreSQL (database prefect on the lab's server); 1 worker(s) on greenlight-local "
            "(worker-1, at most 2 flow runs each)"
        )
        assert f"Prefect:       {described}" in up.stdout
        info = json.loads(gl("lab", "--dir", d, "status", "--json").stdout)
        assert (info["prefect_db"], info["workers"], info["worker_limit"]) == ("postgres", ["worker-1"], 2)
        assert info["processes"]["worker-1"]["alive"] is True
        assert f"Prefect on {described}" in gl("lab", "--dir", d, "status").stdout
        again = gl("lab", "--dir", d, "up", "--prefect-db", "sqlite")
        assert again.returncode == 0 and "already running" in again.stdout
        assert "for sqlite stop it first" in again.stdout
        state = LabState.load(Path(d))
        assert state is not None
        server_side = {w["name"]: w["status"] for w in supervisor.pool_workers(state)}
        assert server_side == {"worker-1": "ONLINE"}
    finally:
        state = LabState.load(Path(d))
        pids = dict(state.pids) if state else {}
        down = gl("lab", "--dir", d, "down")
        shutil.rmtree(d, ignore_errors=True)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "worker-1" in down.stdout
    assert pids.get("worker-1") and not pid_alive(pids["worker-1"])
