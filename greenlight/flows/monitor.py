"""Monitor: watch the live colour of every app for a while; roll back on breach."""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.core.alerts import Kind
from greenlight.errors import GateFailed, InputInvalid
from greenlight.flows.bake import retire_failing, rollback_all, step_lines, watch
from greenlight.flows.journal import RunJournal
from greenlight.flows.rollback import record_rollback
from greenlight.settings import Environment, load_profile
from greenlight.tasks.alerts import raise_alert
from greenlight.tasks.kube import read_live


@flow(name="monitor")
def monitor(environment: Environment, seconds: float) -> dict[str, Any]:
    """Watch the live colours for ``seconds``, one analysis interval at a time; roll back on breach.

    Args:
        environment: whose live colours to watch (one of the profiles)
        seconds: how long to watch; a breach of the gate's limits within it rolls back
    """
    if seconds <= 0:
        raise InputInvalid(f"seconds must be positive, not {seconds}")
    profile = load_profile(environment)
    live = read_live(profile)
    colours = {app: s["live_colour"] for app, s in live.items() if s["live_colour"]}
    rel = RunJournal(profile, f"{environment}-monitor", {}, None, None)
    rel.report.title = f"Monitor {environment} for {seconds:g} s"
    watched = watch(profile, colours, seconds, on_interval=lambda app, text: rel.say(f":warning: {text}"))
    status, detail = watched.status, f"{watched.detail}; {watched.summary()}"
    rel.step("watch", "ok" if status == "ok" and watched.watched else "failed", detail)
    if status != "ok":
        failing = {a: c for a, c in colours.items() if live[a]["previous_colour"]}
        done = rollback_all(rel, list(failing), f"breach while monitoring: {detail}")
        record_rollback(profile, list(failing), done, f"breach while monitoring: {detail}", "monitor")
        retire_failing(rel, failing, done)
        steps = step_lines(done)
        for s in steps:
            rel.step("rollback", "ok", s)
        rel.say(f":rewind: breach in {environment}: {detail}; rolled back")
        raise_alert(profile, Kind.ROLLBACK, f"breach while monitoring, rolled back automatically: {detail}")
        rel.event("rolled-back", reason=detail)
        rel.publish("rolled back")
        raise GateFailed(f"breach in {environment}: {detail}; rolled back: {'; '.join(steps)}")
    rel.publish("healthy")
    return {
        "environment": environment,
        "status": status,
        "detail": detail,
        "watched": watched.record(),
        "colours": colours,
    }
