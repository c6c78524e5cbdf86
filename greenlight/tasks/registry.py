"""Registry task: resolve image references to digests (everything deployed is pinned)."""

from __future__ import annotations

from prefect import task

from greenlight.clients.registry import PASSWORD_ENV, USERNAME_ENV, RegistryClient
from greenlight.core.images import ImageRef
from greenlight.tasks.policy import FRESH, RETRIES

# a Prefect Secret block {"username": ..., "password": ...}; the environment variables win
REGISTRY_CREDENTIALS_BLOCK = "greenlight-registry-credentials"
__all__ = ["PASSWORD_ENV", "REGISTRY_CREDENTIALS_BLOCK", "USERNAME_ENV", "resolve_images"]


@task(name="resolve-images", **FRESH, **RETRIES)
def resolve_images(refs: dict[str, ImageRef]) -> dict[str, str]:
    """app -> digest for each reference; NotFound names the image that does not resolve."""
    with RegistryClient() as reg:
        return {app: reg.resolve(ref) for app, ref in refs.items()}
