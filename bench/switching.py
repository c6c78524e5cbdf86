"""Figure 1 of the benchmark: requests failed while switching, rolling back and cleaning up, for
three procedures on two data planes, side by side in one lab and one run.

Procedures (the same app "web", bench/manifests/, for all three, so only the procedure differs):

- ``naive``: bench/naive-blue-green.sh, a shell script with real ``kubectl`` (apply the new
  colour, rollout status, patch the selector; scale the old colour to 0 at once);
- ``rolling``: ``kubectl set image`` + ``kubectl rollout status`` on the one live Deployment;
- ``greenlight``: a build-promote release, ``greenlight.flows.rollback.rollback`` and
  ``greenlight.flows.maintenance.cleanup(env, now=True)``.

Data planes: ``kube-proxy`` (the lab's default; Services without annotation) and ``neg``
(Services annotated ``cloud.google.com/neg``: GKE container-native load balancing).

Each cell has a load of its own (``BackgroundLoad`` through the live Service, 100 rps over 8
kept-alive connections), started a second before the operation and kept ``TAIL_S`` after it.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from greenlight.clients.kube import Kube
from greenlight_lab import supervisor
from greenlight_lab.load import BackgroundLoad
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

Echo = Callable[[str], None]
HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "naive-blue-green.sh"
DEPLOYMENT = HERE / "manifests" / "web-deployment.yaml"
SERVICE = HERE / "manifests" / "web-service.yaml"
REPOSITORY = "ghcr.io/sma-platform/web"
NEG = {"cloud.google.com/neg": '{"ingress": true}'}
PLANES = ("kube-proxy", "neg")
PROCEDURES = ("naive", "rolling", "greenlight")
OPERATIONS = ("switch", "rollback", "cleanup")
PLANE_KEY = {"kube-proxy": "kp", "neg": "neg"}
RPS = 100.0
LEAD_S = 1.0  # load running before the operation starts
# load kept after the operation: kube-proxy acts on endpoint changes 1-2 s late, a NEG attaches
# new endpoints after ~2.5 s plus two health checks, and abruptly stopped pods reset at once
TAIL_S = 6.0
# the NEG attaches an endpoint ~2.5 s after it is added and after two passing health checks 0.5 s
# apart: ~3.5 s, so the neg profile's propagation allowance is 5 s (the lab staging's 3 s covers
# kube-proxy's 1-2 s only)
NEG_PROPAGATION_S = 5.0


def namespace(plane: str, procedure: str) -> str:
    return f"bench-{PLANE_KEY[plane]}-{'gl' if procedure == 'greenlight' else procedure}"


def profile_name(plane: str) -> str:
    return f"bench-{PLANE_KEY[plane]}"


# --- environments -------------------------------------------------------------------------------


def profile_docs() -> dict[str, dict[str, Any]]:
    """Greenlight's profiles of figure 1, one per data plane: the lab staging's, one app "web"."""
    out = {}
    for plane in PLANES:
        doc: dict[str, Any] = yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())
        doc.update(name=profile_name(plane), namespace=namespace(plane, "greenlight"))
        doc["apps"] = [
            {"name": "web", "service": "web", "preview_service": "web-preview", "container": "web",
             "port": 8080, "health_path": "/healthz", "replicas": 2, "image_repository": REPOSITORY}
        ]  # fmt: skip
        doc.pop("github", None)
        rel = doc["release"]
        rel.update(bake_s=4, approval={"required": False})
        rel.pop("requires", None)
        if plane == "neg":
            rel["propagation_s"] = NEG_PROPAGATION_S
        doc["gate"].update({"interval_s": 2.0, "intervals": 2, "synthetic_rps": 20})
        out[profile_name(plane)] = doc
    return out


def render(path: Path, **values: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(string.Template(path.read_text()).substitute(values))
    return doc


def push(lab: LabState, tag: str) -> str:
    """Push ``web:<tag>`` to the lab's registry; the digest-pinned reference."""
    body = {"ref": f"{REPOSITORY}:{tag}", "version": f"web-{tag}"}
    digest = supervisor.control(lab, "POST", "/images", body)["digest"]
    return f"{REPOSITORY}@{digest}"


def prepare(lab: LabState, echo: Echo) -> dict[str, Any]:
    """Create the six namespaces of figure 1, each with web-blue (v1) behind the live Service web
    (and, for Greenlight, the preview Service and Greenlight's record on the live one)."""
    from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, RELEASE_ID
    from greenlight_lab.bootstrap import ensure_namespace

    v1 = push(lab, "bench-v1")
    kube = Kube.connect(context="lab-primary")
    try:
        for plane in PLANES:
            for procedure in PROCEDURES:
                ns = namespace(plane, procedure)
                ensure_namespace(kube, ns)
                kube.create("deployments", render(DEPLOYMENT, COLOUR="blue", IMAGE=v1), ns)
                svc = render(SERVICE, COLOUR="blue")
                annotations = dict(NEG) if plane == "neg" else {}
                if procedure == "greenlight":
                    digest = v1.split("@", 1)[1]
                    annotations.update(
                        {ACTIVE_COLOUR: "blue", RELEASE_ID: "bench-v1", DIGESTS: json.dumps({"web": digest})}
                    )
                    preview = render(SERVICE, COLOUR="green")
                    preview["metadata"]["name"] = "web-preview"
                    kube.create("services", preview, ns)
                if annotations:
                    svc["metadata"]["annotations"] = annotations
                kube.create("services", svc, ns)
        for plane in PLANES:
            for procedure in PROCEDURES:
                ns = namespace(plane, procedure)
                _wait_available(kube, ns, "web-blue")
                wait_served(lab, ns)
        echo(f"  figure 1: web-blue ({v1}) served in {len(PLANES) * len(PROCEDURES)} namespaces")
    finally:
        kube.close()
    return {"v1": v1}


def _wait_available(kube: Kube, ns: str, name: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        dep = kube.get("deployments", name, ns)
        st = dep.get("status") or {}
        want = dep["spec"].get("replicas", 1)
        if st.get("availableReplicas", 0) >= want and st.get("observedGeneration") == dep["metadata"].get(
            "generation"
        ):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"deployment {ns}/{name} not available within {timeout_s:.0f} s: {st}")
        time.sleep(0.2)


def live_url(lab: LabState, ns: str) -> str:
    return str(supervisor.control(lab, "GET", "/urls")[f"lab-primary/{ns}/web"]) + "/"


def wait_served(lab: LabState, ns: str, timeout_s: float = 60) -> None:
    """Until the live Service answers 200 through its data plane (kube-proxy learns a new Service's
    endpoints 1-2 s late; a NEG attaches them after its health checks)."""
    url = live_url(lab, ns)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"lab-primary/{ns}/web not served through its data plane within {timeout_s:g} s"
            )
        time.sleep(0.1)


# --- the procedures -----------------------------------------------------------------------------


def kubectl(ns: str, *args: str) -> str:
    done = subprocess.run(
        ["kubectl", "--context", "lab-primary", "-n", ns, *args],
        capture_output=True, text=True, timeout=180, check=False, env=os.environ,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def naive(ns: str, *args: str) -> str:
    done = subprocess.run(
        ["bash", str(SCRIPT), args[0], ns, *args[1:]],
        capture_output=True, text=True, timeout=300, check=False, env=os.environ,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(
            f"{SCRIPT.name} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout


def measured(lab: LabState, ns: str, operation: Callable[[], Any]) -> dict[str, Any]:
    """One cell: load through the live Service from LEAD_S before ``operation`` to TAIL_S after it."""
    wait_served(lab, ns)
    load = BackgroundLoad(live_url(lab, ns), RPS, seconds=900, connections=8, settle_s=LEAD_S)
    with load:
        t0 = time.monotonic()
        outcome = operation()
        took = time.monotonic() - t0
        time.sleep(TAIL_S)
    r = load.report
    assert r is not None
    return {
        "sent": r.sent,
        "failed": r.failed,
        "failed_by": r.failed_by,
        "errors": r.errors,
        "retried": r.retried,
        "connections_opened": r.connections_opened,
        "backends": len(r.backends),
        "p99_ms": r.p99_ms,
        "operation_s": round(took, 2),
        "outcome": outcome if isinstance(outcome, str) else json.dumps(outcome, default=str)[:600],
    }


def _naive_cells(lab: LabState, plane: str, images: dict[str, str]) -> dict[str, Any]:
    ns = namespace(plane, "naive")
    return {
        # blue (v1) live -> green (v2); blue stays up
        "switch": measured(lab, ns, lambda: naive(ns, "switch", "green", images["v2"])),
        # the script as it is meant to run: switch to blue (v3), then scale green to 0 at once
        # (the cleanup cannot be separated from the patch right before it)
        "cleanup": measured(lab, ns, lambda: naive(ns, "release", "blue", images["v3"])),
        # green back up, selector back, blue to 0 at once
        "rollback": measured(lab, ns, lambda: naive(ns, "rollback", "green")),
    }


def _rolling_cells(lab: LabState, plane: str, images: dict[str, str]) -> dict[str, Any]:
    ns = namespace(plane, "rolling")

    def set_image(image: str) -> str:
        out = kubectl(ns, "set", "image", "deployment/web-blue", f"web={image}")
        return out + kubectl(ns, "rollout", "status", "deployment/web-blue", "--timeout=120s")

    return {
        "switch": measured(lab, ns, lambda: set_image(images["v2"])),
        # no ReplicaSets in the lab: `kubectl rollout undo` has no revision to go back to
        "rollback": measured(lab, ns, lambda: set_image(images["v1"])),
    }


def _greenlight_cells(lab: LabState, plane: str) -> dict[str, Any]:
    from greenlight.flows.maintenance import cleanup
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest
    from greenlight.flows.rollback import rollback

    env = profile_name(plane)
    ns = namespace(plane, "greenlight")
    commit = uuid.uuid4().hex[:10]
    push(lab, commit)

    def release() -> dict[str, Any]:
        result = build_promote(PromoteRequest(environment=env, commit=commit, actor="bench"))
        if result["outcome"] != "released":
            raise RuntimeError(f"{env} release of {commit}: {result['outcome']}")
        return {"outcome": result["outcome"], "colours": result["colours"]}

    def clean() -> dict[str, Any]:
        result = cleanup(env, now=True)
        if not result["scaled_down"]:
            raise RuntimeError(f"{env} cleanup scaled nothing down: {result}")
        return {"scaled_down": result["scaled_down"]}

    def back() -> dict[str, Any]:
        result = rollback(env, reason="bench")
        return {"apps": result["apps"]}

    return {
        "switch": measured(lab, ns, release),  # blue (v1) -> green (the new commit)
        "cleanup": measured(lab, ns, clean),  # blue drained, then scaled to 0
        "rollback": measured(lab, ns, back),  # blue scaled back up, traffic back to it
    }


def figure(lab: LabState, echo: Echo) -> dict[str, Any]:
    """Every cell of figure 1: failed / sent per procedure, operation and data plane."""
    images = {"v1": push(lab, "bench-v1"), "v2": push(lab, "bench-v2"), "v3": push(lab, "bench-v3")}
    out: dict[str, Any] = {"rps": RPS, "connections": 8, "lead_s": LEAD_S, "tail_s": TAIL_S, "cells": {}}
    for plane in PLANES:
        for procedure in PROCEDURES:
            if procedure == "naive":
                cells = _naive_cells(lab, plane, images)
            elif procedure == "rolling":
                cells = _rolling_cells(lab, plane, images)
            else:
                cells = _greenlight_cells(lab, plane)
            out["cells"].setdefault(procedure, {})[plane] = cells
            for op, c in cells.items():
                echo(
                    f"  {plane:10} {procedure:10} {op:8} {c['failed']:4} / {c['sent']:5} failed"
                    f" {c['failed_by'] or ''} ({c['operation_s']:.1f} s)"
                )
    return out


def goal_met(procedure: str, cells: dict[str, dict[str, Any]]) -> bool | None:
    """Greenlight: 0 failed in every cell; the naive script: loses requests on every data plane;
    the rolling update: no goal (expected to lose on kube-proxy)."""
    if procedure == "greenlight":
        return all(c["failed"] == 0 for plane in cells.values() for c in plane.values())
    if procedure == "naive":
        return all(any(c["failed"] > 0 for c in plane.values()) for plane in cells.values())
    return None
