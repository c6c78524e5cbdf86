"""Hostile backups: what a bucket holds is not trusted. A dump whose object names would write
files outside the verification's download directory, or a plain dump carrying a psql shell
command, ends NOT verified naming why, and nothing is written outside, no command runs, no
scratch database or downloaded file is left behind.

Each case puts a dump crafted from the small database (two tables, 5000 rows) under a prefix of
its own in the lab's backup buckets (and its cross-region copy, so that only the hostile part
can fail), runs ``verify_backups`` in-process against that prefix, and reads back what is left.
The fault is the crafted object itself (injected by hand: no lab rule expresses it).
"""

from __future__ import annotations

import gzip
import re
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.clients.postgres import Postgres
from greenlight.settings import load_profile
from greenlight_lab.state import LabState
from tests.flows_backup.helpers import (
    SMALL_SQL,
    Crafter,
    failed_checks,
    pg_dump,
    scratch_databases,
    verify_outcome,
)

if TYPE_CHECKING:
    from .conftest import Fault

pytestmark = pytest.mark.lab

ABUSE_DB = "abuse_small"
DIR_NAME = "2026-11-26T0300Z.dir"
DIR_PATTERN = r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.dir/?$"
PLAIN_NAME = "2026-11-26T0300Z.sql.gz"


@pytest.fixture(scope="module")
def small(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The small database as a directory dump (``dir``) and as plain SQL (``sql``), made by the lab's pg_dump 18."""
    server = Postgres(lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"])
    server.drop_database(ABUSE_DB)
    url = server.create_database(ABUSE_DB)
    Postgres(url).query(SMALL_SQL)
    out = tmp_path_factory.mktemp("abuse-dump")
    try:
        return {
            "dir": pg_dump(url, out / "small.dir", "--format=directory"),
            "sql": pg_dump(url, out / "small.sql", "--format=plain"),
        }
    finally:
        server.drop_database(ABUSE_DB)


@pytest.fixture(scope="module")
def crafter(lab: LabState) -> Crafter:
    return Crafter(load_profile("production"), GcsClient())


@pytest.fixture
def scratch_server(lab: LabState) -> Postgres:
    return Postgres(lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"])


@pytest.fixture
def verify_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The directory the verification downloads into (``tempfile``'s default for the case): its parent is
    the case's own ``tmp_path``, so a file escaping the download lands where it can be seen."""
    where = tmp_path / "verify-tmp"
    where.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(where))
    yield where


def files_under(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*"))


@pytest.mark.parametrize(
    ("variant", "member"),
    [
        ("../../x", "../../../{escaped}"),  # from <download>/<dump dir>/ up to the case's tmp_path
        ("//<absolute path>", "{absolute}"),  # <prefix><dump dir>//<absolute path>
    ],
)
def test_directory_dump_member_that_would_escape_the_download_is_refused(
    fault: Fault,
    crafter: Crafter,
    small: dict[str, Path],
    scratch_server: Postgres,
    verify_tmp: Path,
    tmp_path: Path,
    variant: str,
    member: str,
) -> None:
    """NOT verified naming the object; no file written outside (or left inside) the download, no restore run."""
    fault.describe(f"backup bucket: a directory dump member named {variant} (path traversal)")
    escaped = tmp_path / f"escaped-{uuid.uuid4().hex[:6]}"
    member = member.format(escaped=escaped.name, absolute=escaped)
    c = crafter.profile("abuse-traversal", name_pattern=DIR_PATTERN, format="directory")
    dumped = datetime.now(UTC) - timedelta(hours=1)
    crafter.upload(c, DIR_NAME, small["dir"], dumped, fmt="directory")
    hostile = f"{c.prefix}{DIR_NAME}/{member}"
    for bucket in (crafter.bucket, crafter.replica):
        crafter.gcs.upload_bytes(bucket, hostile, b"#!/bin/sh\necho owned\n")
    assert crafter.gcs.stat(crafter.bucket, hostile).name == hostile  # the bucket kept the name as it is
    fault.injected_by_hand()
    before = scratch_databases(scratch_server)

    outcome = verify_outcome(c.profile)

    outside = [p for p in files_under(tmp_path) if not p.startswith("verify-tmp")]
    written = outside + files_under(verify_tmp)
    assert fault.measured_loss("files written outside the download directory", len(outside)) == 0, outside
    assert written == [], f"left behind: {written}"
    assert outcome is not None, "a dump with a member named to escape the download was verified"
    result = outcome.result
    failed = failed_checks(outcome)
    assert set(failed) == {"integrity", "restore"}, failed
    assert repr(hostile) in failed["integrity"] and "cannot be downloaded safely" in failed["integrity"]
    assert "did not download" in failed["restore"]
    assert "NOT verified" in str(outcome) and "cannot be downloaded safely" in str(outcome)
    assert "scratch_database" not in result
    assert scratch_databases(scratch_server) == before == []


def _with_shell_command(sql: bytes, command: bytes, variant: str) -> bytes:
    """pg_dump's plain SQL with ``command`` added: after its own \\unrestrict, or mid-dump with no \\restrict."""
    own = re.search(rb"^\\unrestrict (\S+)\n", sql, re.M)
    assert own is not None and re.search(rb"^\\restrict " + re.escape(own.group(1)) + rb"$", sql, re.M)
    if variant == "after the dump's own \\unrestrict":
        return sql + command
    stripped = re.sub(rb"^\\(?:un)?restrict \S+\n", b"", sql, flags=re.M)
    at = stripped.index(b"\nCOPY ")
    return stripped[: at + 1] + command + stripped[at + 1 :]


@pytest.mark.parametrize("variant", ["after the dump's own \\unrestrict", "mid-dump, without any \\restrict"])
def test_plain_dump_with_a_psql_shell_command_is_refused_and_the_command_never_runs(
    fault: Fault,
    crafter: Crafter,
    small: dict[str, Path],
    scratch_server: Postgres,
    verify_tmp: Path,
    tmp_path: Path,
    variant: str,
) -> None:
    """NOT verified naming the meta-command; the shell command never ran; no scratch database left."""
    fault.describe(f"backup bucket: a plain dump with a psql \\! shell command ({variant})")
    marker = tmp_path / "pwned"
    hostile = _with_shell_command(small["sql"].read_bytes(), f"\\! touch {marker}\n".encode(), variant)
    c = crafter.profile("abuse-shell")
    crafter.upload(c, PLAIN_NAME, gzip.compress(hostile), datetime.now(UTC) - timedelta(hours=1))
    fault.injected_by_hand()
    before = scratch_databases(scratch_server)

    outcome = verify_outcome(c.profile)

    assert fault.measured_loss("shell commands run by the dump", int(marker.exists())) == 0
    assert outcome is not None, "a dump holding a psql shell command was verified"
    result = outcome.result
    failed = failed_checks(outcome)
    assert set(failed) == {"restore"}, failed
    assert "meta-command" in failed["restore"] and "backslash commands are restricted" in failed["restore"]
    assert "NOT verified" in str(outcome) and "meta-command" in str(outcome)
    assert result.get("scratch_dropped") is True
    assert scratch_databases(scratch_server) == before == []
    assert files_under(verify_tmp) == []
