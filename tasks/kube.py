"""Kubernetes tasks for blue-green releases: read state, deploy a colour, wait, switch, scale.

Every write reads the object first and guards itself with the resourceVersion it read, so a
concurrent writer (a rollback, a person with kubectl) makes the write fail with Conflict
instead of being silently overwritten.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import yaml
from prefect import task

from greenlight.clients.kube import Kube
from greenlight.core.images import parse_image_ref
from greenlight.core.manifests import ANNOTATION_PREFIX, AppShape, render_bootstrap
from greenlight.core.release import AppState, ColourState
from greenlight.core.rollout import RolloutAssessment, assess_rollout
from greenlight.core.switch import (
    EndpointReadiness,
    RollbackStep,
    SwitchStep,
    decide_rollback,
    decide_switch,
    endpoint_readiness,
    snapshot_service,
)
from greenlight.errors import Conflict, GateFailed, InputInvalid, TransientError
from greenlight.settings import REPO_ROOT, App, Profile
from tasks.policy import FRESH, RETRIES, logger

SWITCHED_AT = ANNOTATION_PREFIX + "switched-at"
RELEASE_OF = ANNOTATION_PREFIX + "release-id"
TEMPLATE = REPO_ROOT / "deployments" / "manifests" / "app.yaml"
CLONED_KINDS = ("horizontalpodautoscalers", "poddisruptionbudgets")
SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields", "selfLink")


@contextmanager
def cluster(profile: Profile) -> Iterator[Kube]:
    kube = Kube.connect(
        context=profile.cluster.context,
        kubeconfig=profile.cluster.kubeconfig,
        in_cluster=profile.cluster.in_cluster,
        timeout_s=profile.cluster.request_timeout_s,
    )
    try:
        yield kube
    finally:
        kube.close()


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
    """The app's live Service and its colours' Deployments, as read from the cluster now."""
    app = profile.app(app_name)
    ns = profile.namespace
    with cluster(profile) as kube:
        svc = kube.find("services", app.service, ns)
        deps = {
            c: _colour_state(kube.find("deployments", deployment_name(app, c), ns), app, c)
            for c in profile.release.colours
        }
    return AppState(
        name=app.name,
        service=snapshot_service(svc) if svc else None,
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
                if time.time() - started > deadline:
                    raise TransientError(
                        f"{app.name}: rollout of {name} unreadable until the progress deadline: {e}"
                    ) from e
                logger().warning("reading rollout of %s: %s (will retry)", name, e)
                time.sleep(poll_s)
                continue
            verdict = assess_rollout(dep, pods, time.time(), started, deadline, label=f"{colour}")
            if verdict.phase == "available":
                return verdict
            if verdict.phase == "failed":
                raise GateFailed(f"{app.name}: rollout of {name} failed: {verdict.reason}")
            time.sleep(poll_s)


@task(name="point-preview", **FRESH, **RETRIES)
def point_preview(profile: Profile, app_name: str, colour: str) -> str:
    """Point the app's preview Service at ``colour`` (creating it from the live one if missing)."""
    app = profile.app(app_name)
    ns, label = profile.namespace, profile.release.colour_label
    with cluster(profile) as kube:
        svc = kube.find("services", app.preview, ns)
        if svc is None:
            live = kube.get("services", app.service, ns)
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


def colour_endpoints(kube: Kube, profile: Profile, app: App, colour: str) -> EndpointReadiness:
    """Ready pods of the colour, counted as the Service will see them (the Endpoints of its preview)."""
    ns, label = profile.namespace, profile.release.colour_label
    expected = _replicas(kube, profile, app, colour)
    pods = kube.items("pods", ns, label_selector=f"app={app.name},{label}={colour}")
    ready = sum(
        1 for p in pods
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in (p.get("status") or {}).get("conditions") or [])
    )  # fmt: skip
    return EndpointReadiness(ready=ready, not_ready=len(pods) - ready, expected=expected)


@task(name="switch-traffic", **FRESH, **RETRIES)
def switch_service(
    profile: Profile,
    app_name: str,
    colour: str,
    release_id: str,
    digests: dict[str, str],
    wait_s: float = 30.0,
    expected_rv: str | None = None,
) -> SwitchStep:
    """Point the app's live Service at ``colour`` with one merge patch guarded by the resourceVersion read.

    Only when every pod of the colour is ready (waits up to ``wait_s``); ``noop`` when already there.
    A Conflict (someone else changed the Service since it was read) is not retried: the release stops.
    ``expected_rv``: the resourceVersion the release planned with; a Service changed since (a
    rollback, a person) is a Conflict too, so a release never overrides what happened meanwhile.
    """
    app = profile.app(app_name)
    ns = profile.namespace
    deadline = time.monotonic() + wait_s
    with cluster(profile) as kube:
        while True:
            svc = kube.get("services", app.service, ns)
            if expected_rv is not None and svc["metadata"]["resourceVersion"] != expected_rv:
                landed = _own_switch(svc, profile, colour, release_id)
                if landed is not None:
                    return landed
                raise Conflict(
                    f"{app.name}: live Service {app.service} changed since the release planned "
                    f"(resourceVersion {expected_rv} -> {svc['metadata']['resourceVersion']}; a rollback or a person): not switching"
                )
            eps = kube.find("endpoints", app.preview, ns)
            readiness = (
                endpoint_readiness(eps, _replicas(kube, profile, app, colour))
                if eps
                else colour_endpoints(kube, profile, app, colour)
            )
            step = decide_switch(
                snapshot_service(svc), colour, profile.release.colour_label, readiness, release_id, digests
            )
            if step.action == "wait" and time.monotonic() < deadline:
                time.sleep(0.3)
                continue
            if step.action != "switch":
                return step
            assert step.patch is not None
            step.patch["metadata"]["annotations"][SWITCHED_AT] = datetime.now(UTC).isoformat()
            try:
                kube.patch("services", app.service, step.patch, ns)
            except Conflict as e:
                raise Conflict(
                    f"{app.name}: live Service {app.service} changed since it was read (a rollback or a person): "
                    f"not switching ({e})"
                ) from e
            return step


def _own_switch(svc: dict[str, Any], profile: Profile, colour: str, release_id: str) -> SwitchStep | None:
    """A noop step when the Service already selects ``colour`` for this very release: an earlier
    attempt's patch landed although its answer was lost (a timeout, a dropped connection), so the
    changed resourceVersion is this release's own switch, not someone else's."""
    snap = snapshot_service(svc)
    if snap.selector.get(profile.release.colour_label) != colour or snap.release_id != release_id:
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


@task(name="rollback-app", **FRESH)
def rollback_app(profile: Profile, app_name: str, reason: str, wait_s: float | None = None) -> RollbackStep:
    """Return the app's live Service to its recorded previous colour, scaling it up and waiting
    for readiness first when it was scaled down. Returns the final step (switch or noop)."""
    app = profile.app(app_name)
    ns, label = profile.namespace, profile.release.colour_label
    deadline = time.monotonic() + (wait_s if wait_s is not None else profile.release.progress_deadline_s)
    log = logger()
    with cluster(profile) as kube:
        while True:
            live = snapshot_service(kube.get("services", app.service, ns))
            prev = live.previous_colour
            replicas = _replicas(kube, profile, app, prev) if prev else 0
            readiness = colour_endpoints(kube, profile, app, prev) if prev else EndpointReadiness(0, 0, 0)
            want = max(app.replicas, 1)
            step = decide_rollback(live, label, readiness, replicas, want)
            if step.action == "scale-up-previous":
                log.info("%s", step.reason)
                current = live.colour(label)
                if current and prev:  # its HPA/PDB went when it was scaled down: clone the live colour's back
                    _clone_companions(kube, profile, app, current, prev)
                kube.scale(deployment_name(app, prev or ""), ns, step.scale_to or want)
                continue
            if step.action == "wait":
                if time.monotonic() > deadline:
                    raise GateFailed(f"{app.name}: rollback could not proceed: {step.reason}")
                time.sleep(0.2)
                continue
            if step.action == "switch":
                assert step.patch is not None
                step.patch["metadata"]["annotations"][SWITCHED_AT] = datetime.now(UTC).isoformat()
                step.patch["metadata"]["annotations"][ANNOTATION_PREFIX + "rollback-reason"] = reason[:500]
                try:
                    kube.patch("services", app.service, step.patch, ns)
                except Conflict:
                    log.warning("%s: live Service changed during the rollback; re-reading", app.name)
                    continue
            return step


@task(name="read-live", **FRESH, **RETRIES)
def read_live(profile: Profile) -> dict[str, dict[str, Any]]:
    """Per app: the live Service's selector colour, annotations, and each colour's replicas and digests."""
    out: dict[str, dict[str, Any]] = {}
    ns, label = profile.namespace, profile.release.colour_label
    with cluster(profile) as kube:
        for app in profile.apps:
            svc = kube.find("services", app.service, ns)
            snap = snapshot_service(svc) if svc else None
            colours = {}
            for c in profile.release.colours:
                state = _colour_state(kube.find("deployments", deployment_name(app, c), ns), app, c)
                if state is not None:
                    colours[c] = {"digest": state.digest, "replicas": state.replicas, "ready": state.ready}
            out[app.name] = {
                "name": app.name,
                "image_repository": app.image_repository,
                "service": app.service,
                "live_colour": snap.colour(label) if snap else None,
                "previous_colour": snap.previous_colour if snap else None,
                "release_id": snap.release_id if snap else None,
                "digests": snap.digests if snap else {},
                "switched_at": (snap.annotations.get(SWITCHED_AT) if snap else None),
                "rolled_back_release": snap.rolled_back_release if snap else None,
                "colours": colours,
            }
    return out


def render_job(profile: Profile, rid: str, digests: dict[str, str]) -> dict[str, Any]:
    """The pre-deploy Job of a release from the profile's manifest (placeholders: name, namespace,
    release_id and image_<app> for each app, pinned by digest)."""
    assert profile.release.pre_deploy_job is not None
    path = Path(profile.release.pre_deploy_job)
    path = path if path.is_absolute() else REPO_ROOT / "deployments" / "manifests" / path
    if not path.is_file():
        raise InputInvalid(f"release.pre_deploy_job: no manifest at {path}")
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
            job = kube.get("jobs", name, ns)
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
                raise GateFailed(
                    f"pre-deploy job {ns}/{name} failed: {why}; logs:\n{_job_logs(kube, name, ns)}"
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
