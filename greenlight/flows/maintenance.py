"""Maintenance: scale down colours idle past the profile's scale-down delay, once they have drained.

Cleanup never touches a colour that is live or that a release holds: it takes the environment's
release lock (and skips its run when a release holds it, an approval wait included), drains each
idle colour (no new connection can reach it, and it served nothing for a window, or the maximum
drain wait passed, which it says), and scales it down only after checking again, under the
traffic lock, that nobody switched traffic to it meanwhile.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from greenlight.errors import LockHeld
from greenlight.flows.concurrency import lock_name, traffic_lock
from greenlight.settings import Environment, load_profile
from greenlight.tasks.kube import drain_colour, read_live, scale_colour
from greenlight.tasks.locks import hold
from greenlight.tasks.policy import logger

RELEASE_LOCK_WAIT_S = 2.0  # a release holding the lock is running (or waits for approval): skip


def idle_colours(
    live: dict[str, dict[str, Any]], delay_s: float, now: datetime
) -> list[tuple[str, str, str]]:
    """(app, colour, reason) of every non-live colour with replicas, switched away from at least
    ``delay_s`` ago; none of an app whose Service is mid-switch (it selects both colours)."""
    out = []
    for app, state in live.items():
        if state.get("overlap"):
            continue
        switched = state.get("switched_at")
        age = (now - datetime.fromisoformat(switched)).total_seconds() if switched else None
        for colour, dep in state["colours"].items():
            if colour == state["live_colour"] or dep["replicas"] == 0:
                continue
            if age is None or age >= delay_s:
                since = f"{age:.0f} s" if age is not None else "no switch recorded"
                out.append((app, colour, f"{app}-{colour} idle ({since} >= {delay_s:g} s)"))
    return out


@flow(name="cleanup")
def cleanup(environment: Environment, dry_run: bool = False, now: bool = False) -> dict[str, Any]:
    """Scale down every idle colour (kept warm for fast rollback until the delay has passed; ``now``
    skips the delay, never the drain).

    Args:
        environment: where to clean up (one of the profiles)
        dry_run: only say what would be scaled down
        now: skip the scale-down delay (never the drain)
    """
    profile = load_profile(environment)
    delay = 0.0 if now else profile.release.scale_down_delay_s
    if dry_run:
        live = read_live(profile)
        todo = idle_colours(live, delay, datetime.now(UTC))
        return _result(
            environment, True, live, todo, [f"{r}: would drain, then scale to 0" for *_, r in todo]
        )
    try:
        with hold(
            lock_name(environment),
            timeout_seconds=RELEASE_LOCK_WAIT_S,
            lease_duration=profile.release.lock_lease_s,
        ):
            live = read_live(profile)
            todo = idle_colours(live, delay, datetime.now(UTC))
            done = []
            for app, colour, reason in todo:
                drained, how = drain_colour(profile, app, colour, live[app].get("switched_at"))
                with traffic_lock(profile):
                    again = read_live(profile)[app]
                    if (
                        again["live_colour"] == colour
                        or again.get("overlap")
                        or (again.get("switched_at") != live[app].get("switched_at"))
                    ):
                        done.append(f"{reason}: left alone: traffic was switched meanwhile")
                        continue
                    scaled = scale_colour(profile, app, colour, 0)
                done.append(f"{reason}: {how}: {scaled}" + ("" if drained else " (NOT drained)"))
    except LockHeld:
        logger().info("a release of %s holds %s: cleanup skipped", environment, lock_name(environment))
        return {
            "environment": environment, "dry_run": False, "scaled_down": [], "kept": [],
            "skipped": f"a release of {environment} is running (it holds {lock_name(environment)}): nothing scaled down",
        }  # fmt: skip
    return _result(environment, False, live, todo, done)


def _result(
    environment: str,
    dry_run: bool,
    live: dict[str, dict[str, Any]],
    todo: list[tuple[str, str, str]],
    done: list[str],
) -> dict[str, Any]:
    idle = {(app, colour) for app, colour, _ in todo}
    kept = [
        f"{app}-{c}"
        for app, s in live.items()
        for c, d in s["colours"].items()
        if d["replicas"] and (app, c) not in idle
    ]
    return {
        "environment": environment,
        "dry_run": dry_run,
        "scaled_down": done,
        "kept": kept,
        "skipped": None,
    }
