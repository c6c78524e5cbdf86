"""Pods terminate as kubelets terminate them: a DELETE marks the pod (deletionTimestamp), it
leaves the endpoints at that moment, preStop runs while it still serves, SIGTERM follows
(the image's shutdown behaviour), SIGKILL at the end of the grace period, then the object goes.

A cluster over the real pod runtime (greenlight_lab.pods) and recording Service proxies,
driven through the official client, raw sockets to the pods, and kubectl."""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.kube.cluster import KubeCluster
from greenlight_lab.pods import PodRuntime

from .conftest import (
    FakeServiceProxies,
    KubeLab,
    LoopThread,
    _write_kubeconfig,
    deployment_body,
    service_body,
)

CLUSTER = "lab-primary"
IMAGES = {
    "ghcr.io/acme/web:abrupt": Behaviour(version="abrupt"),
    "ghcr.io/acme/web:abrupt-slow": Behaviour(version="abrupt-slow", latency_ms=1500),
    "ghcr.io/acme/web:graceful-slow": Behaviour(version="graceful-slow", latency_ms=800, shutdown="graceful"),
    "ghcr.io/acme/web:graceful-slower": Behaviour(
        version="graceful-slower", latency_ms=8000, shutdown="graceful"
    ),
}


class NullRecorder:
    def record(self, labels: Any, code: int, latency_s: float, at: float | None = None) -> None:
        pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeLab]:
    """A cluster over real pods; its Service proxies only record the endpoints pushed to them."""
    loop = LoopThread("kube-loop")
    catalogue = Catalogue()
    for ref, behaviour in IMAGES.items():
        catalogue.push(ref, behaviour)
    journal: list[tuple[Any, ...]] = []
    proxies = FakeServiceProxies(journal, "http://127.0.0.1:9")

    async def make() -> tuple[KubeCluster, PodRuntime]:
        pods = PodRuntime(catalogue, NullRecorder())
        return KubeCluster(CLUSTER, FaultRegistry(), pods, proxies), pods

    cluster, pods = loop.run(make())
    port = loop.run(cluster.start())
    url = f"http://127.0.0.1:{port}"
    kubeconfig = tmp_path_factory.mktemp("kube-term") / "kubeconfig"
    _write_kubeconfig(kubeconfig, url)
    lab = KubeLab(loop, cluster, FaultRegistry(), pods, proxies, url, kubeconfig)  # type: ignore[arg-type]
    try:
        yield lab
    finally:
        loop.run(cluster.stop(), timeout=30)
        loop.close()


@pytest.fixture
def core(lab: KubeLab) -> Iterator[client.CoreV1Api]:
    with lab.api_client() as api:
        yield client.CoreV1Api(api)


@pytest.fixture
def apps(lab: KubeLab) -> Iterator[client.AppsV1Api]:
    with lab.api_client() as api:
        yield client.AppsV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api) -> Iterator[str]:
    name = f"term-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def pod_body(
    name: str, image: str = "ghcr.io/acme/web:abrupt", pre_stop: Any = None, grace: int | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "ports": [{"containerPort": 8080, "name": "http"}],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1},
    }
    if pre_stop is not None:
        container["lifecycle"] = {"preStop": pre_stop}
    spec: dict[str, Any] = {"containers": [container]}
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    return {"metadata": {"name": name, "labels": {"app": name}}, "spec": spec}


def running_pod(lab: KubeLab, core: client.CoreV1Api, ns: str, body: dict[str, Any]) -> int:
    """Create a pod, wait until it is ready, return the port it really listens on."""
    core.create_namespaced_pod(ns, body)
    name = body["metadata"]["name"]
    state = lab.wait_for(
        lambda: (s := lab.runtime.status(f"{CLUSTER}/{ns}/{name}")) and s.ready and s, what=f"{name} ready"
    )
    return int(state.port)


def gone(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, ns)
    except ApiException as e:
        return e.status == 404
    return False


def get(port: int, path: str = "/") -> int:
    """One GET over a new connection; the status code."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return int(s.recv(64).split(b" ", 2)[1])


class InFlight:
    """One raw keep-alive request sent now; ``result`` is what came back until EOF or reset."""

    def __init__(self, port: int, path: str = "/") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=15)
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        self.data = b""
        self.error: BaseException | None = None
        self.ended_at: float | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while chunk := self.sock.recv(65536):
                self.data += chunk
        except OSError as e:
            self.error = e
        finally:
            self.ended_at = time.monotonic()
            self.sock.close()

    def result(self, timeout: float = 15) -> tuple[bytes, BaseException | None]:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the connection is still open"
        return self.data, self.error


def test_delete_sets_deletion_timestamp_and_the_pod_goes_after_termination(
    lab: KubeLab, core: client.CoreV1Api, ns: str
) -> None:
    """DELETE answers the pod with deletionTimestamp set (MODIFIED); it stays listed while it terminates, then DELETED."""
    running_pod(lab, core, ns, pod_body("p", pre_stop={"exec": {"command": ["sleep", "1"]}}))
    rv = core.read_namespaced_pod("p", ns).metadata.resource_version
    began = time.monotonic()
    out = core.delete_namespaced_pod("p", ns)
    assert out.metadata.deletion_timestamp is not None and out.metadata.deletion_grace_period_seconds == 30
    listed = core.list_namespaced_pod(ns).items
    assert [p.metadata.name for p in listed] == ["p"] and listed[0].metadata.deletion_timestamp
    events: list[tuple[str, bool]] = []
    w = watch.Watch()
    for e in w.stream(core.list_namespaced_pod, ns, resource_version=rv, timeout_seconds=10):
        events.append((e["type"], e["object"].metadata.deletion_timestamp is not None))
        if e["type"] == "DELETED":
            w.stop()
    assert events[0] == ("MODIFIED", True) and events[-1] == ("DELETED", True)
    assert time.monotonic() - began >= 1.0  # the preStop sleep ran first
    assert gone(core, ns, "p")
    assert lab.runtime.status(f"{CLUSTER}/{ns}/p") is None


def test_pod_leaves_the_endpoints_at_deletion_and_serves_through_pre_stop(
    lab: KubeLab, core: client.CoreV1Api, ns: str
) -> None:
    """At DELETE the pod leaves the Service endpoints (pushed in that same call) while its preStop sleep keeps it serving."""
    key = f"{CLUSTER}/{ns}/web"
    core.create_namespaced_service(ns, service_body("web", {"app": "web"}))
    pre_stop = {"exec": {"command": ["/bin/sh", "-c", "sleep 1.5"]}}
    port = running_pod(lab, core, ns, pod_body("web", pre_stop=pre_stop))
    lab.wait_for(lambda: lab.proxies.endpoints.get(key) == [("127.0.0.1", port)], what="pod is an endpoint")
    pushes = len(lab.proxies.history)
    core.delete_namespaced_pod("web", ns)
    after = [eps for k, eps in lab.proxies.history[pushes:] if k == key]
    assert after and after[-1] == [], "the endpoints push happened inside the DELETE"
    assert lab.cluster.controller.ready_endpoints(key) == []
    lab.wait_for(
        lambda: not (core.read_namespaced_endpoints("web", ns).subsets or []), what="Endpoints object empty"
    )
    assert get(port) == 200  # still serving during preStop
    assert core.read_namespaced_pod("web", ns).metadata.deletion_timestamp is not None
    lab.wait_for(lambda: gone(core, ns, "web"), what="pod removed")
    with pytest.raises(OSError):
        get(port)


def test_abrupt_image_resets_the_request_in_flight_at_sigterm(
    lab: KubeLab, core: client.CoreV1Api, ns: str
) -> None:
    """An abrupt image (the default) exits at SIGTERM: the request in flight gets no answer, only a TCP reset."""
    port = running_pod(lab, core, ns, pod_body("a", image="ghcr.io/acme/web:abrupt-slow"))
    request = InFlight(port)
    time.sleep(0.2)
    core.delete_namespaced_pod("a", ns)
    data, error = request.result()
    assert data == b"" and isinstance(error, ConnectionResetError)
    lab.wait_for(lambda: gone(core, ns, "a"), what="pod removed")


def test_graceful_image_finishes_the_request_in_flight_and_closes_keep_alive(
    lab: KubeLab, core: client.CoreV1Api, ns: str
) -> None:
    """A graceful image answers the request in flight with Connection: close, then closes; idle connections close at once."""
    port = running_pod(lab, core, ns, pod_body("g", image="ghcr.io/acme/web:graceful-slow"))
    idle = socket.create_connection(("127.0.0.1", port), timeout=5)
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    request = InFlight(port)
    time.sleep(0.2)
    deleted_at = time.monotonic()
    core.delete_namespaced_pod("g", ns)
    assert idle.recv(4096) == b""  # the idle keep-alive connection is closed at once
    assert time.monotonic() - deleted_at < 0.5
    idle.close()
    data, error = request.result()
    head, _, body = data.partition(b"\r\n\r\n")
    assert error is None and head.startswith(b"HTTP/1.1 200")
    assert b"connection: close" in head.lower() and b'"version":"graceful-slow"' in body
    lab.wait_for(lambda: gone(core, ns, "g"), what="pod removed")


def test_grace_period_bounds_a_long_pre_stop(lab: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """A 30 s preStop is cut at the 1 s grace period; SIGTERM, then SIGKILL resets what is still in flight."""
    body = pod_body(
        "long",
        image="ghcr.io/acme/web:graceful-slower",
        pre_stop={"exec": {"command": ["sleep", "30"]}},
        grace=1,
    )
    port = running_pod(lab, core, ns, body)
    request = InFlight(port)
    began = time.monotonic()
    core.delete_namespaced_pod("long", ns)
    lab.wait_for(lambda: gone(core, ns, "long"), timeout=8, what="pod removed")
    took = time.monotonic() - began
    data, error = request.result()
    assert data == b"" and isinstance(error, ConnectionResetError)
    # 1 s of preStop, then the kubelet's minimum 2 s between SIGTERM and SIGKILL
    assert 2.5 <= took < 5, took


def test_force_delete_removes_the_pod_at_once(lab: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """gracePeriodSeconds=0 removes the pod object at once, skipping preStop; the runtime kills it."""
    port = running_pod(lab, core, ns, pod_body("f", pre_stop={"exec": {"command": ["sleep", "30"]}}))
    core.delete_namespaced_pod("f", ns, grace_period_seconds=0)
    assert gone(core, ns, "f")
    lab.wait_for(lambda: lab.runtime.status(f"{CLUSTER}/{ns}/f") is None, timeout=3, what="pod killed")
    with pytest.raises(OSError):
        get(port)


def test_scale_down_goes_through_graceful_deletion_and_status_ignores_terminating_pods(
    lab: KubeLab, core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """Scale-down and pod deletion mark pods terminating; the Deployment counts only the others and replaces a deleted pod."""
    body = deployment_body("d", image="ghcr.io/acme/web:abrupt", replicas=3)
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", "2"]}}}
    apps.create_namespaced_deployment(ns, body)

    def status() -> tuple[int, int, int]:
        s = apps.read_namespaced_deployment("d", ns).status
        return s.replicas or 0, s.ready_replicas or 0, s.available_replicas or 0

    lab.wait_for(lambda: status() == (3, 3, 3), what="3 available")
    apps.patch_namespaced_deployment_scale("d", ns, {"spec": {"replicas": 2}})
    terminating = lab.wait_for(
        lambda: [p for p in core.list_namespaced_pod(ns).items if p.metadata.deletion_timestamp],
        what="a terminating pod",
    )
    assert len(terminating) == 1 and len(core.list_namespaced_pod(ns).items) == 3
    lab.wait_for(lambda: status() == (2, 2, 2), what="status counts 2 while the third terminates")
    assert not gone(core, ns, terminating[0].metadata.name)
    lab.wait_for(lambda: gone(core, ns, terminating[0].metadata.name), what="terminated pod removed")

    victim = core.list_namespaced_pod(ns).items[0].metadata.name
    core.delete_namespaced_pod(victim, ns)

    def replaced() -> bool:
        pods = core.list_namespaced_pod(ns).items
        live = [p for p in pods if not p.metadata.deletion_timestamp]
        return len(live) == 2 and victim not in {p.metadata.name for p in live} and len(pods) == 3

    lab.wait_for(replaced, what="a replacement while the deleted pod terminates")
    lab.wait_for(lambda: status() == (2, 2, 2) and gone(core, ns, victim), what="back to 2")


KUBECTL = shutil.which("kubectl") or shutil.which("kubectl", path="/usr/bin")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kubectl_delete_waits_for_termination_and_force_deletes(
    lab: KubeLab, core: client.CoreV1Api, ns: str
) -> None:
    """kubectl get shows Terminating; kubectl delete pod waits until the pod is gone; --grace-period=0 --force removes it at once."""

    def kubectl(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(KUBECTL), "--kubeconfig", str(Path(lab.kubeconfig)), "-n", ns, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done

    pre_stop = {"exec": {"command": ["sleep", "1.5"]}}
    running_pod(lab, core, ns, pod_body("k", pre_stop=pre_stop))
    running_pod(lab, core, ns, pod_body("shown", pre_stop={"exec": {"command": ["sleep", "30"]}}))
    kubectl("delete", "pod", "shown", "--wait=false")
    assert "Terminating" in kubectl("get", "pod", "shown").stdout
    began = time.monotonic()
    out = kubectl("delete", "pod", "k").stdout
    assert 'pod "k" deleted' in out and time.monotonic() - began >= 1.5
    assert gone(core, ns, "k")
    forced = kubectl("delete", "pod", "shown", "--grace-period=0", "--force")
    assert 'pod "shown" force deleted' in forced.stdout and "Immediate deletion" in forced.stderr
    assert gone(core, ns, "shown")
