"""Backup commands: ``verify-backups ENV`` and ``backup-config ENV``.

Each runs its Prefect flow, prints one line per check (name, value, limit, ok) and the values
behind the outcome on stdout, and returns 0 on success; after ``FAILED: <reason>`` on stderr, the
exit code of the failure's kind (9: not verified; see greenlight.errors).
Flows are imported when a command runs, so ``greenlight --help`` stays fast.
"""

from __future__ import annotations

import argparse
from typing import Any

from greenlight.commands import JSON_HELP, failed, print_json, stdout_for_json
from greenlight.commands.progress import progress
from greenlight.core.backups import Check, bundles_to_delete, check_line
from greenlight.errors import GreenlightError

COMMANDS = {"verify-backups", "backup-config"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``verify-backups`` and ``backup-config`` subcommands (each sets ``handler``)."""
    p = sub.add_parser("verify-backups", help="verify the newest database dump by restoring it")
    p.add_argument("env", help="the environment whose backups (the profile's 'backups' section) to verify")
    p.add_argument(
        "--random-within-days",
        type=int,
        metavar="N",
        help="also verify one dump picked at random among those of the last N days",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.set_defaults(handler=cmd_verify_backups)
    p = sub.add_parser("backup-config", help="export the namespace's manifests (no secret values) to GCS")
    p.add_argument("env", help="the environment whose namespace to export (backups.config_bucket)")
    p.add_argument(
        "--dry-run", action="store_true", help="print what would be exported where, change nothing"
    )
    p.set_defaults(handler=cmd_backup_config)


def run(args: argparse.Namespace) -> int:
    """Dispatch a parsed backup command."""
    handler = cmd_verify_backups if args.command == "verify-backups" else cmd_backup_config
    return handler(args)


def cmd_verify_backups(args: argparse.Namespace) -> int:
    """Run backup-verification for ``args.env``; print every check and value; 0 when verified."""
    from greenlight.errors import BackupNotVerified
    from greenlight.flows.backup_verification import verify_backups

    as_json = bool(getattr(args, "json", False))
    try:
        with stdout_for_json(as_json), progress(f"verify-backups {args.env}"):
            result = verify_backups(args.env, random_within_days=getattr(args, "random_within_days", None))
    except BackupNotVerified as e:
        if as_json:
            print_json(e.result)
        else:
            _print_verification(e.result)
        return failed(e)
    except GreenlightError as e:
        return failed(e)
    if as_json:
        print_json(result)
        return 0
    _print_verification(result)
    print(f"OK: backup of {result['database']} in {result['environment']} verified ({result.get('dump')})")
    return 0


def _print_verification(result: dict[str, Any]) -> None:
    for c in result.get("checks") or []:
        print(check_line(Check(**c)))
    for key in (
        "dump",
        "dump_time",
        "size_bytes",
        "backup_age_seconds",
        "restore_seconds",
        "achieved_rpo_seconds",
        "format",
        "scratch_database",
        "scratch_dropped",
    ):
        if key in result:
            print(f"{key:<28} {result[key]}")
    picked = result.get("random_dump")
    if picked:
        print(f"{'random_dump':<28} {picked.get('dump')} (restore {picked.get('restore_seconds')}s)")


def cmd_backup_config(args: argparse.Namespace) -> int:
    """Run config-backup for ``args.env`` (or, with ``--dry-run``, print the plan); 0 on success."""
    try:
        if getattr(args, "dry_run", False):
            return _dry_run(args.env)
        from greenlight.flows.config_backup import backup_config

        with progress(f"backup-config {args.env}"):
            result = backup_config(args.env)
    except GreenlightError as e:
        return failed(e)
    for f in result["files"]:
        print(f"{f['path']:<48} {f['size']:>8} bytes  sha256 {f['sha256'][:16]}  ok")
    print(f"{'bundle':<28} {result['bundle']}")
    print(f"{'objects':<28} {result['objects']}")
    print(f"{'deleted_bundles':<28} {len(result['deleted_bundles'])} (retention {result['retention']})")
    print(f"OK: config of {result['namespace']} backed up to {result['bundle']}, every checksum verified")
    return 0


def _dry_run(env: str) -> int:
    """Read the namespace and the bucket; print the files, their destination and what retention would delete."""
    from greenlight.flows.config_backup import plan_bundle
    from greenlight.settings import load_profile
    from greenlight.tasks.storage import bundles_root, list_bundles

    profile = load_profile(env)
    plan = plan_bundle(profile)
    for path, data in plan.files.items():
        print(f"would write {plan.uri}{path} ({len(data)} bytes)")
    print(f"would write {plan.uri}index.json ({len(plan.files)} files)")
    if plan.skipped_kinds:
        print(f"not served by the cluster: {', '.join(plan.skipped_kinds)}")
    assert profile.backups is not None
    existing = list(list_bundles.fn(plan.bucket, bundles_root(profile)))
    doomed = bundles_to_delete(
        [*existing, plan.prefix.rstrip("/").rsplit("/", 1)[-1]], profile.backups.config_retention
    )
    for stamp in doomed:
        print(
            f"would delete gs://{plan.bucket}/{bundles_root(profile)}{stamp}/ (retention {profile.backups.config_retention})"
        )
    print(f"DRY RUN: nothing written; {len(plan.files)} objects from {profile.namespace} to {plan.uri}")
    return 0
