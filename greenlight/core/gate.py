"""The health gate's metric analysis and verdict, and the post-switch breach check. Pure.

Per analysis interval the gate compares the candidate colour (reached through the preview
Service) with thresholds and with the live colour (:func:`evaluate_interval`); the verdict
(:func:`decide_gate`) also weighs rollout and endpoint readiness and the smoke probes. Every
measured value and limit is kept as a :class:`Check`, so the release report shows why.

Rules (Flagger and Argo Rollouts users' complaints in mind: "no data" must never pass):

- fewer than ``min_requests`` in an interval (or no series at all) makes it inconclusive;
- error rate above ``max_error_rate``, or a latency percentile above its limit, fails it;
- relative to the live colour: an error rate above the live one plus ``max_error_rate_increase``,
  or a percentile above ``max_latency_ratio`` times the live one (the live value taken as at
  least ``latency_ratio_floor_ms``, so that 1 ms against 2 ms is not a regression), fails it;
  these checks are skipped, with the reason recorded, when the live colour has too little data;
- the gate fails at once on any failed interval, smoke probe or failed rollout; it passes only
  with ``intervals`` passed intervals, every expected smoke probe passed and readiness complete;
  anything else is inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from greenlight.core.rollout import RolloutAssessment
from greenlight.core.switch import EndpointReadiness

Verdict = Literal["pass", "fail", "inconclusive"]
BreachStatus = Literal["breach", "ok", "no-data"]
Readiness = RolloutAssessment | EndpointReadiness


@dataclass(frozen=True)
class Sample:
    """One colour's traffic over one interval.

    ``requests`` is None when the metric query returned no series (no data); ``errors`` counts
    5xx responses (no series means none); ``latency_ms`` maps a percentile (50, 95, 99) to
    milliseconds, a missing percentile or None meaning no data. ``start``/``end`` (epoch
    seconds) are kept for the record only.
    """

    requests: float | None
    errors: float = 0.0
    latency_ms: Mapping[int, float | None] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None

    def latency(self, percentile: int) -> float | None:
        """The ``percentile`` latency in ms, or None without data."""
        return self.latency_ms.get(percentile)


@dataclass(frozen=True)
class GateConfig:
    """Thresholds of the gate (a profile's ``gate`` section, mapped by an adapter)."""

    max_error_rate: float = 0.05
    latency_limits: tuple[tuple[int, float], ...] = ((95, 1000.0),)  # (percentile, max ms)
    max_error_rate_increase: float = 0.02  # fraction points above the live colour's rate
    max_latency_ratio: float = 1.5
    min_requests: float = 100
    intervals: int = 3  # passed intervals needed
    smoke_probes: int = 1  # smoke results the gate expects
    latency_ratio_floor_ms: float = 10.0


@dataclass(frozen=True)
class Check:
    """One measured value against its limit; ``ok`` is None when it could not be evaluated."""

    name: str
    value: float | None
    limit: float | None
    ok: bool | None
    reason: str


@dataclass(frozen=True)
class IntervalVerdict:
    """The verdict on one interval, with its checks and the samples behind them."""

    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    candidate: Sample
    live: Sample | None = None


@dataclass(frozen=True)
class SmokeResult:
    """One HTTP smoke probe's outcome: the status it got (None: no answer) or the error."""

    name: str  # e.g. "GET /healthz"
    expect_status: int
    status: int | None
    elapsed_ms: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Answered with the expected status and no error."""
        return self.error is None and self.status == self.expect_status

    @property
    def reason(self) -> str:
        """``GET /healthz: 200 in 12 ms``, ``... expected 200, got 503``, ``... no answer: ...``."""
        if self.status is None:
            return f"{self.name}: no answer: {self.error or 'unknown error'}"
        took = f" in {self.elapsed_ms:.0f} ms" if self.elapsed_ms is not None else ""
        if self.ok:
            return f"{self.name}: {self.status}{took}"
        detail = f": {self.error}" if self.error else ""
        return f"{self.name}: expected {self.expect_status}, got {self.status}{took}{detail}"


@dataclass(frozen=True)
class GateVerdict:
    """The gate's verdict with every check (readiness, smoke, intervals) that led to it."""

    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    intervals: tuple[IntervalVerdict, ...] = ()
    smoke: tuple[SmokeResult, ...] = ()

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def values(self) -> dict[str, float | None]:
        """Every measured value by check name (``interval 1 error_rate``, ``smoke GET /``, ...)."""
        return {c.name: c.value for c in self.checks}


@dataclass(frozen=True)
class EarlyStop:
    """Whether the gate can stop evaluating intervals now."""

    stop: bool
    reason: str


@dataclass(frozen=True)
class BreachVerdict:
    """The post-switch monitor's reading of one interval of the live colour."""

    status: BreachStatus
    reason: str
    checks: tuple[Check, ...]

    @property
    def breached(self) -> bool:
        return self.status == "breach"


def error_rate(errors: float | None, requests: float | None) -> float | None:
    """``errors / requests`` clamped to [0, 1]; None without requests."""
    if requests is None or requests <= 0:
        return None
    return min(1.0, max(0.0, (errors or 0.0) / requests))


def evaluate_interval(candidate: Sample, live: Sample | None, cfg: GateConfig) -> IntervalVerdict:
    """The verdict on one interval of the candidate, against ``cfg`` and the ``live`` colour."""
    enough = _requests_check("requests", candidate, cfg)
    if not enough.ok:
        return IntervalVerdict("inconclusive", enough.reason, (enough,), candidate, live)
    absolute = [enough, *_absolute_checks(candidate, cfg)]
    relative = _relative_checks(candidate, live, cfg)
    checks = (*absolute, *relative)
    failed = [c.reason for c in checks if c.ok is False]
    if failed:
        return IntervalVerdict("fail", "; ".join(failed), checks, candidate, live)
    missing = [c.reason for c in absolute if c.ok is None]
    if missing:
        return IntervalVerdict("inconclusive", "; ".join(missing), checks, candidate, live)
    return IntervalVerdict("pass", "; ".join(c.reason for c in checks), checks, candidate, live)


def should_stop_early(intervals: Sequence[IntervalVerdict]) -> EarlyStop:
    """Stop as soon as one interval failed: more intervals cannot turn the gate into a pass."""
    for i, iv in enumerate(intervals, 1):
        if iv.verdict == "fail":
            return EarlyStop(True, f"stopping early: interval {i} failed: {iv.reason}")
    return EarlyStop(False, f"no interval failed ({len(intervals)} evaluated)")


def decide_gate(
    intervals: Sequence[IntervalVerdict],
    smoke: Sequence[SmokeResult],
    readiness: Readiness | Sequence[Readiness],
    cfg: GateConfig,
) -> GateVerdict:
    """The gate's verdict: fail on any failure, pass only when everything required passed.

    Pass needs at least ``cfg.intervals`` passed intervals and no failed one, at least
    ``cfg.smoke_probes`` smoke results all ok, and every readiness available (rollout) or
    all ready (endpoints). Otherwise inconclusive, naming what is missing.
    """
    ready_list = [readiness] if isinstance(readiness, Readiness) else list(readiness)
    ready_checks = [_readiness_check(r) for r in ready_list]
    checks = [*ready_checks, *(_smoke_check(p) for p in smoke)]
    for i, iv in enumerate(intervals, 1):
        checks += [_renamed(c, f"interval {i} {c.name}") for c in iv.checks]
    record = (tuple(checks), tuple(intervals), tuple(smoke))

    failures = [f"{c.name}: {c.reason}" for c in ready_checks if c.ok is False]
    failures += [f"smoke probe {p.reason}" for p in smoke if not p.ok]
    failures += [f"interval {i}: {iv.reason}" for i, iv in enumerate(intervals, 1) if iv.verdict == "fail"]
    if failures:
        return GateVerdict("fail", "; ".join(failures), *record)

    missing = [f"{c.name}: {c.reason}" for c in ready_checks if not c.ok]
    if not ready_checks:
        missing.append("no readiness was assessed")
    if len(smoke) < cfg.smoke_probes:
        missing.append(f"only {len(smoke)} of {cfg.smoke_probes} smoke probes ran")
    passed = sum(iv.verdict == "pass" for iv in intervals)
    if passed < cfg.intervals:
        unclear = [f"interval {i}: {iv.reason}" for i, iv in enumerate(intervals, 1) if iv.verdict != "pass"]
        detail = f" ({'; '.join(unclear)})" if unclear else ""
        missing.append(f"{passed}/{cfg.intervals} intervals passed{detail}")
    if missing:
        return GateVerdict("inconclusive", "; ".join(missing), *record)
    plural = "s" if len(smoke) != 1 else ""
    summary = [c.reason for c in ready_checks]
    summary += [f"{len(smoke)} smoke probe{plural} passed", f"{passed} intervals passed"]
    return GateVerdict("pass", "; ".join(summary), *record)


def check_breach(sample: Sample, cfg: GateConfig) -> BreachVerdict:
    """Whether the live colour breaches the absolute thresholds in this interval.

    Too little data is ``no-data`` (neither ok nor breach: the profile decides what it means
    during the bake); a latency percentile without data is also ``no-data``.
    """
    enough = _requests_check("requests", sample, cfg)
    if not enough.ok:
        return BreachVerdict("no-data", enough.reason, (enough,))
    checks = (enough, *_absolute_checks(sample, cfg))
    breached = [c.reason for c in checks if c.ok is False]
    if breached:
        return BreachVerdict("breach", "; ".join(breached), checks)
    missing = [c.reason for c in checks if c.ok is None]
    if missing:
        return BreachVerdict("no-data", "; ".join(missing), checks)
    return BreachVerdict("ok", "; ".join(c.reason for c in checks), checks)


# --- checks -------------------------------------------------------------------------------------


def _requests_check(name: str, sample: Sample, cfg: GateConfig) -> Check:
    n = sample.requests
    if n is None or n <= 0:
        return Check(name, n, cfg.min_requests, False, "no data: no requests in the interval")
    if n < cfg.min_requests:
        return Check(
            name, n, cfg.min_requests, False, f"too little data: {n:g} < {cfg.min_requests:g} requests"
        )
    return Check(name, n, cfg.min_requests, True, f"{n:g} requests")


def _absolute_checks(sample: Sample, cfg: GateConfig) -> list[Check]:
    rate = error_rate(sample.errors, sample.requests)
    limit = cfg.max_error_rate
    ok = rate is not None and rate <= limit
    checks = [
        Check("error_rate", rate, limit, ok, f"error rate {_pct(rate)} {'≤' if ok else '>'} {_pct(limit)}")
    ]
    for percentile, max_ms in cfg.latency_limits:
        name, value = f"p{percentile}_ms", sample.latency(percentile)
        if value is None:
            checks.append(Check(name, None, max_ms, None, f"no p{percentile} latency data"))
            continue
        ok = value <= max_ms
        reason = f"p{percentile} {value:.0f} ms {'≤' if ok else '>'} {max_ms:g} ms"
        checks.append(Check(name, value, max_ms, ok, reason))
    return checks


def _relative_checks(candidate: Sample, live: Sample | None, cfg: GateConfig) -> list[Check]:
    """Candidate against the live colour; skipped (ok None, reason said) without enough live data."""
    if live is None:
        return [
            Check("live_requests", None, cfg.min_requests, None, "relative checks skipped: no live sample")
        ]
    enough = _requests_check("live_requests", live, cfg)
    if not enough.ok:
        reason = f"relative checks skipped: live colour has {enough.reason}"
        return [Check("live_requests", live.requests, cfg.min_requests, None, reason)]
    cand_rate = error_rate(candidate.errors, candidate.requests) or 0.0
    live_rate = error_rate(live.errors, live.requests) or 0.0
    limit = live_rate + cfg.max_error_rate_increase
    ok = cand_rate <= limit
    checks = [
        enough,
        Check(
            "error_rate_vs_live",
            cand_rate,
            limit,
            ok,
            f"error rate {_pct(cand_rate)} {'≤' if ok else '>'} live {_pct(live_rate)} "
            f"+ {cfg.max_error_rate_increase * 100:.2f} points",
        ),
    ]
    for percentile, _ in cfg.latency_limits:
        checks.append(_latency_vs_live(percentile, candidate, live, cfg))
    return checks


def _latency_vs_live(percentile: int, candidate: Sample, live: Sample, cfg: GateConfig) -> Check:
    name = f"p{percentile}_vs_live"
    cand, base = candidate.latency(percentile), live.latency(percentile)
    if cand is None or base is None:
        side = "candidate" if cand is None else "live colour"
        return Check(
            name, cand, None, None, f"p{percentile} vs live skipped: {side} has no p{percentile} data"
        )
    limit = max(base, cfg.latency_ratio_floor_ms) * cfg.max_latency_ratio
    ok = cand <= limit
    reason = (
        f"p{percentile} {cand:.0f} ms {'≤' if ok else '>'} {cfg.max_latency_ratio:g} × live {base:.0f} ms"
        + (f" (floor {cfg.latency_ratio_floor_ms:g} ms)" if base < cfg.latency_ratio_floor_ms else "")
    )
    return Check(name, cand, limit, ok, reason)


def _readiness_check(r: Readiness) -> Check:
    if isinstance(r, RolloutAssessment):
        ok = None if r.phase == "progressing" else r.phase == "available"
        return Check("rollout", float(r.available), float(r.desired), ok, r.reason)
    return Check("endpoints", float(r.ready), float(r.expected), r.all_ready or None, r.summary)


def _smoke_check(s: SmokeResult) -> Check:
    value = float(s.status) if s.status is not None else None
    return Check(f"smoke {s.name}", value, float(s.expect_status), s.ok, s.reason)


def _renamed(c: Check, name: str) -> Check:
    return Check(name, c.value, c.limit, c.ok, c.reason)


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.2f}%"
