"""The health gate: is a colour of an app fit to take traffic? Verdict pass, fail or inconclusive.

:func:`run_gate` is a plain function composed of tasks, callable inside any flow (the release
calls it per app); :func:`health_gate` is the standalone flow (``greenlight gate ENV``). In order:

1. readiness: the colour's Deployment and pods (``assess_rollout``) and the endpoints of the
   Service that selects the colour (``endpoint_readiness``);
2. smoke probes through that Service;
3. metric analysis under synthetic traffic, the same for the candidate (through its Service)
   and for the baseline, the live colour (through the live Service), so that a quiet
   environment is measured too: contiguous intervals of ``gate.interval_s`` from the next whole
   second; each is read once it closed plus ``monitoring.ingestion_delay_s``, both colours over
   the same window, and judged by ``evaluate_interval`` (absolute limits on the interval,
   relative checks on the intervals so far pooled); the gate stops at the first failed
   interval, once ``gate.intervals`` passed, or when more than ``gate.max_extra_intervals``
   were inconclusive;
4. ``decide_gate`` over all of it, every value and limit kept.

Fail closed: no data, too little data, or a Monitoring outage (recorded with its reason as an
inconclusive interval) can never pass.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect import flow, task
from prefect.futures import PrefectFuture

from greenlight.core.gate import (
    Check,
    GateConfig,
    GateVerdict,
    IntervalVerdict,
    Readiness,
    Sample,
    SmokeResult,
    decide_gate,
    evaluate_interval,
    pool,
    should_stop_early,
)
from greenlight.core.rollout import RolloutAssessment
from greenlight.core.switch import EndpointReadiness
from greenlight.errors import GateFailed, GreenlightError, InputInvalid
from greenlight.settings import Profile, load_profile
from greenlight.tasks.evidence import Progress, publish_report
from greenlight.tasks.gate import read_readiness, service_colours
from greenlight.tasks.metrics import gate_config, publish_gauge, sample_colour
from greenlight.tasks.policy import FRESH, logger
from greenlight.tasks.probes import SyntheticTraffic, Target, smoke

__all__ = [
    "analyse",
    "health_gate",
    "read_readiness",
    "render_gate_markdown",
    "run_gate",
    "service_colours",
    "verdict_dict",
]


def _utcnow() -> datetime:
    return datetime.now(UTC)


# --- the gate ---------------------------------------------------------------------------------


def _with_reason(verdict: GateVerdict, note: str, check: Check) -> GateVerdict:
    """``verdict`` with ``note`` put before its reason and ``check`` on its record."""
    return dataclasses.replace(verdict, reason=f"{note}; {verdict.reason}", checks=(check, *verdict.checks))


def _untargetable(app: str, colour: str, colours: dict[str, str | None]) -> GateVerdict:
    reason = (
        f"no Service of {app} selects colour {colour!r} (live selects {colours.get('live')!r}, "
        f"preview {colours.get('preview')!r}): nothing to probe"
    )
    return GateVerdict("inconclusive", reason, (Check("target", None, None, None, reason),))


def _outage_interval(window: tuple[datetime, datetime], error: GreenlightError) -> IntervalVerdict:
    reason = f"Monitoring unavailable: {error}"
    start, end = window
    sample = Sample(requests=None, start=start.timestamp(), end=end.timestamp())
    return IntervalVerdict("inconclusive", reason, (Check("monitoring", None, None, None, reason),), sample)


def _traffic_check(traffic: SyntheticTraffic, candidate: bool) -> Check:
    """The synthetic traffic sent during the intervals, for the record (not a criterion)."""
    to = f"{traffic.target} Service"
    reason = (
        f"synthetic traffic to the {to} {traffic.rps:g} rps: {traffic.sent} sent, "
        f"{traffic.failed} without answer or 5xx"
        + (f", {traffic.skipped} skipped (target too slow)" if traffic.skipped else "")
    )
    name = "synthetic sent" if candidate else "baseline synthetic sent"
    return Check(name, float(traffic.sent), None, None, reason)


def _is_ready(r: Readiness) -> bool:
    return r.phase == "available" if isinstance(r, RolloutAssessment) else r.all_ready


def _sleep_until(at: datetime, now: Callable[[], datetime]) -> None:
    delay = (at - now()).total_seconds()
    if delay > 0:
        time.sleep(delay)


def analyse(
    profile: Profile,
    app: str,
    colour: str,
    live_colour: str | None,
    cfg: GateConfig,
    now: Callable[[], datetime] = _utcnow,
    traffic: dict[str, SyntheticTraffic] | None = None,
    no_baseline: str = "no other colour is live",
) -> list[IntervalVerdict]:
    """Evaluate contiguous intervals of ``colour`` against the baseline ``live_colour`` until decided.

    Each interval reads both colours over the same window; the relative checks judge the
    intervals so far pooled (more requests, a surer test). ``traffic`` (colour -> the synthetic
    traffic it gets) lets each sample say how many of its requests were synthetic. Stops at the
    first failed interval, when ``cfg.intervals`` passed, or when more than
    ``gate.max_extra_intervals`` were inconclusive. A Monitoring outage that outlasts the task's
    retries is an inconclusive interval carrying the error.
    """
    gate, delay = profile.gate, timedelta(seconds=profile.monitoring.ingestion_delay_s)
    step = timedelta(seconds=gate.interval_s)
    first = now()
    origin = first.replace(microsecond=0) + timedelta(seconds=1 if first.microsecond else 0)
    log = logger()
    out: list[IntervalVerdict] = []
    seen: list[tuple[Sample, Sample]] = []
    progress = Progress(
        f"gate {app} ({colour}): {cfg.intervals} passing interval(s) of {gate.interval_s:g} s needed"
    )

    def read(which: str, start: datetime, end: datetime) -> Sample:
        sample = sample_colour(profile, app, which, start, end)
        sender = (traffic or {}).get(which)
        if sender is None or sample.requests is None:
            return sample
        return dataclasses.replace(sample, synthetic=float(sender.sent_between(start, end)))

    while True:
        start = origin + step * len(out)
        end = start + step
        _sleep_until(end + delay, now)
        try:
            candidate = read(colour, start, end)
            live = read(live_colour, start, end) if live_colour else None
            if live is not None:
                seen.append((candidate, live))
            pooled_with = (pool([c for c, _ in seen]), pool([b for _, b in seen])) if seen else None
            verdict = evaluate_interval(candidate, live, cfg, pooled_with, no_baseline)
        except GreenlightError as e:
            verdict = _outage_interval((start, end), e)
        out.append(verdict)
        log.info("gate %s %s interval %d: %s: %s", app, colour, len(out), verdict.verdict, verdict.reason)
        passed = sum(iv.verdict == "pass" for iv in out)
        unclear = sum(iv.verdict == "inconclusive" for iv in out)
        done = should_stop_early(out).stop or passed >= cfg.intervals or unclear > gate.max_extra_intervals
        progress.update(
            cfg.intervals if done else passed, cfg.intervals,
            f"gate {app} ({colour}): interval {len(out)} judged {verdict.verdict} ({passed} of "
            f"{cfg.intervals} passed{', decided' if done else ''}): {verdict.reason}",
        )  # fmt: skip
        if done:
            return out


def run_gate(
    profile: Profile,
    app: str,
    colour: str,
    *,
    readiness: RolloutAssessment | EndpointReadiness | Sequence[Readiness] | None = None,
    now: Callable[[], datetime] = _utcnow,
) -> GateVerdict:
    """The health gate of ``app``'s ``colour``: readiness, smoke probes, metric intervals, verdict.

    ``readiness`` given (e.g. by the release, which just waited for the rollout) is used as is;
    otherwise it is read from the cluster. The colour is probed through whichever of the app's
    Services selects it (the preview Service normally); the live colour for the relative checks
    is the one the live Service selects (none when that is the candidate itself). Returns the
    verdict with every value and limit; never raises for what it measured.
    """
    cfg = gate_config(profile)
    log = logger()
    colours = service_colours(profile, app)
    if colours["preview"] == colour:
        target: Target = "preview"
    elif colours["live"] == colour:
        target = "live"
    else:
        verdict = _untargetable(app, colour, colours)
        log.warning("gate %s %s: %s", app, colour, verdict.reason)
        return verdict
    live_colour = colours["live"] if colours["live"] != colour else None
    no_baseline = (
        f"the live Service selects {colour} itself" if colours["live"] == colour else "no colour is live"
    )

    ready = read_readiness(profile, app, colour, target) if readiness is None else readiness
    ready_list = [ready] if isinstance(ready, Readiness) else list(ready)
    if not all(_is_ready(r) for r in ready_list):  # not ready: probing could only mislead
        verdict = decide_gate([], [], ready_list, cfg)
        log.warning("gate %s %s: %s: %s", app, colour, verdict.verdict, verdict.reason)
        return verdict

    smoke_note: str | None = None
    try:
        probes: list[SmokeResult] = smoke(profile, app, target)
    except GreenlightError as e:
        probes, smoke_note = [], f"smoke probes could not run: {e}"

    intervals: list[IntervalVerdict] = []
    senders: dict[str, SyntheticTraffic] = {}
    if smoke_note is None and all(p.ok for p in probes):  # a failed probe fails the gate: skip metrics
        with ExitStack() as stack:
            # the baseline gets the same synthetic traffic in the same windows (a quiet live
            # colour is measured too), so the comparison is like for like
            senders[colour] = stack.enter_context(SyntheticTraffic(profile, app, target))
            if live_colour and cfg.relative:
                senders[live_colour] = stack.enter_context(
                    SyntheticTraffic(profile, app, "live", colour=live_colour)
                )
            intervals = analyse(profile, app, colour, live_colour, cfg, now, senders, no_baseline)

    verdict = decide_gate(intervals, probes, ready_list, cfg)
    if smoke_note:
        verdict = _with_reason(verdict, smoke_note, Check("smoke", None, None, None, smoke_note))
    extra = [_traffic_check(t, c == colour) for c, t in senders.items() if t.rps > 0]
    if extra:
        verdict = dataclasses.replace(verdict, checks=(*verdict.checks, *extra))
    log.info("gate %s %s: %s: %s", app, colour, verdict.verdict, verdict.reason)
    return verdict


# --- the record -------------------------------------------------------------------------------


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.4g}"


def _ok(ok: bool | None) -> str:
    return {True: "ok", False: "FAIL", None: "—"}[ok]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_gate_markdown(env: str, verdicts: dict[str, GateVerdict]) -> str:
    """A markdown report: per app the verdict, its reason and a table of every check."""
    lines = [f"# Health gate: {env}", ""]
    lines += ["| app | verdict | reason |", "|---|---|---|"]
    lines += [f"| {app} | **{v.verdict}** | {_cell(v.reason)} |" for app, v in sorted(verdicts.items())]
    for app, v in sorted(verdicts.items()):
        lines += ["", f"## {app}: {v.verdict}", "", _cell(v.reason), ""]
        lines += ["| check | value | limit | result | detail |", "|---|---|---|---|---|"]
        lines += [
            f"| {_cell(c.name)} | {_fmt(c.value)} | {_fmt(c.limit)} | {_ok(c.ok)} | {_cell(c.reason)} |"
            for c in v.checks
        ]
    return "\n".join(lines) + "\n"


def verdict_dict(v: GateVerdict) -> dict[str, Any]:
    """A JSON-friendly form of a verdict (flow results, CLI output)."""

    def sample(s: Sample | None) -> dict[str, Any] | None:
        if s is None:
            return None
        latency = {f"p{p}": s.latency(p) for p in sorted({*s.latency_ms, 50, 95, 99})}
        h = s.histogram
        return {
            "requests": s.requests,
            "synthetic": s.synthetic,
            "user": s.user,
            "errors": s.errors,
            "latency_ms": latency,
            "histogram_ms": None if h is None else {"bounds": list(h.bounds), "counts": list(h.counts)},
            "start": s.start,
            "end": s.end,
        }

    return {
        "verdict": v.verdict,
        "reason": v.reason,
        "checks": [dataclasses.asdict(c) for c in v.checks],
        "smoke": [{**dataclasses.asdict(s), "ok": s.ok} for s in v.smoke],
        "intervals": [
            {
                "verdict": iv.verdict,
                "reason": iv.reason,
                "candidate": sample(iv.candidate),
                "live": sample(iv.live),
                "absolute_only": iv.absolute_only,
                "checks": [dataclasses.asdict(c) for c in iv.checks],
            }
            for iv in v.intervals
        ],
    }


# --- the standalone flow ----------------------------------------------------------------------


@task(name="gate-app", **FRESH)
def gate_app(profile: Profile, app: str, colour: str) -> tuple[str, GateVerdict]:
    """Resolve ``colour`` ("preview", "live" or a name) for ``app`` and run its gate."""
    resolved = colour
    if colour in ("preview", "live"):
        resolved = service_colours(profile, app)[colour] or ""
        if not resolved:
            reason = f"the {colour} Service of {app} selects no '{profile.release.colour_label}'"
            return colour, GateVerdict("inconclusive", reason, (Check("target", None, None, None, reason),))
    elif colour not in profile.release.colours:
        known = ", ".join(profile.release.colours)
        raise InputInvalid(f"colour {colour!r} is neither 'preview', 'live' nor one of {known}")
    return resolved, run_gate(profile, app, resolved)


@flow(name="health-gate")
def health_gate(environment: str, app: str | None = None, colour: str = "preview") -> dict[str, Any]:
    """Gate ``colour`` of every app of ``environment`` (or just ``app``), in parallel.

    ``colour``: "preview" (the colour the preview Service selects), "live", or a colour name.
    Publishes the markdown artifact ``health-gate-<environment>`` and a ``gate/passed`` gauge per
    app; returns ``{app: verdict dict}``; raises GateFailed naming every app that did not pass.
    """
    profile = load_profile(environment)
    apps = [profile.app(app).name] if app else [a.name for a in profile.apps]
    futures: dict[str, PrefectFuture[tuple[str, GateVerdict]]] = {
        name: gate_app.submit(profile, name, colour) for name in apps
    }
    verdicts: dict[str, GateVerdict] = {}
    resolved: dict[str, str] = {}
    for name, fut in futures.items():
        resolved[name], verdicts[name] = fut.result()
    publish_report(
        f"health-gate-{environment}",
        render_gate_markdown(environment, verdicts),
        f"health gate of {environment}: "
        + ", ".join(f"{a} {v.verdict}" for a, v in sorted(verdicts.items())),
    )
    for name, v in verdicts.items():
        labels = {"environment": environment, "app": name, "colour": resolved[name]}
        publish_gauge(profile, "gate/passed", 1.0 if v.passed else 0.0, labels)
    result = {name: {"colour": resolved[name], **verdict_dict(v)} for name, v in verdicts.items()}
    failed = {name: v for name, v in verdicts.items() if not v.passed}
    if failed:
        detail = "; ".join(f"{name} {v.verdict}: {v.reason}" for name, v in sorted(failed.items()))
        error = GateFailed(
            f"health gate of {environment} did not pass for {', '.join(sorted(failed))}: {detail}"
        )
        error.verdicts = result  # the CLI prints every interval's values of a failed gate too
        raise error
    return result
