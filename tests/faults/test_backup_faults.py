"""GCS faults during backup verification: transient errors and stalls are retried and the whole dump
is still verified; errors that never stop end NOT verified, naming GCS, leaving nothing behind.

Each case puts a small dump (two tables, 5000 rows, gzipped plain SQL) under a prefix of its own in
the lab's backup buckets, adds fault rules on target ``gcs`` (the lab's HTTP front before
fake-gcs-server: resource ``download`` is the object's media GET, ``metadata`` the listing and
the object reads), runs ``verify_backups`` in-process against that prefix, and reads back what
was left: scratch databases on the PostgreSQL server, files in the verification's temp directory.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google_crc32c
import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.clients.postgres import Postgres
from greenlight.errors import BackupNotVerified
from greenlight.flows.backup_verification import verify_backups
from greenlight.settings import load_profile
from greenlight_lab.state import LabState
from tests.flows_backup.helpers import SMALL_SQL, Crafted, Crafter, pg_dump, scratch_databases

if TYPE_CHECKING:
    from .conftest import Fault

pytestmark = pytest.mark.lab
GCS_BUDGET_S = 6.0  # each GCS operation's budget, its retries included (GREENLIGHT_GCS_TIMEOUT_S)


@pytest.fixture(scope="module", autouse=True)
def gcs_budget() -> Iterator[None]:
    """A short GCS budget for the flow's client (requests abandoned after 2 s), to keep the cases quick."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_GCS_TIMEOUT_S", str(GCS_BUDGET_S))
        yield


FAULT_DB = "fault_small"
EXPECTED_ROWS = {"items": 3000, "notes": 2000}  # what SMALL_SQL inserts
DUMP_NAME = "2026-11-26T0300Z.sql.gz"


@pytest.fixture(scope="module")
def small_dump(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small database dumped as gzipped plain SQL (made on the scratch server, then dropped)."""
    server = Postgres(lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"])
    server.drop_database(FAULT_DB)
    url = server.create_database(FAULT_DB)
    Postgres(url).query(SMALL_SQL)
    try:
        return pg_dump(
            url, tmp_path_factory.mktemp("fault-dump") / "small.sql.gz", "--format=plain", "--compress=gzip:6"
        )
    finally:
        server.drop_database(FAULT_DB)


@pytest.fixture(scope="module")
def crafter(lab: LabState) -> Crafter:
    return Crafter(load_profile("production"), GcsClient())


@pytest.fixture(scope="module")
def request_timeout_s(lab: LabState) -> float:
    """How long one GCS request of the flow's client may take before it is abandoned and retried."""
    return GcsClient(timeout_s=GCS_BUDGET_S).request_timeout_s


@pytest.fixture
def scratch_server(lab: LabState) -> Postgres:
    return Postgres(lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"])


@pytest.fixture
def verify_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The directory the verification streams its download into (``tempfile``'s default for the case),
    so that what it leaves behind can be listed."""
    where = tmp_path / "verify-tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    yield where


def upload(crafter: Crafter, case: str, dump: Path) -> Crafted:
    """The dump (and its cross-region copy) under a fresh prefix, dated an hour ago; the profile reading it."""
    crafted = crafter.profile(f"fault-{case}")
    crafter.upload(crafted, DUMP_NAME, dump, datetime.now(UTC) - timedelta(hours=1))
    return crafted


def crc32c_b64(data: bytes) -> str:
    return base64.b64encode(google_crc32c.Checksum(data).digest()).decode("ascii")


def restored_rows(result: dict[str, Any]) -> dict[str, int]:
    """Rows per probed table of the restored scratch database, read from the probe checks' values."""
    rows = {}
    for check in result["checks"]:
        match = re.match(r"probe (\w+)$", check["name"])
        if match:
            rows[match.group(1)] = int(check["value"].split(" rows")[0])
    return rows


def left_behind(where: Path) -> list[str]:
    """Every file or directory still under ``where``."""
    return sorted(str(p.relative_to(where)) for p in where.rglob("*"))


def assert_verified_whole(
    fault: Fault, result: dict[str, Any], dump: Path, crafted: Crafted, gcs: GcsClient
) -> None:
    """Verified, on every byte of the dump: the hashes GCS stored are those of the local file, the
    streamed bytes matched them (integrity), and every row came back from the restore."""
    data = dump.read_bytes()
    assert result["verified"] is True, result["reasons"]
    assert result["dump"] == crafted.prefix + DUMP_NAME and result["size_bytes"] == len(data)
    integrity = next(c for c in result["checks"] if c["name"] == "integrity")
    assert integrity["ok"] and integrity["value"] == f"crc32c {crc32c_b64(data)}"
    stored = gcs.read_bytes(crafted.profile.backups.bucket, result["dump"])  # type: ignore[union-attr]
    assert hashlib.sha256(stored).hexdigest() == hashlib.sha256(data).hexdigest()
    rows = restored_rows(result)
    missing = sum(n - rows.get(table, 0) for table, n in EXPECTED_ROWS.items())
    assert fault.measured_loss("rows missing after restore", missing) == 0, rows


@pytest.mark.parametrize(
    ("resource", "calls"),
    [("download", "the dump's download"), ("metadata", "the bucket listing and object reads")],
)
def test_transient_503s_are_retried_and_the_whole_dump_verified(
    fault: Fault,
    crafter: Crafter,
    small_dump: Path,
    scratch_server: Postgres,
    verify_tmp: Path,
    resource: str,
    calls: str,
) -> None:
    """Two 503s on GCS are retried: the dump is verified on all of its bytes and rows, nothing is left behind."""
    fault.describe(f"gcs: 2 x 503 on {calls}")
    crafted = upload(crafter, f"503-{resource}", small_dump)
    rule = fault.inject("gcs", verb="get", resource=resource, status=503, count=2)
    result = verify_backups(crafted.profile.name, profile=crafted.profile)
    assert fault.fired(rule) == 2
    assert_verified_whole(fault, result, small_dump, crafted, crafter.gcs)
    assert scratch_databases(scratch_server) == []
    assert left_behind(verify_tmp) == []


def test_download_stalled_past_the_client_timeout_is_retried(
    fault: Fault,
    crafter: Crafter,
    small_dump: Path,
    scratch_server: Postgres,
    verify_tmp: Path,
    request_timeout_s: float,
) -> None:
    """A download held longer than one request may take is abandoned and fetched again, well before the stall ends."""
    # long enough that a loaded machine's verification (restore and probes after the retry) still
    # ends well before the stall would have: only a retry explains it
    stall_s = request_timeout_s * 5
    fault.describe(
        f"gcs: download stalled {stall_s:.0f} s (client request timeout {request_timeout_s:.0f} s)"
    )
    crafted = upload(crafter, "stall", small_dump)
    rule = fault.inject("gcs", verb="get", resource="download", mode="stall", stall_s=stall_s, count=1)
    started = time.monotonic()
    result = verify_backups(crafted.profile.name, profile=crafted.profile)
    elapsed = time.monotonic() - started
    assert fault.fired(rule) == 1
    # waited out the request timeout, then retried: not the stall's end (which would also verify)
    assert request_timeout_s <= elapsed < stall_s, elapsed
    assert_verified_whole(fault, result, small_dump, crafted, crafter.gcs)
    assert scratch_databases(scratch_server) == []
    assert left_behind(verify_tmp) == []


def test_download_errors_that_never_stop_fail_naming_gcs(
    fault: Fault, crafter: Crafter, small_dump: Path, scratch_server: Postgres, verify_tmp: Path
) -> None:
    """503 on every download: NOT verified, the reason names the GCS object and status, no scratch database or partial file."""
    fault.describe("gcs: 503 on every download until cleared")
    crafted = upload(crafter, "down", small_dump)
    before = scratch_databases(scratch_server)
    rule = fault.inject("gcs", verb="get", resource="download", status=503, count=-1)
    started = time.monotonic()
    with pytest.raises(BackupNotVerified) as info:
        verify_backups(crafted.profile.name, profile=crafted.profile)
    elapsed = time.monotonic() - started
    fired = fault.fired(rule)
    fault.clear()
    fault.describe(f"gcs: 503 on every download until cleared (NOT verified after {elapsed:.0f} s)")
    result = info.value.result
    assert fired > 1 and result["verified"] is False
    # the client's budget is spent once: the task does not start it over (that took 6 minutes)
    assert elapsed < 3 * GCS_BUDGET_S, elapsed
    failed = {c["name"]: c["reason"] for c in result["checks"] if not c["ok"]}
    assert set(failed) == {"integrity", "restore"}, failed
    uri = f"gs://{crafted.profile.backups.bucket}/{crafted.prefix}{DUMP_NAME}"  # type: ignore[union-attr]
    assert uri in failed["integrity"] and "503" in failed["integrity"], failed["integrity"]
    assert "did not download" in failed["restore"]
    assert uri in str(info.value) and "NOT verified" in str(info.value)
    assert "restore_seconds" not in result and "scratch_database" not in result
    assert scratch_databases(scratch_server) == before == []
    assert left_behind(verify_tmp) == []
