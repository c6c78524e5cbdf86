"""Rollback: point traffic back at the previous colour, verify, notify.

Never waits for the release lock (a release may be paused for approval for an hour; a rollback is
an emergency): it takes the environment's traffic lock, which releases, cleanup and switches hold
only while they move traffic, and relies on the live Service's resourceVersion, so a release whose
switch then finds its precondition broken stops without switching. A previous colour that a
release has since deployed onto is refused (its digest is no longer the previous release's).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from greenlight.core.alerts import Kind
from greenlight.core.switch import RollbackStep
from greenlight.errors import GateFailed, InputInvalid, ReleaseRefused
from greenlight.flows.concurrency import parallel, traffic_lock
from greenlight.flows.journal import RunJournal
from greenlight.settings import Environment, Profile, load_profile
from greenlight.tasks.alerts import raise_alert
from greenlight.tasks.kube import read_live, rollback_app
from greenlight.tasks.probes import smoke
from greenlight.tasks.records import record_release


def record_rollback(
    profile: Profile, apps: list[str], steps: list[RollbackStep], reason: str, actor: str | None
) -> str | None:
    """Record a rollback that moved traffic (outcome ``rollback``): the releases it took out of
    service (each live Service records, after the switch, the release it undid), when traffic was
    restored, why and by whom. Nothing when no app was switched back (noop, refused)."""
    switched = [(a, s) for a, s in zip(apps, steps, strict=True) if s.action == "switch"]
    if not switched:
        return None
    now_live = read_live(profile)
    undid = sorted({rid for a, _ in switched if (rid := now_live[a]["rolled_back_release"])})
    moved = [s.at for _, s in switched if s.at is not None]
    restored = datetime.fromtimestamp(max(moved), UTC) if moved else datetime.now(UTC)
    key = f"{profile.name}-rollback-{int(restored.timestamp())}"
    entry = {
        "release_id": key, "outcome": "rollback", "undid": undid, "restored_at": restored.isoformat(),
        "reason": reason, "actor": actor, "apps": [a for a, _ in switched],
    }  # fmt: skip
    return record_release(profile, entry)


@flow(name="rollback")
def rollback(
    environment: Environment,
    app: str | None = None,
    reason: str = "manual rollback",
    actor: str | None = None,
) -> dict[str, Any]:
    """Roll back every app of the last release (or ``app`` alone, an operator's explicit choice).

    Args:
        environment: where to roll back (one of the profiles)
        app: one app only (e.g. backend); empty rolls back every app of the last release together
        reason: why: it goes on the record and in Slack
        actor: who asks (goes on the record)
    """
    profile = load_profile(environment)
    if app is not None:
        apps = [profile.app(app).name]
    else:
        apps = [name for name, state in read_live(profile).items() if state["previous_colour"]]
        if not apps:
            raise InputInvalid(
                f"nothing to roll back in {environment}: no app's live Service or HTTPRoute records a previous colour"
            )
    rel = RunJournal(profile, f"{environment}-rollback", {}, None, actor)
    rel.report.title = f"Rollback in {environment}"
    rel.report.facts["reason"] = reason
    with traffic_lock(profile):
        steps = parallel(lambda name: rollback_app(profile, name, reason), apps)
    for s in steps:
        rel.step(f"{s.service}: rollback", s.action, s.reason)
    record_rollback(profile, apps, steps, reason, actor)
    checks = {name: smoke(profile, name, "live") for name in apps}
    bad = {
        name: [r.reason for r in rs if not r.ok] for name, rs in checks.items() if not all(r.ok for r in rs)
    }
    for name, rs in checks.items():
        rel.step(f"{name}: verify", "ok" if name not in bad else "failed", "; ".join(r.reason for r in rs))
    outcome = {
        s.service: {"action": s.action, "from": s.from_colour, "to": s.to_colour, "reason": s.reason}
        for s in steps
    }
    summary = "; ".join(f"{s.service}: {s.reason}" for s in steps)
    refused = [s for s in steps if s.action == "refuse"]
    if refused:
        listed = "; ".join(f"{s.service}: {s.reason}" for s in refused)
        rel.say(f":no_entry: rollback in {environment} refused for {len(refused)} app(s): {listed}")
        rel.publish("rollback refused")
        raise ReleaseRefused(f"rollback in {environment} refused: {listed}")
    rel.event("rolled-back", reason=reason, steps=outcome)
    if any(s.action != "noop" for s in steps):  # a rollback that moved nothing is no news
        raise_alert(profile, Kind.ROLLBACK, f"rolled back by hand ({reason}): {summary}")
    if bad:
        rel.say(f":rotating_light: rollback in {environment} done but live smoke probes fail: {bad}")
        rel.publish("rolled back, verification failed")
        raise GateFailed(f"rolled back ({summary}) but the live colour fails its smoke probes: {bad}")
    rel.say(f":rewind: rollback in {environment} ({reason}): {summary}")
    rel.publish("rolled back")
    return {"environment": environment, "reason": reason, "apps": outcome}
