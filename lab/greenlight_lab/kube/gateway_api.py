"""The Gateway API kinds the lab serves (``gateway.networking.k8s.io/v1`` Gateway and HTTPRoute):
the defaults and the validation that the standard CRDs' OpenAPI schemas and CEL rules give them.

What a real API server with the Gateway API CRDs installed (v1.2 standard channel,
config/crd/standard/gateway.networking.k8s.io_httproutes.yaml) answers, the lab answers:

- HTTPRoute: ``parentRefs`` at most 32, each with a ``name`` (group defaults to
  ``gateway.networking.k8s.io``, kind to ``Gateway``; ``port`` 1..65535); ``hostnames`` at most
  16, each a DNS name with an optional ``*.`` prefix (at most 253 characters); ``rules`` at most
  16 (default: one rule matching ``PathPrefix /``), each with at most 64 ``matches`` (a path
  match's type ``Exact``, ``PathPrefix`` or ``RegularExpression``, default ``PathPrefix``; its
  value default ``/``, absolute for Exact and PathPrefix) and at most 16 ``backendRefs``: ``name``
  required, ``group`` default ``""``, ``kind`` default ``Service``, ``weight`` an integer 0..1000000
  (default 1), ``port`` 1..65535 and required for a Service (CEL: "Must have port for Service
  reference").
- Gateway: ``gatewayClassName`` required; ``listeners`` 1..64, each with ``name``, ``port``
  (1..65535) and ``protocol``; ``allowedRoutes`` defaults to routes from the same namespace.

A violation is a 422 Invalid whose ``details.causes[].field`` names the field as the API
server does (``spec.rules[0].backendRefs[0].weight``), with the schema validator's messages.
Defaults are applied before validation and only where the value has the right type, as the
API server's structural defaulting does (a string weight stays a string and is refused).
"""

from __future__ import annotations

import re
from typing import Any

Obj = dict[str, Any]
Cause = tuple[str, str, str]  # (field, reason, message), as store.invalid takes them

GROUP = "gateway.networking.k8s.io"
MAX_PARENT_REFS = 32
MAX_HOSTNAMES = 16
MAX_RULES = 16
MAX_MATCHES = 64
MAX_BACKEND_REFS = 16
MAX_LISTENERS = 64
MAX_WEIGHT = 1_000_000
HOSTNAME_PATTERN = r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
_HOSTNAME_RE = re.compile(HOSTNAME_PATTERN)
PATH_MATCH_TYPES = ("Exact", "PathPrefix", "RegularExpression")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if value is None:
        return "null"
    return "object"


def _type_problem(path: str, value: Any, wanted: str) -> Cause | None:
    got = _json_type(value)
    if got == wanted or (wanted == "number" and got == "integer"):
        return None
    return (
        path,
        "FieldValueTypeInvalid",
        f'Invalid value: "{got}": {path} in body must be of type {wanted}: "{got}"',
    )


def _int_field(path: str, value: Any, lo: int, hi: int) -> list[Cause]:
    problem = _type_problem(path, value, "integer")
    if problem is not None:
        return [problem]
    if value < lo:
        return [
            (
                path,
                "FieldValueInvalid",
                f"Invalid value: {value}: {path} in body should be greater than or equal to {lo}",
            )
        ]
    if value > hi:
        return [
            (
                path,
                "FieldValueInvalid",
                f"Invalid value: {value}: {path} in body should be less than or equal to {hi}",
            )
        ]
    return []


def _name_field(path: str, value: Any, *, required: bool = True) -> list[Cause]:
    if value is None:
        return [(path, "FieldValueRequired", "Required value")] if required else []
    problem = _type_problem(path, value, "string")
    if problem is not None:
        return [problem]
    if not value:
        return [
            (path, "FieldValueInvalid", f'Invalid value: "": {path} in body should be at least 1 chars long')
        ]
    if len(value) > 253:
        return [(path, "FieldValueTooLong", "Too long: may not be more than 253 bytes")]
    return []


def _list_field(
    path: str, value: Any, max_items: int, *, min_items: int = 0
) -> tuple[list[Any], list[Cause]]:
    """The items of a list field (empty when absent or of the wrong type) and its problems."""
    if value is None:
        return [], []
    problem = _type_problem(path, value, "array")
    if problem is not None:
        return [], [problem]
    causes: list[Cause] = []
    if len(value) > max_items:
        causes.append(
            (path, "FieldValueTooMany", f"Too many: {len(value)}: must have at most {max_items} items")
        )
    if len(value) < min_items:
        causes.append(
            (
                path,
                "FieldValueInvalid",
                f"Invalid value: {len(value)}: {path} in body should have at least {min_items} items",
            )
        )
    return list(value), causes


# --- HTTPRoute --------------------------------------------------------------------------------


def default_httproute(obj: Obj) -> None:
    """Apply the HTTPRoute CRD's defaults in place (only where the types fit)."""
    spec = obj.get("spec")
    if spec is None:
        spec = obj["spec"] = {}
    if not isinstance(spec, dict):
        return
    parents = spec.get("parentRefs")
    for ref in parents if isinstance(parents, list) else []:
        if isinstance(ref, dict):
            ref.setdefault("group", GROUP)
            ref.setdefault("kind", "Gateway")
    if "rules" not in spec:
        spec["rules"] = [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}]
    rules = spec.get("rules")
    if not isinstance(rules, list):
        return
    for rule in rules:
        if not isinstance(rule, dict):
            continue
        if "matches" not in rule:
            rule["matches"] = [{"path": {"type": "PathPrefix", "value": "/"}}]
        for match in rule["matches"] if isinstance(rule["matches"], list) else []:
            if isinstance(match, dict) and "path" not in match:
                match["path"] = {"type": "PathPrefix", "value": "/"}
            path = match.get("path") if isinstance(match, dict) else None
            if isinstance(path, dict):
                path.setdefault("type", "PathPrefix")
                path.setdefault("value", "/")
        refs = rule.get("backendRefs")
        for ref in refs if isinstance(refs, list) else []:
            if isinstance(ref, dict):
                ref.setdefault("group", "")
                ref.setdefault("kind", "Service")
                ref.setdefault("weight", 1)


def _parent_ref_problems(path: str, ref: Any) -> list[Cause]:
    problem = _type_problem(path, ref, "object")
    if problem is not None:
        return [problem]
    causes = _name_field(f"{path}.name", ref.get("name"))
    if "port" in ref:
        causes += _int_field(f"{path}.port", ref["port"], 1, 65535)
    return causes


def _backend_ref_problems(path: str, ref: Any) -> list[Cause]:
    problem = _type_problem(path, ref, "object")
    if problem is not None:
        return [problem]
    causes = _name_field(f"{path}.name", ref.get("name"))
    if "weight" in ref:
        causes += _int_field(f"{path}.weight", ref["weight"], 0, MAX_WEIGHT)
    if "port" in ref:
        causes += _int_field(f"{path}.port", ref["port"], 1, 65535)
    if ref.get("group", "") == "" and ref.get("kind", "Service") == "Service" and "port" not in ref:
        causes.append(
            (path, "FieldValueInvalid", 'Invalid value: "object": Must have port for Service reference')
        )
    return causes


def _match_problems(path: str, match: Any) -> list[Cause]:
    problem = _type_problem(path, match, "object")
    if problem is not None:
        return [problem]
    pm = match.get("path")
    if pm is None:
        return []
    problem = _type_problem(f"{path}.path", pm, "object")
    if problem is not None:
        return [problem]
    kind, value = pm.get("type"), pm.get("value")
    if kind not in PATH_MATCH_TYPES:
        supported = ", ".join(f'"{t}"' for t in PATH_MATCH_TYPES)
        return [
            (
                f"{path}.path.type",
                "FieldValueNotSupported",
                f'Unsupported value: "{kind}": supported values: {supported}',
            )
        ]
    problem = _type_problem(f"{path}.path.value", value, "string")
    if problem is not None:
        return [problem]
    if len(value) > 1024:
        return [(f"{path}.path.value", "FieldValueTooLong", "Too long: may not be more than 1024 bytes")]
    if kind in ("Exact", "PathPrefix") and not value.startswith("/"):
        return [
            (
                f"{path}.path",
                "FieldValueInvalid",
                "Invalid value: \"object\": value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
            )
        ]
    return []


def validate_httproute(obj: Obj) -> list[Cause]:
    """Every schema problem of an HTTPRoute (already defaulted), as (field, reason, message)."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [_type_problem("spec", spec, "object") or ("spec", "FieldValueRequired", "Required value")]
    causes: list[Cause] = []
    parents, found = _list_field("spec.parentRefs", spec.get("parentRefs"), MAX_PARENT_REFS)
    causes += found
    for i, ref in enumerate(parents):
        causes += _parent_ref_problems(f"spec.parentRefs[{i}]", ref)
    hostnames, found = _list_field("spec.hostnames", spec.get("hostnames"), MAX_HOSTNAMES)
    causes += found
    for i, host in enumerate(hostnames):
        path = f"spec.hostnames[{i}]"
        problem = _type_problem(path, host, "string")
        if problem is not None:
            causes.append(problem)
        elif len(host) > 253:
            causes.append((path, "FieldValueTooLong", "Too long: may not be more than 253 bytes"))
        elif not _HOSTNAME_RE.match(host):
            causes.append(
                (
                    path,
                    "FieldValueInvalid",
                    f"Invalid value: \"{host}\": {path} in body should match '{HOSTNAME_PATTERN}'",
                )
            )
    rules, found = _list_field("spec.rules", spec.get("rules"), MAX_RULES)
    causes += found
    for i, rule in enumerate(rules):
        rpath = f"spec.rules[{i}]"
        problem = _type_problem(rpath, rule, "object")
        if problem is not None:
            causes.append(problem)
            continue
        matches, found = _list_field(f"{rpath}.matches", rule.get("matches"), MAX_MATCHES)
        causes += found
        for j, match in enumerate(matches):
            causes += _match_problems(f"{rpath}.matches[{j}]", match)
        refs, found = _list_field(f"{rpath}.backendRefs", rule.get("backendRefs"), MAX_BACKEND_REFS)
        causes += found
        for j, ref in enumerate(refs):
            causes += _backend_ref_problems(f"{rpath}.backendRefs[{j}]", ref)
    return causes


# --- Gateway ----------------------------------------------------------------------------------


def default_gateway(obj: Obj) -> None:
    """Apply the Gateway CRD's defaults in place: each listener takes routes from its namespace."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    listeners = spec.get("listeners")
    for listener in listeners if isinstance(listeners, list) else []:
        if isinstance(listener, dict):
            allowed = listener.setdefault("allowedRoutes", {})
            if isinstance(allowed, dict):
                namespaces = allowed.setdefault("namespaces", {})
                if isinstance(namespaces, dict):
                    namespaces.setdefault("from", "Same")


def validate_gateway(obj: Obj) -> list[Cause]:
    """Every schema problem of a Gateway (already defaulted)."""
    spec = obj.get("spec")
    if spec is None:
        return [("spec", "FieldValueRequired", "Required value")]
    problem = _type_problem("spec", spec, "object")
    if problem is not None:
        return [problem]
    causes = _name_field("spec.gatewayClassName", spec.get("gatewayClassName"))
    if spec.get("listeners") is None:
        return [*causes, ("spec.listeners", "FieldValueRequired", "Required value")]
    listeners, found = _list_field("spec.listeners", spec.get("listeners"), MAX_LISTENERS, min_items=1)
    causes += found
    for i, listener in enumerate(listeners):
        path = f"spec.listeners[{i}]"
        problem = _type_problem(path, listener, "object")
        if problem is not None:
            causes.append(problem)
            continue
        causes += _name_field(f"{path}.name", listener.get("name"))
        if listener.get("port") is None:
            causes.append((f"{path}.port", "FieldValueRequired", "Required value"))
        else:
            causes += _int_field(f"{path}.port", listener["port"], 1, 65535)
        if not listener.get("protocol"):
            causes.append((f"{path}.protocol", "FieldValueRequired", "Required value"))
        allowed_from = ((listener.get("allowedRoutes") or {}).get("namespaces") or {}).get("from")
        if allowed_from not in (None, "All", "Same", "Selector"):
            causes.append(
                (
                    f"{path}.allowedRoutes.namespaces.from",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{allowed_from}": supported values: "All", "Selector", "Same"',
                )
            )
    return causes
