"""The release flows: ``build-promote`` (the images of a commit) and ``deploy`` (explicit images).

:func:`promote` resolves the images to digests, applies the promotion rules
(:mod:`greenlight.flows.promotion`), holds the environment's release lock and waits for the
approval production asks for, then :func:`run_release` deploys the inactive colour of every app
in parallel, gates each through its preview Service (:mod:`greenlight.flows.health_gate`),
switches them together, all or none (:mod:`greenlight.flows.switching`), bakes the new colour
and rolls back on breach (:mod:`greenlight.flows.bake`), and records the release. What the run
says and keeps is its :class:`~greenlight.flows.journal.RunJournal`; the Run form's models are in
:mod:`greenlight.flows.requests`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from greenlight.core.alerts import Condition, Kind
from greenlight.core.commit_proof import vouched
from greenlight.core.gate import GateVerdict
from greenlight.core.images import ImageRef
from greenlight.core.release import AppPlan, AppState, ReleasePlan, plan_release
from greenlight.errors import GateFailed, GreenlightError, ReleaseRefused
from greenlight.flows.bake import retire_failing, rollback_all, step_lines, watch
from greenlight.flows.concurrency import lock_name, parallel
from greenlight.flows.health_gate import run_gate
from greenlight.flows.journal import RunJournal
from greenlight.flows.promotion import (
    await_approval,
    images_by_app,
    images_for_commit,
    plan_promotion,
    preflight,
    refuse_unsigned,
    requested_commit_time,
)
from greenlight.flows.requests import DeployRequest, PromoteRequest
from greenlight.flows.switching import switch_all
from greenlight.settings import Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.kube import (
    deploy_colour,
    point_preview,
    read_app_state,
    run_pre_deploy_job,
    scale_colour,
    shutdown_safety,
    wait_rollout,
)
from greenlight.tasks.locks import hold
from greenlight.tasks.records import (
    read_records,
    record_release,
)

__all__ = ["DeployRequest", "PromoteRequest", "build_promote", "deploy", "promote", "run_release"]


def _gate_rows(app: str, verdict: GateVerdict) -> list[list[Any]]:
    return [
        [app, c.name, _fmt(c.value), _fmt(c.limit), {True: "ok", False: "FAIL", None: "n/a"}[c.ok], c.reason]
        for c in verdict.checks
    ]


def _fmt(v: float | None) -> str:
    return "-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _prepare_app(rel: RunJournal, plan: AppPlan) -> GateVerdict:
    """Deploy (unless resuming), wait for the rollout, point the preview at it and gate it."""
    profile = rel.profile
    if plan.action in ("deploy", "bootstrap"):
        out = deploy_colour(profile, plan.app, plan.target_colour, plan.spec_from, plan.digest, rel.id)
        rel.step(f"{plan.app}: deploy", "ok", f"{out['action']} {out['deployment']} with {out['image']}")
    try:
        rollout = wait_rollout(profile, plan.app, plan.target_colour)
    except GateFailed:
        rel.diagnose(plan.app, plan.target_colour, "rollout failed")
        raise
    rel.step(f"{plan.app}: rollout", "ok", rollout.reason)
    rel.step(f"{plan.app}: preview", "ok", point_preview(profile, plan.app, plan.target_colour))
    verdict = run_gate(profile, plan.app, plan.target_colour, readiness=rollout)
    rel.step(
        f"{plan.app}: gate", "ok" if verdict.passed else "failed", f"{verdict.verdict}: {verdict.reason}"
    )
    return verdict


def run_release(
    profile: Profile,
    digests: dict[str, str],
    rid: str,
    commit: str | None,
    author: str | None,
    bake_s: float | None = None,
    rel: RunJournal | None = None,
) -> dict[str, Any]:
    """Deploy, gate, switch, watch; roll back on breach. Raises GateFailed / ReleaseRefused on failure."""
    rel = rel or RunJournal(profile, rid, digests, commit, author)
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
        for p in (p for p in todo if p.app in failed):  # before the scale-down takes the pods away
            rel.diagnose(
                p.app, p.target_colour, f"gate failed: {failed[p.app].verdict}", failed[p.app].smoke, True
            )
        for p in todo:  # the candidate takes no traffic: scale it away, leave live as it was
            rel.step(f"{p.app}: scale down", "ok", scale_colour(profile, p.app, p.target_colour, 0))
        rel.say(f":no_entry: release {rid} stopped at the gate, nothing switched: {reason}")
        rel.event("gate-failed", reason=reason)
        raise_alert(
            profile,
            Kind.GATE_FAILED,
            f"release {rid} stopped at the gate: {reason}",
            details={"release": rid},
        )
        raise GateFailed(f"release {rid} stopped at the gate, nothing switched: {reason}")
    gate_values = {app: v.values() for app, v in verdicts.items()}
    rel.say(
        f":white_check_mark: gate passed for {', '.join(verdicts)}: "
        + "; ".join(f"{a}: {v.reason}" for a, v in verdicts.items())
    )
    try:
        moved = switch_all(
            rel,
            plan.to_switch,
            {st.name: st.traffic.guard if st.traffic else None for st in states},
        )
    except GreenlightError as e:
        # a progressive release that stopped after a step had sent the new colour traffic:
        # however it stopped (a breach, a refusal, a Conflict, a timeout), it served callers
        if (
            rel.moved_traffic
            and profile.traffic.progressive
            and profile.traffic.router == "gateway-httproute"
        ):
            _stopped_progressing(rel, plan.to_switch, str(e))
        raise
    rel.switched_at = datetime.fromtimestamp(moved, UTC).isoformat()
    colours = {p.app: p.target_colour for p in plan.to_switch}
    rel.say(f":twisted_rightwards_arrows: switched {', '.join(f'{a} to {c}' for a, c in colours.items())}")
    rel.event("switched", colours=colours)
    return _bake_and_record(rel, colours, gate_values, bake_s)


def _stopped_progressing(rel: RunJournal, plans: tuple[AppPlan, ...], reason: str) -> None:
    """A progressive release stopped after a step: its compensation (the switch transaction's
    hooks) should have sent the traffic back. Diagnose the new colour; scale it away only for an
    app whose traffic is wholly back on the colour it came from (a hook that failed leaves the
    route sending it some: its pods stay, and the alert says traffic was not restored); say so,
    alert, and record a rollback (it served part of the traffic)."""
    profile, rid = rel.profile, rel.id
    decided = datetime.now(UTC)
    for p in plans:  # before the scale-down takes the pods away
        rel.diagnose(p.app, p.target_colour, "progressive release stopped", every_log=True)
    stuck = []
    for p in plans:
        now = read_app_state(profile, p.app).traffic
        if now is not None and now.selected == p.live_colour and now.overlap is None:
            rel.step(f"{p.app}: scale down", "ok", scale_colour(profile, p.app, p.target_colour, 0))
        else:
            where = (
                f"on {now.colour()}, overlap {now.overlap.text() if now.overlap else 'none'}"
                if now
                else "unknown"
            )
            stuck.append(f"{p.app} ({where})")
            rel.step(
                f"{p.app}: scale down",
                "failed",
                f"kept {p.target_colour}: traffic is not back on {p.live_colour}",
            )
    if stuck:
        reason = (
            f"{reason}; traffic NOT restored for {', '.join(stuck)}: roll back by hand (greenlight rollback)"
        )
        rel.say(f":rotating_light: release {rid}: {reason}")
    else:
        rel.say(f":rewind: release {rid}: {reason}; traffic is back on the previous colour")
    raise_alert(profile, Kind.ROLLBACK, f"release {rid}: {reason}", details={"release": rid})
    rel.event("rolled-back", reason=reason, decided_at=decided.isoformat())
    record_release(
        profile,
        {
            "release_id": rid, "commit": rel.commit, "author": rel.author, "digests": rel.digests,
            "outcome": "rolled-back", "reason": reason, "decided_at": decided.isoformat(),
            "restored_at": datetime.now(UTC).isoformat(), **_dora_fields(rel),
        },
        key=f"{rid}.rolled-back-{int(decided.timestamp())}",
    )  # fmt: skip


def _unfinished_switch(profile: Profile, states: list[AppState], rid: str) -> dict[str, str]:
    """app -> live colour when what routes every app's live traffic records release ``rid`` but
    the record has no finished entry for it (the run that switched was killed); empty otherwise."""
    colours = {}
    for st in states:
        colour = st.traffic.colour() if st.traffic else None
        if st.traffic is None or st.traffic.release_id != rid or colour is None:
            return {}
        colours[st.name] = colour
    if any(r.get("release_id") == rid and r.get("outcome") == "released" for r in read_records(profile)):
        return {}
    return colours


def _dora_fields(rel: RunJournal) -> dict[str, str | None]:
    return {"switched_at": rel.switched_at, "commit_at": rel.commit_at, "commit_at_from": rel.commit_at_from}


def _bake_and_record(
    rel: RunJournal, colours: dict[str, str], gate_values: dict[str, Any], bake_s: float | None
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
        for app, colour in colours.items():  # traffic is back: read the failing colour before it goes
            rel.diagnose(app, colour, "breach after the switch", every_log=True)
        retire_failing(rel, colours, steps)
        rel.say(f":rewind: rolled back release {rid}: {detail}")
        raise_alert(
            profile,
            Kind.ROLLBACK,
            f"release {rid} rolled back automatically: {detail}",
            details={"release": rid},
        )
        rel.event(
            "rolled-back",
            reason=detail,
            decided_at=decided.isoformat(),
            restored_at=restored.isoformat(),
            arrived_at=arrived.isoformat(),
            rollback_s=round((restored - decided).total_seconds(), 3),
        )
        record_release(
            profile,
            {
                "release_id": rid, "commit": commit, "author": author, "digests": digests,
                "outcome": "rolled-back", "reason": detail, "bake": baked.record(),
                "decided_at": decided.isoformat(), "restored_at": restored.isoformat(), **_dora_fields(rel),
            },
            key=f"{rid}.rolled-back-{int(decided.timestamp())}",
        )  # fmt: skip
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
            **({"signatures": rel.signatures} if rel.signatures else {}),
            **_dora_fields(rel),
        },
    )
    rel.event("finished", outcome="released")
    resolve_alerts(profile, Condition.RELEASE_SUCCEEDED)
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
        **({"signatures": rel.signatures} if rel.signatures else {}),
        "timeline": [
            {"step": st.name, "outcome": st.outcome, "at": st.at.isoformat()} for st in rel.report.steps
        ],
    }


def promote(
    profile: Profile,
    refs: dict[str, ImageRef],
    commit: str | None,
    actor: str | None,
    force_reason: str | None,
    bake_s: float | None,
    commit_at: datetime | None = None,
    commit_proof: str | None = None,
) -> dict[str, Any]:
    planned = plan_promotion(profile, refs, commit, actor, force_reason)
    digests, rid, author = planned.digests, planned.release_id, planned.author
    refuse_unsigned(profile, planned, commit)
    signed = planned.signatures
    committed, proof_note = requested_commit_time(profile, commit, commit_at, commit_proof)
    required = profile.release.requires
    decision = planned.promotion
    if decision is not None:
        if not decision.ok:
            raise ReleaseRefused(decision.reason)
        staged = planned.staged
        if staged is not None and (vouched(staged[1]) or not (committed and vouched(committed[1]))):
            committed, proof_note = staged, f"from {required}'s {staged[1].split(', ', 1)[1]}"
    rel = RunJournal(profile, rid, digests, commit, author)
    if signed:
        rel.signatures = signed
        rel.step("signatures", "ok", "; ".join(f"{app}: {text}" for app, text in sorted(signed.items())))
        for app, text in sorted(signed.items()):
            rel.report.facts[f"signature {app}"] = text
    rel.commit_at, rel.commit_at_from = committed or (None, None)
    if committed:
        rel.report.facts["commit time"] = f"{committed[0]} ({committed[1]}: {proof_note})"
    if decision is not None:
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
        if isinstance(e, Exception) and not isinstance(
            e, GateFailed | ReleaseRefused
        ):  # those alert themselves or are no failure
            raise_alert(
                profile,
                Kind.RELEASE_FAILED,
                f"release {rid} failed: {type(e).__name__}: {e}",
                details={"release": rid},
            )
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
        request.commit_at,
        request.commit_proof,
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
