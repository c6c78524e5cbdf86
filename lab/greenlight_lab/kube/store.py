"""The object store of one lab Kubernetes cluster: what etcd plus the API server's registry do.

Objects are plain JSON dicts keyed by resource (plural), namespace ("" for cluster-scoped) and
name. The store assigns metadata (uid, resourceVersion from one counter per cluster,
generation, creationTimestamp), defaults and validates the kinds the lab cares about, refuses
stale writes (409), keeps a bounded history of changes for watches that resume from a
resourceVersion, and fans changes out to watchers and in-process listeners (the controller).

Everything runs on one asyncio loop and is synchronous: one call is one atomic step.
Objects returned with ``copy=False`` are the stored ones, shared: never mutate them.
"""

from __future__ import annotations

import asyncio
import copy as copymod
import datetime as dt
import json
import logging
import math
import random
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from greenlight_lab.kube import gateway_api, rbac

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
DEFAULT_POD_GRACE_S = 30  # what the API server defaults spec.terminationGracePeriodSeconds to


def now_rfc3339(offset_s: float = 0.0) -> str:
    """The current UTC time (plus ``offset_s``) as Kubernetes writes it (seconds, trailing Z)."""
    at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset_s)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def random_suffix(n: int = 5) -> str:
    """A random suffix from the alphabet Kubernetes uses for generated names."""
    return "".join(random.choice(NAME_CHARS) for _ in range(n))


# --- resource types ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResourceType:
    """One served resource: how it is named, addressed and which subresources it has."""

    plural: str
    singular: str
    kind: str
    group: str = ""
    version: str = "v1"
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    status: bool = False
    scale: bool = False
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ("create", "delete", "get", "list", "patch", "update", "watch")
    stored: bool = True  # False: a review or request the API answers and forgets (create only)
    custom: bool = False  # served as a CustomResourceDefinition is: no strategic merge patch

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """``deployments.apps`` / ``pods``: the name used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_generation(self) -> bool:
        return self.status and self.plural != "namespaces"


RESOURCES: dict[str, ResourceType] = {
    rt.plural: rt
    for rt in (
        ResourceType(
            "namespaces", "namespace", "Namespace", namespaced=False, short_names=("ns",), status=True
        ),
        ResourceType("pods", "pod", "Pod", short_names=("po",), status=True, categories=("all",)),
        ResourceType(
            "services", "service", "Service", short_names=("svc",), status=True, categories=("all",)
        ),
        ResourceType("endpoints", "endpoints", "Endpoints", short_names=("ep",)),
        ResourceType("configmaps", "configmap", "ConfigMap", short_names=("cm",)),
        ResourceType("secrets", "secret", "Secret"),
        ResourceType("events", "event", "Event", short_names=("ev",)),
        ResourceType("serviceaccounts", "serviceaccount", "ServiceAccount", short_names=("sa",)),
        ResourceType(
            "deployments",
            "deployment",
            "Deployment",
            "apps",
            short_names=("deploy",),
            status=True,
            scale=True,
            categories=("all",),
        ),
        ResourceType(
            "replicasets",
            "replicaset",
            "ReplicaSet",
            "apps",
            short_names=("rs",),
            status=True,
            categories=("all",),
        ),
        ResourceType("jobs", "job", "Job", "batch", status=True, categories=("all",)),
        ResourceType(
            "horizontalpodautoscalers",
            "horizontalpodautoscaler",
            "HorizontalPodAutoscaler",
            "autoscaling",
            "v2",
            short_names=("hpa",),
            status=True,
            categories=("all",),
        ),
        ResourceType(
            "poddisruptionbudgets",
            "poddisruptionbudget",
            "PodDisruptionBudget",
            "policy",
            short_names=("pdb",),
            status=True,
        ),
        ResourceType(
            "ingresses", "ingress", "Ingress", "networking.k8s.io", short_names=("ing",), status=True
        ),
        ResourceType(
            "persistentvolumeclaims",
            "persistentvolumeclaim",
            "PersistentVolumeClaim",
            short_names=("pvc",),
            status=True,
        ),
        *(
            ResourceType(
                plural,
                plural[:-1],
                kind,
                gateway_api.GROUP,
                status=True,
                categories=("gateway-api",),
                custom=True,
            )
            for plural, kind in (("gateways", "Gateway"), ("httproutes", "HTTPRoute"))
        ),
        ResourceType("roles", "role", "Role", rbac.GROUP),
        ResourceType("rolebindings", "rolebinding", "RoleBinding", rbac.GROUP),
        ResourceType("clusterroles", "clusterrole", "ClusterRole", rbac.GROUP, namespaced=False),
        ResourceType(
            "clusterrolebindings", "clusterrolebinding", "ClusterRoleBinding", rbac.GROUP, namespaced=False
        ),
        *(
            ResourceType(
                plural,
                plural[:-1],
                kind,
                group,
                namespaced=namespaced,
                verbs=("create",),
                stored=False,
            )
            for plural, kind, group, namespaced in (
                ("selfsubjectaccessreviews", "SelfSubjectAccessReview", "authorization.k8s.io", False),
                ("selfsubjectrulesreviews", "SelfSubjectRulesReview", "authorization.k8s.io", False),
                ("subjectaccessreviews", "SubjectAccessReview", "authorization.k8s.io", False),
                ("localsubjectaccessreviews", "LocalSubjectAccessReview", "authorization.k8s.io", True),
                ("selfsubjectreviews", "SelfSubjectReview", "authentication.k8s.io", False),
            )
        ),
    )
}


def resource(plural: str) -> ResourceType:
    """The resource type named ``plural``; KeyError when the lab does not serve it."""
    return RESOURCES[plural]


# --- errors -----------------------------------------------------------------------------------

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """A refused API call, rendered as a ``Status`` object by ``to_status``."""

    def __init__(
        self, code: int, message: str, reason: str | None = None, details: Obj | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def to_status(self) -> Obj:
        status: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            status["details"] = self.details
        return status


def _details(rt: ResourceType, name: str, **extra: Any) -> Obj:
    details: Obj = {"name": name, "kind": rt.plural, **extra}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rt.qualified} "{name}" not found', "NotFound", _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, f'{rt.qualified} "{name}" already exists', "AlreadyExists", _details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "Conflict",
        _details(rt, name),
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; causes are (field, reason, message) as in FieldValueRequired etc."""
    text = ", ".join(f"{f}: {m}" for f, _, m in causes)
    kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return ApiError(
        422,
        f'{kind} "{name}" is invalid: {text}',
        "Invalid",
        {
            "name": name,
            "group": rt.group,
            "kind": rt.kind,
            "causes": [{"reason": r, "message": m, "field": f} for f, r, m in causes],
        },
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


# --- selectors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One label selector requirement: op is =, !=, in, notin, exists or !exists."""

    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op == "exists":
            return present
        return not present


Selector = tuple[Requirement, ...]

_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_VALUE = r"[-A-Za-z0-9_.]*"
_SET_RE = re.compile(rf"^({_KEY})\s+(in|notin)\s*\(([^)]*)\)$")
_EQ_RE = re.compile(rf"^({_KEY})\s*(==|=|!=)\s*({_VALUE})$")
_EXISTS_RE = re.compile(rf"^(!?)\s*({_KEY})$")


def _split_top_level(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def parse_label_selector(text: str | None) -> Selector:
    """Parse a label selector string (``a=b,c!=d,e in (x,y),!f``); 400 BadRequest when malformed."""
    if not text:
        return ()
    reqs = []
    for part in _split_top_level(text):
        if m := _SET_RE.match(part):
            values = tuple(v.strip() for v in m.group(3).split(",") if v.strip())
            reqs.append(Requirement(m.group(1), m.group(2), values))
        elif m := _EQ_RE.match(part):
            reqs.append(Requirement(m.group(1), "!=" if m.group(2) == "!=" else "=", (m.group(3),)))
        elif m := _EXISTS_RE.match(part):
            reqs.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {part!r} in label selector {text!r}")
    return tuple(reqs)


def selector_from_label_selector(sel: Obj | None) -> Selector | None:
    """A ``LabelSelector`` object (matchLabels/matchExpressions) as requirements; None for no selector."""
    if not sel:
        return None
    reqs = [Requirement(k, "=", (str(v),)) for k, v in (sel.get("matchLabels") or {}).items()]
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
    for expr in sel.get("matchExpressions") or []:
        if expr.get("operator") not in ops:
            raise bad_request(f"unknown selector operator {expr.get('operator')!r}")
        reqs.append(Requirement(expr["key"], ops[expr["operator"]], tuple(expr.get("values") or ())))
    return tuple(reqs)


def selector_from_map(labels: dict[str, str] | None) -> Selector | None:
    """A Service-style selector map as requirements; None when empty (selects nothing)."""
    if not labels:
        return None
    return tuple(Requirement(k, "=", (str(v),)) for k, v in labels.items())


def selector_to_string(selector: Selector) -> str:
    """Render requirements back to the label selector string form (as Scale.status.selector)."""
    out = []
    for r in selector:
        if r.op == "=":
            out.append(f"{r.key}={r.values[0]}")
        elif r.op == "!=":
            out.append(f"{r.key}!={r.values[0]}")
        elif r.op in ("in", "notin"):
            out.append(f"{r.key} {r.op} ({','.join(r.values)})")
        else:
            out.append(r.key if r.op == "exists" else f"!{r.key}")
    return ",".join(out)


def labels_match(selector: Selector, labels: dict[str, str] | None) -> bool:
    """True when every requirement holds for ``labels``."""
    labels = labels or {}
    return all(r.matches(labels) for r in selector)


FieldSelector = tuple[tuple[str, bool, str], ...]  # (dotted path, equal?, value)


def parse_field_selector(text: str | None) -> FieldSelector:
    """Parse ``metadata.name=x,metadata.namespace!=y``; any dotted path is accepted."""
    if not text:
        return ()
    out = []
    for part in _split_top_level(text):
        m = re.match(r"^([A-Za-z0-9_.]+)\s*(==|=|!=)\s*(.*)$", part)
        if not m:
            raise bad_request(f"invalid field selector: {part!r}")
        out.append((m.group(1), m.group(2) != "!=", m.group(3).strip()))
    return tuple(out)


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict):
            return ""
        node = node.get(part)
    return "" if node is None else str(node)


def fields_match(selector: FieldSelector, obj: Obj) -> bool:
    return all((_field_value(obj, path) == value) == eq for path, eq, value in selector)


# --- events and watchers ----------------------------------------------------------------------


@dataclass
class Event:
    """One change: type ADDED/MODIFIED/DELETED, the object after it (before it for DELETED)."""

    type: str
    resource: str
    obj: Obj
    old: Obj | None
    rv: int
    _lines: dict[str, bytes] = field(default_factory=dict, repr=False)

    def line(self, type_: str | None = None) -> bytes:
        """The watch-stream line for this event, encoded once per type and shared by watchers."""
        t = type_ or self.type
        if t not in self._lines:
            self._lines[t] = (
                json.dumps({"type": t, "object": self.obj}, separators=(",", ":")).encode() + b"\n"
            )
        return self._lines[t]


class Expired(ApiError):
    """A watch asked to resume from a resourceVersion older than the kept history."""

    def __init__(self, rv: int, oldest: int) -> None:
        super().__init__(410, f"too old resource version: {rv} ({oldest})", "Expired")


class Watcher:
    """One watch: a filter and a queue of (event, type) the API handler drains; None ends it."""

    def __init__(self, resource: str, namespace: str | None, labels: Selector, fields: FieldSelector) -> None:
        self.resource = resource
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.queue: asyncio.Queue[tuple[Event, str] | None] = asyncio.Queue()

    @property
    def filter_key(self) -> tuple[str | None, Selector, FieldSelector]:
        """Watchers with equal keys see the same events: the store matches once per key."""
        return (self.namespace, self.labels, self.fields)

    @property
    def name(self) -> str | None:
        """The one object name this watch is limited to (fieldSelector metadata.name=X), if any."""
        return next((v for path, eq, v in self.fields if path == "metadata.name" and eq), None)

    def _matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        meta = obj.get("metadata", {})
        if self.namespace is not None and meta.get("namespace") != self.namespace:
            return False
        return labels_match(self.labels, meta.get("labels")) and fields_match(self.fields, obj)

    def classify(self, event: Event) -> str | None:
        """The event type this watcher sees (a label change out of its selector is DELETED), or None."""
        if event.type in ("ADDED", "DELETED"):
            return event.type if self._matches(event.obj) else None
        now, before = self._matches(event.obj), self._matches(event.old)
        if now:
            return "MODIFIED" if before else "ADDED"
        return "DELETED" if before else None

    def offer(self, event: Event) -> None:
        """Queue the event if this watcher sees it."""
        type_ = self.classify(event)
        if type_ is not None:
            self.queue.put_nowait((event, type_))

    def close(self) -> None:
        self.queue.put_nowait(None)


class _WatchIndex:
    """The watchers of one resource, grouped by filter and indexed by watched name, so one
    write costs one match per distinct filter that could see it, not one per watcher."""

    def __init__(self) -> None:
        self.groups: dict[Any, set[Watcher]] = {}
        self.unnamed: set[Any] = set()
        self.by_name: dict[str, set[Any]] = {}

    def add(self, w: Watcher) -> None:
        key = w.filter_key
        self.groups.setdefault(key, set()).add(w)
        if w.name is None:
            self.unnamed.add(key)
        else:
            self.by_name.setdefault(w.name, set()).add(key)

    def discard(self, w: Watcher) -> None:
        key = w.filter_key
        group = self.groups.get(key)
        if group is None or w not in group:
            return
        group.discard(w)
        if not group:
            del self.groups[key]
            self.unnamed.discard(key)
            if w.name is not None:
                self.by_name.get(w.name, set()).discard(key)
                if not self.by_name.get(w.name):
                    self.by_name.pop(w.name, None)

    def all(self) -> list[Watcher]:
        return [w for group in self.groups.values() for w in group]

    def offer(self, event: Event) -> None:
        name = event.obj["metadata"].get("name", "")
        for key in list(self.unnamed) + list(self.by_name.get(name, ())):
            group = self.groups.get(key)
            if not group:
                continue
            type_ = next(iter(group)).classify(event)
            if type_ is not None:
                item = (event, type_)
                for w in group:
                    w.queue.put_nowait(item)


# --- defaulting and validation per kind -------------------------------------------------------

_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAMED = frozenset({"namespaces", "services"})
PATH_SEGMENT_NAMED = frozenset({"roles", "rolebindings", "clusterroles", "clusterrolebindings"})


def name_problem(plural: str, name: str) -> str | None:
    """Why ``name`` is not a valid object name for ``plural`` (DNS-1123; RBAC objects only need
    to be a path segment, so ``system:discovery`` is a name), or None."""
    if plural in PATH_SEGMENT_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            return f"Invalid value: \"{name}\": may not contain '/' or '%' and may not be '.' or '..'"
        return None
    if plural in LABEL_NAMED:
        if len(name) > 63 or not _LABEL_RE.match(name):
            return (
                f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower case '
                "alphanumeric characters or '-', and must start and end with an alphanumeric character"
            )
        return None
    if len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        return (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
    return None


def _containers_problems(spec: Any, path: str) -> list[tuple[str, str, str]]:
    if not isinstance(spec, dict) or not spec.get("containers"):
        return [(f"{path}.containers", "FieldValueRequired", "Required value")]
    out = []
    for i, c in enumerate(spec["containers"]):
        if not c.get("name"):
            out.append((f"{path}.containers[{i}].name", "FieldValueRequired", "Required value"))
        if not c.get("image"):
            out.append((f"{path}.containers[{i}].image", "FieldValueRequired", "Required value"))
    return out


def _resolve_percent(value: Any, total: int, round_up: bool) -> int:
    """An int-or-percent field resolved against ``total`` (Kubernetes rounding)."""
    if isinstance(value, str) and value.endswith("%"):
        pct = int(value[:-1])
        exact = pct * total
        return -(-exact // 100) if round_up else exact // 100
    return int(value)


def rolling_params(deploy: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) of a Deployment, resolved as Kubernetes does."""
    spec = deploy.get("spec", {})
    replicas = int(spec.get("replicas", 1))
    strategy = spec.get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0, replicas
    ru = strategy.get("rollingUpdate") or {}
    surge = _resolve_percent(ru.get("maxSurge", "25%"), replicas, True)
    unavailable = _resolve_percent(ru.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _validate_deployment(obj: Obj) -> list[tuple[str, str, str]]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec", "FieldValueRequired", "Required value")]
    out = []
    selector = spec.get("selector")
    template = spec.get("template") or {}
    if not selector:
        out.append(("spec.selector", "FieldValueRequired", "Required value"))
    else:
        try:
            reqs = selector_from_label_selector(selector) or ()
        except ApiError as e:
            return [("spec.selector", "FieldValueInvalid", e.message)]
        if not reqs:
            out.append(
                (
                    "spec.selector",
                    "FieldValueInvalid",
                    "Invalid value: empty selector is invalid for deployment",
                )
            )
        elif not labels_match(reqs, (template.get("metadata") or {}).get("labels")):
            out.append(
                (
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    "Invalid value: `selector` does not match template `labels`",
                )
            )
    if int(spec.get("replicas", 1)) < 0:
        out.append(
            ("spec.replicas", "FieldValueInvalid", "Invalid value: must be greater than or equal to 0")
        )
    out += _containers_problems(template.get("spec"), "spec.template.spec")
    return out


def _default_pod_spec(spec: Any) -> None:
    """Container port protocols default to TCP, as the API server's defaulting does."""
    if not isinstance(spec, dict):
        return
    for c in spec.get("containers") or []:
        for p in c.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")


def _default_deployment(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _default_pod_spec((spec.get("template") or {}).get("spec"))
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = strategy.setdefault("rollingUpdate", {})
        ru.setdefault("maxSurge", "25%")
        ru.setdefault("maxUnavailable", "25%")


def _validate_service(obj: Obj) -> list[tuple[str, str, str]]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [("spec.ports", "FieldValueRequired", "Required value")]
    headless = spec.get("clusterIP") == "None"
    ports = spec.get("ports") or []
    out = []
    if not ports and not headless and spec.get("type") != "ExternalName":
        out.append(("spec.ports", "FieldValueRequired", "Required value"))
    for i, p in enumerate(ports):
        port = p.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            out.append(
                (f"spec.ports[{i}].port", "FieldValueInvalid", f"Invalid value: {port!r}: must be 1-65535")
            )
    if len(ports) > 1 and any(not p.get("name") for p in ports):
        out.append(("spec.ports[0].name", "FieldValueRequired", "Required value"))
    return out


def _validate_job(obj: Obj) -> list[tuple[str, str, str]]:
    template = (obj.get("spec") or {}).get("template") or {}
    out = _containers_problems(template.get("spec"), "spec.template.spec")
    policy = (template.get("spec") or {}).get("restartPolicy")
    if policy not in ("Never", "OnFailure"):
        out.append(
            (
                "spec.template.spec.restartPolicy",
                "FieldValueRequired" if policy is None else "FieldValueNotSupported",
                'Required value: valid values: "OnFailure", "Never"',
            )
        )
    return out


def _default_job(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    for key, value in (("completions", 1), ("parallelism", 1), ("backoffLimit", 6), ("suspend", False)):
        spec.setdefault(key, value)
    spec.setdefault("completionMode", "NonIndexed")
    meta = obj["metadata"]
    uid, name = meta["uid"], meta["name"]
    if old is None and not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
        tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
        tmeta.setdefault("labels", {}).update(
            {
                "batch.kubernetes.io/controller-uid": uid,
                "batch.kubernetes.io/job-name": name,
                "controller-uid": uid,
                "job-name": name,
            }
        )


def _validate_pod(obj: Obj) -> list[tuple[str, str, str]]:
    return _containers_problems(obj.get("spec"), "spec")


def _default_pod(obj: Obj, old: Obj | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_S)
    _default_pod_spec(spec)
    if old is None:
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}


def _default_namespace(obj: Obj, old: Obj | None) -> None:
    obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"]["name"]
    obj.setdefault("spec", {"finalizers": ["kubernetes"]})
    obj["status"] = {"phase": "Active"}


def _default_secret(obj: Obj, old: Obj | None) -> None:
    import base64

    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
    obj.setdefault("type", "Opaque")


PVC_ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")


def _validate_pvc(obj: Obj) -> list[tuple[str, str, str]]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    out = []
    modes = spec.get("accessModes") or []
    if not modes:
        out.append(
            ("spec.accessModes", "FieldValueRequired", "Required value: at least 1 access mode is required")
        )
    for mode in modes:
        if mode not in PVC_ACCESS_MODES:
            supported = ", ".join(f'"{m}"' for m in PVC_ACCESS_MODES)
            out.append(
                (
                    "spec.accessModes",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{mode}": supported values: {supported}',
                )
            )
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    if storage in (None, ""):
        out.append(("spec.resources[storage]", "FieldValueRequired", "Required value"))
    return out


def _default_pvc(obj: Obj, old: Obj | None) -> None:
    """volumeMode Filesystem; a new claim is Bound at once to a volume named after its uid (the
    lab has one always-ready provisioner, so there is no Pending phase)."""
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    spec.setdefault("storageClassName", "standard")
    if old is not None:
        if (old.get("spec") or {}).get("volumeName"):
            spec.setdefault("volumeName", old["spec"]["volumeName"])
    else:
        spec.setdefault("volumeName", f"pvc-{obj['metadata']['uid']}")
        obj["status"] = {
            "phase": "Bound",
            "accessModes": list(spec.get("accessModes") or []),
            "capacity": {"storage": ((spec.get("resources") or {}).get("requests") or {}).get("storage")},
        }


VALIDATORS: dict[str, Callable[[Obj], list[tuple[str, str, str]]]] = {
    "deployments": _validate_deployment,
    "services": _validate_service,
    "jobs": _validate_job,
    "pods": _validate_pod,
    "persistentvolumeclaims": _validate_pvc,
    "gateways": gateway_api.validate_gateway,
    "httproutes": gateway_api.validate_httproute,
    "roles": lambda o: rbac.validate_role(o, namespaced=True),
    "clusterroles": lambda o: rbac.validate_role(o, namespaced=False),
}


# --- the store --------------------------------------------------------------------------------


class Store:
    """All objects of one cluster, their history, watchers and listeners (see module docstring)."""

    def __init__(self, cluster: str = "lab", history: int = 50_000) -> None:
        self.cluster = cluster
        self._objects: dict[str, dict[str, dict[str, Obj]]] = {p: {} for p in RESOURCES}
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=history)
        self._watchers: dict[str, _WatchIndex] = {p: _WatchIndex() for p in RESOURCES}
        self._listeners: list[Callable[[Event], None]] = []
        self._pending: deque[Event] = deque()
        self._emitting = False
        self._next_ip = 10

    # -- reading --

    @property
    def resource_version(self) -> str:
        """The cluster's current resourceVersion (as a list response carries it)."""
        return str(self._rv)

    def get(self, plural: str, namespace: str | None, name: str, *, copy: bool = True) -> Obj:
        """The object, or 404 NotFound."""
        rt = resource(plural)
        obj = self._objects[plural].get(self._ns(rt, namespace), {}).get(name)
        if obj is None:
            raise not_found(rt, name)
        return copymod.deepcopy(obj) if copy else obj

    def find(self, plural: str, namespace: str | None, name: str) -> Obj | None:
        """The stored object (shared, read-only) or None."""
        rt = resource(plural)
        return self._objects[plural].get(self._ns(rt, namespace), {}).get(name)

    def iter(self, plural: str, namespace: str | None = None) -> Iterable[Obj]:
        """Stored objects of a resource, in one namespace or all (shared, read-only)."""
        buckets = self._objects[plural]
        if namespace is not None and resource(plural).namespaced:
            return list(buckets.get(namespace, {}).values())
        return [o for bucket in buckets.values() for o in bucket.values()]

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | Selector | None = None,
        field_selector: str | FieldSelector | None = None,
        *,
        copy: bool = True,
    ) -> tuple[list[Obj], str]:
        """Matching objects sorted by namespace/name, and the resourceVersion of the list."""
        labels = (
            parse_label_selector(label_selector) if isinstance(label_selector, str | None) else label_selector
        )
        fields = (
            parse_field_selector(field_selector) if isinstance(field_selector, str | None) else field_selector
        )
        if namespace is not None and resource(plural).namespaced:
            self._require_namespace(namespace)
        items = [
            o
            for o in self.iter(plural, namespace)
            if labels_match(labels, o["metadata"].get("labels")) and fields_match(fields, o)
        ]
        items.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        if copy:
            items = copymod.deepcopy(items)
        return items, self.resource_version

    # -- writing --

    def create(self, plural: str, obj: Obj, namespace: str | None = None, *, dry_run: bool = False) -> Obj:
        """Store a new object: metadata assigned, defaults applied, validated; 409 when it exists."""
        rt = resource(plural)
        obj = copymod.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        ns = self._ns(rt, namespace if namespace is not None else meta.get("namespace"))
        if rt.namespaced:
            meta["namespace"] = ns
            self._require_namespace(ns)
        else:
            meta.pop("namespace", None)
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise invalid(
                    rt,
                    "",
                    [
                        (
                            "metadata.name",
                            "FieldValueRequired",
                            "Required value: name or generateName is required",
                        )
                    ],
                )
            meta["name"] = meta["generateName"] + random_suffix()
        name = meta["name"]
        if problem := name_problem(plural, name):
            raise invalid(rt, name, [("metadata.name", "FieldValueInvalid", problem)])
        if name in self._objects[plural].get(ns, {}):
            raise already_exists(rt, name)
        obj["kind"], obj["apiVersion"] = rt.kind, rt.api_version
        for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        if rt.status and plural not in ("pods",):
            obj.pop("status", None)
        self._prepare(rt, obj, None)
        if rt.has_generation:
            meta["generation"] = 1
        if dry_run:
            return obj
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        self._objects[plural].setdefault(ns, {})[name] = obj
        self._emit(Event("ADDED", plural, obj, None, self._rv))
        return copymod.deepcopy(obj)

    def update(
        self,
        plural: str,
        obj: Obj,
        namespace: str | None = None,
        name: str | None = None,
        *,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Replace an object (PUT semantics). A resourceVersion in ``obj`` is a precondition (409).

        With ``subresource="status"`` only the status changes; without it, kinds with a status
        subresource keep their stored status. A write that changes nothing is not a new version.
        """
        rt = resource(plural)
        obj = copymod.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        ns = self._ns(rt, namespace if namespace is not None else meta.get("namespace"))
        name = name or meta.get("name")
        if not name:
            raise bad_request("name is required for an update")
        if meta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        current = self._objects[plural].get(ns, {}).get(name)
        if current is None:
            raise not_found(rt, name)
        wanted_rv = meta.get("resourceVersion")
        if wanted_rv not in (None, "") and str(wanted_rv) != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if subresource == "status":
            new = copymod.deepcopy(current)
            if "status" in obj:
                new["status"] = obj["status"]
            else:
                new.pop("status", None)
        else:
            new = obj
            cmeta = current["metadata"]
            new["metadata"]["name"] = name
            if rt.namespaced:
                new["metadata"]["namespace"] = ns
            for key in ("uid", "creationTimestamp", "generation", *DELETION_FIELDS):
                if key in cmeta:
                    new["metadata"][key] = cmeta[key]
                else:
                    new["metadata"].pop(key, None)
            if rt.status:
                if "status" in current:
                    new["status"] = copymod.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            new["kind"], new["apiVersion"] = rt.kind, rt.api_version
            self._prepare(rt, new, current)
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if new == current:
            return copymod.deepcopy(current)
        if rt.has_generation and _spec_of(new) != _spec_of(current):
            new["metadata"]["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if dry_run:
            return new
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[plural][ns][name] = new
        self._emit(Event("MODIFIED", plural, new, current, self._rv))
        return copymod.deepcopy(new)

    def delete(
        self,
        plural: str,
        namespace: str | None,
        name: str,
        *,
        grace_period_s: float | None = None,
        precondition_rv: str | None = None,
        precondition_uid: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """Delete an object; returns it (as removed, or as now terminating).

        Pods are deleted gracefully, as the API server does: with a grace period > 0 (
        ``grace_period_s``, else the pod's ``spec.terminationGracePeriodSeconds``) the pod
        stays, with ``metadata.deletionTimestamp`` (now + grace) and
        ``deletionGracePeriodSeconds`` set (MODIFIED); the kubelet (the controller) removes it
        once its containers are gone. Deleting a terminating pod again only shortens its grace
        period. A grace period of 0, or a pod that has already Succeeded or Failed, is removed
        at once. Every other kind is removed at once; a namespace takes its contents with it
        (at once, pods included).
        """
        rt = resource(plural)
        ns = self._ns(rt, namespace)
        current = self._objects[plural].get(ns, {}).get(name)
        if current is None:
            raise not_found(rt, name)
        if precondition_rv and precondition_rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        if precondition_uid and precondition_uid != current["metadata"]["uid"]:
            raise conflict(rt, name)
        if plural == "pods":
            grace = self._pod_grace(current, grace_period_s)
            if grace > 0:
                return self._delete_gracefully(current, grace, dry_run=dry_run)
        if dry_run:
            return copymod.deepcopy(current)
        if plural == "namespaces":
            for other in RESOURCES.values():
                if other.namespaced:
                    for child in list(self._objects[other.plural].get(name, {})):
                        self.delete(other.plural, name, child, grace_period_s=0)
        del self._objects[plural][ns][name]
        if not self._objects[plural][ns]:
            del self._objects[plural][ns]
        self._rv += 1
        gone = copymod.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._emit(Event("DELETED", plural, gone, current, self._rv))
        return copymod.deepcopy(gone)

    @staticmethod
    def _pod_grace(pod: Obj, requested: float | None) -> int:
        """The grace period (whole seconds, as int64 in the API) a pod DELETE gets, as the pod
        strategy's CheckGracefulDelete decides it."""
        meta = pod["metadata"]
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if meta.get("deletionTimestamp"):
            pending = int(meta.get("deletionGracePeriodSeconds") or 0)
            if pending == 0 or requested is None:
                return pending
            return min(max(0, math.ceil(float(requested))), pending)
        if requested is None:
            requested = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", DEFAULT_POD_GRACE_S)
        grace = math.ceil(float(requested))
        return 1 if grace < 0 else grace

    def _delete_gracefully(self, current: Obj, grace: int, *, dry_run: bool) -> Obj:
        """Mark a pod terminating, or shorten its pending grace period; else a no-op."""
        meta = current["metadata"]
        pending = meta.get("deletionGracePeriodSeconds")
        if meta.get("deletionTimestamp") and pending is not None and grace >= int(pending):
            return copymod.deepcopy(current)
        new = copymod.deepcopy(current)
        new["metadata"]["deletionTimestamp"] = now_rfc3339(grace)
        new["metadata"]["deletionGracePeriodSeconds"] = grace
        if dry_run:
            return new
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        ns, name = meta["namespace"], meta["name"]
        self._objects["pods"][ns][name] = new
        self._emit(Event("MODIFIED", "pods", new, current, self._rv))
        return copymod.deepcopy(new)

    # -- watching --

    def watch(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        resource_version: str | None = None,
        send_initial_events: bool = False,
    ) -> Watcher:
        """Register a watcher. Without a resourceVersion (or "0") it first gets ADDED for every
        matching object; with one, every matching change after it (410 Expired if too old).

        ``send_initial_events`` (the streaming list of newer clients): ADDED for every matching
        object, then a BOOKMARK annotated ``k8s.io/initial-events-end``, then changes.
        """
        rt = resource(plural)
        if namespace is not None and rt.namespaced:
            self._require_namespace(namespace)
        w = Watcher(
            plural,
            namespace if rt.namespaced else None,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector),
        )
        if send_initial_events or resource_version in (None, "", "0"):
            for obj in self.list(plural, namespace, w.labels, w.fields, copy=False)[0]:
                w.queue.put_nowait((Event("ADDED", plural, obj, None, self._rv), "ADDED"))
            if send_initial_events:
                mark = {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version,
                    "metadata": {
                        "resourceVersion": self.resource_version,
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                w.queue.put_nowait((Event("BOOKMARK", plural, mark, None, self._rv), "BOOKMARK"))
        else:
            try:
                since = int(resource_version)
            except ValueError as e:
                raise bad_request(f"invalid resourceVersion {resource_version!r}") from e
            oldest = self._history[0].rv if self._history else self._rv + 1
            if since < oldest - 1 and since < self._rv:
                raise Expired(since, oldest)
            for event in self._history:
                if event.rv > since and event.resource == plural:
                    w.offer(event)
        self._watchers[plural].add(w)
        return w

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers[watcher.resource].discard(watcher)

    def close_watchers(self) -> None:
        """End every open watch (used when the server stops)."""
        for plural, index in self._watchers.items():
            for w in index.all():
                w.close()
            self._watchers[plural] = _WatchIndex()

    def subscribe(self, listener: Callable[[Event], None]) -> None:
        """Call ``listener(event)`` synchronously after every change (it may write to the store)."""
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Event], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- helpers --

    def allocate_cluster_ip(self) -> str:
        n = self._next_ip
        self._next_ip += 1
        return f"10.96.{n // 250}.{n % 250 + 1}"

    def _ns(self, rt: ResourceType, namespace: str | None) -> str:
        if not rt.namespaced:
            return ""
        return namespace or "default"

    def _require_namespace(self, ns: str) -> None:
        if ns not in self._objects["namespaces"].get("", {}):
            raise not_found(RESOURCES["namespaces"], ns)

    def _prepare(self, rt: ResourceType, obj: Obj, old: Obj | None) -> None:
        defaulter = {
            "deployments": _default_deployment,
            "jobs": _default_job,
            "pods": _default_pod,
            "namespaces": _default_namespace,
            "secrets": _default_secret,
            "services": self._default_service,
            "persistentvolumeclaims": _default_pvc,
            "gateways": lambda o, _old: gateway_api.default_gateway(o),
            "httproutes": lambda o, _old: gateway_api.default_httproute(o),
            "rolebindings": lambda o, _old: rbac.default_binding(o),
            "clusterrolebindings": lambda o, _old: rbac.default_binding(o),
        }.get(rt.plural)
        if defaulter is not None:
            defaulter(obj, old)
        validator = VALIDATORS.get(rt.plural)
        problems = validator(obj) if validator is not None else []
        if rt.plural in ("rolebindings", "clusterrolebindings"):
            problems = rbac.validate_binding(obj, rt.namespaced, old)
        if problems:
            raise invalid(rt, obj["metadata"]["name"], problems)

    def _default_service(self, obj: Obj, old: Obj | None) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if not spec.get("clusterIP"):
            old_ip = (old or {}).get("spec", {}).get("clusterIP")
            spec["clusterIP"] = old_ip or self.allocate_cluster_ip()
        if spec["clusterIP"] != "None":
            spec["clusterIPs"] = [spec["clusterIP"]]
        for p in spec.get("ports") or []:
            p.setdefault("protocol", "TCP")
            p.setdefault("targetPort", p.get("port"))

    def _emit(self, event: Event) -> None:
        self._history.append(event)
        self._pending.append(event)
        if self._emitting:
            return
        self._emitting = True
        try:
            while self._pending:
                ev = self._pending.popleft()
                self._watchers[ev.resource].offer(ev)
                for listener in list(self._listeners):
                    try:
                        listener(ev)
                    except Exception:
                        log.exception("store listener failed on %s %s", ev.type, ev.resource)
        finally:
            self._emitting = False


DELETION_FIELDS = ("deletionTimestamp", "deletionGracePeriodSeconds")  # set only by a DELETE


def _spec_of(obj: Obj) -> Obj:
    """Everything that counts for generation: all but metadata, status, kind and apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "kind", "apiVersion")}
