"""Fixtures for the backup flows against the lab: profiles, crafted dumps in their own prefixes.

Crafted dumps go under ``bt-crafted/<case>-<random>/`` in the lab's backup buckets (never under
the seeded ``sma-db/``), and each test points a copy of the production profile at its prefix.
A small database ``bt_small`` (two tables, a few thousand rows) gives dumps that restore in a
fraction of a second, for the failure cases that need a restorable dump.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.clients.kube import Kube
from greenlight.clients.postgres import Postgres
from greenlight.settings import Profile, load_profile
from greenlight_lab.state import LabState

from .helpers import SMALL_DB, SMALL_SQL, Crafter, pg_dump


@pytest.fixture(scope="module")
def production(lab: LabState) -> Profile:
    """The lab's production profile (seeded dumps in gs://sma-db-backups/sma-db/)."""
    return load_profile("production")


@pytest.fixture(scope="module")
def gcs(lab: LabState) -> GcsClient:
    return GcsClient()


@pytest.fixture(scope="module")
def scratch_server(lab: LabState) -> Postgres:
    """The server scratch databases are created on (GREENLIGHT_SCRATCH_DATABASE_URL)."""
    return Postgres(lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"])


@pytest.fixture(scope="module")
def small_dumps(
    lab: LabState, scratch_server: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The small database dumped as plain-gzip (``gz``) and in directory format (``dir``)."""
    scratch_server.drop_database(SMALL_DB)
    url = scratch_server.create_database(SMALL_DB)
    Postgres(url).query(SMALL_SQL)
    out = tmp_path_factory.mktemp("small")
    dumps = {
        "gz": pg_dump(url, out / "small.sql.gz", "--format=plain", "--compress=gzip:6"),
        "dir": pg_dump(url, out / "small.dir", "--format=directory"),
    }
    scratch_server.drop_database(SMALL_DB)
    return dumps


@pytest.fixture(scope="module")
def seeded_newest(production: Profile, gcs: GcsClient, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The newest seeded nightly dump (gzipped plain SQL of ``sma``), downloaded."""
    b = production.backups
    assert b is not None
    newest = max(gcs.list(b.bucket, b.prefix), key=lambda o: o.name)
    return gcs.download_to(b.bucket, newest.name, tmp_path_factory.mktemp("seeded") / "newest.sql.gz").path


@pytest.fixture(scope="module")
def crafter(production: Profile, gcs: GcsClient) -> Crafter:
    return Crafter(production, gcs)


@pytest.fixture(scope="module")
def kube(lab: LabState) -> Iterator[Kube]:
    k = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    yield k
    k.close()
