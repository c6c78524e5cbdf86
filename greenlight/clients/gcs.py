"""Google Cloud Storage: list, stat, stream down with verified checksums, upload, copy, delete.

The only module that talks to ``google.cloud.storage``. Every call carries an explicit
timeout and a bounded retry (the SDK's retry predicate, but a deadline of ``timeout_s``
instead of its default 120 s; for uploads and downloads of files, plus one second per MiB;
each request may take a third of that deadline, so a stalled one is retried in time). SDK errors become Greenlight errors, ``raise ... from e``:

    404                                   -> NotFound     (naming the bucket or gs://bucket/object)
    409, 412 (if_generation_match lost)   -> Conflict
    401, 403, no credentials              -> Forbidden
    429, 5xx, connection errors, timeouts, retries exhausted -> TransientError
    anything else from the API            -> PermanentError

``download_to`` streams to ``dest.part`` computing MD5 and CRC32C on the way (memory
bounded by one chunk, whatever the object's size), checks them and the size against what
GCS stored, and only then renames ``dest.part`` to ``dest``; a mismatch raises
``BackupInvalid`` and no file is left behind.

With ``STORAGE_EMULATOR_HOST`` set (the lab, fake-gcs-server) the client is anonymous;
otherwise it uses Application Default Credentials (Workload Identity on GKE).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import google.cloud.storage as storage
import google_crc32c
import requests
from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exc
from google.auth.credentials import AnonymousCredentials
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse
from google.cloud.storage.retry import DEFAULT_RETRY

from greenlight.errors import (
    BackupInvalid,
    Conflict,
    Forbidden,
    GreenlightError,
    NotFound,
    PermanentError,
    TransientError,
)

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
MIN_THROUGHPUT = 1 << 20  # bytes/s: a transfer slower than this overall is given up
UPLOAD_CHUNK = 8 << 20  # resumable uploads send (and hold in memory) this much per request
_CHUNK_MULTIPLE = 256 << 10  # GCS requires chunk sizes that are multiples of 256 KiB

T = TypeVar("T")


@dataclass(frozen=True)
class ObjectInfo:
    """What GCS stores about one object (hashes are base64, as GCS reports them)."""

    bucket: str
    name: str
    size: int
    md5_b64: str | None
    crc32c_b64: str | None
    generation: int
    updated: datetime
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        return f"gs://{self.bucket}/{self.name}"


@dataclass(frozen=True)
class Download:
    """A verified download: where it is and the hashes computed while it streamed."""

    path: Path
    size: int
    md5_b64: str
    crc32c_b64: str


class GcsClient:
    """Greenlight's GCS operations over ``google.cloud.storage.Client``."""

    def __init__(
        self, project: str | None = None, client: storage.Client | None = None, timeout_s: float = 60.0
    ) -> None:
        """Wrap ``client``, or build one: anonymous against ``STORAGE_EMULATOR_HOST`` if set, else ADC.

        ``timeout_s`` is the budget of one operation, retries included; each HTTP request
        gets a third of it (at least 1 s), so a stalled request is retried within the budget.
        """
        self.timeout_s = timeout_s
        self.request_timeout_s = max(1.0, timeout_s / 3)
        self._retry: Retry = DEFAULT_RETRY.with_timeout(timeout_s).with_delay(
            initial=0.2, maximum=max(0.5, min(8.0, timeout_s / 4))
        )
        self._client = client if client is not None else _default_client(project)

    # -- reading --------------------------------------------------------------------------

    def list(self, bucket: str, prefix: str = "") -> list[ObjectInfo]:
        """Every object in ``bucket`` whose name starts with ``prefix``, in name order."""

        def run() -> list[ObjectInfo]:
            blobs = self._client.list_blobs(
                bucket, prefix=prefix or None, timeout=self.request_timeout_s, retry=self._retry
            )
            return [_info(b) for b in blobs]

        return _guard(run, f"bucket '{bucket}'")

    def stat(self, bucket: str, name: str) -> ObjectInfo:
        """The object's metadata; NotFound naming ``gs://bucket/name`` when it does not exist."""
        return _info(self._get_blob(bucket, name))

    def read_bytes(self, bucket: str, name: str) -> bytes:
        """The object's whole content (for small objects: manifests, markers)."""
        blob = self._client.bucket(bucket).blob(name)
        return _guard(
            lambda: blob.download_as_bytes(timeout=self.request_timeout_s, retry=self._retry),
            _uri(bucket, name),
        )

    def download_to(self, bucket: str, name: str, dest: Path, chunk_size: int | None = None) -> Download:
        """Stream the object to ``dest``, verifying its size, MD5 and CRC32C against what GCS stored.

        ``chunk_size`` None (the default): one streaming GET, read in small pieces (memory
        about 64 KiB whatever the object's size); if the connection breaks, the SDK resumes
        from the last byte received, pinned to the same generation. An int: ranged GETs of
        that size (rounded up to 256 KiB), each held in memory (about 3x ``chunk_size``).
        The bytes go to ``dest.part`` and are renamed to ``dest`` only once verified; on any
        failure (``BackupInvalid`` for a mismatch) no partial file is left. An object
        replaced during the download gives Conflict.
        """
        blob = self._get_blob(bucket, name)
        expected = _info(blob)
        blob.chunk_size = None if chunk_size is None else _chunk(chunk_size)
        part = dest.with_name(dest.name + ".part")
        try:
            with part.open("wb") as fh:
                writer = _HashingWriter(fh)
                _guard(lambda: self._stream(blob, writer, expected), expected.uri)
            got = Download(dest, writer.size, writer.md5_b64(), writer.crc32c_b64())
            _verify(expected, got)
            part.replace(dest)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return got

    def _stream(self, blob: storage.Blob, writer: _HashingWriter, expected: ObjectInfo) -> None:
        blob.download_to_file(
            writer,
            if_generation_match=expected.generation,
            raw_download=True,  # the stored bytes, never decompressed: the hashes are of those
            checksum=None,  # verified by us against the stored hashes
            timeout=self.request_timeout_s,
            retry=self._transfer_retry(expected.size),
        )

    # -- writing --------------------------------------------------------------------------

    def upload_file(
        self,
        bucket: str,
        name: str,
        src: Path,
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        """Upload ``src`` (resumable in ``UPLOAD_CHUNK`` pieces when large); the stored object's info.

        ``if_generation_match=0`` creates only; another value replaces only that generation;
        losing that race raises Conflict. Failed requests are retried even without a
        precondition (writing the same bytes twice is harmless); with one, a retry of a
        write that had in fact landed reports Conflict.
        """
        blob = self._client.bucket(bucket).blob(name, chunk_size=UPLOAD_CHUNK)
        blob.metadata = metadata or None

        def run() -> ObjectInfo:
            blob.upload_from_filename(
                str(src),
                if_generation_match=if_generation_match,
                timeout=self.request_timeout_s,
                retry=self._transfer_retry(src.stat().st_size),
            )
            return _info(blob)

        return _guard(run, _uri(bucket, name))

    def upload_bytes(
        self,
        bucket: str,
        name: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> ObjectInfo:
        """Store ``data`` as the object; same precondition semantics as ``upload_file``."""
        blob = self._client.bucket(bucket).blob(name)
        blob.metadata = metadata or None

        def run() -> ObjectInfo:
            blob.upload_from_string(
                data,
                content_type=content_type,
                if_generation_match=if_generation_match,
                timeout=self.request_timeout_s,
                retry=self._retry,
            )
            return _info(blob)

        return _guard(run, _uri(bucket, name))

    def delete(self, bucket: str, name: str) -> None:
        """Delete the object; NotFound when it is not there."""
        src = self._client.bucket(bucket)
        _guard(
            lambda: src.delete_blob(name, timeout=self.request_timeout_s, retry=self._retry),
            _uri(bucket, name),
        )

    def copy(self, src_bucket: str, name: str, dst_bucket: str, dst_name: str | None = None) -> ObjectInfo:
        """Server-side copy to ``dst_bucket`` (same name unless ``dst_name``); the copy's info."""
        target = dst_name or name
        src = self._client.bucket(src_bucket)
        dst = self._client.bucket(dst_bucket)

        def run() -> ObjectInfo:
            copied = src.copy_blob(
                src.blob(name), dst, target, timeout=self.request_timeout_s, retry=self._retry
            )
            return _info(copied)

        return _guard(run, f"copy {_uri(src_bucket, name)} -> {_uri(dst_bucket, target)}")

    # -- helpers --------------------------------------------------------------------------

    def _transfer_retry(self, size: int) -> Retry:
        """The retry for moving ``size`` bytes: its deadline counts from the transfer's start,
        so it grows with the size (``timeout_s`` plus one second per MIN_THROUGHPUT bytes)."""
        return self._retry.with_timeout(self.timeout_s + size / MIN_THROUGHPUT)

    def _get_blob(self, bucket: str, name: str) -> storage.Blob:
        uri = _uri(bucket, name)
        blob = _guard(
            lambda: self._client.bucket(bucket).get_blob(
                name, timeout=self.request_timeout_s, retry=self._retry
            ),
            uri,
        )
        if blob is None:
            raise NotFound(f"{uri} not found")
        return blob


class _HashingWriter:
    """A binary file wrapper that counts and hashes (MD5, CRC32C) every byte written through it."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc = google_crc32c.Checksum()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._md5.update(data)
        self._crc.update(data)
        self.size += len(data)
        return self._fh.write(data)

    def flush(self) -> None:
        self._fh.flush()

    def md5_b64(self) -> str:
        return base64.b64encode(self._md5.digest()).decode("ascii")

    def crc32c_b64(self) -> str:
        return base64.b64encode(self._crc.digest()).decode("ascii")


def _verify(expected: ObjectInfo, got: Download) -> None:
    """Raise BackupInvalid naming the object, expected and got, when size or a stored hash differs."""
    checks = [("size", str(expected.size), str(got.size))]
    if expected.md5_b64 is not None:
        checks.append(("md5", expected.md5_b64, got.md5_b64))
    if expected.crc32c_b64 is not None:
        checks.append(("crc32c", expected.crc32c_b64, got.crc32c_b64))
    if expected.md5_b64 is None and expected.crc32c_b64 is None:
        raise BackupInvalid(f"{expected.uri}: GCS stores no md5 or crc32c to verify the download against")
    for what, want, have in checks:
        if want != have:
            raise BackupInvalid(f"{expected.uri}: {what} mismatch: expected {want}, got {have}")


def _info(blob: Any) -> ObjectInfo:
    return ObjectInfo(
        bucket=blob.bucket.name,
        name=blob.name,
        size=int(blob.size or 0),
        md5_b64=blob.md5_hash,
        crc32c_b64=blob.crc32c,
        generation=int(blob.generation or 0),
        updated=blob.updated or datetime.fromtimestamp(0, UTC),
        metadata=dict(blob.metadata or {}),
    )


def _uri(bucket: str, name: str) -> str:
    return f"gs://{bucket}/{name}"


def _chunk(chunk_size: int) -> int:
    """``chunk_size`` rounded up to the 256 KiB multiple GCS requires."""
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, not {chunk_size}")
    return -(-chunk_size // _CHUNK_MULTIPLE) * _CHUNK_MULTIPLE


def _default_client(project: str | None) -> storage.Client:
    """Anonymous against the emulator when ``STORAGE_EMULATOR_HOST`` is set, else ADC."""
    if os.environ.get(EMULATOR_ENV):
        return storage.Client(project=project or "lab", credentials=AnonymousCredentials())
    with _translated("Google Cloud Storage"):
        return storage.Client(project=project)


def _guard(fn: Callable[[], T], what: str) -> T:
    """Run ``fn``, translating SDK errors about ``what`` (a gs:// URI or a bucket)."""
    with _translated(what):
        return fn()


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except GreenlightError:
        raise
    except Exception as e:
        translated = translate(e, what)
        if translated is None:
            raise
        raise translated from e


def translate(e: BaseException, what: str) -> GreenlightError | None:
    """The Greenlight error for an SDK/transport failure about ``what``; None if not an SDK error.
    The HTTP status of an API error stays on it (``status``)."""
    status = (e.code or None) if isinstance(e, gexc.GoogleAPICallError) else None
    if isinstance(e, gexc.NotFound):
        return NotFound(f"{what} not found", status=status)
    if isinstance(e, gexc.PreconditionFailed | gexc.Conflict):
        return Conflict(f"{what}: {_reason(e)}", status=status)
    if isinstance(e, gexc.Forbidden | gexc.Unauthorized):
        return Forbidden(f"{what}: access refused: {_reason(e)}", status=status)
    if isinstance(e, auth_exc.DefaultCredentialsError | auth_exc.RefreshError):
        return Forbidden(f"{what}: no usable Google credentials ({type(e).__name__})")
    if isinstance(e, gexc.TooManyRequests | gexc.ServerError):
        return TransientError(f"{what}: {_reason(e)}", retry_after=_retry_after(e), status=status)
    if isinstance(e, gexc.RetryError):
        cause = e.cause if e.cause is not None else e
        kept = (cause.code or None) if isinstance(cause, gexc.GoogleAPICallError) else None
        return TransientError(
            f"{what}: gave up retrying: {type(cause).__name__}: {_reason(cause)}", exhausted=True, status=kept
        )
    if isinstance(
        e,
        requests.ConnectionError
        | requests.Timeout
        | ConnectionError
        | TimeoutError
        | auth_exc.TransportError,
    ):
        return TransientError(f"{what}: cannot reach GCS: {type(e).__name__}: {e}")
    if isinstance(e, gexc.GoogleAPICallError):
        return PermanentError(f"{what}: {_reason(e)}", status=status)
    if isinstance(e, DataCorruption):  # the SDK's own transfer checksum failed
        return TransientError(f"{what}: checksum mismatch in transit: {e}")
    if isinstance(e, InvalidResponse):  # an unexpected status the SDK did not map
        return TransientError(f"{what}: unexpected response from GCS: {e}", status=_response_status(e))
    return None


def _response_status(e: InvalidResponse) -> int | None:
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _reason(e: BaseException) -> str:
    if isinstance(e, gexc.GoogleAPICallError):
        code = f"HTTP {e.code}: " if e.code else ""
        return f"{code}{e.message}"[:300]
    return str(e)[:300]


def _retry_after(e: gexc.GoogleAPICallError) -> float | None:
    response = getattr(e, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
