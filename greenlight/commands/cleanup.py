"""The ``cleanup-images ENV [--apply] [--json]`` command: delete GHCR image versions past the retention.

A dry run by default: prints every version of each app's package with ``would delete`` or
``kept`` and why, then a summary line, and deletes nothing. ``--apply`` deletes the planned
versions and prints ``deleted`` for each (``not deleted`` / ``not attempted`` when a delete
failed: the command then exits with the failure's kind after ``FAILED: <reason>``). The flow is
imported when the command runs, so ``greenlight --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from greenlight.commands import JSON_HELP, failed, print_json, stdout_for_json
from greenlight.commands.progress import progress
from greenlight.errors import GreenlightError

COMMANDS = {"cleanup-images"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``cleanup-images`` subcommand."""
    p = sub.add_parser(
        "cleanup-images",
        help="delete GHCR image versions past the retention, never one live, previous or recorded (dry run by default)",
    )
    p.add_argument(
        "env", help="the environment whose apps' image packages to clean (its registry.cleanup section)"
    )
    p.add_argument(
        "--apply",
        action="store_true",
        help="delete the planned versions (default: a dry run that deletes nothing)",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Plan (with ``--apply``, also delete) and print every version's outcome; 0 when done."""
    from greenlight.flows.image_cleanup import image_cleanup

    as_json = bool(getattr(args, "json", False))
    apply = bool(getattr(args, "apply", False))
    try:
        with stdout_for_json(as_json), progress(f"cleanup-images {args.env}"):
            report = image_cleanup(args.env, apply=apply)
    except GreenlightError as e:
        partial = getattr(e, "report", None)
        if isinstance(partial, dict):
            if as_json:
                print_json(partial)
            else:
                print_report(partial)
        return failed(e)
    if as_json:
        print_json(report)
        return 0
    print_report(report)
    return 0


def print_report(report: dict[str, Any]) -> None:
    """One line per version (id, digest, tags, outcome and why), then the summary."""
    mode = "APPLY" if report.get("apply") else "DRY RUN (nothing deleted; --apply deletes)"
    print(
        f"image cleanup of {report['environment']}: {mode}; retention {report['retention_days']} days, "
        f"keep the {report['keep_newest']} newest; protected: {', '.join(report['protected_environments'])}"
    )
    for pkg in report["packages"]:
        print(f"{pkg['image']} (package {pkg['owner']}/{pkg['name']}):")
        if pkg.get("refusal"):
            print(f"  WARNING: {pkg['refusal']}")
        for row in pkg["versions"]:
            tags = ",".join(row["tags"]) or "(untagged)"
            print(
                f"  {row['id']:<10} {row['digest'][:19]}  {row['created_at'][:10]}  {tags:<28} "
                f"{row['outcome']}: {'; '.join(row['reasons'])}"
            )
    print(("OK: " if not report.get("failure") else "STOPPED: ") + report["summary"])
