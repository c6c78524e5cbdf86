"""PostgreSQL as tasks: scratch databases and full restores (the probes of a restored dump: tasks/backups.py).

A scratch database lives on the server ``GREENLIGHT_SCRATCH_DATABASE_URL`` names (a maintenance
URL, e.g. ``postgresql://user:pass@host:5432/postgres``; else the Prefect Secret block
``greenlight-scratch-database-url`` holds it), is called ``<prefix>_<random>`` and is
dropped by :func:`drop_scratch_database` (``DROP DATABASE ... WITH (FORCE)``; dropping one that
is gone is fine). The caller drops it in a ``finally``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

from prefect import task

from greenlight.clients.postgres import Postgres, RestoreResult, restore
from greenlight.errors import InputInvalid
from greenlight.tasks.blocks import read_secret_block
from greenlight.tasks.policy import FRESH, RETRIES

SCRATCH_URL_ENV = "GREENLIGHT_SCRATCH_DATABASE_URL"
SCRATCH_URL_BLOCK = "greenlight-scratch-database-url"  # a Prefect Secret block; the variable wins
RESTORE_TIMEOUT_S = 3600.0


def scratch_server_url() -> str:
    """The maintenance URL of the server scratch databases are created on: ``$GREENLIGHT_SCRATCH_DATABASE_URL``,
    else the Prefect Secret block ``greenlight-scratch-database-url``; InputInvalid when neither is set."""
    url = os.environ.get(SCRATCH_URL_ENV) or read_secret_block(SCRATCH_URL_BLOCK)
    if not url:
        raise InputInvalid(
            f"{SCRATCH_URL_ENV} is not set and Prefect Secret block {SCRATCH_URL_BLOCK!r} does not exist: "
            "point either at a PostgreSQL server where scratch databases may be created "
            "(e.g. postgresql://user@host:5432/postgres); run `greenlight setup` with "
            f"{SCRATCH_URL_ENV} set to create the block"
        )
    if not isinstance(url, str):
        raise InputInvalid(f"Prefect Secret block {SCRATCH_URL_BLOCK!r} must hold a URL string")
    return url


def scratch_url_password() -> str | None:
    """The password in the scratch server's URL (for redaction only), None when there is none."""
    try:
        url = os.environ.get(SCRATCH_URL_ENV) or read_secret_block(SCRATCH_URL_BLOCK)
        return urlsplit(url).password if isinstance(url, str) else None
    except ValueError:
        return None


@task(name="create-scratch-database", **FRESH, **RETRIES)
def create_scratch_database(server_url: str, prefix: str = "gl_verify") -> tuple[str, str]:
    """Create an empty database ``<prefix>_<8 hex>``; (its name, its URL)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    return name, Postgres(server_url).create_database(name)


@task(name="drop-scratch-database", **FRESH, **RETRIES)
def drop_scratch_database(server_url: str, name: str) -> None:
    """Drop the scratch database ``name``, ending its sessions; nothing happens when it is gone."""
    Postgres(server_url).drop_database(name)


@task(name="restore-dump", retries=0, **FRESH)
def restore_dump(
    path: Path, target_url: str, jobs: int, timeout_s: float = RESTORE_TIMEOUT_S
) -> RestoreResult:
    """Restore the dump at ``path`` (format from its magic bytes) fully into ``target_url``.

    Never retried: a half-done restore is not repeated into the same database. Raises
    BackupInvalid with the tool's stderr tail when the dump does not restore.
    """
    return restore(path, target_url, fmt=None, jobs=jobs, timeout_s=timeout_s)
