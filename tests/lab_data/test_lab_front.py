"""The GCS fault front: google-cloud-storage through it to the real fake-gcs-server binary."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.front import HttpFaultFront, classify_resource
from greenlight_lab.gcs import start_fake_gcs, stop_fake_gcs

from .helpers import LoopThread

BUCKET = "lab-backups"


@dataclass
class Gcs:
    """A running front + fake-gcs-server pair and a client pointed at the front."""

    url: str
    faults: FaultRegistry
    client: storage.Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def gcs(loop: LoopThread, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gcs]:
    """fake-gcs-server behind the front; STORAGE_EMULATOR_HOST points the client at the front."""
    faults = FaultRegistry()
    upstream_port = free_port()
    front = HttpFaultFront(f"http://127.0.0.1:{upstream_port}", faults, target="gcs")
    front_port = loop.run(front.start())
    proc = start_fake_gcs(
        upstream_port, f"127.0.0.1:{front_port}", tmp_path_factory.mktemp("gcs") / "gcs.log"
    )
    url = f"http://127.0.0.1:{front_port}"
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = url
    try:
        client = storage.Client(project="lab", credentials=AnonymousCredentials())
        client.create_bucket(BUCKET)
        yield Gcs(url, faults, client)
    finally:
        if previous is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = previous
        stop_fake_gcs(proc)
        loop.run(front.stop())


@pytest.fixture(autouse=True)
def _no_faults_left(gcs: Gcs) -> Iterator[None]:
    yield
    gcs.faults.clear()


@pytest.mark.parametrize(
    ("target", "resource"),
    [
        ("/upload/storage/v1/b/b/o?uploadType=resumable&name=x", "upload"),
        ("/download/storage/v1/b/b/o/x?alt=media", "download"),
        ("/storage/v1/b/b/o/x?alt=media&generation=3", "download"),
        ("/storage/v1/b/b/o/x?alt=json", "metadata"),
        ("/storage/v1/b?project=lab", "metadata"),
        ("/b/media-upload", "metadata"),
    ],
)
def test_requests_are_classified_for_fault_rules(target: str, resource: str) -> None:
    """Upload, download and metadata calls are told apart by path and the alt=media parameter."""
    assert classify_resource(target) == resource


def test_large_upload_and_download_pass_through_intact(gcs: Gcs, tmp_path: Path) -> None:
    """A 20 MB object goes up (resumable, in chunks) and comes back byte-identical through the front."""
    data = os.urandom(20 * 1024 * 1024)
    source = tmp_path / "dump.bin"
    source.write_bytes(data)
    bucket = gcs.client.bucket(BUCKET)
    blob = bucket.blob("nightly/dump.bin", chunk_size=8 * 1024 * 1024)
    blob.upload_from_filename(str(source))
    fetched = bucket.get_blob("nightly/dump.bin")
    assert fetched is not None and fetched.size == len(data)
    assert fetched.media_link is not None and fetched.media_link.startswith(gcs.url)
    target = tmp_path / "back.bin"
    fetched.download_to_filename(str(target))
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


def test_resumable_upload_chunks_go_through_the_front(gcs: Gcs) -> None:
    """The chunk PUTs of a resumable upload reach the front (the session URL points back at it)."""
    rule = gcs.faults.add(FaultRule(target="gcs", verb="put", resource="upload", status=503, count=1))
    blob = gcs.client.bucket(BUCKET).blob("chunked.bin", chunk_size=4 * 1024 * 1024)
    with pytest.raises(gexc.ServiceUnavailable):
        blob.upload_from_string(b"x" * (9 * 1024 * 1024), retry=None)  # above 8 MiB: resumable
    assert rule.fired == 1


def test_injected_error_answers_503_with_retry_after_once(gcs: Gcs) -> None:
    """An error rule answers its status with Retry-After and a GCS JSON error, then lets calls through."""
    gcs.faults.add(FaultRule(target="gcs", verb="get", resource="metadata", status=503, retry_after=2))
    first = httpx.get(f"{gcs.url}/storage/v1/b/{BUCKET}")
    assert first.status_code == 503
    assert first.headers["Retry-After"] == "2"
    assert first.json()["error"]["code"] == 503
    assert httpx.get(f"{gcs.url}/storage/v1/b/{BUCKET}").status_code == 200


def test_sdk_sees_the_injected_fault_and_recovers_with_retry(gcs: Gcs) -> None:
    """The SDK raises ServiceUnavailable on a fault without retry, and succeeds past it with retry."""
    gcs.faults.add(FaultRule(target="gcs", verb="get", resource="metadata", status=503, count=1))
    with pytest.raises(gexc.ServiceUnavailable):
        gcs.client.get_bucket(BUCKET, retry=None)
    gcs.faults.add(FaultRule(target="gcs", verb="get", resource="metadata", status=503, count=1))
    assert gcs.client.get_bucket(BUCKET, retry=Retry(initial=0.05, timeout=10)).name == BUCKET


def test_download_fault_leaves_uploads_alone(gcs: Gcs) -> None:
    """A download rule fails downloads only: the upload before it and the metadata read pass."""
    blob = gcs.client.bucket(BUCKET).blob("small.txt")
    blob.upload_from_string(b"hello")
    gcs.faults.add(FaultRule(target="gcs", verb="get", resource="download", status=500, count=-1))
    with pytest.raises(gexc.InternalServerError):
        blob.download_as_bytes(retry=None)
    assert gcs.client.bucket(BUCKET).get_blob("small.txt") is not None
    gcs.faults.clear("gcs")
    assert blob.download_as_bytes() == b"hello"


def test_stall_holds_the_call_then_forwards_it(gcs: Gcs) -> None:
    """A stall rule delays the call by stall_s and then answers it normally."""
    gcs.faults.add(FaultRule(target="gcs", verb="get", resource="metadata", mode="stall", stall_s=0.5))
    began = time.monotonic()
    assert gcs.client.get_bucket(BUCKET).name == BUCKET
    assert time.monotonic() - began >= 0.5
