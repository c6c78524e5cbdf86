"""The gate's pure adapters: profile to thresholds and filters, verdicts to markdown and dicts. No lab."""

from __future__ import annotations

import pytest

from greenlight.core.gate import Check, GateVerdict, IntervalVerdict, Sample, SmokeResult
from greenlight.errors import InputInvalid
from greenlight.flows.health_gate import render_gate_markdown, verdict_dict
from greenlight.settings import Profile, load_profile
from greenlight.tasks.metrics import gate_config, request_filters
from greenlight.tasks.probes import service_for
from greenlight_lab.state import LAB_ENVIRONMENTS

LAB_PROFILES = LAB_ENVIRONMENTS
REQUESTS = 'metric.type="prometheus.googleapis.com/http_requests_total/counter"'
LATENCY = 'metric.type="prometheus.googleapis.com/http_request_duration_seconds/histogram"'


@pytest.fixture(scope="module")
def staging() -> Profile:
    return load_profile("staging", LAB_PROFILES)


def test_gate_config_carries_every_threshold_of_the_profile(staging: Profile) -> None:
    """The core thresholds are the profile's: error rate, latency limits, relative limits, counts, smoke probes."""
    cfg = gate_config(staging)
    assert cfg.max_error_rate == 0.05
    assert cfg.latency_limits == ((95, 500.0),)
    assert (cfg.max_error_rate_increase, cfg.max_latency_ratio) == (0.02, 1.5)
    assert (cfg.min_requests, cfg.intervals, cfg.smoke_probes) == (20, 3, 2)
    assert (cfg.relative, cfg.confidence, cfg.max_looks, cfg.latency_ratio_floor_ms) == (True, 0.98, 5, 10)


@pytest.mark.parametrize(
    ("monitoring", "app", "colour", "expected"),
    [
        (
            {},
            "backend",
            "green",
            (
                f'{REQUESTS} resource.labels.namespace="sma-staging" resource.labels.job="backend" '
                'metric.labels.color="green"',
                f'{REQUESTS} resource.labels.namespace="sma-staging" resource.labels.job="backend" '
                'metric.labels.color="green" metric.labels.code=monitoring.regex.full_match("5..")',
                f'{LATENCY} resource.labels.namespace="sma-staging" resource.labels.job="backend" '
                'metric.labels.color="green"',
            ),
        ),
        (
            {
                "requests_metric": "custom/req",
                "latency_metric": "custom/lat",
                "status_label": "status",
                "colour_label": "track",
                "namespace_label": "ns",
                "app_label": "service",
            },
            "frontend",
            "blue",
            (
                'metric.type="custom/req" resource.labels.ns="sma-staging" resource.labels.service="frontend" '
                'metric.labels.track="blue"',
                'metric.type="custom/req" resource.labels.ns="sma-staging" resource.labels.service="frontend" '
                'metric.labels.track="blue" metric.labels.status=monitoring.regex.full_match("5..")',
                'metric.type="custom/lat" resource.labels.ns="sma-staging" resource.labels.service="frontend" '
                'metric.labels.track="blue"',
            ),
        ),
    ],
)
def test_request_filters_come_from_the_profile_labels(
    staging: Profile, monitoring: dict[str, str], app: str, colour: str, expected: tuple[str, str, str]
) -> None:
    """Requests, 5xx and latency filters use the profile's metric types and label names for the app's colour."""
    profile = staging.model_copy(update={"monitoring": staging.monitoring.model_copy(update=monitoring)})
    assert request_filters(profile, app, colour) == expected


def test_request_filters_refuse_an_unknown_app(staging: Profile) -> None:
    """An app the profile does not know is refused, naming the known ones."""
    with pytest.raises(InputInvalid, match="known: backend, frontend"):
        request_filters(staging, "billing", "green")


@pytest.mark.parametrize(("target", "expected"), [("live", "backend"), ("preview", "backend-preview")])
def test_service_for_names_the_live_or_preview_service(staging: Profile, target: str, expected: str) -> None:
    """The live target is the app's Service, the preview target its preview Service."""
    assert service_for(staging, "backend", target) == expected  # type: ignore[arg-type]


def _verdict() -> GateVerdict:
    sample = Sample(requests=50, errors=10, latency_ms={95: 12.0}, start=1.0, end=3.0)
    checks = (
        Check("rollout", 2, 2, True, "backend green 2/2 available"),
        Check("interval 1 error_rate", 0.2, 0.05, False, "error rate 20.00% > 5.00%"),
        Check("interval 1 p95_vs_live", None, None, None, "p95 vs live skipped | no data"),
    )
    interval = IntervalVerdict("fail", "error rate 20.00% > 5.00%", checks[1:], sample)
    smoke = (SmokeResult("GET /", 200, 200, 3.0),)
    return GateVerdict("fail", "interval 1: error rate 20.00% > 5.00%", checks, (interval,), smoke)


def test_markdown_shows_every_check_with_value_limit_and_result() -> None:
    """The report has a summary row per app and a table row per check (value, limit, ok/FAIL/—), pipes escaped."""
    md = render_gate_markdown("staging", {"backend": _verdict()})
    assert md.startswith("# Health gate: staging")
    assert "| backend | **fail** | interval 1: error rate 20.00% > 5.00% |" in md
    assert "| interval 1 error_rate | 0.2 | 0.05 | FAIL | error rate 20.00% > 5.00% |" in md
    assert "| interval 1 p95_vs_live | n/a | n/a | — | p95 vs live skipped \\| no data |" in md


def test_verdict_dict_keeps_checks_smoke_and_samples() -> None:
    """The dict form keeps the verdict, each check, each smoke result with ok, and each interval's samples."""
    d = verdict_dict(_verdict())
    assert d["verdict"] == "fail"
    assert d["checks"][1] == {
        "name": "interval 1 error_rate",
        "value": 0.2,
        "limit": 0.05,
        "ok": False,
        "reason": "error rate 20.00% > 5.00%",
    }
    assert d["smoke"][0]["ok"] is True
    assert d["intervals"][0]["candidate"] == {
        "requests": 50,
        "synthetic": None,
        "user": None,
        "errors": 10,
        "latency_ms": {"p50": None, "p95": 12.0, "p99": None},
        "histogram_ms": None,
        "start": 1.0,
        "end": 3.0,
    }
    assert d["intervals"][0]["checks"][0]["name"] == "interval 1 error_rate"
    assert d["intervals"][0]["live"] is None
