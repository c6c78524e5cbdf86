"""GCS as tasks: find dumps, stream them down verified, read and write small objects, config bundles.

Every task talks to GCS through :class:`greenlight.clients.gcs.GcsClient`, retries only transient
failures (``RETRIES``) and is never cached (``FRESH``): a listing or a read must see
the bucket as it is now, even when called twice with the same arguments in one run.
``load_bundle`` and ``latest_bundle`` are plain functions too (``.fn``) for callers outside a flow.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from prefect import task

from greenlight.clients.gcs import GcsClient, ObjectInfo
from greenlight.core.backups import DumpObject, StoredObject, collect_dumps, download_layout, verify_index
from greenlight.errors import BackupInvalid, Conflict, InputInvalid, NotFound
from greenlight.settings import Backups, Profile
from greenlight.tasks.policy import FRESH, RETRIES

INDEX = "index.json"


def gcs() -> GcsClient:
    """A GCS client from the environment (the emulator when ``STORAGE_EMULATOR_HOST`` is set, else ADC).

    ``GREENLIGHT_GCS_TIMEOUT_S`` (default 60) is each operation's budget, its retries included;
    a task does not start an operation over once that budget is spent."""
    return GcsClient(timeout_s=float(os.environ.get("GREENLIGHT_GCS_TIMEOUT_S", "60")))


def stored(info: ObjectInfo) -> StoredObject:
    """The core's view of a listed object."""
    return StoredObject(info.name, info.size, info.md5_b64, info.crc32c_b64, dict(info.metadata))


# -- dumps --------------------------------------------------------------------------------------------


@task(name="list-objects", **FRESH, **RETRIES)
def list_objects(bucket: str, prefix: str = "") -> list[StoredObject]:
    """Every object under ``gs://bucket/prefix``; NotFound naming the bucket when it does not exist."""
    return [stored(o) for o in gcs().list(bucket, prefix)]


@task(name="find-dumps", **FRESH, **RETRIES)
def find_dumps(backups: Backups) -> tuple[list[DumpObject], int]:
    """(the dumps under the profile's bucket and prefix matching its pattern, oldest first; objects listed)."""
    objects = [stored(o) for o in gcs().list(backups.bucket, backups.prefix)]
    return collect_dumps(objects, backups.name_pattern), len(objects)


@task(name="stat-replica", **FRESH, **RETRIES)
def stat_replica(bucket: str, dump: DumpObject) -> list[StoredObject]:
    """The cross-region copies of the dump's members found in ``bucket`` (missing ones left out).

    A missing replica bucket counts as every copy missing.
    """
    client = gcs()
    found = []
    for member in dump.members:
        try:
            found.append(stored(client.stat(bucket, member.name)))
        except NotFound:
            continue
    return found


@task(name="download-dump", **FRESH, **RETRIES)
def download_dump(
    bucket: str, dump: DumpObject, dest_dir: Path
) -> tuple[Path, dict[str, tuple[int, str, str]]]:
    """Stream the dump to ``dest_dir`` verifying every member's size, MD5 and CRC32C as it comes.

    A file dump lands at ``dest_dir/<basename>``, a directory dump's members under
    ``dest_dir/<directory name>/``. Returns the path to restore from and, per member,
    (size, md5, crc32c) as computed. Memory stays about one chunk whatever the dump's size.
    Raises BackupInvalid (naming the object, expected and got) on a mismatch, and, before
    writing anything, naming the object when its name would put a file outside ``dest_dir``
    (``..``, ``//``, a backslash, NUL: see :func:`greenlight.core.backups.download_layout`).
    A directory dump that fails part-way is removed: no partial download is left behind.
    """
    client = gcs()
    top, layout = download_layout(dump)  # BackupInvalid before any byte is written
    base = dest_dir.resolve()
    targets = {name: _inside(dest_dir, base, rel, name) for name, rel in layout.items()}
    root = _inside(dest_dir, base, top, dump.name)
    computed: dict[str, tuple[int, str, str]] = {}
    if not dump.is_directory:
        member = dump.members[0]
        got = client.download_to(bucket, member.name, targets[member.name])  # removes its .part on failure
        computed[member.name] = (got.size, got.md5_b64, got.crc32c_b64)
        return root, computed
    if root.exists():  # never mixed with (or, on failure, removing) what was there before
        raise Conflict(f"cannot download dump {dump.name}: {root} already exists")
    try:
        for member in dump.members:
            dest = targets[member.name]
            dest.parent.mkdir(parents=True, exist_ok=True)
            got = client.download_to(bucket, member.name, dest)
            computed[member.name] = (got.size, got.md5_b64, got.crc32c_b64)
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise
    return root, computed


def _inside(dest_dir: Path, base: Path, relative: str, name: str) -> Path:
    """``dest_dir / relative``, checked once more where files are written: it must resolve below ``base``
    (``dest_dir`` resolved). download_layout has refused every name that could leave; this also
    catches a symbolic link on the way."""
    resolved = (base / relative).resolve()
    if resolved == base or not resolved.is_relative_to(base):
        raise BackupInvalid(
            f"object {name!r} would be written to {resolved}, outside the download directory {base}"
        )
    return dest_dir / relative


# -- small objects ----------------------------------------------------------------------------------------


@task(name="upload-objects", **FRESH, **RETRIES)
def upload_objects(bucket: str, objects: dict[str, bytes], content_type: str = "application/json") -> int:
    """Create each object (create-only: an existing name raises Conflict); the number written."""
    client = gcs()
    for name, data in objects.items():
        client.upload_bytes(bucket, name, data, content_type=content_type, if_generation_match=0)
    return len(objects)


@task(name="read-objects", **FRESH, **RETRIES)
def read_objects(bucket: str, names: list[str]) -> dict[str, bytes]:
    """The content of each named object (small objects only: manifests, indexes)."""
    client = gcs()
    return {name: client.read_bytes(bucket, name) for name in names}


@task(name="delete-objects", **FRESH, **RETRIES)
def delete_objects(bucket: str, names: list[str]) -> int:
    """Delete each object (one already gone is fine); the number deleted."""
    client = gcs()
    deleted = 0
    for name in names:
        try:
            client.delete(bucket, name)
            deleted += 1
        except NotFound:
            continue
    return deleted


# -- config bundles -------------------------------------------------------------------------------------


def config_bucket(profile: Profile) -> str:
    """The profile's config-backup bucket; InputInvalid naming the field when there is none."""
    if profile.backups is None or not profile.backups.config_bucket:
        raise InputInvalid(f"environment '{profile.name}' has no backups.config_bucket in its profile")
    return profile.backups.config_bucket


def bundles_root(profile: Profile) -> str:
    """The prefix under which the environment's bundles live: ``<config_prefix><env>/``."""
    assert profile.backups is not None
    return f"{profile.backups.config_prefix}{profile.name}/"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bundle(bucket: str, prefix: str) -> tuple[dict[str, Any], dict[str, bytes]]:
    """(the bundle's index, every file under ``prefix`` by its path inside the bundle); BackupInvalid without an index."""
    client = gcs()
    names = [o.name for o in client.list(bucket, prefix)]
    if prefix + INDEX not in names:
        raise BackupInvalid(f"config bundle gs://{bucket}/{prefix} has no {INDEX}: it is incomplete")
    try:
        index = json.loads(client.read_bytes(bucket, prefix + INDEX))
    except ValueError as e:
        raise BackupInvalid(f"gs://{bucket}/{prefix}{INDEX} is not valid JSON: {e}") from e
    files = {n[len(prefix) :]: client.read_bytes(bucket, n) for n in names if n != prefix + INDEX}
    return index, files


def check_bundle(index: dict[str, Any], files: dict[str, bytes], where: str) -> None:
    """Raise BackupInvalid naming every file whose size or sha256 differs from the index (or is missing/extra)."""
    problems = verify_index(index, {p: (len(b), sha256_hex(b)) for p, b in files.items()})
    if problems:
        raise BackupInvalid(f"config bundle {where} does not match its index: " + "; ".join(problems))


@task(name="verify-bundle", **FRESH, **RETRIES)
def verify_bundle(bucket: str, prefix: str) -> dict[str, Any]:
    """Read the bundle back and check every file against its index; the index."""
    index, files = read_bundle(bucket, prefix)
    check_bundle(index, files, f"gs://{bucket}/{prefix}")
    return index


@task(name="list-bundles", **FRESH, **RETRIES)
def list_bundles(bucket: str, root: str) -> dict[str, list[str]]:
    """The bundles under ``root``: folder name -> its object names (complete or not)."""
    bundles: dict[str, list[str]] = {}
    for info in gcs().list(bucket, root):
        rest = info.name[len(root) :]
        if "/" in rest:
            bundles.setdefault(rest.split("/", 1)[0], []).append(info.name)
    return bundles


@task(name="latest-bundle", **FRESH, **RETRIES)
def latest_bundle(profile: Profile) -> str | None:
    """The prefix (``<config_prefix><env>/<stamp>/``) of the newest complete bundle; None when there is none."""
    bucket, root = config_bucket(profile), bundles_root(profile)
    complete = [
        stamp for stamp, names in list_bundles.fn(bucket, root).items() if f"{root}{stamp}/{INDEX}" in names
    ]
    return f"{root}{max(complete)}/" if complete else None


@task(name="load-bundle", **FRESH, **RETRIES)
def load_bundle(profile: Profile, bundle_prefix: str) -> list[dict[str, Any]]:
    """Every object of the bundle at ``bundle_prefix``, in index order, each checked against its sha256.

    Secrets come as names, types and keys only (a bundle never holds a value).
    Raises BackupInvalid when the bundle is incomplete or a file does not match the index.
    """
    bucket = config_bucket(profile)
    prefix = bundle_prefix if bundle_prefix.endswith("/") else bundle_prefix + "/"
    index, files = read_bundle(bucket, prefix)
    check_bundle(index, files, f"gs://{bucket}/{prefix}")
    return [json.loads(files[str(entry["path"])]) for entry in index.get("files") or []]
