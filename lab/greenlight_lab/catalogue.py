"""The lab's image catalogue: what each pushed image does when it runs.

A push builds a canonical OCI image manifest whose config carries the behaviour, so the
image digest is a real content digest: the same push twice gives the same digest, a
different behaviour a different one. Tags move on re-push; old digests stay pullable (as
in a real registry), which is what a rollback to an older digest needs.

Each stored manifest is also a package version, as GHCR shows it through the GitHub Packages
API (greenlight_lab.packages): a stable numeric id, given when the digest is first stored, and
its push time (a re-push of the same content keeps both). Deleting a version removes the manifest
and every tag on it, so the registry then answers 404 MANIFEST_UNKNOWN for it.

Images are keyed by their full name (``ghcr.io/sma/backend``; registry host compared
case-insensitively). The registry stand-in serves them by repository path alone
(``sma/backend``) whatever host the client thinks it is talking to.

Every push is signed as ``cosign sign --key`` signs (greenlight_lab.signing): a manifest under
the tag ``sha256-<hex>.sig`` whose layer carries the signed payload, by the lab's key unless the
push says ``signed_by="other"`` or ``None`` (unsigned: any earlier signature of that digest is
dropped). :meth:`Catalogue.place_signature` puts one image's signature at another's ``.sig`` tag
(a signature over another digest). As on GHCR, a signature manifest is a package version of its
own (an id, its push time, its digest: the sha256 of the ``.sig`` manifest), listed by
:meth:`Catalogue.versions` with the images and deletable by id (which removes the ``.sig`` tag:
the image is then unsigned); :meth:`Catalogue.tags` lists ``.sig`` tags as a registry's
``tags/list`` does (:meth:`Catalogue.list`'s rows say ``signature`` instead). Deleting an image
leaves its signature (an orphan, as on GHCR). A re-push signed by the same signer keeps the
signature it has; another signer replaces it (the earlier signature version goes).

A push with ``platforms`` (``["linux/amd64", "linux/arm64"]``) is a multi-platform image as
``docker buildx`` pushes one: the tag names an OCI image index whose children, one image manifest
per platform, are stored untagged (each a package version of its own, as GHCR lists them). The
index and every child run the same behaviour in a pod.

State is persisted as JSON after every change (written atomically) and loaded at start.
Thread-safe: pods look images up from the daemon's loop, the CLI and tests push from others.
"""

from __future__ import annotations

import base64
import builtins
import hashlib
import json
import math
import os
import re
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from greenlight.core.images import ImageRef, parse_image_ref
from greenlight.core.signatures import referrers_tag, signature_tag
from greenlight.errors import InputInvalid
from greenlight_lab.signing import BUNDLE_SIGNER, SIGNERS, referrers_index, signed_manifest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BEHAVIOUR_LABEL = "dev.greenlight.lab.behaviour"
SHUTDOWN_MODES = ("graceful", "abrupt")


@dataclass(frozen=True)
class Behaviour:
    """How a container of this image behaves in the lab.

    ``error_rate`` is the share of requests answered 500 (0..1), ``latency_ms`` added to each
    answer (within +-10 %), or with ``latency_sigma`` > 0 a lognormal latency of median
    ``latency_ms`` and shape ``latency_sigma`` (a real service's long right tail: sigma 0.5 puts
    p95 at about 2.3 x the median), ``startup_s`` before the pod turns ready, ``crash`` never turns ready at all.
    ``degrade_after_s`` > 0: once a pod has run that long its error rate becomes
    ``degraded_error_rate`` (a release that passes its gate and breaks later, as a leak does).
    ``unhealthy``: its health endpoint answers 500 (a dependency it checks is down), so its
    readiness probe fails and it never turns ready.

    ``shutdown`` is what the app does on SIGTERM. ``"graceful"``: it stops accepting
    connections, lets the requests in flight finish (answered with ``Connection: close``),
    closes idle keep-alive connections at once and exits when none remain (or is killed at
    the end of the grace period). ``"abrupt"`` (the default): it exits at once; every
    connection is reset and the requests in flight get no answer. Abrupt is the default
    because it is what an app does unless someone coded (or configured) otherwise: a Node.js
    ``http`` server, a Go ``net/http`` server and Python's ``http.server`` have no SIGTERM
    handler and die (Go's ``Server.Shutdown`` drains only if the app calls it); Spring Boot
    shut down immediately by default until 3.4 made ``server.shutdown=graceful`` the default;
    nginx treats SIGTERM as a fast shutdown (its official image sets STOPSIGNAL SIGQUIT, the
    graceful one, to compensate). Servers that do drain on SIGTERM (gunicorn, uvicorn,
    Spring Boot >= 3.4) are ``"graceful"`` images. A blue-green release must lose no request
    either way: pods leave the endpoints when their deletion starts, and a preStop
    sleep covers the data plane's propagation delay.
    """

    version: str
    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_sigma: float = 0.0
    startup_s: float = 0.0
    crash: bool = False
    degrade_after_s: float = 0.0
    degraded_error_rate: float = 0.0
    shutdown: str = "abrupt"
    unhealthy: bool = False
    # requests per second one pod can take (0: no limit); above it the pod answers 503 "overloaded":
    # a capacity regression that a canary's small share does not show and a larger share does
    capacity_rps: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.version, str) or not self.version:
            raise ValueError(f"behaviour version must be a non-empty string, not {self.version!r}")
        if self.shutdown not in SHUTDOWN_MODES:
            raise ValueError(
                f"behaviour shutdown must be one of {', '.join(SHUTDOWN_MODES)}, not {self.shutdown!r}"
            )
        # Numbers are stored as floats so that 300 and 300.0 give one manifest, one digest.
        numbers = (
            "error_rate",
            "latency_ms",
            "latency_sigma",
            "startup_s",
            "degrade_after_s",
            "degraded_error_rate",
            "capacity_rps",
        )
        for field_name in numbers:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"behaviour {field_name} must be a number, not {value!r}")
            object.__setattr__(self, field_name, float(value))
        object.__setattr__(self, "crash", bool(self.crash))
        object.__setattr__(self, "unhealthy", bool(self.unhealthy))
        for field_name in ("error_rate", "degraded_error_rate"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"behaviour {field_name} must be within [0, 1], not {value!r}")
        for field_name in ("latency_ms", "latency_sigma", "startup_s", "degrade_after_s", "capacity_rps"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"behaviour {field_name} must be a finite number >= 0, not {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest_dict(self) -> dict[str, Any]:
        """What the image config carries: every field, except ``shutdown``, ``latency_sigma``,
        ``unhealthy`` and ``capacity_rps`` when they are the default, so that images pushed before the fields existed keep their
        digests."""
        data = self.to_dict()
        if data["shutdown"] == "abrupt":
            del data["shutdown"]
        if data["latency_sigma"] == 0.0:
            del data["latency_sigma"]
        if not data["unhealthy"]:
            del data["unhealthy"]
        if data["capacity_rps"] == 0.0:
            del data["capacity_rps"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        return cls(
            version=str(data["version"]),
            error_rate=float(data.get("error_rate", 0.0)),
            latency_ms=float(data.get("latency_ms", 0.0)),
            latency_sigma=float(data.get("latency_sigma", 0.0)),
            startup_s=float(data.get("startup_s", 0.0)),
            crash=bool(data.get("crash", False)),
            degrade_after_s=float(data.get("degrade_after_s", 0.0)),
            degraded_error_rate=float(data.get("degraded_error_rate", 0.0)),
            shutdown=str(data.get("shutdown", "abrupt")),
            unhealthy=bool(data.get("unhealthy", False)),
            capacity_rps=float(data.get("capacity_rps", 0.0)),
        )


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def parse_platform(platform: str) -> dict[str, str]:
    """``os/arch[/variant]`` -> the OCI platform object; ValueError naming what is wrong."""
    parts = platform.split("/") if isinstance(platform, str) else []
    if len(parts) not in (2, 3) or not all(re.fullmatch(r"[a-z0-9_.-]+", p) for p in parts):
        raise ValueError(f"platform {platform!r} must be os/architecture[/variant], e.g. linux/arm64")
    out = {"architecture": parts[1], "os": parts[0]}
    if len(parts) == 3:
        out["variant"] = parts[2]
    return out


def build_manifest(
    repository: str, behaviour: Behaviour, platform: str | None = None
) -> tuple[str, bytes, bytes]:
    """(digest, manifest bytes, config bytes) of the image for ``behaviour`` in ``repository``;
    with ``platform`` (``linux/arm64``) the image of that platform in a multi-platform push."""
    layer_doc: dict[str, Any] = {"repository": repository, "version": behaviour.version}
    arch = {"architecture": "amd64", "os": "linux"}
    if platform is not None:
        layer_doc["platform"] = platform
        arch = parse_platform(platform)
    layer = _canonical_json(layer_doc)
    config = _canonical_json(
        {
            **arch,
            "config": {
                "Labels": {
                    BEHAVIOUR_LABEL: json.dumps(behaviour.digest_dict(), sort_keys=True),
                    "org.opencontainers.image.source": repository,
                    "org.opencontainers.image.version": behaviour.version,
                }
            },
            "rootfs": {"type": "layers", "diff_ids": [_sha256(layer)]},
        }
    )
    manifest = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": _sha256(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": _sha256(layer), "size": len(layer)}],
        }
    )
    return _sha256(manifest), manifest, config


def build_index(
    repository: str, behaviour: Behaviour, platforms: Sequence[str]
) -> tuple[str, bytes, builtins.list[tuple[str, str, bytes, bytes]]]:
    """(index digest, index bytes, [(platform, digest, manifest, config)]) of the multi-platform
    image for ``behaviour``; ValueError when ``platforms`` is empty, repeats one or names a bad one."""
    if isinstance(platforms, str) or not platforms:
        raise ValueError("platforms must be a non-empty list such as ['linux/amd64', 'linux/arm64']")
    if len(set(platforms)) != len(platforms):
        raise ValueError(f"platforms {list(platforms)} repeat a platform")
    children = []
    descriptors = []
    for platform in platforms:
        digest, manifest, config = build_manifest(repository, behaviour, platform)
        children.append((platform, digest, manifest, config))
        descriptors.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": parse_platform(platform),
            }
        )
    index = _canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})
    return _sha256(index), index, children


@dataclass
class _Image:
    """One manifest in one repository: an image manifest (``platform`` set when it is one
    platform's of a multi-platform push) or an index (``platforms``: its children's)."""

    behaviour: Behaviour
    manifest: bytes
    config: bytes
    version_id: int = 0  # the package version's id (greenlight_lab.packages)
    pushed_at: float = 0.0  # when the digest was first stored (epoch seconds)
    media_type: str = OCI_MANIFEST
    platform: str | None = None
    platforms: tuple[str, ...] = ()


FIRST_VERSION_ID = 100_000


@dataclass
class _Signature:
    """What cosign stores beside one digest: the ``.sig`` manifest and its blobs; ``signer`` says
    how the lab made it (``lab``, ``other``, ``copied from sha256:...``). It is a package version
    of its own: ``version_id`` and ``pushed_at``, its digest the sha256 of ``manifest``."""

    signer: str
    manifest: bytes
    blobs: dict[str, bytes]
    version_id: int = 0
    pushed_at: float = 0.0
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return _sha256(self.manifest)

    def to_dict(self) -> dict[str, Any]:
        return {
            "signer": self.signer,
            "manifest": base64.b64encode(self.manifest).decode(),
            "blobs": {d: base64.b64encode(b).decode() for d, b in self.blobs.items()},
            "id": self.version_id,
            "pushed_at": self.pushed_at,
            "media_type": self.media_type,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> _Signature:
        return cls(
            signer=str(data["signer"]),
            manifest=base64.b64decode(data["manifest"]),
            blobs={str(d): base64.b64decode(b) for d, b in data["blobs"].items()},
            version_id=int(data.get("id") or 0),
            pushed_at=float(data.get("pushed_at") or 0.0),
            media_type=str(data.get("media_type") or OCI_MANIFEST),
        )


@dataclass
class _Repository:
    """A full image name's tags, manifests and signatures (by ``.sig`` tag); ``seq`` orders
    pushes across repositories."""

    tags: dict[str, str]
    images: dict[str, _Image]
    seq: int = 0
    signatures: dict[str, _Signature] = field(default_factory=dict)


class Catalogue:
    """Image name -> tags -> digests -> behaviour, optionally persisted at ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._repos: dict[str, _Repository] = {}
        self._seq = 0
        self._next_version_id = FIRST_VERSION_ID
        if self._path is not None and self._path.exists():
            self._load(self._path)

    # --- writes ----------------------------------------------------------------------------------

    def push(
        self,
        ref: str,
        behaviour: Behaviour,
        signed_by: str | None = "lab",
        pushed_at: float | None = None,
        platforms: Sequence[str] | None = None,
    ) -> str:
        """Store an image for ``behaviour`` under ``host/repo:tag``, signed by the lab signer
        ``signed_by`` (``lab``, ``other``; None: unsigned, dropping an earlier signature of the
        digest); return its digest.

        Re-pushing a tag moves it; the earlier digest stays known. A digest stored for the first
        time becomes a package version pushed at ``pushed_at`` (epoch seconds; default now; a
        test backdates images with it); a digest already stored keeps its version and time.
        ValueError when ``ref`` is malformed or has no tag or carries a digest, or ``signed_by``
        is no lab signer.
        """
        parsed = self._parse_push_ref(ref)
        assert parsed.tag is not None
        if signed_by is not None and signed_by not in (*SIGNERS, BUNDLE_SIGNER):
            raise ValueError(
                f"cannot push {ref!r}: signed_by must be one of {', '.join((*SIGNERS, BUNDLE_SIGNER))} or none"
            )
        if pushed_at is not None and not (isinstance(pushed_at, int | float) and math.isfinite(pushed_at)):
            raise ValueError(f"pushed_at must be epoch seconds, not {pushed_at!r}")
        at = float(pushed_at) if pushed_at is not None else time.time()
        # (digest, _Image) to store, children before the index (so the index's id is the higher)
        stored: builtins.list[tuple[str, _Image]] = []
        if platforms is None:
            digest, manifest, config = build_manifest(parsed.repository, behaviour)
            stored.append((digest, _Image(behaviour, manifest, config)))
        else:
            digest, index, children = build_index(parsed.repository, behaviour, list(platforms))
            for platform, child, manifest, config in children:
                stored.append((child, _Image(behaviour, manifest, config, platform=platform)))
            image = _Image(behaviour, index, b"", media_type=OCI_INDEX, platforms=tuple(platforms))
            stored.append((digest, image))
        with self._lock:
            repo = self._repos.setdefault(parsed.name, _Repository(tags={}, images={}))
            for key, image in stored:
                if key not in repo.images:
                    image.version_id, image.pushed_at = self._new_version_id(), at
                    repo.images[key] = image
            repo.tags[parsed.tag] = digest
            tag = signature_tag(digest)
            earlier = repo.signatures.get(tag)
            if signed_by == BUNDLE_SIGNER:  # cosign 3's default: no .sig, a referrers tag
                repo.signatures.pop(tag, None)
                bundle_tag = referrers_tag(digest)
                if bundle_tag not in repo.signatures:
                    repo.signatures[bundle_tag] = _Signature(
                        signed_by, referrers_index(digest), {}, self._new_version_id(), at, OCI_INDEX
                    )
            elif signed_by is None:
                repo.signatures.pop(tag, None)
            elif earlier is None or earlier.signer != signed_by:
                sig_manifest, blobs = signed_manifest(signed_by, parsed.name, digest)
                repo.signatures[tag] = _Signature(
                    signed_by, sig_manifest, blobs, version_id=self._new_version_id(), pushed_at=at
                )
            self._seq += 1
            repo.seq = self._seq
            self._save()
        return digest

    def place_signature(self, target: str, source: str) -> str:
        """Put the signature of image ``source`` at the ``.sig`` tag of image ``target`` (both
        ``host/repo:tag`` or ``@digest``, known to the catalogue): ``target`` then carries a
        signature over another digest. Returns the tag written; ValueError naming what is unknown."""
        with self._lock:
            found = []
            for ref in (target, source):
                image = self.lookup(ref)
                if image is None:
                    raise ValueError(f"no image {ref!r} in the catalogue")
                found.append((self._normalise_name(ref), image[0]))
            (target_name, target_digest), (source_name, source_digest) = found
            signature = self._repos[source_name].signatures.get(signature_tag(source_digest))
            if signature is None:
                raise ValueError(f"image {source!r} is unsigned: no signature to copy")
            tag = signature_tag(target_digest)
            self._repos[target_name].signatures[tag] = _Signature(
                signer=f"copied from {source_digest}",
                manifest=signature.manifest,
                blobs=dict(signature.blobs),
                version_id=self._new_version_id(),
                pushed_at=time.time(),
            )
            self._save()
        return tag

    def delete_version(self, name: str, version_id: int) -> str | None:
        """Delete package version ``version_id`` of image ``name`` (``ghcr.io/org/app``): its
        manifest and every tag on it (a signature version: its ``.sig`` tag, so the image is then
        unsigned). The deleted digest, or None when there is no such version."""
        with self._lock:
            repo = self._repos.get(self._normalise_name(name))
            if repo is None:
                return None
            for digest, image in list(repo.images.items()):
                if image.version_id == version_id:
                    del repo.images[digest]
                    repo.tags = {tag: d for tag, d in repo.tags.items() if d != digest}
                    self._save()
                    return digest
            for row in self._signature_rows(repo):
                if row["id"] == version_id:
                    for tag in row["tags"]:
                        del repo.signatures[tag]
                    self._save()
                    return str(row["digest"])
        return None

    def _new_version_id(self) -> int:
        self._next_version_id += 1
        return self._next_version_id

    @staticmethod
    def _parse_push_ref(ref: str) -> ImageRef:
        try:
            parsed = parse_image_ref(ref)
        except InputInvalid as e:
            raise ValueError(f"cannot push {ref!r}: {e}") from e
        if parsed.digest is not None:
            raise ValueError(f"cannot push {ref!r}: push by tag, the digest is computed from the behaviour")
        if parsed.tag is None:
            raise ValueError(f"cannot push {ref!r}: a tag is required (host/repo:tag)")
        return parsed

    # --- reads -----------------------------------------------------------------------------------

    def lookup(self, image: str) -> tuple[str, Behaviour] | None:
        """(digest, behaviour) of ``host/repo:tag`` or ``host/repo@sha256:...``.

        The full name must match (host case-insensitively). A digest wins over a tag when both
        are given. None when the image is unknown or the reference malformed (a pod cannot pull it).
        """
        try:
            ref = parse_image_ref(image)
        except InputInvalid:
            return None
        reference = ref.digest or ref.tag
        if reference is None:
            return None
        with self._lock:
            repo = self._repos.get(ref.name)
            found = self._resolve(repo, reference) if repo is not None else None
            if found is None:
                return None
            return found[0], found[1].behaviour

    def manifest(self, repository: str, reference: str) -> tuple[str, bytes, str] | None:
        """(digest, manifest bytes, media type) of ``reference`` (tag or digest; a ``.sig`` tag or
        a signature's digest too) in ``repository`` (no host).

        When several hosts hold the same repository path, the most recently pushed wins.
        """
        with self._lock:
            for repo in self._repos_for_path(repository):
                signature = repo.signatures.get(reference)
                if signature is None and reference.startswith("sha256:"):
                    signature = next((s for s in repo.signatures.values() if s.digest == reference), None)
                if signature is not None:
                    return signature.digest, signature.manifest, signature.media_type
                found = self._resolve(repo, reference)
                if found is not None:
                    return found[0], found[1].manifest, found[1].media_type
        return None

    def blob(self, repository: str, digest: str) -> bytes | None:
        """The config blob ``digest`` of an image in ``repository`` (no host); None if unknown."""
        with self._lock:
            for repo in self._repos_for_path(repository):
                for image in repo.images.values():
                    if image.config and _sha256(image.config) == digest:
                        return image.config
        return self.signature_blob(repository, digest)

    def signature_blob(self, repository: str, digest: str) -> bytes | None:
        """The blob ``digest`` of a signature in ``repository`` (no host); None if unknown."""
        with self._lock:
            for repo in self._repos_for_path(repository):
                for signature in repo.signatures.values():
                    if digest in signature.blobs:
                        return signature.blobs[digest]
        return None

    def signer(self, image: str) -> str | None:
        """How the lab signed ``image`` (``lab``, ``other``, ``copied from ...``); None: unsigned or unknown."""
        found = self.lookup(image)
        if found is None:
            return None
        with self._lock:
            signature = self._repos[self._normalise_name(image)].signatures.get(signature_tag(found[0]))
            return signature.signer if signature is not None else None

    def has_repository(self, repository: str) -> bool:
        """True when any host holds ``repository`` (a path without host)."""
        with self._lock:
            return bool(self._repos_for_path(repository))

    def tags(self, repository: str) -> list[str]:
        """Sorted tags of ``repository`` (a path without host: all hosts; or a full name), cosign's
        ``sha256-<hex>.sig`` tags included, as a registry's ``tags/list`` answers."""
        with self._lock:
            repos = self._repos_for_path(repository)
            full = self._repos.get(self._normalise_name(repository))
            if full is not None and full not in repos:
                repos.append(full)
            return sorted({tag for repo in repos for tag in [*repo.tags, *repo.signatures]})

    def versions(self, name: str) -> builtins.list[dict[str, Any]]:
        """The package versions of image ``name`` (full name, e.g. ``ghcr.io/org/app``), newest
        first: ``id``, ``digest``, ``tags`` (sorted) and ``pushed_at`` (epoch seconds); images,
        the untagged platform manifests of multi-platform images and signature manifests alike.
        Empty when no such image is stored."""
        with self._lock:
            repo = self._repos.get(self._normalise_name(name))
            if repo is None:
                return []
            rows = [
                {
                    "id": image.version_id,
                    "digest": digest,
                    "tags": sorted(tag for tag, d in repo.tags.items() if d == digest),
                    "pushed_at": image.pushed_at,
                }
                for digest, image in repo.images.items()
            ]
            rows += [row for row in self._signature_rows(repo) if row["digest"] not in repo.images]
        return sorted(rows, key=lambda r: (r["pushed_at"], r["id"]), reverse=True)

    @staticmethod
    def _signature_rows(repo: _Repository) -> builtins.list[dict[str, Any]]:
        """One version per distinct signature manifest (a copied one shares its source's digest:
        one version with both tags, the lower id)."""
        by_digest: dict[str, dict[str, Any]] = {}
        for tag, signature in repo.signatures.items():
            row = by_digest.setdefault(
                signature.digest,
                {
                    "id": signature.version_id,
                    "digest": signature.digest,
                    "tags": [],
                    "pushed_at": signature.pushed_at,
                },
            )
            row["tags"] = sorted([*row["tags"], tag])
            row["id"] = min(row["id"], signature.version_id)
            row["pushed_at"] = min(row["pushed_at"], signature.pushed_at)
        return list(by_digest.values())

    def has_image(self, name: str) -> bool:
        """True when image ``name`` (full name) has been stored (even if all its versions are gone)."""
        with self._lock:
            return self._normalise_name(name) in self._repos

    def list(self) -> builtins.list[dict[str, Any]]:
        """One row per tag (and per untagged digest): image, tag, digest and behaviour."""
        rows: builtins.list[dict[str, Any]] = []
        with self._lock:
            for name in sorted(self._repos):
                repo = self._repos[name]
                tagged = set(repo.tags.values())
                for tag in sorted(repo.tags):
                    digest = repo.tags[tag]
                    rows.append(self._row(name, tag, digest, repo))
                for digest in sorted(repo.images):
                    if digest not in tagged:
                        rows.append(self._row(name, None, digest, repo))
        return rows

    @staticmethod
    def _row(name: str, tag: str | None, digest: str, repo: _Repository) -> dict[str, Any]:
        signature = repo.signatures.get(signature_tag(digest))
        return {
            "image": name,
            "tag": tag,
            "digest": digest,
            "behaviour": repo.images[digest].behaviour.to_dict(),
            "signature": signature.signer if signature is not None else None,
        }

    # --- helpers ---------------------------------------------------------------------------------

    @staticmethod
    def _resolve(repo: _Repository, reference: str) -> tuple[str, _Image] | None:
        digest = reference if ":" in reference else repo.tags.get(reference)
        if digest is None or digest not in repo.images:
            return None
        return digest, repo.images[digest]

    def _repos_for_path(self, repository: str) -> builtins.list[_Repository]:
        matching = [repo for name, repo in self._repos.items() if name.split("/", 1)[1] == repository]
        return sorted(matching, key=lambda repo: repo.seq, reverse=True)

    @staticmethod
    def _normalise_name(name: str) -> str:
        try:
            return parse_image_ref(name).name
        except InputInvalid:
            return name

    # --- persistence -----------------------------------------------------------------------------

    def _save(self) -> None:
        if self._path is None:
            return
        state = {
            "version": 1,
            "repositories": {
                name: {
                    "seq": repo.seq,
                    "tags": repo.tags,
                    "images": {digest: image.behaviour.to_dict() for digest, image in repo.images.items()},
                    "signatures": {tag: sig.to_dict() for tag, sig in repo.signatures.items()},
                    "versions": {
                        digest: {
                            "id": image.version_id,
                            "pushed_at": image.pushed_at,
                            **({"platform": image.platform} if image.platform else {}),
                            **({"platforms": list(image.platforms)} if image.platforms else {}),
                        }
                        for digest, image in repo.images.items()
                    },
                }
                for name, repo in self._repos.items()
            },
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=f".{self._path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(state, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        """Read persisted state; manifests are rebuilt from the behaviours (they are canonical)."""
        try:
            state = json.loads(path.read_text())
            known = [
                int(v.get("id") or 0)
                for data in state["repositories"].values()
                for v in [*(data.get("versions") or {}).values(), *(data.get("signatures") or {}).values()]
            ]
            self._next_version_id = max([self._next_version_id, *known])
            for name, data in state["repositories"].items():
                repository = name.split("/", 1)[1]
                images: dict[str, _Image] = {}
                versions = data.get("versions") or {}
                for digest, behaviour_data in data["images"].items():
                    behaviour = Behaviour.from_dict(behaviour_data)
                    version = versions.get(digest) or {}
                    platforms = tuple(str(p) for p in version.get("platforms") or ())
                    platform = version.get("platform")
                    if platforms:
                        built, manifest, _ = build_index(repository, behaviour, platforms)
                        config = b""
                    else:
                        built, manifest, config = build_manifest(
                            repository, behaviour, str(platform) if platform else None
                        )
                    if built != digest:
                        raise ValueError(f"image {name}@{digest} rebuilds to a different digest {built}")
                    version_id = int(version.get("id") or 0) or self._new_version_id()
                    self._next_version_id = max(self._next_version_id, version_id)
                    images[digest] = _Image(
                        behaviour=behaviour,
                        manifest=manifest,
                        config=config,
                        version_id=version_id,
                        pushed_at=float(version.get("pushed_at") or 0.0),
                        media_type=OCI_INDEX if platforms else OCI_MANIFEST,
                        platform=str(platform) if platform else None,
                        platforms=platforms,
                    )
                signatures = {
                    str(tag): _Signature.from_dict(sig) for tag, sig in data.get("signatures", {}).items()
                }
                for signature in signatures.values():  # state written before signatures had ids
                    signature.version_id = signature.version_id or self._new_version_id()
                    self._next_version_id = max(self._next_version_id, signature.version_id)
                self._repos[name] = _Repository(
                    tags=dict(data["tags"]), images=images, seq=int(data["seq"]), signatures=signatures
                )
                self._seq = max(self._seq, int(data["seq"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ValueError(f"image catalogue {path} is unreadable: {e}") from e
