"""Which image versions of a GHCR package image cleanup deletes, and why each other one stays.

A pure function over a snapshot: the package's versions (as the GitHub Packages API lists them),
the digests something still needs (each with its reasons: live or previous colour in an
environment, recorded in a release within the retention), the retention, how many of the
newest to keep, and the time now. :func:`plan_cleanup` gives every version one verdict:

- kept, with every reason that applies: ``live ...``/``previous ...``/``recorded ...`` (the
  protected digest's reasons), ``among the N newest``, ``pushed D d ago, within the R-day
  retention``; or
- deleted, with why: pushed longer ago than the retention and none of the above.

Tags protect nothing by themselves (a tag is a movable name; the live digest is protected
whatever its tags). A cosign signature (or attestation / SBOM) is a version of its own, tagged
``sha256-<hex>.sig`` (``.att``, ``.sbom``) after its subject: it is kept exactly when its subject
is kept, and goes with it. One whose subject is not in the package (an orphan) follows the
retention alone. The N newest count image versions only, never signatures, so the newest
version of a package is always kept (GitHub refuses to delete a package's last version).

Multi-platform images: ``docker buildx`` pushes an OCI image index (or a Docker manifest list)
whose child manifests, one per platform (and a provenance attestation), GHCR lists as untagged
versions of their own. The caller reads the manifest of every kept version and passes
``indexes`` (digest -> the child digests it names; an image manifest names none) and
``unreadable`` (digest -> why it could not be read); :attr:`CleanupPlan.unread` lists the kept
digests it has not read yet (a child kept by its index is one: it may be an index too), so the
caller reads those and plans again until nothing is left unread. Every child of a kept index is
kept (``platform manifest of <index> (kept: <why>)``); the children of a deleted index go with
it, unless another kept index names them. A child is not counted among the N newest. When a kept
manifest cannot be read, nothing untagged in that package is deleted (its children are unknown).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal
from urllib.parse import quote

from greenlight.core.images import parse_image_ref
from greenlight.errors import InputInvalid

GHCR = "ghcr.io"
#: the tag cosign gives a signature (.sig), attestation (.att) or SBOM (.sbom) of sha256:<hex>,
#: and the referrers tag (no suffix) where cosign 3 keeps its bundles on GHCR
SIGNATURE_TAG = re.compile(r"^sha256-([0-9a-f]{64})(\.(sig|att|sbom))?$")
Action = Literal["keep", "delete"]
#: the media types of a manifest that names other manifests (a multi-platform image)
INDEX_TYPES = frozenset(
    {"application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"}
)


def index_children(media_type: str, body: bytes) -> tuple[str, ...]:
    """The digests an index (or manifest list) names, in order; () for an image manifest.
    ``media_type``: the registry's Content-Type (parameters ignored); the body's own
    ``mediaType`` counts too. ValueError when an index body is not an index."""
    kind = media_type.split(";", 1)[0].strip().lower()
    try:
        doc = json.loads(body)
    except ValueError as e:
        if kind in INDEX_TYPES:
            raise ValueError(f"the index is not JSON ({e})") from e
        return ()
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    if kind not in INDEX_TYPES and declared not in INDEX_TYPES:
        return ()
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        raise ValueError("the index has no manifests list")
    out = []
    for entry in manifests:
        digest = entry.get("digest") if isinstance(entry, dict) else None
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise ValueError(f"the index names a manifest without a sha256 digest: {entry!r:.100}")
        out.append(digest)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class PackageVersion:
    """One version of a container package: GitHub's ``id``, the manifest ``digest`` (its
    ``name``), its ``tags`` and when it was pushed (``created_at``, timezone-aware)."""

    id: int
    digest: str
    tags: tuple[str, ...]
    created_at: datetime

    @property
    def subject(self) -> str | None:
        """The digest this version signs (or attests) when every tag is a cosign tag; else None."""
        if not self.tags:
            return None
        subjects = set()
        for tag in self.tags:
            match = SIGNATURE_TAG.match(tag)
            if match is None:
                return None
            subjects.add("sha256:" + match.group(1))
        return subjects.pop() if len(subjects) == 1 else None


@dataclass(frozen=True)
class Verdict:
    """What happens to one version: ``keep`` or ``delete``, and the reasons."""

    version: PackageVersion
    action: Action
    reasons: tuple[str, ...]

    @property
    def line(self) -> str:
        """``<id> <digest 19> [tags] <action>: <reasons>`` (``action`` as given)."""
        return version_line(self.version, self.action, self.reasons)


@dataclass(frozen=True)
class CleanupPlan:
    """The verdicts for one package, newest first. ``unread``: kept digests whose manifest the
    caller has not given (read them and plan again: a plan with any is not final); ``refusal``:
    why nothing untagged is deleted (a kept manifest could not be read), else None."""

    package: str
    retention_days: int
    keep_newest: int
    verdicts: tuple[Verdict, ...] = field(default_factory=tuple)
    unread: tuple[str, ...] = ()
    refusal: str | None = None

    @property
    def delete(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.action == "delete")

    @property
    def keep(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.action == "keep")


@dataclass(frozen=True)
class Package:
    """A GHCR container package: its ``owner`` (org or user), its ``name`` (may hold slashes)."""

    image: str
    owner: str
    name: str

    @property
    def encoded(self) -> str:
        """The name as a path segment of the Packages API (``a/b`` -> ``a%2Fb``)."""
        return quote(self.name, safe="")


def package_of(image_repository: str) -> Package:
    """The GHCR package of ``ghcr.io/<owner>/<name>``; InputInvalid for another registry or a
    repository without a package name."""
    try:
        ref = parse_image_ref(image_repository)
    except InputInvalid as e:
        raise InputInvalid(f"image repository {image_repository!r}: {e}") from e
    if ref.tag or ref.digest:
        raise InputInvalid(f"image repository {image_repository!r} must not carry a tag or digest")
    if ref.registry.lower() != GHCR:
        raise InputInvalid(
            f"image repository {image_repository!r} is on {ref.registry}: image cleanup deletes GHCR "
            "package versions through the GitHub Packages API (ghcr.io/<owner>/<package>) only"
        )
    owner, _, name = ref.repository.partition("/")
    if not owner or not name:
        raise InputInvalid(f"image repository {image_repository!r} must be ghcr.io/<owner>/<package>")
    return Package(image=ref.name, owner=owner, name=name)


def _days(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} d" if days >= 1 else f"{delta.total_seconds() / 3600:.1f} h"


def plan_cleanup(
    package: str,
    versions: Iterable[PackageVersion],
    protected: Mapping[str, Sequence[str]],
    retention_days: int,
    keep_newest: int,
    now: datetime,
    indexes: Mapping[str, Sequence[str]] | None = None,
    unreadable: Mapping[str, str] | None = None,
) -> CleanupPlan:
    """A verdict for each version (see the module's docstring). ``protected``: digest -> reasons
    it must stay. ``indexes``: digest -> the manifests it names (() for an image manifest), for
    the manifests read so far; ``unreadable``: digest -> why its manifest could not be read. A
    version exactly ``retention_days`` old is still within the retention.
    InputInvalid when ``retention_days`` or ``keep_newest`` is below 1, or ``now`` is naive."""
    if retention_days < 1 or keep_newest < 1:
        raise InputInvalid(
            f"retention_days ({retention_days}) and keep_newest ({keep_newest}) must be at least 1"
        )
    if now.tzinfo is None:
        raise InputInvalid("now must be timezone-aware")
    indexes = indexes or {}
    unreadable = unreadable or {}
    ordered = sorted(versions, key=lambda v: (v.created_at, v.id), reverse=True)
    retention = timedelta(days=retention_days)
    images = [v for v in ordered if v.subject is None]
    children = {c for named in indexes.values() for c in named}
    newest = {v.id for v in [v for v in images if v.digest not in children][:keep_newest]}
    own: dict[int, tuple[Action, tuple[str, ...]]] = {}
    for v in images:
        own[v.id] = _image_verdict(v, protected, newest, keep_newest, retention, retention_days, now)
    by_digest = {v.digest: v for v in images}
    own = _follow_indexes(images, by_digest, own, indexes)
    kept = [v.digest for v in images if own[v.id][0] == "keep"]
    unread = tuple(d for d in kept if d not in indexes and d not in unreadable)
    own, refusal = _refuse_untagged(images, own, [d for d in kept if d in unreadable], unreadable)
    verdicts: list[Verdict] = []
    for v in ordered:
        if v.subject is None:
            action, reasons = own[v.id]
        else:
            action, reasons = _signature_verdict(
                v, v.subject, by_digest, own, protected, retention, retention_days, now
            )
        verdicts.append(Verdict(v, action, reasons))
    return CleanupPlan(package, retention_days, keep_newest, tuple(verdicts), unread, refusal)


def _follow_indexes(
    images: Sequence[PackageVersion],
    by_digest: Mapping[str, PackageVersion],
    own: Mapping[int, tuple[Action, tuple[str, ...]]],
    indexes: Mapping[str, Sequence[str]],
) -> dict[int, tuple[Action, tuple[str, ...]]]:
    """``own`` with every manifest a kept index names kept too (transitively)."""
    out = dict(own)
    pending = [v.digest for v in images if out[v.id][0] == "keep"]
    while pending:
        parent = pending.pop(0)
        why = "; ".join(out[by_digest[parent].id][1])
        for child in indexes.get(parent, ()):
            target = by_digest.get(child)
            if target is None or child == parent:
                continue  # not a version of this package: nothing to keep or delete
            reason = f"platform manifest of {parent[:19]} (kept: {why})"
            action, reasons = out[target.id]
            if reason in reasons:
                continue
            was_kept = action == "keep"
            out[target.id] = ("keep", (*reasons, reason) if was_kept else (reason,))
            if not was_kept:
                pending.append(child)
    return out


def _refuse_untagged(
    images: Sequence[PackageVersion],
    own: Mapping[int, tuple[Action, tuple[str, ...]]],
    bad: Sequence[str],
    unreadable: Mapping[str, str],
) -> tuple[dict[int, tuple[Action, tuple[str, ...]]], str | None]:
    """When kept manifests (``bad``) could not be read: every untagged version kept, with the
    refusal (which is returned too)."""
    out = dict(own)
    if not bad:
        return out, None
    first = bad[0]
    refusal = (
        f"the manifest of kept {first[:19]} could not be read ({unreadable[first]})"
        + (f", nor {len(bad) - 1} other(s)" if len(bad) > 1 else "")
        + ": the platform manifests it may name are unknown, so nothing untagged in this package is "
        "deleted (image cleanup never deletes on partial knowledge)"
    )
    for v in images:
        if not v.tags and out[v.id][0] == "delete":
            out[v.id] = ("keep", (f"untagged, not deleted: {refusal}",))
    return out, refusal


def _image_verdict(
    v: PackageVersion,
    protected: Mapping[str, Sequence[str]],
    newest: set[int],
    keep_newest: int,
    retention: timedelta,
    retention_days: int,
    now: datetime,
) -> tuple[Action, tuple[str, ...]]:
    reasons = list(protected.get(v.digest, ()))
    if v.id in newest:
        reasons.append(f"among the {keep_newest} newest")
    age = now - v.created_at
    if age <= retention:
        reasons.append(f"pushed {_days(age)} ago, within the {retention_days}-day retention")
    if reasons:
        return "keep", tuple(reasons)
    return "delete", (f"pushed {_days(age)} ago, older than the {retention_days}-day retention; not live, "
                      f"previous, recorded within the retention nor among the {keep_newest} newest",)  # fmt: skip


def _signature_verdict(
    v: PackageVersion,
    subject: str,
    by_digest: Mapping[str, PackageVersion],
    own: Mapping[int, tuple[Action, tuple[str, ...]]],
    protected: Mapping[str, Sequence[str]],
    retention: timedelta,
    retention_days: int,
    now: datetime,
) -> tuple[Action, tuple[str, ...]]:
    short = subject[:19]
    target = by_digest.get(subject)
    if target is not None:
        action = own[target.id][0]
        if action == "keep":
            return "keep", (f"signature of kept {short}",)
        return "delete", (f"signature of {short}, which is deleted",)
    if subject in protected:  # its subject is needed but not in this listing: keep, to be safe
        return "keep", (f"signature of {short}, which is protected: {'; '.join(protected[subject])}",)
    age = now - v.created_at
    if age <= retention:
        return "keep", (
            f"orphan signature of {short}, pushed {_days(age)} ago, within the {retention_days}-day retention",
        )
    return "delete", (f"orphan signature: its subject {short} is gone",)


def version_line(version: PackageVersion, action: str, reasons: Sequence[str]) -> str:
    """One line of the report: id, short digest, tags, what happened and why."""
    tags = ",".join(version.tags) if version.tags else "(untagged)"
    return f"{version.id:<10} {version.digest[:19]}  {tags:<24} {action}: {'; '.join(reasons)}"
