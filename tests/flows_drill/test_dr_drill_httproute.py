"""The DR drill of an environment whose live traffic an HTTPRoute moves (``gateway-httproute``).

The source, ``gw-production`` in lab-primary, has the shape docs/traffic-routers.md gives a
Gateway-routed app: the colours' Services ``<app>-blue`` and ``<app>-green``, the preview Service,
and an HTTPRoute with all of the traffic on one colour; no Service named after the app (a drill
that looks for the live Service's selector, as it did before, finds none and fails). The DR
side, ``gw-dr`` in lab-dr, has the platform's Gateway in its namespace, so the drill's route is
programmed by lab-dr's own Gateway controller (seconds late, as GKE's)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.commands.setup import ensure_setup
from greenlight.core.drill import DRILL_LABEL
from greenlight.core.httproute import PLURAL as ROUTES
from greenlight.errors import Conflict, DrillFailed
from greenlight.flows.dr_drill import dr_drill
from greenlight.settings import Profile, load_profile
from greenlight_lab.gateway import ensure_gateway_route, gateway_body
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState
from tests.flows_release.support import set_up_environments

from .conftest import ensure_namespace

pytestmark = pytest.mark.lab

SOURCE, DR = "gw-production", "gw-dr"
NAMESPACE = "gw-production"
GATEWAY = "lab-gateway"
APPS = ("backend", "frontend")


def profile_doc(lab_profile: str, **changes: object) -> dict[str, object]:
    doc = yaml.safe_load((LAB_ENVIRONMENTS / f"{lab_profile}.yaml").read_text())
    doc.update(changes)
    return doc


@pytest.fixture(scope="module")
def gw_envs(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Both profiles (HTTPRoute routers; the source's bundles under a fresh prefix; the DR side
    without DNS and with a 20 s wait for its Gateway), selected for the module; the source
    bootstrapped, routed through a Gateway with blue live, and its app-named Services deleted;
    lab-dr's namespace with the platform's Gateway in it."""
    directory = tmp_path_factory.mktemp("gw-drill-envs")
    router = {"router": "gateway-httproute"}
    source = profile_doc("production", name=SOURCE, namespace=NAMESPACE, traffic=router)
    source["backups"]["config_prefix"] = f"drill-gw-{uuid.uuid4().hex[:6]}/"  # type: ignore[index]
    dr = profile_doc("dr", name=DR, namespace=NAMESPACE, traffic=router)
    dr["dr"]["source"] = SOURCE  # type: ignore[index]
    dr["release"]["settle_timeout_s"] = 20  # type: ignore[index]
    dr.pop("dns")
    for doc in (source, dr):
        (directory / f"{doc['name']}.yaml").write_text(yaml.safe_dump(doc))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
        set_up_environments(lab, directory, [SOURCE])
        ensure_setup([DR])
        primary = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
        dr_kube = Kube.connect(context="lab-dr", kubeconfig=lab.env["KUBECONFIG"])
        try:
            profile = load_profile(SOURCE)
            for app in profile.apps:
                ensure_gateway_route(
                    primary, NAMESPACE, app.route_name, GATEWAY, f"{app.name}.gw.example",
                    {c: f"{app.service}-{c}" for c in profile.release.colours}, app.port, "blue",
                    {"app": app.name}, profile.release.colour_label,
                )  # fmt: skip
                primary.delete("services", app.service, NAMESPACE)
            ensure_namespace(dr_kube, NAMESPACE)
            ensure_gateway(dr_kube)
        finally:
            primary.close()
            dr_kube.close()
        yield directory


def ensure_gateway(kube: Kube) -> None:
    """The platform's Gateway in lab-dr's namespace (there already: left as it is)."""
    with contextlib.suppress(Conflict):
        kube.create("gateways", gateway_body(GATEWAY, NAMESPACE), NAMESPACE)


@pytest.fixture
def kubes(lab: LabState) -> Iterator[tuple[Kube, Kube]]:
    primary = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    dr_kube = Kube.connect(context="lab-dr", kubeconfig=lab.env["KUBECONFIG"])
    yield primary, dr_kube
    primary.close()
    dr_kube.close()


def nothing_of_the_drill_left(kube: Kube) -> None:
    """Only the platform's objects stay in lab-dr's namespace: its Gateway, no drill object."""
    for plural in ("deployments", "services", "configmaps", ROUTES):
        assert kube.items(plural, NAMESPACE, label_selector=DRILL_LABEL) == [], plural
    assert kube.items(ROUTES, NAMESPACE) == []
    assert kube.items("pods", NAMESPACE, label_selector=DRILL_LABEL) == []


def test_httproute_drill_pins_the_routed_colour_and_waits_for_the_dr_gateway(
    gw_envs: Path, kubes: tuple[Kube, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The route, not an app-named Service, says which colour is live; the drill deploys that
    colour's Deployment on the source's live digests, applies the route, counts the DR Gateway's
    programming of it in the RTO, probes the routed colour, and leaves the Gateway alone."""
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(gw_envs))
    primary, dr_kube = kubes
    assert all(primary.find("services", app, NAMESPACE) is None for app in APPS)
    result = dr_drill(DR, profile=load_profile(DR), source_profile=load_profile(SOURCE))
    assert result["passed"] is True, result["reasons"]
    steps = {s["name"]: s for s in result["steps"]}
    assert all(s["outcome"] == "ok" for s in steps.values()), steps
    assert "pinned backend-blue@sha256:" in steps["plan"]["detail"]
    assert "frontend-blue@sha256:" in steps["plan"]["detail"]
    assert "2 httproutes" in steps["plan"]["detail"]
    assert "created httproutes/backend" in steps["apply-config"]["detail"]
    for app in APPS:
        assert (
            f"{app}: HTTPRoute {app} (generation 1, programmed) backends: blue 2 ready"
            in (steps["wait-healthy"]["detail"])
        )
    expected = {}
    for app in APPS:
        dep = primary.get("deployments", f"{app}-blue", NAMESPACE)
        expected[app] = dep["spec"]["template"]["spec"]["containers"][0]["image"].split("@", 1)[1]
    assert result["digests"] == expected
    assert result["leftovers"] == []
    nothing_of_the_drill_left(dr_kube)
    assert dr_kube.find("gateways", GATEWAY, NAMESPACE) is not None


def test_httproute_drill_without_a_dr_gateway_fails_naming_the_route_and_tears_down(
    gw_envs: Path, kubes: tuple[Kube, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no Gateway in the DR namespace the drill's routes are never programmed: wait-healthy
    fails within the profile's settle timeout naming each route and why, and teardown still
    removes the drill's routes."""
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(gw_envs))
    _, dr_kube = kubes
    dr_kube.delete("gateways", GATEWAY, NAMESPACE)
    try:
        with pytest.raises(DrillFailed) as info:
            dr_drill(DR, profile=load_profile(DR), source_profile=load_profile(SOURCE))
    finally:
        ensure_gateway(dr_kube)
    message = str(info.value)
    assert "the DR Gateway did not serve 2 route(s) within 20 s" in message
    assert "backend: HTTPRoute backend (generation 1, not programmed: " in message
    steps = {s["name"]: s for s in info.value.result["steps"]}
    assert steps["wait-healthy"]["outcome"] == "failed"
    assert steps["smoke"]["outcome"] == "skipped" and steps["teardown"]["outcome"] == "ok"
    nothing_of_the_drill_left(dr_kube)


def test_a_drill_whose_sides_route_differently_is_refused_before_anything_is_applied(
    gw_envs: Path, kubes: tuple[Kube, Kube], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A DR profile routed by Services cannot take a route-routed source's objects as they are:
    the plan step refuses naming both routers, and nothing reaches lab-dr."""
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(gw_envs))
    _, dr_kube = kubes
    dr: Profile = load_profile(DR)
    selector = dr.model_copy(update={"traffic": dr.traffic.model_copy(update={"router": "service-selector"})})
    with pytest.raises(DrillFailed) as info:
        dr_drill(DR, profile=selector, source_profile=load_profile(SOURCE))
    assert (
        f"{DR} routes live traffic with traffic.router service-selector and {SOURCE} with gateway-httproute"
        in str(info.value)
    )
    steps = {s["name"]: s for s in info.value.result["steps"]}
    assert steps["plan"]["outcome"] == "failed" and "apply-config" not in steps
    nothing_of_the_drill_left(dr_kube)
