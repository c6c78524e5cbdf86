"""backup-verification: prove last night's dump restores, every night.

1. find the newest dump under the profile's bucket and prefix (its name pattern dates it; the
   ``dump_time`` metadata wins when present); optionally also one picked at random within a window;
2. freshness of the newest against the RPO target;
3. size against the median of the previous dumps;
4. integrity: stream it to disk computing MD5/CRC32C, compare with what GCS stored; the
   cross-region copy must exist with the same size and hashes;
5. a full restore into a scratch database, always dropped afterwards;
6. probes: tables, row counts, newest rows (the achieved RPO), SQL probes;
7. metrics to Cloud Monitoring, a markdown artifact, a Slack summary.

Verified only when every check passed. Otherwise the flow publishes ``verified = 0``, the
artifact and a Slack alert with the reason, then raises :class:`BackupNotVerified` (a
``BackupInvalid``) so the Prefect run is Failed.
"""

from __future__ import annotations

import random
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.logging import get_run_logger

from greenlight.core.alerts import Condition, Kind
from greenlight.core.backups import (
    Check,
    DumpObject,
    Verdict,
    check_data_rpo,
    check_found,
    check_freshness,
    check_integrity,
    check_replica,
    check_restore,
    check_size,
    decide_verification,
    previous_sizes,
    random_candidates,
    render_report,
    select_newest,
)
from greenlight.errors import BackupNotVerified, GreenlightError, NotFound
from greenlight.settings import Backups, Environment, Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.backups import backups_of, probe_restored, publish_backup_metrics
from greenlight.tasks.database import (
    create_scratch_database,
    drop_scratch_database,
    restore_dump,
    scratch_server_url,
)
from greenlight.tasks.evidence import emit, publish_report
from greenlight.tasks.notify import notify
from greenlight.tasks.storage import download_dump, find_dumps, stat_replica

METRICS = ("backup_age_seconds", "restore_seconds", "verified", "achieved_rpo_seconds")


@flow(name="backup-verification")
def verify_backups(
    environment: Environment, random_within_days: int | None = None, profile: Profile | None = None
) -> dict[str, Any]:
    """Verify the newest dump of ``environment`` (and one at random within ``random_within_days`` days).

    Returns ``{"verified": True, "reasons": [], "checks": [...], ...values}``; raises
    BackupNotVerified with the reasons when any check failed, after publishing them.

    Args:
        environment: whose backups to verify (one of the profiles with a backups section)
        random_within_days: also restore one dump picked at random from the last N days
        profile: for tests and ad-hoc runs only: a whole profile that replaces the environment's file (leave empty)
    """
    prof = profile if profile is not None else load_profile(environment)
    backups = backups_of(prof, "there is no dump to verify")
    now = datetime.now(UTC)
    checks, values = _run_checks(backups, now, random_within_days)
    verdict = decide_verification(checks)
    result = _result(prof, backups, verdict, values)
    _publish(prof, backups, verdict, values, result)
    if not verdict.verified:
        raise BackupNotVerified(
            f"backup of {backups.database} in {prof.name} NOT verified: {verdict.reason}", result
        )
    return result


def _run_checks(
    backups: Backups, now: datetime, random_within_days: int | None
) -> tuple[list[Check], dict[str, Any]]:
    """Every check of the newest dump (and the random one); the values measured on the way."""
    where = f"gs://{backups.bucket}/{backups.prefix}"
    values: dict[str, Any] = {}
    try:
        dumps, listed = find_dumps(backups)
    except NotFound as e:
        return [
            Check("found", False, "missing", "bucket exists", f"{e}: no dump to verify under {where}")
        ], values
    except GreenlightError as e:
        return [Check("found", False, "error", "bucket listed", f"cannot list {where}: {e}")], values
    newest = select_newest(dumps)
    checks = [check_found(newest, where, backups.name_pattern, listed)]
    if newest is None:
        return checks, values
    values.update(_dump_values(newest, now))
    checks.append(check_freshness(newest.dump_time, now, backups.rpo_target_s, newest.name))
    checks += _verify_dump(backups, dumps, newest, values)
    if random_within_days is not None:
        candidates = random_candidates(dumps, now, random_within_days)
        if candidates:
            picked = candidates[random.SystemRandom().randrange(len(candidates))]
            extra: dict[str, Any] = _dump_values(picked, now)
            checks += _verify_dump(backups, dumps, picked, extra)
            values["random_dump"] = extra
        else:
            get_run_logger().info("no other dump within %d days to pick at random", random_within_days)
            values["random_dump"] = None
    return checks, values


def _dump_values(dump: DumpObject, now: datetime) -> dict[str, Any]:
    return {
        "dump": dump.name,
        "dump_time": dump.dump_time.isoformat(),
        "dump_time_source": dump.dump_time_source,
        "size_bytes": dump.size,
        "backup_age_seconds": round((now - dump.dump_time).total_seconds(), 1),
    }


def _verify_dump(
    backups: Backups, dumps: list[DumpObject], dump: DumpObject, values: dict[str, Any]
) -> list[Check]:
    """Size, replica, integrity, restore and probes of one dump; fills ``values``."""
    checks = [check_size(dump.size, previous_sizes(dumps, dump), backups.size_drop_tolerance, dump.name)]
    if backups.replica_bucket:
        try:
            copies = stat_replica(backups.replica_bucket, dump)
            checks.append(check_replica(dump, copies, backups.replica_bucket))
        except GreenlightError as e:
            reason = f"cannot read the cross-region copy of {dump.name} in gs://{backups.replica_bucket}: {e}"
            checks.append(Check("replica", False, "error", "same size, md5, crc32c", reason, dump.name))
    else:
        checks.append(
            Check("replica", True, "-", "not configured", "no replica_bucket in the profile", dump.name)
        )
    with tempfile.TemporaryDirectory(prefix="greenlight-verify-") as tmp:
        try:
            path, computed = download_dump(backups.bucket, dump, Path(tmp))
        except GreenlightError as e:
            checks.append(check_integrity(dump, {}, str(e)))
            checks.append(check_restore(False, None, "skipped: the dump did not download intact", dump.name))
            return checks
        checks.append(check_integrity(dump, computed, None))
        checks += _restore_and_probe(backups, dump, path, values)
    return checks


def _restore_and_probe(backups: Backups, dump: DumpObject, path: Path, values: dict[str, Any]) -> list[Check]:
    """Restore into a fresh scratch database, probe it, and drop it whatever happened."""
    try:
        server = scratch_server_url()
        scratch, url = create_scratch_database(server)
    except GreenlightError as e:
        return [check_restore(False, None, f"no scratch database: {e}", dump.name)]
    values["scratch_database"] = scratch
    try:
        try:
            restored = restore_dump(path, url, backups.restore_jobs)
        except GreenlightError as e:
            return [check_restore(False, None, str(e), dump.name)]
        values["restore_seconds"] = round(restored.seconds, 3)
        values["format"] = restored.format
        detail = f"{restored.format}, {restored.bytes_in} bytes"
        checks = [check_restore(True, restored.seconds, detail, dump.name)]
        try:
            checks += _probe(backups, dump, url, values)
        except GreenlightError as e:
            checks.append(
                Check("probes", False, "error", "probes run", f"{dump.name}: probes failed: {e}", dump.name)
            )
        return checks
    finally:
        _drop(server, scratch, values)


def _probe(backups: Backups, dump: DumpObject, url: str, values: dict[str, Any]) -> list[Check]:
    """The probes of the restored dump (greenlight.tasks.backups.probe_restored) and the achieved RPO
    (dump time - newest row) against the target."""
    found = probe_restored(url, backups, dump)
    if found.dump_lag_s is not None:
        values["achieved_rpo_seconds"] = round(found.dump_lag_s, 3)
    return [*found.checks, check_data_rpo(found.dump_lag_s, backups.rpo_target_s, dump.name)]


def _drop(server: str, scratch: str, values: dict[str, Any]) -> None:
    """Drop the scratch database; a failure is logged and recorded (``scratch_dropped``), never hidden."""
    try:
        drop_scratch_database(server, scratch)
        values["scratch_dropped"] = True
    except GreenlightError as e:
        get_run_logger().error("scratch database %s NOT dropped: %s", scratch, e)
        values["scratch_dropped"] = False


def _result(profile: Profile, backups: Backups, verdict: Verdict, values: dict[str, Any]) -> dict[str, Any]:
    return {
        "environment": profile.name,
        "database": backups.database,
        "verified": verdict.verified,
        "reasons": list(verdict.reasons),
        "checks": [asdict(c) for c in verdict.checks],
        **values,
    }


def _publish(
    profile: Profile, backups: Backups, verdict: Verdict, values: dict[str, Any], result: dict[str, Any]
) -> None:
    """Metrics, the markdown artifact, the Slack summary and an event; a publishing failure is logged, not fatal."""
    log = get_run_logger()
    gauges = {"verified": 1.0 if verdict.verified else 0.0}
    for name in ("backup_age_seconds", "restore_seconds", "achieved_rpo_seconds"):
        if isinstance(values.get(name), int | float):
            gauges[name] = float(values[name])
    labels = {"database": backups.database, "environment": profile.name}
    try:
        publish_backup_metrics(profile.monitoring.project, profile.monitoring.custom_prefix, gauges, labels)
        result["metrics_published"] = sorted(gauges)
    except GreenlightError as e:
        log.error("backup metrics not published: %s", e)
        result["metrics_published"] = []
    title = f"Backup verification: {backups.database} in {profile.name}"
    shown = {k: v for k, v in values.items() if k != "random_dump"}
    publish_report(f"backup-verification-{profile.name}", render_report(title, verdict, shown), title)
    notify(profile, _slack_text(profile, backups, verdict, values))
    if verdict.verified:
        resolve_alerts(profile, Condition.BACKUP_VERIFIED)
    else:
        what = {"database": backups.database, "dump": values.get("dump"), "reasons": list(verdict.reasons)}
        raise_alert(
            profile, Kind.BACKUP_NOT_VERIFIED, f"backup of {backups.database} NOT verified: {verdict.reason}",
            details=what,
        )  # fmt: skip
    emit(
        f"greenlight.backup.{'verified' if verdict.verified else 'failed'}",
        f"greenlight.environment.{profile.name}",
        {"database": backups.database, "reasons": list(verdict.reasons), "dump": values.get("dump")},
    )


def _slack_text(profile: Profile, backups: Backups, verdict: Verdict, values: dict[str, Any]) -> str:
    what = f"{backups.database} in {profile.name}"
    if not verdict.verified:
        return f":x: backup of {what} NOT verified: {verdict.reason}"
    parts = [f"dump {values.get('dump')}", f"age {values.get('backup_age_seconds')}s"]
    if "restore_seconds" in values:
        parts.append(f"restore {values['restore_seconds']}s")
    if "achieved_rpo_seconds" in values:
        parts.append(f"data RPO {values['achieved_rpo_seconds']}s")
    return f":white_check_mark: backup of {what} verified: " + ", ".join(parts)
