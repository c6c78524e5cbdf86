"""The receiver's memory of workflow runs already turned into events, in a SQLite file.

A release is keyed on what GitHub's signature covers: the run's identity from the signed payload
(repository, ``workflow_run.id``, ``workflow_run.run_attempt``: :class:`RunIdentity.key`), not
the ``X-GitHub-Delivery`` header, which is not signed: an old signed body replayed under a fresh
delivery id is the same run, and a duplicate. The delivery id is kept beside the run, for the log
line and as a second key (GitHub redelivers with the same id and the same body, and never sends
two bodies under one id). The receiver records a run only after its event reached Prefect. The
file survives restarts; runs are kept for :data:`RETENTION_S` (7 days) and pruned as new ones
are recorded.

**Slack clicks.** The receiver also remembers each Slack interaction it passed on, by its
``X-Slack-Signature`` (table ``slack_clicks``, version 2, for an hour: Slack signs a request for
5 minutes), so the same signed click sent again is refused.

**Migration.** A file written before run identities holds only table ``deliveries`` (delivery
id, time, environment, sha). It is migrated in place when a store opens it: table ``runs`` is
added beside it and the schema version (``PRAGMA user_version``) set to 1; the old rows are
left as they are, still read, and pruned once they expire, so after 7 days the old table is
empty. As they carry no run id, an old row also makes a duplicate of any run that releases the
same sha to the same environment (the replay this key closes); the cost, for those 7 days only,
is that a re-run of such a commit is answered duplicate too (release it by hand).

The file lives at ``$GREENLIGHT_WEBHOOK_STATE`` or ``~/.local/state/greenlight/webhook.sqlite``.
Each call opens its own connection (WAL journal, busy timeout), so concurrent requests, threads
and several receiver processes sharing the file are safe.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RETENTION_S = 7 * 24 * 3600
STATE_ENV = "GREENLIGHT_WEBHOOK_STATE"
SCHEMA_VERSION = 2
#: a Slack click is remembered longer than Slack's 5-minute signature window
CLICK_RETENTION_S = 3600
_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run TEXT PRIMARY KEY,
    delivery TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    environment TEXT,
    sha TEXT
);
CREATE INDEX IF NOT EXISTS runs_delivery ON runs (delivery);
CREATE INDEX IF NOT EXISTS runs_recorded_at ON runs (recorded_at);
-- version 0: one row per delivery id, no run identity; read until its rows expire
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL,
    environment TEXT,
    sha TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_recorded_at ON deliveries (recorded_at);
-- version 2: Slack clicks already passed on, by their signature (a replay is refused)
CREATE TABLE IF NOT EXISTS slack_clicks (
    signature TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL
);
"""


def default_path() -> Path:
    """``$GREENLIGHT_WEBHOOK_STATE`` when set, else ``~/.local/state/greenlight/webhook.sqlite``."""
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "state" / "greenlight" / "webhook.sqlite"


class DeliveryStore:
    """Runs already emitted, persisted in SQLite at ``path`` (created with its parents; a file of
    the delivery-id format is migrated in place, see the module's docstring)."""

    def __init__(self, path: Path | None = None, *, retention_s: float = RETENTION_S) -> None:
        self.path = path or default_path()
        self.retention_s = retention_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def seen(
        self,
        run: str,
        delivery: str | None = None,
        *,
        environment: str | None = None,
        sha: str | None = None,
        now: float | None = None,
    ) -> str | None:
        """Why this is a duplicate, or None: the run ``run`` (a :attr:`RunIdentity.key`) or the
        delivery id ``delivery`` was recorded within the retention period, or a row of the old
        format (no run id) released ``sha`` to ``environment``."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        with self._connect() as db:
            row = db.execute(
                "SELECT delivery FROM runs WHERE run = ? AND recorded_at >= ?", (run, cutoff)
            ).fetchone()
            if row is not None:
                return f"run {run} already emitted (delivery {row[0]})"
            if delivery is None:
                return None
            known = db.execute(
                "SELECT 1 FROM runs WHERE delivery = ? AND recorded_at >= ? UNION ALL "
                "SELECT 1 FROM deliveries WHERE delivery = ? AND recorded_at >= ?",
                (delivery, cutoff, delivery, cutoff),
            ).fetchone()
            if known is not None:
                return f"delivery {delivery} already emitted"
            if environment is None or sha is None:
                return None
            legacy = db.execute(
                "SELECT delivery FROM deliveries WHERE environment = ? AND sha = ? AND recorded_at >= ?",
                (environment, sha, cutoff),
            ).fetchone()
        if legacy is not None:
            return (
                f"sha {sha} already released to {environment} (delivery {legacy[0]}, recorded before run ids)"
            )
        return None

    def record(
        self,
        run: str,
        delivery: str,
        environment: str | None = None,
        sha: str | None = None,
        now: float | None = None,
    ) -> bool:
        """Remember ``run`` (once its event was emitted), with the delivery that brought it, and
        prune rows past the retention. Returns False when the run was already recorded (another
        request got there first)."""
        at = time.time() if now is None else now
        with self._connect() as db:
            db.execute("DELETE FROM runs WHERE recorded_at < ?", (at - self.retention_s,))
            db.execute("DELETE FROM deliveries WHERE recorded_at < ?", (at - self.retention_s,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs (run, delivery, recorded_at, environment, sha) VALUES (?, ?, ?, ?, ?)",
                (run, delivery, at, environment, sha),
            )
            return cursor.rowcount == 1

    def claim_click(self, signature: str, now: float | None = None) -> bool:
        """Remember the Slack click whose ``X-Slack-Signature`` is ``signature``; False when it was
        seen before (a replay: the signature covers the body and the timestamp, so the same request
        sent again carries the same one). Clicks past :data:`CLICK_RETENTION_S` are pruned."""
        at = time.time() if now is None else now
        with self._connect() as db:
            db.execute("DELETE FROM slack_clicks WHERE recorded_at < ?", (at - CLICK_RETENTION_S,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO slack_clicks (signature, recorded_at) VALUES (?, ?)", (signature, at)
            )
            return cursor.rowcount == 1

    def count(self) -> int:
        """How many runs (and old-format delivery ids) are remembered, expired ones included until
        the next prune."""
        with self._connect() as db:
            runs = int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
            return runs + int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived autocommit connection; a writer waits up to 5 s for another's lock."""
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            yield db
        finally:
            db.close()
