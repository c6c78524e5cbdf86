"""The release commands as a person runs them: `greenlight ...` in a subprocess against the lab,
judged by exit code, stdout and the cluster state read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.core.release import release_id
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

from .support import NAMESPACES, Load, live, profile, push_commit

pytestmark = pytest.mark.lab

GREENLIGHT = str(Path(sys.executable).with_name("greenlight"))
NS = NAMESPACES["staging"]


def commit() -> str:
    return uuid.uuid4().hex[:10]


def cli_env(envdir: Path) -> dict[str, str]:
    return {**os.environ, "GREENLIGHT_ENVIRONMENTS": str(envdir), "PYTHONUNBUFFERED": "1"}


def greenlight(envdir: Path, *args: str, timeout_s: float = 180) -> subprocess.CompletedProcess[str]:
    """Run ``greenlight ARGS`` to completion; stdout and stderr captured as text."""
    return subprocess.run(
        [GREENLIGHT, *args],
        env=cli_env(envdir),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def versions(kube: Kube) -> dict[str, str]:
    """resourceVersions of every live and preview Service and every Deployment in rel-staging."""
    out = {}
    for plural in ("services", "deployments"):
        for obj in kube.items(plural, NS):
            out[f"{plural}/{obj['metadata']['name']}"] = obj["metadata"]["resourceVersion"]
    return out


@pytest.fixture(scope="module")
def promoted(lab: LabState, envdir: Path) -> dict[str, Any]:
    """`greenlight promote staging --commit SHA --actor dave` of freshly pushed images."""
    sha = commit()
    digests = push_commit(lab, sha)
    proc = greenlight(envdir, "promote", "staging", "--commit", sha, "--actor", "dave")
    return {"sha": sha, "digests": digests, "proc": proc}


def test_promote_staging_exits_zero_and_prints_the_outcome(
    promoted: dict[str, Any], envdir: Path, kube: Kube
) -> None:
    """`greenlight promote staging` exits 0, prints "outcome: released" and the cluster serves the new digests."""
    proc = promoted["proc"]
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "outcome: released" in proc.stdout
    assert f"release_id: staging-{promoted['sha']}" in proc.stdout
    state = live(kube, profile("staging"))
    assert {app: s["digests"][app] for app, s in state.items()} == promoted["digests"]


def test_status_json_lists_every_app_with_its_release_fields(promoted: dict[str, Any], envdir: Path) -> None:
    """`greenlight status staging --json` prints an apps list carrying name, repository, colours, digests, release id and readiness."""
    proc = greenlight(envdir, "status", "staging", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    apps = {a["name"]: a for a in doc["apps"]}
    assert set(apps) == {"backend", "frontend"}
    for name, a in apps.items():
        assert a["image_repository"] == f"ghcr.io/sma-platform/{name}"
        assert a["live_colour"] in ("blue", "green") and a["previous_colour"] in ("blue", "green")
        assert a["live_colour"] != a["previous_colour"]
        assert a["digests"] == {name: promoted["digests"][name]}
        assert a["release_id"] == release_id("staging", promoted["digests"], promoted["sha"])
        assert a["replicas_ready"] == "2/2"


def test_smoke_json_lists_every_probe_of_every_app(promoted: dict[str, Any], envdir: Path) -> None:
    """`greenlight smoke staging --json` exits 0 with one JSON document: a passing probe per app of the live colour."""
    proc = greenlight(envdir, "smoke", "staging", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["environment"] == "staging" and doc["colour"] == "live" and doc["passed"] is True
    assert {p["app"] for p in doc["probes"]} == {"backend", "frontend"}
    assert all(p["ok"] and p["status"] == p["expect_status"] == 200 for p in doc["probes"]), doc


def test_a_failing_smoke_probe_exits_8_with_the_probe_in_json_and_on_stderr(
    promoted: dict[str, Any], envdir: Path
) -> None:
    """A probe that expects 418 fails: `smoke --json` still prints the document (passed false, the
    status it got), FAILED on stderr names the probe, and the exit code is a failed gate's (8)."""
    doc = yaml.safe_load((envdir / "staging.yaml").read_text())
    doc["name"] = "staging-teapot"
    doc["gate"]["smoke"] = [{"path": "/", "expect_status": 418}]
    (envdir / "staging-teapot.yaml").write_text(yaml.safe_dump(doc))
    try:
        proc = greenlight(envdir, "smoke", "staging-teapot", "--app", "backend", "--json")
    finally:
        (envdir / "staging-teapot.yaml").unlink()
    assert proc.returncode == 8, proc.stdout + proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["passed"] is False and [p["status"] for p in out["probes"]] == [200]
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED:")]
    assert failed and "backend GET /: expected 418, got 200" in failed[0], proc.stderr


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["promote", "staging", "--commit", "{sha}", "--dry-run"], ["dry run: release staging-{sha}", "{backend}", "{frontend}"]),
        (["deploy", "staging", "ghcr.io/sma-platform/backend:{sha}", "ghcr.io/sma-platform/frontend:{sha}", "--dry-run"], ["dry run: release", "{backend}", "{frontend}"]),
        (["switch", "staging", "{previous}", "--dry-run"], ["dry run: backend (direct switch): switch", "dry run: frontend (direct switch): switch", "nothing changed"]),
        (["rollback", "staging", "--dry-run"], ["dry run: backend: live {live} -> previous {previous}", "nothing changed"]),
    ],
    ids=["promote", "deploy", "switch", "rollback"],
)  # fmt: skip
def test_dry_run_prints_the_plan_and_changes_nothing(
    lab: LabState, envdir: Path, kube: Kube, promoted: dict[str, Any], args: list[str], expect: list[str]
) -> None:
    """Every changing command with --dry-run exits 0, prints its plan (digests, colours) and leaves every object's resourceVersion as it was."""
    sha = commit()
    digests = push_commit(lab, sha)
    state = live(kube, profile("staging"))["backend"]
    values = {"sha": sha, "live": state["live_colour"], "previous": state["previous_colour"], **digests}
    before = versions(kube)
    proc = greenlight(envdir, *[a.format(**values) for a in args])
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    for text in expect:
        assert text.format(**values) in proc.stdout, proc.stdout
    assert versions(kube) == before


def test_gate_failure_exits_non_zero_with_the_reason(lab: LabState, envdir: Path, kube: Kube) -> None:
    """A 20% error-rate commit makes `greenlight promote staging` exit 8 (a gate failed) with FAILED on
    stderr naming the failed check; live stays."""
    sha = commit()
    push_commit(lab, sha, error_rate=0.2)
    before = live(kube, profile("staging"))
    proc = greenlight(envdir, "promote", "staging", "--commit", sha)
    assert proc.returncode == 8, proc.stdout + proc.stderr
    # which check fails first is chance: a smoke probe answered 500, or the error rate over its limit
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED:")]
    assert failed and "nothing switched" in failed[0], proc.stderr
    assert re.search(r"error rate|smoke probe GET /: expected 200, got 500", failed[0]), failed[0]
    after = live(kube, profile("staging"))
    assert {a: s["live_colour"] for a, s in after.items()} == {a: s["live_colour"] for a, s in before.items()}


def test_a_slower_release_in_a_quiet_staging_fails_naming_the_check_and_both_values(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Quiet staging: a commit whose images add 300 ms (under the 500 ms p95 limit) is stopped at the gate; FAILED names the p95 comparison with the candidate's and the live colour's values; live stays."""
    sha = commit()
    push_commit(lab, sha, latency_ms=300)
    before = live(kube, profile("staging"))
    proc = greenlight(envdir, "promote", "staging", "--commit", sha)
    assert proc.returncode == 8, proc.stdout + proc.stderr
    out = proc.stderr
    assert "FAILED:" in out and "nothing switched" in out, out
    compared = re.findall(r"p95 (\d+) ms > 1\.5 × live (\d+) ms \(floor 10 ms\) \(p = ", out)
    assert compared, out
    # The candidate's p95 carries the 300 ms its images add (a loaded machine adds more, never less);
    # the live colour's is its own, well under it.
    assert all(int(candidate) >= 250 and int(live_ms) < 250 for candidate, live_ms in compared), compared
    after = live(kube, profile("staging"))
    assert {a: s["live_colour"] for a, s in after.items()} == {a: s["live_colour"] for a, s in before.items()}


@pytest.mark.parametrize(
    ("run_id", "reason", "code"),
    [
        pytest.param(str(uuid.uuid4()), "no flow run {run_id}", 3, id="unknown-run"),
        pytest.param("not-a-uuid", "'not-a-uuid' is not a flow run id", 2, id="malformed-id"),
    ],
)
def test_approve_of_no_paused_run_is_refused(envdir: Path, run_id: str, reason: str, code: int) -> None:
    """`greenlight approve` of an unknown run (exit 3, not found) or a malformed id (exit 2, bad
    input) fails on stderr naming the id."""
    proc = greenlight(envdir, "approve", run_id, "--approver", "a")
    assert proc.returncode == code, proc.stdout + proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED:")]
    assert failed and reason.format(run_id=run_id) in failed[0] and proc.stdout == "", proc.stderr


class Reader:
    """Collects a running process's stdout lines in a thread, so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if m := re.search(pattern, line):
                    return m
            time.sleep(0.2)
        raise AssertionError(f"no line matching {pattern!r} within {timeout_s} s: {''.join(self.lines)}")

    def text(self) -> str:
        self._thread.join(10)
        return "".join(self.lines)


def test_production_promotion_waits_for_an_approval_from_another_terminal(
    lab: LabState, promoted: dict[str, Any], envdir: Path, kube: Kube, tmp_path: Path
) -> None:
    """`greenlight promote production` prints the run link and the approve command while it waits; a
    click on Approve in the lab's Slack (`greenlight lab slack click`, from another process) releases
    it, with zero failed requests under load while traffic moves."""
    sha = promoted["sha"]
    before = live(kube, profile("production"))["backend"]["digests"]
    with (
        (tmp_path / "stderr.log").open("w") as err,
        Load(lab, NAMESPACES["production"], "backend", rps=150) as load,
    ):
        proc = subprocess.Popen(
            [GREENLIGHT, "promote", "production", "--commit", sha, "--actor", "erin"],
            env=cli_env(envdir),
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
        try:
            out = Reader(proc)
            m = out.wait_for(r"approve: greenlight approve ([0-9a-f-]{36}) --approver", 90)
            assert any("/runs/flow-run/" in line for line in out.lines)
            assert live(kube, profile("production"))["backend"]["digests"] == before  # nothing yet
            assert any("answer in Slack (#releases)" in line for line in out.lines), out.text()
            answer = greenlight(
                envdir, "lab", "slack", "click", "--user", "U0LABALICE", "--action", "approve",
                "--reason", "ok", "--run", m.group(1),
            )  # fmt: skip
            assert answer.returncode == 0, answer.stdout + answer.stderr[-3000:]
            assert "receiver answered 200" in answer.stdout, answer.stdout
            assert proc.wait(120) == 0, out.text() + (tmp_path / "stderr.log").read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
    assert "outcome: released" in out.text()
    state = live(kube, profile("production"))
    assert {app: s["digests"][app] for app, s in state.items()} == promoted["digests"]
    assert load.report is not None and load.report.sent > 1000
    assert load.report.failed == 0, load.report.render()
    # the caller's kept-alive connections stay on the pods they connected to (kubernetes#46753);
    # a new connection reaches the new colour
    url = supervisor.control(lab, "GET", "/urls")[f"lab-primary/{NAMESPACES['production']}/backend"]
    assert httpx.get(url + "/", timeout=5).json()["color"] == state["backend"]["live_colour"]


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["promote", "nowhere", "--commit", "abc"], "unknown environment 'nowhere'"),
        (["deploy", "staging", "ghcr.io/UPPER/x:1"], "image reference 'ghcr.io/UPPER/x:1' is malformed"),
    ],
    ids=["unknown-environment", "malformed-image"],
)
def test_bad_input_exits_non_zero_naming_the_problem(
    envdir: Path, kube: Kube, args: list[str], reason: str
) -> None:
    """An unknown environment or a malformed image reference exits 2 (bad input) with the problem on
    stderr and changes nothing."""
    before = versions(kube)
    proc = greenlight(envdir, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    # among the flow run's own log lines
    assert any(line.startswith("FAILED:") and reason in line for line in proc.stderr.splitlines()), (
        proc.stderr
    )
    assert versions(kube) == before
