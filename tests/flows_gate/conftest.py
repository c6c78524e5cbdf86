"""Fixtures for the health gate against the lab: the staging profile, and green Deployments.

A green Deployment is cloned from the app's blue one (as a release does), with the image of a
tag pushed to the lab's catalogue with the behaviour a test wants. Every green Deployment made
here is deleted at the end of the module, so other tests find the baseline: preview selects
green, and green has no pods.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from greenlight.clients.kube import JSON_PATCH, Kube
from greenlight.core.rollout import assess_rollout
from greenlight.core.switch import endpoint_readiness
from greenlight.settings import Profile, load_profile
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

NAMESPACE = "sma-staging"
READY_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def profile(lab: LabState) -> Profile:
    """The lab's staging profile (short intervals: 3 x 2 s, 20 requests minimum, 25 rps)."""
    return load_profile("staging")


@pytest.fixture(scope="module")
def kube(lab: LabState) -> Iterator[Kube]:
    """A client of the lab's primary cluster."""
    k = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    yield k
    k.close()


class Greens:
    """Makes ``<app>-green`` run an image with a given behaviour, and removes what it made."""

    def __init__(self, lab: LabState, kube: Kube, profile: Profile) -> None:
        self.lab, self.kube, self.profile = lab, kube, profile
        self.made: set[str] = set()
        self.images: dict[tuple[str, tuple[tuple[str, Any], ...]], str] = {}

    def image(self, app: str, **behaviour: Any) -> str:
        """A pushed image of ``app`` with ``behaviour`` (one per distinct behaviour), by digest."""
        key = (app, tuple(sorted(behaviour.items())))
        if key not in self.images:
            repo = self.profile.app(app).image_repository
            tag = f"gate-{uuid.uuid4().hex[:8]}"
            out = supervisor.control(
                self.lab, "POST", "/images", {"ref": f"{repo}:{tag}", "version": tag, **behaviour}
            )
            self.images[key] = f"{repo}@{out['digest']}"
        return self.images[key]

    def deploy(self, app: str, **behaviour: Any) -> str:
        """Run ``app``'s green colour on an image with ``behaviour``; return once it is fully ready."""
        image = self.image(app, **behaviour)
        name = f"{app}-green"
        current = self.kube.find("deployments", name, NAMESPACE)
        if current is None:
            self.kube.create("deployments", self._clone(app, image), NAMESPACE)
        elif current["spec"]["template"]["spec"]["containers"][0]["image"] != image:
            patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}]
            self.kube.patch("deployments", name, patch, NAMESPACE, content_type=JSON_PATCH)
        self.made.add(name)
        self._wait_ready(app)
        return image

    def _clone(self, app: str, image: str) -> dict[str, Any]:
        blue = self.kube.get("deployments", f"{app}-blue", NAMESPACE)
        spec = copy.deepcopy(blue["spec"])
        spec["selector"]["matchLabels"]["color"] = "green"
        spec["template"]["metadata"]["labels"]["color"] = "green"
        spec["template"]["spec"]["containers"][0]["image"] = image
        labels = {**(blue["metadata"].get("labels") or {}), "color": "green"}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": f"{app}-green", "namespace": NAMESPACE, "labels": labels},
            "spec": spec,
        }

    def _wait_ready(self, app: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        preview = self.profile.app(app).preview
        while True:
            dep = self.kube.get("deployments", f"{app}-green", NAMESPACE)
            pods = self.kube.items("pods", NAMESPACE, label_selector=f"app={app},color=green")
            rollout = assess_rollout(dep, pods, time.time(), time.time(), READY_TIMEOUT_S)
            endpoints = endpoint_readiness(self.kube.find("endpoints", preview, NAMESPACE), rollout.desired)
            if rollout.phase == "available" and endpoints.all_ready and endpoints.ready == rollout.desired:
                return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{app}-green not ready in {READY_TIMEOUT_S} s: {rollout.reason}; {endpoints.summary}"
                )
            time.sleep(0.2)

    def cleanup(self) -> None:
        """Delete every green Deployment made, then wait until their pods are gone."""
        for name in self.made:
            self.kube.delete("deployments", name, NAMESPACE)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if not self.kube.items("pods", NAMESPACE, label_selector="color=green"):
                return
            time.sleep(0.2)


@pytest.fixture(scope="module")
def greens(lab: LabState, kube: Kube, profile: Profile) -> Iterator[Greens]:
    """Green Deployments on demand; all deleted after the module."""
    g = Greens(lab, kube, profile)
    try:
        yield g
    finally:
        g.cleanup()


@pytest.fixture(scope="module")
def good_backend(greens: Greens) -> str:
    """backend-green running a healthy image (no errors, no added latency); its image."""
    return greens.deploy("backend")


@pytest.fixture()
def monitoring_down(lab: LabState) -> Iterator[None]:
    """Every Cloud Monitoring call answers UNAVAILABLE until the test ends."""
    supervisor.control(lab, "POST", "/faults", {"target": "monitoring", "count": -1})
    try:
        yield
    finally:
        supervisor.control(lab, "DELETE", "/faults?target=monitoring")
