"""Traffic switch by hand: point each app's live traffic at a colour through its router (the
live Service's selector, an HTTPRoute's weights; idempotent, guarded)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.core.switch import MOVED
from greenlight.errors import InputInvalid, ReleaseRefused
from greenlight.flows.concurrency import traffic_lock
from greenlight.flows.journal import RunJournal
from greenlight.settings import Environment, load_profile
from greenlight.tasks.kube import colour_releases, switch_service


@flow(name="traffic-switch")
def switch(
    environment: Environment, colour: str, app: str | None = None, actor: str | None = None
) -> dict[str, Any]:
    """Point each app's live traffic (or ``app``'s) at ``colour``, only when all its pods are ready.

    Args:
        environment: where to move traffic (one of the profiles)
        colour: the colour to point the live Services at (the profile's colours, e.g. blue or green)
        app: one app only; empty moves every app
        actor: who asks (goes on the record)
    """
    profile = load_profile(environment)
    if colour not in profile.release.colours:
        raise InputInvalid(
            f"colour '{colour}' is not one of {environment}'s colours {list(profile.release.colours)}"
        )
    apps = [profile.app(app).name] if app else [a.name for a in profile.apps]
    targets = colour_releases(profile, apps, colour)
    rel = RunJournal(
        profile, f"{environment}-switch-{colour}", {a: d for a, (_, d) in targets.items()}, None, actor
    )
    rel.report.title = f"Switch {environment} to {colour}"
    out = {}
    with traffic_lock(profile):
        for name, (rid, digest) in targets.items():
            step = switch_service(profile, name, colour, rid, {name: digest})
            rel.step(f"{name}: switch", step.action, step.reason)
            out[name] = {
                "action": step.action,
                "reason": step.reason,
                "from": step.from_colour,
                "to": step.to_colour,
            }
            if step.action not in MOVED:
                rel.publish("refused")
                raise ReleaseRefused(f"{name}: {step.reason}")
    rel.event("switched", colours={n: colour for n in out})
    rel.say(
        f":twisted_rightwards_arrows: {environment}: "
        + "; ".join(f"{n}: {o['reason']}" for n, o in out.items())
    )
    rel.publish("switched")
    return {"environment": environment, "colour": colour, "apps": out}
