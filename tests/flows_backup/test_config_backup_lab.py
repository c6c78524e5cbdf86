"""config-backup against the lab: a bundle round-trips with a verified index, never holds a secret value,
and retention keeps the newest N."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import uuid
from collections.abc import Iterator

import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.clients.kube import Kube
from greenlight.commands.backups import cmd_backup_config
from greenlight.flows.config_backup import backup_config, latest_bundle, load_bundle
from greenlight.settings import Profile
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab

NAMESPACE = "sma-staging"
SECRET_VALUE = "s3cr3t-Value-that-must-never-leave-the-cluster"
BUCKET = "sma-config-backups"


@pytest.fixture(scope="module")
def secret(kube: Kube) -> Iterator[str]:
    """A Secret and a ConfigMap in sma-staging; the Secret's value is SECRET_VALUE (in data and last-applied)."""
    name = f"bt-db-credentials-{uuid.uuid4().hex[:6]}"
    encoded = base64.b64encode(SECRET_VALUE.encode()).decode()
    applied = json.dumps(
        {"kind": "Secret", "data": {"password": encoded}, "stringData": {"token": SECRET_VALUE}}
    )
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {"app": "backend"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": applied},
        },
        "type": "Opaque",
        "data": {"password": encoded},
        "stringData": {"token": SECRET_VALUE},
    }
    kube.create("secrets", body, NAMESPACE)
    kube.create(
        "configmaps",
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "1"}},
        NAMESPACE,
    )
    yield name
    kube.delete("secrets", name, NAMESPACE)
    kube.delete("configmaps", name, NAMESPACE)


def staging(production: Profile, retention: int = 30) -> Profile:
    """A profile for sma-staging whose bundles go to a fresh prefix of the config bucket."""
    assert production.backups is not None
    b = production.backups.model_copy(
        update={"config_prefix": f"bt-config-{uuid.uuid4().hex[:6]}/", "config_retention": retention}
    )
    return production.model_copy(update={"name": "bt-staging", "namespace": NAMESPACE, "backups": b})


def test_bundle_round_trips_with_checksums_and_no_secret_value(
    lab: LabState, production: Profile, gcs: GcsClient, secret: str
) -> None:
    """Every object of the namespace lands in the bundle, the index's sha256 match the stored bytes,
    the Secret keeps only its keys, and its value appears in no uploaded object."""
    profile = staging(production)
    result = backup_config(profile.name, profile=profile)
    assert result["verified"] is True
    prefix = result["prefix"]
    stored = {o.name[len(prefix) :]: gcs.read_bytes(BUCKET, o.name) for o in gcs.list(BUCKET, prefix)}
    index = json.loads(stored.pop("index.json"))
    assert {f["path"] for f in index["files"]} == set(stored)
    for f in index["files"]:
        assert hashlib.sha256(stored[f["path"]]).hexdigest() == f["sha256"]
        assert len(stored[f["path"]]) == f["size"]
    encoded = base64.b64encode(SECRET_VALUE.encode())
    for path, data in {**stored, "index.json": b""}.items():
        assert SECRET_VALUE.encode() not in data and encoded not in data, path
    exported_secret = json.loads(stored[f"secrets/{secret}.json"])
    assert exported_secret["keys"] == ["password", "token"]
    assert "data" not in exported_secret and "annotations" not in exported_secret["metadata"]
    assert f"configmaps/{secret}.json" in stored
    assert {"deployments/backend-blue.json", "services/backend.json"} <= set(stored)
    service = json.loads(stored["services/backend.json"])
    assert "clusterIP" not in service["spec"] and "status" not in service
    assert not any(k in service["metadata"] for k in ("resourceVersion", "uid", "creationTimestamp"))
    assert latest_bundle.fn(profile) == prefix
    objects = load_bundle.fn(profile, prefix)
    assert len(objects) == len(index["files"])
    assert {o["kind"] for o in objects} >= {"Deployment", "Service", "ConfigMap", "Secret"}


def test_retention_keeps_the_newest_n_bundles(lab: LabState, production: Profile, gcs: GcsClient) -> None:
    """With retention 2, a third backup deletes the oldest bundle and keeps the two newest."""
    profile = staging(production, retention=2)
    prefixes = [backup_config(profile.name, profile=profile)["prefix"] for _ in range(3)]
    assert profile.backups is not None
    root = f"{profile.backups.config_prefix}{profile.name}/"
    left = {o.name[len(root) :].split("/", 1)[0] for o in gcs.list(BUCKET, root)}
    assert {f"{root}{stamp}/" for stamp in left} == set(prefixes[1:])
    assert latest_bundle.fn(profile) == prefixes[-1]


def test_dry_run_prints_the_plan_and_writes_nothing(
    lab: LabState, gcs: GcsClient, capsys: pytest.CaptureFixture[str]
) -> None:
    """`backup-config production --dry-run` lists what it would write where, and the bucket is unchanged."""
    before = [o.name for o in gcs.list(BUCKET)]
    code = cmd_backup_config(argparse.Namespace(env="production", dry_run=True))
    out = capsys.readouterr().out
    assert code == 0
    assert "would write gs://sma-config-backups/config/production/" in out
    assert "deployments/backend-blue.json" in out and "DRY RUN" in out
    assert [o.name for o in gcs.list(BUCKET)] == before
