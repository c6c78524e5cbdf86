"""The health gate against the lab: real pods, the real Kubernetes and Monitoring clients, Prefect.

backend-green runs a healthy image for the whole module; frontend-green is switched between bad
images (error rate, latency). Tests that look at one metric use a profile copy whose smoke probe
is ``/healthz`` only (the health endpoint never errors), so a bad image's random 500 on ``/``
cannot fail the gate before its metrics are read.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from greenlight.clients.kube import Kube
from greenlight.clients.monitoring import MonitoringClient
from greenlight.core.gate import Check, GateVerdict
from greenlight.core.rollout import RolloutAssessment
from greenlight.errors import GateFailed
from greenlight.flows.health_gate import health_gate, run_gate
from greenlight.settings import Profile, SmokeProbe
from greenlight.tasks.metrics import sample_colour
from greenlight.tasks.probes import SyntheticTraffic, smoke

pytestmark = [
    pytest.mark.lab,
    # run_gate is called outside a flow here, as a caller may: its task logs cannot go to the API
    pytest.mark.filterwarnings("ignore:Logger 'prefect.task_runs' attempted to send logs:UserWarning"),
]

NAMESPACE = "sma-staging"


def with_gate(profile: Profile, **changes: Any) -> Profile:
    """A copy of ``profile`` with ``changes`` to its gate section."""
    return profile.model_copy(update={"gate": profile.gate.model_copy(update=changes)})


def metrics_only(profile: Profile, **changes: Any) -> Profile:
    """A copy probing only ``/healthz`` for smoke (never erroring), with ``changes`` to the gate."""
    return with_gate(profile, smoke=[SmokeProbe(path="/healthz")], **changes)


def failed(verdict: GateVerdict, suffix: str) -> list[Check]:
    return [c for c in verdict.checks if c.name.endswith(suffix) and c.ok is False]


def test_healthy_green_passes_with_every_value_recorded(profile: Profile, good_backend: str) -> None:
    """In a quiet staging (no load), a healthy green passes: readiness, both smoke probes, and 3 intervals with requests, error rate, p95 and the comparison with the live colour, which the gate gave the same synthetic traffic."""
    verdict = run_gate(profile, "backend", "green")
    assert verdict.verdict == "pass", verdict.reason
    checks = {c.name: c for c in verdict.checks}
    assert checks["rollout"].ok and checks["endpoints"].ok
    assert [s.name for s in verdict.smoke] == ["GET /", "GET /healthz"] and all(s.ok for s in verdict.smoke)
    assert len(verdict.intervals) == 3
    for i in (1, 2, 3):
        assert checks[f"interval {i} requests"].value >= 20
        assert checks[f"interval {i} error_rate"].value == 0.0
        assert checks[f"interval {i} error_rate"].limit == 0.05
        assert (
            checks[f"interval {i} p95_ms"].value is not None and checks[f"interval {i} p95_ms"].limit == 500
        )
        assert checks[f"interval {i} live_requests"].value >= 20
        assert checks[f"interval {i} error_rate_vs_live"].limit == pytest.approx(0.02)
        assert checks[f"interval {i} p95_vs_live"].ok is True
    assert checks["synthetic sent"].value >= 60  # 25 rps over 3 intervals of 2 s, minus start-up
    assert checks["baseline synthetic sent"].value >= 60
    for iv in verdict.intervals:  # the baseline's requests are the gate's own: nobody else calls
        assert iv.live is not None and iv.live.synthetic is not None and iv.live.requests
        assert iv.live.synthetic >= 0.8 * iv.live.requests
        assert iv.absolute_only is None
    measured = [c for c in verdict.checks if not c.name.endswith("synthetic sent")]
    assert all(c.ok is True for c in measured), [c.reason for c in measured if not c.ok]


def test_high_error_rate_fails_naming_the_rate_and_the_limit(profile: Profile, greens: Any) -> None:
    """A 20% error-rate image fails the gate at its first interval; the reason names the error rate and the 5% limit."""
    greens.deploy("frontend", error_rate=0.2)
    verdict = run_gate(metrics_only(profile), "frontend", "green")
    assert verdict.verdict == "fail", verdict.reason
    assert "error rate" in verdict.reason and "> 5.00%" in verdict.reason
    breach = failed(verdict, " error_rate")
    assert breach and breach[0].value > 0.05 and breach[0].limit == 0.05
    assert verdict.intervals[-1].verdict == "fail"  # stopped at the failed interval


def test_slow_image_fails_on_the_p95_limit(profile: Profile, greens: Any) -> None:
    """An image answering in 800 ms fails on the p95 limit of 500 ms."""
    greens.deploy("frontend", latency_ms=800)
    verdict = run_gate(metrics_only(profile), "frontend", "green")
    assert verdict.verdict == "fail", verdict.reason
    breach = failed(verdict, " p95_ms")
    assert breach and breach[0].value > 500 and breach[0].limit == 500
    assert "> 500 ms" in verdict.reason


def test_error_rate_under_the_absolute_limit_fails_against_a_quiet_clean_live_colour(
    profile: Profile, greens: Any
) -> None:
    """Quiet staging (no load): a 15% error-rate image, under a 40% absolute limit, fails against the live colour, which the gate gave the same synthetic traffic: the reason names the comparison and both rates."""
    greens.deploy("frontend", error_rate=0.15)
    verdict = run_gate(metrics_only(profile, max_error_rate=0.4), "frontend", "green")
    assert verdict.verdict == "fail", verdict.reason
    relative = failed(verdict, "error_rate_vs_live")
    assert relative and relative[0].limit == pytest.approx(0.02)
    assert not failed(verdict, " error_rate"), "the absolute limit was not what failed it"
    assert re.search(r"error rate \d+\.\d\d% > live 0\.00% \+ 2\.00 points \(p = ", verdict.reason)


def test_slower_image_under_the_absolute_limit_fails_against_a_quiet_live_colour(
    profile: Profile, greens: Any
) -> None:
    """Quiet staging: an image that adds 300 ms (p95 about 330 ms, under the 500 ms limit) fails against the live colour's few ms, naming both p95 values."""
    greens.deploy("frontend", latency_ms=300)
    verdict = run_gate(metrics_only(profile), "frontend", "green")
    assert verdict.verdict == "fail", verdict.reason
    assert not failed(verdict, " p95_ms"), "the absolute limit was not what failed it"
    slower = failed(verdict, "p95_vs_live")
    assert slower and 250 < (slower[0].value or 0) <= 500
    assert re.search(r"p95 \d+ ms > 1\.5 × live \d+ ms \(floor 10 ms\) \(p = ", verdict.reason)
    first = verdict.intervals[0]
    assert first.live is not None and first.live.requests and first.live.synthetic


def test_relative_off_judges_on_absolute_limits_only_and_says_so(profile: Profile, greens: Any) -> None:
    """gate.relative off: the slower image passes on absolute limits, and the verdict says it was judged on them only; the live colour gets no synthetic traffic."""
    greens.deploy("frontend", latency_ms=300)
    verdict = run_gate(metrics_only(profile, relative=False), "frontend", "green")
    assert verdict.verdict == "pass", verdict.reason
    assert "judged on absolute limits only: gate.relative is off" in verdict.reason
    assert "baseline synthetic sent" not in {c.name for c in verdict.checks}


def test_no_traffic_is_inconclusive_never_pass(profile: Profile, good_backend: str) -> None:
    """With no synthetic traffic and no other traffic, the gate has no data: inconclusive, never pass."""
    quiet = with_gate(profile, synthetic_rps=0, max_extra_intervals=0)
    verdict = run_gate(quiet, "backend", "green")
    assert verdict.verdict == "inconclusive", verdict.reason
    assert "no data" in verdict.reason
    assert verdict.intervals[0].candidate.requests is None


def test_monitoring_outage_is_recorded_and_never_passes(
    profile: Profile, good_backend: str, monitoring_down: None
) -> None:
    """When Cloud Monitoring stays unavailable through the retries, the interval is inconclusive with the reason."""
    short = with_gate(profile, intervals=1, max_extra_intervals=0)
    verdict = run_gate(short, "backend", "green")
    assert verdict.verdict == "inconclusive", verdict.reason
    assert "Monitoring unavailable" in verdict.reason
    assert verdict.values()["interval 1 monitoring"] is None


def test_failed_rollout_fails_without_probing(profile: Profile, good_backend: str) -> None:
    """A failed rollout handed in by the caller fails the gate at once, with no smoke probe or interval run."""
    crashed = RolloutAssessment(
        "failed", "pod backend-green-x: CrashLoopBackOff", "backend green", 2, 2, 0, 0, 2, 5.0
    )
    started = time.monotonic()
    verdict = run_gate(profile, "backend", "green", readiness=crashed)
    assert verdict.verdict == "fail" and "CrashLoopBackOff" in verdict.reason
    assert verdict.smoke == () and verdict.intervals == ()
    assert time.monotonic() - started < 2


def test_colour_no_service_selects_is_inconclusive(profile: Profile) -> None:
    """A colour neither Service selects cannot be probed: inconclusive, naming what each Service selects."""
    verdict = run_gate(profile, "backend", "purple")
    assert verdict.verdict == "inconclusive"
    assert "'purple'" in verdict.reason and "'blue'" in verdict.reason


def test_smoke_probes_reach_the_preview_through_the_api_server(profile: Profile, good_backend: str) -> None:
    """Each smoke probe of the profile reaches the preview Service through the API server's proxy: 200, timed."""
    results = smoke.fn(profile, "backend", "preview")
    assert [r.name for r in results] == ["GET /", "GET /healthz"]
    assert all(r.ok and r.status == 200 and r.elapsed_ms is not None for r in results)


def test_smoke_probe_of_a_service_without_endpoints_records_the_answer(profile: Profile, kube: Kube) -> None:
    """A Service with no ready endpoint answers 503 through the API server; the probe records it as a failure."""
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "gate-empty", "namespace": NAMESPACE},
        "spec": {"selector": {"app": "nobody"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    kube.create("services", svc, NAMESPACE)
    try:
        apps = [a.model_copy(update={"preview_service": "gate-empty"}) for a in profile.apps]
        results = smoke.fn(profile.model_copy(update={"apps": apps}), "backend", "preview")
    finally:
        kube.delete("services", "gate-empty", NAMESPACE)
    assert all(r.status == 503 and not r.ok for r in results)
    assert "no endpoints" in (results[0].error or "")


def test_sample_counts_one_colours_requests_over_a_window(profile: Profile) -> None:
    """A sample of the live colour over a window counts the requests sent in it; a colour without traffic has no data."""
    with SyntheticTraffic(profile, "backend", "live") as traffic:
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        end = start + timedelta(seconds=2)
        time.sleep((end - datetime.now(UTC)).total_seconds() + profile.monitoring.ingestion_delay_s)
    sample = sample_colour.fn(profile, "backend", "blue", start, end)
    assert traffic.failed == 0
    assert sample.requests is not None and 35 <= sample.requests <= 65  # 25 rps for 2 s
    assert sample.errors == 0.0
    assert sample.latency(95) is not None and sample.latency(95) < 100
    assert sample_colour.fn(profile, "backend", "purple", start, end).requests is None


def test_synthetic_traffic_sends_at_the_profile_rate_and_stops(profile: Profile, good_backend: str) -> None:
    """Synthetic traffic sends about synthetic_rps requests a second while open, none after; 0 rps sends none."""
    with SyntheticTraffic(profile, "backend", "preview") as traffic:
        time.sleep(1.0)
    sent = traffic.sent
    assert 15 <= sent <= 35 and traffic.failed == 0
    time.sleep(0.3)
    assert traffic.sent == sent
    with SyntheticTraffic(with_gate(profile, synthetic_rps=0), "backend", "preview") as idle:
        time.sleep(0.2)
    assert idle.sent == 0


def read_artifact(key: str) -> str:
    """The newest markdown of artifact ``key`` from the Prefect API."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), sort=ArtifactSort.CREATED_DESC
        )
    assert found, f"no artifact {key}"
    return str(found[0].data)


def test_health_gate_flow_passes_a_good_app_and_publishes_its_artifact(lab: Any, good_backend: str) -> None:
    """The health-gate flow for one app gates the preview colour, returns pass and publishes its markdown artifact."""
    out = health_gate("staging", app="backend")
    assert out["backend"]["verdict"] == "pass" and out["backend"]["colour"] == "green"
    markdown = read_artifact("health-gate-staging")
    assert "| backend | **pass** |" in markdown and "interval 3 p95_ms" in markdown
    gauge = 'metric.type="custom.googleapis.com/greenlight/gate/passed"'
    now = datetime.now(UTC)
    points = MonitoringClient("lab-project").read_latest(gauge, now - timedelta(minutes=5), now)
    assert ({"environment": "staging", "app": "backend", "colour": "green"}, 1.0) in [
        (labels, value) for labels, value, _ in points
    ]


def test_health_gate_flow_raises_gate_failed_naming_the_bad_app(lab: Any, greens: Any) -> None:
    """The health-gate flow raises GateFailed naming the app whose preview colour fails, and records it."""
    greens.deploy("frontend", error_rate=0.2)
    with pytest.raises(GateFailed, match="frontend fail"):
        health_gate("staging", app="frontend")
    assert "| frontend | **fail** |" in read_artifact("health-gate-staging")


def _gate_cli(lab: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``greenlight gate ARGS`` in a subprocess, as a person runs it after ``lab env``."""
    exe = str(Path(sys.executable).with_name("greenlight"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [exe, "gate", *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_gate_command_prints_candidate_and_baseline_side_by_side(lab: Any, good_backend: str) -> None:
    """`greenlight gate staging --app backend` prints, per interval, the candidate's and the baseline's requests (synthetic and users), 5xx rate and p95; `--json` gives the same figures."""
    proc = _gate_cli(lab, "staging", "--app", "backend")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout
    assert text.startswith("backend (green): pass:"), text
    assert len(re.findall(r"^  interval \d \d\d:\d\d:\d\d-\d\d:\d\d:\d\d: pass$", text, re.M)) == 3, text
    cand = re.findall(
        r"^    candidate: (\d+) req \((\d+) synthetic, (\d+) users\), \d+\.\d\d% 5xx, p95 \d+ ms$", text, re.M
    )
    base = re.findall(
        r"^    baseline:  (\d+) req \((\d+) synthetic, (\d+) users\), \d+\.\d\d% 5xx, p95 \d+ ms$", text, re.M
    )
    assert len(cand) == 3 and len(base) == 3, text
    assert all(int(n) >= 20 for n, _, _ in base)

    proc = _gate_cli(lab, "staging", "--app", "backend", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    intervals = doc["apps"]["backend"]["intervals"]
    assert doc["environment"] == "staging" and len(intervals) == 3
    for iv in intervals:
        for side in ("candidate", "live"):
            s = iv[side]
            assert s["requests"] >= 20 and s["synthetic"] is not None and s["latency_ms"]["p95"] is not None
            assert sum(s["histogram_ms"]["counts"]) > 0
        assert {c["name"] for c in iv["checks"]} >= {"error_rate_vs_live", "p95_vs_live", "live_requests"}


def test_gate_command_of_a_slower_image_fails_naming_both_values(lab: Any, greens: Any) -> None:
    """A slower candidate makes `greenlight gate` exit 8 with FAILED naming the p95 comparison and both values, and still print the intervals (with --json: as one document)."""
    greens.deploy("frontend", latency_ms=300)
    proc = _gate_cli(lab, "staging", "--app", "frontend")
    assert proc.returncode == 8, proc.stdout + proc.stderr  # a gate failed
    assert re.search(r"FAILED: .*p95 \d+ ms > 1\.5 × live \d+ ms", proc.stderr), proc.stderr
    assert "    baseline:  " in proc.stdout and "    candidate: " in proc.stdout

    proc = _gate_cli(lab, "staging", "--app", "frontend", "--json")
    assert proc.returncode == 8, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)  # what it measured, as one document; FAILED still on stderr
    assert doc["apps"]["frontend"]["verdict"] == "fail"
    assert re.search(r"p95 \d+ ms > 1\.5 × live \d+ ms", doc["apps"]["frontend"]["reason"]), doc
    assert any(line.startswith("FAILED:") for line in proc.stderr.splitlines())
