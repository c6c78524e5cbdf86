"""Registry task: resolve image references to digests (everything deployed is pinned).

Credentials: ``$GREENLIGHT_REGISTRY_USERNAME`` and ``$GREENLIGHT_REGISTRY_PASSWORD`` when both are
set, else the Prefect Secret block ``greenlight-registry-credentials`` holding
``{"username": ..., "password": ...}`` (``greenlight setup`` makes it from those variables), else
none (public images resolve anonymously).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from greenlight.clients.registry import PASSWORD_ENV, USERNAME_ENV, RegistryClient, credentials_from_env
from greenlight.core.images import ImageRef
from greenlight.errors import Forbidden, InputInvalid
from greenlight.tasks.blocks import read_secret_block
from greenlight.tasks.policy import FRESH, RETRIES

REGISTRY_CREDENTIALS_BLOCK = "greenlight-registry-credentials"
__all__ = [
    "PASSWORD_ENV",
    "REGISTRY_CREDENTIALS_BLOCK",
    "USERNAME_ENV",
    "registry_credentials",
    "resolve_images",
]


def _from_block(value: Any) -> tuple[str, str]:
    """(username, password) from the block's value; InputInvalid (naming the shape, never the value) otherwise."""
    if isinstance(value, dict):
        username, password = value.get("username"), value.get("password")
        if isinstance(username, str) and isinstance(password, str) and username and password:
            return username, password
    raise InputInvalid(
        f"Prefect Secret block {REGISTRY_CREDENTIALS_BLOCK!r} must hold "
        '{"username": "...", "password": "..."} (both non-empty strings)'
    )


def registry_credentials() -> tuple[str, str] | None:
    """The credentials sent to every registry: the environment's pair, else the block's, else None."""
    from_env = credentials_from_env()
    if from_env:
        return from_env
    value = read_secret_block(REGISTRY_CREDENTIALS_BLOCK)
    return None if value is None else _from_block(value)


@task(name="resolve-images", **FRESH, **RETRIES)
def resolve_images(refs: dict[str, ImageRef]) -> dict[str, str]:
    """app -> digest for each reference; NotFound names the image that does not resolve."""
    credentials = registry_credentials()
    with RegistryClient(default_credentials=credentials) as reg:
        try:
            return {app: reg.resolve(ref) for app, ref in refs.items()}
        except Forbidden as e:
            if credentials is not None:
                raise
            raise Forbidden(
                f"{e}; no registry credentials are configured: set {USERNAME_ENV} and {PASSWORD_ENV}, "
                f"or create Prefect Secret block {REGISTRY_CREDENTIALS_BLOCK!r} (`greenlight setup` "
                "with both set)"
            ) from e
