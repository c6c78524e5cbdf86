"""The controllers of one lab cluster, in one asyncio task: Deployments, Jobs, Pods (the
kubelet's part, through the lab's PodRuntime), Service endpoints (through ServiceProxies) and
garbage collection of pods whose owner is gone.

It reacts to store events and runtime changes; a resync every ``resync_s`` seconds is only a
safety net (and what notices a passed progress deadline).

Endpoints are pushed to the Service's data plane synchronously, inside the store event or
runtime callback that changed them (the Endpoints object says the truth at once, as the
endpoints controller does); the data plane then acts on them at its own pace (see
greenlight_lab.proxy: kube-proxy late, a NEG detaching before attaching, a mesh at once).

Pod deletion is graceful, as with a kubelet: the DELETE only sets the pod's
deletionTimestamp; in that same store event the pod leaves every Service's endpoints (the
data plane learns of it later, at its own pace) and stops counting for its Deployment or Job
(which creates a replacement). Then, in a background task, the runtime terminates the pod:
preStop hook, SIGTERM, SIGKILL at the end of the grace period (``PodRuntime.terminate``);
after that the controller removes the pod object (DELETED). A pod removed without grace
(forced deletion, namespace deletion) is killed in the runtime the same way, grace 0.

Rolling update: Kubernetes' arithmetic, with pods in place of ReplicaSets: total pods at most
replicas + maxSurge (25%, rounded up), available pods at least replicas - maxUnavailable (25%,
rounded down); unready old pods go first. ReplicaSet objects are not created; pods are owned
by their Deployment directly and named ``<deploy>-<templatehash>-<rand5>``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import functools
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from greenlight_lab.kube.events import NODE, EventRecorder
from greenlight_lab.kube.store import (
    DEFAULT_POD_GRACE_S,
    NAME_CHARS,
    ApiError,
    Event,
    Obj,
    Selector,
    Store,
    labels_match,
    now_rfc3339,
    random_suffix,
    rolling_params,
    selector_from_map,
)

log = logging.getLogger(__name__)
EVENT_PODS_KEPT = 5000  # deleted pods whose late Events (Killing) are still recorded

PORT_ANNOTATION = "lab.greenlight.dev/port"
URL_ANNOTATION = "lab.greenlight.dev/url"
DEFAULT_CONTAINER_PORT = 8080


class PodStateLike(Protocol):
    phase: str
    waiting_reason: str | None
    ready: bool
    port: int | None
    restart_count: int
    started_at: float | None
    message: str


class PodRuntimeLike(Protocol):
    async def start(
        self,
        key: str,
        image: str,
        labels: dict[str, str],
        readiness_path: str | None,
        container_port: int,
        probe_period_s: float = 0.5,
    ) -> None: ...
    def status(self, key: str) -> Any: ...
    async def stop(self, key: str, grace_s: float = 1.0) -> None: ...
    async def terminate(self, key: str, grace_s: float, pre_stop: Obj | None = None) -> None: ...
    def on_change(self, callback: Callable[[str], None]) -> None: ...


class ServiceProxiesLike(Protocol):
    async def ensure(self, key: str) -> int: ...
    def set_endpoints(self, key: str, endpoints: list[tuple[str, int]]) -> None: ...
    async def remove(self, key: str) -> None: ...
    def url(self, key: str) -> str | None: ...


# --- pure helpers -----------------------------------------------------------------------------


def template_hash(template: Obj) -> str:
    """A stable 10-character hash of a pod template (the pod-template-hash label)."""
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(NAME_CHARS[b % len(NAME_CHARS)] for b in digest[:10])


def container_args(pod: Obj) -> tuple[str, str, str | None, int]:
    """(container name, image, readiness path, container port) of a pod's first container."""
    c = (pod.get("spec", {}).get("containers") or [{}])[0]
    probe = (c.get("readinessProbe") or {}).get("httpGet") or {}
    ports = c.get("ports") or []
    port = ports[0].get("containerPort", DEFAULT_CONTAINER_PORT) if ports else DEFAULT_CONTAINER_PORT
    return c.get("name", "app"), c.get("image", ""), probe.get("path"), int(port)


def pre_stop_hook(pod: Obj) -> Obj | None:
    """The ``lifecycle.preStop`` handler of a pod's first container, if it has one."""
    c = (pod.get("spec", {}).get("containers") or [{}])[0]
    hook = (c.get("lifecycle") or {}).get("preStop")
    return hook if isinstance(hook, dict) and hook else None


def is_terminating(pod: Obj) -> bool:
    """True once a DELETE has set the pod's deletionTimestamp."""
    return bool(pod["metadata"].get("deletionTimestamp"))


def _condition(ctype: str, status: bool, old: list[Obj], now: str) -> Obj:
    value = "True" if status else "False"
    prev = next((c for c in old if c.get("type") == ctype), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == value else now
    return {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": since}


def pod_status(pod: Obj, state: PodStateLike | None, now: str) -> Obj:
    """The status of a running-semantics pod as the kubelet would report it from the runtime state."""
    old = pod.get("status") or {}
    old_conditions = old.get("conditions") or []
    name, image, _, _ = container_args(pod)
    ready = bool(state and state.ready)
    phase = state.phase if state else "Pending"
    cstate: Obj
    if state is None or state.waiting_reason:
        reason = state.waiting_reason if state else "ContainerCreating"
        cstate = {
            "waiting": {"reason": reason or "ContainerCreating", "message": (state.message if state else "")}
        }
    elif phase == "Running":
        started = state.started_at or time.time()
        cstate = {"running": {"startedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))}}
    else:
        cstate = {"terminated": {"exitCode": 1, "reason": "Error", "message": state.message}}
    container: Obj = {
        "name": name,
        "image": image,
        "imageID": image if "@" in image else "",
        "ready": ready,
        "restartCount": state.restart_count if state else 0,
        "started": bool(state and phase == "Running" and not state.waiting_reason),
        "state": cstate,
    }
    if state and state.waiting_reason == "CrashLoopBackOff":
        container["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    scheduled = pod["metadata"].get("creationTimestamp", now)
    return {
        "phase": phase,
        "conditions": [
            _condition("PodReadyToStartContainers", state is not None, old_conditions, now),
            _condition("Initialized", True, old_conditions, now),
            _condition("Ready", ready, old_conditions, now),
            _condition("ContainersReady", ready, old_conditions, now),
            _condition("PodScheduled", True, old_conditions, now),
        ],
        "hostIP": "127.0.0.1",
        "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": "127.0.0.1",
        "podIPs": [{"ip": "127.0.0.1"}],
        "startTime": old.get("startTime", scheduled),
        "containerStatuses": [container],
        "qosClass": "BestEffort",
    }


def terminal_pod_status(pod: Obj, succeeded: bool, message: str, now: str) -> Obj:
    """The status of a run-to-completion pod that has finished."""
    status = pod_status(pod, None, now)
    status["phase"] = "Succeeded" if succeeded else "Failed"
    for c in status["conditions"]:
        if c["type"] in ("Ready", "ContainersReady"):
            c["status"], c["reason"] = "False", "PodCompleted" if succeeded else "PodFailed"
    cs = status["containerStatuses"][0]
    cs["started"] = False
    cs["state"] = {
        "terminated": {
            "exitCode": 0 if succeeded else 1,
            "reason": "Completed" if succeeded else "Error",
            "message": message,
            "finishedAt": now,
        }
    }
    return status


def is_crashed(state: PodStateLike | None) -> bool:
    return state is not None and (state.phase == "Failed" or state.waiting_reason == "CrashLoopBackOff")


def deployment_conditions(
    deploy: Obj, counts: dict[str, int], progressed: bool, rs_name: str, now: float, now_s: str
) -> list[Obj]:
    """Available and Progressing conditions as the Deployment controller sets them.

    ``progressed`` says the rollout moved since the last status (more updated, ready or
    available pods, or fewer old ones). The deadline runs from the Progressing condition's
    lastUpdateTime.
    """
    spec = deploy["spec"]
    desired = int(spec.get("replicas", 1))
    _, max_unavailable = rolling_params(deploy)
    old = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions") or []}

    def cond(ctype: str, status: str, reason: str, message: str, touch: bool) -> Obj:
        prev = old.get(ctype)
        same = prev is not None and prev.get("status") == status and prev.get("reason") == reason
        return {
            "type": ctype,
            "status": status,
            "lastUpdateTime": prev["lastUpdateTime"] if same and prev and not touch else now_s,
            "lastTransitionTime": prev["lastTransitionTime"]
            if prev and prev.get("status") == status
            else now_s,
            "reason": reason,
            "message": message,
        }

    available = counts["available"] >= desired - max_unavailable
    conditions = [
        cond("Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.", False)
        if available
        else cond(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
            False,
        )
    ]
    complete = (
        counts["updated"] == desired and counts["replicas"] == desired and counts["available"] == desired
    )
    prev = old.get("Progressing")
    if spec.get("paused"):
        conditions.append(cond("Progressing", "Unknown", "DeploymentPaused", "Deployment is paused", False))
    elif complete:
        conditions.append(
            cond(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
                False,
            )
        )
    elif progressed or prev is None or prev.get("reason") == "DeploymentPaused":
        conditions.append(
            cond("Progressing", "True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.', True)
        )
    else:
        deadline = int(spec.get("progressDeadlineSeconds", 600))
        since = _parse_time(prev.get("lastUpdateTime"))
        if prev.get("reason") == "NewReplicaSetAvailable":
            conditions.append(copy.deepcopy(prev))
        elif prev.get("reason") == "ProgressDeadlineExceeded" or (
            since is not None and now - since > deadline
        ):
            conditions.append(
                cond(
                    "Progressing",
                    "False",
                    "ProgressDeadlineExceeded",
                    f'ReplicaSet "{rs_name}" has timed out progressing.',
                    False,
                )
            )
        else:
            conditions.append(copy.deepcopy(prev))
    return conditions


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    import calendar

    try:
        return float(calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ")))
    except ValueError:
        return None


# --- the controller ---------------------------------------------------------------------------


@dataclass
class PodInfo:
    """What the controller remembers of a pod."""

    namespace: str
    name: str
    labels: dict[str, str]
    owners: tuple[tuple[str, str, str], ...]  # (kind, name, uid)
    grace_s: float
    terminal: bool = False
    run_to_completion: bool = False
    terminating: bool = False  # deletionTimestamp set: out of the endpoints, being terminated


@dataclass
class ServiceInfo:
    namespace: str
    name: str
    selector: Selector | None
    port_name: str | None


@dataclass
class _Dirty:
    deployments: set[tuple[str, str]] = field(default_factory=set)
    jobs: set[tuple[str, str]] = field(default_factory=set)
    pod_status: set[str] = field(default_factory=set)
    pod_start: set[str] = field(default_factory=set)
    services: set[str] = field(default_factory=set)
    endpoints: set[str] = field(default_factory=set)
    gc: set[str] = field(default_factory=set)


class Controller:
    """Deployment, Job, pod, endpoints and GC control loops of one cluster."""

    def __init__(
        self,
        cluster: str,
        store: Store,
        pods: PodRuntimeLike,
        proxies: ServiceProxiesLike,
        resync_s: float = 1.0,
    ) -> None:
        self.cluster = cluster
        self.store = store
        self.pods = pods
        self.proxies = proxies
        self.resync_s = resync_s
        self._pods: dict[str, PodInfo] = {}
        self._pods_by_ns: dict[str, set[str]] = {}
        self._services: dict[str, ServiceInfo] = {}
        self._services_by_ns: dict[str, set[str]] = {}
        self._endpoints: dict[str, list[tuple[str, int]]] = {}
        self._proxy_ready: set[str] = set()
        # per Service: the data plane its annotations ask for (None: the lab's default), given to
        # proxies that have data planes (``configure``; the test fakes have none)
        self._data_planes: dict[str, str | None] = {}
        self._configure_proxy: Callable[[str, str | None], Any] | None = getattr(proxies, "configure", None)
        self._start_tasks: dict[str, asyncio.Task[None]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._dirty = _Dirty()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.events = EventRecorder(store)
        # the pods' metadata as started, for the Events of a pod already deleted (Killing)
        self._event_pods: collections.OrderedDict[str, Obj] = collections.OrderedDict()

    # -- lifecycle --

    def start(self) -> None:
        """Subscribe to the store and the runtime and start the control loop."""
        self.store.subscribe(self._on_event)
        self.pods.on_change(self._on_runtime_change)
        on_event = getattr(self.pods, "on_event", None)  # the test fakes record no Events
        if on_event is not None:
            on_event(self._on_runtime_event)
        for plural in ("namespaces", "services", "pods", "deployments", "jobs"):
            for obj in self.store.iter(plural):
                self._on_event(Event("ADDED", plural, obj, None, 0))
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"kube-controller-{self.cluster}"
        )

    async def stop(self) -> None:
        """Stop the loop, stop every pod this cluster started and remove its Service proxies."""
        self._stopped = True
        self.store.unsubscribe(self._on_event)
        if self._task is not None:
            # Python 3.11's wait_for can swallow a cancellation that arrives as the awaited
            # wake-up completes (fixed in 3.12): cancel until the loop has really ended
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait({self._task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        keys = list(self._start_tasks)
        await asyncio.gather(
            *(self._stop_pod(k, 0.2) for k in keys),
            *(self.pods.stop(k, 0.2) for k in list(self._terminations)),
            return_exceptions=True,
        )
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(
            *(self.proxies.remove(k) for k in list(self._proxy_ready)), return_exceptions=True
        )
        self._proxy_ready.clear()

    def ready_endpoints(self, service_key: str) -> list[tuple[str, int]]:
        """The (host, port) backends last pushed to a Service's proxy."""
        return list(self._endpoints.get(service_key, []))

    def _key(self, ns: str, name: str) -> str:
        return f"{self.cluster}/{ns}/{name}"

    def _mark(self) -> None:
        self._wake.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @functools.cached_property
    def _terminations(self) -> dict[str, float]:
        """Pods being terminated in the runtime, with the grace period they were given."""
        return {}

    # -- event intake (synchronous) --

    def _on_event(self, event: Event) -> None:
        handler = {
            "pods": self._pod_event,
            "services": self._service_event,
            "deployments": self._owner_event,
            "jobs": self._owner_event,
        }.get(event.resource)
        if handler is not None:
            handler(event)

    def _pod_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = self._key(ns, name)
        owners = tuple(
            (o.get("kind", ""), o.get("name", ""), o.get("uid", ""))
            for o in meta.get("ownerReferences") or []
        )
        for kind, oname, _ in owners:
            if kind == "Deployment":
                self._dirty.deployments.add((ns, oname))
            elif kind == "Job":
                self._dirty.jobs.add((ns, oname))
        if event.type == "DELETED":
            self._pods.pop(key, None)
            self._pods_by_ns.get(ns, set()).discard(key)
            self._refresh_endpoints_for_pod(ns, meta.get("labels") or {})
            if key in self._terminations:  # removed before its termination ended: forced
                self._spawn(self._hurry_termination(key, 0.0))
            elif key in self._start_tasks:  # removed without grace: kill it
                self._begin_termination(key, event.obj, 0.0, finalize=False)
            self._mark()
            return
        phase = (event.obj.get("status") or {}).get("phase")
        info = PodInfo(
            ns,
            name,
            dict(meta.get("labels") or {}),
            owners,
            self._pods_grace(event.obj),
            terminal=phase in ("Succeeded", "Failed"),
            run_to_completion=event.obj["spec"].get("restartPolicy") in ("Never", "OnFailure"),
            terminating=is_terminating(event.obj),
        )
        old = self._pods.get(key)
        self._pods[key] = info
        self._pods_by_ns.setdefault(ns, set()).add(key)
        if old is None and key not in self._start_tasks and not info.terminal and not info.terminating:
            self._dirty.pod_start.add(key)
        if (
            old is None
            or old.labels != info.labels
            or old.terminal != info.terminal
            or old.terminating != info.terminating
        ):
            self._refresh_endpoints_for_pod(ns, info.labels, old.labels if old else None)
        if info.terminating:
            grace = float(meta.get("deletionGracePeriodSeconds") or 0)
            if key in self._terminations:
                if grace < self._terminations[key]:  # deleted again with a shorter grace period
                    self._terminations[key] = grace
                    self._spawn(self._hurry_termination(key, grace))
            else:
                self._begin_termination(key, event.obj, grace, finalize=True)
        self._mark()

    @staticmethod
    def _pods_grace(pod: Obj) -> float:
        grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
        return float(grace) if grace is not None else float(DEFAULT_POD_GRACE_S)

    def _service_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        key = self._key(ns, name)
        if event.type == "DELETED":
            self._services.pop(key, None)
            self._services_by_ns.get(ns, set()).discard(key)
            self._endpoints.pop(key, None)
            self._data_planes.pop(key, None)
            if key in self._proxy_ready:
                self._proxy_ready.discard(key)
                self._spawn(self.proxies.remove(key))
            self._dirty.endpoints.add(key)
            self._mark()
            return
        spec = event.obj.get("spec") or {}
        ports = spec.get("ports") or [{}]
        info = ServiceInfo(ns, name, selector_from_map(spec.get("selector")), ports[0].get("name"))
        is_new = key not in self._services
        self._services[key] = info
        self._services_by_ns.setdefault(ns, set()).add(key)
        if is_new or key not in self._proxy_ready:
            self._dirty.services.add(key)
        annotations = meta.get("annotations") or {}
        # lab.greenlight.dev/data-plane wins; GKE's NEG annotation means container-native LB
        data_plane = annotations.get("lab.greenlight.dev/data-plane") or (
            "neg" if "cloud.google.com/neg" in annotations else None
        )
        changed = key not in self._data_planes or self._data_planes[key] != data_plane
        self._data_planes[key] = data_plane
        if changed and key in self._proxy_ready and self._configure_proxy is not None:
            self._configure_proxy(key, data_plane)
        self._refresh_endpoints(key)
        self._mark()

    def _owner_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        item = (meta["namespace"], meta["name"])
        if event.type == "DELETED":
            self._dirty.gc.add(meta["uid"])
        elif event.resource == "deployments":
            self._dirty.deployments.add(item)
        else:
            self._dirty.jobs.add(item)
        self._mark()

    def _on_runtime_change(self, key: str) -> None:
        if self._stopped or key not in self._pods:
            return
        info = self._pods[key]
        self._dirty.pod_status.add(key)
        for kind, oname, _ in info.owners:
            if kind == "Deployment":
                self._dirty.deployments.add((info.namespace, oname))
            elif kind == "Job":
                self._dirty.jobs.add((info.namespace, oname))
        self._refresh_endpoints_for_pod(info.namespace, info.labels)
        self._mark()

    # -- endpoints (synchronous: the proxy sees a change at once) --

    def _refresh_endpoints_for_pod(
        self, ns: str, labels: dict[str, str], old_labels: dict[str, str] | None = None
    ) -> None:
        for skey in list(self._services_by_ns.get(ns, ())):
            svc = self._services[skey]
            if svc.selector is None:
                continue
            if labels_match(svc.selector, labels) or (
                old_labels is not None and labels_match(svc.selector, old_labels)
            ):
                self._refresh_endpoints(skey)

    def _backends(self, svc: ServiceInfo) -> tuple[list[tuple[str, str, int]], list[tuple[str, str, int]]]:
        """(ready, not ready) pods of a Service as (pod name, pod key, port), sorted by name."""
        ready: list[tuple[str, str, int]] = []
        unready: list[tuple[str, str, int]] = []
        if svc.selector is None:
            return ready, unready
        for pkey in self._pods_by_ns.get(svc.namespace, ()):
            info = self._pods[pkey]
            if info.terminal or info.terminating or not labels_match(svc.selector, info.labels):
                continue
            state = self.pods.status(pkey)
            if state is not None and state.ready and state.port:
                ready.append((info.name, pkey, int(state.port)))
            else:
                port = state.port if state is not None and state.port else DEFAULT_CONTAINER_PORT
                unready.append((info.name, pkey, int(port)))
        return sorted(ready), sorted(unready)

    def _refresh_endpoints(self, skey: str) -> None:
        svc = self._services.get(skey)
        if svc is None or svc.selector is None:
            return
        ready, _ = self._backends(svc)
        backends = [("127.0.0.1", port) for _, _, port in ready]
        if self._endpoints.get(skey) != backends:
            self._endpoints[skey] = backends
            if skey in self._proxy_ready:
                self.proxies.set_endpoints(skey, backends)
        self._dirty.endpoints.add(skey)
        self._mark()

    # -- the loop --

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_resync = loop.time() + self.resync_s
        while True:
            timeout = max(0.0, next_resync - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)
            self._wake.clear()
            if loop.time() >= next_resync:
                self._resync()
                next_resync = loop.time() + self.resync_s
            try:
                await self._process()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("lab controller %s: pass failed", self.cluster)
            await asyncio.sleep(0)

    def _resync(self) -> None:
        for d in self.store.iter("deployments"):
            self._dirty.deployments.add((d["metadata"]["namespace"], d["metadata"]["name"]))
        for j in self.store.iter("jobs"):
            self._dirty.jobs.add((j["metadata"]["namespace"], j["metadata"]["name"]))
        self._dirty.pod_status.update(k for k, p in self._pods.items() if not p.terminal)
        self._dirty.services.update(k for k in self._services if k not in self._proxy_ready)

    async def _process(self) -> None:
        dirty, self._dirty = self._dirty, _Dirty()
        for uid in dirty.gc:
            self._collect(uid)
        for skey in dirty.services:
            await self._guard(self._ensure_proxy(skey))
        for pkey in dirty.pod_start:
            self._guard_sync(self._start_pod, pkey)
        for pkey in dirty.pod_status:
            self._guard_sync(self._write_pod_status, pkey)
        for ns, name in dirty.jobs:
            self._guard_sync(self._reconcile_job, ns, name)
        for ns, name in dirty.deployments:
            self._guard_sync(self._reconcile_deployment, ns, name)
        for skey in dirty.endpoints | self._dirty.endpoints:
            self._guard_sync(self._write_endpoints, skey)
        self._dirty.endpoints.clear()

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except ApiError as e:
            log.debug("lab controller %s: %s", self.cluster, e.message)
        except Exception:
            log.exception("lab controller %s: step failed", self.cluster)

    def _guard_sync(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except ApiError as e:
            log.debug("lab controller %s: %s", self.cluster, e.message)
        except Exception:
            log.exception("lab controller %s: %s%r failed", self.cluster, fn.__name__, args)

    # -- services --

    async def _ensure_proxy(self, skey: str) -> None:
        if skey not in self._services:
            return
        if self._configure_proxy is not None:
            self._configure_proxy(skey, self._data_planes.get(skey))
        await self.proxies.ensure(skey)
        svc = self._services.get(skey)
        if svc is None:  # deleted while the proxy started
            await self.proxies.remove(skey)
            return
        self._proxy_ready.add(skey)
        self.proxies.set_endpoints(skey, list(self._endpoints.get(skey, [])))
        url = self.proxies.url(skey)
        obj = self.store.find("services", svc.namespace, svc.name)
        if obj is not None and url and (obj["metadata"].get("annotations") or {}).get(URL_ANNOTATION) != url:
            new = copy.deepcopy(obj)
            new["metadata"].setdefault("annotations", {})[URL_ANNOTATION] = url
            new["metadata"].pop("resourceVersion", None)
            self.store.update("services", new)

    def _write_endpoints(self, skey: str) -> None:
        _, ns, name = skey.split("/", 2)
        svc = self._services.get(skey)
        existing = self.store.find("endpoints", ns, name)
        if svc is None or svc.selector is None:
            if svc is None and existing is not None and self.store.find("namespaces", None, ns) is not None:
                self.store.delete("endpoints", ns, name)
            return
        ready, unready = self._backends(svc)
        subsets = [self._subset("addresses", ns, p, svc.port_name) for p in ready]
        subsets += [self._subset("notReadyAddresses", ns, p, svc.port_name) for p in unready]
        service = self.store.find("services", ns, name)
        body: Obj = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": name,
                "namespace": ns,
                "labels": dict((service or {}).get("metadata", {}).get("labels") or {}),
            },
        }
        if subsets:
            body["subsets"] = subsets
        if existing is None:
            self.store.create("endpoints", body, ns)
        else:
            self.store.update("endpoints", body, ns, name)

    def _subset(self, field_name: str, ns: str, pod: tuple[str, str, int], port_name: str | None) -> Obj:
        name, _pkey, port = pod
        obj = self.store.find("pods", ns, name)
        target = {
            "kind": "Pod",
            "name": name,
            "namespace": ns,
            "uid": (obj or {}).get("metadata", {}).get("uid", ""),
        }
        port_entry: Obj = {"port": port, "protocol": "TCP"}
        if port_name:
            port_entry["name"] = port_name
        return {field_name: [{"ip": "127.0.0.1", "targetRef": target}], "ports": [port_entry]}

    # -- pods (kubelet role) --

    def _metric_labels(self, pod: Obj, info: PodInfo) -> dict[str, str]:
        container, _, _, _ = container_args(pod)
        top = next((o[1] for o in info.owners if o[0] in ("Deployment", "Job")), info.name)
        return {
            "namespace": info.namespace,
            "pod": info.name,
            "container": container,
            "top_level_controller_name": top,
            "color": info.labels.get("color", ""),
            "job": info.labels.get("app", top),
            "cluster": self.cluster,
        }

    def _on_runtime_event(self, pkey: str, type_: str, reason: str, message: str, container: str) -> None:
        """The kubelet's Event about a pod of this cluster (the runtime serves every cluster)."""
        if self._stopped or pkey not in self._event_pods:
            return
        _, ns, name = pkey.split("/", 2)
        pod = self.store.find("pods", ns, name) or self._event_pods[pkey]
        self.events.pod_event(pod, type_, reason, message, container=container)

    def _start_pod(self, pkey: str) -> None:
        info = self._pods.get(pkey)
        if info is None or info.terminal or info.terminating or pkey in self._start_tasks:
            return
        pod = self.store.find("pods", info.namespace, info.name)
        if pod is None:
            return
        _, image, readiness, port = container_args(pod)
        labels = self._metric_labels(pod, info)
        task = asyncio.get_running_loop().create_task(self.pods.start(pkey, image, labels, readiness, port))
        self._event_pods.pop(pkey, None)
        self._event_pods[pkey] = {"metadata": copy.deepcopy(pod["metadata"])}
        while len(self._event_pods) > EVENT_PODS_KEPT:
            self._event_pods.popitem(last=False)
        self.events.pod_event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {info.namespace}/{info.name} to {NODE}",
            component="default-scheduler",
        )
        self._start_tasks[pkey] = task
        task.add_done_callback(functools.partial(self._on_started_task, pkey))
        self._dirty.pod_status.add(pkey)

    def _on_started_task(self, pkey: str, _task: asyncio.Task[None]) -> None:
        self._on_started(pkey)

    def _on_started(self, pkey: str) -> None:
        task = self._start_tasks.get(pkey)
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("lab controller %s: starting pod %s failed: %s", self.cluster, pkey, task.exception())
        if not self._stopped:
            self._on_runtime_change(pkey)

    async def _stop_pod(self, pkey: str, grace_s: float) -> None:
        task = self._start_tasks.pop(pkey, None)
        if task is None:
            return
        with contextlib.suppress(Exception):
            await task
        try:
            await self.pods.stop(pkey, grace_s)
        except Exception:
            log.exception("lab controller %s: stopping pod %s failed", self.cluster, pkey)

    def _begin_termination(self, pkey: str, pod: Obj, grace_s: float, *, finalize: bool) -> None:
        """Start the kubelet's part of a pod deletion in the background (see module docstring)."""
        meta = pod["metadata"]
        self._terminations[pkey] = grace_s
        self._spawn(
            self._terminate_pod(
                pkey, meta["namespace"], meta["name"], meta.get("uid"), grace_s, pre_stop_hook(pod), finalize
            )
        )

    async def _terminate_pod(
        self,
        pkey: str,
        ns: str,
        name: str,
        uid: str | None,
        grace_s: float,
        pre_stop: Obj | None,
        finalize: bool,
    ) -> None:
        """preStop, SIGTERM, SIGKILL in the runtime; then remove the pod object (grace 0)."""
        try:
            task = self._start_tasks.pop(pkey, None)
            if task is not None:
                with contextlib.suppress(Exception):
                    await task
                terminate = getattr(self.pods, "terminate", None)
                if terminate is not None:
                    await terminate(pkey, grace_s, pre_stop=pre_stop)
                else:  # a runtime without kubelet termination: stop it within the grace period
                    await self.pods.stop(pkey, grace_s)
        except Exception:
            log.exception("lab controller %s: terminating pod %s failed", self.cluster, pkey)
        finally:
            self._terminations.pop(pkey, None)
        if finalize and not self._stopped:
            with contextlib.suppress(ApiError):
                self.store.delete("pods", ns, name, grace_period_s=0, precondition_uid=uid)

    async def _hurry_termination(self, pkey: str, grace_s: float) -> None:
        """Bring a running termination's SIGKILL closer (shorter grace period, forced deletion)."""
        terminate = getattr(self.pods, "terminate", None)
        try:
            if terminate is not None:
                await terminate(pkey, grace_s)
            else:
                await self.pods.stop(pkey, grace_s)
        except Exception:
            log.exception("lab controller %s: cutting the termination of %s short failed", self.cluster, pkey)

    def _write_pod_status(self, pkey: str) -> None:
        info = self._pods.get(pkey)
        if info is None or info.terminal:
            return
        pod = self.store.find("pods", info.namespace, info.name)
        if pod is None:
            return
        state = self.pods.status(pkey)
        if info.terminating and state is None:
            return  # gone from the runtime; the pod object goes next
        now = now_rfc3339()
        if (
            info.run_to_completion
            and not info.terminating
            and state is not None
            and (is_crashed(state) or (state.phase == "Running" and state.ready))
        ):
            succeeded = not is_crashed(state)
            status = terminal_pod_status(pod, succeeded, state.message, now)
            info.terminal = True
            self._refresh_endpoints_for_pod(info.namespace, info.labels)
            self._spawn(self._stop_pod(pkey, 0.5))
        else:
            status = pod_status(pod, state, now)
        if status != pod.get("status"):
            new = copy.deepcopy(pod)
            new["status"] = status
            new["metadata"].pop("resourceVersion", None)
            self.store.update("pods", new, subresource="status")
        port = state.port if state is not None else None
        annotations = pod["metadata"].get("annotations") or {}
        if port and annotations.get(PORT_ANNOTATION) != str(port):
            current = self.store.get("pods", info.namespace, info.name)
            current["metadata"].setdefault("annotations", {})[PORT_ANNOTATION] = str(port)
            current["metadata"].pop("resourceVersion", None)
            self.store.update("pods", current)

    def _collect(self, owner_uid: str) -> None:
        """Delete the pods whose owner (a deleted Deployment or Job) had ``owner_uid``."""
        for info in list(self._pods.values()):
            if any(uid == owner_uid for _, _, uid in info.owners):
                with contextlib.suppress(ApiError):
                    self.store.delete("pods", info.namespace, info.name)

    def _owned(self, ns: str, uid: str, *, terminating: bool = True) -> list[Obj]:
        """The pods owned by ``uid``; without the terminating ones when ``terminating`` is False
        (what the ReplicaSet controller counts: its FilterActivePods)."""
        out = []
        for pkey in self._pods_by_ns.get(ns, ()):
            info = self._pods[pkey]
            if not terminating and info.terminating:
                continue
            if any(o_uid == uid for _, _, o_uid in info.owners):
                pod = self.store.find("pods", ns, info.name)
                if pod is not None:
                    out.append(pod)
        return out

    def _is_ready(self, pod: Obj) -> bool:
        state = self.pods.status(self._key(pod["metadata"]["namespace"], pod["metadata"]["name"]))
        return bool(state is not None and state.ready and state.phase == "Running")

    # -- deployments --

    def _new_pod(self, deploy: Obj, template: Obj, phash: str) -> Obj:
        meta = deploy["metadata"]
        tmeta = template.get("metadata") or {}
        labels = {**(tmeta.get("labels") or {}), "pod-template-hash": phash}
        pod_meta: Obj = {
            "name": f"{meta['name']}-{phash}-{random_suffix()}",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if tmeta.get("annotations"):
            pod_meta["annotations"] = dict(tmeta["annotations"])
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {}),
        }

    def _delete_pods(self, pods: list[Obj]) -> None:
        for pod in pods:
            with contextlib.suppress(ApiError):
                self.store.delete("pods", pod["metadata"]["namespace"], pod["metadata"]["name"])

    def _removal_order(self, pods: list[Obj]) -> list[Obj]:
        """Pods in the order a scale-down removes them: unready first, then newest first."""
        newest_first = sorted(pods, key=lambda p: p["metadata"].get("creationTimestamp", ""), reverse=True)
        return sorted(newest_first, key=self._is_ready)

    def _reconcile_deployment(self, ns: str, name: str) -> None:
        deploy = self.store.find("deployments", ns, name)
        if deploy is None:
            return
        spec = deploy["spec"]
        template = spec.get("template") or {}
        phash = template_hash(template)
        uid = deploy["metadata"]["uid"]
        if not spec.get("paused"):
            self._roll(deploy, self._owned(ns, uid, terminating=False), template, phash)
        self._write_deployment_status(deploy, self._owned(ns, uid, terminating=False), phash)

    def _scale_new(self, deploy: Obj, new: list[Obj], template: Obj, phash: str, count: int) -> None:
        """Create or remove pods of the current template until there are ``count``."""
        ns = deploy["metadata"]["namespace"]
        for _ in range(count - len(new)):
            self.store.create("pods", self._new_pod(deploy, template, phash), ns)
        if len(new) > count:
            self._delete_pods(self._removal_order(new)[: len(new) - count])

    def _roll(self, deploy: Obj, owned: list[Obj], template: Obj, phash: str) -> None:
        """One step of the rollout towards ``replicas`` pods of the current template."""
        desired = int(deploy["spec"].get("replicas", 1))
        new = [p for p in owned if p["metadata"]["labels"].get("pod-template-hash") == phash]
        old = [p for p in owned if p["metadata"]["labels"].get("pod-template-hash") != phash]
        recreate = (deploy["spec"].get("strategy") or {}).get("type") == "Recreate"
        if recreate and old:
            self._delete_pods(old)
            old = []
        if not old:
            self._scale_new(deploy, new, template, phash, desired)
            return
        surge, max_unavailable = rolling_params(deploy)
        room = desired + surge - len(new) - len(old)
        target_new = min(desired, len(new) + max(0, room))
        self._scale_new(deploy, new, template, phash, max(target_new, min(len(new), desired)))
        ready_new = sum(1 for p in new[:desired] if self._is_ready(p))
        ready_old = [p for p in old if self._is_ready(p)]
        self._delete_pods([p for p in old if not self._is_ready(p)])
        can_remove = ready_new + len(ready_old) - (desired - max_unavailable)
        if can_remove > 0:
            oldest_first = sorted(ready_old, key=lambda p: p["metadata"].get("creationTimestamp", ""))
            self._delete_pods(oldest_first[:can_remove])

    def _write_deployment_status(self, deploy: Obj, owned: list[Obj], phash: str) -> None:
        ready = [p for p in owned if self._is_ready(p)]
        updated = [p for p in owned if p["metadata"]["labels"].get("pod-template-hash") == phash]
        counts = {
            "replicas": len(owned),
            "updated": len(updated),
            "ready": len(ready),
            "available": len(ready),
        }
        old_status = deploy.get("status") or {}
        old_old = int(old_status.get("replicas", 0)) - int(old_status.get("updatedReplicas", 0))
        progressed = (
            counts["updated"] > int(old_status.get("updatedReplicas", 0))
            or counts["ready"] > int(old_status.get("readyReplicas", 0))
            or counts["available"] > int(old_status.get("availableReplicas", 0))
            or (counts["replicas"] - counts["updated"]) < old_old
            or deploy["metadata"].get("generation") != old_status.get("observedGeneration")
        )
        rs_name = f"{deploy['metadata']['name']}-{phash}"
        status: Obj = {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            "replicas": counts["replicas"],
            "updatedReplicas": counts["updated"],
            "readyReplicas": counts["ready"],
            "availableReplicas": counts["available"],
            "conditions": deployment_conditions(
                deploy, counts, progressed, rs_name, time.time(), now_rfc3339()
            ),
        }
        unavailable = max(0, counts["replicas"] - counts["available"])
        if unavailable:
            status["unavailableReplicas"] = unavailable
        for key in ("readyReplicas", "availableReplicas", "updatedReplicas", "replicas"):
            if not status[key]:
                del status[key]
        if status != old_status:
            new = copy.deepcopy(deploy)
            new["status"] = status
            new["metadata"].pop("resourceVersion", None)
            self.store.update("deployments", new, subresource="status")

    # -- jobs --

    def _new_job_pod(self, job: Obj) -> Obj:
        meta = job["metadata"]
        template = job["spec"].get("template") or {}
        tmeta = template.get("metadata") or {}
        pod_meta: Obj = {
            "name": f"{meta['name']}-{random_suffix()}",
            "namespace": meta["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {}),
        }

    def _reconcile_job(self, ns: str, name: str) -> None:
        job = self.store.find("jobs", ns, name)
        if job is None:
            return
        status = copy.deepcopy(job.get("status") or {})
        conditions = status.get("conditions") or []
        if any(c.get("type") in ("Complete", "Failed") and c.get("status") == "True" for c in conditions):
            return
        spec = job["spec"]
        pods = self._owned(ns, job["metadata"]["uid"])
        phases = [(p.get("status") or {}).get("phase") for p in pods]
        succeeded = phases.count("Succeeded")
        failed = phases.count("Failed")
        running = [p for p, ph in zip(pods, phases, strict=True) if ph not in ("Succeeded", "Failed")]
        terminating = sum(1 for p in running if is_terminating(p))
        active = [p for p in running if not is_terminating(p)]
        now = now_rfc3339()
        status.setdefault("startTime", now)
        verdict: tuple[str, str, str] | None = None
        deadline = spec.get("activeDeadlineSeconds")
        started = _parse_time(status["startTime"])
        if succeeded >= int(spec.get("completions", 1)):
            verdict = ("Complete", "CompletionsReached", "Reached expected number of succeeded pods")
        elif failed > int(spec.get("backoffLimit", 6)):
            verdict = ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif deadline is not None and started is not None and time.time() - started > float(deadline):
            verdict = ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline")
        elif not spec.get("suspend"):
            want = min(int(spec.get("parallelism", 1)), int(spec.get("completions", 1)) - succeeded)
            for _ in range(max(0, want - len(active))):
                self.store.create("pods", self._new_job_pod(job), ns)
            active = [
                p
                for p in self._owned(ns, job["metadata"]["uid"], terminating=False)
                if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
            ]
        if verdict is not None:
            self._delete_pods(active)
            active = []
            first = "SuccessCriteriaMet" if verdict[0] == "Complete" else "FailureTarget"
            conditions = [
                {
                    "type": t,
                    "status": "True",
                    "reason": verdict[1],
                    "message": verdict[2],
                    "lastProbeTime": now,
                    "lastTransitionTime": now,
                }
                for t in (first, verdict[0])
            ]
            if verdict[0] == "Complete":
                status["completionTime"] = now
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": 0,
                "terminating": terminating,
                "uncountedTerminatedPods": {},
            }
        )
        if conditions:
            status["conditions"] = conditions
        for key in ("active", "succeeded", "failed"):
            if not status[key]:
                del status[key]
        if status != job.get("status"):
            new = copy.deepcopy(job)
            new["status"] = status
            new["metadata"].pop("resourceVersion", None)
            self.store.update("jobs", new, subresource="status")
