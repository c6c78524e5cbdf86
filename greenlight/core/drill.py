"""DR drill decisions as pure functions: the step timeline, RTO/RPO against targets, the manifests to apply.

Nothing here does I/O. The flow (``flows/dr_drill.py``) restores, applies, waits and probes through
tasks (``tasks/drill.py`` and the shared ones); these functions turn what it saw into values and reasons:

- each step hands the next a frozen value (:class:`Done` wrapping :class:`DownloadedDump`,
  :class:`RestoredDatabase`, :class:`ProbedData`, :class:`PlannedApply`), and the run ends in a
  :class:`Reached` (when the DR side was validated, the RPO measured);

- :class:`DrillStep` is one timed step of the runbook (offset from the drill's start, duration,
  outcome, detail); :func:`decide_drill` turns the steps, the RTO/RPO checks and what teardown
  left into a :class:`DrillVerdict` (passed only when every step passed, both targets were met
  and nothing was left behind).
- :func:`compare_target` measures a value against its target: ``RTO 143 s within target 300 s``,
  ``RTO 312 s missed target 300 s by 12 s``.
- RTO is the drill's start to the moment the DR side was validated (data probed, apps answering
  their smoke probes). RPO is the data a real disaster at the drill's start would have lost:
  the drill's start minus the newest row in the restored data (:func:`data_loss_seconds`). It
  includes the dump's age; the dump's own lag (dump time minus newest row) is reported beside it.
- :func:`plan_apply` turns a config bundle (objects as config-backup exported them) into the
  objects to create in the DR namespace: the Deployment each app's live Service selects (or,
  routed by an HTTPRoute, the Service of the colour the route gives all of its traffic), its
  container pinned to the digest live in the source environment; the idle colour is left out;
  Services lose what the DR cluster assigns (cluster IPs, node ports); Secrets are never applied,
  only checked (:func:`secret_gaps`).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

from greenlight.core.backups import DumpObject
from greenlight.core.httproute import PLURAL as ROUTES
from greenlight.core.httproute import colour_service, snapshot_route
from greenlight.core.images import parse_image_ref
from greenlight.core.report import table_cell
from greenlight.errors import InputInvalid

DRILL_LABEL = "greenlight.dev/dr-drill"  # on every object a drill applies, so teardown finds exactly those
APPLY_ORDER: tuple[str, ...] = (
    "configmaps",
    "services",
    "deployments",
    "horizontalpodautoscalers",
    "ingresses",
    "httproutes",  # after the Services they name: a Gateway reports a route to a missing one
)
PLURALS: dict[str, str] = {
    "ConfigMap": "configmaps",
    "Service": "services",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "Ingress": "ingresses",
    "HTTPRoute": ROUTES,
}
GATEWAY_ROUTER = "gateway-httproute"  # settings.Traffic.router: the live colour is an HTTPRoute's
# written by the cluster (or a controller) that served the export: they describe that cluster, not the app
CLUSTER_ANNOTATIONS = frozenset(
    {
        "deployment.kubernetes.io/revision",
        "kubectl.kubernetes.io/last-applied-configuration",
        "cloud.google.com/neg-status",
        "autoscaling.alpha.kubernetes.io/conditions",
        "autoscaling.alpha.kubernetes.io/current-metrics",
    }
)
CLUSTER_CONFIGMAPS = frozenset({"kube-root-ca.crt"})  # every namespace gets its own from its cluster
GENERATED_SECRET_TYPES = frozenset({"kubernetes.io/service-account-token"})
SERVICE_ASSIGNED = ("clusterIP", "clusterIPs", "healthCheckNodePort", "loadBalancerIP")
METADATA_KEPT = ("name", "labels", "annotations")
T = TypeVar("T")

# --- the timeline ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillStep:
    """One step of the runbook: when it started (and its offset from the drill's start), how long it took."""

    name: str
    started_at: datetime
    offset_s: float
    seconds: float
    outcome: str  # "ok", "failed", "skipped"
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"


def timed_step(
    name: str, drill_start: datetime, started_at: datetime, ended_at: datetime, outcome: str, detail: str
) -> DrillStep:
    """The step ``name`` that ran from ``started_at`` to ``ended_at`` in a drill started at ``drill_start``."""
    if outcome not in ("ok", "failed", "skipped"):
        raise InputInvalid(f"step outcome must be ok, failed or skipped, not {outcome!r}")
    return DrillStep(
        name=name,
        started_at=started_at,
        offset_s=round((started_at - drill_start).total_seconds(), 3),
        seconds=round(max(0.0, (ended_at - started_at).total_seconds()), 3),
        outcome=outcome,
        detail=detail,
    )


def step_line(step: DrillStep) -> str:
    """One terminal line: ``+  4.1 s  restore-database   ok     3.6 s  restored ...``."""
    return f"+{step.offset_s:7.1f} s  {step.name:<18} {step.outcome:<7} {step.seconds:7.1f} s  {step.detail}"


# --- what one step hands the next ---------------------------------------------------------------------


@dataclass(frozen=True)
class Done(Generic[T]):
    """What a step produced: its detail for the timeline and its value for the steps after it.

    ``failure`` set: the step failed with that reason, yet measured ``value`` on the way (the probe
    step's RPO counts even when a probe failed); the steps after it do not run.
    """

    detail: str
    value: T
    failure: str = ""


@dataclass(frozen=True)
class DownloadedDump:
    """The newest dump, downloaded and checked against its stored hashes, at ``path``."""

    dump: DumpObject
    path: Path


@dataclass(frozen=True)
class RestoredDatabase:
    """The DR database the dump was restored into: its URL (for the probes) and the dump it holds."""

    dump: DumpObject
    url: str


@dataclass(frozen=True)
class ProbedData:
    """What the probes measured: the data a disaster at the drill's start would have lost (the RPO)."""

    rpo_s: float | None


@dataclass(frozen=True)
class PlannedApply:
    """What the cluster track applies: the plan, and the digest live in the source for each app."""

    plan: ApplyPlan
    digests: dict[str, str]


@dataclass(frozen=True)
class Reached:
    """How far the drill's runbook got: when the DR side was validated (None: never) and the RPO measured."""

    validated_at: datetime | None
    rpo_s: float | None


# --- RTO and RPO ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TargetCheck:
    """A measured RTO or RPO against its target; ``value_s`` None: not measured (the drill stopped first)."""

    measure: str  # "RTO" or "RPO"
    value_s: float | None
    target_s: float
    why_unmeasured: str = ""

    @property
    def ok(self) -> bool:
        return self.value_s is not None and self.value_s <= self.target_s

    @property
    def missed_by_s(self) -> float | None:
        """Seconds beyond the target (0 when within it); None when not measured."""
        return None if self.value_s is None else max(0.0, self.value_s - self.target_s)

    @property
    def reason(self) -> str:
        """``RTO 143 s within target 300 s``, ``RTO 312 s missed target 300 s by 12 s``, or why not measured."""
        target = _seconds(self.target_s)
        if self.value_s is None:
            why = f": {self.why_unmeasured}" if self.why_unmeasured else ""
            return f"{self.measure} not measured (target {target} s){why}"
        value = _seconds(self.value_s)
        if self.ok:
            return f"{self.measure} {value} s within target {target} s"
        assert self.missed_by_s is not None
        return f"{self.measure} {value} s missed target {target} s by {_seconds(self.missed_by_s)} s"


def compare_target(
    measure: str, value_s: float | None, target_s: float, why_unmeasured: str = ""
) -> TargetCheck:
    """``value_s`` against ``target_s``; within when at most the target."""
    if target_s <= 0:
        raise InputInvalid(f"{measure} target must be positive, not {target_s}")
    return TargetCheck(measure, None if value_s is None else round(value_s, 3), target_s, why_unmeasured)


def elapsed_seconds(start: datetime, end: datetime) -> float:
    """Seconds from ``start`` to ``end`` (the RTO: drill start to validated)."""
    return (end - start).total_seconds()


def data_loss_seconds(drill_start: datetime, newest_row: datetime | None) -> float | None:
    """The achieved RPO: what a disaster at ``drill_start`` would lose, back to the newest restored row.

    None when no probed table had a timestamp; 0 when the newest row is dated after the drill's
    start (clock skew), never negative.
    """
    if newest_row is None:
        return None
    return max(0.0, (drill_start - newest_row).total_seconds())


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or float(value).is_integer() else f"{value:.1f}"


# --- the verdict ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillVerdict:
    """Passed only when every step passed, RTO and RPO met their targets and teardown left nothing."""

    passed: bool
    reasons: tuple[str, ...]
    rto: TargetCheck
    rpo: TargetCheck

    @property
    def reason(self) -> str:
        if self.passed:
            return f"{self.rto.reason}; {self.rpo.reason}"
        return "; ".join(self.reasons)


def decide_drill(
    steps: Sequence[DrillStep], rto: TargetCheck, rpo: TargetCheck, leftovers: Sequence[str] = ()
) -> DrillVerdict:
    """The drill's verdict; ``reasons`` name each failed step, each missed (or unmeasured) target, each leftover."""
    failed_steps = [f"{s.name}: {s.detail}" for s in steps if s.outcome == "failed"]
    # a target left unmeasured because a step failed is that step's consequence, not a reason of its own
    missed = [c.reason for c in (rto, rpo) if not c.ok and (c.value_s is not None or not failed_steps)]
    reasons = failed_steps + missed
    if leftovers:
        reasons.append("teardown left behind: " + ", ".join(leftovers))
    if not steps:
        reasons.append("no step ran")
    return DrillVerdict(passed=not reasons, reasons=tuple(reasons), rto=rto, rpo=rpo)


def dr_database_name(database: str) -> str:
    """The DR database a drill restores into: ``<database>_dr`` (never the source's own name, which may
    live on the same server); InputInvalid when that is not a plain identifier of at most 63 characters."""
    name = f"{database}_dr"
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise InputInvalid(f"backups.database {database!r} gives no valid DR database name ({name!r})")
    return name


def drill_id(environment: str, at: datetime, token: str) -> str:
    """A label-safe id for one drill: ``dr-20261126t095500-ab12cd``."""
    text = f"{environment}-{at.strftime('%Y%m%dt%H%M%S')}-{token}".lower()
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text)[:63].strip("-._")


# --- digests ----------------------------------------------------------------------------------------------


def live_digests(
    live: Mapping[str, Mapping[str, Any]], apps: Sequence[str]
) -> tuple[dict[str, str], list[str]]:
    """(app -> the digest live in the source environment, problems) from its live state per app.

    ``live`` is what the source's live Services say (``greenlight.tasks.kube.read_live``): the ``digests``
    annotation first, else the digest of the live colour's Deployment. An app with neither is a
    problem that names it.
    """
    digests: dict[str, str] = {}
    problems: list[str] = []
    for app in apps:
        state = live.get(app)
        if state is None:
            problems.append(f"{app}: no live Service in the source environment")
            continue
        digest = (state.get("digests") or {}).get(app)
        colour = state.get("live_colour")
        if not digest and colour:
            digest = ((state.get("colours") or {}).get(colour) or {}).get("digest")
        if not digest:
            problems.append(
                f"{app}: no digest is live in the source environment (live colour {colour or 'none'})"
            )
            continue
        digests[app] = str(digest)
    return digests, problems


# --- the bundle -> the DR namespace ---------------------------------------------------------------------


@dataclass(frozen=True)
class AppTarget:
    """What the drill deploys for one app: its live Service (or, routed by an HTTPRoute, the prefix
    of its colours' Services), its container, the image (by digest), and its HTTPRoute."""

    name: str
    service: str
    container: str
    image_repository: str
    digest: str
    route: str = ""  # the HTTPRoute (gateway-httproute); "" -> the service's name

    @property
    def image(self) -> str:
        return str(parse_image_ref(self.image_repository).pinned(self.digest))


@dataclass(frozen=True)
class SecretRef:
    """A Secret the bundle names: the DR cluster must hold it with these keys (its values are its own)."""

    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ApplyPlan:
    """The objects to create in the DR namespace (in apply order), the Deployments pinned per app,
    what was left out and why, the Secrets to check, and the problems that stop the drill."""

    objects: tuple[tuple[str, str, dict[str, Any]], ...]
    pinned: dict[str, str] = field(default_factory=dict)  # app -> Deployment name
    skipped: tuple[str, ...] = ()
    secrets: tuple[SecretRef, ...] = ()
    problems: tuple[str, ...] = ()

    def count_by_kind(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for plural, _, _ in self.objects:
            out[plural] = out.get(plural, 0) + 1
        return out


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _template_labels(dep: Mapping[str, Any]) -> dict[str, str]:
    return dict((((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def prepare_object(obj: Mapping[str, Any], namespace: str, drill: str) -> dict[str, Any]:
    """The object as the DR namespace gets it: only name, labels and annotations kept in its metadata
    (no uid, owner or finalizer from the source cluster), cluster-written annotations and status
    dropped, the drill's label added; a Service without what the DR cluster assigns (cluster IPs,
    node ports, health-check port, load-balancer IP); a Deployment's pods labelled with the drill too.
    """
    out = copy.deepcopy(dict(obj))
    out.pop("status", None)
    meta = {k: v for k, v in (out.get("metadata") or {}).items() if k in METADATA_KEPT}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in CLUSTER_ANNOTATIONS}
    meta.pop("annotations", None)
    if annotations:
        meta["annotations"] = annotations
    meta["labels"] = {**(meta.get("labels") or {}), DRILL_LABEL: drill}
    meta["namespace"] = namespace
    out["metadata"] = meta
    spec = out.get("spec")
    if out.get("kind") == "Service" and isinstance(spec, dict):
        for key in SERVICE_ASSIGNED:
            spec.pop(key, None)
        spec["ports"] = [{k: v for k, v in p.items() if k != "nodePort"} for p in spec.get("ports") or []]
    if out.get("kind") == "Deployment" and isinstance(spec, dict):
        tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
        tmeta["labels"] = {**(tmeta.get("labels") or {}), DRILL_LABEL: drill}
    return out


def pin_container(dep: dict[str, Any], container: str, image: str) -> bool:
    """Set ``container``'s image in the Deployment ``dep`` (in place); False when it has no such container."""
    found = False
    for c in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        if c.get("name") == container:
            c["image"] = image
            found = True
    return found


def plan_apply(
    bundle: Sequence[Mapping[str, Any]],
    apps: Sequence[AppTarget],
    namespace: str,
    drill: str,
    colour_label: str = "color",
    router: str = "service-selector",
    colours: Sequence[str] = ("blue", "green"),
) -> ApplyPlan:
    """What to create in the DR namespace from a config bundle (see the module's docstring).

    Per app, the Deployment whose pods the live colour's Service selects is applied with its
    container pinned to the app's digest: with ``router`` ``service-selector`` that is the app's live
    Service; with ``gateway-httproute`` the colour's own Service (``<service>-<colour>``) for the
    colour the app's HTTPRoute in the bundle gives all of its traffic. The app's other Deployments
    (those the selector without its ``colour_label`` also selects: the idle colour) and the HPAs
    scaling them are left out. Deployments of no profiled app are applied as exported. The
    bundle's HTTPRoutes are applied only with ``gateway-httproute`` (a DR namespace routed by
    Services has nothing to program them). A missing live Service or route, a route that gives no
    colour all of its traffic, no selected Deployment, or more than one, is a problem naming the app.
    """
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for obj in bundle:
        by_kind.setdefault(str(obj.get("kind") or ""), []).append(obj)
    services = {_name(s): s for s in by_kind.get("Service", [])}
    routes = {_name(r): r for r in by_kind.get("HTTPRoute", [])}
    deployments = by_kind.get("Deployment", [])
    problems: list[str] = []
    skipped: list[str] = []
    pinned: dict[str, str] = {}
    chosen: dict[str, AppTarget] = {}
    left_out: dict[str, str] = {}  # idle-colour Deployment -> why it is left out
    for app in apps:
        live, problem = _live_service(app, services, routes, router, colours)
        if live is None:
            problems.append(f"{app.name}: {problem}")
            continue
        svc_name = _name(live)
        selector = dict((live.get("spec") or {}).get("selector") or {})
        selected = [d for d in deployments if _selects(selector, _template_labels(d))]
        uncoloured = {k: v for k, v in selector.items() if k != colour_label}
        mine = [d for d in deployments if _selects(uncoloured, _template_labels(d))]
        if len(selected) != 1:
            found = ", ".join(sorted(_name(d) for d in selected)) or "none"
            problems.append(
                f"{app.name}: Service {svc_name} must select exactly one Deployment of the bundle, selects {found}"
            )
            continue
        name = _name(selected[0])
        chosen[name], pinned[app.name] = app, name
        for d in mine:
            if _name(d) != name:
                left_out[_name(d)] = f"idle colour of {app.name} (not selected by {svc_name})"
    objects: list[tuple[str, str, dict[str, Any]]] = []
    for kind, plural in PLURALS.items():
        for obj in sorted(by_kind.get(kind, []), key=_name):
            name = _name(obj)
            why = _leave_out(kind, obj, left_out, router)
            if why:
                skipped.append(f"{plural}/{name}: {why}")
                continue
            body = prepare_object(obj, namespace, drill)
            if kind == "Deployment" and name in chosen:
                app = chosen[name]
                if not pin_container(body, app.container, app.image):
                    problems.append(f"{app.name}: Deployment {name} has no container '{app.container}'")
            objects.append((plural, name, body))
    objects.sort(key=lambda o: APPLY_ORDER.index(o[0]))
    secrets = tuple(
        SecretRef(_name(s), tuple(sorted(str(k) for k in s.get("keys") or [])))
        for s in sorted(by_kind.get("Secret", []), key=_name)
        if str(s.get("type") or "Opaque") not in GENERATED_SECRET_TYPES
    )
    other = sorted(k for k in by_kind if k not in PLURALS and k != "Secret")
    skipped += [f"{k}: kind not applied by a drill" for k in other]
    return ApplyPlan(tuple(objects), pinned, tuple(skipped), secrets, tuple(problems))


def _live_service(
    app: AppTarget,
    services: Mapping[str, Mapping[str, Any]],
    routes: Mapping[str, Mapping[str, Any]],
    router: str,
    colours: Sequence[str],
) -> tuple[Mapping[str, Any] | None, str]:
    """The bundle's Service selecting ``app``'s live colour, else (None, why not)."""
    name = app.service
    if router == GATEWAY_ROUTER:
        route_name = app.route or app.service
        route = routes.get(route_name)
        if route is None:
            return None, f"the bundle has no HTTPRoute {route_name} (traffic.router {GATEWAY_ROUTER})"
        snap = snapshot_route(route, {c: colour_service(app.service, c) for c in colours})
        if snap.problem or snap.selected is None:
            return None, snap.problem or f"HTTPRoute {route_name} gives no colour all of its traffic"
        name = colour_service(app.service, snap.selected)
    svc = services.get(name)
    return (svc, "") if svc is not None else (None, f"the bundle has no Service {name}")


def _leave_out(kind: str, obj: Mapping[str, Any], idle: Mapping[str, str], router: str) -> str | None:
    name = _name(obj)
    if kind == "HTTPRoute" and router != GATEWAY_ROUTER:
        return f"the DR profile's traffic.router is {router}: nothing there programs a route"
    if kind == "Deployment" and name in idle:
        return idle[name]
    if kind == "ConfigMap" and name in CLUSTER_CONFIGMAPS:
        return "created by the DR cluster itself"
    if kind == "HorizontalPodAutoscaler":
        target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
        if target.get("kind") == "Deployment" and target.get("name") in idle:
            return f"scales the idle colour {target.get('name')}"
    return None


def secret_gaps(wanted: Sequence[SecretRef], present: Mapping[str, Sequence[str] | None]) -> list[str]:
    """Each Secret of ``wanted`` missing in the DR cluster, or lacking keys; ``present``: name -> its keys (None: missing)."""
    gaps = []
    for ref in wanted:
        keys = present.get(ref.name)
        if keys is None:
            gaps.append(f"Secret {ref.name} is missing")
            continue
        lacking = sorted(set(ref.keys) - set(keys))
        if lacking:
            gaps.append(f"Secret {ref.name} lacks key(s) {', '.join(lacking)}")
    return gaps


# --- the record -----------------------------------------------------------------------------------------


def render_report(
    title: str, verdict: DrillVerdict, steps: Sequence[DrillStep], facts: Mapping[str, Any]
) -> str:
    """The drill's markdown artifact: outcome, RTO and RPO against targets, the step timeline, the facts."""
    outcome = "PASSED" if verdict.passed else "FAILED"
    lines = [f"# {title}", "", f"**{outcome}**: {verdict.reason}", ""]
    lines += ["| measure | value | target | result |", "|---|---|---|---|"]
    for c in (verdict.rto, verdict.rpo):
        value = "-" if c.value_s is None else f"{_seconds(c.value_s)} s"
        lines.append(f"| {c.measure} | {value} | {_seconds(c.target_s)} s | {table_cell(c.reason)} |")
    lines += ["", "## Timeline", "", "| start | step | outcome | seconds | detail |", "|---|---|---|---|---|"]
    lines += [
        f"| +{s.offset_s:.1f} s | {table_cell(s.name)} | {s.outcome} | {s.seconds:.1f} | {table_cell(s.detail)} |"
        for s in steps
    ]
    lines += ["", "## Facts", "", "| | |", "|---|---|"]
    lines += [f"| {table_cell(str(k))} | {table_cell(str(v))} |" for k, v in facts.items()]
    return "\n".join(lines) + "\n"
