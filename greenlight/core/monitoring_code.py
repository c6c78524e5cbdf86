"""Monitoring as code: alert policies and uptime checks as files, their drift from a project.

Pure logic over plain dicts in the API's own field names (``MessageToDict`` with
``preserving_proto_field_name``): the client turns protos into such dicts and back, and the
command and flow read files and act. Nothing here does I/O.

A **definition file** is one YAML document::

    kind: AlertPolicy            # or UptimeCheckConfig
    id: cpu-high                 # its identity: the user label greenlight_id
    spec:                        # the resource as the API names its fields
      display_name: "{environment}: CPU above 80 %"
      ...

**Placeholders** in any string of ``spec`` come from a fixed set (:data:`PLACEHOLDERS`), filled
from the environment's profile; ``{{`` and ``}}`` are literal braces; an unknown name, a lone
brace or a placeholder whose value the profile does not set is refused, naming the file and
where. ``{notification_channels}`` is a list: it must be a whole value on its own.

**Identity.** Every definition carries ``user_labels.greenlight_id = <id>`` and
``user_labels.greenlight_environment = <environment>`` (environments may share a project; a
resource labelled for another environment is never this one's). A resource in the
project is the definition's when it has that label; a resource without the label whose
``display_name`` is the definition's is adopted (apply adds the label; until then diff shows the
label as the change). A rename is a change of ``display_name``, not a new resource.

**Drift** is judged on the top-level fields a definition sets (the update mask is the ones that
differ); fields it leaves out are the project's own. Server-owned fields (``name``,
``creation_record``, ``mutation_record``, the conditions' ``name``) are never compared.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from greenlight.errors import Conflict, InputInvalid

ALERT_POLICY = "AlertPolicy"
UPTIME_CHECK = "UptimeCheckConfig"
KINDS = (ALERT_POLICY, UPTIME_CHECK)
ID_LABEL = "greenlight_id"
#: the environment a definition was applied for: several environments may share one project
ENV_LABEL = "greenlight_environment"
#: a definition's id: a valid user label value, and a file name
ID_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
#: the placeholders a definition may use, each filled from the profile
PLACEHOLDERS = (
    "environment",
    "project",
    "namespace",
    "cluster",
    "backend_host",
    "frontend_host",
    "database_id",
    "status_label",
    "notification_channels",
)
#: the profile field each placeholder comes from (for messages)
PLACEHOLDER_FIELDS = {
    "environment": "name",
    "project": "monitoring.project",
    "namespace": "namespace",
    "cluster": "monitoring_code.cluster",
    "backend_host": "monitoring_code.backend_host",
    "frontend_host": "monitoring_code.frontend_host",
    "database_id": "monitoring_code.database_id",
    "status_label": "monitoring.status_label",
    "notification_channels": "monitoring_code.notification_channels",
}
LIST_PLACEHOLDERS = frozenset({"notification_channels"})
#: the placeholders export writes back in place of their values (status_label is left out: its
#: usual values, `code` and `status`, are ordinary words)
EXPORTED_PLACEHOLDERS = (
    "database_id", "project", "backend_host", "frontend_host", "namespace", "cluster", "environment",
)  # fmt: skip
#: fields the server fills and owns, per kind (never compared, never written)
SERVER_OWNED = {
    ALERT_POLICY: ("name", "creation_record", "mutation_record"),
    UPTIME_CHECK: ("name",),
}
ALLOWED_UPTIME_PERIODS = ("60s", "300s", "600s", "900s")
CONDITION_KINDS = (
    "condition_threshold",
    "condition_absent",
    "condition_matched_log",
    "condition_monitoring_query_language",
    "condition_prometheus_query_language",
    "condition_sql",
)
MAX_CONDITIONS = 6

Values = Mapping[str, "str | list[str] | None"]
Action = Literal["create", "update", "unchanged", "orphaned", "unmanaged"]
#: actions that are drift: diff exits non-zero when one is planned
DRIFT: frozenset[str] = frozenset({"create", "update", "orphaned"})

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


# ---------------------------------------------------------------------------------------------
# Placeholders
# ---------------------------------------------------------------------------------------------


def render_string(text: str, values: Values, where: str) -> str | list[str]:
    """``text`` with its placeholders filled; a whole-value list placeholder gives the list.

    Raises InputInvalid naming ``where`` for an unknown placeholder, a lone brace, a list
    placeholder inside other text, or a placeholder whose value is not set.
    """
    whole = re.fullmatch(r"\{([a-z_]+)\}", text)
    if whole and whole.group(1) in LIST_PLACEHOLDERS:
        value = _value(whole.group(1), values, where)
        if not isinstance(value, list):
            raise InputInvalid(f"{where}: {{{whole.group(1)}}} must be a list")
        return list(value)

    def sub(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        if m.group(1) is None:
            raise InputInvalid(f"{where}: a lone {token!r} (write {token * 2} for a literal brace)")
        name = m.group(1)
        if name in LIST_PLACEHOLDERS:
            raise InputInvalid(
                f"{where}: {{{name}}} is a list: it must be the whole value, not part of {text!r}"
            )
        value = _value(name, values, where)
        return str(value)

    return _TOKEN.sub(sub, text)


def _value(name: str, values: Values, where: str) -> str | list[str]:
    if name not in PLACEHOLDERS:
        raise InputInvalid(
            f"{where}: unknown placeholder {{{name}}} (known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)})"
        )
    value = values.get(name)
    if value is None:
        raise InputInvalid(
            f"{where}: {{{name}}} has no value: the profile does not set {PLACEHOLDER_FIELDS[name]}"
        )
    return value


def render(value: Any, values: Values, where: str) -> Any:
    """Every string in ``value`` (nested dicts and lists) rendered; ``where`` names the path."""
    if isinstance(value, str):
        return render_string(value, values, where)
    if isinstance(value, Mapping):
        return {k: render(v, values, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, values, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def unrender(value: Any, values: Values) -> Any:
    """The inverse of :func:`render` for export: braces escaped, the profile's values written as
    their placeholders (whole words only, longest first), the channel list as its placeholder.

    ``render(unrender(v, values), values) == v`` for every ``v``.
    """
    scalars = {
        name: str(values[name])
        for name in EXPORTED_PLACEHOLDERS
        if isinstance(values.get(name), str) and values[name] and not re.search(r"[{}]", str(values[name]))
    }
    channels = values.get("notification_channels")
    pattern = None
    if scalars:
        alternatives = sorted(scalars.values(), key=len, reverse=True)
        pattern = re.compile(
            r"(?<![A-Za-z0-9_-])(" + "|".join(re.escape(a) for a in alternatives) + r")(?![A-Za-z0-9_-])"
        )
    by_value = {v: k for k, v in sorted(scalars.items(), key=lambda kv: -len(kv[1]))}

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            escaped = v.replace("{", "{{").replace("}", "}}")
            if pattern is None:
                return escaped
            return pattern.sub(lambda m: "{" + by_value[m.group(1)] + "}", escaped)
        if isinstance(v, Mapping):
            return {k: walk(x) for k, x in v.items()}
        if isinstance(v, list):
            if channels and isinstance(channels, list) and v == channels:
                return "{notification_channels}"
            return [walk(x) for x in v]
        return v

    return walk(value)


# ---------------------------------------------------------------------------------------------
# Definitions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """One definition file, rendered for an environment.

    ``spec``: the resource in the API's field names, with ``user_labels.greenlight_id = id``.
    ``source``: the file it came from (for messages).
    """

    kind: str
    id: str
    spec: dict[str, Any]
    source: str

    @property
    def display_name(self) -> str:
        return str(self.spec.get("display_name", ""))


def parse_definition(doc: Any, source: str, values: Values) -> Definition:
    """A definition from one file's YAML document; InputInvalid naming ``source`` and the field."""
    if not isinstance(doc, Mapping):
        raise InputInvalid(f"{source}: expected a mapping with kind, id and spec, got {type(doc).__name__}")
    unknown = sorted(set(doc) - {"kind", "id", "spec"})
    if unknown:
        raise InputInvalid(
            f"{source}: unknown top-level field(s) {', '.join(unknown)} (kind, id and spec only)"
        )
    kind = doc.get("kind")
    if kind not in KINDS:
        raise InputInvalid(f"{source}: kind: must be one of {', '.join(KINDS)}, not {kind!r}")
    ident = doc.get("id")
    if not isinstance(ident, str) or not ID_PATTERN.match(ident):
        raise InputInvalid(
            f"{source}: id: {ident!r} is not a valid id (lowercase letters, digits and '-', "
            "starting with a letter, at most 63)"
        )
    spec = doc.get("spec")
    if not isinstance(spec, Mapping):
        raise InputInvalid(f"{source}: spec: expected a mapping, got {type(spec).__name__}")
    owned = [k for k in SERVER_OWNED[kind] if k in spec]
    if owned:
        raise InputInvalid(f"{source}: spec.{owned[0]}: set by the server, not by a definition")
    rendered = render(dict(spec), values, f"{source}: spec")
    labels = rendered.get("user_labels") or {}
    if not isinstance(labels, Mapping):
        raise InputInvalid(f"{source}: spec.user_labels: expected a mapping")
    if labels.get(ID_LABEL, ident) != ident:
        raise InputInvalid(
            f"{source}: spec.user_labels.{ID_LABEL} is {labels[ID_LABEL]!r} but the id is {ident!r} "
            f"(leave the label out: it is set from the id)"
        )
    environment = values.get("environment")
    if not isinstance(environment, str) or not environment:
        raise InputInvalid(f"{source}: no environment to label the definition with")
    if labels.get(ENV_LABEL, environment) != environment:
        raise InputInvalid(
            f"{source}: spec.user_labels.{ENV_LABEL} is {labels[ENV_LABEL]!r}, not {environment!r} "
            "(leave the label out: it is set from the environment)"
        )
    rendered["user_labels"] = {**labels, ID_LABEL: ident, ENV_LABEL: environment}
    definition = Definition(kind, ident, rendered, source)
    problems = check_spec(kind, rendered)
    if problems:
        raise InputInvalid(f"{source}: {problems[0]}")
    return definition


def check_spec(kind: str, spec: Mapping[str, Any]) -> list[str]:
    """What the API would refuse in ``spec``, checked before anything is applied (every message
    names the field). An empty list: nothing found (the API may still refuse, e.g. a filter it
    cannot parse)."""
    out: list[str] = []
    if not str(spec.get("display_name") or "").strip():
        out.append("spec.display_name: required")
    if kind == ALERT_POLICY:
        conditions = spec.get("conditions") or []
        if not isinstance(conditions, list) or not conditions:
            out.append("spec.conditions: a policy needs at least one condition")
            conditions = []
        if len(conditions) > MAX_CONDITIONS:
            out.append(f"spec.conditions: at most {MAX_CONDITIONS} conditions, got {len(conditions)}")
        if spec.get("combiner") in (None, "", "COMBINE_UNSPECIFIED"):
            out.append("spec.combiner: required (AND, OR or AND_WITH_MATCHING_RESOURCE)")
        for i, c in enumerate(conditions):
            where = f"spec.conditions[{i}]"
            if not isinstance(c, Mapping):
                out.append(f"{where}: expected a mapping")
                continue
            if not str(c.get("display_name") or "").strip():
                out.append(f"{where}.display_name: required")
            kinds = [k for k in CONDITION_KINDS if k in c]
            if len(kinds) != 1:
                out.append(f"{where}: exactly one of {', '.join(CONDITION_KINDS)}, got {len(kinds)}")
                continue
            body = c[kinds[0]]
            if kinds[0] in ("condition_threshold", "condition_absent"):
                filt = str((body or {}).get("filter") or "")
                if not filt.strip():
                    out.append(f"{where}.{kinds[0]}.filter: required")
                elif "metric.type" not in filt:
                    out.append(f'{where}.{kinds[0]}.filter: must name a metric type (metric.type = "...")')
                elif (problem := filter_shape(filt)) is not None:
                    out.append(f"{where}.{kinds[0]}.filter: {problem}")
                if kinds[0] == "condition_threshold" and (body or {}).get("comparison") in (
                    None,
                    "COMPARISON_UNSPECIFIED",
                ):
                    out.append(f"{where}.condition_threshold.comparison: required")
    else:
        if not (
            spec.get("monitored_resource") or spec.get("resource_group") or spec.get("synthetic_monitor")
        ):
            out.append("spec: one of monitored_resource, resource_group or synthetic_monitor is required")
        if not (spec.get("http_check") or spec.get("tcp_check") or spec.get("synthetic_monitor")):
            out.append("spec: one of http_check or tcp_check is required")
        period = spec.get("period")
        if period is not None and period not in ALLOWED_UPTIME_PERIODS:
            out.append(f"spec.period: must be one of {', '.join(ALLOWED_UPTIME_PERIODS)}, not {period!r}")
        timeout = spec.get("timeout")
        if timeout is not None:
            seconds = _seconds(str(timeout))
            if seconds is None or not 1 <= seconds <= 60:
                out.append(f"spec.timeout: between 1s and 60s, not {timeout!r}")
    return out


def _seconds(text: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)s", text)
    return float(m.group(1)) if m else None


def filter_shape(text: str) -> str | None:
    """A filter's balance of quotes and parentheses: what is wrong, or None."""
    depth = 0
    quote: str | None = None
    escaped = False
    for ch in text:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return "a ')' without its '('"
    if quote:
        return f"an unterminated {quote}-quoted string"
    if depth:
        return "a '(' without its ')'"
    return None


def check_unique(definitions: Sequence[Definition]) -> None:
    """Refuse two definitions with one id (InputInvalid naming both files)."""
    seen: dict[str, Definition] = {}
    for d in definitions:
        if d.id in seen:
            raise InputInvalid(f"{d.source}: id {d.id!r} is also the id of {seen[d.id].source}")
        seen[d.id] = d


# ---------------------------------------------------------------------------------------------
# The project's side
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One alert policy or uptime check in the project: its ``name`` and its fields as a dict."""

    kind: str
    name: str
    spec: dict[str, Any]

    @property
    def label(self) -> str | None:
        labels = self.spec.get("user_labels") or {}
        value = labels.get(ID_LABEL)
        return str(value) if value else None

    @property
    def environment(self) -> str | None:
        value = (self.spec.get("user_labels") or {}).get(ENV_LABEL)
        return str(value) if value else None

    @property
    def display_name(self) -> str:
        return str(self.spec.get("display_name", ""))


def comparable(kind: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` without the fields the server owns (and the conditions' names)."""
    out = {k: v for k, v in spec.items() if k not in SERVER_OWNED[kind]}
    if kind == ALERT_POLICY and isinstance(out.get("conditions"), list):
        out["conditions"] = [
            {k: v for k, v in c.items() if k != "name"} if isinstance(c, Mapping) else c
            for c in out["conditions"]
        ]
    return out


@dataclass(frozen=True)
class FieldChange:
    """One field that differs: its path (``conditions[0].condition_threshold.threshold_value``),
    the project's value and the definition's (None: not set)."""

    path: str
    before: Any
    after: Any


def field_diff(before: Any, after: Any, path: str = "") -> list[FieldChange]:
    """The fields where ``before`` (the project) and ``after`` (the definition) differ, innermost
    first: dicts key by key, lists of one length item by item, anything else as a whole."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        out: list[FieldChange] = []
        for key in sorted(set(before) | set(after), key=str):
            sub = f"{path}.{key}" if path else str(key)
            out.extend(field_diff(before.get(key), after.get(key), sub))
        return out
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        out = []
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            out.extend(field_diff(b, a, f"{path}[{i}]"))
        return out
    return [] if before == after else [FieldChange(path, before, after)]


@dataclass(frozen=True)
class Item:
    """What apply does (or diff reports) for one definition or one resource.

    ``action``: create (no resource is the definition's), update (``mask``: the top-level fields
    that differ, ``changes`` field by field), unchanged, orphaned (a resource labelled by
    Greenlight whose definition is gone: ``--prune`` deletes it) or unmanaged (made by hand, no
    definition: left alone). ``matched_by``: ``label``, ``display_name`` (adopted) or ``""``.
    """

    action: Action
    kind: str
    display_name: str
    id: str | None = None
    name: str | None = None
    source: str | None = None
    changes: tuple[FieldChange, ...] = ()
    mask: tuple[str, ...] = ()
    matched_by: str = ""
    definition: Definition | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Plan:
    """Every definition's item, then every resource no definition matched."""

    items: tuple[Item, ...]

    def count(self, action: str) -> int:
        return sum(1 for i in self.items if i.action == action)

    @property
    def drift(self) -> bool:
        return any(i.action in DRIFT for i in self.items)

    def counts(self) -> dict[str, int]:
        return {a: self.count(a) for a in ("create", "update", "unchanged", "orphaned", "unmanaged")}


def plan(definitions: Sequence[Definition], resources: Iterable[Resource], environment: str) -> Plan:
    """Match each definition to a resource (by label, else an unlabelled one by display name) and
    say what differs. Resources Greenlight labelled for another environment (one project can hold
    several) are not this one's: they are left out. Raises Conflict when two resources of a kind carry one id, or when more
    than one unlabelled resource has a definition's display name (which to adopt is unclear)."""
    check_unique(definitions)
    pool = [r for r in resources if r.environment in (None, environment)]
    by_label: dict[tuple[str, str], Resource] = {}
    for r in pool:
        if r.label is None:
            continue
        ident = (r.kind, r.label)
        if ident in by_label:
            raise Conflict(
                f"{r.kind}s {by_label[ident].name} and {r.name} both carry {ID_LABEL}={r.label}: "
                "delete or relabel one in the project"
            )
        by_label[ident] = r
    used: set[str] = set()
    items: list[Item] = []
    for d in definitions:
        match = by_label.get((d.kind, d.id))
        how = "label"
        if match is None:
            candidates = [
                r
                for r in pool
                if r.kind == d.kind
                and r.label is None
                and r.name not in used
                and r.display_name == d.display_name
            ]
            if len(candidates) > 1:
                raise Conflict(
                    f"{d.source}: {len(candidates)} unlabelled {d.kind}s are named {d.display_name!r} "
                    f"({', '.join(r.name for r in candidates)}): label the one to adopt with "
                    f"{ID_LABEL}={d.id}, or delete the others"
                )
            match = candidates[0] if candidates else None
            how = "display_name"
        if match is None:
            items.append(Item("create", d.kind, d.display_name, d.id, None, d.source, definition=d))
            continue
        used.add(match.name)
        actual = comparable(d.kind, match.spec)
        changes: list[FieldChange] = []
        mask: list[str] = []
        for key in d.spec:
            diff = field_diff(actual.get(key), d.spec[key], key)
            if diff:
                changes.extend(diff)
                mask.append(key)
        action: Action = "update" if mask else "unchanged"
        items.append(
            Item(
                action,
                d.kind,
                d.display_name,
                d.id,
                match.name,
                d.source,
                tuple(changes),
                tuple(mask),
                how,
                d,
            )
        )
    for r in pool:
        if r.name in used:
            continue
        action = "orphaned" if r.label is not None else "unmanaged"
        items.append(Item(action, r.kind, r.display_name, r.label, r.name))
    return Plan(tuple(items))


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A definition id from a display name: lowercase words joined by '-' (placeholders dropped)."""
    text = re.sub(r"\{[a-z_]+\}", " ", text)
    words = re.findall(r"[a-z0-9]+", text.lower())
    out = "-".join(words)[:63].strip("-")
    if not out or not out[0].isalpha():
        out = ("x-" + out).strip("-")[:63]
    return out


def export_document(resource: Resource, values: Values, taken: set[str]) -> dict[str, Any]:
    """The definition file's document for ``resource``: its id (its label, else a slug of its
    display name not in ``taken``, which is updated), its fields with the profile's values as
    placeholders and without the id label."""
    spec = comparable(resource.kind, resource.spec)
    labels = dict(spec.get("user_labels") or {})
    labels.pop(ID_LABEL, None)
    labels.pop(ENV_LABEL, None)
    if labels:
        spec["user_labels"] = labels
    else:
        spec.pop("user_labels", None)
    templated = unrender(spec, values)
    ident = resource.label if resource.label and ID_PATTERN.match(resource.label) else None
    if ident is None:
        base = slug(str(templated.get("display_name", ""))) or "definition"
        ident, n = base, 2
        while ident in taken:
            suffix = f"-{n}"
            ident, n = base[: 63 - len(suffix)] + suffix, n + 1
    taken.add(ident)
    return {"kind": resource.kind, "id": ident, "spec": templated}
