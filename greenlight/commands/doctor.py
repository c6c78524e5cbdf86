"""``greenlight doctor ENV``: check a real environment before its first release and say what to fix.

Checks, in order (each one line: ``ok``, ``FAIL ... — fix: ...`` or ``skip``):

- ``cluster``: the API server answers the profile's credentials;
- ``access``: every verb the flows need in the namespace is allowed (SelfSubjectAccessReview of
  each row of greenlight.core.doctor.FLOW_ACCESS that the profile uses);
- ``app <name>``: each app is in blue-green shape (``<app>-<colour>`` Deployments, the live
  Service selecting the colour label, the preview Service);
- ``metrics <name>``: requests of our own to the live colour come back from Monitoring under the
  gate's filter, colour label included;
- ``backups`` / ``backups copy``: the bucket lists, its newest dump is readable and within the
  RPO target, and the replica bucket holds the same dump;
- ``slack``: the bot token the flows would use passes auth.test;
- ``prefect work pools`` / ``concurrency limits`` / ``variables`` / ``secret blocks``: what
  ``greenlight setup`` creates for the environment exists.

Progress goes to stderr while it runs (the metrics checks take seconds); ``--json`` prints one
JSON document on stdout instead of the lines. Exit 0 when nothing failed; otherwise ``FAILED:``
on stderr and 8, the code of a failed gate (greenlight.errors.GateFailed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from greenlight.commands import failed
from greenlight.core import doctor as dr
from greenlight.errors import GateFailed
from greenlight.settings import load_profile

COMMANDS = {"doctor"}
DEFAULT_METRICS_TIMEOUT_S = 150.0  # a GMP scrape is 60 s by default, plus ingestion


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("doctor", help="check an environment before its first release; say what to fix")
    p.add_argument("env", help="the environment: a profile's name (greenlight profile validate lists them)")
    p.add_argument("--json", action="store_true", help="one JSON document on stdout instead of lines")
    p.add_argument(
        "--metrics-timeout-s",
        type=float,
        default=DEFAULT_METRICS_TIMEOUT_S,
        metavar="S",
        help=f"how long to wait for our requests to show in Monitoring (default {DEFAULT_METRICS_TIMEOUT_S:g})",
    )


def expected_prefect_objects(env: str) -> dict[str, list[tuple[str, str]]]:
    """What ``greenlight setup`` creates for ``env`` (its ``expected_objects``): kind -> (name, why)."""
    from greenlight.commands.setup import expected_objects

    out: dict[str, list[tuple[str, str]]] = {}
    for obj in expected_objects([env]):
        out.setdefault(obj.kind, []).append((obj.name, obj.why))
    return out


def diagnose(
    env: str, metrics_timeout_s: float, progress: Callable[[str], None], emit: Callable[[dr.Result], None]
) -> list[dr.Result]:
    """Run every check of ``env`` in order; ``emit`` each result as it is known."""
    from greenlight.tasks import doctor as checks

    profile = load_profile(env)  # a bad profile stops here (InputInvalid, exit 2)
    results: list[dr.Result] = []

    def add(rs: Sequence[dr.Result]) -> None:
        for r in rs:
            results.append(r)
            emit(r)

    progress(f"checking cluster access of {env} ({profile.namespace})")
    add(checks.check_access(profile))
    if profile.dr is not None:  # a drill's target: the drill applies the apps, and removes them
        add(
            [
                dr.skip(f"app {a.name}", f"{env} is a DR target: dr-drill applies the apps")
                for a in profile.apps
            ]
        )
        add([dr.skip(f"metrics {a.name}", f"{env} is a DR target: no live colour") for a in profile.apps])
        live: dict[str, str | None] = {}
    else:
        apps, live = checks.check_apps(profile, env)
        add(apps)
    for app in profile.apps if profile.dr is None else []:
        colour = live.get(app.name)
        if colour:
            progress(
                f"checking metrics of {app.name}: requests to {colour}, read back from Monitoring "
                f"(up to {metrics_timeout_s:g} s)"
            )
        add([checks.check_metrics(profile, app.name, colour, metrics_timeout_s)])
    progress("checking backups")
    add(checks.check_backups(profile))
    progress("checking Slack")
    add([checks.check_slack(profile)])
    progress("checking the Prefect API")
    add(checks.check_prefect(env, expected_prefect_objects(env)))
    return results


def run(args: argparse.Namespace) -> int:
    def progress(text: str) -> None:
        print(f"... {text}", file=sys.stderr, flush=True)

    def emit(r: dr.Result) -> None:
        if not args.json:
            print(dr.line(r), flush=True)

    results = diagnose(args.env, args.metrics_timeout_s, progress, emit)
    if args.json:
        print(dr.to_json(args.env, results))
    else:
        print(dr.summary(args.env, results))
    bad = [r for r in results if r.failed]
    if bad:
        return failed(
            GateFailed(f"{len(bad)} doctor checks failed in {args.env}: {', '.join(r.check for r in bad)}")
        )
    return 0
