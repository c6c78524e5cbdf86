"""Blue-green release and build-promote.

``blue_green_release`` deploys the inactive colour of every app of one release in parallel,
gates each through its preview Service, switches them together (all or none, compensated by
a Prefect transaction), watches the new colour for the bake time and rolls back on breach.
``build_promote`` turns a commit into digests, enforces the environment's rules (allow-list,
digests proven in the required environment, release freeze, approval) and runs the release
while holding the environment's concurrency limit. ``deploy`` does the same for explicit images.
"""

from __future__ import annotations

import contextvars
import getpass
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from prefect import flow, pause_flow_run
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.settings import PREFECT_UI_URL
from prefect.transactions import transaction
from prefect.variables import Variable
from pydantic import BaseModel, Field

from greenlight.core.approval import Answer, Judgement, Person, attestation_problem, judge_answer
from greenlight.core.gate import BakeJudgement, GateVerdict, check_breach
from greenlight.core.images import (
    ImageRef,
    check_allowed,
    image_for_commit,
    parse_image_ref,
    require_tag_or_digest,
)
from greenlight.core.release import (
    AppPlan,
    AppState,
    ReleasePlan,
    check_preflight,
    check_promotion,
    plan_release,
    release_id,
)
from greenlight.core.report import RunReport
from greenlight.core.switch import MOVED, RollbackStep, SwitchStep
from greenlight.core.traffic import ArrivalPhase
from greenlight.errors import GateFailed, GreenlightError, InputInvalid, ReleaseRefused, TransientError
from greenlight.flows.health_gate import run_gate
from greenlight.settings import Environment, Profile, load_profile
from greenlight.tasks.approval import ApprovalMessage, record_answer
from greenlight.tasks.evidence import Progress, emit, publish_report
from greenlight.tasks.kube import (
    await_traffic,
    deploy_colour,
    point_preview,
    read_app_state,
    rollback_app,
    run_pre_deploy_job,
    scale_colour,
    shutdown_safety,
    switch_service,
    wait_rollout,
)
from greenlight.tasks.locks import hold
from greenlight.tasks.metrics import gate_config, read_sample, sample_colour
from greenlight.tasks.notify import notify
from greenlight.tasks.policy import logger
from greenlight.tasks.probes import SyntheticTraffic
from greenlight.tasks.records import author_of, passed_records, read_records, record_key, record_release
from greenlight.tasks.registry import resolve_images

T = TypeVar("T")
R = TypeVar("R")
FREEZE_VARIABLE = "greenlight_release_freeze_{env}"


def lock_name(environment: str) -> str:
    """The global concurrency limit that serialises releases of one environment (held from before
    the approval to the end of the bake, so cleanup never scales down a colour a release holds)."""
    return f"greenlight-release-{environment}"


def traffic_lock_name(environment: str) -> str:
    """The global concurrency limit held, briefly, by whatever moves an environment's traffic or
    scales a colour down: a release's switches, a rollback, a switch by hand, cleanup's last check."""
    return f"greenlight-traffic-{environment}"


@contextmanager
def traffic_lock(profile: Profile) -> Iterator[None]:
    """Hold the environment's traffic lock (waits for it; the holders keep it for seconds)."""
    with hold(traffic_lock_name(profile.name), lease_duration=profile.release.lock_lease_s):
        yield


class ApprovalInput(RunInput):
    """The answer to a paused production promotion. The defaults refuse: an empty resume never
    approves. A person answers in Slack; the receiver fills the last four fields, and without them
    (or with ones that do not verify) an answer is unverified."""

    approve: bool = Field(False, description="true approves, false rejects")
    approver: str = Field("", description="who answers (unverified when typed here)")
    reason: str = Field("", description="why: an approval needs one; it goes on the record")
    slack_user: str = Field("", description="set by the Slack receiver: the Slack user who clicked")
    at: float = Field(0.0, description="set by the Slack receiver: when Slack signed the click")
    nonce: str = Field("", description="set by the Slack receiver")
    proof: str = Field("", description="set by the Slack receiver: its attestation of the click")


class PromoteRequest(BaseModel):
    """Promote the images of a commit to an environment (the form the Prefect UI shows)."""

    environment: Environment = Field(
        description="where to release (one of the profiles); production waits for approval"
    )
    commit: str = Field(description="the commit whose images to release (images are tagged with it)")
    actor: str | None = Field(None, description="who asks (GitHub actor or person); default: the login name")
    force_reason: str | None = Field(
        None, description="release despite a freeze or a failing live colour; goes on the record"
    )
    bake_s: float | None = Field(None, ge=0, description="override the profile's bake time")


class DeployRequest(BaseModel):
    """Release explicit images (tags are resolved to digests first)."""

    environment: Environment = Field(
        description="where to release (one of the profiles); production waits for approval"
    )
    images: list[str] = Field(
        min_length=1, description="one image per app, e.g. ghcr.io/org/backend:abc123 or ...@sha256:..."
    )
    actor: str | None = Field(None, description="who asks (GitHub actor or person); default: the login name")
    force_reason: str | None = Field(
        None, description="release despite a freeze or a failing live colour; goes on the record"
    )
    bake_s: float | None = Field(None, ge=0, description="override the profile's bake time")


def parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``fn`` over ``items`` in threads that keep the Prefect run context; first error re-raised."""
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    # one thread per item: each mostly waits (rollouts, gate windows), so a release of many apps
    # takes about as long as one of a single app
    with ThreadPoolExecutor(max_workers=min(64, len(items))) as pool:
        futures = [pool.submit(contextvars.copy_context().run, fn, i) for i in items]
        return [f.result() for f in futures]


def ui_url(path: str) -> str | None:
    """A link into the Prefect UI (Prefect derives the UI address from the API's)."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/{path.lstrip('/')}" if ui else None


def current_run_link() -> str:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return "(no flow run)"
    return ui_url(f"runs/flow-run/{ctx.flow_run.id}") or str(ctx.flow_run.id)


# --- the release ------------------------------------------------------------------------------


class Release:
    """One release's state while it runs: the report, the Slack thread, the decisions."""

    def __init__(
        self, profile: Profile, rid: str, digests: dict[str, str], commit: str | None, author: str | None
    ) -> None:
        self.profile = profile
        self.id = rid
        self.digests = digests
        self.commit = commit
        self.author = author
        self.report = RunReport(f"Release {rid} to {profile.name}")
        self.report.facts.update(
            {"environment": profile.name, "namespace": profile.namespace, "release id": rid,
             "commit": commit or "-", "author": author or "-", "run": current_run_link()}
        )  # fmt: skip
        for app, d in sorted(digests.items()):
            self.report.facts[f"digest {app}"] = d
        self.thread: str | None = None
        self.log = logger()

    def say(self, text: str) -> None:
        """Log, record and post to the release's Slack thread (starting it)."""
        self.log.info(text)
        ts = notify(self.profile, text, thread_ts=self.thread)
        if self.thread is None:
            self.thread = ts

    def step(self, name: str, outcome: str, detail: str) -> None:
        self.report.step(name, outcome, detail)
        self.log.info("%s: %s: %s", name, outcome, detail)

    def event(self, name: str, **payload: Any) -> None:
        emit(
            f"greenlight.release.{name}",
            f"greenlight.environment.{self.profile.name}",
            {
                "release_id": self.id,
                "environment": self.profile.name,
                "digests": self.digests,
                "commit": self.commit,
                **payload,
            },
            related=[
                {"prefect.resource.id": f"greenlight.release.{self.id}", "prefect.resource.role": "release"}
            ],
        )

    def publish(self, outcome: str) -> None:
        self.report.outcome = outcome
        try:
            publish_report(
                f"release-{self.profile.name}", self.report.render(), f"Release {self.id}: {outcome}"
            )
        except Exception as e:  # the record must not hide the outcome
            self.log.warning("release report not published: %s", e)


def _gate_rows(app: str, verdict: GateVerdict) -> list[list[Any]]:
    return [
        [app, c.name, _fmt(c.value), _fmt(c.limit), {True: "ok", False: "FAIL", None: "n/a"}[c.ok], c.reason]
        for c in verdict.checks
    ]


def _fmt(v: float | None) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _prepare_app(rel: Release, plan: AppPlan) -> GateVerdict:
    """Deploy (unless resuming), wait for the rollout, point the preview at it and gate it."""
    profile = rel.profile
    if plan.action in ("deploy", "bootstrap"):
        out = deploy_colour(profile, plan.app, plan.target_colour, plan.spec_from, plan.digest, rel.id)
        rel.step(f"{plan.app}: deploy", "ok", f"{out['action']} {out['deployment']} with {out['image']}")
    rollout = wait_rollout(profile, plan.app, plan.target_colour)
    rel.step(f"{plan.app}: rollout", "ok", rollout.reason)
    rel.step(f"{plan.app}: preview", "ok", point_preview(profile, plan.app, plan.target_colour))
    verdict = run_gate(profile, plan.app, plan.target_colour, readiness=rollout)
    rel.step(
        f"{plan.app}: gate", "ok" if verdict.passed else "failed", f"{verdict.verdict}: {verdict.reason}"
    )
    return verdict


def _undo_switch(environment: str, app: str, release_id: str) -> Callable[[Any], None]:
    """The transaction rollback hook of one app's switch: return that app's live Service to where
    it was. Each hook knows its own app: a value set on the shared transaction would be read back
    as the last app's by every hook (Prefect 3.9: a child transaction's get falls through to the
    parent), undoing one app twice and leaving the others switched."""

    def undo(_txn: Any) -> None:
        profile = load_profile(environment)
        reason = f"compensating: release {release_id} failed to switch every app"
        for delay in (1.0, 2.0, None):  # a hook that raises is only logged: retry transient errors here
            try:
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


def _switch_all(rel: Release, plans: tuple[AppPlan, ...], planned_rv: dict[str, str | None]) -> None:
    """Switch every app, then wait until every app's traffic has moved; if any switch or wait
    fails, the apps already switched are switched back (each by its own compensation hook).

    Each switch is guarded by the resourceVersion the release planned with (``planned_rv``), and
    all of them happen under the environment's traffic lock (so no rollback or cleanup
    interleaves). The patches are made one app after the other and the waits run in parallel, so
    that a release of many apps waits for the data plane once: overlap switches (see
    greenlight.tasks.kube.effective_switch_mode) widen every app first, wait, then narrow every app."""
    profile = rel.profile

    def switch(plan: AppPlan, overlap_awaited: bool = False) -> SwitchStep:
        task = switch_service.with_options(name="switch-traffic")
        task.on_rollback(_undo_switch(profile.name, plan.app, rel.id))
        step = task(
            profile, plan.app, plan.target_colour, rel.id, {plan.app: plan.digest},
            expected_rv=planned_rv.get(plan.app), confirm=False, overlap_awaited=overlap_awaited,
        )  # fmt: skip
        if step.action not in MOVED and step.action != "widen":
            raise ReleaseRefused(f"{plan.app}: {step.reason}")
        rel.step(f"{plan.app}: {step.action}", "ok", step.reason)
        return step

    def arrive(phase: ArrivalPhase, since: float) -> Callable[[AppPlan], str]:
        return lambda plan: await_traffic.fn(profile, plan.app, plan.target_colour, phase, since)

    with traffic_lock(profile), transaction():
        began = time.time()
        steps = {plan.app: switch(plan) for plan in plans}
        widened = [plan for plan in plans if steps[plan.app].action == "widen"]
        if widened:
            for plan, reason in zip(widened, parallel(arrive("overlap", began), widened), strict=True):
                rel.step(f"{plan.app}: overlap", "ok", reason)
            for plan in widened:
                steps[plan.app] = switch(plan, overlap_awaited=True)
        narrowed = min((st.at for st in steps.values() if st.at is not None), default=began)
        for plan, reason in zip(plans, parallel(arrive("moved", narrowed), list(plans)), strict=True):
            rel.step(f"{plan.app}: traffic", "ok", reason)


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
    its own.
    """
    with ExitStack() as stack:
        for app in colours:
            stack.enter_context(SyntheticTraffic(profile, app, "live"))
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


def rollback_all(rel: Release, apps: Iterable[str], reason: str) -> list[RollbackStep]:
    """Roll every app back in parallel, under the environment's traffic lock."""
    with traffic_lock(rel.profile):
        return parallel(lambda app: rollback_app(rel.profile, app, reason), list(apps))


def retire_failing(rel: Release, failing: dict[str, str], steps: list[RollbackStep]) -> None:
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


def run_release(
    profile: Profile,
    digests: dict[str, str],
    rid: str,
    commit: str | None,
    author: str | None,
    bake_s: float | None = None,
    rel: Release | None = None,
) -> dict[str, Any]:
    """Deploy, gate, switch, watch; roll back on breach. Raises GateFailed / ReleaseRefused on failure."""
    rel = rel or Release(profile, rid, digests, commit, author)
    states = [read_app_state(profile, a.name) for a in profile.apps]
    plan: ReleasePlan = plan_release(states, digests, profile.release.colours, profile.release.colour_label)
    rel.step("plan", "ok" if not plan.blocked else "failed", plan.reason)
    if plan.blocked:
        raise ReleaseRefused(plan.reason)
    if plan.nothing_to_release:
        unfinished = _unfinished_switch(profile, states, rid)
        if unfinished:
            # an earlier run switched every app and stopped (killed) before its bake ended: finish
            # that release (bake, record) instead of calling it done unwatched and unrecorded
            rel.step("resume", "ok", f"switched by an earlier run, not recorded: baking {unfinished}")
            rel.say(
                f":repeat: release {rid} was switched by an earlier run that did not finish: baking it now"
            )
            return _bake_and_record(rel, unfinished, {}, bake_s)
        rel.say(f":white_check_mark: {rid}: nothing to release: {profile.name} already serves these digests")
        return {"outcome": "nothing-to-release", "release_id": rid, "plan": plan.reason}
    todo = [p for p in plan.apps if p.action != "nothing"]
    rel.say(f":rocket: release {rid} to {profile.name} started: " + "; ".join(p.reason for p in todo))
    findings = shutdown_safety(profile)
    rel.step(
        "shutdown safety",
        "warn" if findings else "ok",
        "; ".join(findings) or "every app can leave a Service without loss",
    )
    if findings:
        rel.say(
            ":warning: pods of these apps can drop requests when stopped outside a release: "
            + "; ".join(findings)
        )
    rel.event("started")
    if profile.release.pre_deploy_job:
        try:
            rel.step("pre-deploy job", "ok", run_pre_deploy_job(profile, rid, digests))
        except GateFailed as e:
            rel.step("pre-deploy job", "failed", str(e))
            rel.say(f":no_entry: release {rid} stopped before deploying: {e}")
            rel.event("pre-deploy-failed", reason=str(e))
            raise
    verdicts = dict(zip([p.app for p in todo], parallel(lambda p: _prepare_app(rel, p), todo), strict=True))
    for app, v in verdicts.items():
        rel.report.table(
            f"Gate: {app}", ["app", "check", "value", "limit", "ok", "reason"], _gate_rows(app, v)
        )
    failed = {app: v for app, v in verdicts.items() if not v.passed}
    if failed:
        reason = "; ".join(f"{app}: {v.verdict}: {v.reason}" for app, v in failed.items())
        for p in todo:  # the candidate takes no traffic: scale it away, leave live as it was
            rel.step(f"{p.app}: scale down", "ok", scale_colour(profile, p.app, p.target_colour, 0))
        rel.say(f":no_entry: release {rid} stopped at the gate, nothing switched: {reason}")
        rel.event("gate-failed", reason=reason)
        raise GateFailed(f"release {rid} stopped at the gate, nothing switched: {reason}")
    gate_values = {app: v.values() for app, v in verdicts.items()}
    rel.say(
        f":white_check_mark: gate passed for {', '.join(verdicts)}: "
        + "; ".join(f"{a}: {v.reason}" for a, v in verdicts.items())
    )
    _switch_all(
        rel, plan.to_switch, {st.name: st.service.resource_version if st.service else None for st in states}
    )
    colours = {p.app: p.target_colour for p in plan.to_switch}
    rel.say(f":twisted_rightwards_arrows: switched {', '.join(f'{a} to {c}' for a, c in colours.items())}")
    rel.event("switched", colours=colours)
    return _bake_and_record(rel, colours, gate_values, bake_s)


def _unfinished_switch(profile: Profile, states: list[AppState], rid: str) -> dict[str, str]:
    """app -> live colour when every app's live Service records release ``rid`` but the record
    has no finished entry for it (the run that switched was killed); empty otherwise."""
    label = profile.release.colour_label
    colours = {}
    for st in states:
        colour = st.service.colour(label) if st.service else None
        if st.service is None or st.service.release_id != rid or colour is None:
            return {}
        colours[st.name] = colour
    if any(r.get("release_id") == rid and r.get("outcome") for r in read_records(profile)):
        return {}
    return colours


def _bake_and_record(
    rel: Release, colours: dict[str, str], gate_values: dict[str, Any], bake_s: float | None
) -> dict[str, Any]:
    """Watch the switched colours for the bake time; roll back on breach, else record the release."""
    profile, rid, digests, commit, author = rel.profile, rel.id, rel.digests, rel.commit, rel.author
    bake = profile.release.bake_s if bake_s is None else bake_s
    baked = watch(profile, colours, bake, on_interval=lambda app, text: rel.say(f":warning: {text}"))
    status, detail = baked.status, baked.detail
    if status == "ok" and not baked.watched:
        rel.step(
            "bake", "not judged", f"{bake:g} s: no breach seen, but not watched throughout: {baked.summary()}"
        )
        rel.say(f":warning: release {rid}: the bake was not judged throughout ({baked.summary()})")
    else:
        rel.step("bake", "ok" if status == "ok" else "failed", f"{bake:g} s: {detail}; {baked.summary()}")
    if status != "ok":
        decided = datetime.now(UTC)
        steps = rollback_all(rel, colours, f"breach after switch: {detail}")
        # restored when the last app's selector went back (the patch), arrived once traffic has
        # moved there (the data plane acts on it later)
        patched = [st.at for st in steps if st.at is not None]
        restored = datetime.fromtimestamp(max(patched), UTC) if patched else datetime.now(UTC)
        arrived = datetime.now(UTC)
        for line in step_lines(steps):
            rel.step("rollback", "ok", line)
        retire_failing(rel, colours, steps)
        rel.say(f":rewind: rolled back release {rid}: {detail}")
        rel.event(
            "rolled-back",
            reason=detail,
            decided_at=decided.isoformat(),
            restored_at=restored.isoformat(),
            arrived_at=arrived.isoformat(),
            rollback_s=round((restored - decided).total_seconds(), 3),
        )
        raise GateFailed(f"release {rid} rolled back after the switch: {detail}")
    record_release(
        profile,
        {
            "release_id": rid,
            "commit": commit,
            "author": author,
            "digests": digests,
            "outcome": "released",
            "bake": baked.record(),
        },
    )
    rel.event("finished", outcome="released")
    rel.say(
        f":tada: release {rid} finished: {profile.name} serves {', '.join(f'{a}@{d[:19]}' for a, d in sorted(digests.items()))}"
    )
    return {
        "outcome": "released",
        "release_id": rid,
        "colours": colours,
        "gate": gate_values,
        "bake": baked.record(),
        "digests": digests,
        "timeline": [
            {"step": st.name, "outcome": st.outcome, "at": st.at.isoformat()} for st in rel.report.steps
        ],
    }


# --- promotion: images, rules, approval, lock -----------------------------------------------------


def images_for_commit(profile: Profile, commit: str) -> dict[str, ImageRef]:
    return {
        a.name: image_for_commit(a.image_repository, commit, profile.registry.image_template)
        for a in profile.apps
    }


def images_by_app(profile: Profile, images: list[str]) -> dict[str, ImageRef]:
    """Map each image to the app whose repository it is; every app needs exactly one image."""
    out: dict[str, ImageRef] = {}
    repos = {parse_image_ref(a.image_repository).name: a.name for a in profile.apps}
    for text in images:
        ref = parse_image_ref(text)
        require_tag_or_digest(ref)
        app = repos.get(ref.name)
        if app is None:
            raise InputInvalid(
                f"image '{text}' is not the repository of any app of {profile.name} ({', '.join(sorted(repos))})"
            )
        if app in out:
            raise InputInvalid(f"two images for app '{app}': '{out[app]}' and '{text}'")
        out[app] = ref
    missing = sorted(set(repos.values()) - set(out))
    if missing:
        raise InputInvalid(
            f"no image for app(s) {', '.join(missing)} of {profile.name}: a release moves every app together"
        )
    return out


def freeze_of(environment: str) -> str | None:
    value = Variable.get(FREEZE_VARIABLE.format(env=environment.replace("-", "_")), default=None)
    return str(value) if value not in (None, "") else None


def preflight(profile: Profile, force_reason: str | None) -> str:
    """A production release does not start during a freeze or while the live colour fails its own
    gate metrics, unless forced with a reason (which goes on the record)."""
    if profile.release.requires is None:
        return "no preflight for this environment"
    cfg = gate_config(profile)
    now = datetime.now(UTC)
    window = timedelta(seconds=profile.gate.interval_s * profile.gate.intervals)
    live_verdicts = {}
    for app in profile.apps:
        state = read_app_state(profile, app.name)
        colour = state.service.colour(profile.release.colour_label) if state.service else None
        if colour:
            try:
                live_verdicts[app.name] = check_breach(
                    sample_colour(profile, app.name, colour, now - window, now), cfg
                )
            except GreenlightError as e:
                logger().warning("preflight: %s live metrics unavailable: %s", app.name, e)
    decision = check_preflight(freeze_of(profile.name), force_reason, live_verdicts or None)
    if not decision.ok:
        raise ReleaseRefused(f"preflight: {decision.reason}")
    return decision.reason


def await_approval(profile: Profile, rid: str, author: str | None, rel: Release, poll_s: int = 2) -> str:
    """Pause until an answer that may end the wait (see :mod:`greenlight.core.approval`); returns
    the approver. Refused answers are recorded and the run pauses again, until the profile's
    timeout; a rejection or the timeout raise ReleaseRefused."""
    approval = profile.release.approval
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else "?"
    people = [Person(p.name, p.slack, p.github) for p in approval.people]
    message = ApprovalMessage(profile)
    where = (
        f"press Approve or Reject in the release's Slack thread ({message.channel})"
        if approval.require_verified
        else f"Approve or Reject in Slack, or `greenlight approve {run_id} --approver NAME --reason TEXT`"
    )
    waiting = (
        f"release {rid} to {profile.name} waits for approval by {', '.join(approval.approvers)} "
        f"(not the author {author or '-'}): {where}; run {current_run_link()}"
    )
    rel.say(f":raised_hand: {waiting}")
    message.post(f":raised_hand: {waiting}", rel.thread, run_id, rid, profile.name)
    print(f"waiting for approval of {rid}: {current_run_link()}", flush=True)
    if approval.require_verified:
        print(f"  answer in Slack ({message.channel}): only verified answers count here", flush=True)
    print(f"  approve: greenlight approve {run_id} --approver NAME --reason TEXT", flush=True)
    print(f"  reject:  greenlight reject {run_id} --approver NAME --reason TEXT", flush=True)
    rel.event("approval-requested", run_id=run_id)
    deadline = time.monotonic() + approval.timeout_s
    seen: set[str] = set()
    rows: list[list[Any]] = []
    last = ""
    judgement: Judgement | None = None
    try:
        while judgement is None or not judgement.final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FlowPauseTimeout("approval timed out")
            pause = f"approval-{len(rows) + 1}"
            raw: ApprovalInput = pause_flow_run(  # type: ignore[call-overload]
                wait_for_input=ApprovalInput.with_initial_data(
                    description=_approval_description(rid, profile, author, where, last), approve=False
                ),
                timeout=max(1, int(remaining)),
                poll_interval=poll_s,
                key=pause,
            )
            answer = Answer(**raw.model_dump(include=set(Answer.__dataclass_fields__)))
            problem = _proof_problem(approval.receiver_keys, run_id, rid, answer, seen)
            judgement = judge_answer(
                answer,
                proof_problem=problem,
                people=people,
                approvers=approval.approvers,
                author=author,
                allow_self_approval=approval.allow_self_approval,
                require_verified=approval.require_verified,
            )
            seen.add(answer.nonce)
            at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            rows.append([at, judgement.identity, "approve" if answer.approve else "reject", judgement.text])
            record_answer(pause, judgement)
            rel.event(
                "approval-answer", run_id=run_id, final=judgement.final, approved=judgement.approved,
                verified=judgement.verified, who=judgement.who, slack_user=judgement.slack_user,
                text=judgement.text,
            )  # fmt: skip
            if not judgement.final:
                last = judgement.text
                rel.step("approval answer", "refused", judgement.text)
                rel.say(f":warning: release {rid}: {judgement.text}")
    except FlowPauseTimeout as e:
        text = f"approval of {rid} timed out after {approval.timeout_s:g} s: rejected, nothing changed"
        message.close(f":hourglass: {text}")
        rel.report.facts["approval"] = text
        raise ReleaseRefused(text) from e
    finally:
        if rows:
            rel.report.table("Approval answers", ["at", "who", "answer", "judged"], rows)
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    rel.report.facts["approval"] = judgement.text
    rel.step("approval", "ok" if judgement.approved else "failed", judgement.text)
    if not judgement.approved:
        message.close(f":no_entry: release {rid} to {profile.name} {judgement.text} (at {at})")
        rel.say(f":no_entry: release {rid} not approved: {judgement.text}")
        rel.event("rejected", reason=judgement.text)
        raise ReleaseRefused(f"release {rid} not approved: {judgement.text}")
    message.close(f":white_check_mark: release {rid} to {profile.name} {judgement.text} (at {at})")
    rel.say(f":ok_hand: release {rid} {judgement.text}")
    return judgement.identity


def _proof_problem(keys: list[str], run_id: str, rid: str, answer: Answer, seen: set[str]) -> str | None:
    if answer.nonce and answer.nonce in seen:
        return "its Slack click was already counted once in this run"
    return attestation_problem(keys, run_id, rid, answer, time.time())


def _approval_description(rid: str, profile: Profile, author: str | None, where: str, last: str) -> str:
    text = f"Approve release **{rid}** to **{profile.name}** (author: {author or '-'}): {where}."
    if profile.release.approval.require_verified:
        text += (
            " Answers from this form are refused: only answers from Slack, attested by Greenlight's"
            " receiver, count (release.approval.require_verified)."
        )
    if last:
        text += f"\n\nThe last answer was {last}"
    return text


def promote(
    profile: Profile,
    refs: dict[str, ImageRef],
    commit: str | None,
    actor: str | None,
    force_reason: str | None,
    bake_s: float | None,
) -> dict[str, Any]:
    for ref in refs.values():
        check_allowed(ref, profile.registry.allowed)
    digests = resolve_images(refs)
    rid = release_id(profile.name, digests, commit)
    author = actor or getpass.getuser()
    required = profile.release.requires
    if required:
        records = read_records(load_profile(required))
        key = record_key()
        decision = check_promotion(
            digests, passed_records(records, key), required_env=required, force_reason=force_reason
        )
        if not decision.ok:
            raise ReleaseRefused(decision.reason)
        author = author_of(records, digests, key) or author
    rel = Release(profile, rid, digests, commit, author)
    if required:
        rel.step("passed staging", "forced" if decision.forced else "ok", decision.reason)
    try:
        # the lease is renewed while the release runs; if the process dies, the server frees the
        # lock once the lease expires, so a rerun after a crash waits at most about that long
        with hold(lock_name(profile.name), lease_duration=profile.release.lock_lease_s):
            rel.step("lock", "ok", f"holding {lock_name(profile.name)}")
            if required:
                rel.step("preflight", "ok", preflight(profile, force_reason))
                if force_reason:
                    rel.report.facts["forced"] = force_reason
            if profile.release.approval.required:
                rel.report.facts["approver"] = await_approval(profile, rid, author, rel)
            result = run_release(profile, digests, rid, commit, author, bake_s, rel)
            if profile.release.approval.required:
                result["approval"] = rel.report.facts["approval"]
    except BaseException as e:
        rel.step("outcome", "failed", f"{type(e).__name__}: {e}")
        rel.publish(f"failed: {e}")
        raise
    rel.publish(result["outcome"])
    return result


@flow(name="build-promote", log_prints=False)
def build_promote(request: PromoteRequest) -> dict[str, Any]:
    """Release the images of ``request.commit`` to ``request.environment`` (staging, or production after approval).

    Args:
        request: the environment, the commit, and who asks
    """
    profile = load_profile(request.environment)
    return promote(
        profile,
        images_for_commit(profile, request.commit),
        request.commit,
        request.actor,
        request.force_reason,
        request.bake_s,
    )


@flow(name="deploy", log_prints=False)
def deploy(request: DeployRequest) -> dict[str, Any]:
    """Release explicit images (one per app) to ``request.environment``.

    Args:
        request: the environment, one image per app, and who asks
    """
    profile = load_profile(request.environment)
    return promote(
        profile,
        images_by_app(profile, request.images),
        None,
        request.actor,
        request.force_reason,
        request.bake_s,
    )
