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

from greenlight.commands import JSON_HELP, run_and_print

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

    apply = bool(getattr(args, "apply", False))
    code, _ = run_and_print(
        lambda: image_cleanup(args.env, apply=apply),
        print_report,
        bool(getattr(args, "json", False)),
        f"cleanup-images {args.env}",
    )
    return code


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
