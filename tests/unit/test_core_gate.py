"""Health-gate metric analysis, verdict, early stop and the post-switch breach check."""

from __future__ import annotations

import pytest

from greenlight.core.gate import (
    BakeJudgement,
    GateConfig,
    IntervalVerdict,
    Sample,
    SmokeResult,
    check_breach,
    decide_gate,
    error_rate,
    evaluate_interval,
    pool,
    should_stop_early,
)
from greenlight.core.rollout import RolloutAssessment, RolloutPhase
from greenlight.core.stats import Histogram
from greenlight.core.switch import EndpointReadiness

CFG = GateConfig(
    max_error_rate=0.05,
    latency_limits=((95, 500.0),),
    max_error_rate_increase=0.02,
    max_latency_ratio=1.5,
    min_requests=100,
    intervals=2,
    smoke_probes=1,
)


BOUNDS = tuple(float(ms) for ms in range(1, 2001))  # 1 ms buckets up to 2 s


def at(ms: int, n: int) -> Histogram:
    """A histogram of ``n`` requests that all took ``ms`` (the 1 ms bucket ending there)."""
    counts = [0] * (len(BOUNDS) + 1)
    counts[ms - 1] = n
    return Histogram(BOUNDS, tuple(counts))


def s(requests: float | None = 1000, errors: float = 0, p95: float | None = 100.0) -> Sample:
    """A sample with the given request and 5xx counts, its requests all at the p95 latency (ms)."""
    if requests is None or p95 is None:
        return Sample(requests, errors, {95: p95})
    return Sample(requests, errors, {95: p95}, histogram=at(int(p95), int(requests)))


@pytest.mark.parametrize(
    ("errors", "requests", "expected"),
    [
        (5, 100, 0.05),
        (0, 10, 0.0),
        (1, 0, None),
        (1, None, None),
        (None, 10, 0.0),
        (20, 10, 1.0),
        (-1, 10, 0.0),
    ],
)
def test_error_rate_is_clamped_and_none_without_requests(
    errors: float | None, requests: float | None, expected: float | None
) -> None:
    """error_rate divides errors by requests, clamped to [0, 1], and is None with no requests."""
    assert error_rate(errors, requests) == expected


INTERVALS = [
    # id, candidate, live, verdict, reason fragment
    (
        "pass-absolute-and-relative",
        s(),
        s(),
        "pass",
        "1000 requests; error rate 0.00% ≤ 5.00%; p95 100 ms ≤ 500 ms",
    ),
    ("no-data", s(requests=None), s(), "inconclusive", "no data: no requests in the interval"),
    ("zero-requests", s(requests=0), s(), "inconclusive", "no data"),
    ("too-little-data", s(requests=12, errors=12), s(), "inconclusive", "too little data: 12 < 100 requests"),
    ("error-rate-over-limit", s(errors=200), None, "fail", "error rate 20.00% > 5.00%"),
    ("error-rate-at-limit-passes", s(errors=50), s(errors=50), "pass", "error rate 5.00% ≤ 5.00%"),
    ("latency-over-limit", s(p95=600), s(p95=500), "fail", "p95 600 ms > 500 ms"),
    ("latency-missing", s(p95=None), s(), "inconclusive", "no p95 latency data"),
    (
        "error-rate-worse-than-live",
        s(errors=40),
        s(errors=10),
        "fail",
        "error rate 4.00% > live 1.00% + 2.00 points",
    ),
    ("latency-worse-than-live", s(p95=400), s(p95=200), "fail", "p95 400 ms > 1.5 × live 200 ms"),
    ("latency-ratio-floor", s(p95=14), s(p95=2), "pass", "p95 14 ms ≤ 1.5 × live 2 ms (floor 10 ms)"),
    (
        "latency-ratio-floor-exceeded",
        s(p95=16),
        s(p95=2),
        "fail",
        "p95 16 ms > 1.5 × live 2 ms (floor 10 ms)",
    ),
    (
        "no-baseline-is-said",
        s(),
        None,
        "pass",
        "judged on absolute limits only: no other colour is live",
    ),
    (
        "baseline-without-data-is-inconclusive",
        s(),
        s(requests=None),
        "inconclusive",
        "baseline (live colour) has no data: no requests in the interval: cannot compare",
    ),
    (
        "baseline-with-too-little-data-is-inconclusive",
        s(),
        s(requests=12),
        "inconclusive",
        "baseline (live colour) has too little data: 12 < 100 requests",
    ),
    (
        "baseline-without-latency",
        s(),
        s(p95=None),
        "inconclusive",
        "the baseline (live colour) has no p95 data",
    ),
    (
        "fail-beats-missing-latency",
        s(errors=200, p95=None),
        s(),
        "fail",
        "error rate 20.00% > 5.00%",
    ),
    (
        "every-failure-named",
        s(errors=200, p95=900),
        s(),
        "fail",
        "error rate 20.00% > 5.00%; p95 900 ms > 500 ms; error rate 20.00% > live 0.00%",
    ),
    (
        "worse-but-not-significant-needs-more-data",
        s(requests=100, errors=4, p95=100),
        s(requests=100, errors=1, p95=100),
        "inconclusive",
        "error rate 4.00% > live 1.00% + 2.00 points, not yet significant (p = 0.18 ≥ 0.002): more data needed",
    ),
    (
        "worse-and-significant-fails-with-p",
        s(requests=400, errors=20, p95=100),
        s(requests=400, errors=2, p95=100),
        "fail",
        "error rate 5.00% > live 0.50% + 2.00 points (p = 5e-05 < 0.002)",
    ),
    (
        "slower-in-histogram-fails-with-p",
        Sample(100, 0, histogram=at(40, 100)),
        Sample(100, 0, histogram=at(20, 100)),
        "fail",
        "p95 40 ms > 1.5 × live 20 ms (p = ",
    ),
]


@pytest.mark.parametrize(
    ("candidate", "live", "verdict", "reason"), [c[1:] for c in INTERVALS], ids=[c[0] for c in INTERVALS]
)
def test_evaluate_interval_verdict_and_reason(
    candidate: Sample, live: Sample | None, verdict: str, reason: str
) -> None:
    """Each candidate/live pair gives its interval verdict, with a reason naming values and limits."""
    iv = evaluate_interval(candidate, live, CFG)
    assert iv.verdict == verdict
    assert reason in iv.reason
    assert iv.candidate is candidate and iv.live is live


def test_interval_records_every_value_and_limit() -> None:
    """A fully evaluated interval keeps each check's value and limit for the report."""
    iv = evaluate_interval(s(errors=10, p95=120), s(errors=5, p95=100), CFG)
    got = {c.name: (c.value, c.limit, c.ok) for c in iv.checks}
    assert got == {
        "requests": (1000, 100, True),
        "error_rate": (0.01, 0.05, True),
        "p95_ms": (120, 500, True),
        "live_requests": (1000, 100, True),
        "error_rate_vs_live": (0.01, pytest.approx(0.025), True),
        "p95_vs_live": (120, 150, True),
    }


def test_no_latency_limits_means_no_latency_checks() -> None:
    """A config without latency limits checks only requests and error rates."""
    iv = evaluate_interval(s(p95=None), s(), GateConfig(latency_limits=()))
    assert iv.verdict == "pass"
    assert [c.name for c in iv.checks] == ["requests", "error_rate", "live_requests", "error_rate_vs_live"]


PASS = evaluate_interval(s(), s(), CFG)
FAIL = evaluate_interval(s(errors=300), s(), CFG)
NODATA = evaluate_interval(s(requests=None), s(), CFG)
SMOKE_OK = SmokeResult("GET /healthz", 200, 200, 12.0)
SMOKE_503 = SmokeResult("GET /healthz", 200, 503, 8.0)
SMOKE_DOWN = SmokeResult("GET /healthz", 200, None, error="connection refused")
ENDPOINTS_OK = EndpointReadiness(3, 0, 3)
ENDPOINTS_PART = EndpointReadiness(2, 1, 3)


def rollout(phase: RolloutPhase, reason: str) -> RolloutAssessment:
    """A rollout assessment in ``phase`` (counts consistent with it)."""
    available = 3 if phase == "available" else 1
    return RolloutAssessment(phase, reason, "green", 3, 3, available, available, 3, 5.0)


ROLLED_OUT = rollout("available", "green 3/3 available")

GATES = [
    # id, intervals, smoke, readiness, verdict, reason fragment
    (
        "pass",
        [PASS, PASS],
        [SMOKE_OK],
        [ROLLED_OUT, ENDPOINTS_OK],
        "pass",
        "green 3/3 available; 3/3 endpoints ready; 1 smoke probe passed; 2 intervals passed",
    ),
    ("pass-single-readiness", [PASS, PASS], [SMOKE_OK], ENDPOINTS_OK, "pass", "3/3 endpoints ready"),
    ("pass-after-early-no-data", [NODATA, PASS, PASS], [SMOKE_OK], ROLLED_OUT, "pass", "2 intervals passed"),
    ("interval-fail", [PASS, FAIL], [SMOKE_OK], ROLLED_OUT, "fail", "interval 2: error rate 30.00% > 5.00%"),
    (
        "smoke-fail",
        [PASS, PASS],
        [SMOKE_503],
        ROLLED_OUT,
        "fail",
        "smoke probe GET /healthz: expected 200, got 503 in 8 ms",
    ),
    (
        "smoke-no-answer",
        [PASS, PASS],
        [SMOKE_DOWN],
        ROLLED_OUT,
        "fail",
        "GET /healthz: no answer: connection refused",
    ),
    (
        "rollout-failed",
        [],
        [],
        rollout("failed", "pod x: CrashLoopBackOff (restarts 2)"),
        "fail",
        "rollout: pod x: CrashLoopBackOff",
    ),
    (
        "rollout-progressing",
        [PASS, PASS],
        [SMOKE_OK],
        rollout("progressing", "green 1/3 available"),
        "inconclusive",
        "rollout: green 1/3 available",
    ),
    (
        "endpoints-not-ready",
        [PASS, PASS],
        [SMOKE_OK],
        ENDPOINTS_PART,
        "inconclusive",
        "endpoints: 2/3 endpoints ready, 1 not ready",
    ),
    ("too-few-intervals", [PASS], [SMOKE_OK], ROLLED_OUT, "inconclusive", "1/2 intervals passed"),
    (
        "no-data-never-passes",
        [NODATA, NODATA],
        [SMOKE_OK],
        ROLLED_OUT,
        "inconclusive",
        "0/2 intervals passed (interval 1: no data: no requests in the interval; interval 2: no data",
    ),
    ("no-intervals", [], [SMOKE_OK], ROLLED_OUT, "inconclusive", "0/2 intervals passed"),
    ("smoke-missing", [PASS, PASS], [], ROLLED_OUT, "inconclusive", "only 0 of 1 smoke probes ran"),
    ("no-readiness", [PASS, PASS], [SMOKE_OK], [], "inconclusive", "no readiness was assessed"),
]


@pytest.mark.parametrize(
    ("intervals", "smoke", "readiness", "verdict", "reason"),
    [c[1:] for c in GATES],
    ids=[c[0] for c in GATES],
)
def test_decide_gate_verdict_and_reason(
    intervals: list[IntervalVerdict],
    smoke: list[SmokeResult],
    readiness: RolloutAssessment | EndpointReadiness | list[RolloutAssessment | EndpointReadiness],
    verdict: str,
    reason: str,
) -> None:
    """Any failure fails the gate; it passes only when readiness, smoke and enough intervals passed."""
    gate = decide_gate(intervals, smoke, readiness, CFG)
    assert gate.verdict == verdict
    assert reason in gate.reason
    assert gate.passed is (verdict == "pass")


def test_gate_records_every_value_under_a_unique_name() -> None:
    """The verdict keeps readiness, smoke and per-interval values, named by where they came from."""
    gate = decide_gate([PASS, PASS], [SMOKE_OK], [ROLLED_OUT, ENDPOINTS_OK], CFG)
    values = gate.values()
    assert values["rollout"] == 3 and values["endpoints"] == 3
    assert values["smoke GET /healthz"] == 200
    assert values["interval 1 error_rate"] == 0.0 and values["interval 2 p95_ms"] == 100.0
    assert len(values) == len(gate.checks)
    assert gate.intervals == (PASS, PASS) and gate.smoke == (SMOKE_OK,)


SMOKES = [
    (SMOKE_OK, True, "GET /healthz: 200 in 12 ms"),
    (SmokeResult("GET /", 200, 200), True, "GET /: 200"),
    (SMOKE_503, False, "GET /healthz: expected 200, got 503 in 8 ms"),
    (
        SmokeResult("GET /", 200, 200, error="body mismatch"),
        False,
        "GET /: expected 200, got 200: body mismatch",
    ),
    (SmokeResult("GET /", 200, None), False, "GET /: no answer: unknown error"),
]


@pytest.mark.parametrize(("result", "ok", "reason"), SMOKES)
def test_smoke_result_ok_and_reason(result: SmokeResult, ok: bool, reason: str) -> None:
    """A smoke probe is ok only with the expected status and no error, and says what it got."""
    assert result.ok is ok
    assert result.reason == reason


@pytest.mark.parametrize(
    ("intervals", "stop", "reason"),
    [
        ([], False, "no interval failed (0 evaluated)"),
        ([PASS, NODATA], False, "no interval failed (2 evaluated)"),
        ([PASS, FAIL, PASS], True, "stopping early: interval 2 failed: error rate 30.00% > 5.00%"),
    ],
)
def test_should_stop_early_on_first_failed_interval(
    intervals: list[IntervalVerdict], stop: bool, reason: str
) -> None:
    """The gate stops evaluating as soon as one interval failed, naming it."""
    result = should_stop_early(intervals)
    assert result.stop is stop
    assert reason in result.reason


BREACHES = [
    ("ok", s(), "ok", "1000 requests; error rate 0.00% ≤ 5.00%; p95 100 ms ≤ 500 ms"),
    ("error-breach", s(errors=100), "breach", "error rate 10.00% > 5.00%"),
    ("latency-breach", s(p95=800), "breach", "p95 800 ms > 500 ms"),
    ("no-series-is-no-data", s(requests=None), "no-data", "no data: no requests in the interval"),
    ("too-little-is-no-data", s(requests=50, errors=50), "no-data", "too little data: 50 < 100 requests"),
    ("missing-latency-is-no-data", s(p95=None), "no-data", "no p95 latency data"),
]


@pytest.mark.parametrize(
    ("sample", "status", "reason"), [c[1:] for c in BREACHES], ids=[c[0] for c in BREACHES]
)
def test_check_breach_status_and_reason(sample: Sample, status: str, reason: str) -> None:
    """After the switch, thresholds breached is breach, too little data is no-data (never ok), else ok."""
    result = check_breach(sample, CFG)
    assert result.status == status
    assert reason in result.reason
    assert result.breached is (status == "breach")


def test_relative_off_judges_on_absolute_limits_and_says_so() -> None:
    """gate.relative off: a candidate far slower than the live colour passes on absolute limits, and the verdict says how it was judged."""
    cfg = GateConfig(latency_limits=((95, 500.0),), min_requests=100, intervals=1, relative=False)
    iv = evaluate_interval(s(p95=400), s(p95=20), cfg)
    assert iv.verdict == "pass" and iv.absolute_only == "gate.relative is off"
    assert "judged on absolute limits only: gate.relative is off" in iv.reason
    assert not [c for c in iv.checks if c.name.endswith("_vs_live")]
    gate = decide_gate([iv], [SMOKE_OK], ROLLED_OUT, cfg)
    assert gate.verdict == "pass" and "judged on absolute limits only: gate.relative is off" in gate.reason


def test_relative_checks_judge_the_pooled_intervals() -> None:
    """Intervals each too small to be sure are inconclusive (more data, never a pass); pooled, the third is sure and fails."""
    cfg = GateConfig(min_requests=50, intervals=3, max_error_rate=0.2)
    cand = [s(requests=60, errors=4, p95=50)] * 3
    base = [s(requests=60, errors=0, p95=50)] * 3
    verdicts = []
    for i in range(1, 4):
        pooled_with = (pool(cand[:i]), pool(base[:i]))
        verdicts.append(evaluate_interval(cand[i - 1], base[i - 1], cfg, pooled_with).verdict)
    assert verdicts == ["inconclusive", "inconclusive", "fail"]


def test_pool_adds_counts_and_histograms_and_reads_percentiles_from_them() -> None:
    """Pooled windows add requests, errors, synthetic counts and histograms; the p95 is the pooled histogram's."""
    a = Sample(100, 1, start=10, end=12, histogram=at(10, 100), synthetic=80)
    b = Sample(100, 3, start=12, end=14, histogram=at(30, 100), synthetic=100)
    p = pool([a, b, Sample(None)])
    assert (p.requests, p.errors, p.synthetic, p.user, p.start, p.end) == (200, 4, 180, 20, 10, 14)
    assert p.histogram is not None and p.histogram.count == 200
    assert p.latency(95) == pytest.approx(29.9)
    assert pool([Sample(None)]).requests is None


BAKES = [
    # id, judgement, watched, summary fragment
    ("all-judged", BakeJudgement("ok", "d", 8, 8), True, "judged 8 of 8 window(s)"),
    ("one-without-data", BakeJudgement("ok", "d", 8, 7, ("w3: no data",)), False, "not judged: w3: no data"),
    ("skipped-windows", BakeJudgement("ok", "d", 4, 4, ("skipped",)), False, "not judged: skipped"),
    ("nothing-read", BakeJudgement("ok", "d", 0, 0), False, "judged 0 of 0"),
]


@pytest.mark.parametrize(("bake", "watched", "summary"), [c[1:] for c in BAKES], ids=[c[0] for c in BAKES])
def test_a_bake_is_watched_only_when_every_window_was_judged(
    bake: BakeJudgement, watched: bool, summary: str
) -> None:
    """A bake with any window not judged (no data, Monitoring down, skipped) is not watched, and its record says so."""
    assert bake.watched is watched
    assert summary in bake.summary()
    assert bake.record()["watched"] is watched
