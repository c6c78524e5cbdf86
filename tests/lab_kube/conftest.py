"""Fixtures: one lab Kubernetes cluster served over real HTTP from its own event-loop thread,
with a small fake data plane (pod runtime and Service proxies) whose behaviour follows the
image name, the official Python client and a kubeconfig for kubectl."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client

from greenlight_lab.faults import FaultRegistry
from greenlight_lab.kube.cluster import KubeCluster
from tests.loop_thread import LoopThread


@dataclass(frozen=True)
class FakePodState:
    phase: str
    waiting_reason: str | None
    ready: bool
    port: int | None
    restart_count: int
    started_at: float | None
    message: str = ""


class FakePodRuntime:
    """A pod runtime that serves nothing: the image name decides the life of the pod.

    ``...unknown...``: ImagePullBackOff; ``...crash...``: CrashLoopBackOff with growing
    restarts; ``...slow...``: running, never ready; anything else: ready after ``delay_s``.
    """

    def __init__(self, journal: list[tuple[Any, ...]], delay_s: float = 0.05) -> None:
        self.journal = journal
        self.delay_s = delay_s
        self.states: dict[str, FakePodState] = {}
        self.started: dict[str, dict[str, Any]] = {}
        self.stopped: list[tuple[str, float]] = []
        self._callbacks: list[Callable[[str], None]] = []
        self._ports = iter(range(41000, 60000))

    async def start(
        self,
        key: str,
        image: str,
        labels: dict[str, str],
        readiness_path: str | None,
        container_port: int,
        probe_period_s: float = 0.5,
    ) -> None:
        self.started[key] = {
            "image": image,
            "labels": labels,
            "readiness_path": readiness_path,
            "port": container_port,
        }
        self._set(key, FakePodState("Pending", "ContainerCreating", False, None, 0, None))
        loop = asyncio.get_running_loop()
        loop.call_later(self.delay_s, self._advance, key, image)

    def _advance(self, key: str, image: str) -> None:
        state = self.states.get(key)
        if state is None:
            return
        loop = asyncio.get_running_loop()
        if "unknown" in image:
            self._set(
                key,
                replace(state, waiting_reason="ImagePullBackOff", message=f"Back-off pulling image {image}"),
            )
        elif "crash" in image:
            port = state.port or next(self._ports)
            self._set(
                key,
                FakePodState(
                    "Running",
                    "CrashLoopBackOff",
                    False,
                    port,
                    state.restart_count + 1,
                    time.time(),
                    "container exited with code 1",
                ),
            )
            loop.call_later(self.delay_s * 4, self._advance, key, image)
        else:
            ready = "slow" not in image
            self._set(key, FakePodState("Running", None, ready, next(self._ports), 0, time.time()))

    def _set(self, key: str, state: FakePodState) -> None:
        self.states[key] = state
        loop = asyncio.get_running_loop()
        for cb in self._callbacks:
            loop.call_soon(cb, key)

    def status(self, key: str) -> FakePodState | None:
        return self.states.get(key)

    async def stop(self, key: str, grace_s: float = 1.0) -> None:
        self.stopped.append((key, grace_s))
        self.journal.append(("stop", key))
        if self.states.pop(key, None) is not None:
            loop = asyncio.get_running_loop()
            for cb in self._callbacks:
                loop.call_soon(cb, key)

    def on_change(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)


class FakeServiceProxies:
    """Service proxies that all point at one echo server and record every endpoint change."""

    def __init__(self, journal: list[tuple[Any, ...]], echo_url: str) -> None:
        self.journal = journal
        self.echo_url = echo_url
        self.endpoints: dict[str, list[tuple[str, int]]] = {}
        self.history: list[tuple[str, list[tuple[str, int]]]] = []
        self.ensured: set[str] = set()
        self.removed: list[str] = []

    async def ensure(self, key: str) -> int:
        self.ensured.add(key)
        return int(self.echo_url.rsplit(":", 1)[1])

    def set_endpoints(self, key: str, endpoints: list[tuple[str, int]]) -> None:
        self.endpoints[key] = list(endpoints)
        self.history.append((key, list(endpoints)))
        self.journal.append(("endpoints", key, list(endpoints)))

    async def remove(self, key: str) -> None:
        self.ensured.discard(key)
        self.removed.append(key)

    def url(self, key: str) -> str | None:
        return self.echo_url if key in self.ensured else None


async def _echo(request: web.Request) -> web.Response:
    body = await request.text()
    return web.json_response(
        {"method": request.method, "path": request.path, "query": request.query_string, "body": body},
        headers={"X-Echo": "yes"},
    )


@dataclass
class KubeLab:
    """The running cluster and everything a test needs to talk to it."""

    loop: LoopThread
    cluster: KubeCluster
    faults: FaultRegistry
    runtime: FakePodRuntime
    proxies: FakeServiceProxies
    url: str
    kubeconfig: Path

    @property
    def journal(self) -> list[tuple[Any, ...]]:
        """Data-plane calls in order: ("stop", pod key) and ("endpoints", service key, backends)."""
        return self.runtime.journal

    def api_client(self) -> client.ApiClient:
        config = client.Configuration()
        config.host = self.url
        return client.ApiClient(config)

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
        """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} (last value {value!r})")
            time.sleep(0.02)


def _write_kubeconfig(path: Path, url: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "lab-primary", "cluster": {"server": url}}],
        "users": [{"name": "lab", "user": {}}],
        "contexts": [{"name": "lab-primary", "context": {"cluster": "lab-primary", "user": "lab"}}],
        "current-context": "lab-primary",
    }
    path.write_text(json.dumps(config))


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeLab]:
    """One cluster "lab-primary" with a fake data plane, for the whole session."""
    loop = LoopThread("kube-loop")

    async def start_echo() -> tuple[web.AppRunner, str]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", _echo)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"

    echo_runner, echo_url = loop.run(start_echo())
    faults = FaultRegistry()
    journal: list[tuple[Any, ...]] = []
    runtime = FakePodRuntime(journal)
    proxies = FakeServiceProxies(journal, echo_url)

    async def make_cluster() -> KubeCluster:
        # built on the loop: the controller's asyncio primitives belong to it
        return KubeCluster("lab-primary", faults, runtime, proxies)

    cluster = loop.run(make_cluster())
    port = loop.run(cluster.start())
    url = f"http://127.0.0.1:{port}"
    kubeconfig = tmp_path_factory.mktemp("kube") / "kubeconfig"
    _write_kubeconfig(kubeconfig, url)
    try:
        yield KubeLab(loop, cluster, faults, runtime, proxies, url, kubeconfig)
    finally:
        loop.run(cluster.stop())
        loop.run(echo_runner.cleanup())
        loop.close()


@pytest.fixture(autouse=True)
def _clear_faults(kube: KubeLab) -> Iterator[None]:
    yield
    kube.faults.clear()


@pytest.fixture
def api(kube: KubeLab) -> Iterator[client.ApiClient]:
    with kube.api_client() as api_client:
        yield api_client


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture
def ns(kube: KubeLab, core: client.CoreV1Api) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def deployment_body(
    name: str,
    image: str = "ghcr.io/acme/app:v1",
    replicas: int = 2,
    labels: dict[str, str] | None = None,
    **spec: Any,
) -> dict[str, Any]:
    """A Deployment manifest as a dict (selector = template labels)."""
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(labels)},
            "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": image,
                            "ports": [{"containerPort": 8080, "name": "http"}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                        }
                    ]
                },
            },
            **spec,
        },
    }


def service_body(name: str, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
