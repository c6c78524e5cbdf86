"""The ``drill DR_ENV [--keep] [--dry-run]`` command: run the DR drill and print its timeline.

Prints every step with its offset and duration, RTO and RPO against their targets, and returns
0 when the drill passed; after ``FAILED: <reason>`` on stderr, the exit code of the failure's kind
(8 when it failed a step, missed a target or left something behind; see greenlight.errors). ``--dry-run`` prints what the drill would restore, apply and deploy,
changing nothing. The flow is imported when the command runs, so ``greenlight --help`` stays fast.
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from greenlight.commands import JSON_HELP, failed, print_json, stdout_for_json
from greenlight.commands.progress import progress
from greenlight.core.drill import DrillStep, step_line
from greenlight.errors import GreenlightError

COMMANDS = {"drill"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``drill`` subcommand."""
    p = sub.add_parser(
        "drill", help="run the DR drill: restore, apply, deploy, validate, measure RTO/RPO, tear down"
    )
    p.add_argument("env", metavar="DR_ENV", help="a DR environment (its profile has a 'dr' section)")
    p.add_argument(
        "--keep", action="store_true", help="leave the DR workloads and database running afterwards"
    )
    p.add_argument("--dry-run", action="store_true", help="print what the drill would do, change nothing")
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run (or with ``--dry-run`` plan) the drill of ``args.env``; 0 when it passed."""
    as_json = bool(getattr(args, "json", False))
    try:
        if getattr(args, "dry_run", False):
            from greenlight.flows.dr_drill import plan_drill

            with stdout_for_json(as_json):
                plan = list(plan_drill(args.env))
            if as_json:
                print_json({"environment": args.env, "dry_run": True, "plan": plan})
                return 0
            for line in plan:
                print(line)
            print("DRY RUN: nothing restored, applied or deleted")
            return 0
        from greenlight.errors import DrillFailed
        from greenlight.flows.dr_drill import dr_drill

        try:
            with stdout_for_json(as_json), progress(f"drill {args.env}"):
                result = dr_drill(args.env, keep=bool(getattr(args, "keep", False)))
        except DrillFailed as e:
            if as_json:
                print_json(e.result)
            else:
                print_result(e.result)
            return failed(e)
    except GreenlightError as e:
        return failed(e)
    if as_json:
        print_json(result)
        return 0
    print_result(result)
    print(
        f"OK: DR drill {result['drill_id']} of {result['environment']} passed: {result['rto']}; {result['rpo']}"
    )
    return 0


def print_result(result: dict[str, Any]) -> None:
    """The timeline (one line per step), then RTO, RPO and the values behind them."""
    for s in result.get("steps") or []:
        print(step_line(DrillStep(**{**s, "started_at": datetime.fromisoformat(s["started_at"])})))
    for key in ("rto", "rpo"):
        if key in result:
            print(f"{key.upper():<18} {result[key]}")
    for key in (
        "dump",
        "dump_time",
        "newest_row",
        "dump_lag_seconds",
        "bundle",
        "database",
        "pinned",
        "leftovers",
    ):
        if key in result:
            print(f"{key:<18} {result[key]}")
