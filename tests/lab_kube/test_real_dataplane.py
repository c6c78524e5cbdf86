"""The cluster with the real data plane (greenlight_lab.pods and greenlight_lab.proxy): the API
server's proxy subresource goes straight to a ready endpoint, so it serves the new colour at once
while the Service's kube-proxy data plane still routes to the old one; annotations pick a
Service's data plane."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.kube.cluster import KubeCluster
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import ServiceProxies

from .conftest import KubeLab, LoopThread, deployment_body, service_body

ENDPOINT_DELAY_S = 2.0


class ListRecorder:
    """Keeps every recorded request's labels and code."""

    def __init__(self) -> None:
        self.records: list[tuple[dict[str, str], int]] = []

    def record(self, labels: Any, code: int, latency_s: float, at: float | None = None) -> None:
        self.records.append((dict(labels), code))


@pytest.fixture(scope="module")
def real() -> Iterator[tuple[KubeLab, ListRecorder]]:
    """A "lab-dr" cluster over real pods and kube-proxy data planes (2 s endpoint delay), images v1 and v2."""
    loop = LoopThread("kube-loop")
    catalogue = Catalogue()
    catalogue.push("ghcr.io/acme/web:v1", Behaviour(version="1"))
    catalogue.push("ghcr.io/acme/web:v2", Behaviour(version="2"))
    recorder = ListRecorder()
    faults = FaultRegistry()

    async def make() -> tuple[KubeCluster, PodRuntime, ServiceProxies]:
        pods = PodRuntime(catalogue, recorder)
        proxies = ServiceProxies(endpoint_delay_s=ENDPOINT_DELAY_S, endpoint_jitter_s=0)
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


def _create_colours(apps: client.AppsV1Api, core: client.CoreV1Api, lab: KubeLab, ns: str) -> None:
    """Namespace ``ns`` with web-blue (v1) and web-green (v2), two pods each, available."""
    core.create_namespace({"metadata": {"name": ns}})
    for color, tag in (("blue", "v1"), ("green", "v2")):
        labels = {"app": "web", "color": color}
        body = deployment_body(f"web-{color}", image=f"ghcr.io/acme/web:{tag}", replicas=2, labels=labels)
        apps.create_namespaced_deployment(ns, body)
    for color in ("blue", "green"):
        lab.wait_for(
            lambda c=color: (
                (apps.read_namespaced_deployment(f"web-{c}", ns).status.available_replicas or 0) == 2
            ),
            what=f"{color} available",
        )


def _through_the_service(proxies: ServiceProxies, key: str) -> str:
    """The version a new connection to the Service's data plane answers."""
    url = proxies.url(key)
    assert url is not None
    with urllib.request.urlopen(url + "/hello", timeout=5) as resp:
        return str(json.loads(resp.read())["version"])


def test_proxy_subresource_bypasses_the_lagging_data_plane(real: tuple[KubeLab, ListRecorder]) -> None:
    """Right after a selector switch the proxy subresource answers from green while kube-proxy still sends blue."""
    lab, _ = real
    proxies = lab.proxies
    assert isinstance(proxies, ServiceProxies)
    ns, key = "bypass", "lab-dr/bypass/web"
    with lab.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        _create_colours(apps, core, lab, ns)
        core.create_namespaced_service(ns, service_body("web", {"app": "web", "color": "blue"}))
        lab.wait_for(lambda: len(lab.cluster.controller.ready_endpoints(key)) == 2, what="blue endpoints")
        assert proxies.mode(key) == "kube-proxy"
        lab.wait_for(
            lambda: len(proxies.known_endpoints(key)) == 2, timeout=ENDPOINT_DELAY_S + 3, what="known"
        )
        blue = set(proxies.known_endpoints(key))
        core.patch_namespaced_service("web", ns, {"spec": {"selector": {"app": "web", "color": "green"}}})
        assert {_version(core, ns) for _ in range(4)} == {"2"}
        assert set(proxies.known_endpoints(key)) == blue
        assert {_through_the_service(proxies, key) for _ in range(4)} == {"1"}
        lab.wait_for(
            lambda: set(proxies.known_endpoints(key)).isdisjoint(blue),
            timeout=ENDPOINT_DELAY_S + 3,
            what="green",
        )
        assert {_through_the_service(proxies, key) for _ in range(4)} == {"2"}


def test_annotations_choose_the_data_plane(real: tuple[KubeLab, ListRecorder]) -> None:
    """cloud.google.com/neg makes a Service neg; lab.greenlight.dev/data-plane overrides it; without either, the default."""
    lab, _ = real
    proxies = lab.proxies
    assert isinstance(proxies, ServiceProxies)
    ns = "planes"
    with lab.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": ns}})
        body = service_body("web", {"app": "web"})
        body["metadata"]["annotations"] = {"cloud.google.com/neg": '{"ingress": true}'}
        core.create_namespaced_service(ns, body)
        key = f"lab-dr/{ns}/web"
        lab.wait_for(lambda: proxies.url(key), what="proxy ensured")
        assert proxies.mode(key) == "neg"
        patch = {"metadata": {"annotations": {"lab.greenlight.dev/data-plane": "mesh"}}}
        core.patch_namespaced_service("web", ns, patch)
        assert proxies.mode(key) == "mesh"
        unset = {
            "metadata": {"annotations": {"lab.greenlight.dev/data-plane": None, "cloud.google.com/neg": None}}
        }
        core.patch_namespaced_service("web", ns, unset)
        assert proxies.mode(key) == "kube-proxy"


def test_proxy_subresource_forwards_method_path_and_query_to_an_endpoint(
    real: tuple[KubeLab, ListRecorder],
) -> None:
    """services/{name}/proxy/{path} reaches a pod with its method and path; no ready endpoint is 503."""
    lab, _ = real
    ns = "subresource"
    with lab.api_client() as api:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        core.create_namespace({"metadata": {"name": ns}})
        core.create_namespaced_service(ns, service_body("web", {"app": "web"}))
        lab.wait_for(lambda: lab.proxies.url(f"lab-dr/{ns}/web"), what="proxy ensured")
        with pytest.raises(ApiException) as info:
            core.connect_get_namespaced_service_proxy_with_path("web", ns, "hello")
        assert info.value.status == 503 and "no endpoints available" in json.loads(info.value.body)["message"]
        body = deployment_body("web", image="ghcr.io/acme/web:v1", replicas=1, labels={"app": "web"})
        apps.create_namespaced_deployment(ns, body)
        lab.wait_for(lambda: lab.cluster.controller.ready_endpoints(f"lab-dr/{ns}/web"), what="endpoints")
        health = core.connect_get_namespaced_service_proxy_with_path(
            "web", ns, "healthz", _preload_content=False
        )
        assert health.data == b"ok"
        raw = core.connect_get_namespaced_service_proxy_with_path("web", ns, "hello", _preload_content=False)
        assert json.loads(raw.data)["version"] == "1" and raw.headers["X-Pod"].startswith("web-")
        posted = core.connect_post_namespaced_service_proxy_with_path(
            "web:http", ns, "submit", _preload_content=False
        )
        assert posted.status == 200 and json.loads(posted.data)["version"] == "1"
