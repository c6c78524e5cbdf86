"""Fixtures for config-restore against the lab: a namespace of its own per test, filled with a few
objects (a Secret whose value must never be printed or overwritten), and a profile that backs it up
under a fresh prefix of the lab's config bucket."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.clients.kube import Kube
from greenlight.settings import Profile, load_profile
from greenlight_lab.state import LabState

BUCKET = "sma-config-backups"
SECRET_VALUE = "Rc-s3cr3t-that-must-never-be-printed"
ENCODED = base64.b64encode(SECRET_VALUE.encode()).decode()


@dataclass
class Place:
    """A lab namespace with the test's objects, and a profile whose namespace it is."""

    namespace: str
    profile: Profile
    kube: Kube

    def snapshot(self) -> dict[str, str]:
        """plural/name -> resourceVersion of every object of the restored kinds in the namespace."""
        out = {}
        for plural in (
            "secrets",
            "configmaps",
            "services",
            "deployments",
            "horizontalpodautoscalers",
            "ingresses",
            "httproutes",
        ):
            for o in self.kube.items(plural, self.namespace):
                out[f"{plural}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
        return out


def objects() -> list[tuple[str, dict[str, Any]]]:
    """What each test namespace starts with: a ConfigMap, a Secret, a Service, a Deployment (0 replicas:
    no pods to wait for) and the Ingress in front of it."""
    labels = {"app": "web"}
    return [
        ("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web-config", "labels": labels},
                        "data": {"LOG_LEVEL": "info", "FEATURE_X": "on"}}),
        ("secrets", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "web-db"}, "type": "Opaque",
                     "data": {"password": ENCODED, "user": base64.b64encode(b"web").decode()}}),
        ("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": labels},
                      "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
        ("deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": labels},
            "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                         {"name": "web", "image": "ghcr.io/sma-platform/backend:rc",
                          "env": [{"name": "MODE", "value": "normal"}],
                          "envFrom": [{"configMapRef": {"name": "web-config"}}]}]}}},
        }),
        ("ingresses", {
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "web"},
            "spec": {"rules": [{"host": "web.example.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "web", "port": {"number": 80}}}}]}}]},
        }),
    ]  # fmt: skip


def make_namespace(kube: Kube, prefix: str) -> str:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture(scope="module")
def kube(lab: LabState) -> Iterator[Kube]:
    k = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    yield k
    k.close()


@pytest.fixture(scope="module")
def gcs(lab: LabState) -> GcsClient:
    return GcsClient()


@pytest.fixture
def place(lab: LabState, kube: Kube) -> Iterator[Place]:
    """A fresh namespace with :func:`objects` and a profile ``rc-…`` for it (a fresh bundle prefix)."""
    ns = make_namespace(kube, "rc")
    for plural, body in objects():
        kube.create(plural, body, ns)
    production = load_profile("production")
    assert production.backups is not None
    backups = production.backups.model_copy(update={"config_prefix": f"rc-config-{uuid.uuid4().hex[:6]}/"})
    profile = production.model_copy(update={"name": ns, "namespace": ns, "backups": backups})
    yield Place(ns, profile, kube)
    kube.delete("namespaces", ns)


@pytest.fixture
def other_namespace(kube: Kube) -> Iterator[str]:
    """An empty namespace to restore into (--into)."""
    ns = make_namespace(kube, "rc-into")
    yield ns
    kube.delete("namespaces", ns)
