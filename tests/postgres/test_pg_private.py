"""The lab's PostgreSQL from a checkout the server's user cannot reach (under a 0700 directory).

As root the server runs as another user (postgres or nobody): it starts from the lab's copy of
the binaries and a data directory in the lab's run directory, and no directory's mode changes.
Not root, the server runs as this user from the venv, with the data where it was asked for: the
cases below then check only that the modes stay as they were (the other-user path is not taken).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight.clients.postgres import Postgres
from greenlight_lab import postgres as labpg

from .pg_support import free_port

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as another user only when root")


def _account(inst: labpg.PgInstance) -> pwd.struct_passwd:
    assert inst.os_user is not None
    return pwd.getpwnam(inst.os_user)


def _modes(paths: list[Path]) -> dict[str, str]:
    return {str(p): f"{stat.S_IMODE(p.stat().st_mode):04o}" for p in paths}


@pytest.fixture
def private_checkout() -> Iterator[Path]:
    """``<mkdtemp, mode 0700>/gl``: a checkout's place that no other user can reach."""
    parent = Path(tempfile.mkdtemp(prefix="gl-private-"))
    assert stat.S_IMODE(parent.stat().st_mode) == 0o700
    checkout = parent / "gl"
    checkout.mkdir()
    yield checkout
    labpg.remove(checkout / ".lab" / "pgdata")
    shutil.rmtree(parent, ignore_errors=True)


def test_a_lab_under_a_0700_directory_starts_and_no_directory_mode_changes(private_checkout: Path) -> None:
    """The server starts for a data dir under a 0700 parent, answers, stops; the parent, the
    checkout and every ancestor keep their modes (nothing gains o+x)."""
    lab = private_checkout / ".lab"
    lab.mkdir()
    watched = [lab, private_checkout, *private_checkout.parents]
    before = _modes(watched)
    inst = labpg.init_and_start(lab / "pgdata", free_port(), lab / "logs" / "postgres.log")
    try:
        assert Postgres(inst.url()).scalar("SELECT 1") == 1
        assert _modes(watched) == before
    finally:
        labpg.stop(inst)
    assert inst.pid() is None
    assert _modes(watched) == before
    assert "database system is ready to accept connections" in (lab / "logs" / "postgres.log").read_text()


@as_root
def test_as_root_the_server_runs_from_the_labs_copy_and_its_run_directory(private_checkout: Path) -> None:
    """As root: the data dir asked for is a link to the lab's run directory, the server binaries
    are the lab's copy (not the venv's), and the server runs as the unprivileged user there."""
    data = private_checkout / ".lab" / "pgdata"
    inst = labpg.init_and_start(data, free_port(), private_checkout / "postgres.log")
    try:
        root = labpg.runtime_root(_account(inst))
        assert data.is_symlink()
        assert inst.data_dir == data.resolve()
        assert inst.data_dir.is_relative_to(root / "labs")
        assert inst.server_bin_dir is not None and inst.server_bin_dir.is_relative_to(root)
        assert inst.bin_dir == labpg.pg_bin_dir()  # the client tools stay the venv's
        assert inst.data_dir.stat().st_uid != 0
        assert stat.S_IMODE(inst.data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE(root.stat().st_mode) == 0o755 and root.stat().st_uid == 0
        pid = inst.pid()
        assert pid is not None
        uid = next(
            int(line.split()[1])
            for line in Path(f"/proc/{pid}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid == inst.data_dir.stat().st_uid
        server = Path(os.readlink(f"/proc/{pid}/exe"))
        assert server.is_relative_to(root), server
    finally:
        labpg.stop(inst)


@as_root
def test_remove_deletes_the_link_and_the_run_directory(private_checkout: Path) -> None:
    """remove() stops the server and deletes both the link and the run directory it points at."""
    data = private_checkout / "pgdata"
    inst = labpg.init_and_start(data, free_port(), private_checkout / "postgres.log")
    run_dir = inst.data_dir.parent
    labpg.remove(data)
    assert not data.is_symlink() and not data.exists()
    assert not run_dir.exists()
    assert inst.pid() is None
    labpg.remove(data)  # nothing there: fine


@as_root
def test_sweep_removes_run_directories_whose_lab_is_gone_and_keeps_the_others(private_checkout: Path) -> None:
    """A run directory whose link was deleted with its lab directory (and whose server is stopped)
    is swept; one still linked is kept."""
    kept, gone = private_checkout / "kept" / "pgdata", private_checkout / "gone" / "pgdata"
    first = labpg.init_and_start(kept, free_port(), private_checkout / "kept.log")
    second = labpg.init_and_start(gone, free_port(), private_checkout / "gone.log")
    labpg.stop(first)
    labpg.stop(second)
    shutil.rmtree(gone.parent)  # the lab directory deleted, as a test's tmp dir is
    root = labpg.runtime_root(_account(first))
    removed = labpg.sweep_orphans(root, now=9e99)  # past the grace period
    assert second.data_dir.parent in removed
    assert not second.data_dir.parent.exists()
    assert first.data_dir.is_dir()


@as_root
def test_a_runtime_directory_that_is_not_the_labs_is_refused_not_changed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``greenlight-lab-pg-0`` in the temp dir that is a link (or not ours) is refused with its
    name, and left as it was."""
    base = Path(tempfile.mkdtemp(prefix="gl-tmpdir-"))
    try:
        base.chmod(0o755)  # ours: a temp dir the server's user can reach
        elsewhere = base / "elsewhere"
        elsewhere.mkdir()
        squatter = base / f"{labpg.RUNTIME_PREFIX}-{os.geteuid()}"
        squatter.symlink_to(elsewhere)
        monkeypatch.setattr(tempfile, "tempdir", str(base))
        with pytest.raises(labpg.LabPostgresError, match=f"{squatter} is not a directory"):
            labpg.runtime_root(pwd.getpwnam("nobody"))
        assert squatter.is_symlink() and os.readlink(squatter) == str(elsewhere)
        assert list(elsewhere.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
