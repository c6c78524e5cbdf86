"""The lab's clusters as a platform engineer meets them: baseline apps, kubectl, Services, a lossless switch."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

import httpx
import pytest

from greenlight.clients.kube import Kube
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS
from greenlight.errors import Conflict, NotFound
from greenlight_lab import supervisor
from greenlight_lab.load import run_load
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab


def kubectl(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, check=check, timeout=timeout, env=os.environ
    )


@pytest.fixture(scope="module")
def kube(lab: LabState) -> Kube:
    k = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    yield k
    k.close()


def push(lab: LabState, ref: str, **behaviour: object) -> str:
    out = supervisor.control(
        lab, "POST", "/images", {"ref": ref, "version": ref.rsplit(":", 1)[1], **behaviour}
    )
    return str(out["digest"])


def deployment_manifest(name: str, ns: str, image: str, labels: dict[str, str], replicas: int = 2) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "progressDeadlineSeconds": 8,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "web",
                            "image": image,
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
        },
    }


@pytest.mark.parametrize("namespace", ["sma-staging", "sma-production"])
def test_baseline_apps_run_blue_behind_live_and_preview_services(kube: Kube, namespace: str) -> None:
    """After lab up, backend and frontend run as blue, the live Service selects blue and records it, preview selects green."""
    for app in ("backend", "frontend"):
        dep = kube.get("deployments", f"{app}-blue", namespace)
        assert dep["status"]["availableReplicas"] == dep["spec"]["replicas"] >= 1
        live = kube.get("services", app, namespace)
        assert live["spec"]["selector"] == {"app": app, "color": "blue"}
        assert live["metadata"]["annotations"][ACTIVE_COLOUR] == "blue"
        digest = json.loads(live["metadata"]["annotations"][DIGESTS])[app]
        assert dep["spec"]["template"]["spec"]["containers"][0]["image"].endswith("@" + digest)
        assert kube.get("services", f"{app}-preview", namespace)["spec"]["selector"]["color"] == "green"


def test_dr_cluster_starts_without_application_workloads(lab: LabState) -> None:
    """The lab-dr context answers but holds no application Deployments."""
    out = kubectl("--context", "lab-dr", "get", "deployments", "--all-namespaces", "-o", "json")
    assert json.loads(out.stdout)["items"] == []


def test_live_service_answers_through_its_proxy_with_the_baseline(lab: LabState) -> None:
    """`lab url` of a live Service answers 200 from a blue pod with the baseline version."""
    urls = supervisor.control(lab, "GET", "/urls")
    r = httpx.get(urls["lab-primary/sma-production/backend"] + "/", timeout=5)
    assert r.status_code == 200
    assert r.json()["version"] == "backend-baseline"
    assert r.json()["color"] == "blue"


def first_answer(url: str, timeout_s: float = 10) -> httpx.Response:
    """The first 200 of a Service whose data plane may not know its endpoints yet (the lab's
    kube-proxy learns them 1-2 s late and resets connections meanwhile, as kube-proxy does)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            answer = httpx.get(url, timeout=5)
            if answer.status_code == 200:
                return answer
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered 200"
        time.sleep(0.1)


def test_kubectl_apply_rollout_status_reaches_available_and_service_answers(lab: LabState, tmp_path) -> None:
    """kubectl apply of a Deployment of a pushed image, then rollout status, reaches Available; its Service answers."""
    tag = uuid.uuid4().hex[:8]
    push(lab, f"ghcr.io/sma-platform/demo:{tag}", startup_s=0.5)
    labels = {"app": f"demo-{tag}"}
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"demo-{tag}", "namespace": "default"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    manifest = tmp_path / "demo.yaml"
    manifest.write_text(
        json.dumps(deployment_manifest(f"demo-{tag}", "default", f"ghcr.io/sma-platform/demo:{tag}", labels))
        + "\n---\n"
        + json.dumps(svc)
    )
    kubectl("--context", "lab-primary", "apply", "--validate=false", "-f", str(manifest))
    out = kubectl(
        "--context",
        "lab-primary",
        "-n",
        "default",
        "rollout",
        "status",
        f"deployment/demo-{tag}",
        "--timeout=30s",
    )
    assert "successfully rolled out" in out.stdout
    url = subprocess.run(
        ["greenlight", "lab", "url", f"default/demo-{tag}"],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ,
    ).stdout.strip()
    assert first_answer(url + "/").json()["version"] == tag


def test_unknown_image_shows_image_pull_backoff_and_rollout_fails(lab: LabState, kube: Kube) -> None:
    """A Deployment of an image the registry does not have never becomes Available: ImagePullBackOff, deadline exceeded."""
    name = f"ghost-{uuid.uuid4().hex[:6]}"
    labels = {"app": name}
    kube.create(
        "deployments",
        deployment_manifest(name, "default", "ghcr.io/sma-platform/ghost:nope", labels, 1),
        "default",
    )
    out = kubectl(
        "--context",
        "lab-primary",
        "-n",
        "default",
        "rollout",
        "status",
        f"deployment/{name}",
        "--timeout=30s",
        check=False,
    )
    assert out.returncode != 0
    assert "exceeded its progress deadline" in (out.stdout + out.stderr)
    pods = kube.items("pods", "default", label_selector=f"app={name}")
    waiting = pods[0]["status"]["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ImagePullBackOff"


def test_crashing_image_shows_crash_loop_backoff(lab: LabState, kube: Kube) -> None:
    """A crashing image restarts and shows CrashLoopBackOff; the Deployment never becomes Available."""
    name = f"crash-{uuid.uuid4().hex[:6]}"
    push(lab, f"ghcr.io/sma-platform/crash:{name}", crash=True)
    kube.create(
        "deployments",
        deployment_manifest(name, "default", f"ghcr.io/sma-platform/crash:{name}", {"app": name}, 1),
        "default",
    )
    deadline = time.monotonic() + 20
    reason = None
    while time.monotonic() < deadline:
        pods = kube.items("pods", "default", label_selector=f"app={name}")
        statuses = (pods[0].get("status") or {}).get("containerStatuses") if pods else None
        if statuses and statuses[0].get("restartCount", 0) >= 1:
            reason = (statuses[0]["state"].get("waiting") or {}).get("reason") or reason
            if reason == "CrashLoopBackOff":
                break
        time.sleep(0.2)
    assert reason == "CrashLoopBackOff"
    assert (kube.get("deployments", name, "default").get("status") or {}).get("availableReplicas", 0) == 0


def test_naive_switch_with_immediate_scale_down_loses_requests(lab: LabState, kube: Kube) -> None:
    """The naive blue-green script (patch the selector from blue to green, scale blue to 0 at once)
    under load fails requests on the lab's default kube-proxy data plane, as it does on GKE
    (kubernetes#98570: the data plane still sends new connections to the pods that are gone);
    traffic ends on green. Should this pass without a failed request, the lab is too kind again."""
    ns = "default"
    name = f"sw-{uuid.uuid4().hex[:6]}"
    push(lab, f"ghcr.io/sma-platform/sw:{name}-blue")
    push(lab, f"ghcr.io/sma-platform/sw:{name}-green")
    for colour in ("blue", "green"):
        labels = {"app": name, "color": colour}
        kube.create(
            "deployments",
            deployment_manifest(f"{name}-{colour}", ns, f"ghcr.io/sma-platform/sw:{name}-{colour}", labels),
            ns,
        )
    kube.create(
        "services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": name, "color": "blue"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        ns,
    )
    kubectl(
        "--context", "lab-primary", "-n", ns, "rollout", "status", f"deployment/{name}-green", "--timeout=30s"
    )
    kubectl(
        "--context", "lab-primary", "-n", ns, "rollout", "status", f"deployment/{name}-blue", "--timeout=30s"
    )
    url = supervisor.control(lab, "GET", "/urls")[f"lab-primary/{ns}/{name}"]
    first_answer(url + "/")

    import asyncio

    result = {}

    def load() -> None:
        result["report"] = asyncio.run(run_load(url + "/", rps=400, seconds=6))

    t = threading.Thread(target=load)
    t.start()
    time.sleep(2)
    svc = kube.get("services", name, ns)
    kube.patch(
        "services",
        name,
        {
            "metadata": {"resourceVersion": svc["metadata"]["resourceVersion"]},
            "spec": {"selector": {"app": name, "color": "green"}},
        },
        ns,
    )
    kube.scale(f"{name}-blue", ns, 0)  # at once, as the naive script does
    t.join(30)
    report = result["report"]
    assert report.sent >= 1500
    assert report.failed > 0, report.render()
    assert set(report.failed_by) <= {"reset", "refused"}, report.render()
    time.sleep(3)  # the data plane has caught up
    assert first_answer(url + "/").json()["color"] == "green"


def test_stale_selector_patch_is_refused_with_conflict(kube: Kube) -> None:
    """A patch carrying an old resourceVersion is refused with Conflict and changes nothing."""
    svc = kube.get("services", "frontend-preview", "sma-staging")
    old = svc["metadata"]["resourceVersion"]
    kube.patch("services", "frontend-preview", {"metadata": {"annotations": {"touched": "1"}}}, "sma-staging")
    with pytest.raises(Conflict):
        kube.patch(
            "services",
            "frontend-preview",
            {
                "metadata": {"resourceVersion": old},
                "spec": {"selector": {"app": "frontend", "color": "blue"}},
            },
            "sma-staging",
        )
    assert kube.get("services", "frontend-preview", "sma-staging")["spec"]["selector"]["color"] == "green"


def test_missing_object_is_not_found_naming_it(kube: Kube) -> None:
    """Reading an object that does not exist raises NotFound naming it."""
    with pytest.raises(NotFound, match="deployments sma-staging/nothing-here"):
        kube.get("deployments", "nothing-here", "sma-staging")


def test_service_proxy_subresource_reaches_the_service(kube: Kube) -> None:
    """The API server's service proxy reaches a Service from outside the cluster, as flows probe it."""
    status, body = kube.service_proxy_get("backend", "sma-staging", "/")
    assert status == 200
    assert json.loads(body)["color"] == "blue"
    status, _ = kube.service_proxy_get("backend-preview", "sma-staging", "/")
    assert status == 503  # preview selects green, which has no pods yet
