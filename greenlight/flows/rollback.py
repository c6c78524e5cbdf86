"""Rollback: point traffic back at the previous colour, verify, notify.

Never waits for the release lock (a release may be paused for approval for an hour; a rollback is
an emergency): it takes the environment's traffic lock, which releases, cleanup and switches hold
only while they move traffic, and relies on the live Service's resourceVersion, so a release whose
switch then finds its precondition broken stops without switching. A previous colour that a
release has since deployed onto is refused (its digest is no longer the previous release's).
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.core.switch import snapshot_service
from greenlight.errors import GateFailed, InputInvalid, ReleaseRefused
from greenlight.flows.release import Release, parallel, traffic_lock
from greenlight.settings import Environment, load_profile
from greenlight.tasks.kube import cluster, rollback_app
from greenlight.tasks.probes import smoke


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
        with cluster(profile) as kube:
            apps = [
                a.name for a in profile.apps
                if (svc := kube.find("services", a.service, profile.namespace)) and snapshot_service(svc).previous_colour
            ]  # fmt: skip
        if not apps:
            raise InputInvalid(
                f"nothing to roll back in {environment}: no live Service records a previous colour"
            )
    rel = Release(profile, f"{environment}-rollback", {}, None, actor)
    rel.report.title = f"Rollback in {environment}"
    rel.report.facts["reason"] = reason
    with traffic_lock(profile):
        steps = parallel(lambda name: rollback_app(profile, name, reason), apps)
    for s in steps:
        rel.step(f"{s.service}: rollback", s.action, s.reason)
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
    if bad:
        rel.say(f":rotating_light: rollback in {environment} done but live smoke probes fail: {bad}")
        rel.publish("rolled back, verification failed")
        raise GateFailed(f"rolled back ({summary}) but the live colour fails its smoke probes: {bad}")
    rel.say(f":rewind: rollback in {environment} ({reason}): {summary}")
    rel.publish("rolled back")
    return {"environment": environment, "reason": reason, "apps": outcome}
