"""The receiver's memory of deliveries already turned into events, in a SQLite file.

GitHub sends the same ``X-GitHub-Delivery`` id again when someone redelivers a webhook; the
receiver records an id only after its event reached Prefect, and answers a replay of a recorded
id without emitting again. The file survives restarts; ids are kept for :data:`RETENTION`
(7 days) and pruned as new ones are recorded.

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
_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL,
    environment TEXT,
    sha TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_recorded_at ON deliveries (recorded_at);
"""


def default_path() -> Path:
    """``$GREENLIGHT_WEBHOOK_STATE`` when set, else ``~/.local/state/greenlight/webhook.sqlite``."""
    configured = os.environ.get(STATE_ENV)
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".local" / "state" / "greenlight" / "webhook.sqlite"


class DeliveryStore:
    """Delivery ids already emitted, persisted in SQLite at ``path`` (created with its parents)."""

    def __init__(self, path: Path | None = None, *, retention_s: float = RETENTION_S) -> None:
        self.path = path or default_path()
        self.retention_s = retention_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def seen(self, delivery: str, now: float | None = None) -> bool:
        """True when ``delivery`` was recorded within the retention period."""
        cutoff = (time.time() if now is None else now) - self.retention_s
        with self._connect() as db:
            row = db.execute(
                "SELECT 1 FROM deliveries WHERE delivery = ? AND recorded_at >= ?", (delivery, cutoff)
            ).fetchone()
        return row is not None

    def record(
        self, delivery: str, environment: str | None = None, sha: str | None = None, now: float | None = None
    ) -> bool:
        """Remember ``delivery`` (once its event was emitted) and prune ids past the retention.

        Returns False when it was already recorded (another request got there first).
        """
        at = time.time() if now is None else now
        with self._connect() as db:
            db.execute("DELETE FROM deliveries WHERE recorded_at < ?", (at - self.retention_s,))
            cursor = db.execute(
                "INSERT OR IGNORE INTO deliveries (delivery, recorded_at, environment, sha) VALUES (?, ?, ?, ?)",
                (delivery, at, environment, sha),
            )
            return cursor.rowcount == 1

    def count(self) -> int:
        """How many delivery ids are remembered (expired ones included until the next prune)."""
        with self._connect() as db:
            return int(db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0])

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A short-lived autocommit connection; a writer waits up to 5 s for another's lock."""
        db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None)
        try:
            yield db
        finally:
            db.close()
