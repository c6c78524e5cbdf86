"""Fixtures: one lab PostgreSQL per session, the seeded app database, its nightly dumps, archives.

Everything runs on free 127.0.0.1 ports in pytest's temporary directories. The time each step
took is printed in the terminal summary (``postgres timings``).
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from greenlight.clients.postgres import Postgres
from greenlight_lab import postgres as labpg
from greenlight_lab.seed import NightlyDump, make_nightly_dumps, seed_app_database

from .pg_support import APP_DB, NOW, TIMINGS, free_port, pg_dump


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        line = ", ".join(f"{k} {v:.2f}s" for k, v in TIMINGS.items())
        terminalreporter.write_line(f"postgres timings: {line}")


@pytest.fixture(scope="session")
def pg() -> Iterator[labpg.PgInstance]:
    """A lab PostgreSQL started once for the session.

    Its directory is a private mkdtemp, not pytest's tmp_path: every pytest session that starts
    resets /tmp/pytest-of-<user> to 0700, and the server (running as another user when we are
    root) would lose its data directory mid-run.
    """
    directory = Path(tempfile.mkdtemp(prefix="greenlight-pg-test-"))
    try:
        started = time.monotonic()
        inst = labpg.init_and_start(directory / "data", free_port(), directory / "postgres.log")
        TIMINGS["startup"] = time.monotonic() - started
        try:
            yield inst
        finally:
            labpg.stop(inst)
    finally:
        labpg.remove(directory / "data")  # as root: the link and the lab's run directory
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def admin(pg: labpg.PgInstance) -> Postgres:
    return Postgres(pg.url("postgres"))


@dataclass(frozen=True)
class AppDb:
    url: str
    counts: dict[str, int]


@pytest.fixture(scope="session")
def app_db(pg: labpg.PgInstance, admin: Postgres) -> AppDb:
    """The app database, seeded at NOW."""
    url = admin.create_database(APP_DB)
    started = time.monotonic()
    counts = seed_app_database(url, now=NOW)
    TIMINGS["seed"] = time.monotonic() - started
    return AppDb(url, counts)


@dataclass(frozen=True)
class Nightly:
    dumps: list[NightlyDump]
    cache_dir: Path


@pytest.fixture(scope="session")
def nightly(pg: labpg.PgInstance, app_db: AppDb, tmp_path_factory: pytest.TempPathFactory) -> Nightly:
    """A week of nightly dumps of the app database, with a dump cache."""
    directory = tmp_path_factory.mktemp("nightly")
    started = time.monotonic()
    dumps = make_nightly_dumps(pg, APP_DB, directory / "out", now=NOW, cache_dir=directory / "cache")
    TIMINGS["7 dumps"] = time.monotonic() - started
    return Nightly(dumps, directory / "cache")


@pytest.fixture(scope="session")
def archives(
    pg: labpg.PgInstance, app_db: AppDb, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The app database as custom and directory archives (pg_dump -Fc, -Fd -j2)."""
    directory = tmp_path_factory.mktemp("archives")
    return {
        "custom": pg_dump(pg, APP_DB, "c", directory / "sma.dump"),
        "directory": pg_dump(pg, APP_DB, "d", directory / "sma.dir", "--jobs=2"),
    }


@dataclass(frozen=True)
class Scratch:
    name: str
    url: str


@pytest.fixture
def scratch(admin: Postgres) -> Iterator[Scratch]:
    """An empty scratch database, dropped afterwards."""
    name = f"scratch_{uuid.uuid4().hex[:10]}"
    url = admin.create_database(name)
    yield Scratch(name, url)
    admin.drop_database(name)
