"""Move every app of a release to its new colour, all or none (a Prefect transaction whose
rollback hooks return the apps already switched); with a progressive release (HTTPRoute,
``traffic.progressive``) step by step, the new colour judged at each step."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import Any

from prefect.transactions import transaction

from greenlight.core.release import AppPlan
from greenlight.core.switch import MOVED, Overlap, SwitchStep
from greenlight.core.traffic import ArrivalPhase
from greenlight.errors import GateFailed, ReleaseRefused, TransientError
from greenlight.flows.bake import watch
from greenlight.flows.concurrency import parallel, traffic_lock
from greenlight.flows.journal import RunJournal
from greenlight.settings import Profile, load_profile
from greenlight.tasks.kube import await_traffic, read_app_state, rollback_app, switch_service
from greenlight.tasks.policy import logger


def undo_switch(environment: str, app: str, release_id: str) -> Callable[[Any], None]:
    """The transaction rollback hook of one app's switch: return that app's live Service to where
    it was. Each hook knows its own app: a value set on the shared transaction would be read back
    as the last app's by every hook (Prefect 3.9: a child transaction's get falls through to the
    parent), undoing one app twice and leaving the others switched."""

    def undo(_txn: Any) -> None:
        profile = load_profile(environment)
        reason = f"compensating: release {release_id} failed to switch every app"
        for delay in (1.0, 2.0, None):  # a hook that raises is only logged: retry transient errors here
            try:
                if not _moved_by(profile, app, release_id):
                    logger().warning("%s: nothing of release %s to undo", app, release_id)
                    return
                step = rollback_app.fn(profile, app, reason)
                break
            except TransientError as e:
                if delay is None:
                    raise
                logger().warning("%s: undoing the switch failed (%s); retrying", app, e)
                time.sleep(delay)
        logger().warning("%s: switch undone: %s", app, step.reason)

    undo.__name__ = f"undo-switch-{app}"
    return undo


def _moved_by(profile: Profile, app: str, release_id: str) -> bool:
    """Does ``app``'s live traffic go (wholly, or in part mid-overlap) where release ``release_id``
    sent it? Only then may its compensation roll back: a rollback of anything else would move
    traffic to whatever the record names as previous (for a release stopped mid-overlap, that
    is the colour it was deploying to)."""
    snap = read_app_state.fn(profile, app).traffic
    if snap is None:
        return False
    overlap = snap.overlap
    if snap.selected is None and overlap is not None:
        return overlap.release_id == release_id
    return snap.release_id == release_id


def switch_all(rel: RunJournal, plans: tuple[AppPlan, ...], planned_rv: dict[str, str | None]) -> float:
    """Switch every app, then wait until every app's traffic has moved; if any switch or wait
    fails, the apps already switched are switched back (each by its own compensation hook).

    Each app's first move is guarded by what the release planned with (``planned_rv``: the
    snapshots' ``guard``), each later one by the record the move before it wrote, and
    all of them happen under the environment's traffic lock (so no rollback or cleanup
    interleaves). The patches are made one app after the other and the waits run in parallel, so
    that a release of many apps waits for the data plane once: overlap switches (see
    the router's mode, greenlight.tasks.routers) widen every app first, wait, then narrow every app.
    A progressive release (:func:`_progress`) moves every app through the profile's steps first.
    Returns when the last app's traffic was sent to the new colour (epoch seconds)."""
    profile = rel.profile

    hooked: set[str] = set()

    def switch(plan: AppPlan, overlap_awaited: bool = False, weight: int | None = None) -> SwitchStep:
        task = switch_service.with_options(name="switch-traffic")
        if plan.app not in hooked:  # one compensation per app, however many moves it makes
            task.on_rollback(undo_switch(profile.name, plan.app, rel.id))
            hooked.add(plan.app)
        # the first move is guarded by what the release planned with; each later one by the
        # record the one before it wrote (whoever moved traffic meanwhile makes it a Conflict)
        after = records.get(plan.app)
        expected = planned_rv.get(plan.app) if plan.app not in moved else None
        step = task(
            profile, plan.app, plan.target_colour, rel.id, {plan.app: plan.digest},
            expected_rv=expected, confirm=False, overlap_awaited=overlap_awaited, weight=weight, after=after,
        )  # fmt: skip
        moved.add(plan.app)
        if step.at is not None:
            rel.moved_traffic = True
        if step.action not in MOVED and step.action != "widen":
            raise ReleaseRefused(f"{plan.app}: {step.reason}")
        if step.action == "widen":
            records[plan.app] = Overlap(plan.live_colour or "", plan.target_colour, rel.id, weight)
        else:
            records.pop(plan.app, None)
        rel.step(f"{plan.app}: {step.action}", "ok", step.reason)
        return step

    def arrive(phase: ArrivalPhase, since: float) -> Callable[[AppPlan], str]:
        return lambda plan: await_traffic.fn(profile, plan.app, plan.target_colour, phase, since)

    moved: set[str] = set()
    records: dict[str, Overlap] = {}
    with traffic_lock(profile), transaction():
        began = time.time()
        progressed = _progress(rel, plans, switch)
        steps = {plan.app: switch(plan, overlap_awaited=progressed) for plan in plans}
        widened = [plan for plan in plans if steps[plan.app].action == "widen"]
        if widened:
            for plan, reason in zip(widened, parallel(arrive("overlap", began), widened), strict=True):
                rel.step(f"{plan.app}: overlap", "ok", reason)
            for plan in widened:
                steps[plan.app] = switch(plan, overlap_awaited=True)
        narrowed = min((st.at for st in steps.values() if st.at is not None), default=began)
        for plan, reason in zip(plans, parallel(arrive("moved", narrowed), list(plans)), strict=True):
            rel.step(f"{plan.app}: traffic", "ok", reason)
    return max((st.at for st in steps.values() if st.at is not None), default=began)


STEP_INTERVALS = 3  # a progressive step watches the new colour for this many analysis intervals
STEP_WATCHES = 3  # and watches again, this many times at most, while a window lacked data


def _arrive_overlap(profile: Profile, since: float, plan: AppPlan) -> str:
    return await_traffic.fn(profile, plan.app, plan.target_colour, "overlap", since)


def _progress(rel: RunJournal, plans: tuple[AppPlan, ...], switch: Callable[..., SwitchStep]) -> bool:
    """A progressive release's steps (``traffic.progressive``, HTTPRoute only): at each share,
    every app's new colour gets it, the gateway is seen to have programmed it (and requests to
    arrive, or the propagation allowance), and the new colours are judged over STEP_INTERVALS
    analysis intervals (the bake's sliding windows, with synthetic traffic on each new colour's
    Service), watched again while a window lacked data, up to STEP_WATCHES times. A breach, no data
    where the profile says to roll back on that, or a step never judged raises GateFailed: the
    transaction's compensation then returns every app to the colour it came from. True when
    there were steps (the caller's final move narrows from the last one)."""
    profile = rel.profile
    shares = profile.traffic.progressive if profile.traffic.router == "gateway-httproute" else []
    colours = {plan.app: plan.target_colour for plan in plans}
    for n, share in enumerate(shares, 1):
        since = time.time()
        for plan in plans:
            step = switch(plan, weight=share)
            if step.action != "widen":
                raise ReleaseRefused(f"{plan.app}: progressive step {share}%: {step.reason}")
            rel.step(f"{plan.app}: {share}%", "ok", step.reason)
        arrived = parallel(partial(_arrive_overlap, profile, since), list(plans))
        for plan, reason in zip(plans, arrived, strict=True):
            rel.step(f"{plan.app}: {share}% programmed", "ok", reason)
        what = f"step {n} of {len(shares)} ({share}% to {', '.join(f'{a} {c}' for a, c in colours.items())})"
        # a step passes only once every app's window at this share was judged: one without data
        # enough (a quiet moment, Monitoring late) is watched again, at most STEP_WATCHES times
        for _ in range(STEP_WATCHES):
            judged = watch(profile, colours, STEP_INTERVALS * profile.gate.interval_s)
            if judged.status != "ok" or judged.watched:
                break
            rel.step(f"progressive {share}%", "not judged", f"{judged.summary()}: watching again")
        if judged.status != "ok":
            rel.step(f"progressive {share}%", "failed", f"{judged.detail}; {judged.summary()}")
            raise GateFailed(f"progressive release stopped at {what}: {judged.detail}")
        if not judged.watched:
            rel.step(f"progressive {share}%", "failed", f"not judged: {judged.summary()}")
            raise GateFailed(
                f"progressive release stopped at {what}: the new colour could not be judged at this share "
                f"({judged.summary()}); a step that was not judged is not passed"
            )
        rel.step(f"progressive {share}%", "ok", f"{judged.detail}; {judged.summary()}")
        rel.say(f":arrow_up_small: {what}: judged healthy ({judged.summary()})")
    return bool(shares)
