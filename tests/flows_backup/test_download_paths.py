"""download-dump writes only inside its download directory, whatever the bucket's object names say.

No lab: the GCS client is replaced by a stand-in that writes each object's bytes where it is told
(as the real client's ``download_to`` does), so what would land outside can be seen.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

import greenlight.tasks.storage as storage
from greenlight.clients.gcs import Download
from greenlight.core.backups import DumpObject, StoredObject
from greenlight.errors import BackupInvalid

WHEN = datetime(2025, 1, 1, tzinfo=UTC)
PREFIX = "db/2025-01-01T0000Z/"


class FakeGcs:
    """Writes ``b"x"`` to the destination of every download, and remembers where it was told to write."""

    def __init__(self) -> None:
        self.writes: list[Path] = []

    def download_to(self, bucket: str, name: str, dest: Path, chunk_size: int | None = None) -> Download:
        self.writes.append(dest)
        dest.write_bytes(b"x")
        return Download(dest, 1, "md5", "crc")


@pytest.fixture
def fake_gcs(monkeypatch: pytest.MonkeyPatch) -> FakeGcs:
    fake = FakeGcs()
    monkeypatch.setattr(storage, "gcs", lambda: fake)
    return fake


def files_under(where: Path) -> list[str]:
    return sorted(str(p.relative_to(where)) for p in where.rglob("*") if not p.is_dir())


def directory_dump(prefix: str, *members: str) -> DumpObject:
    objects = tuple(StoredObject(prefix + m, 1, "md5", "crc") for m in ("toc.dat", *members))
    return DumpObject(prefix, WHEN, "name", objects)


def test_a_safe_directory_dump_lands_under_its_directory(fake_gcs: FakeGcs, tmp_path: Path) -> None:
    """The ordinary case still works: every member under ``<dest>/<directory name>/``."""
    dest = tmp_path / "download"
    dest.mkdir()
    root, computed = storage.download_dump.fn("b", directory_dump(PREFIX, "3001.dat.gz", "sub/b.dat"), dest)
    assert root == dest / "2025-01-01T0000Z"
    assert files_under(dest) == [
        "2025-01-01T0000Z/3001.dat.gz",
        "2025-01-01T0000Z/sub/b.dat",
        "2025-01-01T0000Z/toc.dat",
    ]
    assert set(computed) == {PREFIX + "toc.dat", PREFIX + "3001.dat.gz", PREFIX + "sub/b.dat"}


@pytest.mark.parametrize(
    ("prefix", "member", "named"),
    [
        (PREFIX, "../../../escaped", "member"),  # db/2025-01-01T0000Z/../../../escaped
        (PREFIX, "sub/../../../../escaped", "member"),
        ("db/2025-01-01T0000Z/../../", "escaped", "prefix"),  # the directory's own name is '..'
        (PREFIX, "/ABSOLUTE", "member"),  # db/2025-01-01T0000Z//<absolute path>
    ],
)
def test_a_member_named_to_escape_is_refused_and_nothing_is_written(
    fake_gcs: FakeGcs, tmp_path: Path, prefix: str, member: str, named: str
) -> None:
    """BackupInvalid naming the object; no file written, not outside and not inside (no partial download)."""
    dest = tmp_path / "a" / "b" / "download"
    dest.mkdir(parents=True)
    outside = tmp_path / "outside"
    member = member.replace("/ABSOLUTE", str(outside))
    dump = directory_dump(prefix, "3001.dat.gz", member)
    with pytest.raises(BackupInvalid, match="cannot be downloaded safely") as info:
        storage.download_dump.fn("b", dump, dest)
    assert repr(prefix + member if named == "member" else prefix) in str(info.value)
    assert files_under(tmp_path) == []
    assert fake_gcs.writes == []


def test_a_file_dump_named_dot_dot_is_refused(fake_gcs: FakeGcs, tmp_path: Path) -> None:
    """A file dump whose basename is '..' would be written over the download directory's parent."""
    dest = tmp_path / "download"
    dest.mkdir()
    name = "db/2025-01-01T0000Z.sql.gz/.."
    dump = DumpObject(name, WHEN, "name", (StoredObject(name, 1, "md5", "crc"),))
    with pytest.raises(BackupInvalid, match="cannot be downloaded safely"):
        storage.download_dump.fn("b", dump, dest)
    assert files_under(tmp_path) == [] and fake_gcs.writes == []


def test_a_failed_member_removes_the_partial_directory(
    fake_gcs: FakeGcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a later member fails (a hash mismatch), the members already written are removed."""
    dest = tmp_path / "download"
    dest.mkdir()
    real = fake_gcs.download_to

    def failing(bucket: str, name: str, where: Path, chunk_size: int | None = None) -> Download:
        if name.endswith("3002.dat.gz"):
            raise BackupInvalid(f"gs://{bucket}/{name}: md5 mismatch")
        return real(bucket, name, where)

    monkeypatch.setattr(fake_gcs, "download_to", failing)
    with pytest.raises(BackupInvalid, match="md5 mismatch"):
        storage.download_dump.fn("b", directory_dump(PREFIX, "3001.dat.gz", "3002.dat.gz"), dest)
    assert files_under(tmp_path) == [] and list(dest.iterdir()) == []
