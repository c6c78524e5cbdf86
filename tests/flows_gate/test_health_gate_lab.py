"""The health gate against the lab: real pods, the real Kubernetes and Monitoring clients, Prefect.

backend-green runs a healthy image for the whole module; frontend-green is switched between bad
images (error rate, latency). Tests that look at one metric use a profile copy whose smoke probe
is ``/healthz`` only (the health endpoint never errors), so a bad image's random 500 on ``/``
cannot fail the gate before its metrics are read.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
from prefect.client.schemas.sorting import ArtifactSort

from flows.health_gate import health_gate, run_gate
from greenlight.clients.kube import Kube
from greenlight.clients.monitoring import MonitoringClient
from greenlight.core.gate import Check, GateVerdict
from greenlight.core.rollout import RolloutAssessment
from greenlight.errors import GateFailed
from greenlight.settings import Profile, SmokeProbe
from tasks.metrics import sample_colour
from tasks.probes import SyntheticTraffic, smoke

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
    """A healthy green passes: readiness, both smoke probes, and 3 intervals with requests, error rate, p95 and the live comparison."""
    with SyntheticTraffic(profile, "backend", "live"):
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
    measured = [c for c in verdict.checks if c.name != "synthetic sent"]
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


def test_error_rate_under_the_absolute_limit_fails_against_a_clean_live_colour(
    profile: Profile, greens: Any
) -> None:
    """A 4% error-rate image (under the 5% limit) fails against a live colour without errors: more than 2 points worse."""
    greens.deploy("frontend", error_rate=0.04)
    # more traffic and intervals than the lab default: a 4% rate reliably shows as > 2% in one of them
    gate_profile = metrics_only(profile, synthetic_rps=50, intervals=4)
    with SyntheticTraffic(profile, "frontend", "live"):
        verdict = run_gate(gate_profile, "frontend", "green")
    assert verdict.verdict == "fail", verdict.reason
    relative = failed(verdict, "error_rate_vs_live")
    assert relative and relative[0].limit == pytest.approx(0.02)
    assert "live 0.00% + 2.00 points" in verdict.reason


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
