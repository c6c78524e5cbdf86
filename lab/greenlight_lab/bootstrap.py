"""Put the baseline release in place: what a first release does, with the lab's images.

For each app of an environment: push ``<repository>:baseline`` to the lab's catalogue,
render greenlight/templates/app.yaml for the blue colour pinned by digest, create the
namespace, the Deployment and the live and preview Services, and wait until Available.
"""

from __future__ import annotations

import http.client
import json
import math
import time
import urllib.request
from pathlib import Path
from typing import Any

from greenlight.clients.kube import Kube
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, RELEASE_ID, AppShape, render_bootstrap
from greenlight.errors import Conflict
from greenlight.settings import APP_TEMPLATE, load_profile
from greenlight_lab.proxy import NEG_ANNOTATION

TEMPLATE = APP_TEMPLATE
PLURALS = {"Deployment": "deployments", "Service": "services"}


def push_image(control_url: str, ref: str, **behaviour: Any) -> str:
    body = json.dumps({"ref": ref, **behaviour}).encode()
    req = urllib.request.Request(
        control_url + "/images", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return str(json.loads(r.read())["digest"])


def ensure_namespace(kube: Kube, name: str) -> None:
    try:
        kube.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    except Conflict:
        pass


def bootstrap_environment(
    kube: Kube,
    env_name: str,
    env_dir: Path,
    pushed: dict[str, str],
    env: dict[str, str],
    timeout_s: float = 60,
    neg: bool = False,
) -> dict[str, Any]:
    profile = load_profile(env_name, env_dir)
    ensure_namespace(kube, profile.namespace)
    template = TEMPLATE.read_text()
    blue, green = profile.release.colours
    result: dict[str, Any] = {}
    created = []
    for app in profile.apps:
        ref = f"{app.image_repository}:baseline"
        if ref not in pushed:
            pushed[ref] = push_image(env["GREENLIGHT_LAB_CONTROL"], ref, version=f"{app.name}-baseline")
        image = f"{app.image_repository}@{pushed[ref]}"
        shape = AppShape(
            app=app.name, namespace=profile.namespace, service=app.service, preview_service=app.preview,
            container=app.container, port=app.port, health_path=app.health_path, replicas=app.replicas,
            colour_label=profile.release.colour_label, progress_deadline_s=int(profile.release.progress_deadline_s),
            prestop_s=math.ceil(profile.release.propagation_s) + 2,
        )  # fmt: skip
        for doc in render_bootstrap(template, shape, blue, green, image):
            if doc["kind"] == "Service" and doc["metadata"]["name"] == app.service:
                doc["metadata"]["annotations"] = {
                    ACTIVE_COLOUR: blue,
                    RELEASE_ID: "bootstrap",
                    DIGESTS: json.dumps({app.name: pushed[ref]}),
                    **({NEG_ANNOTATION: '{"ingress": true}'} if neg else {}),
                }
            if kube.find(PLURALS[doc["kind"]], doc["metadata"]["name"], profile.namespace) is None:
                kube.create(PLURALS[doc["kind"]], doc, profile.namespace)
                if doc["kind"] == "Deployment":
                    created.append(app)
        result[app.name] = {"deployment": f"{app.name}-{blue}", "image": image}
    deadline = time.monotonic() + timeout_s
    for app in created:  # an app already there is left as it is (a release may have moved it on)
        name = f"{app.name}-{blue}"
        while True:
            dep = kube.get("deployments", name, profile.namespace)
            st = dep.get("status") or {}
            if st.get("availableReplicas", 0) >= app.replicas and st.get("observedGeneration") == dep[
                "metadata"
            ].get("generation"):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"deployment {profile.namespace}/{name} not available within {timeout_s:.0f} s: {st}"
                )
            time.sleep(0.2)
    for app in created:  # and its Service's data plane knows the endpoints (kube-proxy: 1-2 s late)
        wait_served(env["GREENLIGHT_LAB_CONTROL"], f"lab-primary/{profile.namespace}/{app.service}", deadline)
    return result


def wait_served(control_url: str, service_key: str, deadline: float) -> None:
    """Wait until a lab Service answers 200 through its data plane (a new Service's endpoints reach
    the data plane late, as with kube-proxy, and connections are reset until then)."""
    while True:
        try:
            with urllib.request.urlopen(control_url + "/urls", timeout=10) as r:
                url = json.loads(r.read()).get(service_key)
            if url:
                with urllib.request.urlopen(url + "/", timeout=2) as answer:
                    if answer.status == 200:
                        return
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Service {service_key} not served through its data plane by the deadline")
        time.sleep(0.1)
