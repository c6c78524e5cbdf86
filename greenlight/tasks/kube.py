"""Kubernetes tasks for blue-green releases: read state, deploy a colour, wait, switch, scale.

Every write reads the object first and guards itself with the resourceVersion it read, so a
concurrent writer (a rollback, a person with kubectl) makes the write fail with Conflict
instead of being silently overwritten.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from string import Template
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from prefect import task

from greenlight.clients.kube import Kube
from greenlight.clients.registry import PASSWORD_ENV as REGISTRY_PASSWORD_ENV
from greenlight.clients.slack import TOKEN_ENV as SLACK_TOKEN_ENV
from greenlight.core.httproute import colour_service
from greenlight.core.images import parse_image_ref
from greenlight.core.manifests import ANNOTATION_PREFIX, AppShape, render_bootstrap
from greenlight.core.redact import redact
from greenlight.core.release import AppState, ColourState
from greenlight.core.rollout import RolloutAssessment, assess_rollout
from greenlight.core.switch import (
    ROLLBACK_OVERLAP,
    EndpointReadiness,
    Overlap,
    RollbackStep,
    SwitchStep,
    TrafficSnapshot,
    decide_rollback,
    decide_switch,
    endpoint_readiness,
    follows,
)
from greenlight.core.traffic import ArrivalPhase, decide_arrival, decide_drain, shutdown_findings
from greenlight.errors import Conflict, GateFailed, GreenlightError, InputInvalid, NotFound, TransientError
from greenlight.settings import APP_TEMPLATE, App, Profile, manifest_path
from greenlight.tasks.cluster import cluster
from greenlight.tasks.database import scratch_url_password
from greenlight.tasks.metrics import request_count
from greenlight.tasks.notify import slack_token_from_block
from greenlight.tasks.policy import FRESH, RETRIES, logger
from greenlight.tasks.registry import registry_credentials
from greenlight.tasks.routers import router_for

SWITCHED_AT = ANNOTATION_PREFIX + "switched-at"
RELEASE_OF = ANNOTATION_PREFIX + "release-id"
TEMPLATE = APP_TEMPLATE
CLONED_KINDS = ("horizontalpodautoscalers", "poddisruptionbudgets")
OBSERVE_AFTER_S = 1.0  # requests recorded this soon after a move may be the gate's last synthetic ones
ARRIVAL_POLL_S = 0.25  # a release of many apps polls for each in parallel: keep it light
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


def deployment_name(app: App, colour: str) -> str:
    return f"{app.name}-{colour}"


def container_digest(dep: dict[str, Any], container: str) -> str | None:
    for c in (dep.get("spec") or {}).get("template", {}).get("spec", {}).get("containers") or []:
        if c.get("name") == container:
            image = str(c.get("image") or "")
            return image.split("@", 1)[1] if "@" in image else None
    return None


def _colour_state(dep: dict[str, Any] | None, app: App, colour: str) -> ColourState | None:
    if dep is None:
        return None
    st = dep.get("status") or {}
    return ColourState(
        colour=colour,
        digest=container_digest(dep, app.container),
        replicas=int((dep.get("spec") or {}).get("replicas", 0) or 0),
        ready=int(st.get("readyReplicas", 0) or 0),
    )


@task(name="read-app-state", **FRESH, **RETRIES)
def read_app_state(profile: Profile, app_name: str) -> AppState:
    """What routes the app's live traffic (its router's snapshot) and its colours' Deployments,
    as read from the cluster now."""
    app = profile.app(app_name)
    ns = profile.namespace
    with cluster(profile) as kube:
        live = router_for(profile).read(kube, profile, app)
        deps = {
            c: _colour_state(kube.find("deployments", deployment_name(app, c), ns), app, c)
            for c in profile.release.colours
        }
    return AppState(
        name=app.name,
        traffic=live,
        deployments={c: s for c, s in deps.items() if s is not None},
    )


def _strip(obj: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    for f in SERVER_FIELDS:
        meta.pop(f, None)
    out.pop("status", None)
    return out


def _recolour(labels: dict[str, str] | None, label: str, colour: str) -> dict[str, str]:
    return {**(labels or {}), label: colour}


def _shape(profile: Profile, app: App) -> AppShape:
    return AppShape(
        app=app.name, namespace=profile.namespace, service=app.service, preview_service=app.preview,
        container=app.container, port=app.port, health_path=app.health_path, replicas=app.replicas,
        colour_label=profile.release.colour_label, progress_deadline_s=int(profile.release.progress_deadline_s),
        prestop_s=math.ceil(profile.release.propagation_s) + 2,
    )  # fmt: skip


def colour_deployment(
    profile: Profile,
    app: App,
    source: dict[str, Any] | None,
    colour: str,
    other: str,
    image: str,
    release_id: str,
) -> dict[str, Any]:
    """The target colour's Deployment: the source colour's spec (or the manifests) with the new image and colour."""
    label = profile.release.colour_label
    if source is None:
        docs = render_bootstrap(TEMPLATE.read_text(), _shape(profile, app), colour, other, image)
        dep = next(d for d in docs if d["kind"] == "Deployment")
    else:
        dep = _strip(source)
        meta = dep["metadata"]
        meta["name"] = deployment_name(app, colour)
        meta["labels"] = _recolour(meta.get("labels"), label, colour)
        spec = dep["spec"]
        spec["selector"]["matchLabels"] = _recolour(spec["selector"].get("matchLabels"), label, colour)
        tmpl = spec["template"].setdefault("metadata", {})
        tmpl["labels"] = _recolour(tmpl.get("labels"), label, colour)
        found = False
        for c in spec["template"]["spec"]["containers"]:
            if c.get("name") == app.container:
                c["image"] = image
                found = True
        if not found:
            raise InputInvalid(
                f"Deployment {source['metadata']['name']} has no container '{app.container}' (profile apps.{app.name}.container)"
            )
        spec["replicas"] = app.replicas
        spec.setdefault("progressDeadlineSeconds", int(profile.release.progress_deadline_s))
    dep["metadata"].setdefault("annotations", {})[RELEASE_OF] = release_id
    dep["metadata"]["namespace"] = profile.namespace
    return dep


def _clone_companions(kube: Kube, profile: Profile, app: App, source: str, target: str) -> list[str]:
    """Clone the HPA / PDB of the source colour's Deployment onto the target colour."""
    ns, label = profile.namespace, profile.release.colour_label
    src_name, dst_name = deployment_name(app, source), deployment_name(app, target)
    cloned = []
    for plural in CLONED_KINDS:
        obj = kube.find(plural, src_name, ns)
        if obj is None:
            continue
        new = _strip(obj)
        new["metadata"]["name"] = dst_name
        spec = new.get("spec") or {}
        if plural == "horizontalpodautoscalers" and "scaleTargetRef" in spec:
            spec["scaleTargetRef"]["name"] = dst_name
        if plural == "poddisruptionbudgets" and "selector" in spec:
            spec["selector"]["matchLabels"] = _recolour(spec["selector"].get("matchLabels"), label, target)
        existing = kube.find(plural, dst_name, ns)
        if existing is None:
            kube.create(plural, new, ns)
        else:
            new["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            kube.replace(plural, dst_name, new, ns)
        cloned.append(f"{plural}/{dst_name}")
    return cloned


@task(name="deploy-colour", **FRESH, **RETRIES)
def deploy_colour(
    profile: Profile, app_name: str, colour: str, source_colour: str | None, digest: str, release_id: str
) -> dict[str, Any]:
    """Put ``digest`` on ``colour``: copy the source colour's Deployment (or the manifests), create or replace it."""
    app = profile.app(app_name)
    ref = parse_image_ref(app.image_repository).pinned(digest)
    image = str(ref)
    other = source_colour or next(c for c in profile.release.colours if c != colour)
    ns = profile.namespace
    log = logger()
    with cluster(profile) as kube:
        source = kube.find("deployments", deployment_name(app, source_colour), ns) if source_colour else None
        body = colour_deployment(profile, app, source, colour, other, image, release_id)
        name = body["metadata"]["name"]
        existing = kube.find("deployments", name, ns)
        if existing is None:
            kube.create("deployments", body, ns)
            action = "created"
        else:
            body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
            kube.replace("deployments", name, body, ns)
            action = "replaced"
        companions = _clone_companions(kube, profile, app, source_colour, colour) if source_colour else []
    log.info(
        "%s deployment %s/%s with %s%s",
        action,
        ns,
        name,
        image,
        f" (+ {', '.join(companions)})" if companions else "",
    )
    return {"deployment": name, "image": image, "action": action, "companions": companions}


def poll_pause(e: TransientError, remaining_s: float, what: str, until: str, poll_s: float) -> None:
    """In a poll loop that read ``e``: once ``remaining_s`` is spent, raise it (a TransientError
    saying ``what`` was unreadable until ``until``, keeping its status); else log it and pause the
    server's Retry-After, or ``poll_s``, but never past the deadline."""
    if remaining_s <= 0:
        raise TransientError(
            f"{what} unreadable until {until}: {e}", retry_after=e.retry_after, status=e.status, code=e.code
        ) from e
    logger().warning("reading %s: %s (will retry)", what, e)
    time.sleep(min(max(poll_s, e.retry_after or 0.0), remaining_s))


@task(name="wait-rollout", **FRESH)
def wait_rollout(profile: Profile, app_name: str, colour: str, poll_s: float = 0.5) -> RolloutAssessment:
    """Wait until the colour's Deployment is available; raise GateFailed at once on a failed rollout
    (ImagePullBackOff, CrashLoopBackOff, progress deadline), with the reason."""
    app = profile.app(app_name)
    name, ns = deployment_name(app, colour), profile.namespace
    started = time.time()
    deadline = profile.release.progress_deadline_s
    with cluster(profile) as kube:
        while True:
            try:
                dep = kube.get("deployments", name, ns)
                sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
                pods = kube.items("pods", ns, label_selector=sel)
            except TransientError as e:
                remaining = started + deadline - time.time()
                poll_pause(e, remaining, f"{app.name}: rollout of {name}", "the progress deadline", poll_s)
                continue
            verdict = assess_rollout(dep, pods, time.time(), started, deadline, label=f"{colour}")
            if verdict.phase == "available":
                return verdict
            if verdict.phase == "failed":
                raise GateFailed(f"{app.name}: rollout of {name} failed: {verdict.reason}")
            time.sleep(poll_s)


@task(name="point-preview", **FRESH, **RETRIES)
def point_preview(profile: Profile, app_name: str, colour: str) -> str:
    """Point the app's preview Service at ``colour`` (creating it from the live one if missing:
    with an HTTPRoute, from the colour's own Service, the route's backend)."""
    app = profile.app(app_name)
    ns, label = profile.namespace, profile.release.colour_label
    with cluster(profile) as kube:
        svc = kube.find("services", app.preview, ns)
        if svc is None:
            model = (
                colour_service(app.service, colour)
                if profile.traffic.router == "gateway-httproute"
                else app.service
            )
            live = kube.get("services", model, ns)
            body = _strip(live)
            body["metadata"] = {
                "name": app.preview,
                "namespace": ns,
                "labels": live["metadata"].get("labels") or {},
            }
            body["spec"].pop("clusterIP", None)
            body["spec"].pop("clusterIPs", None)
            body["spec"]["selector"] = _recolour(body["spec"].get("selector"), label, colour)
            kube.create("services", body, ns)
            return f"created preview Service {app.preview} selecting {colour}"
        if svc["spec"].get("selector", {}).get(label) == colour:
            return f"preview Service {app.preview} already selects {colour}"
        kube.patch(
            "services", app.preview,
            {"metadata": {"resourceVersion": svc["metadata"]["resourceVersion"]},
             "spec": {"selector": _recolour(svc["spec"].get("selector"), label, colour)}},
            ns,
        )  # fmt: skip
        return f"preview Service {app.preview} now selects {colour}"


def _terminating(pod: dict[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def colour_endpoints(kube: Kube, profile: Profile, app: App, colour: str) -> EndpointReadiness:
    """Ready pods of the colour, counted as the Service will see them (the Endpoints of its preview).

    Terminating pods (a deletionTimestamp: a scale-down or rollout still shutting them down) are
    not counted at all: they have left every Service's endpoints and will not come back."""
    ns, label = profile.namespace, profile.release.colour_label
    expected = _replicas(kube, profile, app, colour)
    pods = [
        p
        for p in kube.items("pods", ns, label_selector=f"app={app.name},{label}={colour}")
        if not _terminating(p)
    ]
    ready = sum(
        1 for p in pods
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in (p.get("status") or {}).get("conditions") or [])
    )  # fmt: skip
    return EndpointReadiness(ready=ready, not_ready=len(pods) - ready, expected=expected)


def live_snapshot(kube: Kube, profile: Profile, app: App) -> TrafficSnapshot:
    """The router's snapshot of what routes ``app``'s live traffic (NotFound when it is missing)."""
    snap = router_for(profile).read(kube, profile, app)
    if snap is None:
        raise NotFound(f"{app.name}: no live Service {profile.namespace}/{app.service}")
    return snap


def await_arrival(
    kube: Kube, profile: Profile, app: App, colour: str, phase: ArrivalPhase, since: datetime
) -> str:
    """Wait until the app's live traffic has moved to ``colour`` (see core.traffic.decide_arrival):
    the router's data plane shows the colour (the live Service's Endpoints; an HTTPRoute
    programmed with its Services' endpoints), then requests arrive on it in Monitoring or the
    propagation allowance passes. Returns the reason; GateFailed when it never settles."""
    log = logger()
    rel = profile.release
    expected = _replicas(kube, profile, app, colour)
    deadline = time.monotonic() + rel.settle_timeout_s
    observe_from = since + timedelta(seconds=OBSERVE_AFTER_S)
    settled_at: float | None = None
    monitoring = True
    router = router_for(profile)
    while True:
        seen = router.observe(kube, profile, app)
        by_colour = seen.by_colour
        settled_for = None if settled_at is None else time.monotonic() - settled_at
        observed = None
        now = datetime.now(UTC)
        if settled_for is not None and monitoring and phase == "moved" and now > observe_from:
            try:
                observed = request_count(profile, app.name, colour, observe_from, now)
            except GreenlightError as e:  # no observation: the propagation allowance decides
                monitoring = False
                log.warning("%s: cannot watch traffic arrive on %s: %s", app.name, colour, e)
        arrival = decide_arrival(
            phase, seen.where, colour, expected, by_colour, settled_for, rel.propagation_s, observed
        )
        if arrival.done:
            return arrival.reason
        if arrival.settled and settled_at is None:
            settled_at = time.monotonic()
            continue
        if not arrival.settled:
            settled_at = None
        if time.monotonic() > deadline:
            raise GateFailed(
                f"{app.name}: traffic did not move to {colour} within {rel.settle_timeout_s:g} s: {arrival.reason}"
            )
        time.sleep(ARRIVAL_POLL_S)


@task(name="switch-traffic", **FRESH, **RETRIES)
def switch_service(
    profile: Profile,
    app_name: str,
    colour: str,
    release_id: str,
    digests: dict[str, str],
    wait_s: float = 30.0,
    expected_rv: str | None = None,
    confirm: bool = True,
    overlap_awaited: bool = False,
    weight: int | None = None,
    after: Overlap | None = None,
) -> SwitchStep:
    """Point the app's live traffic at ``colour`` through the profile's router (the live Service's
    selector, an HTTPRoute's weights); with ``confirm``, wait until its traffic has moved.

    Only when every pod of the colour is ready (waits up to ``wait_s``); ``noop`` when already
    there. Each patch is guarded by the resourceVersion read. In overlap mode (see
    the router's ``mode``) the selector is first widened to both colours, and narrowed to
    ``colour`` once the new colour serves. With ``confirm`` (a switch by hand) the whole move is
    done here and the step returned once the live Endpoints hold the colour and requests arrive
    on it or the propagation allowance has passed (``await_arrival``); its reason says which.
    Without it (a release, moving many apps at once) only the next patch is made: ``switch``,
    ``widen``, or ``narrow`` once the caller has waited for the overlap (``overlap_awaited``; else
    a ``widen`` step without a patch says the overlap is under way), and the caller waits for
    the arrivals (``await_traffic``). ``weight``: a progressive step (HTTPRoute), the new
    colour's share; ``widen`` to it (the caller waits for its arrival and judges it).
    A Conflict (someone else changed the Service since it was read) is not retried: the release stops.
    ``expected_rv``: the snapshot's ``guard`` the release planned with (a Service's
    resourceVersion; a route's generation and record); one changed since (a rollback, a person)
    is a Conflict too, so a release never overrides what happened meanwhile. ``after``: for a
    release's later moves, the record its previous move wrote; the object must still be where
    that move left it (``core.switch.follows``), else Conflict, however far it was moved.
    """
    app = profile.app(app_name)
    ns = profile.namespace
    deadline = time.monotonic() + wait_s
    widened = ""
    router = router_for(profile)
    with cluster(profile) as kube:
        while True:
            snap = live_snapshot(kube, profile, app)
            what = f"live {snap.kind} {snap.name}"
            if expected_rv is not None and snap.guard != expected_rv:
                landed = _own_switch(snap, colour, release_id)
                if landed is None:
                    raise Conflict(
                        f"{app.name}: {what} changed since the release planned "
                        f"({expected_rv} -> {snap.guard}; a rollback or a person): not switching"
                    )
                if landed.action == "noop":
                    return landed
            if after is not None and not follows(snap, after):
                this_step = Overlap(after.from_colour, colour, release_id, weight) if weight else None
                if this_step is not None and follows(snap, this_step):  # this very step landed earlier
                    return SwitchStep("widen", f"already at {weight}% to {colour}", snap.name, None, colour)
                if snap.selected == colour and snap.release_id == release_id:  # so did this narrow
                    return SwitchStep(
                        "noop", f"already on {colour} for {release_id}", snap.name, colour, colour
                    )
                raise Conflict(
                    f"{app.name}: {what} is no longer where this release's last move left it "
                    f"({after.text()}; now {_where(snap)}): someone moved traffic meanwhile; not moving it again"
                )
            readiness = router.readiness(kube, profile, app, colour, _replicas(kube, profile, app, colour))
            if readiness is None:
                eps = kube.find("endpoints", app.preview, ns)
                readiness = (
                    endpoint_readiness(eps, _replicas(kube, profile, app, colour))
                    if eps
                    else colour_endpoints(kube, profile, app, colour)
                )
            step = decide_switch(
                snap, colour, readiness, release_id, digests, router.mode(profile, snap), weight
            )
            if step.action == "wait" and time.monotonic() < deadline:
                time.sleep(0.3)
                continue
            if step.action not in ("switch", "widen", "narrow") or step.patch is None:
                return step
            if step.action == "narrow" and not widened and not overlap_awaited:
                # an overlap under way (begun by an earlier attempt or call): the new colour must
                # serve before the old one is taken out
                if not confirm:
                    return replace(step, action="widen", reason=f"overlap to {colour} under way", patch=None)
                since = datetime.now(UTC)
                widened = f"overlap found; {await_arrival(kube, profile, app, colour, 'overlap', since)}; "
                continue  # read the Service again: the wait took a while
            if step.action != "widen":
                step.patch["metadata"]["annotations"][SWITCHED_AT] = datetime.now(UTC).isoformat()
            try:
                moved_at = datetime.now(UTC)
                router.write(kube, profile, app, step.patch)
            except Conflict as e:
                raise Conflict(
                    f"{app.name}: {what} changed since it was read (a rollback or a person): not switching ({e})"
                ) from e
            if not confirm:
                return replace(step, patch=None, at=moved_at.timestamp())
            if step.action == "widen":
                widened = f"{step.reason}; {await_arrival(kube, profile, app, colour, 'overlap', moved_at)}; "
                logger().info("%s: %s", app.name, widened)
                expected_rv = None
                after = Overlap(step.from_colour or "", colour, release_id)
                continue
            arrived = await_arrival(kube, profile, app, colour, "moved", moved_at)
            return replace(step, reason=f"{widened}{step.reason}; {arrived}", at=moved_at.timestamp())


@task(name="await-traffic", **FRESH, **RETRIES)
def await_traffic(profile: Profile, app_name: str, colour: str, phase: ArrivalPhase, since: float) -> str:
    """Wait until the app's live traffic has moved to ``colour`` (``moved``), or reaches it beside
    the old colour (``overlap``), since the epoch second ``since``; see ``await_arrival``."""
    with cluster(profile) as kube:
        moved_at = datetime.fromtimestamp(since, UTC)
        return await_arrival(kube, profile, profile.app(app_name), colour, phase, moved_at)


def _where(snap: TrafficSnapshot) -> str:
    weights = snap.weights
    shares = ", ".join(f"{c} {w}" for c, w in sorted(weights.items())) if weights else f"on {snap.colour()}"
    return shares + (f", record {snap.overlap.text()}" if snap.overlap else ", no overlap recorded")


def _own_switch(snap: TrafficSnapshot, colour: str, release_id: str) -> SwitchStep | None:
    """A step when the change since the planned resourceVersion is this very release's own: an
    earlier attempt's patch landed although its answer was lost (a timeout, a dropped
    connection). ``noop`` when all traffic already goes to ``colour`` for the release; ``widen``
    (to be continued: narrowing, or the next progressive step) when it is mid-overlap towards
    ``colour`` for it; None otherwise."""
    overlap = snap.overlap
    if snap.selected is None and overlap is not None:
        if overlap.to_colour == colour and overlap.release_id == release_id:
            return SwitchStep("widen", f"resuming the overlap switch to {colour}", snap.name, None, colour)
        return None
    if snap.selected != colour or snap.release_id != release_id:
        return None
    return SwitchStep(
        "noop",
        f"already on {colour} for {release_id}: an earlier attempt's switch landed",
        snap.name,
        colour,
        colour,
    )


def _replicas(kube: Kube, profile: Profile, app: App, colour: str) -> int:
    dep = kube.find("deployments", deployment_name(app, colour), profile.namespace)
    return int((dep or {}).get("spec", {}).get("replicas", 0) or 0)


@task(name="colour-releases", **FRESH, **RETRIES)
def colour_releases(profile: Profile, apps: list[str], colour: str) -> dict[str, tuple[str, str]]:
    """app -> (the release ``colour`` runs, its digest), read from the colour's Deployment (a
    colour deployed by hand has no release: ``manual-<colour>``). InputInvalid for an app without one."""
    out: dict[str, tuple[str, str]] = {}
    with cluster(profile) as kube:
        for name in apps:
            a = profile.app(name)
            dep = kube.find("deployments", deployment_name(a, colour), profile.namespace)
            if dep is None:
                raise InputInvalid(
                    f"{a.name}: no Deployment {deployment_name(a, colour)} in {profile.namespace} to switch to"
                )
            rid = (dep["metadata"].get("annotations") or {}).get(RELEASE_OF) or f"manual-{colour}"
            out[a.name] = (rid, container_digest(dep, a.container) or "")
    return out


@task(name="scale-colour", **FRESH, **RETRIES)
def scale_colour(profile: Profile, app_name: str, colour: str, replicas: int) -> str:
    """Scale a colour's Deployment. Scaling to 0 first deletes the colour's HPA and PDB (an HPA
    would scale it back up; a PDB of no pods blocks node drains): they go with the colour."""
    app = profile.app(app_name)
    name = deployment_name(app, colour)
    removed: list[str] = []
    with cluster(profile) as kube:
        if kube.find("deployments", name, profile.namespace) is None:
            return f"{name}: no such Deployment"
        if replicas == 0:
            removed = [
                f"{plural}/{name}" for plural in CLONED_KINDS if kube.delete(plural, name, profile.namespace)
            ]
        kube.scale(name, profile.namespace, replicas)
    return f"{name} scaled to {replicas}" + (f" (deleted {', '.join(removed)})" if removed else "")


@task(name="rollback-app", **FRESH, **RETRIES)
def rollback_app(profile: Profile, app_name: str, reason: str, wait_s: float | None = None) -> RollbackStep:
    """Return the app's live traffic to its recorded previous colour (through the profile's
    router), scaling it up and waiting for readiness first when it was scaled down, then wait
    until traffic has arrived there.

    Refused when the previous colour no longer runs the previous release's digest (a release
    deployed onto it). Every step re-reads the cluster, so a retry after a transient error (the
    task retries those) resumes where the last attempt stopped. Returns the final step (switch,
    noop or refuse); ``at`` is when the patch that restored traffic was sent."""
    app = profile.app(app_name)
    ns = profile.namespace
    deadline = time.monotonic() + (wait_s if wait_s is not None else profile.release.progress_deadline_s)
    log = logger()
    router = router_for(profile)
    with cluster(profile) as kube:
        while True:
            live = live_snapshot(kube, profile, app)
            prev = live.previous_colour
            dep = kube.find("deployments", deployment_name(app, prev), ns) if prev else None
            replicas = int((dep or {}).get("spec", {}).get("replicas", 0) or 0)
            readiness = (
                (router.readiness(kube, profile, app, prev, max(app.replicas, 1))
                 or colour_endpoints(kube, profile, app, prev)) if prev else EndpointReadiness(0, 0, 0)
            )  # fmt: skip
            want = max(app.replicas, 1)
            digest = container_digest(dep, app.container) if dep else None
            step = decide_rollback(
                live, readiness, replicas, want, app.name, digest, router.mode(profile, live)
            )
            if step.action == "scale-up-previous":
                log.info("%s", step.reason)
                current = live.colour()
                if current and prev:  # its HPA/PDB went when it was scaled down: clone the live colour's back
                    _clone_companions(kube, profile, app, current, prev)
                kube.scale(deployment_name(app, prev or ""), ns, step.scale_to or want)
                continue
            if step.action == "wait":
                if time.monotonic() > deadline:
                    raise GateFailed(f"{app.name}: rollback could not proceed: {step.reason}")
                time.sleep(0.2)
                continue
            if step.action not in ("widen", "switch"):
                return step
            assert step.patch is not None and step.to_colour is not None
            if step.action == "switch" and (
                live.overlap is None or live.overlap.release_id == ROLLBACK_OVERLAP
            ):
                annotations = step.patch["metadata"]["annotations"]
                annotations[SWITCHED_AT] = datetime.now(UTC).isoformat()
                annotations[ANNOTATION_PREFIX + "rollback-reason"] = reason[:500]
            moved_at = datetime.now(UTC)
            try:
                router.write(kube, profile, app, step.patch)
            except Conflict:
                log.warning("%s: live %s changed during the rollback; re-reading", app.name, live.kind)
                continue
            if step.action == "widen":  # behind a NEG: both colours serve before the bad one leaves
                overlap = await_arrival(kube, profile, app, step.to_colour, "overlap", moved_at)
                log.info("%s: %s; %s", app.name, step.reason, overlap)
                continue
            arrived = await_arrival(kube, profile, app, step.to_colour, "moved", moved_at)
            return replace(step, reason=f"{step.reason}; {arrived}", at=moved_at.timestamp())


@task(name="read-live", **FRESH, **RETRIES)
def read_live(profile: Profile) -> dict[str, dict[str, Any]]:
    """Per app: the live colour (from the router: the Service's selector, the HTTPRoute's
    weights), the record, and each colour's replicas and digests."""
    out: dict[str, dict[str, Any]] = {}
    ns = profile.namespace
    router = router_for(profile)
    with cluster(profile) as kube:
        for app in profile.apps:
            snap = router.read(kube, profile, app)
            colours = {}
            for c in profile.release.colours:
                state = _colour_state(kube.find("deployments", deployment_name(app, c), ns), app, c)
                if state is not None:
                    colours[c] = {"digest": state.digest, "replicas": state.replicas, "ready": state.ready}
            out[app.name] = {
                "name": app.name,
                "image_repository": app.image_repository,
                "service": app.service,
                "live_colour": snap.colour() if snap else None,
                "previous_colour": snap.previous_colour if snap else None,
                "release_id": snap.release_id if snap else None,
                "digests": snap.digests if snap else {},
                "switched_at": (snap.annotations.get(SWITCHED_AT) if snap else None),
                "rolled_back_release": snap.rolled_back_release if snap else None,
                # mid-switch, both colours serve: neither may be scaled down
                "overlap": bool(snap and snap.overlap and not snap.selected),
                "colours": colours,
            }
    return out


@task(name="drain-colour", **FRESH, **RETRIES)
def drain_colour(profile: Profile, app_name: str, colour: str, switched_at: str | None) -> tuple[bool, str]:
    """Wait until ``colour`` (out of the live Service since ``switched_at``) can be scaled down
    without loss: no new connection can reach it any more (the propagation allowance since it
    left) and it served nothing for a whole window (the gate's interval, read from Monitoring
    after the ingestion delay), or the profile's ``release.max_drain_s`` has passed. Returns
    (drained, reason); drained is False when it gave up waiting, which the reason says."""
    rel, mon = profile.release, profile.monitoring
    window = profile.gate.interval_s
    left = datetime.fromisoformat(switched_at) if switched_at else None
    began = time.monotonic()
    log = logger()
    while True:
        now = datetime.now(UTC)
        since_left = (now - left).total_seconds() if left else None
        end = now - timedelta(seconds=mon.ingestion_delay_s)
        error = None
        requests: float | None = None
        try:
            requests = request_count(profile, app_name, colour, end - timedelta(seconds=window), end)
        except GreenlightError as e:
            error = f"Monitoring unavailable: {e}"
        waited = time.monotonic() - began
        if error is not None:  # cannot tell whether it still serves: wait, then say so
            if waited >= rel.max_drain_s:
                return False, (
                    f"{colour}: {error}; cannot tell whether it still serves after the maximum "
                    f"drain wait of {rel.max_drain_s:g} s: scaling down anyway"
                )
            log.warning("%s: %s; waiting", app_name, error)
            time.sleep(0.5)
            continue
        drain = decide_drain(colour, since_left, rel.propagation_s, waited, rel.max_drain_s, window, requests)
        if drain.action == "drained":
            return True, drain.reason
        if drain.action == "give-up":
            return False, drain.reason
        time.sleep(0.5)


@task(name="shutdown-safety", **FRESH, **RETRIES)
def shutdown_safety(profile: Profile) -> list[str]:
    """What keeps each app's live colour from joining and leaving Services without loss (no
    readiness probe, no preStop hook outlasting the propagation, a grace period shorter than it),
    each naming the field to add; read from the live colour's Deployment (or the bootstrap manifests
    for an app with none yet)."""
    out: list[str] = []
    ns = profile.namespace
    router = router_for(profile)
    with cluster(profile) as kube:
        for app in profile.apps:
            snap = router.read(kube, profile, app)
            colour = snap.colour() if snap else None
            dep = kube.find("deployments", deployment_name(app, colour), ns) if colour else None
            if dep is None:
                docs = render_bootstrap(
                    TEMPLATE.read_text(), _shape(profile, app), *profile.release.colours, "image"
                )
                dep = next(d for d in docs if d["kind"] == "Deployment")
            pod_spec = ((dep.get("spec") or {}).get("template") or {}).get("spec") or {}
            out.extend(shutdown_findings(app.name, pod_spec, app.container, profile.release.propagation_s))
    return out


def render_job(profile: Profile, rid: str, digests: dict[str, str]) -> dict[str, Any]:
    """The pre-deploy Job of a release from the profile's manifest (placeholders: name, namespace,
    release_id and image_<app> for each app, pinned by digest)."""
    assert profile.release.pre_deploy_job is not None
    path = manifest_path(profile.release.pre_deploy_job, "release.pre_deploy_job")
    values = {
        "name": f"greenlight-pre-{rid}"[:63].rstrip("-"),
        "namespace": profile.namespace,
        "release_id": rid,
        **{
            f"image_{a.name.replace('-', '_')}": str(
                parse_image_ref(a.image_repository).pinned(digests[a.name])
            )
            for a in profile.apps
        },
    }
    try:
        doc = yaml.safe_load(Template(path.read_text()).substitute(values))
    except (KeyError, ValueError) as e:
        raise InputInvalid(f"release.pre_deploy_job {path}: unknown or malformed placeholder {e}") from e
    if not isinstance(doc, dict) or doc.get("kind") != "Job":
        raise InputInvalid(f"release.pre_deploy_job {path}: must be one batch/v1 Job")
    doc.setdefault("metadata", {})["name"] = values["name"]
    doc["metadata"]["namespace"] = profile.namespace
    return doc


@task(name="pre-deploy-job", **FRESH)
def run_pre_deploy_job(profile: Profile, rid: str, digests: dict[str, str], poll_s: float = 0.5) -> str:
    """Run the release's pre-deploy Job (e.g. migrations) to completion before any colour is deployed.

    Idempotent: a rerun of the same release finds the Job it created and waits for it. A failed
    Job (or one still running at the progress deadline) stops the release with its pods' logs.
    """
    body = render_job(profile, rid, digests)
    name, ns = body["metadata"]["name"], profile.namespace
    deadline = time.monotonic() + profile.release.progress_deadline_s
    with cluster(profile) as kube:
        if kube.find("jobs", name, ns) is None:
            kube.create("jobs", body, ns)
        while True:
            try:
                job = kube.get("jobs", name, ns)
            except TransientError as e:
                poll_pause(
                    e,
                    deadline - time.monotonic(),
                    f"pre-deploy job {ns}/{name}",
                    "the progress deadline",
                    poll_s,
                )
                continue
            conds = {
                c.get("type"): c
                for c in (job.get("status") or {}).get("conditions") or []
                if c.get("status") == "True"
            }
            if "Complete" in conds:
                return f"job {name} completed"
            if "Failed" in conds or time.monotonic() > deadline:
                why = (
                    conds["Failed"].get("message") or conds["Failed"].get("reason")
                    if "Failed" in conds
                    else "still running at the progress deadline"
                )
                # the pods' logs (and the Job's own message) go into the error, Slack, events and
                # the report: whatever secret a migration printed is masked first
                raise GateFailed(
                    redact(
                        f"pre-deploy job {ns}/{name} failed: {why}; logs:\n{_job_logs(kube, name, ns)}",
                        _known_secrets(profile),
                    )
                )
            time.sleep(poll_s)


def _job_logs(kube: Kube, name: str, ns: str, tail: int = 20) -> str:
    pods = kube.items("pods", ns, label_selector=f"job-name={name}")
    chunks = []
    for p in pods[-3:]:
        try:
            chunks.append(
                f"--- {p['metadata']['name']} ---\n"
                + kube.pod_log(p["metadata"]["name"], ns, tail_lines=tail).strip()
            )
        except Exception as e:  # logs are evidence, not the outcome
            chunks.append(f"--- {p['metadata']['name']}: logs unavailable: {e}")
    return "\n".join(chunks) or "(no pods)"


# Secrets this process may hold in its environment, masked wherever a Job's logs are quoted
# (besides every secret of a known shape): the Slack bot token, the GitHub webhook secret
# (greenlight.webhook.app), Slack's signing secret and the receiver's approval key
# (greenlight.webhook.slack), the registry
# password, image cleanup's GitHub Packages token (greenlight.tasks.cleanup); and the scratch
# database URL's password (greenlight.tasks.database).
SECRET_ENVS = (
    SLACK_TOKEN_ENV,
    "GREENLIGHT_GITHUB_WEBHOOK_SECRET",
    "GREENLIGHT_SLACK_SIGNING_SECRET",
    REGISTRY_PASSWORD_ENV,
    "GREENLIGHT_GITHUB_PACKAGES_TOKEN",
)
SECRET_URL_ENVS = ("GREENLIGHT_SCRATCH_DATABASE_URL",)


def _known_secrets(profile: Profile) -> list[str]:
    """The secret values this process knows (never shown: only handed to :func:`redact`): those of
    ``SECRET_ENVS``, the passwords in ``SECRET_URL_ENVS``, and those the flows read from Prefect
    Secret blocks when the environment does not give them (the profile's Slack token, the registry
    credentials, the scratch database URL: greenlight.tasks.notify, .registry, .database)."""
    values = [os.environ.get(name) or "" for name in SECRET_ENVS]
    for name in SECRET_URL_ENVS:
        try:
            password = urlsplit(os.environ.get(name) or "").password
        except ValueError:
            password = None
        if password:
            values += [password, unquote(password)]
    try:
        values.append(slack_token_from_block(profile) or "")
        credentials = registry_credentials()
        values.append(credentials[1] if credentials else "")
        password = scratch_url_password()
        values += [password, unquote(password)] if password else []
    except Exception as e:  # masking by shape still applies; the failure is what matters here
        logger().warning("pre-deploy job: secret blocks not readable for masking (%s)", type(e).__name__)
    return [v for v in values if v]
