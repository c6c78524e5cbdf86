"""config-backup: export the namespace's manifests (never a secret value) to GCS, read them back, prune.

The bundle lives at ``gs://<backups.config_bucket>/<backups.config_prefix><env>/<stamp>/``:
one JSON file per object (``deployments/backend-blue.json``, ...) with server-managed fields
stripped, and ``index.json`` listing each file's path, kind, name, size and sha256, and whose bundle it is
(environment, namespace and cluster: ``greenlight restore-config`` refuses another's). Secrets are
kept as names, types and keys only. The index is written last, so a bundle without one is
incomplete. After the upload every file is read back and checked against the index; then the
bundles beyond ``backups.config_retention`` (oldest first) are deleted.

The namespace is read by :func:`greenlight.tasks.config_export.export_namespace`; ``latest_bundle`` and
``load_bundle`` (from :mod:`greenlight.tasks.storage`) read bundles back for the DR drill.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from greenlight.core.alerts import Condition, Kind
from greenlight.core.backups import EXPORT_KINDS, bundle_path, bundle_stamp, bundles_to_delete
from greenlight.errors import GreenlightError
from greenlight.settings import Environment, Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.backups import backups_of
from greenlight.tasks.config_export import export_namespace
from greenlight.tasks.evidence import publish_report
from greenlight.tasks.notify import notify
from greenlight.tasks.storage import (
    INDEX,
    bundles_root,
    config_bucket,
    delete_objects,
    latest_bundle,
    list_bundles,
    load_bundle,
    sha256_hex,
    upload_objects,
    verify_bundle,
)

__all__ = ["BundlePlan", "backup_config", "build_bundle", "latest_bundle", "load_bundle", "plan_bundle"]


@dataclass(frozen=True)
class BundlePlan:
    """What one config backup writes: where, which files (path -> JSON bytes), and which kinds the cluster lacks."""

    bucket: str
    prefix: str
    files: dict[str, bytes]
    index: dict[str, Any]
    skipped_kinds: list[str]

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}"


def plan_bundle(profile: Profile, now: datetime | None = None) -> BundlePlan:
    """Read the namespace and build the bundle (files and index), writing nothing; plain Python (no Prefect run)."""
    objects, skipped = export_namespace.fn(profile)
    return build_bundle(profile, objects, skipped, now)


def build_bundle(
    profile: Profile,
    objects: list[tuple[str, str, dict[str, Any]]],
    skipped: list[str],
    now: datetime | None = None,
) -> BundlePlan:
    """The bundle for exported ``objects``: one JSON file each, sorted keys, and the index of their sha256."""
    bucket = config_bucket(profile)
    created = (now or datetime.now(UTC)).astimezone(UTC)
    prefix = f"{bundles_root(profile)}{bundle_stamp(created)}/"
    kinds = {k.plural: k for k in EXPORT_KINDS}
    files: dict[str, bytes] = {}
    entries = []
    for plural, name, obj in sorted(objects, key=lambda o: (o[0], o[1])):
        path = bundle_path(kinds[plural], name)
        data = (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode()
        files[path] = data
        entries.append(
            {"path": path, "kind": obj["kind"], "name": name, "size": len(data), "sha256": sha256_hex(data)}
        )
    index = {
        "environment": profile.name,
        "namespace": profile.namespace,
        # whose bundle this is (config-restore refuses another's): the profile's kube context
        "cluster": profile.cluster.context or "in-cluster",
        "created": created.isoformat(),
        "skipped_kinds": skipped,
        "files": entries,
    }
    return BundlePlan(bucket, prefix, files, index, skipped)


@flow(name="config-backup")
def backup_config(environment: Environment, profile: Profile | None = None) -> dict[str, Any]:
    """Export ``environment``'s namespace to a new bundle, verify it read back, keep the newest N bundles.

    Returns the bundle's URI, its files and what retention deleted; raises when the bundle does
    not read back intact (after a Slack alert).

    Args:
        environment: whose namespace to export (one of the profiles)
        profile: for tests and ad-hoc runs only: a whole profile that replaces the environment's file (leave empty)
    """
    prof = profile if profile is not None else load_profile(environment)
    log = get_run_logger()
    plan = build_bundle(prof, *export_namespace(prof))
    index_bytes = (json.dumps(plan.index, indent=2, sort_keys=True) + "\n").encode()
    try:
        upload_objects(plan.bucket, {plan.prefix + p: b for p, b in plan.files.items()})
        upload_objects(plan.bucket, {plan.prefix + INDEX: index_bytes})  # last: marks the bundle complete
        verify_bundle(plan.bucket, plan.prefix)
    except GreenlightError as e:
        notify(prof, f":x: config backup of {prof.namespace} ({prof.name}) FAILED: {e}")
        raise_alert(prof, Kind.CONFIG_BACKUP_FAILED, f"config backup of {prof.namespace} FAILED: {e}")
        raise
    deleted = _prune(prof, plan.bucket)
    log.info(
        "config bundle %s: %d objects, verified; deleted %d old bundles",
        plan.uri,
        len(plan.files),
        len(deleted),
    )
    result = {
        "environment": prof.name,
        "namespace": prof.namespace,
        "bundle": plan.uri,
        "prefix": plan.prefix,
        "objects": len(plan.files),
        "files": plan.index["files"],
        "skipped_kinds": plan.skipped_kinds,
        "verified": True,
        "deleted_bundles": deleted,
        "retention": _retention(prof),
    }
    publish_report(f"config-backup-{prof.name}", _report(result), f"Config backup: {prof.namespace}")
    resolve_alerts(prof, Condition.CONFIG_BACKUP_SUCCEEDED)
    notify(
        prof,
        f":white_check_mark: config backup of {prof.namespace} ({prof.name}): {len(plan.files)} objects "
        f"to {plan.uri}, checksums verified, {len(deleted)} old bundle(s) pruned",
    )
    return result


def _retention(profile: Profile) -> int:
    return backups_of(profile, "it names no config_retention").config_retention


def _prune(profile: Profile, bucket: str) -> list[str]:
    """Delete every bundle beyond the newest ``config_retention``; the deleted bundles' prefixes."""
    root = bundles_root(profile)
    bundles = list_bundles(bucket, root)
    doomed = bundles_to_delete(list(bundles), _retention(profile))
    for stamp in doomed:
        delete_objects(bucket, bundles[stamp])
    return [f"{root}{stamp}/" for stamp in doomed]


def _report(result: dict[str, Any]) -> str:
    lines = [
        f"# Config backup: {result['namespace']} ({result['environment']})",
        "",
        f"**verified**: {len(result['files'])} objects in `{result['bundle']}`, every sha256 read back",
        "",
        "| file | kind | size | sha256 |",
        "|---|---|---|---|",
    ]
    lines += [f"| {f['path']} | {f['kind']} | {f['size']} | `{f['sha256'][:16]}…` |" for f in result["files"]]
    lines += [
        "",
        f"retention {result['retention']}; deleted: {', '.join(result['deleted_bundles']) or 'none'}",
    ]
    if result["skipped_kinds"]:
        lines.append(f"kinds the cluster does not serve: {', '.join(result['skipped_kinds'])}")
    return "\n".join(lines) + "\n"
