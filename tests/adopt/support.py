"""Helpers of the adoption tests: plain apps (one Deployment behind its Service, as a team runs
an app before Greenlight) in a namespace of their own on the lab's kube-proxy data plane, and a
profile per app."""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from greenlight.clients.kube import Kube
from greenlight_lab import supervisor
from greenlight_lab.bootstrap import ensure_namespace, wait_served
from greenlight_lab.proxy import DATA_PLANE_ANNOTATION, KUBE_PROXY, NEG, NEG_ANNOTATION
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

NS = "adopt-lab"
REPOSITORY = "ghcr.io/sma-platform/{app}"


def env_name(app: str) -> str:
    return f"adopt-{app}"


def write_profile(directory: Path, app: str) -> str:
    """A copy of the lab's staging profile as environment ``adopt-<app>`` with one app ``app`` in
    ``adopt-lab``, with the short gate and bake of the release tests; returns its name."""
    doc = yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())
    name = env_name(app)
    doc.update(name=name, namespace=NS)
    doc["apps"] = [
        {"name": app, "service": app, "preview_service": f"{app}-preview", "container": app, "port": 8080,
         "health_path": "/healthz", "replicas": 2, "image_repository": REPOSITORY.format(app=app)}
    ]  # fmt: skip
    doc["release"]["bake_s"] = 1
    doc["gate"].update({"interval_s": 1, "intervals": 1, "synthetic_rps": 40})
    doc["monitoring"]["ingestion_delay_s"] = 1.1
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return name


def plain_deployment(app: str, image: str, replicas: int = 2) -> dict[str, Any]:
    """The Deployment a team runs before Greenlight: labelled app=<app>, an image by tag, with a
    readiness probe, a preStop sleep longer than the propagation allowance and a grace period."""
    labels = {"app": app}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": app, "namespace": NS, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": app,
                            "image": image,
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": "http"},
                                "periodSeconds": 2,
                            },
                            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
                        }
                    ],
                },
            },
        },
    }


def plain_service(app: str, data_plane: str = KUBE_PROXY) -> dict[str, Any]:
    """Its Service, selecting app=<app>, on the lab's kube-proxy data plane (L4, endpoint changes
    seen 1-2 s late, kept-alive connections pinned to their pod) or ``neg`` (GKE's container-native
    load balancing: L7, new endpoints attached 2.5 s late and only once health-checked, removed
    ones detached first)."""
    annotations = {DATA_PLANE_ANNOTATION: data_plane}
    if data_plane == NEG:
        annotations[NEG_ANNOTATION] = '{"ingress": true}'
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": app, "namespace": NS, "labels": {"app": app}, "annotations": annotations},
        "spec": {"selector": {"app": app}, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
    }  # fmt: skip


def create_plain_app(
    lab: LabState, kube: Kube, app: str, timeout_s: float = 60, data_plane: str = KUBE_PROXY
) -> str:
    """Push ``<repository>:plain``, create the plain Deployment and Service, wait until the Service
    answers through its data plane; returns the image's digest."""
    ref = f"{REPOSITORY.format(app=app)}:plain"
    digest = str(
        supervisor.control(lab, "POST", "/images", {"ref": ref, "version": f"{app}-plain"})["digest"]
    )
    ensure_namespace(kube, NS)
    kube.create("deployments", plain_deployment(app, ref), NS)
    kube.create("services", plain_service(app, data_plane), NS)
    deadline = time.monotonic() + timeout_s
    wait_available(kube, app, deadline)
    wait_served(lab.env["GREENLIGHT_LAB_CONTROL"], f"lab-primary/{NS}/{app}", deadline)
    return digest


def wait_available(kube: Kube, name: str, deadline: float) -> dict[str, Any]:
    while True:
        dep = kube.get("deployments", name, NS)
        st = dep.get("status") or {}
        want = int(dep["spec"]["replicas"])
        if int(st.get("readyReplicas") or 0) == want and int(st.get("updatedReplicas") or 0) == want:
            return dep
        if time.monotonic() > deadline:
            raise AssertionError(f"deployment {NS}/{name} not available: {st}")
        time.sleep(0.2)


def snapshot(kube: Kube, app: str) -> dict[str, Any]:
    """The app's objects as they stand (name -> resourceVersion, selector, replicas), to tell
    whether anything changed."""
    out: dict[str, Any] = {}
    for plural, name in (("deployments", app), ("deployments", f"{app}-blue"), ("deployments", f"{app}-green"),
                         ("services", app), ("services", f"{app}-preview")):  # fmt: skip
        obj = kube.find(plural, name, NS)
        out[f"{plural}/{name}"] = None if obj is None else obj["metadata"].get("resourceVersion")
    return out


def plain_shape(kube: Kube, app: str) -> dict[str, Any]:
    """What makes the plain shape: the Service's selector and adoption annotations, the Deployment's
    replicas, and which Greenlight objects exist."""
    svc = kube.get("services", app, NS)
    dep = kube.get("deployments", app, NS)
    return {
        "selector": svc["spec"].get("selector"),
        "greenlight_annotations": sorted(
            k for k in (svc["metadata"].get("annotations") or {}) if k.startswith("greenlight.dev/")
        ),
        "replicas": dep["spec"]["replicas"],
        "ready": (dep.get("status") or {}).get("readyReplicas"),
        "blue": kube.find("deployments", f"{app}-blue", NS) is not None,
        "preview": kube.find("services", f"{app}-preview", NS) is not None,
    }


class FreshLoad:
    """A caller that opens a new connection for every request (as callers behind an L4 load
    balancer, or new client pods, do), paced at ``rps`` on a thread while a ``with`` block runs:
    unlike kept-alive connections, which kube-proxy keeps on their pod, every request goes to
    whatever the data plane knows at that moment. ``failed`` counts resets, refusals, timeouts and
    5xx answers; ``errors`` names them."""

    def __init__(self, lab: LabState, service: str, rps: float = 40) -> None:
        url = supervisor.control(lab, "GET", "/urls")[f"lab-primary/{NS}/{service}"]
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", int(parts.port or 80)
        self.interval = 1 / rps
        self.sent = self.failed = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> None:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            conn.request("GET", "/")
            answer = conn.getresponse()
            answer.read()
            if answer.status >= 500:
                self.failed += 1
                self.errors[str(answer.status)] += 1
        except (OSError, http.client.HTTPException) as e:
            self.failed += 1
            self.errors[type(e).__name__] += 1
        finally:
            conn.close()
        self.sent += 1

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._one()
            next_at += self.interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> FreshLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def render(self) -> str:
        return f"fresh connections: {self.sent} sent, {self.failed} failed {dict(self.errors)}"
