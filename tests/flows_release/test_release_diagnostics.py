"""Failed staging releases carry what a person would type kubectl for: the failing pods' restart
counts, container states, Events and redacted log lines, and the probes' answers, in the release
report and its Slack thread (read from the lab's Slack); ``greenlight diagnose`` prints the same."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight.core.release import release_id
from greenlight.errors import GateFailed
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight_lab import supervisor
from greenlight_lab.pods import LEAKED_SECRET
from greenlight_lab.state import LabState

from .support import live, profile, push_commit, release_environments, release_report

pytestmark = pytest.mark.lab

GREENLIGHT = str(Path(sys.executable).with_name("greenlight"))
# a rollout that never turns ready fails at the progress deadline: short here
PROGRESS_DEADLINE_S = 6


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release profiles, staging with a short progress deadline."""
    changes = {"staging": {"release.progress_deadline_s": PROGRESS_DEADLINE_S}}
    with release_environments(lab, tmp_path_factory.mktemp("diag-envs"), **changes) as directory:
        yield directory


@dataclass(frozen=True)
class Failure:
    error: str
    release_id: str
    report: str
    thread: list[str]  # the release's Slack thread, in order
    candidate: str  # the colour the release deployed


def fail_release(lab: LabState, kube: Kube, **behaviour: Any) -> Failure:
    """Promote a new commit whose images behave as ``behaviour`` to staging; what it said."""
    sha = uuid.uuid4().hex[:10]
    digests = push_commit(lab, sha, **behaviour)
    live_colour = live(kube, profile("staging"))["backend"]["live_colour"]
    candidate = next(c for c in profile("staging").release.colours if c != live_colour)
    sent_before = len(supervisor.control(lab, "GET", "/slack"))
    with pytest.raises(GateFailed) as err:
        build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    rid = release_id("staging", digests, sha)
    messages = supervisor.control(lab, "GET", "/slack")[sent_before:]
    start = next(m for m in messages if f"release {rid} to staging started" in (m.get("text") or ""))
    thread = [m["text"] for m in messages if m.get("thread_ts") == start["ts"]]
    return Failure(str(err.value), rid, release_report(rid), thread, candidate)


def pod_rows(report: str, app: str) -> list[list[str]]:
    """The rows of the report's pods table of ``app``'s diagnostics: pod, colour, phase, ready, restarts, state, why."""
    rows = re.findall(rf"^\| ({app}-(?:blue|green)-\S+) \| (.*) \|$", report, re.MULTILINE)
    return [[name, *[c.strip() for c in rest.split(" | ")]] for name, rest in rows if rest.count(" | ") == 5]


def failing_rows(rows: list[list[str]]) -> list[list[str]]:
    """The rows of pods that are not ready (the new ReplicaSet's, in a failed rollout)."""
    return [r for r in rows if r[3] == "no"]


def mag(thread: list[str], app: str) -> str:
    found = [t for t in thread if t.startswith(f":mag: {app} ")]
    assert found, thread
    return found[0]


def test_crashing_image_report_and_thread_carry_restarts_crash_loop_and_redacted_last_words(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A crash image fails the rollout; the report's diagnostics and the thread name CrashLoopBackOff,
    the restart count, the BackOff and Unhealthy Events and the app's FATAL line, with the database
    password masked; ``greenlight diagnose`` then prints the same, as text and as JSON."""
    f = fail_release(lab, kube, crash=True)
    assert "CrashLoopBackOff" in f.error
    assert f"## Diagnostics: backend {f.candidate} (rollout failed)" in f.report
    rows = pod_rows(f.report, "backend")
    # the candidate colour may still run an earlier release's pods (warm, or the old ReplicaSet of the
    # rolling update that keeps them until the new ones are ready): those are listed, ready, too
    failing = failing_rows(rows)
    assert failing and all(r[1] == f.candidate for r in rows), rows
    assert max(int(r[4]) for r in failing) >= 1
    # read as the rollout failed: waiting in CrashLoopBackOff, or just restarted (running, not ready)
    assert all(r[6].startswith(("CrashLoopBackOff", "not ready")) and int(r[4]) >= 1 for r in failing), rows
    assert "Warning BackOff" in f.report and "Back-off restarting failed container backend" in f.report
    assert "Readiness probe failed: HTTP probe failed with statuscode: 503" in f.report
    assert 'FATAL: password authentication failed for user "app"' in f.report
    assert "postgresql://app:***@db.internal" in f.report
    slack = mag(f.thread, "backend")
    assert re.search(r"restarts [1-9]", slack) and "Back-off restarting failed container backend" in slack
    assert "FATAL: password authentication" in slack
    assert "not collected" not in f.report  # no previous run yet after the first crash is no failure
    assert LEAKED_SECRET not in f.report
    assert not any(LEAKED_SECRET in t for t in f.thread)

    # the candidate stays as the failed rollout left it: diagnose it by hand
    env = {**os.environ, "GREENLIGHT_ENVIRONMENTS": str(envdir)}
    args = [GREENLIGHT, "diagnose", "staging", "--app", "backend", "--colour", f.candidate, "--lines", "5"]
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    # the pods restart in step: a read may find them waiting (CrashLoopBackOff) or just restarted
    # (running, not ready); the BackOff Event and the restart count say it either way
    assert f"FAIL pod backend-{f.candidate}-" in out.stdout
    assert (
        "event Warning BackOff" in out.stdout and "Back-off restarting failed container backend" in out.stdout
    )
    assert "postgresql://app:***@" in out.stdout and LEAKED_SECRET not in out.stdout + out.stderr
    assert re.search(r"staging: [1-9]\d* unhealthy pods? \(backend-", out.stdout), out.stdout
    doc = json.loads(
        subprocess.run(
            [*args, "--json"], env=env, capture_output=True, text=True, timeout=120, check=True
        ).stdout
    )
    (d,) = doc["diagnoses"]
    assert doc["healthy"] is False and d["app"] == "backend" and d["colour"] == f.candidate
    pods = [p for p in d["pods"] if not p["healthy"]]
    assert pods and all(p["restarts"] >= 1 and p["containers"][0]["name"] == "backend" for p in pods)
    assert any(e["reason"] == "BackOff" and e["type"] == "Warning" for p in pods for e in p["events"])
    assert all(len(p["logs"]) + len(p["previous_logs"]) <= 10 for p in pods)
    assert LEAKED_SECRET not in json.dumps(doc)


def test_diagnose_refuses_an_unknown_app_and_a_bad_colour(lab: LabState, envdir: Path) -> None:
    """Exit 3 naming the known apps for an unknown app; 2 naming the colours for a bad colour."""
    env = {**os.environ, "GREENLIGHT_ENVIRONMENTS": str(envdir)}
    for extra, code, says in (
        (["--app", "billing"], 3, "unknown app 'billing'"),
        (["--colour", "red"], 2, "unknown colour 'red'"),
    ):
        out = subprocess.run(
            [GREENLIGHT, "diagnose", "staging", *extra], env=env, capture_output=True, text=True, timeout=60
        )
        assert out.returncode == code, out
        assert out.stderr.startswith("FAILED: ") and says in out.stderr and out.stdout == ""


def test_erroring_image_gate_failure_carries_the_probe_answers_and_error_lines(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """An image that answers 500 is ready but fails its smoke probe: the report and the thread carry
    the probe's answer and the pods' ERROR log lines (read although the pods look healthy)."""
    f = fail_release(lab, kube, error_rate=1.0)
    assert "stopped at the gate" in f.error
    assert f"## Diagnostics: backend {f.candidate} (gate failed: fail)" in f.report
    assert "GET /: expected 200, got 500" in f.report
    assert "ERROR GET /: 500 internal error" in f.report
    slack = mag(f.thread, "backend")
    assert "smoke 1 of 2 failed" in slack and "got 500" in slack
    assert "ERROR GET /: 500 internal error" in slack


def test_never_ready_image_rollout_failure_carries_unhealthy_500_events(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """An image whose health endpoint answers 500 never turns ready: at the progress deadline the
    report and the thread say not ready, with the kubelet's Unhealthy Events and the app's log."""
    f = fail_release(lab, kube, unhealthy=True)
    assert "progress" in f.error or "deadline" in f.error, f.error
    rows = pod_rows(f.report, "backend")
    failing = failing_rows(rows)
    assert failing and all(
        r[6] == "not ready: Readiness probe failed: HTTP probe failed with statuscode: 500" for r in failing
    ), rows
    assert re.search(
        r"Warning Unhealthy x\d+: Readiness probe failed: HTTP probe failed with statuscode: 500", f.report
    )
    assert "ERROR health check failed: database db.internal:5432 unreachable" in f.report
    slack = mag(f.thread, "backend")
    assert "not ready: Readiness probe failed: HTTP probe failed with statuscode: 500" in slack


def test_collecting_from_a_stalled_api_server_notes_what_it_could_not_read(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """With Events stalled and logs refused (500), a diagnosis still comes back within its time
    budget: the pods' states from the pod objects, and notes of what was not read."""
    from greenlight.tasks.diagnostics import collect

    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha, crash=True)
    with pytest.raises(GateFailed, match="CrashLoopBackOff"):
        build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    live_colour = live(kube, profile("staging"))["backend"]["live_colour"]
    candidate = next(c for c in profile("staging").release.colours if c != live_colour)
    rules = [
        supervisor.control(lab, "POST", "/faults", {"target": "kube-primary", "verb": "list",
                           "resource": "events", "mode": "stall", "stall_s": 20, "count": -1}),
        supervisor.control(lab, "POST", "/faults", {"target": "kube-primary", "verb": "get",
                           "resource": "pods/log", "status": 500, "count": -1}),
    ]  # fmt: skip
    try:
        d = collect(profile("staging"), "backend", candidate, budget_s=2)
        assert all(int(supervisor.control(lab, "GET", f"/faults/{r['id']}")["fired"]) for r in rules[:1])
    finally:
        supervisor.control(lab, "DELETE", "/faults?target=kube-primary")
    assert d.unhealthy and all(p.restarts >= 1 and p.why for p in d.unhealthy), d
    notes = [n for p in d.pods for n in p.notes]
    assert any(n.startswith("events: ") for n in notes), notes
    assert any("budget" in n or n.startswith("log: ") for n in notes), notes
