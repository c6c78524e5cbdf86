"""Helpers for the backup flow tests: the small database, pg_dump, crafted dumps, lab read-backs."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from greenlight.clients.gcs import GcsClient
from greenlight.clients.postgres import Postgres
from greenlight.errors import BackupNotVerified
from greenlight.flows.backup_verification import verify_backups
from greenlight.settings import Probe, Profile
from greenlight_lab.state import LabState

SMALL_DB = "bt_small"
SMALL_SQL = """
CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO items SELECT i, 'item ' || i, now() - interval '2 hours' - (3000 - i) * interval '10 seconds'
FROM generate_series(1, 3000) AS i;
CREATE TABLE notes (id bigint PRIMARY KEY, item_id bigint REFERENCES items (id), body text);
INSERT INTO notes SELECT i, 1 + i % 3000, repeat('note ', 20) FROM generate_series(1, 2000) AS i;
"""
SMALL_PROBES = [
    Probe(table="items", min_rows=100, timestamp_column="created_at"),
    Probe(table="notes", min_rows=1),
]
SMALL_AGE_S = 7200  # the newest small row is this old when the database is made


def pg_dump(url: str, dest: Path, *args: str) -> Path:
    """Run the lab's pg_dump of the database at ``url`` into ``dest``."""
    tool = Path(os.environ["GREENLIGHT_PG_BIN"]) / "pg_dump"
    subprocess.run(
        [str(tool), "--no-owner", "--no-privileges", *args, f"--file={dest}", f"--dbname={url}"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return dest


def scratch_databases(server: Postgres) -> list[str]:
    """Names of the verification's scratch databases still on the server."""
    return [
        str(r[0]) for r in server.query("SELECT datname FROM pg_database WHERE datname LIKE 'gl_verify_%'")
    ]


@dataclass
class Crafted:
    """A prefix of crafted dumps and the profile that points at it."""

    prefix: str
    profile: Profile


class Crafter:
    """Uploads crafted dumps to a fresh prefix of the primary (and replica) bucket."""

    def __init__(self, production: Profile, gcs: GcsClient) -> None:
        assert production.backups is not None
        self.base, self.gcs = production, gcs
        self.bucket = production.backups.bucket
        self.replica = production.backups.replica_bucket or ""

    def profile(self, case: str, **backups: Any) -> Crafted:
        """A production profile copy named ``bt-<case>`` reading ``bt-crafted/<case>-<random>/``."""
        assert self.base.backups is not None
        prefix = f"bt-crafted/{case}-{uuid.uuid4().hex[:6]}/"
        settings = {"prefix": prefix, "probes": SMALL_PROBES, "sql_probes": [], **backups}
        b = self.base.backups.model_copy(update=settings)
        return Crafted(prefix, self.base.model_copy(update={"name": f"bt-{case}", "backups": b}))

    def upload(
        self,
        crafted: Crafted,
        name: str,
        src: Path | bytes,
        dump_time: datetime,
        replica: Path | bytes | bool | None = True,
        fmt: str = "plain-gzip",
    ) -> None:
        """Upload ``src`` as ``<prefix><name>`` (a directory: each file under it) with its dump_time, and its copy.

        ``replica`` True: the same bytes to the replica bucket; bytes or a path: those instead; None/False: no copy.
        """
        meta = {"dump_time": dump_time.isoformat(), "format": fmt, "database": "sma"}
        base = crafted.prefix + name
        for bucket, what in ((self.bucket, src), (self.replica, src if replica is True else replica)):
            if what is None or what is False:
                continue
            if isinstance(what, bytes):
                self.gcs.upload_bytes(bucket, base, what, metadata=meta)
            elif what.is_dir():
                for f in sorted(what.iterdir()):
                    self.gcs.upload_file(
                        bucket, f"{base}/{f.name}", f, metadata=meta if f.name == "toc.dat" else None
                    )
            else:
                self.gcs.upload_file(bucket, base, what, metadata=meta)


def slack_messages(lab: LabState) -> list[dict[str, Any]]:
    """Every message the lab's Slack recorded."""
    base = lab.env["GREENLIGHT_SLACK_BASE_URL"].removesuffix("/api/")
    return list(httpx.get(f"{base}/lab/messages", timeout=5).json())


def verify_outcome(profile: Profile) -> BackupNotVerified | None:
    """Run the verification flow on ``profile``: the refusal it raised (with its result), or None
    when it verified (for cases that measure what was lost before judging the outcome)."""
    try:
        verify_backups(profile.name, profile=profile)
    except BackupNotVerified as e:
        return e
    return None


def failed_checks(e: BackupNotVerified) -> dict[str, str]:
    """The failed checks of a refused verification: name -> reason."""
    return {c["name"]: c["reason"] for c in e.result["checks"] if not c["ok"]}
