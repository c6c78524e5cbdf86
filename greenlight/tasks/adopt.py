"""Adopt a plain app into the blue-green shape: read the cluster, plan (greenlight.core.adopt), run
each step and verify it before the next; on any failure take back everything adoption made, in an
order that keeps traffic served, so nothing is left half-done.

Plain functions, not Prefect tasks: ``greenlight adopt`` runs them in the CLI's own process and
needs no Prefect API (the command takes the release lock around them when it changes anything).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from greenlight.clients.kube import Kube
from greenlight.clients.registry import RegistryClient
from greenlight.core.adopt import (
    ADOPTED_INTO,
    ADOPTED_REPLICAS,
    AdoptApp,
    AdoptPlan,
    AdoptStep,
    UndoState,
    image_to_resolve,
    plan_adoption,
    plan_undo,
    service_selects,
)
from greenlight.core.images import parse_image_ref
from greenlight.core.rollout import assess_rollout
from greenlight.errors import GateFailed, GreenlightError, NotFound, PermanentError, with_message
from greenlight.settings import App, Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.kube import SWITCHED_AT, await_arrival
from greenlight.tasks.policy import logger

Progress = Callable[[str], None]
POLL_S = 0.25
PROGRESS_EVERY_S = 2.0


def adopt_app(profile: Profile, app: App) -> AdoptApp:
    rel = profile.release
    return AdoptApp(
        name=app.name,
        namespace=profile.namespace,
        service=app.service,
        preview=app.preview,
        container=app.container,
        image_repository=app.image_repository,
        colours=(rel.colours[0], rel.colours[1]),
        colour_label=rel.colour_label,
        propagation_s=rel.propagation_s,
        allowed=tuple(profile.registry.allowed),
    )


def _read(kube: Kube, profile: Profile, spec: AdoptApp) -> dict[str, Any]:
    ns = profile.namespace
    return {
        "service": kube.find("services", spec.service, ns),
        "preview": kube.find("services", spec.preview, ns),
        "deployments": kube.items("deployments", ns),
        "pods": kube.items("pods", ns),
        "hpas": kube.items("horizontalpodautoscalers", ns),
    }


def _tag_digest(spec: AdoptApp, seen: dict[str, Any]) -> str | None:
    """What the registry says the plain Deployment's image tag names, when its pods do not say
    which digest runs (None when no lookup is needed, or the tag is unknown there)."""
    svc = seen["service"]
    selector = dict(((svc or {}).get("spec") or {}).get("selector") or {})
    if not selector or spec.colour_label in selector:
        return None
    behind = [
        d
        for d in seen["deployments"]
        if service_selects(
            selector, ((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        )
    ]
    if len(behind) != 1:
        return None
    ref = image_to_resolve(behind[0], seen["pods"], spec.container)
    if ref is None:
        return None
    try:
        parsed = parse_image_ref(ref)
    except GreenlightError:
        return None  # the plan names the malformed reference
    with RegistryClient() as reg:
        try:
            return reg.resolve(parsed)
        except NotFound:
            return None


def read_plan(profile: Profile, app_name: str) -> AdoptPlan:
    """The adoption plan of ``app_name`` over the cluster as it is now."""
    spec = adopt_app(profile, profile.app(app_name))
    with cluster(profile) as kube:
        seen = _read(kube, profile, spec)
    return plan_adoption(
        spec,
        seen["service"],
        seen["preview"],
        seen["deployments"],
        seen["pods"],
        seen["hpas"],
        _tag_digest(spec, seen),
    )


def adopt(
    profile: Profile,
    app_name: str,
    plan: AdoptPlan,
    progress: Progress,
    around_switch: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> list[str]:
    """Run the plan's pending steps, each verified before the next; return a line per step.

    ``around_switch`` wraps the Service's narrowing (the command passes the environment's traffic
    lock). On any failure (or Ctrl-C) everything adoption made is taken back (:func:`undo`) and the
    error is raised again, of the same kind, saying what was undone."""
    app = profile.app(app_name)
    spec = adopt_app(profile, app)
    lines: list[str] = []
    narrowed_at: float | None = None
    with cluster(profile) as kube:
        try:
            for step in plan.pending:
                progress(f"{step.action} {step.target} ...")
                if step.action == "create-deployment":
                    assert step.body is not None
                    kube.create("deployments", dict(step.body), profile.namespace)
                    lines.append(f"created Deployment {step.target.split('/', 1)[1]}: {step.description}")
                elif step.action == "await-serving":
                    lines.append(_await_serving(kube, profile, app, spec, progress))
                elif step.action == "narrow-service":
                    assert step.body is not None
                    with around_switch():
                        lines.append(_narrow(kube, profile, app, spec, step, progress))
                    narrowed_at = time.monotonic()
                elif step.action == "create-preview":
                    assert step.body is not None
                    kube.create("services", dict(step.body), profile.namespace)
                    lines.append(f"created Service {app.preview}: {step.description}")
                elif step.action == "scale-down-old":
                    lines.append(_scale_down(kube, profile, spec, step, narrowed_at, progress))
                progress(f"done: {lines[-1]}")
        except BaseException as e:
            try:
                undone = undo(kube, profile, app, spec, progress)
            except BaseException as u:  # say both: what failed, and that the undo did not finish
                raise PermanentError(
                    f"{app.name}: adoption failed ({type(e).__name__}: {e}) and undoing it failed too "
                    f"({type(u).__name__}: {u}): check Service {app.service} and Deployment "
                    f"{spec.deployment(spec.live_colour)} by hand"
                ) from e
            message = f"{app.name}: adoption failed: {e}; undone, back to the plain shape: {'; '.join(undone) or 'nothing had changed'}"
            if isinstance(e, GreenlightError):
                raise with_message(e, message) from e
            raise
    return lines


def _await_serving(kube: Kube, profile: Profile, app: App, spec: AdoptApp, progress: Progress) -> str:
    """Wait until the colour's Deployment is available, then until its pods are in the live
    Service's Endpoints beside the old ones for the propagation allowance (see await_arrival)."""
    name, ns = spec.deployment(spec.live_colour), profile.namespace
    started = time.time()
    deadline = profile.release.progress_deadline_s
    said = 0.0
    while True:
        dep = kube.get("deployments", name, ns)
        sel = ",".join(f"{k}={v}" for k, v in dep["spec"]["selector"]["matchLabels"].items())
        pods = kube.items("pods", ns, label_selector=sel)
        verdict = assess_rollout(dep, pods, time.time(), started, deadline, label=spec.live_colour)
        if verdict.phase == "available":
            break
        if verdict.phase == "failed":
            raise GateFailed(f"{app.name}: rollout of {name} failed: {verdict.reason}")
        if time.monotonic() - said >= PROGRESS_EVERY_S:
            said = time.monotonic()
            progress(f"waiting: {name}: {verdict.reason}")
        time.sleep(POLL_S)
    progress(
        f"waiting: {name} available; for its pods in Service {app.service}'s Endpoints beside the old "
        f"ones, then {profile.release.propagation_s:g} s"
    )
    overlap = await_arrival(kube, profile, app, spec.live_colour, "overlap", datetime.now(UTC))
    return f"{name} serves: {verdict.reason}; {overlap}"


def _narrow(
    kube: Kube, profile: Profile, app: App, spec: AdoptApp, step: AdoptStep, progress: Progress
) -> str:
    """Narrow the live Service to the colour (guarded by the resourceVersion planned with), then
    wait until only the colour's pods are in its Endpoints."""
    assert step.body is not None
    body = dict(step.body)
    meta = dict(body["metadata"])
    meta["annotations"] = {**meta["annotations"], SWITCHED_AT: datetime.now(UTC).isoformat()}
    body["metadata"] = meta
    moved_at = datetime.now(UTC)
    kube.patch("services", app.service, body, profile.namespace)
    progress(f"waiting: Service {app.service} narrowed; for its Endpoints to hold only {spec.live_colour}")
    arrived = await_arrival(kube, profile, app, spec.live_colour, "moved", moved_at)
    return f"Service {app.service} narrowed: {step.description}; {arrived}"


def _scale_down(
    kube: Kube,
    profile: Profile,
    spec: AdoptApp,
    step: AdoptStep,
    narrowed_at: float | None,
    progress: Progress,
) -> str:
    """Scale the plain Deployment to 0 once the propagation allowance has passed since the
    narrowing (a data plane may still send it new connections until then); keep it, annotated
    with what it was adopted into and its replicas before."""
    name = step.target.split("/", 1)[1]
    # narrowed by an earlier, interrupted run: when is not known here, so the whole allowance
    left = profile.release.propagation_s - (
        time.monotonic() - narrowed_at if narrowed_at is not None else 0.0
    )
    if left > 0:
        progress(f"waiting: {left:.1f} s more for the data plane to stop sending {name} new connections")
        time.sleep(left)
    assert step.body is not None
    kube.patch("deployments", name, dict(step.body), profile.namespace)
    kube.scale(name, profile.namespace, 0)
    return f"Deployment {name} scaled to 0 and kept: {step.description}"


def undo(kube: Kube, profile: Profile, app: App, spec: AdoptApp, progress: Progress) -> list[str]:
    """Return the app to its plain shape, taking back only what adoption marked as its own, in an
    order that keeps a pod serving throughout: the plain Deployment back up and ready, the live
    Service's old selector back (it selects both), the preview gone, the propagation allowance,
    then the colour's copy deleted."""
    ns = profile.namespace
    seen = _read(kube, profile, spec)
    state: UndoState = plan_undo(spec, seen["service"], seen["preview"], seen["deployments"])
    done: list[str] = []
    if state.empty:
        return done
    for name, replicas in state.scale_up:
        progress(f"undo: scaling {name} back to {replicas}")
        kube.scale(name, ns, replicas)
        _wait_ready(kube, profile, name)
        kube.patch(
            "deployments",
            name,
            {"metadata": {"annotations": {ADOPTED_INTO: None, ADOPTED_REPLICAS: None}}},
            ns,
        )
        done.append(f"{name} scaled back to {replicas}")
    if state.restore is not None:
        progress(f"undo: restoring Service {app.service}'s selector")
        kube.patch("services", app.service, dict(state.restore), ns)
        done.append(f"Service {app.service}'s selector restored")
    if state.delete_preview:
        kube.delete("services", app.preview, ns)
        done.append(f"Service {app.preview} deleted")
    if state.copies:
        if state.restore is not None:  # the copy's pods served alone: let the old ones take over first
            time.sleep(profile.release.propagation_s)
        for name in state.copies:
            progress(f"undo: deleting Deployment {name}")
            kube.delete("deployments", name, ns)
            done.append(f"Deployment {name} deleted")
    logger().info("%s: adoption undone: %s", app.name, "; ".join(done))
    return done


def _wait_ready(kube: Kube, profile: Profile, name: str) -> None:
    deadline = time.monotonic() + profile.release.progress_deadline_s
    while True:
        dep = kube.get("deployments", name, profile.namespace)
        want = int(dep["spec"].get("replicas") or 0)
        st = dep.get("status") or {}
        if int(st.get("readyReplicas") or 0) >= want and int(st.get("updatedReplicas") or 0) >= want:
            return
        if time.monotonic() > deadline:
            raise GateFailed(
                f"Deployment {name} not ready again within {profile.release.progress_deadline_s:g} s"
            )
        time.sleep(POLL_S)
