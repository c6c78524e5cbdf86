"""Adopt an app that runs as one plain Deployment behind its Service into Greenlight's blue-green
shape, losing no request: the plan, decided over one read of the cluster. Pure: no I/O.

How the obvious ways drop requests, and what the plan does instead:

- Adding the colour label to the running Deployment's pod template rolls every pod, and its
  selector cannot take the label at all (``spec.selector`` is immutable): the plain Deployment
  is never edited until it is scaled down. A *copy* named ``<app>-<colour>`` carries the label.
- Adding the colour to the Service's selector before pods carry it selects nothing: the data
  plane has no endpoint for a moment (kube-proxy resets or refuses; a NEG answers 502). The
  copy's pods carry every label of the old ones *plus* the colour, so the Service, whose
  selector does not name the colour yet, sends them traffic beside the old pods first.
- Data planes act late on endpoint changes (kube-proxy syncs seconds later; a NEG detaches
  before it attaches): the selector is narrowed only once every pod of the copy is ready, in
  the Service's Endpoints, and the propagation allowance has passed; the old Deployment is
  scaled down only once the allowance has passed again after the narrowing.

The steps, in order: ``create-deployment`` (the copy, same image pinned by digest, same
replicas), ``await-serving``, ``narrow-service`` (the colour added to the selector, the record
annotations written, the old selector kept in ``greenlight.dev/adopted-selector``),
``create-preview`` (selecting the other colour), ``scale-down-old`` (to 0, kept and annotated
so it can be brought back). Every object the plan writes is marked, so a rerun after an
interruption resumes (``resume``), a run on an app already in shape says so (``in-shape``),
and an undo finds everything to take back. What blocks adoption is a list of ``Refusal``s,
each with its kind (``input``, ``conflict`` or ``not-found``) and the thing to fix.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from greenlight.core.images import check_allowed, parse_image_ref
from greenlight.core.manifests import ACTIVE_COLOUR, ANNOTATION_PREFIX, DIGESTS, RELEASE_ID
from greenlight.core.traffic import shutdown_findings
from greenlight.errors import InputInvalid

Obj = Mapping[str, Any]

ADOPTED_FROM = (
    ANNOTATION_PREFIX + "adopted-from"
)  # on the colour's Deployment and the preview: the plain Deployment
ADOPTED_INTO = ANNOTATION_PREFIX + "adopted-into"  # on the plain Deployment once scaled down: its copy
ADOPTED_REPLICAS = ANNOTATION_PREFIX + "adopted-replicas"  # on the plain Deployment: its replicas before
ADOPTED_SELECTOR = ANNOTATION_PREFIX + "adopted-selector"  # on the live Service: its selector before (JSON)
ADOPTED_RELEASE = "adopted"  # the release id recorded on the live Service by an adoption
MANAGED_BY = "app.kubernetes.io/managed-by"
APP_LABEL = "app"  # Greenlight finds a colour's pods by app=<name>,<colour label>=<colour>
# server-set or tool-set fields a copy must not carry
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")
DROPPED_ANNOTATIONS = (
    "deployment.kubernetes.io/revision",
    "kubectl.kubernetes.io/last-applied-configuration",
)

RefusalKind = Literal["input", "conflict", "not-found"]
StepAction = Literal[
    "create-deployment", "await-serving", "narrow-service", "create-preview", "scale-down-old"
]
Outcome = Literal["adopt", "resume", "in-shape", "refused"]


@dataclass(frozen=True)
class AdoptApp:
    """What the plan needs of the profile: the app and the release settings."""

    name: str
    namespace: str
    service: str
    preview: str
    container: str
    image_repository: str
    colours: tuple[str, str] = ("blue", "green")
    colour_label: str = "color"
    propagation_s: float = 10.0
    allowed: tuple[str, ...] = ()  # the registry allow-list; () checks nothing

    @property
    def live_colour(self) -> str:
        """The colour the running pods become (the first of the profile's colours)."""
        return self.colours[0]

    @property
    def other_colour(self) -> str:
        return self.colours[1]

    def deployment(self, colour: str) -> str:
        return f"{self.name}-{colour}"


@dataclass(frozen=True)
class Refusal:
    """Why the app cannot be adopted as it stands; ``kind`` picks the exit code."""

    kind: RefusalKind
    reason: str


@dataclass(frozen=True)
class AdoptStep:
    """One step: the object it writes (``plural/name``), what that object becomes, and the body
    (a whole object to create, a merge patch, or None for a wait). ``done``: the cluster already
    shows it (a rerun after an interruption resumes after it)."""

    action: StepAction
    target: str
    description: str
    body: Mapping[str, Any] | None = None
    done: bool = False


@dataclass(frozen=True)
class AdoptPlan:
    app: str
    outcome: Outcome
    reason: str
    colour: str | None = None
    source: str | None = None  # the plain Deployment
    image: str | None = None  # pinned by digest
    digest: str | None = None
    replicas: int = 0
    steps: tuple[AdoptStep, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def pending(self) -> tuple[AdoptStep, ...]:
        return tuple(s for s in self.steps if not s.done)

    @property
    def refusal_kind(self) -> RefusalKind | None:
        """The kind the command exits with: not-found before conflict before input."""
        kinds = {r.kind for r in self.refusals}
        order: tuple[RefusalKind, ...] = ("not-found", "conflict", "input")
        return next((kind for kind in order if kind in kinds), None)


# --- label and object helpers -------------------------------------------------------------------


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Obj) -> str:
    return str(_meta(obj).get("name") or "")


def _annotations(obj: Obj) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def _template_labels(dep: Obj) -> dict[str, str]:
    return dict((((dep.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {})


def _replicas(dep: Obj) -> int:
    value = (dep.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Does a Deployment's ``spec.selector`` (matchLabels and matchExpressions) match ``labels``?
    An empty or missing selector matches nothing."""
    if not selector:
        return False
    match_labels = selector.get("matchLabels") or {}
    expressions = selector.get("matchExpressions") or []
    if not match_labels and not expressions:
        return False
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    for e in expressions:
        key, op, values = e.get("key"), e.get("operator"), list(e.get("values") or [])
        present = key in labels
        if op == "In" and not (present and labels[key] in values):
            return False
        if op == "NotIn" and present and labels[key] in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


def service_selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Does a Service's selector map select a pod with ``labels``? (An empty one selects nothing.)"""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _pod_ready(pod: Obj) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _digest_of(image_id: str) -> str | None:
    """The digest in a container status' ``imageID`` (``repo@sha256:...``, ``docker-pullable://...``)."""
    if "@" not in image_id:
        return None
    digest = image_id.rsplit("@", 1)[1]
    return digest if digest.startswith("sha256:") else None


def running_digests(pods: Sequence[Obj], container: str) -> set[str]:
    """The digests the ready, not terminating pods report running in ``container``."""
    out: set[str] = set()
    for pod in pods:
        if _meta(pod).get("deletionTimestamp") or not _pod_ready(pod):
            continue
        for status in (pod.get("status") or {}).get("containerStatuses") or []:
            if status.get("name") == container:
                digest = _digest_of(str(status.get("imageID") or ""))
                if digest:
                    out.add(digest)
    return out


def container_image(dep: Obj, container: str) -> str | None:
    for c in ((dep.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        if c.get("name") == container:
            return str(c.get("image") or "")
    return None


def image_to_resolve(dep: Obj, pods: Sequence[Obj], container: str) -> str | None:
    """The tag reference the caller must resolve at the registry before planning: the source's image
    when neither its spec nor its pods say which digest runs; None when no lookup is needed."""
    image = container_image(dep, container)
    if not image or "@" in image:
        return None
    owned = [
        p
        for p in pods
        if selector_matches((dep.get("spec") or {}).get("selector"), _meta(p).get("labels") or {})
    ]
    return None if running_digests(owned, container) else image


def _strip(obj: Obj) -> dict[str, Any]:
    out = copy.deepcopy(dict(obj))
    meta = out.setdefault("metadata", {})
    for f in SERVER_FIELDS:
        meta.pop(f, None)
    out.pop("status", None)
    return out


# --- the plan -----------------------------------------------------------------------------------


def plan_adoption(
    app: AdoptApp,
    service: Obj | None,
    preview: Obj | None,
    deployments: Sequence[Obj],
    pods: Sequence[Obj],
    hpas: Sequence[Obj] = (),
    tag_digest: str | None = None,
) -> AdoptPlan:
    """The steps that turn the app into the blue-green shape, or why it cannot be adopted.

    ``service`` and ``preview``: the live and preview Services (None when absent);
    ``deployments``, ``pods``, ``hpas``: every one in the namespace; ``tag_digest``: what the
    registry says the source's image tag names now (see :func:`image_to_resolve`)."""
    if service is None:
        return _refused(
            app,
            Refusal(
                "not-found", f"no Service {app.namespace}/{app.service} (profile apps.{app.name}.service)"
            ),
        )
    selector = dict((service.get("spec") or {}).get("selector") or {})
    if not selector:
        return _refused(
            app,
            Refusal(
                "input",
                f"Service {app.service} has no selector (its endpoints are managed by hand): Greenlight "
                "moves traffic by changing the selector",
            ),
        )
    live = selector.get(app.colour_label)
    if live is not None:
        return _plan_coloured(app, service, preview, deployments, selector, live)
    return _plan_plain(app, service, preview, deployments, pods, hpas, selector, tag_digest)


def _refused(app: AdoptApp, *refusals: Refusal, source: str | None = None) -> AdoptPlan:
    return AdoptPlan(
        app.name,
        "refused",
        f"{app.name} cannot be adopted: " + "; ".join(r.reason for r in refusals),
        source=source,
        refusals=tuple(refusals),
    )


def _is_copy(dep: Obj | None, source: str | None = None) -> bool:
    """Made by an adoption (of ``source`` when given)."""
    if dep is None:
        return False
    made_from = _annotations(dep).get(ADOPTED_FROM)
    return bool(made_from) and (source is None or made_from == source)


def _preview_ok(app: AdoptApp, preview: Obj, narrowed: Mapping[str, str]) -> bool:
    sel = dict((preview.get("spec") or {}).get("selector") or {})
    want = {**narrowed, app.colour_label: app.other_colour}
    return sel == want or (sel.get(app.colour_label) in app.colours and sel.get(APP_LABEL) == app.name)


def _plan_coloured(
    app: AdoptApp,
    service: Obj,
    preview: Obj | None,
    deployments: Sequence[Obj],
    selector: Mapping[str, str],
    live: str,
) -> AdoptPlan:
    """The Service selects a colour already: in shape, or an adoption to finish."""
    if live not in app.colours:
        return _refused(
            app,
            Refusal(
                "input",
                f"Service {app.service} selects {app.colour_label}={live}, not one of the profile's colours "
                f"{app.colours[0]}/{app.colours[1]}",
            ),
        )
    by_name = {_name(d): d for d in deployments}
    dep = by_name.get(app.deployment(live))
    if dep is None:
        return _refused(
            app,
            Refusal(
                "conflict",
                f"Service {app.service} selects {app.colour_label}={live} but there is no Deployment "
                f"{app.deployment(live)}: not a shape Greenlight made; fix the selector or the Deployment by hand",
            ),
        )
    steps: list[AdoptStep] = []
    source_name = _annotations(dep).get(ADOPTED_FROM)
    source = by_name.get(source_name) if source_name else None
    if preview is None:
        steps.append(_preview_step(app, service, selector, source_name or "", done=False))
    elif not _preview_ok(app, preview, selector):
        return _refused(app, _preview_taken(app, preview))
    if source is not None and _replicas(source) > 0:
        steps.append(_scale_down_step(app, source, app.deployment(live)))
    if not steps:
        note = f" (adopted from {source_name}, kept at 0 replicas)" if source is not None else ""
        return AdoptPlan(
            app.name,
            "in-shape",
            f"{app.name} is already blue-green: Service {app.service} selects {app.colour_label}={live} "
            f"(Deployment {app.deployment(live)}){note}; nothing to do",
            colour=live,
            source=source_name,
            replicas=_replicas(dep),
        )
    done = [
        AdoptStep("create-deployment", f"deployments/{app.deployment(live)}", "exists", done=True),
        AdoptStep("await-serving", f"deployments/{app.deployment(live)}", "serves", done=True),
        AdoptStep(
            "narrow-service", f"services/{app.service}", f"selects {app.colour_label}={live}", done=True
        ),
    ]
    return AdoptPlan(
        app.name,
        "resume",
        f"{app.name}: an adoption was interrupted after narrowing Service {app.service} to "
        f"{app.colour_label}={live}: finishing it",
        colour=live,
        source=source_name,
        image=container_image(dep, app.container),
        replicas=_replicas(dep),
        steps=(*done, *steps),
    )


def _preview_taken(app: AdoptApp, preview: Obj) -> Refusal:
    sel = (preview.get("spec") or {}).get("selector") or {}
    return Refusal(
        "conflict",
        f"a Service named {app.preview} (the profile's preview Service) exists and is not a preview of "
        f"{app.name} (selector {json.dumps(sel, sort_keys=True)}): rename it or set apps.{app.name}.preview_service",
    )


def _plan_plain(
    app: AdoptApp,
    service: Obj,
    preview: Obj | None,
    deployments: Sequence[Obj],
    pods: Sequence[Obj],
    hpas: Sequence[Obj],
    selector: Mapping[str, str],
    tag_digest: str | None,
) -> AdoptPlan:
    by_name = {_name(d): d for d in deployments}
    serving = [d for d in deployments if service_selects(selector, _template_labels(d))]
    copies = [d for d in serving if _is_copy(d) and _name(d) in {app.deployment(c) for c in app.colours}]
    plain = [d for d in serving if d not in copies]
    if not plain:
        return _refused(
            app,
            Refusal(
                "not-found",
                f"no Deployment in {app.namespace} has pods that Service {app.service}'s selector "
                f"{json.dumps(selector, sort_keys=True)} selects: nothing to adopt",
            ),
        )
    if len(plain) > 1:
        names = ", ".join(sorted(_name(d) for d in plain))
        return _refused(
            app,
            Refusal(
                "conflict",
                f"Service {app.service} selects the pods of more than one Deployment ({names}): adopt needs "
                "exactly one behind it; narrow the Service's selector or remove the extra Deployment",
            ),
        )
    source = plain[0]
    src = _name(source)
    refusals: list[Refusal] = []
    colour = app.live_colour
    target = app.deployment(colour)

    # what is not a Deployment's pod, or of another Deployment, must not be behind the Service
    strays = sorted(
        _name(p)
        for p in pods
        if service_selects(selector, _meta(p).get("labels") or {})
        and not any(
            selector_matches((d.get("spec") or {}).get("selector"), _meta(p).get("labels") or {})
            for d in serving
        )
    )
    if strays:
        refusals.append(
            Refusal(
                "conflict",
                f"Service {app.service} also selects pods of no Deployment behind it ({', '.join(strays[:5])}"
                f"{', ...' if len(strays) > 5 else ''}): they would keep serving next to the colours",
            )
        )
    labels = _template_labels(source)
    if app.colour_label in labels:
        refusals.append(
            Refusal(
                "conflict",
                f"Deployment {src} already has {app.colour_label}={labels[app.colour_label]} in its pod "
                f"template while Service {app.service} does not select on {app.colour_label}: a half-made "
                "blue-green shape adopt will not guess about; remove the label or finish the shape by hand",
            )
        )
    if labels.get(APP_LABEL, app.name) != app.name:
        refusals.append(
            Refusal(
                "input",
                f"Deployment {src}'s pods are labelled {APP_LABEL}={labels[APP_LABEL]} but the profile's app is "
                f"'{app.name}': Greenlight finds an app's pods by {APP_LABEL}=<app name>; name the app "
                f"'{labels[APP_LABEL]}' in the profile",
            )
        )
    for c in app.colours:
        name = app.deployment(c)
        if src == name or src.startswith(name + "-"):
            refusals.append(
                Refusal(
                    "conflict",
                    f"Deployment {src} is named like the {c} colour's ({name}): Greenlight would count its pods "
                    f"as {c}'s; rename it first",
                )
            )
        other = by_name.get(name)
        if other is not None and not _is_copy(other, src):
            refusals.append(
                Refusal(
                    "conflict",
                    f"a Deployment named {name} (the {c} colour's name) exists and was not made by adopt: "
                    "rename or remove it",
                )
            )
    if preview is not None and not _preview_ok(app, preview, {**selector, APP_LABEL: app.name}):
        refusals.append(_preview_taken(app, preview))
    for hpa in hpas:
        ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
        if ref.get("kind") == "Deployment" and ref.get("name") == src:
            refusals.append(
                Refusal(
                    "conflict",
                    f"HorizontalPodAutoscaler {_name(hpa)} scales Deployment {src}: it would scale the old "
                    f"Deployment back up and not the colour; delete it, adopt, then create it for {target} "
                    "(Greenlight carries an HPA named after the live colour's Deployment to the next colour)",
                )
            )
    replicas = _replicas(source)
    if replicas < 1:
        refusals.append(
            Refusal(
                "input",
                f"Deployment {src} is scaled to 0: nothing serves, so there is nothing to keep serving; "
                "scale it up, or delete it and let a first release bootstrap the app",
            )
        )
    status = source.get("status") or {}
    generation = _meta(source).get("generation")
    settled = (
        (generation is None or status.get("observedGeneration") == generation)
        and int(status.get("updatedReplicas") or 0) == replicas
        and int(status.get("readyReplicas") or 0) == replicas
        and int(status.get("replicas") or 0) == replicas
    )
    if replicas >= 1 and not settled:
        refusals.append(
            Refusal(
                "conflict",
                f"Deployment {src} is mid-rollout or not all ready ({int(status.get('readyReplicas') or 0)}/"
                f"{replicas} ready, {int(status.get('updatedReplicas') or 0)} updated): wait until it settles",
            )
        )
    image, digest, image_refusal, notes = _pinned_image(app, source, pods, tag_digest)
    if image_refusal is not None:
        refusals.append(image_refusal)
    if refusals:
        return _refused(app, *refusals, source=src)

    assert image is not None and digest is not None
    pod_spec = ((source.get("spec") or {}).get("template") or {}).get("spec") or {}
    warnings = (*notes, *shutdown_findings(app.name, pod_spec, app.container, app.propagation_s))
    existing = by_name.get(target)
    narrowed = {**selector, APP_LABEL: app.name, app.colour_label: colour}
    added = ", ".join(f"{k}={v}" for k, v in narrowed.items() if k not in selector)
    steps = (
        AdoptStep(
            "create-deployment",
            f"deployments/{target}",
            f"a copy of {src} with {added} on its pods and selector, image {image}, {replicas} replica(s)",
            colour_deployment(app, source, colour, image),
            done=existing is not None,
        ),
        AdoptStep(
            "await-serving",
            f"deployments/{target}",
            f"all {replicas} pod(s) of {target} ready and in Service {app.service}'s Endpoints beside {src}'s, "
            f"then the data plane's propagation allowance ({app.propagation_s:g} s)",
        ),
        AdoptStep(
            "narrow-service",
            f"services/{app.service}",
            f"selector {_sel(selector)} -> {_sel(narrowed)}: only {target}'s pods serve; records live colour "
            f"{colour} and digest {digest[:19]}",
            narrow_patch(app, service, selector, narrowed, digest),
        ),
        _preview_step(app, service, narrowed, src, done=preview is not None),
        _scale_down_step(app, source, target),
    )
    resumed = existing is not None
    return AdoptPlan(
        app.name,
        "resume" if resumed else "adopt",
        (
            f"{app.name}: Deployment {src} ({replicas} replica(s), {image}) behind Service {app.service} becomes "
            f"the {colour} colour"
            + (f" ({target} already made by an interrupted adoption)" if resumed else "")
        ),
        colour=colour,
        source=src,
        image=image,
        digest=digest,
        replicas=replicas,
        steps=steps,
        warnings=tuple(warnings),
    )


def _sel(selector: Mapping[str, str]) -> str:
    return "{" + ", ".join(f"{k}={v}" for k, v in selector.items()) + "}"


def _pinned_image(
    app: AdoptApp, source: Obj, pods: Sequence[Obj], tag_digest: str | None
) -> tuple[str | None, str | None, Refusal | None, tuple[str, ...]]:
    """(image pinned by digest, digest, refusal, notes) for the copy: what the pods run now."""
    src = _name(source)
    text = container_image(source, app.container)
    if text is None:
        names = [
            c.get("name")
            for c in ((source.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers")
            or []
        ]
        return (
            None,
            None,
            Refusal(
                "input",
                f"Deployment {src} has no container '{app.container}' (it has {', '.join(map(str, names)) or 'none'}): "
                f"set apps.{app.name}.container",
            ),
            (),
        )
    try:
        ref = parse_image_ref(text)
        if ref.name != parse_image_ref(app.image_repository).name:
            return (
                None,
                None,
                Refusal(
                    "input",
                    f"Deployment {src} runs {ref.name}, not the profile's apps.{app.name}.image_repository "
                    f"{app.image_repository}: releases would deploy another image; fix the profile",
                ),
                (),
            )
        if app.allowed:
            check_allowed(ref, list(app.allowed))
    except InputInvalid as e:
        return None, None, Refusal("input", str(e)), ()
    owned = [
        p
        for p in pods
        if selector_matches((source.get("spec") or {}).get("selector"), _meta(p).get("labels") or {})
    ]
    running = running_digests(owned, app.container)
    notes: tuple[str, ...] = ()
    if ref.digest is not None:
        digest = ref.digest
    elif len(running) > 1:
        return (
            None,
            None,
            Refusal(
                "conflict",
                f"Deployment {src}'s pods run {len(running)} different images under tag {ref.tag} "
                f"({', '.join(sorted(d[:19] for d in running))}): roll it to one image first",
            ),
            (),
        )
    elif running:
        digest = next(iter(running))
        if tag_digest and tag_digest != digest:
            notes = (
                f"{app.name}: tag {ref.tag} now names {tag_digest[:19]}, but the pods run {digest[:19]}: "
                "the copy runs what runs now",
            )
    elif tag_digest:
        digest = tag_digest
        notes = (
            f"{app.name}: the pods report no image digest; tag {ref.tag} resolves to {digest[:19]} at the registry",
        )
    else:
        return (
            None,
            None,
            Refusal(
                "input",
                f"cannot tell which digest Deployment {src} runs (image {text}, no digest in its pods' status)",
            ),
            (),
        )
    try:
        pinned = str(ref.pinned(digest))
    except InputInvalid as e:
        return None, None, Refusal("input", str(e)), ()
    return pinned, digest, None, notes


def colour_deployment(app: AdoptApp, source: Obj, colour: str, image: str) -> dict[str, Any]:
    """The colour's Deployment: a copy of the plain one with the app and colour labels added to its
    labels, selector and pod template, the container's image pinned, marked as adopted."""
    dep = _strip(source)
    meta = dep["metadata"]
    extra = {APP_LABEL: app.name, app.colour_label: colour}
    meta["name"] = app.deployment(colour)
    meta["namespace"] = app.namespace
    meta["labels"] = {**(meta.get("labels") or {}), **extra, MANAGED_BY: "greenlight"}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in DROPPED_ANNOTATIONS}
    annotations[ADOPTED_FROM] = _name(source)
    meta["annotations"] = annotations
    meta.pop("ownerReferences", None)
    spec = dep["spec"]
    spec["replicas"] = _replicas(source)
    selector = spec.setdefault("selector", {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), **extra}
    tmeta = spec.setdefault("template", {}).setdefault("metadata", {})
    tmeta["labels"] = {**(tmeta.get("labels") or {}), **extra}
    for c in spec["template"].get("spec", {}).get("containers") or []:
        if c.get("name") == app.container:
            c["image"] = image
    return dep


def narrow_patch(
    app: AdoptApp, service: Obj, selector: Mapping[str, str], narrowed: Mapping[str, str], digest: str
) -> dict[str, Any]:
    """The merge patch that narrows the live Service to the colour and writes the record, guarded by
    the resourceVersion read (a Service changed since is a Conflict)."""
    patch: dict[str, Any] = {
        "metadata": {
            "annotations": {
                ACTIVE_COLOUR: narrowed[app.colour_label],
                RELEASE_ID: ADOPTED_RELEASE,
                DIGESTS: json.dumps({app.name: digest}, sort_keys=True),
                ADOPTED_SELECTOR: json.dumps(dict(selector), sort_keys=True),
            }
        },
        "spec": {"selector": dict(narrowed)},
    }
    rv = _meta(service).get("resourceVersion")
    if rv:
        patch["metadata"]["resourceVersion"] = rv
    return patch


def restore_patch(service: Obj) -> dict[str, Any] | None:
    """The merge patch that returns an adopted live Service to its selector before adoption and
    drops the record adoption wrote; None when the Service was not narrowed by adopt."""
    annotations = _annotations(service)
    text = annotations.get(ADOPTED_SELECTOR)
    if not text:
        return None
    try:
        before = json.loads(text)
    except ValueError:
        return None
    if not isinstance(before, dict):
        return None
    now = dict((service.get("spec") or {}).get("selector") or {})
    selector: dict[str, Any] = {k: None for k in now if k not in before}
    selector.update({str(k): str(v) for k, v in before.items()})
    drop = {k: None for k in (ACTIVE_COLOUR, RELEASE_ID, DIGESTS, ADOPTED_SELECTOR) if k in annotations}
    patch: dict[str, Any] = {"metadata": {"annotations": drop}, "spec": {"selector": selector}}
    rv = _meta(service).get("resourceVersion")
    if rv:
        patch["metadata"]["resourceVersion"] = rv
    return patch


def preview_service(app: AdoptApp, service: Obj, narrowed: Mapping[str, str], source: str) -> dict[str, Any]:
    """The preview Service: the live one's ports (ClusterIP, no node ports) selecting the other colour."""
    spec = service.get("spec") or {}
    ports = []
    for p in spec.get("ports") or []:
        port = {k: v for k, v in p.items() if k != "nodePort"}
        ports.append(port)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": app.preview,
            "namespace": app.namespace,
            "labels": {**(_meta(service).get("labels") or {}), APP_LABEL: app.name, MANAGED_BY: "greenlight"},
            "annotations": {ADOPTED_FROM: source},
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {**narrowed, app.colour_label: app.other_colour},
            "ports": ports,
        },
    }


def _preview_step(
    app: AdoptApp, service: Obj, narrowed: Mapping[str, str], source: str, done: bool
) -> AdoptStep:
    body = preview_service(app, service, narrowed, source)
    return AdoptStep(
        "create-preview",
        f"services/{app.preview}",
        f"the preview Service, selecting {_sel(body['spec']['selector'])} (no pods until a release)",
        body,
        done=done,
    )


def _scale_down_step(app: AdoptApp, source: Obj, target: str) -> AdoptStep:
    src = _name(source)
    n = _replicas(source)
    return AdoptStep(
        "scale-down-old",
        f"deployments/{src}",
        f"{src} scaled from {n} to 0 once the propagation allowance ({app.propagation_s:g} s) has passed "
        f"since the narrowing; kept, annotated {ADOPTED_INTO}={target} and {ADOPTED_REPLICAS}={n} "
        f"(to bring it back: kubectl scale deployment {src} --replicas={n}, and restore the Service's selector)",
        {"metadata": {"annotations": {ADOPTED_INTO: target, ADOPTED_REPLICAS: str(n)}}},
    )


def plan_lines(plan: AdoptPlan) -> list[str]:
    """The plan as lines for a person: outcome, each step (done ones marked), warnings."""
    lines = [plan.reason]
    for i, step in enumerate(plan.steps, 1):
        mark = "done   " if step.done else "pending"
        lines.append(f"  {i}. [{mark}] {step.action} {step.target}: {step.description}")
    lines += [f"  warning: {w}" for w in plan.warnings]
    return lines


@dataclass(frozen=True)
class UndoState:
    """What an adoption left behind, read back for an undo."""

    restore: Mapping[str, Any] | None = None  # the live Service's restore patch
    delete_preview: bool = False
    copies: tuple[str, ...] = ()  # colour Deployments made by adopt
    scale_up: tuple[tuple[str, int], ...] = ()  # plain Deployments scaled down by adopt, and to what

    @property
    def empty(self) -> bool:
        return self.restore is None and not self.delete_preview and not self.copies and not self.scale_up


def plan_undo(
    app: AdoptApp, service: Obj | None, preview: Obj | None, deployments: Sequence[Obj]
) -> UndoState:
    """What to take back to return the app to its plain shape: only what adopt marked as its own."""
    copies = tuple(
        sorted(
            _name(d)
            for d in deployments
            if _name(d) in {app.deployment(c) for c in app.colours} and _is_copy(d)
        )
    )
    scale_up = []
    for d in deployments:
        into = _annotations(d).get(ADOPTED_INTO)
        if into and _replicas(d) == 0:
            try:
                n = int(_annotations(d).get(ADOPTED_REPLICAS) or 1)
            except ValueError:
                n = 1
            scale_up.append((_name(d), max(n, 1)))
    return UndoState(
        restore=restore_patch(service) if service is not None else None,
        delete_preview=preview is not None and bool(_annotations(preview).get(ADOPTED_FROM)),
        copies=copies,
        scale_up=tuple(sorted(scale_up)),
    )
