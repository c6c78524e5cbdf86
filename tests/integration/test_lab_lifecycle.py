"""`greenlight lab up / env / status / down` through the real CLI, in a lab of its own."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from greenlight_lab.state import LabState, pid_alive

pytestmark = pytest.mark.lab


def gl(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["greenlight", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def test_up_env_status_down_leaves_nothing_behind() -> None:
    """lab up is ready in well under a minute, env exports what clients need, its Monitoring options
    reach the daemon and status, down stops every process it started."""
    d = tempfile.mkdtemp(prefix="greenlight-lab-cli-")
    t0 = time.monotonic()
    up = gl("lab", "--dir", d, "up", "--scrape-interval-s", "1", "--ingestion-delay-s", "0.75")
    assert up.returncode == 0, up.stdout + up.stderr
    assert time.monotonic() - t0 < 60
    assert "lab up in" in up.stdout
    assert "monitoring:    scrape interval 1 s, ingestion delay 0.75 s" in up.stdout
    try:
        again = gl("lab", "--dir", d, "up")
        assert again.returncode == 0 and "already running" in again.stdout
        # asked for the default delay (1 s): told what it runs
        assert "its Monitoring has scrape interval 1 s, ingestion delay 0.75 s" in again.stdout

        env_out = gl("lab", "--dir", d, "env")
        assert env_out.returncode == 0
        exported = dict(
            shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in env_out.stdout.splitlines()
        )
        for name in ("KUBECONFIG", "STORAGE_EMULATOR_HOST", "GREENLIGHT_ENVIRONMENTS", "PREFECT_API_URL",
                     "GREENLIGHT_MONITORING_ENDPOINT", "GREENLIGHT_SLACK_BASE_URL", "GREENLIGHT_REGISTRY_MIRRORS",
                     "GREENLIGHT_DATABASE_URL"):  # fmt: skip
            assert exported.get(name), name

        kc = subprocess.run(
            ["kubectl", "--context", "lab-primary", "get", "deployments", "-n", "sma-production", "-o", "json"],
            capture_output=True, text=True, env={**os.environ, **exported}, timeout=30,
        )  # fmt: skip
        assert kc.returncode == 0, kc.stderr
        assert {i["metadata"]["name"] for i in json.loads(kc.stdout)["items"]} == {
            "backend-blue",
            "frontend-blue",
        }

        bad_ctx = subprocess.run(
            ["kubectl", "--context", "lab-nowhere", "get", "pods"],
            capture_output=True, text=True, env={**os.environ, **exported}, timeout=30,
        )  # fmt: skip
        assert bad_ctx.returncode != 0 and "lab-nowhere" in bad_ctx.stderr

        st = gl("lab", "--dir", d, "status", "--json")
        assert st.returncode == 0
        info = json.loads(st.stdout)
        assert info["running"] is True
        assert set(info["processes"]) == {"daemon", "gcs", "prefect", "postgres", "webhook"}
        assert info["data_plane"] == "kube-proxy" and info["data_plane_text"].startswith("kube-proxy")
        assert (info["scrape_interval_s"], info["ingestion_delay_s"]) == (1.0, 0.75)
        monitoring = info["daemon"]["monitoring"]  # what the daemon's MonitoringServer runs with
        assert (monitoring["scrape_interval_s"], monitoring["ingestion_delay_s"]) == (1.0, 0.75)
        text = gl("lab", "--dir", d, "status")
        assert text.returncode == 0
        assert "monitoring scrape interval 1 s, ingestion delay 0.75 s" in text.stdout
    finally:
        state = LabState.load(Path(d))
        pids = dict(state.pids) if state else {}
        down = gl("lab", "--dir", d, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert pids and not [name for name, pid in pids.items() if pid_alive(pid)]
    status_after = gl("lab", "--dir", d, "status")
    assert status_after.returncode != 0 and "not running" in status_after.stdout
    shutil.rmtree(d, ignore_errors=True)


def test_commands_need_a_running_lab(tmp_path: Path) -> None:
    """lab env with no lab running fails with the reason and how to start one."""
    out = gl("lab", "--dir", str(tmp_path / "none"), "env")
    assert out.returncode != 0
    assert "greenlight lab up" in out.stderr and out.stderr.startswith("FAILED:")


def test_prefect_ui_talks_to_the_labs_own_server(lab: LabState) -> None:
    """The UI's settings (/ui-settings, read by every UI page) name the lab's API, which answers, and
    the links Greenlight prints (PREFECT_UI_URL) point at that UI."""
    ui = lab.env["PREFECT_UI_URL"]
    assert ui == lab.env["PREFECT_API_URL"].removesuffix("/api")
    settings = httpx.get(f"{ui}/ui-settings", timeout=10).raise_for_status().json()
    assert settings["api_url"] == lab.env["PREFECT_API_URL"], settings
    health = httpx.get(f"{settings['api_url']}/health", timeout=10)
    assert health.status_code == 200 and health.json() is True, health.text
    page = httpx.get(f"{ui}/deployments", timeout=10, headers={"Accept": "text/html"})
    assert page.status_code == 200 and "<html" in page.text.lower(), page.text[:500]
