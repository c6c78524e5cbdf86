"""The health gate's metric analysis and verdict, and the post-switch breach check. Pure.

Per analysis interval the gate compares the candidate colour (reached through the preview
Service) with thresholds and with the live colour (:func:`evaluate_interval`); the verdict
(:func:`decide_gate`) also weighs rollout and endpoint readiness and the smoke probes. Every
measured value and limit is kept as a :class:`Check`, so the release report shows why.

Rules (Flagger and Argo Rollouts users' complaints in mind: "no data" must never pass):

- fewer than ``min_requests`` in an interval (or no series at all) makes it inconclusive;
- error rate above ``max_error_rate``, or a latency percentile above its limit, fails it;
- relative to the baseline (the live colour, given the same synthetic traffic in the same
  window): the candidate is worse when its error rate exceeds the baseline's by more than
  ``max_error_rate_increase``, or a latency percentile exceeds ``max_latency_ratio`` times the
  baseline's (taken as at least ``latency_ratio_floor_ms``, so that 1 ms against 2 ms is not a
  regression), *and* a test says so with ``confidence``: Fisher's exact test for errors,
  Mann-Whitney and a tail test for latency, on the requests of all the intervals so far pooled
  (:mod:`greenlight.core.stats`). The confidence holds for the whole gate: each test is held to
  ``(1 - confidence) / (max_looks x relative checks)``. Worse and significant fails the
  interval. An error rate worse but not yet significant makes it inconclusive (the gate looks
  again with more data, and fails closed if it never becomes sure), as does a baseline with
  fewer than ``min_requests`` requests; a latency the tests cannot tell from the baseline's is no
  evidence of a regression (every request measures latency; interpolated percentiles in coarse
  buckets swing more than the tests do). Only an
  explicit ``relative=False`` or the absence of any other live colour judges on absolute limits
  alone, and the verdict says so;
- the gate fails at once on any failed interval, smoke probe or failed rollout; it passes only
  with ``intervals`` passed intervals, every expected smoke probe passed and readiness complete;
  anything else is inconclusive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from greenlight.core.rollout import RolloutAssessment
from greenlight.core.stats import Histogram, fisher_greater, latency_p_value, pooled
from greenlight.core.switch import EndpointReadiness

Verdict = Literal["pass", "fail", "inconclusive"]
BreachStatus = Literal["breach", "ok", "no-data"]
Readiness = RolloutAssessment | EndpointReadiness


@dataclass(frozen=True)
class Sample:
    """One colour's traffic over one interval.

    ``requests`` is None when the metric query returned no series (no data); ``errors`` counts
    5xx responses (no series means none); ``latency_ms`` maps a percentile (50, 95, 99) to
    milliseconds, a missing percentile or None meaning no data; ``histogram`` is the window's
    latency distribution (what relative checks test). ``synthetic``: how many of the requests
    Greenlight's synthetic traffic sent (None: unknown); the rest came from users.
    ``start``/``end`` (epoch seconds) are kept for the record only.
    """

    requests: float | None
    errors: float = 0.0
    latency_ms: Mapping[int, float | None] = field(default_factory=dict)
    start: float | None = None
    end: float | None = None
    histogram: Histogram | None = None
    synthetic: float | None = None

    def latency(self, percentile: int) -> float | None:
        """The ``percentile`` latency in ms, or None without data."""
        value = self.latency_ms.get(percentile)
        if value is None and self.histogram is not None:
            return self.histogram.quantile(percentile / 100.0)
        return value

    @property
    def user(self) -> float | None:
        """Requests that did not come from the synthetic traffic (None when unknown)."""
        if self.requests is None or self.synthetic is None:
            return None
        return max(0.0, self.requests - self.synthetic)


def pool(samples: Sequence[Sample]) -> Sample:
    """The samples' requests together, as one window: counts added, histograms added, latency
    percentiles read from the pooled histogram (None without one). No data when none had any."""
    with_data = [x for x in samples if x.requests is not None]
    if not with_data:
        return Sample(requests=None)
    synthetic = [x.synthetic for x in with_data]
    return Sample(
        requests=sum(x.requests or 0.0 for x in with_data),
        errors=sum(x.errors for x in with_data),
        start=min((x.start for x in with_data if x.start is not None), default=None),
        end=max((x.end for x in with_data if x.end is not None), default=None),
        histogram=pooled(x.histogram for x in with_data),
        synthetic=None if None in synthetic else sum(s or 0.0 for s in synthetic),
    )


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
    relative: bool = True  # False: absolute limits only (the profile's gate.relative: off)
    confidence: float = 0.98  # a relative regression fails the gate only when this sure
    # how many times a gate may look (intervals + tolerated inconclusive ones): the confidence
    # holds for the whole gate, so each test is held to (1 - confidence) / (looks x checks)
    max_looks: int = 5


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
    """The verdict on one interval, with its checks and the samples behind them.

    ``live`` is the baseline's sample of the same window; ``absolute_only`` names why no
    relative check was made (None: they were).
    """

    verdict: Verdict
    reason: str
    checks: tuple[Check, ...]
    candidate: Sample
    live: Sample | None = None
    absolute_only: str | None = None


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


@dataclass(frozen=True)
class BakeJudgement:
    """What a bake (post-switch watch) judged: ``windows`` read per app, ``judged`` of them with
    data enough to judge, and why the others were not (Monitoring down, no data).

    ``status``: ``ok`` (no breach), ``breach`` or ``no-data`` (a window without data where the
    profile says to roll back on that). ``watched`` only when every window was judged: a bake
    that was not cannot count as proof that the release behaved.
    """

    status: Literal["ok", "breach", "no-data"]
    detail: str
    windows: int = 0
    judged: int = 0
    unjudged: tuple[str, ...] = ()

    @property
    def watched(self) -> bool:
        return self.windows > 0 and self.judged == self.windows and not self.unjudged

    def summary(self) -> str:
        """``judged 40 of 40 windows`` or ``judged 38 of 40 windows; not judged: ...``."""
        text = f"judged {self.judged} of {self.windows} window(s)"
        if self.unjudged:
            shown = "; ".join(self.unjudged[:3]) + (
                f"; and {len(self.unjudged) - 3} more" if len(self.unjudged) > 3 else ""
            )
            text += f"; not judged: {shown}"
        return text

    def record(self) -> dict[str, object]:
        """The form kept in the release record."""
        return {
            "watched": self.watched,
            "windows": self.windows,
            "judged": self.judged,
            "unjudged": list(self.unjudged[:10]),
        }


def error_rate(errors: float | None, requests: float | None) -> float | None:
    """``errors / requests`` clamped to [0, 1]; None without requests."""
    if requests is None or requests <= 0:
        return None
    return min(1.0, max(0.0, (errors or 0.0) / requests))


def evaluate_interval(
    candidate: Sample,
    live: Sample | None,
    cfg: GateConfig,
    pooled_with: tuple[Sample, Sample] | None = None,
    no_baseline: str = "no other colour is live",
) -> IntervalVerdict:
    """The verdict on one interval of the candidate, against ``cfg`` and the baseline ``live``.

    Absolute checks judge this interval; relative checks judge ``pooled_with`` (the candidate's
    and the baseline's intervals so far, this one included) when given, else this interval.
    ``live`` None: there is no baseline (``no_baseline`` says why) and the interval is judged
    on absolute limits only, as with ``cfg.relative`` off; the verdict names which.
    """
    enough = _requests_check("requests", candidate, cfg)
    if not enough.ok:
        return IntervalVerdict("inconclusive", enough.reason, (enough,), candidate, live)
    absolute = [enough, *_absolute_checks(candidate, cfg)]
    absolute_only = None
    relative: list[Check] = []
    if not cfg.relative:
        absolute_only = "gate.relative is off"
    elif live is None:
        absolute_only = no_baseline
    else:
        cand_pool, base_pool = pooled_with if pooled_with is not None else (candidate, live)
        relative = _relative_checks(live, cand_pool, base_pool, cfg)
    checks = (*absolute, *relative)
    record = (checks, candidate, live, absolute_only)
    failed = [c.reason for c in checks if c.ok is False]
    if failed:
        return IntervalVerdict("fail", "; ".join(failed), *record)
    missing = [c.reason for c in checks if c.ok is None]
    if missing:
        return IntervalVerdict("inconclusive", "; ".join(missing), *record)
    reason = "; ".join(c.reason for c in checks)
    if absolute_only:
        reason += f"; judged on absolute limits only: {absolute_only}"
    return IntervalVerdict("pass", reason, *record)


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
    basis = sorted({iv.absolute_only for iv in intervals if iv.absolute_only})
    summary += [f"judged on absolute limits only: {why}" for why in basis]
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


def _relative_checks(live: Sample, candidate: Sample, baseline: Sample, cfg: GateConfig) -> list[Check]:
    """The candidate against the baseline: ``live`` is the baseline's own interval (it must have
    enough requests), ``candidate``/``baseline`` what is compared (pooled intervals)."""
    enough = _requests_check("live_requests", live, cfg)
    if not enough.ok:
        reason = f"baseline (live colour) has {enough.reason}: cannot compare"
        return [Check("live_requests", live.requests, cfg.min_requests, None, reason)]
    enough = Check("live_requests", live.requests, cfg.min_requests, True, f"live {_mix(live)}")
    checks = [enough, _error_rate_vs_live(candidate, baseline, cfg)]
    for percentile, _ in cfg.latency_limits:
        checks.append(_latency_vs_live(percentile, candidate, baseline, cfg))
    return checks


def _mix(s: Sample) -> str:
    """``120 requests (100 synthetic, 20 from users)``, or ``120 requests`` when unknown."""
    text = f"{s.requests or 0:g} requests"
    if s.synthetic is not None and s.user is not None:
        text += f" ({s.synthetic:g} synthetic, {s.user:g} from users)"
    return text


def _alpha(cfg: GateConfig) -> float:
    """The p-value under which one relative check of one look fails: Bonferroni over the
    gate's looks and relative checks, so that a gate of a good release fails by chance at most
    ``1 - confidence`` of the time however often it looks."""
    checks = 1 + len(cfg.latency_limits)
    return (1.0 - cfg.confidence) / (max(1, cfg.max_looks) * checks)


def _significance(
    material: bool, p: float | None, cfg: GateConfig, worse: str, fine: str, unsure_passes: bool = False
) -> tuple[bool | None, str]:
    """ok and reason of a relative check: worse is a failure only when significant.

    Worse but not significant is inconclusive (more data, fail closed) unless ``unsure_passes``:
    latency, where every request is a measurement and the tests have the power to see a
    material shift, so what they cannot tell from noise is no evidence of a regression. Error
    rates are not so: only the few errors carry information, and a handful cannot be told from
    noise, so the gate keeps looking rather than pass them.
    """
    if not material:
        return True, fine
    if p is None:
        return None, f"{worse}, but the windows have no histogram to test it"
    if p < _alpha(cfg):
        return False, f"{worse} (p = {p:.2g} < {_alpha(cfg):.2g})"
    if unsure_passes:
        return (
            True,
            f"{worse} but not significant (p = {p:.2g} ≥ {_alpha(cfg):.2g}): no evidence of a regression",
        )
    return None, f"{worse}, not yet significant (p = {p:.2g} ≥ {_alpha(cfg):.2g}): more data needed"


def _error_rate_vs_live(candidate: Sample, baseline: Sample, cfg: GateConfig) -> Check:
    cand_rate = error_rate(candidate.errors, candidate.requests) or 0.0
    base_rate = error_rate(baseline.errors, baseline.requests) or 0.0
    limit = base_rate + cfg.max_error_rate_increase
    points = f"{cfg.max_error_rate_increase * 100:.2f} points"
    text = f"error rate {_pct(cand_rate)} {{op}} live {_pct(base_rate)} + {points}"
    p = fisher_greater(
        round(candidate.errors),
        round(candidate.requests or 0),
        round(baseline.errors),
        round(baseline.requests or 0),
    )
    ok, reason = _significance(cand_rate > limit, p, cfg, text.format(op=">"), text.format(op="≤"))
    return Check("error_rate_vs_live", cand_rate, limit, ok, reason)


def _latency_vs_live(percentile: int, candidate: Sample, baseline: Sample, cfg: GateConfig) -> Check:
    name = f"p{percentile}_vs_live"
    cand, base = candidate.latency(percentile), baseline.latency(percentile)
    if cand is None or base is None:
        side = "candidate" if cand is None else "baseline (live colour)"
        return Check(name, cand, None, None, f"p{percentile} vs live: the {side} has no p{percentile} data")
    limit = max(base, cfg.latency_ratio_floor_ms) * cfg.max_latency_ratio
    floor = f" (floor {cfg.latency_ratio_floor_ms:g} ms)" if base < cfg.latency_ratio_floor_ms else ""
    text = f"p{percentile} {cand:.0f} ms {{op}} {cfg.max_latency_ratio:g} × live {base:.0f} ms{floor}"
    p = None
    ch, bh = candidate.histogram, baseline.histogram
    if ch is not None and bh is not None:
        try:
            p = latency_p_value(ch, bh, percentile / 100.0)
        except ValueError:  # different bucket bounds: nothing to test
            p = None
    ok, reason = _significance(
        cand > limit, p, cfg, text.format(op=">"), text.format(op="≤"), unsure_passes=True
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
