"""backup-verification against the lab: the seeded dump verifies; every failure kind is caught by name."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from greenlight.clients.monitoring import MonitoringClient
from greenlight.clients.postgres import Postgres
from greenlight.commands.backups import cmd_verify_backups
from greenlight.errors import BackupInvalid, BackupNotVerified
from greenlight.flows.backup_verification import verify_backups
from greenlight.settings import Probe, Profile
from greenlight_lab.state import LabState

from .helpers import SMALL_AGE_S, Crafter, failed_checks, pg_dump, scratch_databases, slack_messages

pytestmark = pytest.mark.lab


def now() -> datetime:
    return datetime.now(UTC)


def failed(profile: Profile) -> BackupNotVerified:
    """Run the flow on ``profile`` expecting it to fail; the exception (with its result)."""
    with pytest.raises(BackupNotVerified) as info:
        verify_backups(profile.name, profile=profile)
    assert isinstance(info.value, BackupInvalid)
    assert info.value.result["verified"] is False
    return info.value


def latest_metric(project: str, name: str, environment: str) -> float | None:
    metric = f"custom.googleapis.com/greenlight/{name}"
    rows = MonitoringClient(project).read_latest(
        f'metric.type="{metric}" metric.labels.environment="{environment}"',
        now() - timedelta(minutes=10),
        now() + timedelta(seconds=5),
    )
    return rows[0][1] if rows else None


def test_seeded_newest_dump_is_verified_published_and_its_scratch_db_dropped(
    lab: LabState, production: Profile, scratch_server: Postgres
) -> None:
    """The newest seeded dump (and one at random from the week) restores, passes every probe and reaches Monitoring."""
    result = verify_backups("production", random_within_days=7)
    assert result["verified"] is True and result["reasons"] == []
    assert result["dump"].startswith("sma-db/") and result["dump_time_source"] == "metadata"
    assert 0 < result["restore_seconds"] < 60
    assert 0 <= result["achieved_rpo_seconds"] < 3600
    assert result["random_dump"]["dump"] != result["dump"]
    assert {c["name"] for c in result["checks"]} >= {
        "found",
        "freshness",
        "size",
        "replica",
        "integrity",
        "restore",
    }
    assert all(c["ok"] for c in result["checks"])
    assert latest_metric("lab-project", "verified", "production") == 1.0
    assert latest_metric("lab-project", "backup_age_seconds", "production") == pytest.approx(
        result["backup_age_seconds"], abs=1
    )
    assert latest_metric("lab-project", "restore_seconds", "production") == pytest.approx(
        result["restore_seconds"]
    )
    assert latest_metric("lab-project", "achieved_rpo_seconds", "production") is not None
    assert scratch_databases(scratch_server) == []
    assert any("verified" in (m["text"] or "") and result["dump"] in m["text"] for m in slack_messages(lab))


def test_cli_json_is_one_document_with_every_check(
    lab: LabState, production: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify-backups production --json` exits 0 and stdout is one JSON document: verified, the dump,
    every check with its value and limit; progress goes to stderr."""
    code = cmd_verify_backups(argparse.Namespace(env="production", random_within_days=None, json=True))
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    doc = json.loads(captured.out)
    assert (
        doc["verified"] is True and doc["environment"] == "production" and doc["dump"].startswith("sma-db/")
    )
    assert {c["name"] for c in doc["checks"]} >= {"found", "freshness", "size", "integrity", "restore"}
    assert all(c["ok"] and "value" in c and "limit" in c for c in doc["checks"])
    assert doc["restore_seconds"] > 0
    assert "progress: verify-backups production: started" in captured.err


def test_truncated_gzip_fails_restore_and_still_drops_the_scratch_db(
    lab: LabState, crafter: Crafter, seeded_newest: Path, scratch_server: Postgres
) -> None:
    """A dump cut in half downloads intact (its hashes are of the cut bytes) but fails the restore, and is named."""
    data = seeded_newest.read_bytes()
    c = crafter.profile("truncated")
    crafter.upload(c, "2026-11-26T0300Z.sql.gz", data[: len(data) // 2], now() - timedelta(hours=1))
    e = failed(c.profile)
    reasons = failed_checks(e)
    assert set(reasons) == {"restore"}
    assert "truncated" in reasons["restore"] and "2026-11-26T0300Z.sql.gz" in reasons["restore"]
    assert "truncated" in str(e)
    assert scratch_databases(scratch_server) == []
    assert latest_metric("lab-project", "verified", "bt-truncated") == 0.0
    assert any("NOT verified" in (m["text"] or "") and "truncated" in m["text"] for m in slack_messages(lab))


def test_replica_with_different_bytes_is_a_mismatch(crafter: Crafter, small_dumps: dict[str, Path]) -> None:
    """A cross-region copy of the same size but other bytes fails on its hashes, naming the replica object."""
    data = small_dumps["gz"].read_bytes()
    corrupt = bytearray(data)
    corrupt[len(corrupt) // 2] ^= 0xFF
    c = crafter.profile("corrupted")
    crafter.upload(c, "2026-11-26T0300Z.sql.gz", data, now() - timedelta(hours=1), replica=bytes(corrupt))
    reasons = failed_checks(failed(c.profile))
    assert set(reasons) == {"replica"}
    assert "md5" in reasons["replica"] and f"gs://sma-db-backups-dr/{c.prefix}" in reasons["replica"]


def test_missing_replica_is_named(crafter: Crafter, small_dumps: dict[str, Path]) -> None:
    """A dump without its cross-region copy is not verified, and the missing copy is named."""
    c = crafter.profile("noreplica")
    crafter.upload(c, "2026-11-26T0300Z.sql.gz", small_dumps["gz"], now() - timedelta(hours=1), replica=None)
    reasons = failed_checks(failed(c.profile))
    assert set(reasons) == {"replica"}
    assert "missing" in reasons["replica"] and "sma-db-backups-dr" in reasons["replica"]


def test_stale_dump_fails_freshness_by_its_dump_time_not_upload_time(
    crafter: Crafter, small_dumps: dict[str, Path]
) -> None:
    """A dump just uploaded but dated two days ago (metadata) is stale against a one-day RPO."""
    c = crafter.profile("stale")
    crafter.upload(c, "2026-11-24T0300Z.sql.gz", small_dumps["gz"], now() - timedelta(days=2))
    e = failed(c.profile)
    reasons = failed_checks(e)
    assert set(reasons) == {"freshness"}
    assert "stale" in reasons["freshness"] and "86400s" in reasons["freshness"]
    assert any(c["name"] == "restore" and c["ok"] for c in e.result["checks"])


def test_shrunken_dump_fails_against_the_median(crafter: Crafter, small_dumps: dict[str, Path]) -> None:
    """A newest dump far smaller than the median of the previous ones fails, with both sizes."""
    c = crafter.profile("shrunken")
    for day in (22, 23, 24):
        crafter.upload(
            c, f"2026-11-{day}T0300Z.sql.gz", os.urandom(200_000), now() - timedelta(days=27 - day)
        )
    crafter.upload(c, "2026-11-25T0300Z.sql.gz", small_dumps["gz"], now() - timedelta(hours=1))
    reasons = failed_checks(failed(c.profile))
    assert set(reasons) == {"size"}
    assert "shrank" in reasons["size"] and "200000" in reasons["size"]


def test_custom_format_dump_of_the_app_database_is_verified(
    lab: LabState, crafter: Crafter, production: Profile, tmp_path: Path
) -> None:
    """A pg_dump -Fc of the lab's app database restores with pg_restore -j and passes the production probes."""
    dumped_at = now()
    dump = pg_dump(lab.env["GREENLIGHT_DATABASE_URL"], tmp_path / "sma.dump", "--format=custom")
    assert production.backups is not None
    c = crafter.profile(
        "custom",
        name_pattern=r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.dump$",
        format="custom",
        probes=production.backups.probes,
        sql_probes=production.backups.sql_probes,
    )
    crafter.upload(c, "2026-11-26T0900Z.dump", dump, dumped_at, fmt="custom")
    result = verify_backups(c.profile.name, profile=c.profile)
    assert result["verified"] is True
    assert result["format"] == "custom"
    assert result["dump"] == c.prefix + "2026-11-26T0900Z.dump"


def test_directory_format_dump_is_downloaded_whole_and_verified(
    crafter: Crafter, small_dumps: dict[str, Path]
) -> None:
    """A directory-format dump (a prefix of files) is found by its toc.dat, streamed down whole and restored."""
    c = crafter.profile(
        "directory", name_pattern=r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.dir/?$", format="directory"
    )
    crafter.upload(c, "2026-11-26T0300Z.dir", small_dumps["dir"], now() - timedelta(hours=1), fmt="directory")
    result = verify_backups(c.profile.name, profile=c.profile)
    assert result["verified"] is True
    assert result["format"] == "directory"
    assert result["dump"] == c.prefix + "2026-11-26T0300Z.dir/"
    files = len(list(small_dumps["dir"].iterdir()))
    assert any(c["name"] == "integrity" and c["value"] == f"{files} files" for c in result["checks"])
    dumped_before_newest = SMALL_AGE_S - 3600  # its dump_time is 1 h ago, its newest row SMALL_AGE_S old
    assert dumped_before_newest <= result["achieved_rpo_seconds"] < dumped_before_newest + 300


def test_probe_below_minimum_rows_fails(crafter: Crafter, small_dumps: dict[str, Path]) -> None:
    """A restored table with fewer rows than its minimum fails the probe, naming table and counts."""
    c = crafter.profile("probe", probes=[Probe(table="items", min_rows=10**9)])
    crafter.upload(c, "2026-11-26T0300Z.sql.gz", small_dumps["gz"], now() - timedelta(hours=1))
    reasons = failed_checks(failed(c.profile))
    assert set(reasons) == {"probe items"}
    assert "3000 rows" in reasons["probe items"] and "1000000000" in reasons["probe items"]


def test_cli_fails_naming_a_missing_bucket(
    lab: LabState,
    production: Profile,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`verify-backups ENV` on a profile whose bucket does not exist exits 9 with a reason naming the bucket,
    in text and with --json."""
    assert production.backups is not None
    profile = production.model_copy(
        update={
            "name": "bt-nobucket",
            "backups": production.backups.model_copy(update={"bucket": "bt-no-such-bucket"}),
        }
    )
    (tmp_path / "bt-nobucket.yaml").write_text(yaml.safe_dump(profile.model_dump(mode="json")))
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(tmp_path))
    code = cmd_verify_backups(argparse.Namespace(env="bt-nobucket", random_within_days=None))
    captured = capsys.readouterr()
    out = captured.out
    assert code == 9  # BackupInvalid: not verified
    assert "FAILED:" in captured.err and "bt-no-such-bucket" in captured.err
    assert any(line.startswith("found") and line.rstrip().endswith("FAIL") for line in out.splitlines())
    assert latest_metric("lab-project", "verified", "bt-nobucket") == 0.0

    code = cmd_verify_backups(argparse.Namespace(env="bt-nobucket", random_within_days=None, json=True))
    captured = capsys.readouterr()
    assert code == 9
    doc = json.loads(captured.out)  # the same verdict as one JSON document; FAILED still on stderr
    assert doc["verified"] is False
    found = next(c for c in doc["checks"] if c["name"] == "found")
    assert found["ok"] is False and "bt-no-such-bucket" in found["reason"]
    assert any(
        line.startswith("FAILED:") and "bt-no-such-bucket" in line for line in captured.err.splitlines()
    )
