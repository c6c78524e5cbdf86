"""The ``adopt ENV APP [--dry-run]`` command: turn an app that runs as one plain Deployment behind
its Service into the blue-green shape Greenlight releases, with no failed request.

Prints the plan (each step and what each object becomes), then a line per step as it is done,
with progress lines while it waits, and ``OK: ...`` with the resulting shape. ``--dry-run``
prints the plan and changes nothing. An app already in shape: says so, exits 0. What blocks
adoption: ``FAILED: ...`` naming each blocker, exit 2 (bad input), 3 (nothing to adopt) or 6 (a
conflict in the cluster); nothing is changed. A failure midway is undone (back to the plain
shape) and exits with its kind. The environment's release lock is held throughout (no release
runs meanwhile) and its traffic lock around the Service's narrowing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator

from greenlight.commands import failed
from greenlight.core.adopt import AdoptPlan
from greenlight.errors import Conflict, GreenlightError, InputInvalid, NotFound
from greenlight.settings import Profile, load_profile

COMMANDS = {"adopt"}
LOCK_WAIT_S = 5.0


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``adopt`` subcommand."""
    p = sub.add_parser(
        "adopt",
        help="turn a plain Deployment behind its Service into the blue-green shape, losing no request",
    )
    p.add_argument("env", help="the environment: a profile's name (greenlight profile validate lists them)")
    p.add_argument("app", help="the app's name in the profile")
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")


def _progress(line: str) -> None:
    print(line, flush=True)


def run(args: argparse.Namespace) -> int:
    """Plan (and unless ``--dry-run``, run) the adoption of ``args.app`` in ``args.env``."""
    from greenlight.tasks.adopt import read_plan

    try:
        profile = load_profile(args.env)
        app = profile.app(args.app)
        if profile.traffic.router != "service-selector":
            raise InputInvalid(
                f"{profile.name} routes traffic with {profile.traffic.router}: adopt converts an app behind a "
                "Service selector only (for an HTTPRoute, create the colours' Services and the route: "
                "docs/traffic-routers.md)"
            )
        if not args.dry_run:
            with _release_lock(profile.name, profile.release.lock_lease_s):
                return _adopt(profile, app.name)
        plan = read_plan(profile, app.name)
        done = _report_plan(plan)
        if done is not None:
            return done
        print("DRY RUN: nothing changed")
        return 0
    except GreenlightError as e:
        return failed(e)


def _report_plan(plan: AdoptPlan) -> int | None:
    """Print the plan; the exit code when there is nothing to run (refused, or already in shape)."""
    from greenlight.core.adopt import plan_lines

    if plan.outcome == "refused":
        return _refuse(plan.reason, plan.refusal_kind)
    if plan.outcome == "in-shape":
        print(f"OK: {plan.reason}")
        return 0
    for line in plan_lines(plan):
        print(line, flush=True)
    return None


def _refuse(reason: str, kind: str | None) -> int:
    error: GreenlightError
    if kind == "not-found":
        error = NotFound(reason)
    elif kind == "conflict":
        error = Conflict(reason)
    else:
        error = InputInvalid(reason)
    return failed(error)


def _adopt(profile: Profile, app_name: str) -> int:
    """Plan under the release lock (what holds now), print the plan, run it, verify the result."""
    from greenlight.core.adopt import plan_lines
    from greenlight.flows.concurrency import traffic_lock
    from greenlight.tasks.adopt import adopt, read_plan

    plan = read_plan(profile, app_name)
    done = _report_plan(plan)
    if done is not None:
        return done
    # each step's line is printed as it is done ("done: ..."), with "waiting: ..." lines between
    adopt(profile, app_name, plan, _progress, around_switch=lambda: traffic_lock(profile))
    after = read_plan(profile, app_name)
    if after.outcome != "in-shape":  # verify the result as a rerun would see it
        print("\n".join(plan_lines(after)), file=sys.stderr)
        return failed(Conflict(f"{app_name}: adoption ran but the result is not in shape: {after.reason}"))
    app = profile.app(app_name)
    colour = plan.colour
    other = next(c for c in profile.release.colours if c != colour)
    print(
        f"OK: {app_name} adopted: Service {app.service} selects {profile.release.colour_label}={colour} "
        f"(Deployment {app_name}-{colour}, {plan.replicas} replica(s), {plan.image}); preview Service "
        f"{app.preview} selects {other}; {plan.source} kept at 0 replicas"
    )
    return 0


@contextlib.contextmanager
def _release_lock(environment: str, lease_s: float) -> Iterator[None]:
    """Hold the environment's release lock, so no release runs while the app changes shape (a
    missing lock: NotFound naming it, with "run `greenlight setup`")."""
    from greenlight.errors import LockHeld
    from greenlight.flows.concurrency import lock_name
    from greenlight.tasks.locks import hold

    try:
        with hold(lock_name(environment), lease_duration=lease_s, timeout_seconds=LOCK_WAIT_S):
            yield
    except LockHeld as e:
        raise Conflict(
            f"a release of {environment} is running (it holds {lock_name(environment)}): adopt when it is done"
        ) from e
