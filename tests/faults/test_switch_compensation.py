"""All or none: when one app's switch is refused or raises after others have switched, every app
ends on the colour it had before the release, read back from the cluster.

Each case would have failed before the fix of issue 10: every compensation hook read the app from
the shared transaction, so it undid the last app twice and left the first one switched."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from flows.release import PromoteRequest, build_promote
from greenlight.clients.kube import Kube
from greenlight.errors import Forbidden, ReleaseRefused
from greenlight.lab import supervisor
from greenlight.lab.state import LabState
from tests.flows_release.support import in_thread, live, profile, release_environments

from .conftest import Fault
from .release_support import unchanged_problems

pytestmark = pytest.mark.lab
NS = "rel-staging"
TRIO_NS = "rel-trio"


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release profiles, and 'trio': staging's copy with a third app (api) in its own namespace."""
    from greenlight.commands.setup import ensure_setup
    from greenlight.lab.bootstrap import bootstrap_environment

    with release_environments(lab, tmp_path_factory.mktemp("compensation-envs")) as directory:
        doc = yaml.safe_load((directory / "staging.yaml").read_text())
        api = {
            **doc["apps"][0], "name": "api", "service": "api", "preview_service": "api-preview",
            "container": "api", "image_repository": "ghcr.io/sma-platform/api",
        }  # fmt: skip
        doc.update(name="trio", namespace=TRIO_NS)
        doc["apps"].append(api)
        (directory / "trio.yaml").write_text(yaml.safe_dump(doc))
        ensure_setup(["trio"])
        k = Kube.connect(context="lab-primary")
        try:
            bootstrap_environment(k, "trio", directory, {}, lab.env)
        finally:
            k.close()
        yield directory


@pytest.fixture
def kube(lab: LabState) -> Iterator[Kube]:
    k = Kube.connect(context="lab-primary")
    yield k
    k.close()


def push(lab: LabState, sha: str, apps: list[str]) -> None:
    for app in apps:
        body = {"ref": f"ghcr.io/sma-platform/{app}:{sha}", "version": f"{app}-{sha}"}
        supervisor.control(lab, "POST", "/images", body)


def targets(kube: Kube, env: str) -> dict[str, str]:
    return {
        app: "green" if s["live_colour"] == "blue" else "blue" for app, s in live(kube, profile(env)).items()
    }


def truthful(kube: Kube, namespace: str, apps: list[str]) -> list[str]:
    """Live Services whose active-colour annotation does not name the colour their selector routes to."""
    out = []
    for app in apps:
        svc = kube.get("services", app, namespace)
        colour = (svc["spec"].get("selector") or {}).get("color")
        recorded = (svc["metadata"].get("annotations") or {}).get("greenlight.dev/active-colour")
        if colour != recorded:
            out.append(f"{app}: selector {colour}, annotation {recorded}")
    return out


def test_second_apps_switch_refused_switches_the_first_back(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Backend switched, then frontend's switch refused (its candidate no longer has a ready
    endpoint): backend is switched back, and both apps serve the colour they had before."""
    sha = uuid.uuid4().hex[:10]
    push(lab, sha, ["backend", "frontend"])
    before = live(kube, profile("staging"))
    target = targets(kube, "staging")
    for app in ("backend", "frontend"):  # previews already on the candidates: the first Service
        # patch of the release is backend's live switch
        kube.patch(
            "services", f"{app}-preview", {"spec": {"selector": {"app": app, "color": target[app]}}}, NS
        )
    stall = fault.inject(
        "kube-primary", label="second app's switch refused (its preview emptied while the first app switched)",
        verb="patch", resource="services", mode="stall", stall_s=3, count=1,
    )  # fmt: skip
    t, out = in_thread(lambda: build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave")))
    deadline = time.monotonic() + 90
    while not supervisor.control(lab, "GET", f"/faults/{stall}")["fired"]:
        assert time.monotonic() < deadline and t.is_alive(), out
        time.sleep(0.05)
    # backend's switch is held for 3 s and then applied: meanwhile, take frontend's candidate
    # out of its preview Service, so that its switch finds no ready endpoint
    kube.patch(
        "services", "frontend-preview", {"spec": {"selector": {"app": "frontend", "color": "nobody"}}}, NS
    )
    t.join(120)
    assert isinstance(out.get("error"), ReleaseRefused), out
    assert "frontend" in str(out["error"]) and "no ready endpoints" in str(out["error"])
    moved = unchanged_problems(before, live(kube, profile("staging")))
    fault.measured_loss("apps left switched", len(moved))
    assert moved == []
    assert truthful(kube, NS, ["backend", "frontend"]) == []


def test_third_apps_switch_raising_switches_both_others_back(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """In a three-app release, backend and frontend switched, then api's switch raises (403 on its
    patch): both are switched back and all three serve the colour they had before."""
    apps = ["backend", "frontend", "api"]
    sha = uuid.uuid4().hex[:10]
    push(lab, sha, apps)
    before = live(kube, profile("trio"))
    target = targets(kube, "trio")
    for (
        app
    ) in apps:  # previews already on the candidates: the release's only Service patches are the switches
        kube.patch(
            "services", f"{app}-preview", {"spec": {"selector": {"app": app, "color": target[app]}}}, TRIO_NS
        )
    fault.inject(
        "kube-primary", label="Kubernetes 403 on the third app's live switch (after two switched)",
        verb="patch", resource="services", status=403, skip=2, count=1,
    )  # fmt: skip
    out: dict[str, Any] = {}
    try:
        build_promote(PromoteRequest(environment="trio", commit=sha, actor="dave"))
    except Forbidden as e:
        out["error"] = e
    fault.clear()
    assert "error" in out, "the release did not fail"
    moved = unchanged_problems(before, live(kube, profile("trio")))
    fault.measured_loss("apps left switched", len(moved))
    assert moved == []
    assert truthful(kube, TRIO_NS, apps) == []
