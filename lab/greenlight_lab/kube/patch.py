"""The three patch formats a Kubernetes API server accepts, over plain JSON values.

- ``merge_patch``: RFC 7386 JSON merge patch (``application/merge-patch+json``).
- ``json_patch``: RFC 6902 JSON patch (``application/json-patch+json``).
- ``strategic_merge_patch``: Kubernetes strategic merge patch
  (``application/strategic-merge-patch+json``) for the built-in kinds the lab serves: lists of
  containers, volumes, env, ports, ... are merged by their merge key, ``$patch: delete`` /
  ``$patch: replace`` and the ``$setElementOrder/<list>`` / ``$retainKeys`` /
  ``$deleteFromPrimitiveList/<list>`` directives that kubectl sends are honoured; any other list
  is replaced, as for fields without a patch strategy.

Every function returns a new value and leaves its inputs untouched. Malformed patches raise
``PatchError`` with a message naming what is wrong.
"""

from __future__ import annotations

import copy
from typing import Any

# Field name -> merge key, for the lists the built-in kinds merge by key.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "ownerReferences": "uid",
    "conditions": "type",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
}
# Lists of scalars merged as sets.
SET_LISTS = frozenset({"finalizers"})


class PatchError(ValueError):
    """A patch document that cannot be applied; the message says why."""


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 merge patch: objects merge recursively, null deletes, all else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 ---------------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"JSON pointer must start with '/': {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit():
        raise PatchError(f"list index must be a number, not {token!r}")
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise PatchError(f"list index {idx} out of range")
    return idx


def _parent(doc: Any, tokens: list[str]) -> Any:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise PatchError(f"path element {token!r} does not exist")
            node = node[token]
        elif isinstance(node, list):
            node = node[_index(node, token, allow_end=False)]
        else:
            raise PatchError(f"cannot descend into a scalar at {token!r}")
    return node


def _get(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"path element {last!r} does not exist")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, allow_end=False)]
    raise PatchError(f"cannot read {last!r} from a scalar")


def _add(doc: Any, tokens: list[str], value: Any) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, allow_end=True), value)
    else:
        raise PatchError(f"cannot add {last!r} to a scalar")
    return doc


def _remove(doc: Any, tokens: list[str]) -> Any:
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"cannot remove {last!r}: it does not exist")
        del parent[last]
    elif isinstance(parent, list):
        del parent[_index(parent, last, allow_end=False)]
    else:
        raise PatchError(f"cannot remove {last!r} from a scalar")
    return doc


def json_patch(target: Any, operations: Any) -> Any:
    """Apply an RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise PatchError("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"malformed JSON patch operation: {op!r}")
        kind, path = op["op"], _pointer(op["path"])
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"JSON patch operation {kind!r} needs a value")
        if kind == "add":
            doc = _add(doc, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            doc = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc = _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if path else op["value"]
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_get(doc, source))
            if kind == "move":
                doc = _remove(doc, source)
            doc = _add(doc, path, value)
        elif kind == "test":
            if _get(doc, path) != op["value"]:
                raise PatchError(f"test operation failed at {op['path']!r}")
        else:
            raise PatchError(f"unknown JSON patch operation {kind!r}")
    return doc


# --- strategic merge patch --------------------------------------------------------------------


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict)), {})
        return "containerPort" if "containerPort" in sample else "port"
    return MERGE_KEYS.get(field)


def _order(merged: list[Any], key: str, order: list[Any]) -> list[Any]:
    """Reorder keyed items as ``$setElementOrder`` lists them; unlisted items keep their place after."""
    rank = {o.get(key): i for i, o in enumerate(order) if isinstance(o, dict)}
    listed = sorted(
        (m for m in merged if isinstance(m, dict) and m.get(key) in rank), key=lambda m: rank[m[key]]
    )
    return listed + [m for m in merged if not (isinstance(m, dict) and m.get(key) in rank)]


def _merge_keyed_list(current: list[Any], patch: list[Any], key: str) -> list[Any]:
    result = [copy.deepcopy(c) for c in current]
    positions = {c.get(key): i for i, c in enumerate(result) if isinstance(c, dict)}
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"list merged by {key!r} holds a non-object: {item!r}")
        directive = item.get("$patch")
        ident = item.get(key)
        if directive == "delete":
            result = [c for c in result if not (isinstance(c, dict) and c.get(key) == ident)]
            positions = {c.get(key): i for i, c in enumerate(result) if isinstance(c, dict)}
            continue
        if directive == "replace":
            return [copy.deepcopy(i) for i in patch if isinstance(i, dict) and i.get("$patch") != "replace"]
        if ident in positions:
            result[positions[ident]] = _strategic(result[positions[ident]], item)
        else:
            positions[ident] = len(result)
            result.append(_strategic({}, item))
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if field in SET_LISTS and isinstance(current, list):
        return list(current) + [p for p in patch if p not in current]
    key = _merge_key(field, patch or (current if isinstance(current, list) else []))
    if key is None or not isinstance(current, list):
        return [
            _strategic({}, p) if isinstance(p, dict) and key is not None else copy.deepcopy(p)
            for p in patch
            if not (isinstance(p, dict) and p.get("$patch") == "delete")
        ]
    return _merge_keyed_list(current, patch, key)


def _strategic(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    base = copy.deepcopy(target) if isinstance(target, dict) and directive != "replace" else {}
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            name = key.split("/", 1)[1]
            if isinstance(base.get(name), list):
                base[name] = [v for v in base[name] if v not in value]
            continue
        if value is None:
            base.pop(key, None)
        elif isinstance(value, list):
            base[key] = _merge_list(key, base.get(key), value)
        elif isinstance(value, dict):
            merged = _strategic(base.get(key), value)
            if merged is None:
                base.pop(key, None)
            else:
                base[key] = merged
        else:
            base[key] = copy.deepcopy(value)
    for name, order in orders.items():
        current = base.get(name)
        key_name = _merge_key(name, order)
        if isinstance(current, list) and key_name is not None:
            base[name] = _order(current, key_name, order)
    if "$retainKeys" in patch:
        keep = set(patch["$retainKeys"])
        base = {k: v for k, v in base.items() if k in keep}
    return base


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    """Apply a Kubernetes strategic merge patch to a built-in object (see the module docstring)."""
    if not isinstance(patch, dict):
        raise PatchError("a strategic merge patch must be a JSON object")
    result = _strategic(target, patch)
    return {} if result is None else result
