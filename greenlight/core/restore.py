"""Config restore decisions as pure functions: is a bundle whole and ours, what would change, what to apply.

Nothing here does I/O. The flow (``flows/config_restore.py``) reads the bundle and the cluster and
asks the API server for a dry run; these functions turn what it saw into values and reasons:

- :func:`check_bundle_objects` refuses a bundle (:class:`BackupInvalid`, naming each file and its
  problem) that is corrupted (a path outside the bundle, unparsable JSON, a kind the backup does
  not export, an object of another namespace, a Secret that holds values) or foreign
  (:func:`check_owner`: made for another environment, namespace or cluster).
- :func:`restore_body` is an object as the target namespace gets it; :func:`update_body` the
  same over the live object (keeping what the cluster assigned: resourceVersion, cluster IPs,
  node ports, the replicas an HPA set, the cluster's own annotations) and, with
  :func:`keep_live_traffic`, where live traffic goes: a restore writes configuration, it never
  moves traffic (that is a switch's, with its gate and its record).
- :func:`comparable` strips what the server manages, so :func:`field_diff` between the live object
  and the server's dry-run answer shows only what the restore would change.
- :func:`decide` gives one :class:`Item` per object: create, update, unchanged; for Secrets,
  create-without-values (type and keys, each value empty) or left-alone (never overwritten).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from greenlight.core.backups import EXPORT_KINDS, bundle_path, unsafe_path_reason
from greenlight.core.drill import (
    CLUSTER_ANNOTATIONS,
    CLUSTER_CONFIGMAPS,
    GENERATED_SECRET_TYPES,
    SERVICE_ASSIGNED,
)
from greenlight.core.report import table_cell
from greenlight.errors import BackupInvalid, NotFound

#: on a Secret the restore created: its keys, each with an empty value for a person to fill in
RESTORED_WITHOUT_VALUES = "greenlight.dev/restored-without-values"
#: the order objects are applied in: Secrets and ConfigMaps before the Deployments that mount them
RESTORE_ORDER: tuple[str, ...] = (
    "secrets",
    "configmaps",
    "services",
    "httproutes",
    "deployments",
    "horizontalpodautoscalers",
    "ingresses",
)
#: the kinds a restore may replace: every kind it restores but Secrets, which it only ever creates
REPLACED_KINDS: tuple[str, ...] = tuple(p for p in RESTORE_ORDER if p != "secrets")
KINDS = {k.kind: k for k in EXPORT_KINDS}
#: metadata a restore writes; the rest (uid, resourceVersion, owners, finalizers...) is the cluster's
METADATA_KEPT = ("name", "namespace", "labels", "annotations")
MAX_PROBLEMS_SHOWN = 10
RECENT_SHOWN = 5

Action = Literal["create", "update", "unchanged", "create-without-values", "left-alone", "skip"]
WRITES: frozenset[str] = frozenset({"create", "update", "create-without-values"})


@dataclass(frozen=True)
class Owner:
    """Whose a bundle is: the environment, its namespace and its cluster (the profile's kube context,
    or ``in-cluster``)."""

    environment: str
    namespace: str
    cluster: str


@dataclass(frozen=True)
class BundleObject:
    """One object of a verified bundle: its file, API plural, kind, name and body as exported."""

    path: str
    plural: str
    kind: str
    name: str
    body: dict[str, Any]


# --- choosing and checking a bundle ---------------------------------------------------------------------


def choose_bundle(complete: Sequence[str], wanted: str | None, where: str) -> str:
    """The bundle stamp to restore: ``wanted``, else the newest of ``complete``.

    NotFound names the most recent bundles that exist when ``wanted`` is not one of them (or
    when there is none at all)."""
    ordered = sorted(set(complete), reverse=True)
    if wanted is None:
        if not ordered:
            raise NotFound(f"no complete config bundle under {where} (run `greenlight backup-config` first)")
        return ordered[0]
    stamp = wanted.strip("/").rsplit("/", 1)[-1]
    if stamp in ordered:
        return stamp
    recent = ", ".join(ordered[:RECENT_SHOWN]) or "none"
    more = f" (and {len(ordered) - RECENT_SHOWN} older)" if len(ordered) > RECENT_SHOWN else ""
    raise NotFound(f"no complete config bundle {wanted!r} under {where}; the most recent: {recent}{more}")


def index_path_problems(index: Mapping[str, Any]) -> list[str]:
    """Each index entry whose path could leave the bundle or is not where config-backup puts its kind."""
    problems = []
    files = index.get("files")
    if not isinstance(files, list):
        return ["index.json: 'files' is not a list"]
    for i, entry in enumerate(files):
        if not isinstance(entry, dict) or not {"path", "kind", "name", "size", "sha256"} <= set(entry):
            problems.append(f"index.json: entry {i} lacks path, kind, name, size or sha256")
            continue
        path, kind, name = str(entry["path"]), str(entry["kind"]), str(entry["name"])
        why = unsafe_path_reason(path)
        if why:
            problems.append(f"{path!r} (index.json) {why}: it is outside the bundle")
        elif kind not in KINDS:
            problems.append(f"{path}: kind {kind!r} is not one config-backup exports ({', '.join(KINDS)})")
        elif path != bundle_path(KINDS[kind], name):
            problems.append(f"{path}: a {kind} named {name!r} belongs at {bundle_path(KINDS[kind], name)}")
    return problems


def check_owner(index: Mapping[str, Any], expected: Owner) -> list[str]:
    """Raise BackupInvalid when the index says the bundle belongs to another environment, namespace or
    cluster; the notes about what could not be checked.

    An index without ``environment`` or ``namespace`` was not written by config-backup (every
    version recorded both) and is refused. One without ``cluster`` predates its recording: it is
    checked by environment and namespace only, and the note says so.
    """
    foreign = []
    for key, want in (("environment", expected.environment), ("namespace", expected.namespace)):
        got = index.get(key)
        if not got:
            foreign.append(f"index.json does not say which {key} it belongs to")
        elif got != want:
            foreign.append(f"index.json: made for {key} {got!r}, not {want!r}")
    notes = []
    cluster = index.get("cluster")
    if cluster is None:
        notes.append(
            "index.json records no cluster (written before config-backup recorded it): "
            "checked by environment and namespace only"
        )
    elif cluster != expected.cluster:
        foreign.append(f"index.json: made for cluster {cluster!r}, not {expected.cluster!r}")
    if foreign:
        raise BackupInvalid("foreign config bundle: " + "; ".join(foreign))
    return notes


def object_problems(path: str, entry: Mapping[str, Any], raw: bytes, namespace: str) -> tuple[Any, list[str]]:
    """(the parsed object, the problems of file ``path``): JSON, kind, apiVersion, name, namespace, Secret values.

    A problem never quotes a value of the file (a crafted Secret could hold one)."""
    try:
        obj = json.loads(raw)
    except ValueError as e:
        return None, [f"{path}: not valid JSON ({type(e).__name__} at position {getattr(e, 'pos', '?')})"]
    if not isinstance(obj, dict):
        return None, [f"{path}: not a JSON object"]
    kind = KINDS.get(str(obj.get("kind")))
    problems = []
    if kind is None:
        problems.append(f"{path}: kind {str(obj.get('kind'))[:40]!r} is not one config-backup exports")
        return obj, problems
    if obj.get("kind") != entry.get("kind"):
        problems.append(f"{path}: holds a {kind.kind}, index.json says {entry.get('kind')}")
    if obj.get("apiVersion") != kind.api_version:
        problems.append(f"{path}: apiVersion is not {kind.api_version}")
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or meta.get("name") != entry.get("name"):
        problems.append(f"{path}: metadata.name is not {entry.get('name')!r} (the index's)")
        meta = meta if isinstance(meta, dict) else {}
    ns = meta.get("namespace")
    if ns is not None and ns != namespace:
        problems.append(f"{path}: an object of namespace {str(ns)[:63]!r}, not {namespace!r}")
    if kind.kind == "Secret":
        if "data" in obj or "stringData" in obj:
            problems.append(f"{path}: a Secret holding values (a bundle keeps keys only): refused unread")
        keys = obj.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            problems.append(f"{path}: a Secret without its list of keys")
    return obj, problems


def check_bundle_objects(
    index: Mapping[str, Any], files: Mapping[str, bytes], namespace: str
) -> list[BundleObject]:
    """Every object of a bundle whose files already matched their sha256, parsed and checked; BackupInvalid
    naming each file and its problem (see :func:`object_problems`)."""
    objects: list[BundleObject] = []
    problems: list[str] = []
    for entry in index.get("files") or []:
        path = str(entry["path"])
        obj, found = object_problems(path, entry, files[path], namespace)
        problems += found
        if not found:
            kind = KINDS[obj["kind"]]
            objects.append(BundleObject(path, kind.plural, kind.kind, str(obj["metadata"]["name"]), obj))
    if problems:
        raise BackupInvalid("corrupted config bundle: " + limit(problems))
    return sorted(objects, key=lambda o: (RESTORE_ORDER.index(o.plural), o.name))


def limit(problems: Sequence[str], shown: int = MAX_PROBLEMS_SHOWN) -> str:
    more = f"; and {len(problems) - shown} more" if len(problems) > shown else ""
    return "; ".join(problems[:shown]) + more


# --- bodies -------------------------------------------------------------------------------------------


def skip_reason(obj: BundleObject) -> str | None:
    """Why an object of the bundle is not restored (its cluster makes its own), or None."""
    if obj.kind == "ConfigMap" and obj.name in CLUSTER_CONFIGMAPS:
        return "made by every cluster for each namespace"
    if obj.kind == "Secret" and str(obj.body.get("type") or "Opaque") in GENERATED_SECRET_TYPES:
        return "a token the cluster generates"
    return None


def _metadata(meta: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": meta["name"], "namespace": namespace}
    if meta.get("labels"):
        out["labels"] = dict(meta["labels"])
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in CLUSTER_ANNOTATIONS}
    if annotations:
        out["annotations"] = annotations
    return out


def restore_body(obj: BundleObject, namespace: str, same_namespace: bool) -> dict[str, Any]:
    """The object as ``namespace`` gets it when it is missing there.

    Metadata is name, labels and annotations only (the cluster's own annotations dropped). A
    Service loses what its cluster assigns (cluster IPs, health-check port, load-balancer IP) and,
    restored into another namespace than its own, its node ports (they are cluster-wide). A Secret
    is its type and keys, each value empty, annotated with :data:`RESTORED_WITHOUT_VALUES`.
    """
    body = copy.deepcopy(obj.body)
    meta = _metadata(body.get("metadata") or {}, namespace)
    if obj.kind == "Secret":
        keys = sorted(str(k) for k in body.get("keys") or [])
        meta["annotations"] = {**meta.get("annotations", {}), RESTORED_WITHOUT_VALUES: ",".join(keys)}
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta,
            "type": str(body.get("type") or "Opaque"),
            "data": {k: "" for k in keys},
        }
    body.pop("status", None)
    body["metadata"] = meta
    spec = body.get("spec")
    if obj.kind == "Service" and isinstance(spec, dict):
        for key in SERVICE_ASSIGNED:
            spec.pop(key, None)
        if not same_namespace:
            spec["ports"] = [{k: v for k, v in p.items() if k != "nodePort"} for p in spec.get("ports") or []]
    return body


def hpa_targets(objects: Sequence[BundleObject]) -> set[str]:
    """The Deployments an HPA of the bundle scales: their live replicas are the HPA's, not the bundle's."""
    out = set()
    for o in objects:
        if o.kind == "HorizontalPodAutoscaler":
            ref = (o.body.get("spec") or {}).get("scaleTargetRef") or {}
            if ref.get("kind") == "Deployment" and ref.get("name"):
                out.add(str(ref["name"]))
    return out


def keep_live_traffic(body: dict[str, Any], live: Mapping[str, Any], colour_label: str) -> list[str]:
    """In ``body`` (to be written over ``live``), keep where live traffic goes; what was kept that
    the bundle would have changed, in words (empty: the bundle agrees with the cluster).

    A Service keeps the live value of ``colour_label`` in its selector (the colour it serves); an
    HTTPRoute keeps the live weight of every backendRef of each rule that names the same backends
    in the bundle and in the cluster (a rule whose backends differ is the bundle's to restore).
    """
    spec, live_spec = body.get("spec"), live.get("spec") or {}
    if not isinstance(spec, dict):
        return []
    kept: list[str] = []
    if body.get("kind") == "Service":
        selector, live_selector = spec.get("selector"), live_spec.get("selector") or {}
        if isinstance(selector, dict) and colour_label in selector and colour_label in live_selector:
            if selector[colour_label] != live_selector[colour_label]:
                kept.append(
                    f"selector {colour_label}={live_selector[colour_label]} (the bundle has {selector[colour_label]})"
                )
            selector[colour_label] = live_selector[colour_label]
    elif body.get("kind") == "HTTPRoute":
        rules, live_rules = spec.get("rules") or [], live_spec.get("rules") or []
        # rules are matched by position; the rules one side has beyond the other's are the bundle's
        for i, (rule, live_rule) in enumerate(zip(rules, live_rules, strict=False)):
            refs = rule.get("backendRefs") or []
            live_refs = {r.get("name"): r for r in live_rule.get("backendRefs") or []}
            if sorted(str(r.get("name")) for r in refs) != sorted(str(n) for n in live_refs):
                continue
            for ref in refs:
                now = live_refs[ref.get("name")]
                if now.get("weight", 1) != ref.get("weight", 1):
                    kept.append(
                        f"rules[{i}] {ref.get('name')} weight {now.get('weight', 1)} (the bundle has {ref.get('weight', 1)})"
                    )
                if "weight" in now:
                    ref["weight"] = now["weight"]
                else:
                    ref.pop("weight", None)
    return kept


def update_body(
    desired: Mapping[str, Any],
    live: Mapping[str, Any],
    keep_replicas: bool = False,
    colour_label: str | None = None,
) -> dict[str, Any]:
    """``desired`` written over ``live``: the bundle's labels, annotations and spec, with what the cluster
    owns kept from ``live`` (its metadata, resourceVersion as the write's precondition, the annotations
    the bundle does not name; a Service's cluster IPs and node ports; with ``keep_replicas``, a
    Deployment's replicas; with ``colour_label``, where live traffic goes: :func:`keep_live_traffic`)."""
    body = copy.deepcopy(dict(desired))
    live_meta = dict(live.get("metadata") or {})
    meta = {k: v for k, v in live_meta.items() if k not in ("labels", "annotations", "managedFields")}
    if desired["metadata"].get("labels"):
        meta["labels"] = dict(desired["metadata"]["labels"])
    # annotations the bundle does not name stay (controllers and the cluster write their own, as
    # kubectl apply leaves them); the bundle's win where both name one
    annotations = dict(live_meta.get("annotations") or {})
    annotations.update(desired["metadata"].get("annotations") or {})
    if annotations:
        meta["annotations"] = annotations
    body["metadata"] = meta
    spec, live_spec = body.get("spec"), live.get("spec") or {}
    if body.get("kind") == "Service" and isinstance(spec, dict):
        for key in SERVICE_ASSIGNED:
            if key in live_spec:
                spec[key] = copy.deepcopy(live_spec[key])
        assigned = {(p.get("name"), p.get("port")): p.get("nodePort") for p in live_spec.get("ports") or []}
        for p in spec.get("ports") or []:
            node_port = assigned.get((p.get("name"), p.get("port")))
            if node_port and "nodePort" not in p:
                p["nodePort"] = node_port
    if (
        keep_replicas
        and body.get("kind") == "Deployment"
        and isinstance(spec, dict)
        and "replicas" in live_spec
    ):
        spec["replicas"] = live_spec["replicas"]
    if colour_label is not None:
        keep_live_traffic(body, live, colour_label)
    return body


# --- comparing ----------------------------------------------------------------------------------------


def comparable(obj: Mapping[str, Any]) -> dict[str, Any]:
    """``obj`` without what the server manages: status, every metadata field but name, namespace, labels
    and annotations, the cluster's annotations, a Service's assigned IPs."""
    out = {k: copy.deepcopy(v) for k, v in obj.items() if k != "status"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k in METADATA_KEPT}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in CLUSTER_ANNOTATIONS}
    meta.pop("annotations", None)
    if annotations:
        meta["annotations"] = annotations
    if not meta.get("labels"):
        meta.pop("labels", None)
    out["metadata"] = meta
    spec = out.get("spec")
    if obj.get("kind") == "Service" and isinstance(spec, dict):
        for key in ("clusterIP", "clusterIPs"):
            spec.pop(key, None)
    return out


@dataclass(frozen=True)
class FieldChange:
    """One field the restore would change: its path (``spec.template.spec.containers[backend].image``)."""

    path: str
    before: Any
    after: Any

    def line(self) -> str:
        return f"{self.path}: {_short(self.before)} -> {_short(self.after)}"


class _Missing:
    """A field one side of a diff does not have."""

    def __repr__(self) -> str:
        return "(unset)"


MISSING: Any = _Missing()


def _short(value: Any, width: int = 80) -> str:
    if value is MISSING:
        return "(unset)"
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _named(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def field_diff(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """Each leaf that differs between ``before`` and ``after``; lists of named items (containers, ports,
    env) are matched by name, other lists of the same length by position, else compared whole."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out += field_diff(before.get(key, MISSING), after.get(key, MISSING), sub)
        return out
    if isinstance(before, list) and isinstance(after, list) and before != after:
        names_b = [i["name"] for i in before] if _named(before) else []
        names_a = [i["name"] for i in after] if _named(after) else []
        if names_b and names_a and len(set(names_b)) == len(names_b) and len(set(names_a)) == len(names_a):
            b, a = dict(zip(names_b, before, strict=True)), dict(zip(names_a, after, strict=True))
            out = []
            for name in [*names_b, *[n for n in names_a if n not in b]]:
                out += field_diff(b.get(name, MISSING), a.get(name, MISSING), f"{path}[{name}]")
            if not out and names_b != names_a:
                out.append(FieldChange(f"{path} (order)", names_b, names_a))
            return out
        if len(before) == len(after):
            out = []
            for i, (x, y) in enumerate(zip(before, after, strict=True)):
                out += field_diff(x, y, f"{path}[{i}]")
            return out
    if before == after:
        return []
    return [FieldChange(path or "(object)", before, after)]


# --- deciding --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """What the cluster said about one object: the live object (a Secret: its type and keys only), its
    resourceVersion, and the server's dry-run answer to the write the restore would make."""

    live: dict[str, Any] | None
    resource_version: str | None
    dry_run: dict[str, Any] | None


@dataclass(frozen=True)
class Item:
    """One object of the restore: what it would do and why, the field changes, and the write itself."""

    plural: str
    name: str
    action: Action
    detail: str = ""
    changes: tuple[FieldChange, ...] = ()
    body: dict[str, Any] | None = None  # what is written: created, or replaced under resource_version
    resource_version: str | None = None  # the live version the dry run saw: the write's precondition
    keys: tuple[str, ...] = ()  # a Secret's keys (to fill in, or that the live Secret lacks)

    @property
    def ref(self) -> str:
        return f"{self.plural}/{self.name}"

    @property
    def writes(self) -> bool:
        return self.action in WRITES

    def line(self) -> str:
        return f"{self.action:<21} {self.ref}" + (f": {self.detail}" if self.detail else "")


def secret_keys(live: Mapping[str, Any]) -> list[str]:
    """A Secret's keys (``data`` and ``stringData``), never its values."""
    return sorted(set(live.get("data") or {}) | set(live.get("stringData") or {}))


def decide_secret(obj: BundleObject, body: dict[str, Any], live_keys: Sequence[str] | None) -> Item:
    """A Secret is created with its keys and empty values when missing; an existing one is never changed."""
    keys = tuple(sorted(str(k) for k in obj.body.get("keys") or []))
    if live_keys is None:
        return Item(
            obj.plural,
            obj.name,
            "create-without-values",
            f"fill in keys {', '.join(keys)}" if keys else "it has no keys",
            body=body,
            keys=keys,
        )
    lacking = tuple(k for k in keys if k not in set(live_keys))
    detail = "exists: never overwritten" + (
        f"; lacks key(s) the bundle has: {', '.join(lacking)}" if lacking else ""
    )
    return Item(obj.plural, obj.name, "left-alone", detail, keys=lacking)


def decide(obj: BundleObject, body: dict[str, Any], seen: Observed) -> Item:
    """create / update (with the field changes) / unchanged for a non-Secret object from what the cluster said."""
    if seen.live is None:
        return Item(obj.plural, obj.name, "create", "missing in the cluster", body=body)
    after = comparable(seen.dry_run if seen.dry_run is not None else body)
    changes = tuple(field_diff(comparable(seen.live), after))
    if not changes:
        return Item(obj.plural, obj.name, "unchanged", resource_version=seen.resource_version)
    return Item(
        obj.plural,
        obj.name,
        "update",
        f"{len(changes)} field(s) differ",
        changes,
        body=body,
        resource_version=seen.resource_version,
    )


@dataclass(frozen=True)
class RestorePlan:
    """Every object of the bundle with what the restore does to it, and notes about the bundle."""

    items: tuple[Item, ...]
    notes: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        out = {a: 0 for a in ("create", "update", "unchanged", "create-without-values", "left-alone", "skip")}
        for i in self.items:
            out[i.action] += 1
        return out

    @property
    def writes(self) -> list[Item]:
        return [i for i in self.items if i.writes]


def summary(counts: Mapping[str, int]) -> str:
    """``2 created, 1 changed, 9 left alone (1 Secret created without values, ...)``."""
    created, changed = counts.get("create", 0), counts.get("update", 0)
    secrets = counts.get("create-without-values", 0)
    alone = counts.get("unchanged", 0) + counts.get("left-alone", 0) + counts.get("skip", 0)
    text = f"{created + secrets} created, {changed} changed, {alone} left alone"
    extra = []
    if secrets:
        extra.append(f"{secrets} Secret(s) created without values")
    if counts.get("left-alone"):
        extra.append(f"{counts['left-alone']} existing Secret(s) never overwritten")
    if counts.get("skip"):
        extra.append(f"{counts['skip']} made by the cluster itself")
    return text + (f" ({'; '.join(extra)})" if extra else "")


def render_report(title: str, outcome: str, facts: Mapping[str, Any], plan: RestorePlan) -> str:
    """The restore's markdown artifact: outcome, counts, every object with its action and field changes."""
    lines = [f"# {title}", "", f"**{outcome}**", "", "| | |", "|---|---|"]
    lines += [f"| {table_cell(str(k))} | {table_cell(str(v))} |" for k, v in facts.items()]
    lines += ["", "| object | action | detail |", "|---|---|---|"]
    lines += [f"| {table_cell(i.ref)} | {i.action} | {table_cell(i.detail)} |" for i in plan.items]
    changed = [i for i in plan.items if i.changes]
    if changed:
        lines += ["", "## Field changes"]
        for i in changed:
            lines += ["", f"### {i.ref}", "", "```", *[c.line() for c in i.changes], "```"]
    if plan.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in plan.notes]]
    return "\n".join(lines) + "\n"
