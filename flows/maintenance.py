"""Maintenance: scale down colours idle past the profile's scale-down delay."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from greenlight.settings import load_profile
from tasks.kube import read_live, scale_colour


def idle_colours(
    live: dict[str, dict[str, Any]], delay_s: float, now: datetime
) -> list[tuple[str, str, str]]:
    """(app, colour, reason) of every non-live colour with replicas, switched away from longer than ``delay_s`` ago."""
    out = []
    for app, state in live.items():
        switched = state.get("switched_at")
        age = (now - datetime.fromisoformat(switched)).total_seconds() if switched else None
        for colour, dep in state["colours"].items():
            if colour == state["live_colour"] or dep["replicas"] == 0:
                continue
            if age is None or age >= delay_s:
                since = f"{age:.0f} s" if age is not None else "no switch recorded"
                out.append((app, colour, f"{app}-{colour} idle ({since} >= {delay_s:g} s): scaling to 0"))
    return out


@flow(name="cleanup")
def cleanup(environment: str, dry_run: bool = False) -> dict[str, Any]:
    """Scale down every idle colour (kept warm for fast rollback until the delay has passed)."""
    profile = load_profile(environment)
    live = read_live(profile)
    todo = idle_colours(live, profile.release.scale_down_delay_s, datetime.now(UTC))
    done = []
    for app, colour, reason in todo:
        done.append(reason if dry_run else scale_colour(profile, app, colour, 0))
    idle = {(app, colour) for app, colour, _ in todo}
    kept = [
        f"{app}-{c}"
        for app, s in live.items()
        for c, d in s["colours"].items()
        if d["replicas"] and (app, c) not in idle
    ]
    return {"environment": environment, "dry_run": dry_run, "scaled_down": done, "kept": kept}
