"""What a person reads with kubectl describe / kubectl logs, held to the official client: the
kubelet's and the scheduler's Events (aggregated, selectable by involvedObject.name, expiring),
container states and restart counts, and pods/log with tailLines, previous and timestamps, over
real lab pods (greenlight_lab.pods)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.kube.cluster import KubeCluster
from greenlight_lab.kube.events import EventRecorder
from greenlight_lab.kube.store import Store
from greenlight_lab.pods import LEAKED_SECRET, PodRuntime
from greenlight_lab.proxy import ServiceProxies

from .conftest import KubeLab, LoopThread

NS = "diag"


class NoRecorder:
    def record(self, labels: Any, code: int, latency_s: float, at: float | None = None) -> None:
        pass


@pytest.fixture(scope="module")
def real() -> Iterator[KubeLab]:
    """A cluster over real lab pods: a healthy image, a crashing one (no image for ``missing``)."""
    loop = LoopThread("kube-loop")
    catalogue = Catalogue()
    catalogue.push("ghcr.io/acme/web:ok", Behaviour(version="ok"))
    catalogue.push("ghcr.io/acme/web:crash", Behaviour(version="crash", crash=True))

    async def make() -> tuple[KubeCluster, PodRuntime, ServiceProxies]:
        pods = PodRuntime(catalogue, NoRecorder())
        proxies = ServiceProxies(endpoint_delay_s=0, endpoint_jitter_s=0)
        return KubeCluster("lab-diag", FaultRegistry(), pods, proxies), pods, proxies

    cluster, pods, proxies = loop.run(make())
    port = loop.run(cluster.start())
    lab = KubeLab(loop, cluster, FaultRegistry(), pods, proxies, f"http://127.0.0.1:{port}", kubeconfig=None)  # type: ignore[arg-type]
    with lab.api_client() as api:
        client.CoreV1Api(api).create_namespace({"metadata": {"name": NS}})
    try:
        yield lab
    finally:
        loop.run(cluster.stop())
        loop.run(proxies.close())
        loop.close()


@pytest.fixture
def core(real: KubeLab) -> Iterator[client.CoreV1Api]:
    with real.api_client() as api:
        yield client.CoreV1Api(api)


def _pod(core: client.CoreV1Api, name: str, image: str) -> client.V1Pod:
    return core.create_namespaced_pod(
        NS,
        {
            "metadata": {"name": name, "labels": {"app": name}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": image,
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
                    }
                ]
            },
        },
    )


def _events(core: client.CoreV1Api, pod: str) -> list[client.CoreV1Event]:
    return list(core.list_namespaced_event(NS, field_selector=f"involvedObject.name={pod}").items)


def _message(e: ApiException) -> str:
    return str(json.loads(e.body)["message"])


def _log_or_empty(core: client.CoreV1Api, pod: str) -> str:
    """The pod's log, "" while its container waits to start (400)."""
    try:
        return str(core.read_namespaced_pod_log(pod, NS))
    except ApiException as e:
        if e.status != 400:
            raise
        return ""


def _by_reason(events: list[client.CoreV1Event]) -> dict[str, list[client.CoreV1Event]]:
    out: dict[str, list[client.CoreV1Event]] = {}
    for e in events:
        out.setdefault(e.reason, []).append(e)
    return out


def test_crashing_container_restarts_with_backoff_events_and_its_previous_log(
    real: KubeLab, core: client.CoreV1Api
) -> None:
    """A crash image: CrashLoopBackOff with a growing restartCount and lastState terminated; one
    BackOff Event (Warning, on the container) whose count grows, Unhealthy with the probe's status,
    Scheduled by the scheduler; the previous run's log holds the app's last words."""
    created = _pod(core, "crasher", "ghcr.io/acme/web:crash")

    def restarted_twice() -> client.V1ContainerStatus | None:
        st = core.read_namespaced_pod_status("crasher", NS).status.container_statuses
        return st[0] if st and st[0].restart_count >= 2 else None

    cs = real.wait_for(restarted_twice, timeout=20, what="two restarts")
    assert cs.ready is False
    assert cs.last_state.terminated.exit_code == 1

    def backoff_counted() -> dict[str, list[client.CoreV1Event]] | None:
        got = _by_reason(_events(core, "crasher"))
        return got if got.get("BackOff") and got["BackOff"][0].count >= 2 else None

    events = real.wait_for(backoff_counted, timeout=20, what="a BackOff event counted twice")
    backoff = events["BackOff"]
    assert len(backoff) == 1, "a repeat bumps count, it is not a new Event"
    b = backoff[0]
    assert b.type == "Warning" and b.message.startswith(
        "Back-off restarting failed container app in pod crasher"
    )
    assert b.involved_object.kind == "Pod" and b.involved_object.uid == created.metadata.uid
    assert b.involved_object.field_path == "spec.containers{app}"
    assert b.source.component == "kubelet" and b.last_timestamp >= b.first_timestamp
    assert events["Scheduled"][0].source.component == "default-scheduler"
    assert [e.message for e in events["Unhealthy"]] == [
        "Readiness probe failed: HTTP probe failed with statuscode: 503"
    ]
    assert events["Unhealthy"][0].type == "Warning"
    assert events["Created"][0].count >= 2 and events["Started"][0].type == "Normal"
    other = _events(core, "no-such-pod")
    assert other == []

    previous = core.read_namespaced_pod_log("crasher", NS, previous=True)
    assert 'FATAL: password authentication failed for user "app"' in previous
    assert LEAKED_SECRET in previous  # the lab's raw log holds it; the product must redact it
    assert previous.splitlines()[0] == "starting crash image=ghcr.io/acme/web:crash"
    last = core.read_namespaced_pod_log("crasher", NS, previous=True, tail_lines=1)
    assert last == "exiting with code 1\n"


def test_running_container_log_tail_timestamps_and_no_previous(real: KubeLab, core: client.CoreV1Api) -> None:
    """A healthy pod logs its start; tailLines and timestamps apply; previous is 400 as on a real
    kubelet; another container name is 400."""
    _pod(core, "steady", "ghcr.io/acme/web:ok")
    real.wait_for(lambda: "listening on" in _log_or_empty(core, "steady"), timeout=10, what="listening")
    text = core.read_namespaced_pod_log("steady", NS, container="app")
    assert text.splitlines()[0] == "starting ok image=ghcr.io/acme/web:ok"
    assert core.read_namespaced_pod_log("steady", NS, tail_lines=1).startswith("listening on 127.0.0.1:")
    stamped = core.read_namespaced_pod_log("steady", NS, timestamps=True).splitlines()[0]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z starting ok image=\S+", stamped), stamped
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("steady", NS, previous=True)
    assert err.value.status == 400
    assert _message(err.value) == 'previous terminated container "app" in pod "steady" not found'
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("steady", NS, container="sidecar")
    assert err.value.status == 400
    assert not _by_reason(_events(core, "steady")).get("Unhealthy")


def test_unknown_image_pull_failures_and_a_waiting_container_has_no_log(
    real: KubeLab, core: client.CoreV1Api
) -> None:
    """An image the catalogue lacks: Failed (Warning) and BackOff pulling Events, and its log is 400
    "waiting to start"."""
    _pod(core, "nopull", "ghcr.io/acme/web:missing")
    events = real.wait_for(
        lambda: (got := _by_reason(_events(core, "nopull"))) and "Failed" in got and got,
        timeout=10,
        what="a pull failure",
    )
    assert events["Failed"][0].type == "Warning"
    assert "ghcr.io/acme/web:missing" in events["Failed"][0].message
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("nopull", NS)
    assert err.value.status == 400
    assert _message(err.value).startswith('container "app" in pod "nopull" is waiting to start')


def test_deleting_a_pod_records_killing_and_its_events_outlive_it(
    real: KubeLab, core: client.CoreV1Api
) -> None:
    """The kubelet records Killing when it stops the container; the pod's Events stay after the pod
    is gone (until their TTL)."""
    _pod(core, "doomed", "ghcr.io/acme/web:ok")
    real.wait_for(
        lambda: "Started" in _by_reason(_events(core, "doomed")), timeout=10, what="the container started"
    )
    core.delete_namespaced_pod("doomed", NS, grace_period_seconds=0)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("doomed", NS)
        except ApiException as e:
            return e.status == 404
        return False

    real.wait_for(gone, timeout=15, what="the pod deleted")
    reasons = _by_reason(_events(core, "doomed"))
    assert reasons["Killing"][0].message == "Stopping container app"


def test_events_expire_after_their_ttl_and_a_repeat_after_expiry_is_a_new_event() -> None:
    """As kube-apiserver --event-ttl: an Event last written ttl ago is gone at the next write."""
    store = Store("lab-x")
    store.create("namespaces", {"metadata": {"name": "n"}})
    pod = store.create(
        "pods", {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}, "n"
    )
    now = [1000.0]
    rec = EventRecorder(store, ttl_s=60, clock=lambda: now[0])
    first = rec.pod_event(pod, "Warning", "BackOff", "m", container="c")
    now[0] += 30
    again = rec.pod_event(pod, "Warning", "BackOff", "m", container="c")
    assert first and again and again["metadata"]["name"] == first["metadata"]["name"] and again["count"] == 2
    now[0] += 59
    rec.pod_event(pod, "Normal", "Other", "x")
    assert store.find("events", "n", first["metadata"]["name"]) is not None
    now[0] += 2
    later = rec.pod_event(pod, "Warning", "BackOff", "m", container="c")
    assert store.find("events", "n", first["metadata"]["name"]) is None
    assert later and later["count"] == 1 and later["metadata"]["name"] != first["metadata"]["name"]
