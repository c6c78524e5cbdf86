"""Fixtures for the DR drill against the lab: the profiles, both clusters, and the Secrets the bundle names.

The source profile is a copy of the lab's production profile whose config bundles go to a fresh
prefix, so the first drill finds none and exports one (with the Secret ``app-secrets`` that
``secrets_ready`` creates in production first). The DR side gets the same Secret with its own value.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator

import pytest

from greenlight.clients.kube import Kube
from greenlight.clients.postgres import Postgres
from greenlight.settings import Profile, load_profile
from greenlight_lab.state import LabState

SECRET = "app-secrets"
SECRET_KEY = "DATABASE_URL"
PRODUCTION_VALUE = "postgresql://app:prod-only-value@primary.internal/sma"
DR_VALUE = "postgresql://app:dr-only-value@dr.internal/sma"
NAMESPACE = "sma-production"


def secret_body(value: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": SECRET},
        "type": "Opaque",
        "data": {SECRET_KEY: base64.b64encode(value.encode()).decode()},
    }


def ensure_namespace(kube: Kube, name: str) -> None:
    if kube.find("namespaces", name) is None:
        kube.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})


@pytest.fixture(scope="module")
def primary(lab: LabState) -> Iterator[Kube]:
    k = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    yield k
    k.close()


@pytest.fixture(scope="module")
def dr_kube(lab: LabState) -> Iterator[Kube]:
    k = Kube.connect(context="lab-dr", kubeconfig=lab.env["KUBECONFIG"])
    yield k
    k.close()


@pytest.fixture(scope="module")
def server(lab: LabState) -> Postgres:
    """The server the DR database is created on (GREENLIGHT_SCRATCH_DATABASE_URL)."""
    return Postgres(lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"])


@pytest.fixture(scope="module")
def secrets_ready(primary: Kube, dr_kube: Kube) -> Iterator[list[str]]:
    """The Secrets production's namespace holds (``app-secrets`` created when it has none), each also in
    lab-dr's namespace with its own value; the ones this fixture created are deleted afterwards."""
    created: list[tuple[Kube, str]] = []
    names = [s["metadata"]["name"] for s in primary.items("secrets", NAMESPACE)]
    if not names:
        primary.create("secrets", secret_body(PRODUCTION_VALUE), NAMESPACE)
        created.append((primary, SECRET))
        names = [SECRET]
    ensure_namespace(dr_kube, NAMESPACE)
    for name in names:
        if dr_kube.find("secrets", name, NAMESPACE) is None:
            keys = sorted((primary.get("secrets", name, NAMESPACE).get("data") or {}) or [SECRET_KEY])
            body = secret_body(DR_VALUE)
            body["metadata"] = {"name": name}
            body["data"] = {k: base64.b64encode(DR_VALUE.encode()).decode() for k in keys}
            dr_kube.create("secrets", body, NAMESPACE)
            created.append((dr_kube, name))
    yield names
    for kube, name in created:
        kube.delete("secrets", name, NAMESPACE)


@pytest.fixture(scope="module")
def dr(lab: LabState) -> Profile:
    """The lab's dr profile (lab-dr, sma-production, cross-region dumps in gs://sma-db-backups-dr)."""
    return load_profile("dr")


@pytest.fixture(scope="module")
def source(lab: LabState, secrets_ready: list[str]) -> Profile:
    """The lab's production profile with its config bundles under a fresh prefix (none there yet)."""
    production = load_profile("production")
    assert production.backups is not None
    b = production.backups.model_copy(update={"config_prefix": f"drill-config-{uuid.uuid4().hex[:6]}/"})
    return production.model_copy(update={"backups": b})
