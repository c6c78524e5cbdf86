"""The cluster with the real data plane (greenlight.lab.pods and greenlight.lab.proxy): a Service
switch through the API server's proxy subresource serves the new colour at once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from greenlight.lab.catalogue import Behaviour, Catalogue
from greenlight.lab.faults import FaultRegistry, FaultRule
from greenlight.lab.kube.cluster import KubeCluster
from greenlight.lab.pods import PodRuntime
from greenlight.lab.proxy import ServiceProxies

from .conftest import KubeLab, LoopThread, deployment_body, service_body


class ListRecorder:
    """Keeps every recorded request's labels and code."""

    def __init__(self) -> None:
        self.records: list[tuple[dict[str, str], int]] = []

    def record(self, labels: Any, code: int, latency_s: float, at: float | None = None) -> None:
        self.records.append((dict(labels), code))


@pytest.fixture(scope="module")
def real() -> Iterator[tuple[KubeLab, ListRecorder]]:
    """A "lab-dr" cluster over real pods and proxies, images v1 and v2 in the catalogue."""
    loop = LoopThread()
    catalogue = Catalogue()
    catalogue.push("ghcr.io/acme/web:v1", Behaviour(version="1"))
    catalogue.push("ghcr.io/acme/web:v2", Behaviour(version="2"))
    recorder = ListRecorder()
    faults = FaultRegistry()

    async def make() -> tuple[KubeCluster, PodRuntime, ServiceProxies]:
        pods = PodRuntime(catalogue, recorder)
        proxies = ServiceProxies()
        return KubeCluster("lab-dr", faults, pods, proxies), pods, proxies

    cluster, pods, proxies = loop.run(make())
    port = loop.run(cluster.start())
    lab = KubeLab(loop, cluster, faults, pods, proxies, f"http://127.0.0.1:{port}", kubeconfig=None)  # type: ignore[arg-type]
    try:
        yield lab, recorder
    finally:
        loop.run(cluster.stop())
        loop.run(proxies.close())
        loop.close()


def _version(core: client.CoreV1Api, ns: str) -> str:
    raw = core.connect_get_namespaced_service_proxy_with_path("web", ns, "hello", _preload_content=False)
    return str(json.loads(raw.data)["version"])


def test_blue_green_switch_through_real_pods(real: tuple[KubeLab, ListRecorder]) -> None:
    """Pods become ready, the proxy serves blue, and right after the selector patch it serves green."""
    lab, recorder = real
    with lab.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        ns = "shop"
        core.create_namespace({"metadata": {"name": ns}})
        for color, tag in (("blue", "v1"), ("green", "v2")):
            body = deployment_body(
                f"web-{color}",
                image=f"ghcr.io/acme/web:{tag}",
                replicas=2,
                labels={"app": "web", "color": color},
            )
            apps.create_namespaced_deployment(ns, body)
        core.create_namespaced_service(ns, service_body("web", {"app": "web", "color": "blue"}))
        for color in ("blue", "green"):
            lab.wait_for(
                lambda c=color: (
                    (apps.read_namespaced_deployment(f"web-{c}", ns).status.available_replicas or 0) == 2
                ),
                what=f"{color} available",
            )
        lab.wait_for(lambda: lab.cluster.controller.ready_endpoints(f"lab-dr/{ns}/web"), what="endpoints")
        assert {_version(core, ns) for _ in range(4)} == {"1"}
        core.patch_namespaced_service("web", ns, {"spec": {"selector": {"app": "web", "color": "green"}}})
        assert {_version(core, ns) for _ in range(4)} == {"2"}
        served = [labels for labels, code in recorder.records if code == 200]
        assert {labels["color"] for labels in served} == {"blue", "green"}
        assert all(labels["cluster"] == "lab-dr" and labels["job"] == "web" for labels in served)


def test_faults_use_the_dr_target(real: tuple[KubeLab, ListRecorder]) -> None:
    """The lab-dr cluster takes faults addressed to kube-dr."""
    lab, _ = real
    lab.faults.add(FaultRule(target="kube-dr", verb="list", resource="namespaces", status=500))
    with lab.api_client() as api, pytest.raises(ApiException) as info:
        client.CoreV1Api(api).list_namespace()
    assert info.value.status == 500
