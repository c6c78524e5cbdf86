"""``greenlight diagnose ENV [--app APP] [--colour C] [--lines N] [--json]``: what a person would
type kubectl for, for any environment at any time.

Per app (every app of the profile, or ``--app``) and colour (every colour, or ``--colour``): each
pod's phase, readiness, restarts, container state and reason, its last Events (Warning first,
with counts), the last ``--lines`` log lines (redacted) of pods that are not running and ready
(of every pod with ``--all-logs``), and the answers of the profile's smoke probes through the Service that selects the colour
(``--no-probes`` skips them). Unhealthy pods come first, each with one line saying why.

Exit 0 when it could read (healthy or not: the output says which); 3 for an unknown app or no
Deployment of the colour; 2 for a colour the profile does not have or a bad ``--lines``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from greenlight.commands import JSON_HELP, print_json, stdout_for_json
from greenlight.core import diagnostics as dg
from greenlight.core.redact import redact
from greenlight.errors import GreenlightError, InputInvalid, NotFound
from greenlight.settings import Profile, load_profile

COMMANDS = {"diagnose"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    text = "show why an app's pods are unhealthy: states, restarts, Events, redacted log lines, probe answers"
    p = sub.add_parser("diagnose", help=text, description=text)
    p.add_argument("env", help="the environment: a profile's name (greenlight profile validate lists them)")
    p.add_argument("--app", help="only this app (default: every app of the profile)")
    p.add_argument("--colour", help="only this colour (default: every colour of release.colours)")
    p.add_argument(
        "--lines",
        type=int,
        default=dg.DEFAULT_LINES,
        metavar="N",
        help=f"log lines per container run of each unhealthy pod (default {dg.DEFAULT_LINES}; 0: none)",
    )
    p.add_argument(
        "--all-logs",
        action="store_true",
        help="read the logs of every pod, also of ready ones (an app answering 500 looks healthy to Kubernetes)",
    )
    p.add_argument(
        "--no-probes", action="store_true", help="do not run the smoke probes against the colours' Services"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)


def _probes(profile: Profile, app: str, colour: str | None) -> tuple[list[Any], list[str]]:
    """The smoke probes' answers through the Service selecting each colour asked; notes of what failed."""
    from greenlight.tasks.gate import service_colours
    from greenlight.tasks.probes import smoke

    try:
        selects = service_colours(profile, app)
    except GreenlightError as e:
        return [], [f"smoke probes: Services not readable: {e}"]
    results: list[Any] = []
    notes: list[str] = []
    for target in ("live", "preview"):
        served = selects.get(target)
        if served is None or (colour is not None and served != colour):
            continue
        try:
            for r in smoke.fn(profile, app, target):  # type: ignore[arg-type]
                results.append(dataclasses.replace(r, name=f"{served} via {target}: {r.name}"))
        except GreenlightError as e:
            notes.append(f"smoke probes of {served} via {target}: {e}")
    return results, notes


def run(args: argparse.Namespace) -> int:
    from greenlight.tasks.diagnostics import collect

    if args.lines < 0:
        raise InputInvalid(f"--lines must be 0 or more, not {args.lines}")
    profile = load_profile(args.env)
    known = [a.name for a in profile.apps]
    if args.app and args.app not in known:
        raise NotFound(
            f"unknown app '{args.app}' in environment '{profile.name}' (known: {', '.join(known)})"
        )
    colours = list(profile.release.colours)
    if args.colour and args.colour not in colours:
        raise InputInvalid(
            f"unknown colour '{args.colour}' for environment '{profile.name}' (colours: {', '.join(colours)})"
        )
    apps = [args.app] if args.app else known
    diagnoses: list[dg.Diagnosis] = []
    with stdout_for_json(args.json):
        for app in apps:
            probes, notes = _probes(profile, app, args.colour) if not args.no_probes else ([], [])
            d = collect(profile, app, args.colour, args.lines, probes, every_log=args.all_logs)
            diagnoses.append(dataclasses.replace(d, notes=(*d.notes, *(redact(n) for n in notes))))
    if args.json:
        print_json(
            {
                "environment": profile.name,
                "namespace": profile.namespace,
                "healthy": all(dg.to_dict(d)["healthy"] for d in diagnoses),
                "diagnoses": [dg.to_dict(d) for d in diagnoses],
            }
        )
        return 0
    for d in diagnoses:
        print(dg.render_text(d), flush=True)
    bad = [p for d in diagnoses for p in d.unhealthy]
    failed_probes = [p for d in diagnoses for p in d.probes if not p.ok]
    print(
        f"{profile.name}: {len(bad)} unhealthy pod{'s' if len(bad) != 1 else ''}"
        + (f" ({', '.join(p.name for p in bad)})" if bad else "")
        + f", {len(failed_probes)} failed smoke probe{'s' if len(failed_probes) != 1 else ''}",
        flush=True,
    )
    return 0
