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

from greenlight.clients.kube import Kube
from greenlight.errors import Forbidden, ReleaseRefused
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight_lab import supervisor
from greenlight_lab.state import LabState
from tests.flows_release.support import (
    copy_environment,
    in_thread,
    live,
    profile,
    push_commit,
    release_environments,
)

from .conftest import Fault
from .release_support import targets, unchanged_problems

pytestmark = pytest.mark.lab
NS = "rel-staging"
TRIO_NS = "rel-trio"


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release profiles, and 'trio': staging's copy with a third app (api) in its own namespace."""
    with release_environments(lab, tmp_path_factory.mktemp("compensation-envs")) as directory:
        copy_environment(lab, directory, "trio", TRIO_NS, extra_apps=("api",))
        yield directory


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


# (environment, its namespace, its apps in switch order, the index of the app whose switch fails)
CASES = [("staging", NS, ["backend", "frontend"], 1), ("trio", TRIO_NS, ["backend", "frontend", "api"], 2)]
CASE_IDS = ["second-of-two", "third-of-three"]


def prepare(lab: LabState, kube: Kube, env: str, ns: str, apps: list[str]) -> tuple[str, dict[str, Any]]:
    """Push a commit of ``apps``; point the previews at the candidates already, so that the release's
    only Service patches are its live switches, in app order. Returns the commit and the state before."""
    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha, tuple(apps))
    before = live(kube, profile(env))
    target = targets(kube, env)
    for app in apps:
        kube.patch(
            "services", f"{app}-preview", {"spec": {"selector": {"app": app, "color": target[app]}}}, ns
        )
    return sha, before


def assert_all_back(
    fault: Fault, kube: Kube, env: str, ns: str, apps: list[str], before: dict[str, Any]
) -> None:
    moved = unchanged_problems(before, live(kube, profile(env)))
    fault.measured_loss("apps left switched", len(moved))
    assert moved == []
    assert truthful(kube, ns, apps) == []


@pytest.mark.parametrize(("env", "ns", "apps", "failing"), CASES, ids=CASE_IDS)
def test_a_refused_switch_switches_the_apps_before_it_back(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube, env: str, ns: str, apps: list[str], failing: int
) -> None:
    """The apps before it switched, then one app's switch is refused (its candidate no longer has a
    ready endpoint): those apps are switched back, and every app serves the colour it had before."""
    sha, before = prepare(lab, kube, env, ns, apps)
    victim = apps[failing]
    stall = fault.inject(
        "kube-primary", label=f"{env}: {victim}'s switch refused (its preview emptied while {apps[failing - 1]} switched)",
        verb="patch", resource="services", mode="stall", stall_s=3, skip=failing - 1, count=1,
    )  # fmt: skip
    t, out = in_thread(lambda: build_promote(PromoteRequest(environment=env, commit=sha, actor="dave")))
    deadline = time.monotonic() + 90
    while not supervisor.control(lab, "GET", f"/faults/{stall}")["fired"]:
        assert time.monotonic() < deadline and t.is_alive(), out
        time.sleep(0.05)
    # the switch before it is held for 3 s, then applied: meanwhile, take the failing app's
    # candidate out of its preview Service, so that its switch finds no ready endpoint
    kube.patch(
        "services", f"{victim}-preview", {"spec": {"selector": {"app": victim, "color": "nobody"}}}, ns
    )
    t.join(120)
    assert isinstance(out.get("error"), ReleaseRefused), out
    assert victim in str(out["error"]) and "no ready endpoints" in str(out["error"])
    assert_all_back(fault, kube, env, ns, apps, before)


@pytest.mark.parametrize(("env", "ns", "apps", "failing"), CASES, ids=CASE_IDS)
def test_a_raising_switch_switches_the_apps_before_it_back(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube, env: str, ns: str, apps: list[str], failing: int
) -> None:
    """The apps before it switched, then one app's switch raises (403 on its patch): those apps are
    switched back, and every app serves the colour it had before."""
    sha, before = prepare(lab, kube, env, ns, apps)
    fault.inject(
        "kube-primary", label=f"{env}: Kubernetes 403 on {apps[failing]}'s live switch (after {failing} switched)",
        verb="patch", resource="services", status=403, skip=failing, count=1,
    )  # fmt: skip
    with pytest.raises(Forbidden):
        build_promote(PromoteRequest(environment=env, commit=sha, actor="dave"))
    fault.clear()
    assert_all_back(fault, kube, env, ns, apps, before)
