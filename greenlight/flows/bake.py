"""The bake: watch the switched colours in sliding windows, and roll back on breach."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.core.gate import BakeJudgement, check_breach
from greenlight.core.switch import RollbackStep
from greenlight.errors import GreenlightError, TransientError
from greenlight.flows.concurrency import parallel, traffic_lock
from greenlight.flows.journal import RunJournal
from greenlight.settings import Profile
from greenlight.tasks.evidence import Progress
from greenlight.tasks.kube import rollback_app, scale_colour
from greenlight.tasks.metrics import gate_config, read_sample
from greenlight.tasks.probes import SyntheticTraffic

WINDOW_STEPS = 4  # the bake judges a full analysis interval's window every interval / WINDOW_STEPS


def watch(
    profile: Profile,
    colours: dict[str, str],
    seconds: float,
    on_interval: Callable[[str, str], None] | None = None,
) -> BakeJudgement:
    """Watch each app's live ``colour`` for ``seconds``, judging sliding windows one analysis
    interval long, a new one every interval / WINDOW_STEPS.

    Each window is read once it has closed and its points can be read (the profile's ingestion
    delay). Sliding windows matter for the time to react: a breach that begins late in a fixed
    interval can stay under the thresholds there and show only in the next one (about two
    intervals); a sliding window crosses the threshold soon after the onset. Returns status
    ``ok``, ``breach`` at the first breaching window, or ``no-data`` when a window has no data
    and the profile says to roll back on that; with how many windows were judged and why the
    others were not. Synthetic traffic keeps the live colour measurable where it gets none of
    its own (through the live Service; with an HTTPRoute, to the watched colour's own Service).
    """
    with ExitStack() as stack:
        for app in colours:
            stack.enter_context(SyntheticTraffic(profile, app, "live", colour=colours[app]))
        return _watch_windows(profile, colours, seconds, on_interval)


def _watch_windows(
    profile: Profile, colours: dict[str, str], seconds: float, on_interval: Callable[[str, str], None] | None
) -> BakeJudgement:
    cfg = gate_config(profile)
    interval = profile.gate.interval_s
    step = interval / WINDOW_STEPS
    delay = profile.monitoring.ingestion_delay_s
    # the first window starts at the next whole second after the synthetic traffic began:
    # Monitoring counts requests by scrape, and a window that began with the traffic would hold
    # part of a scrape interval's requests (too little data to judge)
    started = datetime.now(UTC)
    t0 = started.replace(microsecond=0) + timedelta(seconds=1 if started.microsecond else 0)
    last_end = t0 + timedelta(seconds=max(seconds, interval))
    alerted: set[str] = set()
    n = windows = judged = 0
    unjudged: list[str] = []
    w_end = t0 + timedelta(seconds=interval)
    planned = 1 + round(max(0.0, (last_end - w_end).total_seconds()) / step)
    progress = Progress(f"bake: {planned} window(s) of {interval:g} s to judge on {', '.join(colours)}")
    while True:
        w_start = w_end - timedelta(seconds=interval)
        n += 1
        time.sleep(max(0.0, (w_end - datetime.now(UTC)).total_seconds() + delay))
        left = max(0.0, (last_end - w_end).total_seconds())
        progress.update(n, planned, f"bake: window {n} of {planned} ({left:.0f} s of watching left)")

        def judge(
            item: tuple[str, str], w: tuple[datetime, datetime] = (w_start, w_end)
        ) -> tuple[str, Any, str]:
            app, colour = item
            where = f"{app} ({colour}) window {w[0]:%H:%M:%S}-{w[1]:%H:%M:%S}"
            try:
                verdict = check_breach(_sample_quietly(profile, app, colour, *w), cfg)
                return app, verdict, f"{where}: {verdict.reason}"
            except GreenlightError as e:
                return app, None, f"{where}: monitoring unavailable: {e}"

        for app, verdict, reason in parallel(judge, list(colours.items())):
            windows += 1
            if verdict is not None and verdict.breached:
                progress.update(n, planned, f"bake: breach in window {n}: {reason}")
                return BakeJudgement("breach", reason, windows, judged + 1, tuple(unjudged))
            if verdict is not None and verdict.status == "ok":
                judged += 1
                continue
            unjudged.append(reason)
            if profile.release.on_bake_data_loss == "rollback":
                return BakeJudgement("no-data", reason, windows, judged, tuple(unjudged))
            if app not in alerted and on_interval:
                on_interval(app, f"alert (keeping traffic, as the profile says): {reason}")
            alerted.add(app)
        if w_end >= last_end:
            break
        # the next window, or the newest readable one if judging fell behind (a slow or failing
        # Monitoring): the bake goes on from the present rather than judging stale windows late
        # (when it fell behind by more than an interval, the time in between is not judged)
        readable = datetime.now(UTC) - timedelta(seconds=delay)
        nxt = min(last_end, max(w_end + timedelta(seconds=step), readable))
        if nxt - w_end > timedelta(seconds=interval):
            unjudged.append(
                f"{w_end:%H:%M:%S}-{nxt - timedelta(seconds=interval):%H:%M:%S}: skipped (judging fell behind)"
            )
        w_end = nxt
    detail = f"{n} window(s) of {interval:g} s, one every {step:g} s, without breach"
    progress.update(planned, planned, f"bake: {detail}")
    return BakeJudgement("ok", detail, windows, judged, tuple(unjudged))


def _sample_quietly(profile: Profile, app: str, colour: str, start: datetime, end: datetime) -> Any:
    """``sample_colour`` without a task run of its own: the bake reads a window per app several
    times per interval, and a Prefect task run each (state changes, events) made a 20-app bake
    three times slower. Same retries as the task: two quick ones on a transient error."""
    for delay in (0.5, 1.0, None):
        try:
            return read_sample(profile, app, colour, start, end)
        except TransientError:
            if delay is None:
                raise
            time.sleep(delay)
    raise AssertionError("unreachable")


def rollback_all(rel: RunJournal, apps: Iterable[str], reason: str) -> list[RollbackStep]:
    """Roll every app back in parallel, under the environment's traffic lock."""
    with traffic_lock(rel.profile):
        return parallel(lambda app: rollback_app(rel.profile, app, reason), list(apps))


def retire_failing(rel: RunJournal, failing: dict[str, str], steps: list[RollbackStep]) -> None:
    """After a rollback on breach, scale each app's failing colour (``failing``: app -> colour) down.

    Callers' kept-alive connections stay on the pods they connected to (kubernetes#46753), so the
    failing colour would go on failing them after traffic moved; the rollback has already waited
    for the data plane (no new connection reaches those pods), their preStop keeps them serving
    meanwhile, and each caller's next request on a closed connection moves to the restored colour.
    """
    with traffic_lock(rel.profile):
        for (app, colour), st in zip(failing.items(), steps, strict=True):
            if st.action == "switch" and st.to_colour != colour:
                rel.step(f"{app}: retire {colour}", "ok", scale_colour(rel.profile, app, colour, 0))


def step_lines(steps: Iterable[RollbackStep]) -> list[str]:
    return [f"{s.service}: {s.action}: {s.reason}" for s in steps]
