"""The ``monitoring export|diff|apply ENV`` commands: alert policies and uptime checks as files.

- ``export`` writes every alert policy and uptime check of the environment's project as a
  definition file (``<id>.yaml``) in ``--dir`` (default the profile's ``monitoring_code.directory``,
  ``deployments/monitoring`` here), with the profile's values written as placeholders.
- ``diff`` prints each definition as create / update (field by field) / unchanged, and each
  resource no file names as orphaned (labelled by Greenlight) or unmanaged (hand-made); exits 0
  when nothing drifts, 8 (GateFailed) when something does (create, update or orphaned).
- ``apply`` creates and updates (update masks: only the fields that differ), prints how many
  were created, updated and unchanged; ``--prune`` also deletes orphaned ones. Hand-made ones are
  never touched. Every file is validated before anything is written.

Exit codes as every command (greenlight.errors): 2 for a bad file (named), 3 unknown project,
4 Monitoring unreachable, 5 credentials refused, 6 ambiguous identity.
"""

from __future__ import annotations

import argparse
from typing import Any

from greenlight.commands import JSON_HELP, failed, run_and_print
from greenlight.errors import GateFailed

COMMANDS = {"monitoring"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``monitoring`` subcommand and its ``export``, ``diff`` and ``apply``."""
    p = sub.add_parser(
        "monitoring",
        help="alert policies and uptime checks kept as files: export, diff (drift) and apply them",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="{export,diff,apply}")
    helps = {
        "export": "write the project's alert policies and uptime checks as definition files",
        "diff": "show how the project differs from the files (exit 8 when it drifts)",
        "apply": "create and update the project's alert policies and uptime checks from the files",
    }
    for verb, text in helps.items():
        v = verbs.add_parser(verb, help=text)
        v.add_argument(
            "env", metavar="ENV", help="the environment whose project to use (one of the profiles)"
        )
        v.add_argument(
            "--dir",
            default=None,
            help="the definition files' directory (default: the profile's monitoring_code.directory, "
            "relative to the configuration directory)",
        )
        if verb == "apply":
            v.add_argument(
                "--prune",
                action="store_true",
                help="also delete what Greenlight labelled and no file names any more (never a hand-made one)",
            )
        v.add_argument("--json", action="store_true", help=JSON_HELP)
        v.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``args.verb`` for ``args.env``; print the outcome and the values behind it."""
    from greenlight.settings import load_profile
    from greenlight.tasks import monitoring_code as mc

    def work() -> dict[str, Any]:
        profile = load_profile(args.env)
        directory = mc.definitions_dir(profile, args.dir)
        if args.verb == "export":
            return mc.export_project(profile, directory)
        if args.verb == "diff":
            return mc.plan_dict(profile, directory, mc.drift_plan(profile, directory))
        return mc.apply_plan(profile, directory, prune=bool(args.prune))

    show = {"export": print_export, "diff": print_diff}.get(args.verb, print_apply)
    code, report = run_and_print(work, show, bool(getattr(args, "json", False)))
    if report is not None and args.verb == "diff" and report["drift"]:
        c = report["counts"]
        return failed(
            GateFailed(
                f"{args.env}'s monitoring drifts from {report['directory']}: {c['create']} to create, "
                f"{c['update']} to update, {c['orphaned']} orphaned"
            )
        )
    return code


def _who(item: dict[str, Any]) -> str:
    kind = "alert policy" if item["kind"] == "AlertPolicy" else "uptime check"
    ident = f" {item['id']}" if item.get("id") else ""
    return f"{kind}{ident} {item['display_name']!r}"


def print_export(report: dict[str, Any]) -> None:
    for row in report["items"]:
        print(f"{row['kind']} {row['name']} -> {row['file']}")
    print(
        f"OK: exported {len(report['items'])} from {report['project']} to {report['directory']}: "
        f"{len(report['written'])} written, {len(report['unchanged'])} unchanged"
    )


def print_diff(report: dict[str, Any]) -> None:
    print(
        f"monitoring of {report['environment']} (project {report['project']}) against {report['directory']}:"
    )
    for item in report["items"]:
        where = f" [{item['name']}]" if item.get("name") else ""
        note = (
            " (matched by display name: apply adds the greenlight_id label)"
            if item["matched_by"] == "display_name"
            else ""
        )
        print(f"  {item['action']:<10} {_who(item)}{where}{note}")
        for c in item["changes"]:
            print(f"      {c['field']}: {c['project']!r} -> {c['files']!r}")
    c = report["counts"]
    verdict = "DRIFT" if report["drift"] else "OK: no drift"
    print(
        f"{verdict}: {c['create']} to create, {c['update']} to update, {c['unchanged']} unchanged, "
        f"{c['orphaned']} orphaned (labelled, no file), {c['unmanaged']} hand-made (left alone)"
    )


def print_apply(report: dict[str, Any]) -> None:
    for item in report["items"]:
        where = f" [{item['name']}]" if item.get("name") else ""
        fields = f" ({', '.join(item['update_mask'])})" if item["update_mask"] else ""
        print(f"  {item.get('outcome', item['action']):<11} {_who(item)}{where}{fields}")
    left = sum(1 for i in report["items"] if i.get("outcome") == "left alone")
    print(
        f"applied to {report['project']}: {report['created']} created, {report['updated']} updated, "
        f"{report['unchanged']} unchanged, {report['deleted']} deleted, {left} left alone"
        + ("" if report.get("prune") else " (hand-made and orphaned ones; --prune deletes orphaned ones)")
    )
