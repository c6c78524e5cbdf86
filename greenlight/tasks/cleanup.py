"""Image cleanup tasks: list a package's versions, gather the digests that must stay, delete.

The token: ``$GREENLIGHT_GITHUB_PACKAGES_TOKEN``, else the Prefect Secret block
``greenlight-github-packages-token`` (``greenlight setup`` makes it from that variable); it is
read inside each task, never passed as a parameter (task parameters show in the Prefect UI).
The API: the profile's ``registry.cleanup.api_url``, which ``$GREENLIGHT_GITHUB_API_URL``
overrides (the lab points it at its stand-in); ``$GREENLIGHT_GITHUB_PER_PAGE`` (1..100, default
100) sets the page size of the listing.

What must stay is read from every environment ``registry.cleanup.environments`` names, and the
profile's own: each colour's Deployment of every app whose image repository is cleaned (the
live colour and the previous one), and every digest in the release records (ConfigMap
``greenlight-releases``) recorded within the retention. If any of them cannot be read, nothing
is planned: cleanup never deletes on partial knowledge.

The manifests of the kept versions are read through the OCI API (greenlight.clients.registry,
with the registry credentials the releases use) to learn which of them are indexes of
multi-platform images and what they name (see greenlight.core.cleanup).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from prefect import task

from greenlight.clients.packages import PER_PAGE, PackagesClient
from greenlight.clients.registry import RegistryClient
from greenlight.core.cleanup import Package, PackageVersion, index_children, package_of
from greenlight.core.images import parse_image_ref
from greenlight.errors import (
    Forbidden,
    GreenlightError,
    InputInvalid,
    PermanentError,
    TransientError,
    with_message,
)
from greenlight.settings import Profile, RegistryCleanup, load_profile
from greenlight.tasks.blocks import read_secret_block
from greenlight.tasks.cluster import cluster
from greenlight.tasks.kube import deployment_name
from greenlight.tasks.policy import FRESH, RETRIES, logger
from greenlight.tasks.records import RECORD
from greenlight.tasks.registry import registry_credentials
from greenlight.tasks.routers import router_for

PACKAGES_TOKEN_ENV = "GREENLIGHT_GITHUB_PACKAGES_TOKEN"
PACKAGES_TOKEN_BLOCK = "greenlight-github-packages-token"
API_URL_ENV = "GREENLIGHT_GITHUB_API_URL"
#: versions per page when listing (1..100, default 100: the fewest requests)
PER_PAGE_ENV = "GREENLIGHT_GITHUB_PER_PAGE"


def cleanup_settings(profile: Profile) -> RegistryCleanup:
    """The profile's ``registry.cleanup``; InputInvalid when it has none."""
    if profile.registry.cleanup is None:
        raise InputInvalid(
            f"environment '{profile.name}' has no registry.cleanup section: image cleanup needs its "
            "retention_days and keep_newest (see docs/image-cleanup.md)"
        )
    return profile.registry.cleanup


def api_url(settings: RegistryCleanup) -> str:
    """``$GREENLIGHT_GITHUB_API_URL``, else the profile's ``registry.cleanup.api_url``."""
    return (os.environ.get(API_URL_ENV) or settings.api_url).rstrip("/")


def packages_token() -> str:
    """The GitHub token for the Packages API; Forbidden naming both places when neither has one."""
    token = os.environ.get(PACKAGES_TOKEN_ENV)
    if token:
        return token
    value = read_secret_block(PACKAGES_TOKEN_BLOCK)
    if isinstance(value, str) and value:
        return value
    if value is not None:
        raise InputInvalid(f"Prefect Secret block {PACKAGES_TOKEN_BLOCK!r} must hold the token as a string")
    raise Forbidden(
        f"no GitHub Packages token: set {PACKAGES_TOKEN_ENV} or create Prefect Secret block "
        f"{PACKAGES_TOKEN_BLOCK!r} (`greenlight setup` with it set); it needs read:packages and delete:packages"
    )


def cleaned_packages(profile: Profile) -> list[Package]:
    """The GHCR packages of the profile's apps, one per image repository."""
    seen: dict[str, Package] = {}
    for app in profile.apps:
        package = package_of(app.image_repository)
        seen.setdefault(package.image, package)
    return list(seen.values())


def _per_page() -> int:
    raw = os.environ.get(PER_PAGE_ENV, "").strip()
    if not raw:
        return PER_PAGE
    if not raw.isdigit() or not 1 <= int(raw) <= PER_PAGE:
        raise InputInvalid(f"{PER_PAGE_ENV} must be a whole number within 1..{PER_PAGE}, not {raw!r}")
    return int(raw)


def _client(profile: Profile) -> PackagesClient:
    settings = cleanup_settings(profile)
    return PackagesClient(
        packages_token(), api_url=api_url(settings), owner_kind=settings.owner_kind, per_page=_per_page()
    )


@task(name="list-package-versions", **FRESH, **RETRIES)
def list_package_versions(profile: Profile, package: Package) -> list[PackageVersion]:
    """Every version of ``package`` (all pages), newest first as GitHub lists them."""
    with _client(profile) as client:
        versions = client.list_versions(package)
    logger().info("%s: %d versions listed", package.image, len(versions))
    return versions


def _same_kind(error: GreenlightError, message: str) -> GreenlightError:
    """An error of ``error``'s kind (so the exit code stays) and fields, with ``message``."""
    return with_message(error, message)


def _record_time(entry: Mapping[str, Any]) -> datetime | None:
    try:
        at = datetime.fromisoformat(str(entry.get("at", "")))
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


def _environment_protections(
    env: Profile,
    images: set[str],
    tags_to_digest: Mapping[tuple[str, str], str],
    now: datetime,
    retention: timedelta,
) -> dict[str, list[str]]:
    """digest -> reasons, read from one environment's cluster (raises on anything unreadable)."""
    out: dict[str, list[str]] = {}
    ns = env.namespace
    with cluster(env) as kube:
        for app in env.apps:
            if parse_image_ref(app.image_repository).name not in images:
                continue
            snap = router_for(env).read(kube, env, app)
            live = snap.colour() if snap else None
            for colour in env.release.colours:
                name = deployment_name(app, colour)
                dep = kube.find("deployments", name, ns)
                if dep is None:
                    continue
                where = (
                    f"live in {env.name} ({name})"
                    if colour == live
                    else f"previous colour in {env.name} ({name})"
                    if live is not None
                    else f"deployed in {env.name} ({name}; no live Service)"
                )
                containers = ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get(
                    "containers"
                ) or []
                for c in containers:
                    image = str(c.get("image") or "")
                    try:
                        ref = parse_image_ref(image)
                    except InputInvalid as e:
                        raise PermanentError(f"{ns}/{name} runs an unreadable image {image!r}: {e}") from e
                    if ref.name not in images:
                        continue
                    digest = ref.digest or tags_to_digest.get((ref.name, ref.tag or ""))
                    if digest is None:
                        raise PermanentError(
                            f"{ns}/{name} runs {image}, whose tag names no version of the package: cannot "
                            "tell which version it needs"
                        )
                    out.setdefault(digest, []).append(where)
        cm = kube.find("configmaps", RECORD, ns)
    for key, text in sorted(((cm or {}).get("data") or {}).items()):
        try:
            entry = json.loads(text)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        at = _record_time(entry)
        if at is not None and now - at > retention:
            continue
        when = at.date().isoformat() if at is not None else "at an unreadable time"
        for digest in (entry.get("digests") or {}).values():
            out.setdefault(str(digest), []).append(
                f"recorded in {env.name} release {entry.get('release_id', key)} ({entry.get('outcome', '?')}, {when})"
            )
    return out


@task(name="protected-digests", **FRESH, **RETRIES)
def protected_digests(
    profile: Profile, listings: Mapping[str, Sequence[PackageVersion]], now: datetime
) -> dict[str, list[str]]:
    """digest -> why it must stay, from the profile's environment and every one its
    ``registry.cleanup.environments`` names. ``listings``: image name -> its versions (to learn
    the digest of a Deployment that runs a tag). Raises, naming the environment, when any of
    them cannot be read: nothing is planned on partial knowledge."""
    settings = cleanup_settings(profile)
    retention = timedelta(days=settings.retention_days)
    names = list(dict.fromkeys([profile.name, *settings.environments]))
    tags = {
        (image, tag): v.digest for image, versions in listings.items() for v in versions for tag in v.tags
    }
    out: dict[str, list[str]] = {}
    for name in names:
        try:
            env = profile if name == profile.name else load_profile(name)
            found = _environment_protections(env, set(listings), tags, now, retention)
        except GreenlightError as e:
            raise _same_kind(
                e,
                f"cannot read environment '{name}' (registry.cleanup.environments of {profile.name}): {e}; "
                "nothing planned, nothing deleted (image cleanup never deletes on partial knowledge)",
            ) from e
        for digest, reasons in found.items():
            out.setdefault(digest, []).extend(reasons)
    logger().info("%d digests protected across %s", len(out), ", ".join(names))
    return out


@task(name="delete-package-versions", **FRESH)
def delete_package_versions(profile: Profile, package: Package, version_ids: Sequence[int]) -> dict[str, Any]:
    """Delete the versions in order, stopping at the first failure. ``{"deleted": [ids],
    "failed": {"id", "error", "kind"} | None, "not_attempted": [ids]}``: never raises for a
    failed delete (the caller reports what went and what did not)."""
    deleted: list[int] = []
    failed: dict[str, Any] | None = None
    with _client(profile) as client:
        for i, version_id in enumerate(version_ids):
            try:
                client.delete_version(package, version_id)
            except GreenlightError as e:
                failed = {"id": version_id, "error": str(e), "kind": type(e).__name__}
                logger().error("%s: version %s not deleted: %s", package.image, version_id, e)
                return {"deleted": deleted, "failed": failed, "not_attempted": list(version_ids[i + 1 :])}
            deleted.append(version_id)
            logger().info("%s: version %s deleted", package.image, version_id)
    return {"deleted": deleted, "failed": failed, "not_attempted": []}


@task(name="read-manifests", **FRESH, **RETRIES)
def read_manifests(
    package: Package, digests: Sequence[str]
) -> tuple[dict[str, tuple[str, ...]], dict[str, str]]:
    """({digest: the manifests it names (() for an image manifest)}, {digest: why it could not be
    read}) for each of ``digests`` in ``package``'s image. A transient registry error is raised
    (the task retries); a manifest missing, refused or malformed is reported as unreadable."""
    named: dict[str, tuple[str, ...]] = {}
    unreadable: dict[str, str] = {}
    with RegistryClient(default_credentials=registry_credentials()) as registry:
        for digest in digests:
            try:
                media_type, body = registry.manifest(parse_image_ref(f"{package.image}@{digest}"))
                named[digest] = index_children(media_type, body)
            except TransientError:
                raise
            except (GreenlightError, ValueError) as e:
                unreadable[digest] = str(e)
    indexes = sum(1 for children in named.values() if children)
    logger().info(
        "%s: %d manifests read (%d indexes), %d unreadable",
        package.image,
        len(named),
        indexes,
        len(unreadable),
    )
    return named, unreadable
