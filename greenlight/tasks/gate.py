"""What the health gate reads of the cluster: which colour each Service serves, and readiness."""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from greenlight.core.gate import Readiness
from greenlight.core.httproute import colour_service
from greenlight.core.rollout import assess_rollout
from greenlight.core.switch import endpoint_readiness, snapshot_service
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.kube import live_snapshot
from greenlight.tasks.policy import FRESH, RETRIES
from greenlight.tasks.probes import Target


@task(name="service-colours", **FRESH, **RETRIES)
def service_colours(profile: Profile, app: str) -> dict[str, str | None]:
    """The colour ``app``'s live traffic goes to (through its router) and the one its preview
    Service selects: ``{"live": ..., "preview": ...}``."""
    a = profile.app(app)
    with cluster(profile) as kube:
        live = live_snapshot(kube, profile, a)
        preview = snapshot_service(
            kube.get("services", a.preview, profile.namespace), profile.release.colour_label
        )
    return {"live": live.colour(), "preview": preview.colour()}


@task(name="gate-readiness", **FRESH, **RETRIES)
def read_readiness(profile: Profile, app: str, colour: str, target: Target) -> list[Readiness]:
    """The rollout of ``<app>-<colour>`` and the endpoints of the Service that ``target`` names
    (``preview``: the preview Service; ``live``: the live Service, or with an HTTPRoute the
    colour's own Service), now.

    A snapshot: the rollout is judged as of now (waiting for it is the deploy step's job); a
    missing Deployment counts as nothing available.
    """
    a = profile.app(app)
    ns = profile.namespace
    if target != "live":
        service = a.preview
    elif profile.traffic.router == "gateway-httproute":
        service = colour_service(a.service, colour)
    else:
        service = a.service
    with cluster(profile) as kube:
        deployment = kube.find("deployments", f"{app}-{colour}", ns)
        if deployment is None:
            deployment = {"metadata": {"name": f"{app}-{colour}"}, "spec": {"replicas": a.replicas}}
            pods: list[dict[str, Any]] = []
        else:
            labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
            pods = kube.items("pods", ns, label_selector=selector) if selector else []
        endpoints = kube.find("endpoints", service, ns)
    now = time.time()
    rollout = assess_rollout(
        deployment, pods, now, now, profile.release.progress_deadline_s, label=f"{app} {colour}"
    )
    return [rollout, endpoint_readiness(endpoints, rollout.desired)]
