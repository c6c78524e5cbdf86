"""The ``restore-config ENV [--bundle ID] [--into NAMESPACE] [--apply]`` command: put a config bundle back.

Runs the ``config-restore`` flow: verifies the bundle (checksums, paths, kinds, namespace, whose it
is), prints one line per object (created / changed with its field changes / unchanged; Secrets
created without values or left alone) and the counts. Without ``--apply`` nothing is written and it
exits 0 whatever the diff; it fails only when the bundle is refused (9), the bundle or namespace
does not exist (3), the input is bad (2) or the cluster is unreachable (4). With ``--apply``, a
cluster that changed since the dry run is a conflict (6) and nothing is applied.
"""

from __future__ import annotations

import argparse
from typing import Any

from greenlight.commands import JSON_HELP, run_and_print

COMMANDS = {"restore-config"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``restore-config`` subcommand."""
    p = sub.add_parser(
        "restore-config",
        help="verify a config bundle, diff it against the cluster (server-side dry run), apply with --apply",
    )
    p.add_argument("env", help="the environment whose bundle to restore (backups.config_bucket)")
    p.add_argument(
        "--bundle", metavar="ID", help="the bundle's stamp, e.g. 20261201T023000.123Z (default: the newest)"
    )
    p.add_argument(
        "--into",
        metavar="NAMESPACE",
        help="restore into this existing namespace instead, to inspect beside it",
    )
    p.add_argument(
        "--apply", action="store_true", help="write the changes (default: show the diff, change nothing)"
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run config-restore for ``args.env``; print every object and the counts; 0 unless it failed."""
    from greenlight.flows.config_restore import restore_config

    apply = bool(getattr(args, "apply", False))
    code, _ = run_and_print(
        lambda: restore_config(
            args.env, bundle=getattr(args, "bundle", None), into=getattr(args, "into", None), apply=apply
        ),
        print_result,
        bool(getattr(args, "json", False)),
        f"restore-config {args.env}",
    )
    return code


def print_result(result: dict[str, Any]) -> None:
    """Every object with its action (and field changes), the notes, then the outcome line."""
    for o in result["objects"]:
        print(f"{o['action']:<21} {o['ref']}" + (f": {o['detail']}" if o["detail"] else ""))
        for line in o["changes"]:
            print(f"    {line}")
    for note in result["notes"]:
        print(f"note: {note}")
    for line in result["done"]:
        print(f"done: {line}")
    counts = ", ".join(f"{k} {v}" for k, v in result["counts"].items())
    print(f"counts: {counts}")
    if result["applied"]:
        print(f"OK: {result['outcome']}")
    else:
        print(f"DRY RUN: {result['outcome']}; nothing written (run again with --apply)")
