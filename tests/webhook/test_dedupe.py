"""The store of emitted runs: keyed on the signed run identity, persisted, expiring after 7 days,
safe under concurrent writers, and reading a store written before run identities were recorded."""

from __future__ import annotations

import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from greenlight.webhook.dedupe import RETENTION_S, DeliveryStore, default_path

RUN = "sma-platform/sma/actions/runs/30433642/attempts/1"
OTHER_RUN = "sma-platform/sma/actions/runs/30433643/attempts/1"

# The store's format before run identities (greenlight <= the delivery-id dedupe): one row per
# X-GitHub-Delivery id. Kept verbatim, as such a file is on disk wherever the receiver ran.
LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    recorded_at REAL NOT NULL,
    environment TEXT,
    sha TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_recorded_at ON deliveries (recorded_at);
"""


def legacy_store(path: Path, rows: list[tuple[str, float, str | None, str | None]]) -> Path:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(LEGACY_SCHEMA)
    db.executemany("INSERT INTO deliveries VALUES (?, ?, ?, ?)", rows)
    db.close()
    return path


def test_recorded_run_is_seen_by_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    """A run recorded by one store is seen by another opened later on the same file (a restart)."""
    path = tmp_path / "state" / "webhook.sqlite"
    assert DeliveryStore(path).record(RUN, "d-1", "staging", "abc") is True
    reopened = DeliveryStore(path)
    assert reopened.seen(RUN) and not reopened.seen(OTHER_RUN)


def test_a_recorded_run_is_seen_under_any_delivery_id(tmp_path: Path) -> None:
    """The delivery id is not signed: the run is a duplicate whatever delivery id comes with it."""
    store = DeliveryStore(tmp_path / "w.sqlite")
    store.record(RUN, "d-1", "staging", "abc")
    assert store.seen(RUN, "d-new") == f"run {RUN} already emitted (delivery d-1)"
    assert store.seen(OTHER_RUN, "d-new") is None


def test_a_recorded_delivery_id_is_seen_with_another_run(tmp_path: Path) -> None:
    """GitHub never sends two bodies under one delivery id: a known id with another run is a duplicate too."""
    store = DeliveryStore(tmp_path / "w.sqlite")
    store.record(RUN, "d-1", "staging", "abc")
    assert store.seen(OTHER_RUN, "d-1") == "delivery d-1 already emitted"


def test_recording_twice_reports_the_second_as_already_there(tmp_path: Path) -> None:
    """The second record of one run (under any delivery id) returns False and keeps a single row."""
    store = DeliveryStore(tmp_path / "w.sqlite")
    assert store.record(RUN, "d-1") is True
    assert store.record(RUN, "d-2") is False
    assert store.count() == 1


def test_runs_expire_after_seven_days_and_are_pruned(tmp_path: Path) -> None:
    """A run older than the retention is no longer seen, and the next record deletes it."""
    store = DeliveryStore(tmp_path / "w.sqlite")
    store.record(RUN, "d-old", now=1_000_000.0)
    later = 1_000_000.0 + RETENTION_S + 1
    assert store.seen(RUN, now=1_000_000.0 + RETENTION_S - 1)
    assert not store.seen(RUN, now=later)
    store.record(OTHER_RUN, "d-new", now=later)
    assert store.count() == 1 and store.seen(OTHER_RUN, now=later)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Eight threads, each with its own store on one file, record 400 runs without a lock error or a loss."""
    path = tmp_path / "w.sqlite"
    DeliveryStore(path)

    def record(worker: int) -> int:
        store = DeliveryStore(path)
        return sum(
            store.record(f"o/r/actions/runs/{worker}/attempts/{i}", f"d-{worker}-{i}") for i in range(50)
        )

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(record, range(8))) == 400
    assert DeliveryStore(path).count() == 400


def test_a_store_written_before_run_identities_is_migrated_in_place(tmp_path: Path) -> None:
    """An existing file of delivery ids keeps answering: its ids stay duplicates, and as its rows
    carry no run id, a run releasing the same sha to the same environment within the retention is
    a duplicate too (an old signed body replayed under a new delivery id). New runs are recorded
    beside them, and the old rows are pruned when they expire."""
    path = legacy_store(
        tmp_path / "w.sqlite",
        [("d-old", 1_000_000.0, "staging", "0ld5ha"), ("d-older", 990_000.0, "production", "cafe")],
    )
    store = DeliveryStore(path)
    now = 1_000_100.0
    assert store.seen(RUN, "d-old", now=now) == "delivery d-old already emitted"
    assert store.seen(RUN, "d-fresh", environment="staging", sha="0ld5ha", now=now) == (
        "sha 0ld5ha already released to staging (delivery d-old, recorded before run ids)"
    )
    assert store.seen(RUN, "d-fresh", environment="production", sha="0ld5ha", now=now) is None
    assert store.seen(RUN, "d-fresh", environment="staging", sha="n3w5ha", now=now) is None
    assert store.record(RUN, "d-fresh", "staging", "n3w5ha", now=now) is True
    assert DeliveryStore(path).seen(RUN, "d-other", now=now)  # opening it again is harmless
    assert store.count() == 3
    store.record(OTHER_RUN, "d-later", "staging", "b33f", now=1_000_000.0 + RETENTION_S + 1)
    assert store.count() == 2  # d-old and d-older pruned, the two runs kept


def test_default_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GREENLIGHT_WEBHOOK_STATE names the file; without it the file is under ~/.local/state/greenlight."""
    monkeypatch.setenv("GREENLIGHT_WEBHOOK_STATE", str(tmp_path / "x.sqlite"))
    assert default_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("GREENLIGHT_WEBHOOK_STATE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path() == Path(os.environ["HOME"]) / ".local/state/greenlight/webhook.sqlite"
