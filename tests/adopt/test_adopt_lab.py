"""``greenlight adopt`` on the lab's kube-proxy data plane (L4, endpoint changes seen 1-2 s late,
kept-alive connections pinned to their pod), under load through the app's Service: a plain app
becomes blue-green with no failed request, a release of it follows; a dry run and a refusal change
nothing; a failure midway is undone with no failed request; and the naive way (adding the colour to
the Service's selector before any pod carries it) does drop requests on the same data plane."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from greenlight.clients.kube import Kube
from greenlight.core.adopt import ADOPTED_FROM, ADOPTED_INTO, ADOPTED_REPLICAS, ADOPTED_SELECTOR
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.settings import load_profile
from greenlight_lab import supervisor
from greenlight_lab.state import LabState
from tests.flows_release.support import Load, greenlight_cli, live, push_commit

from .support import NS, FreshLoad, create_plain_app, env_name, plain_shape, snapshot, wait_available

pytestmark = pytest.mark.lab
PLAIN = {
    "selector": {"app": "{app}"},
    "greenlight_annotations": [],
    "replicas": 2,
    "ready": 2,
    "blue": False,
    "preview": False,
}


def plain(app: str) -> dict[str, object]:
    return {**PLAIN, "selector": {"app": app}}


def endpoint_pods(kube: Kube, service: str) -> list[str]:
    eps = kube.get("endpoints", service, NS)
    return sorted(
        str(a["targetRef"]["name"]) for s in eps.get("subsets") or [] for a in s.get("addresses") or []
    )


def test_dry_run_prints_the_plan_and_changes_nothing(lab: LabState, envdir: Path, kube: Kube) -> None:
    """--dry-run prints the five steps and what each object becomes; no object changes."""
    digest = create_plain_app(lab, kube, "dry")
    before = snapshot(kube, "dry")
    out = greenlight_cli("adopt", env_name("dry"), "dry", "--dry-run")
    assert out.returncode == 0, out.stderr
    for words in ("create-deployment deployments/dry-blue", "await-serving", "narrow-service services/dry",
                  "create-preview services/dry-preview", "scale-down-old deployments/dry",
                  f"image ghcr.io/sma-platform/dry@{digest}", "DRY RUN: nothing changed"):  # fmt: skip
        assert words in out.stdout, out.stdout
    assert snapshot(kube, "dry") == before
    assert plain_shape(kube, "dry") == plain("dry")


def test_refusal_names_the_blocker_and_changes_nothing(lab: LabState, envdir: Path, kube: Kube) -> None:
    """An HPA scaling the plain Deployment blocks adoption: exit 6, FAILED names the HPA, nothing changed."""
    create_plain_app(lab, kube, "hpa")
    kube.create(
        "horizontalpodautoscalers",
        {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "hpa-scaler"},
         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "hpa"},
                  "minReplicas": 2, "maxReplicas": 4}},
        NS,
    )  # fmt: skip
    before = snapshot(kube, "hpa")
    out = greenlight_cli("adopt", env_name("hpa"), "hpa")
    assert out.returncode == 6, (out.stdout, out.stderr)
    assert (
        "FAILED: hpa cannot be adopted: HorizontalPodAutoscaler hpa-scaler scales Deployment hpa"
        in out.stderr
    )
    assert snapshot(kube, "hpa") == before
    assert plain_shape(kube, "hpa") == plain("hpa")


def test_failure_midway_is_undone_without_a_failed_request(lab: LabState, envdir: Path, kube: Kube) -> None:
    """The Service's narrowing is refused (409, as when someone changed it meanwhile): the copy that
    already served beside the old pods is taken back, the app is plain again, exit 6, and the
    caller under load saw no failed request."""
    create_plain_app(lab, kube, "undo")
    rule = supervisor.control(
        lab,
        "POST",
        "/faults",
        {"target": "kube-primary", "verb": "patch", "resource": "services", "status": 409},
    )
    try:
        with Load(lab, NS, "undo", rps=100, seconds=120) as load, FreshLoad(lab, "undo") as fresh:
            out = greenlight_cli("adopt", env_name("undo"), "undo")
            time.sleep(1)
    finally:
        supervisor.control(lab, "DELETE", "/faults")
    assert int(supervisor.control(lab, "GET", f"/faults/{rule['id']}")["fired"]) == 1
    assert out.returncode == 6, (out.stdout, out.stderr)
    assert "adoption failed" in out.stderr and "undone, back to the plain shape" in out.stderr, out.stderr
    assert "Deployment undo-blue deleted" in out.stderr
    assert "waiting:" in out.stdout  # progress while it waited for the copy to serve
    assert plain_shape(kube, "undo") == plain("undo")
    report = load.report
    assert report is not None and report.sent > 300
    assert report.failed == 0, report.render()
    assert fresh.sent > 100 and fresh.failed == 0, fresh.render()
    print(
        f"undo: {out.stderr.strip()}\nkept-alive: {report.failed} of {report.sent} failed; {fresh.render()}"
    )


def test_adopt_under_load_loses_nothing_then_a_release_works(lab: LabState, envdir: Path, kube: Kube) -> None:
    """Under 100 rps on kept-alive connections through the Service: adopt turns the plain app into
    blue (copy pinned by digest, Service narrowed, preview created, old Deployment kept at 0), a rerun
    says it is in shape, and a normal release then moves it to green; no request fails."""
    digest = create_plain_app(lab, kube, "web")
    env = env_name("web")
    with Load(lab, NS, "web", rps=100, seconds=300) as load:
        with FreshLoad(lab, "web") as fresh:
            out = greenlight_cli("adopt", env, "web")
            time.sleep(1)
        print(out.stdout)
        assert fresh.sent > 100 and fresh.failed == 0, fresh.render()
        assert out.returncode == 0, (out.stdout, out.stderr)
        assert (
            "OK: web adopted: Service web selects color=blue (Deployment web-blue, 2 replica(s)" in out.stdout
        )
        assert "waiting:" in out.stdout

        svc = kube.get("services", "web", NS)
        assert svc["spec"]["selector"] == {"app": "web", "color": "blue"}
        ann = svc["metadata"]["annotations"]
        assert ann[ACTIVE_COLOUR] == "blue"
        assert json.loads(ann[DIGESTS]) == {"web": digest}
        assert json.loads(ann[ADOPTED_SELECTOR]) == {"app": "web"}
        blue = wait_available(kube, "web-blue", time.monotonic() + 5)
        assert (
            blue["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/sma-platform/web@{digest}"
        )
        assert blue["spec"]["template"]["metadata"]["labels"] == {"app": "web", "color": "blue"}
        assert blue["metadata"]["annotations"][ADOPTED_FROM] == "web"
        assert kube.get("services", "web-preview", NS)["spec"]["selector"] == {"app": "web", "color": "green"}
        old = kube.get("deployments", "web", NS)
        assert old["spec"]["replicas"] == 0
        assert old["metadata"]["annotations"][ADOPTED_INTO] == "web-blue"
        assert old["metadata"]["annotations"][ADOPTED_REPLICAS] == "2"
        pods = endpoint_pods(kube, "web")
        assert len(pods) == 2 and all(p.startswith("web-blue-") for p in pods), pods

        again = greenlight_cli("adopt", env, "web")
        assert again.returncode == 0, again.stderr
        assert "already blue-green" in again.stdout and "nothing to do" in again.stdout

        sha = uuid.uuid4().hex[:10]
        push_commit(lab, sha, apps=("web",))
        result = build_promote(PromoteRequest(environment=env, commit=sha, actor="dave"))
        assert result["outcome"] == "released", result
        assert live(kube, load_profile(env))["web"]["live_colour"] == "green"
    report = load.report
    assert report is not None and report.sent > 1000
    assert report.failed == 0, report.render()
    print(f"adopt + release: kept-alive: {report.failed} of {report.sent} failed; {fresh.render()} (adopt)")


def test_adopt_behind_a_neg_loses_nothing(lab: LabState, envdir: Path, kube: Kube) -> None:
    """Behind GKE-style container-native load balancing (endpoints detached before new ones are
    attached and health-checked), adoption under load fails no request: the copy serves beside the
    old pods for the propagation allowance before the selector narrows."""
    create_plain_app(lab, kube, "neg", data_plane="neg")
    with Load(lab, NS, "neg", rps=100, seconds=120) as load, FreshLoad(lab, "neg") as fresh:
        out = greenlight_cli("adopt", env_name("neg"), "neg")
        time.sleep(1)
    assert out.returncode == 0, (out.stdout, out.stderr)
    assert kube.get("services", "neg", NS)["spec"]["selector"] == {"app": "neg", "color": "blue"}
    report = load.report
    assert report is not None and report.sent > 300
    assert report.failed == 0, report.render()
    assert fresh.sent > 100 and fresh.failed == 0, fresh.render()
    print(f"neg: kept-alive: {report.failed} of {report.sent} failed; {fresh.render()}")


def test_naive_selector_patch_drops_requests_on_the_same_data_plane(lab: LabState, kube: Kube) -> None:
    """The control: adding the colour to the Service's selector before any pod carries it (and only
    then creating the coloured copy) leaves the Service with no endpoint for a moment: requests on
    new connections fail. The lab is not too kind for the zero-loss proof above to mean something."""
    create_plain_app(lab, kube, "naive")
    with Load(lab, NS, "naive", rps=100, seconds=60) as load, FreshLoad(lab, "naive") as fresh:
        svc = kube.get("services", "naive", NS)
        kube.patch("services", "naive", {"spec": {"selector": {"app": "naive", "color": "blue"}}}, NS)
        time.sleep(2)  # then the coloured Deployment is applied, as a person or a script would next
        dep = kube.get("deployments", "naive", NS)
        copy = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "naive-blue", "labels": {"app": "naive", "color": "blue"}},
            "spec": {**dep["spec"], "selector": {"matchLabels": {"app": "naive", "color": "blue"}}},
        }
        copy["spec"]["template"]["metadata"]["labels"] = {"app": "naive", "color": "blue"}
        kube.create("deployments", copy, NS)
        wait_available(kube, "naive-blue", time.monotonic() + 30)
        time.sleep(3)  # the data plane has caught up with the new pods
    assert svc["spec"]["selector"] == {"app": "naive"}
    report = load.report
    assert report is not None
    # kept-alive connections stay on the old pods (which still run), so that caller may lose
    # nothing; every new connection in the window goes to a data plane with no endpoint
    assert fresh.failed > 0, (fresh.render(), report.render())
    print(f"naive: {fresh.render()}; kept-alive: {report.failed} of {report.sent} failed")
