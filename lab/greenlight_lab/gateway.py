"""The lab's Gateway API controller and Gateway data plane, behaving as GKE Gateway does.

Served objects (``gateway.networking.k8s.io/v1`` Gateway and HTTPRoute) live in the lab cluster's
store (greenlight_lab.kube.store / kube.gateway_api); this module is what GKE's gateway
controller (controllerName ``networking.gke.io/gateway``) and its Google Cloud load balancer do
with them:

Controller. Every change of a Gateway or an HTTPRoute spec (a new ``metadata.generation``), and
every Service that appears or goes away under a route's backendRefs, is *programmed* after
``program_s`` (default 2.0 s, plus or minus ``jitter_s``, by default a third of it): the load
balancer's URL map is rewritten, and only then is the status written. Changes are programmed in
order and the latest one due wins (a change made while an earlier one is still being programmed
gets its own delay), so ``status`` never claims a generation the data plane has not acted on:
right after a patch, the route's conditions still carry the old ``observedGeneration`` and
requests still go by the old weights. A route's ``status.parents[]`` entry for each parentRef:
``controllerName: networking.gke.io/gateway`` and the conditions ``Accepted`` (False,
``NoMatchingParent``, when no such Gateway exists; False, ``NotAllowedByListeners``, when the
Gateway's listeners take no routes from the route's namespace), ``ResolvedRefs`` (False,
``BackendNotFound``, when a backendRef names a Service that does not exist; that backend's share
of the traffic is then answered 500, as the Gateway API specifies for invalid backends) and
GKE's ``Reconciled`` (``ReconciliationSucceeded``), each with ``observedGeneration`` = the
generation programmed and a ``lastTransitionTime`` that moves only when the condition's status
changes. A Gateway gets ``status.addresses`` (``IPAddress 127.0.0.1``), ``Accepted`` and
``Programmed`` (and per listener ``attachedRoutes``) once programmed, and the annotation
``lab.greenlight.dev/url`` with its listener's URL at once.

Faults: while a fault rule of target ``gateway`` (every lab cluster) or ``gateway-<cluster>``
(``gateway-primary``, ``gateway-dr``), verb ``program``, resource ``httproutes`` or
``gateways`` is active, that programming does not happen: mode ``error`` skips the attempt and
retries every ``FAULT_RETRY_S`` (so ``count: -1`` stalls the controller until the rule is
cleared: no programming, no status), mode ``stall`` holds it ``stall_s`` seconds first.

Data plane (one loopback listener per Gateway; its URL is the Gateway's
``lab.greenlight.dev/url`` annotation, the control API's ``GET /gateways`` and
``LabState.gateway_url``): HTTP/1.1, L7 per request as GKE's load balancer: the ``Host``
header picks the attached route (an exact hostname before a wildcard before a route without
hostnames), the path picks the rule (``Exact``, then the longest ``PathPrefix``), and a
backendRef is drawn at random by its *programmed* weight (all 0, or no backendRefs: 500). The
request then goes to that Service's network endpoint group, reusing the ``neg`` backend sets of
greenlight_lab.proxy (detach after ``neg_detach_s``, attach after ``neg_attach_s`` and the load
balancer's health checks): no retry, 502 ``failed_to_pick_backend`` when the group has no
healthy endpoint, 502 when the endpoint fails. No route for the host and path: 404. Answers a
backend produced carry ``X-Backend: host:port``. A keep-alive client connection is balanced per
request; a request in flight when the weights change finishes on its backend.

The groups learn their endpoints from the cluster's Endpoints objects (as GKE's NEG controller
follows EndpointSlices), so a pod that is terminating or not ready leaves its group
``neg_detach_s`` after it left the Endpoints.

Helpers for lab tests and the bootstrap: ``ensure_gateway_route`` (a Gateway, one Service per
colour and an HTTPRoute at 100/0, waited until programmed), ``route_programmed`` (the check a
careful switch makes), ``load_target`` (URL and Host header for greenlight_lab.load).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import json
import logging
import random
import time
import urllib.request
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from greenlight_lab.faults import FaultRegistry
from greenlight_lab.kube.controller import URL_ANNOTATION
from greenlight_lab.kube.gateway_api import GROUP
from greenlight_lab.kube.store import ApiError, Event, Obj, Store
from greenlight_lab.proxy import (
    NEG,
    STREAM_LIMIT,
    HttpError,
    RequestHead,
    ServiceProxies,
    close_quietly,
    json_bytes,
    read_requests,
    send_error,
    simple_response,
)
from greenlight_lab.state import DEFAULT_GATEWAY_PROGRAM_S

if TYPE_CHECKING:
    from greenlight.clients.kube import Kube
    from greenlight_lab.state import LabState

log = logging.getLogger(__name__)

CONTROLLER_NAME = "networking.gke.io/gateway"
DEFAULT_PROGRAM_S = DEFAULT_GATEWAY_PROGRAM_S
FAULT_TARGET = "gateway"
FAULT_RETRY_S = 0.5
DEFAULT_GATEWAY_CLASS = "gke-l7-regional-external-managed"


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# What a route means once programmed (pure)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackendProgram:
    """One backendRef as programmed: its Service key (None: invalid, answered 500) and weight."""

    name: str
    service_key: str | None
    weight: int


@dataclass(frozen=True)
class RuleProgram:
    """One rule: its path matches as (type, value) and its backends."""

    matches: tuple[tuple[str, str], ...]
    backends: tuple[BackendProgram, ...]


@dataclass(frozen=True)
class ParentResult:
    """What the controller concluded for one parentRef of a route."""

    parent_ref: Obj
    gateway: tuple[str, str] | None  # (namespace, name) when the route attaches to it
    accepted: tuple[bool, str, str]  # (status, reason, message)
    resolved: tuple[bool, str, str]


@dataclass(frozen=True)
class RouteProgram:
    """One generation of an HTTPRoute as the controller will program it."""

    namespace: str
    name: str
    generation: int
    created: str
    hostnames: tuple[str, ...]
    rules: tuple[RuleProgram, ...]
    parents: tuple[ParentResult, ...]
    deleted: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def _listener_allows(gateway: Obj, route_ns: str) -> bool:
    gw_ns = gateway["metadata"]["namespace"]
    for listener in (gateway.get("spec") or {}).get("listeners") or []:
        allowed = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get("from", "Same")
        if allowed == "All" or (allowed == "Same" and gw_ns == route_ns) or allowed == "Selector":
            return True
    return False


def plan_route(
    route: Obj, gateways: Mapping[tuple[str, str], Obj], services: Iterable[tuple[str, str]], cluster: str
) -> RouteProgram:
    """The program of ``route`` given the Gateways and the Services ((namespace, name)) that exist."""
    meta = route["metadata"]
    ns = meta["namespace"]
    spec = route.get("spec") or {}
    existing = set(services)
    rules: list[RuleProgram] = []
    missing: list[str] = []
    for rule in spec.get("rules") or []:
        matches = tuple(
            ((m.get("path") or {}).get("type", "PathPrefix"), (m.get("path") or {}).get("value", "/"))
            for m in rule.get("matches") or [{}]
        )
        backends = []
        for ref in rule.get("backendRefs") or []:
            bns = ref.get("namespace") or ns
            name = ref["name"]
            is_service = ref.get("group", "") == "" and ref.get("kind", "Service") == "Service"
            ok = is_service and (bns, name) in existing
            if not ok:
                missing.append(f"{bns}/{name}")
            backends.append(
                BackendProgram(name, f"{cluster}/{bns}/{name}" if ok else None, int(ref.get("weight", 1)))
            )
        rules.append(RuleProgram(matches, tuple(backends)))
    if missing:
        resolved = (False, "BackendNotFound", "Service(s) not found: " + ", ".join(sorted(set(missing))))
    else:
        resolved = (True, "ResolvedRefs", "")
    parents = []
    for ref in spec.get("parentRefs") or []:
        gns = ref.get("namespace") or ns
        gkey = (gns, ref["name"])
        gateway = gateways.get(gkey)
        if ref.get("group", GROUP) != GROUP or ref.get("kind", "Gateway") != "Gateway" or gateway is None:
            accepted = (False, "NoMatchingParent", f"Gateway {gns}/{ref['name']} not found")
            parents.append(ParentResult(dict(ref), None, accepted, resolved))
        elif not _listener_allows(gateway, ns):
            accepted = (
                False,
                "NotAllowedByListeners",
                f"no listener of Gateway {gns}/{ref['name']} allows routes from namespace {ns}",
            )
            parents.append(ParentResult(dict(ref), None, accepted, resolved))
        else:
            parents.append(ParentResult(dict(ref), gkey, (True, "Accepted", ""), resolved))
    return RouteProgram(
        ns,
        meta["name"],
        int(meta.get("generation", 1)),
        str(meta.get("creationTimestamp", "")),
        tuple(spec.get("hostnames") or ()),
        tuple(rules),
        tuple(parents),
    )


def _host_rank(hostnames: tuple[str, ...], host: str) -> int | None:
    """How specifically a route's hostnames match ``host``: 2 exact, 1 wildcard, 0 none listed;
    None when they do not match."""
    if not hostnames:
        return 0
    best: int | None = None
    for name in hostnames:
        if name == host:
            return 2
        if name.startswith("*.") and host.endswith(name[1:]) and len(host) > len(name) - 1:
            best = 1
    return best


def _path_rank(match: tuple[str, str], path: str) -> tuple[int, int] | None:
    """(1 for Exact / 0 for PathPrefix, length of the matched value), or None."""
    kind, value = match
    if kind == "Exact":
        return (1, len(value)) if path == value else None
    if kind == "PathPrefix":
        prefix = value.rstrip("/")
        if not prefix or path == prefix or path.startswith(prefix + "/"):
            return (0, len(prefix))
        return None
    return None  # RegularExpression: implementation-specific, not served by the lab


def route_request(routes: Iterable[RouteProgram], host: str, path: str) -> RuleProgram | None:
    """The rule a request for ``host`` and ``path`` goes to among the attached routes, by the
    Gateway API's precedence: the most specific hostname, then Exact before the longest
    PathPrefix, then the oldest route, then namespace/name; None: no route (404)."""
    host = host.split(":", 1)[0].lower().rstrip(".")
    best: tuple[Any, ...] | None = None
    chosen: RuleProgram | None = None
    for route in routes:
        rank = _host_rank(route.hostnames, host)
        if rank is None:
            continue
        for rule in route.rules:
            for match in rule.matches:
                prank = _path_rank(match, path)
                if prank is None:
                    continue
                key = (-rank, -prank[0], -prank[1], route.created, route.namespace, route.name)
                if best is None or key < best:
                    best, chosen = key, rule
    return chosen


def pick_backend(rule: RuleProgram, rand: random.Random) -> BackendProgram | None:
    """A backend drawn by weight; None when every weight is 0 (or there are none)."""
    weighted = [b for b in rule.backends if b.weight > 0]
    if not weighted:
        return None
    return rand.choices(weighted, weights=[b.weight for b in weighted])[0]


def _condition(ctype: str, value: tuple[bool, str, str], generation: int, old: list[Obj], now: str) -> Obj:
    status = "True" if value[0] else "False"
    prior = next((c for c in old if c.get("type") == ctype), None)
    since = prior["lastTransitionTime"] if prior is not None and prior.get("status") == status else now
    return {
        "type": ctype,
        "status": status,
        "reason": value[1],
        "message": value[2],
        "observedGeneration": generation,
        "lastTransitionTime": since,
    }


def route_status(program: RouteProgram, old_status: Obj | None, now: str) -> Obj:
    """The route's new status: this controller's parents entries rewritten, others' kept."""
    old_parents = list((old_status or {}).get("parents") or [])
    others = [p for p in old_parents if p.get("controllerName") != CONTROLLER_NAME]
    mine = {json.dumps(p.get("parentRef"), sort_keys=True): p for p in old_parents if p not in others}
    parents = []
    for result in program.parents:
        ref = {k: v for k, v in result.parent_ref.items() if v is not None}
        old = (mine.get(json.dumps(ref, sort_keys=True)) or {}).get("conditions") or []
        conditions = [
            _condition("Accepted", result.accepted, program.generation, old, now),
            _condition("ResolvedRefs", result.resolved, program.generation, old, now),
        ]
        if result.accepted[0]:
            reconciled = (True, "ReconciliationSucceeded", "Reconciliation succeeded")
            conditions.append(_condition("Reconciled", reconciled, program.generation, old, now))
        parents.append({"parentRef": ref, "controllerName": CONTROLLER_NAME, "conditions": conditions})
    return {"parents": [*others, *parents]}


def route_programmed(route: Obj, gateway: str | None = None) -> bool:
    """True when this controller's status says the route's current generation is programmed:
    for every parent (or the one naming ``gateway``) ``Accepted`` and ``ResolvedRefs`` True with
    ``observedGeneration`` >= ``metadata.generation``. The check a careful switch waits for."""
    generation = int(route["metadata"].get("generation", 1))
    parents = [
        p
        for p in (route.get("status") or {}).get("parents") or []
        if p.get("controllerName") == CONTROLLER_NAME
        and (gateway is None or (p.get("parentRef") or {}).get("name") == gateway)
    ]
    if not parents:
        return False
    for p in parents:
        conds = {c.get("type"): c for c in p.get("conditions") or []}
        for ctype in ("Accepted", "ResolvedRefs"):
            c = conds.get(ctype)
            if c is None or c.get("status") != "True" or int(c.get("observedGeneration", 0)) < generation:
                return False
    return True


# --------------------------------------------------------------------------------------------
# The controller and its data plane
# --------------------------------------------------------------------------------------------


@dataclass
class _Gateway:
    namespace: str
    name: str
    server: asyncio.Server | None = None
    port: int = 0
    routes: dict[tuple[str, str], RouteProgram] = field(default_factory=dict)  # programmed, attached
    connections: set[asyncio.Task[Any]] = field(default_factory=set)
    generation: int = 0


@dataclass
class _Pending:
    """Changes of one object on their way to the data plane, (due time, program) in order."""

    items: deque[tuple[float, Any]] = field(default_factory=deque)
    timer: asyncio.TimerHandle | None = None
    last_generation: int = 0  # the newest generation queued (changes of status only are skipped)


class GatewayController:
    """GKE's gateway controller and load balancer for one lab cluster (see the module doc).

    ``negs`` holds the per-backend-Service network endpoint groups (a ServiceProxies in ``neg``
    mode of its own, fed from the cluster's Endpoints objects); ``program_s`` / ``jitter_s``
    the programming delay; ``seed`` seeds the weighted picks and the delays.
    """

    def __init__(
        self,
        cluster: str,
        store: Store,
        faults: FaultRegistry,
        *,
        program_s: float = DEFAULT_PROGRAM_S,
        jitter_s: float | None = None,
        negs: ServiceProxies | None = None,
        host: str = "127.0.0.1",
        seed: int | None = None,
    ) -> None:
        jitter = program_s / 3 if jitter_s is None else jitter_s
        if program_s < 0 or jitter < 0 or jitter > program_s:
            raise ValueError("gateway programming delay must be >= 0 and its jitter between 0 and the delay")
        self.cluster = cluster
        self.store = store
        self.faults = faults
        self.program_s = float(program_s)
        self.jitter_s = float(jitter)
        self.negs = negs if negs is not None else ServiceProxies(default_mode=NEG)
        self._host = host
        self._random = random.Random(seed)
        self._fault_targets = (FAULT_TARGET, f"{FAULT_TARGET}-{cluster.removeprefix('lab-')}")
        self._gateways: dict[tuple[str, str], _Gateway] = {}
        self._routes: dict[tuple[str, str], _Pending] = {}
        self._gateway_pending: dict[tuple[str, str], _Pending] = {}
        self._programmed: dict[tuple[str, str], RouteProgram] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._stopped = False

    # -- lifecycle --

    def start(self) -> None:
        """Subscribe to the store and take up the objects already there."""
        self.store.subscribe(self._on_event)
        for plural in ("endpoints", "gateways", "httproutes"):
            for obj in self.store.iter(plural):
                self._on_event(Event("ADDED", plural, obj, None, 0))

    async def stop(self) -> None:
        """Stop programming, close every listener and the endpoint groups."""
        self._stopped = True
        self.store.unsubscribe(self._on_event)
        for pending in [*self._routes.values(), *self._gateway_pending.values()]:
            if pending.timer is not None:
                pending.timer.cancel()
        for gw in list(self._gateways.values()):
            await self._close_listener(gw)
        self._gateways.clear()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        await self.negs.close()

    def urls(self) -> dict[str, str]:
        """The URL of every Gateway's listener, by ``<cluster>/<namespace>/<name>``."""
        return {
            f"{self.cluster}/{ns}/{name}": f"http://{self._host}:{gw.port}"
            for (ns, name), gw in self._gateways.items()
            if gw.server is not None
        }

    def settings(self) -> dict[str, Any]:
        return {"program_s": self.program_s, "jitter_s": self.jitter_s}

    def programmed(self, namespace: str, route: str) -> RouteProgram | None:
        """The generation of a route the data plane acts on now (None: none yet)."""
        return self._programmed.get((namespace, route))

    # -- event intake (synchronous) --

    def _on_event(self, event: Event) -> None:
        if self._stopped:
            return
        try:
            if event.resource == "endpoints":
                self._endpoints_event(event)
            elif event.resource == "services" and event.type in ("ADDED", "DELETED"):
                self._service_event(event)
            elif event.resource == "gateways":
                self._gateway_event(event)
            elif event.resource == "httproutes":
                self._route_event(event)
        except Exception:
            log.exception("gateway controller %s: %s %s failed", self.cluster, event.type, event.resource)

    def _endpoints_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        key = f"{self.cluster}/{meta['namespace']}/{meta['name']}"
        backends: list[tuple[str, int]] = []
        if event.type != "DELETED":
            for subset in event.obj.get("subsets") or []:
                ports = [int(p["port"]) for p in subset.get("ports") or []]
                for address in subset.get("addresses") or []:
                    backends += [(str(address["ip"]), port) for port in ports[:1]]
        self.negs.set_endpoints(key, sorted(backends))

    def _service_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        ns, name = meta["namespace"], meta["name"]
        for route in self.store.iter("httproutes", ns):
            if any(
                (ref.get("namespace") or ns) == ns and ref.get("name") == name
                for rule in (route.get("spec") or {}).get("rules") or []
                for ref in rule.get("backendRefs") or []
            ):
                self._enqueue_route(route, force=True)

    def _gateway_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        pending = self._gateway_pending.setdefault(key, _Pending())
        generation = int(meta.get("generation", 1))
        if event.type == "DELETED":
            self._queue(pending, None, self._apply_gateway, key)
        elif event.type == "ADDED" or generation > pending.last_generation:
            pending.last_generation = generation
            if key not in self._gateways:
                self._gateways[key] = _Gateway(*key)
                self._spawn(self._open_listener(self._gateways[key]))
            self._queue(pending, generation, self._apply_gateway, key)
        else:
            return
        # routes naming this Gateway are judged again (NoMatchingParent <-> Accepted)
        for route in self.store.iter("httproutes"):
            rns = route["metadata"]["namespace"]
            if any(
                (ref.get("namespace") or rns, ref.get("name")) == key
                for ref in (route.get("spec") or {}).get("parentRefs") or []
            ):
                self._enqueue_route(route, force=True)

    def _route_event(self, event: Event) -> None:
        meta = event.obj["metadata"]
        key = (meta["namespace"], meta["name"])
        if event.type == "DELETED":
            pending = self._routes.setdefault(key, _Pending())
            program = RouteProgram(key[0], key[1], 0, "", (), (), (), deleted=True)
            self._queue(pending, program, self._apply_route, key)
            return
        self._enqueue_route(event.obj, force=event.type == "ADDED")

    def _enqueue_route(self, route: Obj, *, force: bool) -> None:
        meta = route["metadata"]
        key = (meta["namespace"], meta["name"])
        pending = self._routes.setdefault(key, _Pending())
        generation = int(meta.get("generation", 1))
        if not force and generation <= pending.last_generation:
            return  # a status or metadata write: nothing to program
        pending.last_generation = max(pending.last_generation, generation)
        gateways = {
            (g["metadata"]["namespace"], g["metadata"]["name"]): g for g in self.store.iter("gateways")
        }
        services = [(s["metadata"]["namespace"], s["metadata"]["name"]) for s in self.store.iter("services")]
        program = plan_route(route, gateways, services, self.cluster)
        self._queue(pending, program, self._apply_route, key)

    # -- programming, after the delay, in order --

    def _delay(self) -> float:
        jitter = self._random.uniform(-self.jitter_s, self.jitter_s) if self.jitter_s else 0.0
        return max(0.0, self.program_s + jitter)

    def _queue(self, pending: _Pending, item: Any, apply: Any, key: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self._delay()
        if pending.items:
            due = max(due, pending.items[-1][0])
        pending.items.append((due, item))
        if pending.timer is None:
            pending.timer = loop.call_at(pending.items[0][0], self._due, pending, apply, key)

    def _fault(self, resource: str) -> Any:
        for target in self._fault_targets:
            rule = self.faults.take(target, "program", resource)
            if rule is not None:
                return rule
        return None

    def _due(self, pending: _Pending, apply: Any, key: tuple[str, str]) -> None:
        pending.timer = None
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        resource = "gateways" if apply == self._apply_gateway else "httproutes"
        rule = self._fault(resource)
        if rule is not None:  # the controller is stalled: nothing programmed, no status
            wait = rule.stall_s if rule.mode == "stall" else FAULT_RETRY_S
            if rule.mode == "stall":
                pending.timer = loop.call_later(wait, self._due_after_stall, pending, apply, key)
            else:
                pending.timer = loop.call_later(wait, self._due, pending, apply, key)
            return
        self._apply_due(pending, apply, key)

    def _due_after_stall(self, pending: _Pending, apply: Any, key: tuple[str, str]) -> None:
        pending.timer = None
        if not self._stopped:
            self._apply_due(pending, apply, key)

    def _apply_due(self, pending: _Pending, apply: Any, key: tuple[str, str]) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time() + 0.001
        latest: Any = None
        found = False
        while pending.items and pending.items[0][0] <= now:
            latest, found = pending.items.popleft()[1], True
        if found:
            try:
                apply(key, latest)
            except ApiError as e:
                log.debug("gateway controller %s: %s", self.cluster, e.message)
            except Exception:
                log.exception("gateway controller %s: programming %s failed", self.cluster, key)
        if pending.items:
            pending.timer = loop.call_at(pending.items[0][0], self._due, pending, apply, key)

    def _apply_route(self, key: tuple[str, str], program: RouteProgram) -> None:
        """Program one route generation into its Gateways' URL maps, then write its status."""
        attached = set() if program.deleted else {p.gateway for p in program.parents if p.gateway}
        for gkey, gw in self._gateways.items():
            if gkey in attached:
                gw.routes[key] = program
            else:
                gw.routes.pop(key, None)
        for rule in program.rules:
            for backend in rule.backends:
                if backend.service_key is not None:
                    self.negs.track(backend.service_key)
        if program.deleted:
            self._programmed.pop(key, None)
            for gkey in list(self._gateways):
                self._write_gateway_status(gkey)
            return
        self._programmed[key] = program
        current = self.store.find("httproutes", *key)
        if current is None or int(current["metadata"].get("generation", 1)) < program.generation:
            return
        status = route_status(program, current.get("status"), now_rfc3339())
        if status != current.get("status"):
            body = copy.deepcopy(current)
            body["status"] = status
            body["metadata"].pop("resourceVersion", None)
            self.store.update("httproutes", body, subresource="status")
        for gkey in attached:
            self._write_gateway_status(gkey)

    def _apply_gateway(self, key: tuple[str, str], generation: int | None) -> None:
        gw = self._gateways.get(key)
        if generation is None:  # deleted
            if gw is not None and self.store.find("gateways", *key) is None:
                del self._gateways[key]
                self._spawn(self._close_listener(gw))
            return
        if gw is not None:
            gw.generation = generation
            self._write_gateway_status(key)

    def _write_gateway_status(self, key: tuple[str, str]) -> None:
        gw = self._gateways.get(key)
        current = self.store.find("gateways", *key)
        if gw is None or current is None or gw.generation == 0:
            return
        now = now_rfc3339()
        old = (current.get("status") or {}).get("conditions") or []
        ok = (True, "Programmed", "")
        listeners = []
        old_listeners = {ls.get("name"): ls for ls in (current.get("status") or {}).get("listeners") or []}
        for listener in (current.get("spec") or {}).get("listeners") or []:
            lold = (old_listeners.get(listener.get("name")) or {}).get("conditions") or []
            listeners.append(
                {
                    "name": listener.get("name"),
                    "supportedKinds": [{"group": GROUP, "kind": "HTTPRoute"}],
                    "attachedRoutes": len(gw.routes),
                    "conditions": [
                        _condition("Accepted", (True, "Accepted", ""), gw.generation, lold, now),
                        _condition("Programmed", ok, gw.generation, lold, now),
                        _condition("ResolvedRefs", (True, "ResolvedRefs", ""), gw.generation, lold, now),
                    ],
                }
            )
        status = {
            "addresses": [{"type": "IPAddress", "value": self._host}],
            "conditions": [
                _condition("Accepted", (True, "Accepted", ""), gw.generation, old, now),
                _condition("Programmed", ok, gw.generation, old, now),
            ],
            "listeners": listeners,
        }
        if status != current.get("status"):
            body = copy.deepcopy(current)
            body["status"] = status
            body["metadata"].pop("resourceVersion", None)
            self.store.update("gateways", body, subresource="status")

    # -- listeners --

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _open_listener(self, gw: _Gateway) -> None:
        gw.server = await asyncio.start_server(
            lambda r, w: self._accept(gw, r, w), self._host, 0, limit=STREAM_LIMIT
        )
        gw.port = gw.server.sockets[0].getsockname()[1]
        if self._gateways.get((gw.namespace, gw.name)) is not gw:
            await self._close_listener(gw)
            return
        obj = self.store.find("gateways", gw.namespace, gw.name)
        url = f"http://{self._host}:{gw.port}"
        if obj is not None and (obj["metadata"].get("annotations") or {}).get(URL_ANNOTATION) != url:
            new = copy.deepcopy(obj)
            new["metadata"].setdefault("annotations", {})[URL_ANNOTATION] = url
            new["metadata"].pop("resourceVersion", None)
            self.store.update("gateways", new)

    async def _close_listener(self, gw: _Gateway) -> None:
        if gw.server is not None:
            gw.server.close()
            gw.server = None
        tasks = list(gw.connections)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _accept(self, gw: _Gateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        gw.connections.add(task)
        try:
            async for head, body in read_requests(reader, writer):
                if not await self._answer(gw, head, body, writer):
                    return
        except HttpError as e:
            await send_error(writer, e.status, str(e))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        except Exception:
            log.exception("gateway %s/%s: unexpected error", gw.namespace, gw.name)
        finally:
            gw.connections.discard(task)
            close_quietly(writer)

    async def _answer(
        self, gw: _Gateway, head: RequestHead, body: bytes, client: asyncio.StreamWriter
    ) -> bool:
        """One request: route, draw a backend by the programmed weights, forward into its NEG."""
        keep_alive = head.keep_alive
        host = head.get("host") or ""
        rule = route_request(list(gw.routes.values()), host, head.path)
        if rule is None:
            status, message = (
                404,
                f"gateway {gw.namespace}/{gw.name}: no route for host {host!r} path {head.path!r}",
            )
        else:
            backend = pick_backend(rule, self._random)
            if backend is not None and backend.service_key is not None:
                return await self.negs.forward(backend.service_key, head, body, client)
            status = 500
            if backend is None:
                message = (
                    f"gateway {gw.namespace}/{gw.name}: every backendRef of the matched rule has weight 0"
                )
            else:
                message = (
                    f"gateway {gw.namespace}/{gw.name}: invalid backend {backend.name!r} (BackendNotFound)"
                )
        client.write(simple_response(status, json_bytes({"error": message}), keep_alive=keep_alive))
        await client.drain()
        return keep_alive


# --------------------------------------------------------------------------------------------
# Helpers for lab tests and the bootstrap
# --------------------------------------------------------------------------------------------


def gateway_body(name: str, namespace: str, gateway_class: str = DEFAULT_GATEWAY_CLASS) -> Obj:
    """A Gateway with one HTTP listener on port 80 taking routes from its namespace."""
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "gatewayClassName": gateway_class,
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }


def httproute_body(
    name: str, namespace: str, gateway: str, hostname: str | None, weights: Mapping[str, int], port: int
) -> Obj:
    """An HTTPRoute attached to ``gateway`` with one rule splitting by ``weights`` (Service -> weight)."""
    spec: Obj = {
        "parentRefs": [{"name": gateway}],
        "rules": [{"backendRefs": [{"name": svc, "port": port, "weight": w} for svc, w in weights.items()]}],
    }
    if hostname:
        spec["hostnames"] = [hostname]
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def ensure_gateway_route(
    kube: Kube,
    namespace: str,
    route: str,
    gateway: str,
    hostname: str | None,
    colour_services: Mapping[str, str],
    port: int,
    live_colour: str,
    app_labels: Mapping[str, str],
    colour_label: str,
    *,
    timeout_s: float = 60.0,
) -> Obj:
    """Create what is missing of a Gateway-routed app and wait until its route is programmed.

    ``colour_services`` maps each colour to its Service name (``<service>-<colour>``): each is
    created when missing, selecting ``app_labels`` plus ``colour_label=<colour>`` on ``port``.
    The Gateway (one HTTP listener) and the HTTPRoute (weight 100 for ``live_colour``, 0 for the
    others) are created when missing; existing objects are left as they are (a release may have
    moved the weights on). Returns the route once its status says programmed
    (``route_programmed``); TimeoutError after ``timeout_s``.
    """
    from kubernetes import client

    from greenlight.errors import Conflict

    if live_colour not in colour_services:
        raise ValueError(f"live colour {live_colour!r} is not one of {sorted(colour_services)}")
    for colour, svc in colour_services.items():
        if kube.find("services", svc, namespace) is None:
            body = {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": svc, "namespace": namespace, "labels": dict(app_labels)},
                "spec": {
                    "selector": {**app_labels, colour_label: colour},
                    "ports": [{"port": port, "targetPort": port}],
                },
            }
            with contextlib.suppress(Conflict):
                kube.create("services", body, namespace)
    custom = client.CustomObjectsApi(kube.api_client)

    def ensure(plural: str, body: Obj) -> None:
        try:
            custom.get_namespaced_custom_object(GROUP, "v1", namespace, plural, body["metadata"]["name"])
        except client.ApiException as e:
            if e.status != 404:
                raise
            try:
                custom.create_namespaced_custom_object(GROUP, "v1", namespace, plural, body)
            except client.ApiException as e2:
                if e2.status != 409:
                    raise

    ensure("gateways", gateway_body(gateway, namespace))
    weights = {svc: 100 if colour == live_colour else 0 for colour, svc in colour_services.items()}
    ensure("httproutes", httproute_body(route, namespace, gateway, hostname, weights, port))
    deadline = time.monotonic() + timeout_s
    while True:
        raw: Any = custom.get_namespaced_custom_object(GROUP, "v1", namespace, "httproutes", route)
        obj: Obj = raw
        if route_programmed(obj, gateway):
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"HTTPRoute {namespace}/{route} not programmed within {timeout_s:g} s: {obj.get('status')}"
            )
        time.sleep(0.1)


def gateway_urls(control_url: str) -> dict[str, str]:
    """Every lab Gateway's listener URL by ``<cluster>/<namespace>/<name>`` (control API ``/gateways``)."""
    with urllib.request.urlopen(control_url.rstrip("/") + "/gateways", timeout=10) as r:
        return dict(json.loads(r.read()))


def load_target(
    state: LabState,
    namespace: str,
    gateway: str,
    hostname: str | None,
    cluster: str = "lab-primary",
    path: str = "/",
) -> tuple[str, str | None]:
    """(URL, Host header) for greenlight_lab.load to send requests through a lab Gateway:
    ``run_load(url, ..., host=host)`` / ``BackgroundLoad(url, ..., host=host)``."""
    return state.gateway_url(namespace, gateway, cluster) + path, hostname


__all__ = [
    "CONTROLLER_NAME",
    "DEFAULT_PROGRAM_S",
    "GatewayController",
    "ensure_gateway_route",
    "gateway_body",
    "gateway_urls",
    "httproute_body",
    "load_target",
    "pick_backend",
    "plan_route",
    "route_programmed",
    "route_request",
    "route_status",
]
