"""The lab's image catalogue: what each pushed image does when it runs.

A push builds a canonical OCI image manifest whose config carries the behaviour, so the
image digest is a real content digest: the same push twice gives the same digest, a
different behaviour a different one. Tags move on re-push; old digests stay pullable (as
in a real registry), which is what a rollback to an older digest needs.

Images are keyed by their full name (``ghcr.io/sma/backend``; registry host compared
case-insensitively). The registry stand-in serves them by repository path alone
(``sma/backend``) whatever host the client thinks it is talking to.

State is persisted as JSON after every change (written atomically) and loaded at start.
Thread-safe: pods look images up from the daemon's loop, the CLI and tests push from others.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from greenlight.core.images import ImageRef, parse_image_ref
from greenlight.errors import InputInvalid

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
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
        )
        for field_name in numbers:
            value = getattr(self, field_name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"behaviour {field_name} must be a number, not {value!r}")
            object.__setattr__(self, field_name, float(value))
        object.__setattr__(self, "crash", bool(self.crash))
        for field_name in ("error_rate", "degraded_error_rate"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"behaviour {field_name} must be within [0, 1], not {value!r}")
        for field_name in ("latency_ms", "latency_sigma", "startup_s", "degrade_after_s"):
            value = getattr(self, field_name)
            if not (math.isfinite(value) and value >= 0.0):
                raise ValueError(f"behaviour {field_name} must be a finite number >= 0, not {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def digest_dict(self) -> dict[str, Any]:
        """What the image config carries: every field, except ``shutdown`` and ``latency_sigma``
        when they are the default, so that images pushed before the fields existed keep their
        digests."""
        data = self.to_dict()
        if data["shutdown"] == "abrupt":
            del data["shutdown"]
        if data["latency_sigma"] == 0.0:
            del data["latency_sigma"]
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
        )


def _canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_manifest(repository: str, behaviour: Behaviour) -> tuple[str, bytes, bytes]:
    """(digest, manifest bytes, config bytes) of the image for ``behaviour`` in ``repository``."""
    layer = _canonical_json({"repository": repository, "version": behaviour.version})
    config = _canonical_json(
        {
            "architecture": "amd64",
            "os": "linux",
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


@dataclass
class _Image:
    """One manifest in one repository."""

    behaviour: Behaviour
    manifest: bytes
    config: bytes


@dataclass
class _Repository:
    """A full image name's tags and manifests; ``seq`` orders pushes across repositories."""

    tags: dict[str, str]
    images: dict[str, _Image]
    seq: int = 0


class Catalogue:
    """Image name -> tags -> digests -> behaviour, optionally persisted at ``path``."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._lock = threading.RLock()
        self._repos: dict[str, _Repository] = {}
        self._seq = 0
        if self._path is not None and self._path.exists():
            self._load(self._path)

    # --- writes ----------------------------------------------------------------------------------

    def push(self, ref: str, behaviour: Behaviour) -> str:
        """Store an image for ``behaviour`` under ``host/repo:tag``; return its digest.

        Re-pushing a tag moves it; the earlier digest stays known. ValueError when ``ref`` is
        malformed or has no tag or carries a digest.
        """
        parsed = self._parse_push_ref(ref)
        assert parsed.tag is not None
        digest, manifest, config = build_manifest(parsed.repository, behaviour)
        with self._lock:
            repo = self._repos.setdefault(parsed.name, _Repository(tags={}, images={}))
            repo.images[digest] = _Image(behaviour=behaviour, manifest=manifest, config=config)
            repo.tags[parsed.tag] = digest
            self._seq += 1
            repo.seq = self._seq
            self._save()
        return digest

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

    def manifest(self, repository: str, reference: str) -> tuple[str, bytes] | None:
        """(digest, manifest bytes) of ``reference`` (tag or digest) in ``repository`` (no host).

        When several hosts hold the same repository path, the most recently pushed wins.
        """
        with self._lock:
            for repo in self._repos_for_path(repository):
                found = self._resolve(repo, reference)
                if found is not None:
                    return found[0], found[1].manifest
        return None

    def blob(self, repository: str, digest: str) -> bytes | None:
        """The config blob ``digest`` of an image in ``repository`` (no host); None if unknown."""
        with self._lock:
            for repo in self._repos_for_path(repository):
                for image in repo.images.values():
                    if _sha256(image.config) == digest:
                        return image.config
        return None

    def has_repository(self, repository: str) -> bool:
        """True when any host holds ``repository`` (a path without host)."""
        with self._lock:
            return bool(self._repos_for_path(repository))

    def tags(self, repository: str) -> list[str]:
        """Sorted tags of ``repository``: a path without host (all hosts) or a full name."""
        with self._lock:
            repos = self._repos_for_path(repository)
            full = self._repos.get(self._normalise_name(repository))
            if full is not None and full not in repos:
                repos.append(full)
            return sorted({tag for repo in repos for tag in repo.tags})

    def list(self) -> builtins.list[dict[str, Any]]:
        """One row per tag (and per untagged digest): image, tag, digest and behaviour."""
        rows: builtins.list[dict[str, Any]] = []
        with self._lock:
            for name in sorted(self._repos):
                repo = self._repos[name]
                tagged = set(repo.tags.values())
                for tag in sorted(repo.tags):
                    digest = repo.tags[tag]
                    rows.append(self._row(name, tag, digest, repo.images[digest].behaviour))
                for digest, image in sorted(repo.images.items()):
                    if digest not in tagged:
                        rows.append(self._row(name, None, digest, image.behaviour))
        return rows

    @staticmethod
    def _row(name: str, tag: str | None, digest: str, behaviour: Behaviour) -> dict[str, Any]:
        return {"image": name, "tag": tag, "digest": digest, "behaviour": behaviour.to_dict()}

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
            for name, data in state["repositories"].items():
                repository = name.split("/", 1)[1]
                images: dict[str, _Image] = {}
                for digest, behaviour_data in data["images"].items():
                    behaviour = Behaviour.from_dict(behaviour_data)
                    built, manifest, config = build_manifest(repository, behaviour)
                    if built != digest:
                        raise ValueError(f"image {name}@{digest} rebuilds to a different digest {built}")
                    images[digest] = _Image(behaviour=behaviour, manifest=manifest, config=config)
                self._repos[name] = _Repository(tags=dict(data["tags"]), images=images, seq=int(data["seq"]))
                self._seq = max(self._seq, int(data["seq"]))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ValueError(f"image catalogue {path} is unreadable: {e}") from e
