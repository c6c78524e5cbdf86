"""The HTTP face of one lab Kubernetes cluster: the REST API that kubectl and the official
Python client speak, over an aiohttp application.

Served: discovery (/version, /api, /api/v1, /apis, /apis/<group>/<version>), the verbs get,
list, watch, create, update, patch (merge, JSON and strategic merge) and delete on every
resource in ``store.RESOURCES``, the status and scale subresources, ``pods/log`` and the
Service proxy subresource. Errors are ``Status``
objects. /openapi/v2 and /openapi/v3 answer 404 (kubectl then needs ``--validate=false``
for apply/create).

The Service proxy subresource (``services/<name>/proxy/...``) goes as the kube-apiserver's
does: straight to one ready endpoint of the Service, picked at random from the controller's
current endpoints, bypassing the Service's data plane (a real API server does not go through
kube-proxy or a load balancer). So it sees a selector change at once, while clients of the
Service still wait for their data plane. No ready endpoint: 503 "no endpoints available".

Identities and RBAC (see ``tokens`` and ``rbac``): every request is first authenticated (no
token, or the lab kubeconfig's ``Bearer lab``: the admin, in system:masters; a token from
``serviceaccounts/<name>/token``: that ServiceAccount; anything else: 401 Unauthorized), then
authorized from the URL's attributes, discovery included, as the kube-apiserver does, over the
stored Roles, ClusterRoles and bindings: a denied request gets the real 403 Status before
routing (so a ServiceAccount asking for an unserved resource gets 403, the admin 404). Reviews
(selfsubjectaccessreviews, subjectaccessreviews, localsubjectaccessreviews,
selfsubjectrulesreviews, selfsubjectreviews) are answered from the same rules and never
stored. kubectl sends no token over plain http (client-go reads credentials for https servers
only) and sends reviews as protobuf, so ``kubectl auth can-i`` does not work against the lab;
the official Python client does all of it.

Faults: before each resource call, ``faults.take(target, verb, resource)`` may answer an
error or stall the call. The resource is the plural name (``deployments``), also for the
status and scale subresources; the proxy and log subresources are ``services/proxy`` and
``pods/log``. Discovery is never faulted.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from greenlight_lab.faults import FaultRegistry
from greenlight_lab.kube import patch as patches
from greenlight_lab.kube import rbac
from greenlight_lab.kube.store import (
    RESOURCES,
    ApiError,
    Expired,
    Obj,
    ResourceType,
    Store,
    bad_request,
    invalid,
    not_found,
    now_rfc3339,
    selector_from_label_selector,
    selector_to_string,
)
from greenlight_lab.kube.tokens import (
    AUDIENCE,
    DEFAULT_EXPIRATION_S,
    MAX_EXPIRATION_S,
    MIN_EXPIRATION_S,
    TokenIssuer,
)

log = logging.getLogger(__name__)

SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-greenlight-lab",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-11-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
PATCH_TYPES = {
    "application/merge-patch+json": patches.merge_patch,
    "application/json-patch+json": patches.json_patch,
    "application/strategic-merge-patch+json": patches.strategic_merge_patch,
}
HOP_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "host",
        "content-length",
        "proxy-authorization",
        "proxy-authenticate",
        "authorization",
    }
)
WATCH_DEFAULT_TIMEOUT_S = 1800.0
USER_KEY = web.RequestKey("user", rbac.UserInfo)  # who the request acts as, once authenticated
# Kinds whose DELETE answers the deleted object (as the real API server does: a PVC there has
# the pvc-protection finalizer, so its DELETE answers it terminating); others a Status.
DELETE_RETURNS_OBJECT = frozenset({"pods", "services", "serviceaccounts", "persistentvolumeclaims"})


@dataclass(frozen=True)
class Target:
    """What a resource URL names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None = None
    subpath: str = ""


def _groups() -> dict[tuple[str, str], list[ResourceType]]:
    out: dict[tuple[str, str], list[ResourceType]] = {}
    for rt in RESOURCES.values():
        out.setdefault((rt.group, rt.version), []).append(rt)
    return out


def resource_list(group: str, version: str) -> Obj:
    """The APIResourceList discovery document of one group version."""
    entries = []
    for rt in _groups().get((group, version), []):
        entry: Obj = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        entries.append(entry)
        if rt.status:
            entries.append(
                {
                    "name": f"{rt.plural}/status",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if rt.scale:
            entries.append(
                {
                    "name": f"{rt.plural}/scale",
                    "singularName": "",
                    "namespaced": True,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": ["get", "patch", "update"],
                }
            )
    if (group, version) == ("", "v1"):
        entries.append(
            {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]}
        )
        entries.append(
            {
                "name": "services/proxy",
                "singularName": "",
                "namespaced": True,
                "kind": "ServiceProxyOptions",
                "verbs": ["create", "delete", "get", "patch", "update"],
            }
        )
        entries.append(
            {
                "name": "serviceaccounts/token",
                "singularName": "",
                "namespaced": True,
                "group": "authentication.k8s.io",
                "version": "v1",
                "kind": "TokenRequest",
                "verbs": ["create"],
            }
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": entries,
    }


def group_list() -> Obj:
    """The APIGroupList served at /apis."""
    groups = []
    for group, version in _groups():
        if not group:
            continue
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def parse_target(path: str) -> Target | None:
    """The resource a URL path names, or None when it names nothing the lab serves."""
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    by_plural = {rt.plural: rt for rt in _groups().get((group, version), [])}
    if not rest:
        return None
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        nested = by_plural.get(rest[2])
        if nested is not None and nested.namespaced:
            namespace, rest = rest[1], rest[2:]
        elif group:
            return None
    rt = by_plural.get(rest[0])
    if rt is None:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    subpath = "/".join(rest[3:])
    if sub is not None and sub not in ("status", "scale", "log", "proxy", "token"):
        return None
    if sub == "token" and rt.plural != "serviceaccounts":
        return None
    return Target(rt, namespace, name, sub, subpath)


def _age(created: str | None, now: float) -> str:
    """Age as kubectl prints it: 45s, 12m, 3h, 2d."""
    if not created:
        return "<unknown>"
    try:
        then = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return "<unknown>"
    secs = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size * (2 if unit != "d" else 1):
            return f"{secs // size}{unit}"
    return f"{secs}s"


def _rfc3339_nano(at: float) -> str:
    """``2026-12-01T18:03:06.123456789Z``: the time the kubelet puts before a log line."""
    whole = int(at)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((at - whole) * 1e9):09d}Z"


def _pod_cells(obj: Obj) -> list[Any]:
    status = obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    total = len((obj.get("spec") or {}).get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    reason = status.get("phase", "Pending")
    for c in statuses:
        waiting = (c.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason"):
            reason = waiting["reason"]
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"  # as the API server's pod printer says
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    return [f"{ready}/{total}", reason, restarts]


def _deployment_cells(obj: Obj) -> list[Any]:
    status = obj.get("status") or {}
    desired = (obj.get("spec") or {}).get("replicas", 1)
    return [
        f"{status.get('readyReplicas', 0)}/{desired}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
    ]


def _service_cells(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = (
        ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in spec.get("ports") or []) or "<none>"
    )
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP", ""), "<none>", ports]


def _endpoints_cells(obj: Obj) -> list[Any]:
    addrs = [
        f"{a.get('ip')}:{p.get('port')}"
        for s in obj.get("subsets") or []
        for a in s.get("addresses") or []
        for p in (s.get("ports") or [])[:1]
    ]
    more = f" + {len(addrs) - 3} more..." if len(addrs) > 3 else ""
    return [(",".join(addrs[:3]) + more) or "<none>"]


def _job_cells(obj: Obj) -> list[Any]:
    status = obj.get("status") or {}
    conds = {c.get("type") for c in status.get("conditions") or [] if c.get("status") == "True"}
    state = "Complete" if "Complete" in conds else "Failed" if "Failed" in conds else "Running"
    return [state, f"{status.get('succeeded', 0)}/{(obj.get('spec') or {}).get('completions', 1)}"]


def _namespace_cells(obj: Obj) -> list[Any]:
    return [(obj.get("status") or {}).get("phase", "Active")]


TABLE_COLUMNS: dict[str, tuple[list[str], Callable[[Obj], list[Any]]]] = {
    "pods": (["Ready", "Status", "Restarts"], _pod_cells),
    "deployments": (["Ready", "Up-to-date", "Available"], _deployment_cells),
    "services": (["Type", "Cluster-IP", "External-IP", "Port(s)"], _service_cells),
    "endpoints": (["Endpoints"], _endpoints_cells),
    "jobs": (["Status", "Completions"], _job_cells),
    "namespaces": (["Status"], _namespace_cells),
}


def to_table(rt: ResourceType, items: list[Obj], rv: str) -> Obj:
    """A meta.k8s.io/v1 Table of objects, as the server-side printing of kubectl get asks for."""
    names, cells = TABLE_COLUMNS.get(rt.plural, ([], lambda _o: []))
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    columns += [{"name": n, "type": "string", "format": "", "description": n, "priority": 0} for n in names]
    columns.append({"name": "Age", "type": "string", "format": "", "description": "Age", "priority": 0})
    now = time.time()
    rows = [
        {
            "cells": [o["metadata"]["name"], *cells(o), _age(o["metadata"].get("creationTimestamp"), now)],
            "object": o,
        }
        for o in items
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": columns,
        "rows": rows,
    }


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def _error(err: ApiError, retry_after: float | None = None) -> web.Response:
    resp = _json(err.to_status(), err.code)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(max(1, round(retry_after)))
    return resp


def _verb(method: str, target: Target, query: Any) -> str:
    if method == "GET":
        if target.name is None:
            return "watch" if query.get("watch") in ("1", "true", "True") else "list"
        return "get"
    return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
        method, method.lower()
    )


class KubeApi:
    """The aiohttp application of one cluster."""

    def __init__(
        self,
        store: Store,
        faults: FaultRegistry,
        fault_target: str,
        cluster: str,
        pod_status: Callable[[str], Any],
        proxy_url: Callable[[str], str | None],
        ready_endpoints: Callable[[str], list[tuple[str, int]]],
        pod_logs: Callable[[str, bool], list[tuple[float, str]]] | None = None,
    ) -> None:
        self.store = store
        self._pod_logs = pod_logs  # the runtime's container logs (the test fakes keep none)
        self.faults = faults
        self.fault_target = fault_target
        self.cluster = cluster
        self._pod_status = pod_status
        self._proxy_url = proxy_url  # the Service's lab proxy; the proxy subresource bypasses it
        self._ready_endpoints = ready_endpoints
        self._session: aiohttp.ClientSession | None = None
        self.tokens = TokenIssuer(cluster)
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self.handle)
        self.app.on_cleanup.append(self._close_session)

    async def _close_session(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    # -- dispatch --

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Route one request: authenticate, authorize, then discovery, or a resource call behind
        the fault check."""
        user = self.tokens.authenticate(request.headers.get("Authorization"), self._service_account_uid)
        if user is None:
            return _error(ApiError(401, "Unauthorized", "Unauthorized"))
        attrs = rbac.request_attributes(request.method, request.path, request.query)
        if not user.privileged:
            decision = self.authorize(user, attrs)
            if not decision.allowed:
                message, details = rbac.forbidden(user, attrs, decision.reason)
                return _error(ApiError(403, message, "Forbidden", details))
        request[USER_KEY] = user
        path = request.path.rstrip("/") or "/"
        discovery = self._discovery(path)
        if discovery is not None:
            return (
                _json(discovery) if request.method == "GET" else _error(ApiError(405, "method not allowed"))
            )
        target = parse_target(request.path)
        if target is None:
            return _error(
                ApiError(
                    404, f"the server could not find the requested resource ({request.path})", "NotFound"
                )
            )
        verb = _verb(request.method, target, request.query)
        fault_resource = target.rt.plural
        if target.subresource in ("log", "proxy"):
            fault_resource = f"{target.rt.plural}/{target.subresource}"
        rule = self.faults.take(self.fault_target, verb, fault_resource)
        if rule is not None:
            if rule.mode == "error":
                err = ApiError(
                    rule.status, f"lab fault #{rule.id}: injected {rule.status} on {verb} {fault_resource}"
                )
                return _error(err, rule.retry_after)
            await asyncio.sleep(rule.stall_s)
        try:
            return await self._dispatch(request, target, verb)
        except ApiError as e:
            return _error(e)
        except patches.PatchError as e:
            return _error(ApiError(422, f"the patch could not be applied: {e}", "Invalid"))
        except Exception as e:  # a bug in the stand-in: say so, like a real 500
            log.exception("lab kube API failed on %s %s", request.method, request.path)
            return _error(ApiError(500, f"internal error in the lab API server: {type(e).__name__}: {e}"))

    def _discovery(self, path: str) -> Obj | None:
        if path == "/version":
            return SERVER_VERSION
        if path == "/api":
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }
        if path == "/apis":
            return group_list()
        if path == "/api/v1":
            return resource_list("", "v1")
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "apis" and (parts[1], parts[2]) in _groups():
            return resource_list(parts[1], parts[2])
        return None

    # -- identities --

    def _service_account_uid(self, namespace: str, name: str) -> str | None:
        sa = self.store.find("serviceaccounts", namespace, name)
        return None if sa is None else str(sa["metadata"]["uid"])

    def policy(self, namespace: str) -> rbac.Policy:
        """A snapshot of the stored RBAC objects that can matter in ``namespace``."""
        return rbac.Policy(
            cluster_roles={o["metadata"]["name"]: o for o in self.store.iter("clusterroles")},
            roles=(
                {(namespace, o["metadata"]["name"]): o for o in self.store.iter("roles", namespace)}
                if namespace
                else {}
            ),
            cluster_role_bindings=list(self.store.iter("clusterrolebindings")),
            role_bindings=list(self.store.iter("rolebindings", namespace)) if namespace else [],
        )

    def authorize(self, user: rbac.UserInfo, attrs: rbac.Attributes) -> rbac.Decision:
        """Kubernetes RBAC over the cluster's stored roles and bindings."""
        return rbac.authorize(user, attrs, self.policy(attrs.namespace))

    async def _dispatch(self, request: web.Request, target: Target, verb: str) -> web.StreamResponse:
        sub = target.subresource
        if not target.rt.stored:
            if verb != "create":
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
            return await self._review(request, target)
        if sub == "token":
            if verb != "create":
                raise ApiError(
                    405, "the server does not allow this method on the requested resource", "MethodNotAllowed"
                )
            return await self._token_request(request, target)
        if sub == "proxy":
            return await self._proxy(request, target)
        if sub == "log":
            return self._log(request, target)
        if sub == "scale":
            if not target.rt.scale:
                raise not_found(target.rt, target.name or "")
            return await self._scale(request, target, verb)
        if target.rt.namespaced and target.namespace is None and verb not in ("list", "watch"):
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        if verb == "list":
            return self._list(request, target)
        if verb == "watch":
            return await self._watch(request, target)
        if verb == "get":
            obj = self.store.get(target.rt.plural, target.namespace, target.name or "", copy=False)
            if _wants_table(request) and sub is None:
                return _json(to_table(target.rt, [obj], self.store.resource_version))
            return _json(obj)
        if verb == "create":
            body = await self._body(request)
            self._check_kind(target.rt, body)
            body_ns = body.get("metadata", {}).get("namespace")
            if target.rt.namespaced and body_ns and body_ns != target.namespace:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            created = self.store.create(target.rt.plural, body, target.namespace, dry_run=self._dry(request))
            return _json(created, 201)
        if verb == "update":
            body = await self._body(request)
            self._check_kind(target.rt, body)
            updated = self.store.update(
                target.rt.plural,
                body,
                target.namespace,
                target.name,
                subresource=sub,
                dry_run=self._dry(request),
            )
            return _json(updated)
        if verb == "patch":
            return _json(await self._patch(request, target))
        if verb == "delete":
            return await self._delete(request, target)
        raise ApiError(405, f"method {request.method} not allowed", "MethodNotAllowed")

    # -- verbs --

    @staticmethod
    def _dry(request: web.Request) -> bool:
        return request.query.get("dryRun") == "All"

    @staticmethod
    async def _body(request: web.Request) -> Any:
        raw = await request.read()
        if not raw:
            return {}
        if "protobuf" in request.content_type or "cbor" in request.content_type:
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"application/json, {', '.join(PATCH_TYPES)}",
                "UnsupportedMediaType",
            )
        try:
            return json.loads(raw)
        except ValueError as e:
            raise bad_request(f"the request body is not valid JSON: {e}") from e

    @staticmethod
    def _check_kind(rt: ResourceType, body: Any) -> None:
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        kind = body.get("kind")
        if kind and kind != rt.kind:
            raise bad_request(f"the kind of the object ({kind}) does not match the URL ({rt.plural})")

    def _list(self, request: web.Request, target: Target) -> web.Response:
        items, rv = self.store.list(
            target.rt.plural,
            target.namespace,
            request.query.get("labelSelector"),
            request.query.get("fieldSelector"),
            copy=False,
        )
        if _wants_table(request):
            return _json(to_table(target.rt, items, rv))
        return _json(
            {
                "kind": f"{target.rt.kind}List",
                "apiVersion": target.rt.api_version,
                "metadata": {"resourceVersion": rv},
                "items": items,
            }
        )

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        try:
            timeout = float(request.query.get("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT_S)
        except ValueError as e:
            raise bad_request("timeoutSeconds must be a number") from e
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        try:
            watcher = self.store.watch(
                target.rt.plural,
                target.namespace,
                request.query.get("labelSelector"),
                request.query.get("fieldSelector"),
                request.query.get("resourceVersion"),
                send_initial_events=request.query.get("sendInitialEvents") == "true",
            )
        except Expired as e:
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": e.to_status()}).encode() + b"\n")
            await response.write_eof()
            return response
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), timeout=min(remaining, 1.0))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    continue
                if item is None:
                    break
                event, type_ = item
                await response.write(event.line(type_))
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self.store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
            await response.write_eof()
        return response

    async def _patch(self, request: web.Request, target: Target) -> Obj:
        content_type = request.content_type
        apply = PATCH_TYPES.get(content_type)
        if target.rt.custom and content_type == "application/strategic-merge-patch+json":
            apply = None  # custom resources have no patch strategy: the API server refuses it
        if apply is None:
            accepted = [t for t in PATCH_TYPES if not (target.rt.custom and "strategic" in t)]
            raise ApiError(
                415,
                f"the body of the request was in an unknown format - accepted media types include: "
                f"{', '.join(accepted)}",
                "UnsupportedMediaType",
            )
        body = await self._body(request)
        current = self.store.get(target.rt.plural, target.namespace, target.name or "")
        patched = apply(current, body)
        if not isinstance(patched, dict):
            raise bad_request("the patch result is not an object")
        return self.store.update(
            target.rt.plural,
            patched,
            target.namespace,
            target.name,
            subresource=target.subresource,
            dry_run=self._dry(request),
        )

    async def _delete(self, request: web.Request, target: Target) -> web.Response:
        options = await self._body(request)
        if not isinstance(options, dict):
            raise bad_request("the DeleteOptions body must be a JSON object")
        pre = options.get("preconditions") or {}
        grace = options.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        if grace is not None:
            try:
                grace = int(grace)
            except (TypeError, ValueError) as e:
                raise bad_request(f"gracePeriodSeconds must be an integer, not {grace!r}") from e
        gone = self.store.delete(
            target.rt.plural,
            target.namespace,
            target.name or "",
            grace_period_s=grace,
            precondition_rv=pre.get("resourceVersion"),
            precondition_uid=pre.get("uid"),
            dry_run=self._dry(request),
        )
        if target.rt.plural in DELETE_RETURNS_OBJECT:
            return _json(gone)
        details: Obj = {
            "name": gone["metadata"]["name"],
            "kind": target.rt.plural,
            "uid": gone["metadata"]["uid"],
        }
        if target.rt.group:
            details["group"] = target.rt.group
        return _json(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        )

    # -- subresources --

    def _scale_of(self, deploy: Obj) -> Obj:
        meta = deploy["metadata"]
        selector = selector_from_label_selector(deploy["spec"].get("selector")) or ()
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            "spec": {"replicas": deploy["spec"].get("replicas", 1)},
            "status": {
                "replicas": (deploy.get("status") or {}).get("replicas", 0),
                "selector": selector_to_string(selector),
            },
        }

    async def _scale(self, request: web.Request, target: Target, verb: str) -> web.Response:
        plural, ns, name = target.rt.plural, target.namespace, target.name or ""
        deploy = self.store.get(plural, ns, name)
        if verb == "get":
            return _json(self._scale_of(deploy))
        body = await self._body(request)
        if verb == "update":
            scale = body
        elif verb == "patch":
            apply = PATCH_TYPES.get(request.content_type)
            if apply is None:
                raise ApiError(415, f"unsupported patch type {request.content_type}", "UnsupportedMediaType")
            scale = apply(self._scale_of(deploy), body)
        else:
            raise ApiError(405, f"{verb} is not allowed on {plural}/scale", "MethodNotAllowed")
        replicas = (scale.get("spec") or {}).get("replicas")
        if not isinstance(replicas, int) or replicas < 0:
            raise ApiError(
                422,
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: {replicas!r}',
                "Invalid",
            )
        deploy["spec"]["replicas"] = replicas
        deploy["metadata"]["resourceVersion"] = (scale.get("metadata") or {}).get("resourceVersion") or ""
        updated = self.store.update(plural, deploy, ns, name, dry_run=self._dry(request))
        return _json(self._scale_of(updated))

    def _log(self, request: web.Request, target: Target) -> web.Response:
        """The container's log as the kubelet serves it: ``container`` (the pod's only one),
        ``tailLines``, ``previous`` (400 when there is no previous terminated container),
        ``timestamps`` (an RFC 3339 time before each line). A runtime that keeps no logs (the
        tests' fakes) answers a short text naming the image and the state."""
        if target.rt.plural != "pods":
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        pod = self.store.get("pods", target.namespace, target.name or "", copy=False)
        container = (pod["spec"].get("containers") or [{}])[0]
        wanted = request.query.get("container")
        if wanted and wanted != container.get("name"):
            raise bad_request(f"container {wanted} is not valid for pod {target.name}")
        tail = request.query.get("tailLines")
        try:
            tail_lines = int(tail) if tail is not None else None
        except ValueError:
            raise bad_request(f"tailLines: invalid value {tail!r}") from None
        if tail_lines is not None and tail_lines < 0:
            raise invalid(
                RESOURCES["pods"], target.name or "", [("tailLines", "FieldValueInvalid", "must be >= 0")]
            )
        key = f"{self.cluster}/{target.namespace}/{target.name}"
        if self._pod_logs is not None:
            try:
                entries = self._pod_logs(key, request.query.get("previous") == "true")
            except KeyError:
                entries = None  # never run here (created before this runtime): the short text below
            except LookupError as e:
                raise bad_request(str(e.args[0] if e.args else e)) from None
            if entries is not None:
                if tail_lines is not None:
                    entries = entries[-tail_lines:] if tail_lines else []
                stamps = request.query.get("timestamps") == "true"
                text = "".join(
                    (_rfc3339_nano(at) + " " if stamps else "") + line + "\n" for at, line in entries
                )
                return web.Response(text=text, content_type="text/plain")
        state = self._pod_status(key)
        status = pod.get("status") or {}
        lines = [
            f"lab pod {target.namespace}/{target.name} image={container.get('image')}",
            f"phase={status.get('phase')}",
        ]
        if state is not None:
            lines.append(
                f"runtime phase={state.phase} waiting={state.waiting_reason} ready={state.ready} "
                f"restarts={state.restart_count}"
            )
            if state.message:
                lines.append(state.message)
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")

    async def _proxy(self, request: web.Request, target: Target) -> web.StreamResponse:
        if target.rt.plural != "services" or not target.name:
            raise ApiError(404, "the server could not find the requested resource", "NotFound")
        parts = target.name.split(":")
        name = parts[1] if len(parts) == 3 else parts[0]
        self.store.get("services", target.namespace, name, copy=False)
        key = f"{self.cluster}/{target.namespace}/{name}"
        endpoints = self._ready_endpoints(key)
        if not endpoints:
            raise ApiError(503, f'no endpoints available for service "{name}"', "ServiceUnavailable")
        host, port = random.choice(endpoints)  # as the kube-apiserver: one ready endpoint, directly
        url = f"http://{host}:{port}"
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=60), auto_decompress=False
            )
        raw_parts = request.rel_url.raw_path.split("/")
        at = raw_parts.index("services") + 3  # services/<name>/proxy/<rest...>
        sub_path = "/" + "/".join(raw_parts[at:])
        forward_url = url.rstrip("/") + sub_path
        if request.rel_url.raw_query_string:
            forward_url += "?" + request.rel_url.raw_query_string
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        try:
            async with self._session.request(
                request.method, forward_url, headers=headers, data=body or None, allow_redirects=False
            ) as upstream:
                payload = await upstream.read()
                out_headers = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS}
                return web.Response(body=payload, status=upstream.status, headers=out_headers)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise ApiError(
                503, f'error trying to reach service "{name}": {type(e).__name__}: {e}', "ServiceUnavailable"
            ) from e

    # -- reviews and tokens --

    async def _review(self, request: web.Request, target: Target) -> web.Response:
        """SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
        SelfSubjectRulesReview and SelfSubjectReview: answered from RBAC, never stored."""
        rt = target.rt
        body = await self._body(request)
        self._check_kind(rt, body)
        user = request[USER_KEY]
        spec = body.get("spec") or {}
        out: Obj = {
            "kind": rt.kind,
            "apiVersion": rt.api_version,
            "metadata": {**(body.get("metadata") or {}), "creationTimestamp": None},
        }
        if rt.plural == "selfsubjectreviews":
            out["status"] = {"userInfo": user.to_user_info()}
            return _json(out, 201)
        if rt.plural == "selfsubjectrulesreviews":
            namespace = spec.get("namespace") or ""
            if not namespace:
                raise invalid(rt, "", [("spec.namespace", "FieldValueRequired", "Required value")])
            rules, errors = rbac.rules_for(user, namespace, self.policy(namespace))
            out["spec"] = spec
            out["status"] = {
                "resourceRules": [
                    {k: r[k] for k in ("verbs", "apiGroups", "resources", "resourceNames") if r.get(k)}
                    for r in rules
                    if not r.get("nonResourceURLs")
                ],
                "nonResourceRules": [
                    {"verbs": r["verbs"], "nonResourceURLs": r["nonResourceURLs"]}
                    for r in rules
                    if r.get("nonResourceURLs")
                ],
                "incomplete": bool(errors),
            }
            if errors:
                out["status"]["evaluationError"] = "; ".join(errors)
            return _json(out, 201)
        has_resource = spec.get("resourceAttributes") is not None
        if has_resource == (spec.get("nonResourceAttributes") is not None):
            raise invalid(
                rt,
                "",
                [
                    (
                        "spec.resourceAttributes",
                        "FieldValueInvalid",
                        "Invalid value: exactly one of nonResourceAttributes or resourceAttributes must be "
                        "specified",
                    )
                ],
            )
        attrs = rbac.attributes_from_review(spec)
        if rt.plural == "localsubjectaccessreviews":
            if attrs.namespace != (target.namespace or ""):
                raise invalid(
                    rt,
                    "",
                    [
                        (
                            "spec.resourceAttributes.namespace",
                            "FieldValueInvalid",
                            f'Invalid value: "{attrs.namespace}": must match metadata.namespace',
                        )
                    ],
                )
            out["metadata"]["namespace"] = target.namespace
        if rt.plural in ("subjectaccessreviews", "localsubjectaccessreviews"):
            if not spec.get("user") and not spec.get("groups"):
                raise invalid(
                    rt,
                    "",
                    [
                        (
                            "spec.user",
                            "FieldValueInvalid",
                            "Invalid value: at least one of user or group must be specified",
                        )
                    ],
                )
            subject = rbac.UserInfo(
                str(spec.get("user") or ""), tuple(spec.get("groups") or ()), str(spec.get("uid") or "")
            )
        else:
            subject = user
        decision = self.authorize(subject, attrs)
        out["spec"] = spec
        status: Obj = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        if decision.errors:
            status["evaluationError"] = "; ".join(decision.errors)
        out["status"] = status
        return _json(out, 201)

    async def _token_request(self, request: web.Request, target: Target) -> web.Response:
        """TokenRequest on ``serviceaccounts/<name>/token``: a bound token for the ServiceAccount."""
        ns, name = target.namespace or "", target.name or ""
        body = await self._body(request)
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        kind = body.get("kind")
        if kind and kind != "TokenRequest":
            raise bad_request(
                f"the kind of the object ({kind}) does not match the URL (serviceaccounts/token)"
            )
        sa = self.store.get("serviceaccounts", ns, name, copy=False)
        spec = dict(body.get("spec") or {})
        expiration = spec.get("expirationSeconds")
        if expiration is None:
            expiration = DEFAULT_EXPIRATION_S
        token_rt = ResourceType("tokenrequests", "tokenrequest", "TokenRequest", "authentication.k8s.io")
        if not isinstance(expiration, int) or expiration < MIN_EXPIRATION_S:
            raise invalid(
                token_rt,
                name,
                [
                    (
                        "spec.expirationSeconds",
                        "FieldValueInvalid",
                        f"Invalid value: {expiration!r}: may not specify a duration less than 10 minutes",
                    )
                ],
            )
        if expiration > MAX_EXPIRATION_S:
            raise invalid(
                token_rt,
                name,
                [
                    (
                        "spec.expirationSeconds",
                        "FieldValueTooLong",
                        f"Invalid value: {expiration}: may not specify a duration larger than 2^32 seconds",
                    )
                ],
            )
        audiences = tuple(spec.get("audiences") or (AUDIENCE,))
        issued = self.tokens.issue(ns, name, str(sa["metadata"]["uid"]), expiration, audiences)
        spec.update({"audiences": list(audiences), "expirationSeconds": expiration})
        spec.setdefault("boundObjectRef", None)
        return _json(
            {
                "kind": "TokenRequest",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"name": name, "namespace": ns, "creationTimestamp": None},
                "spec": spec,
                "status": {
                    "token": issued.token,
                    "expirationTimestamp": now_rfc3339(issued.expires_at - time.time()),
                },
            },
            201,
        )
