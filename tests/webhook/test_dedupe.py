"""The delivery store: persisted, expiring after 7 days, safe under concurrent writers."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from greenlight.webhook.dedupe import RETENTION_S, DeliveryStore, default_path


def test_recorded_delivery_is_seen_by_a_new_store_on_the_same_file(tmp_path: Path) -> None:
    """A delivery recorded by one store is seen by another opened later on the same file (a restart)."""
    path = tmp_path / "state" / "webhook.sqlite"
    assert DeliveryStore(path).record("d-1", "staging", "abc") is True
    reopened = DeliveryStore(path)
    assert reopened.seen("d-1") and not reopened.seen("d-2")


def test_recording_twice_reports_the_second_as_already_there(tmp_path: Path) -> None:
    """The second record of one delivery returns False and keeps a single row."""
    store = DeliveryStore(tmp_path / "w.sqlite")
    assert store.record("d-1") is True
    assert store.record("d-1") is False
    assert store.count() == 1


def test_deliveries_expire_after_seven_days_and_are_pruned(tmp_path: Path) -> None:
    """An id older than the retention is no longer seen, and the next record deletes it."""
    store = DeliveryStore(tmp_path / "w.sqlite")
    store.record("old", now=1_000_000.0)
    later = 1_000_000.0 + RETENTION_S + 1
    assert store.seen("old", now=1_000_000.0 + RETENTION_S - 1)
    assert not store.seen("old", now=later)
    store.record("new", now=later)
    assert store.count() == 1 and store.seen("new", now=later)


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Eight threads, each with its own store on one file, record 400 ids without a lock error or a loss."""
    path = tmp_path / "w.sqlite"
    DeliveryStore(path)

    def record(worker: int) -> int:
        store = DeliveryStore(path)
        return sum(store.record(f"d-{worker}-{i}") for i in range(50))

    with ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(record, range(8))) == 400
    assert DeliveryStore(path).count() == 400


def test_default_path_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """GREENLIGHT_WEBHOOK_STATE names the file; without it the file is under ~/.local/state/greenlight."""
    monkeypatch.setenv("GREENLIGHT_WEBHOOK_STATE", str(tmp_path / "x.sqlite"))
    assert default_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("GREENLIGHT_WEBHOOK_STATE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_path() == Path(os.environ["HOME"]) / ".local/state/greenlight/webhook.sqlite"
