"""Tasks with the shared retry policy, refused by the lab's registry with 429 and Retry-After,
start their next try no sooner than the server asked (Prefect alone would retry after 0.5 s), and
the error keeps the HTTP status. The registry client does not retry by itself, so every try is a
task's try. Nor does the Kubernetes client: urllib3's default would retry a 429 or 503 with
Retry-After three times on its own, sleeping what the server asks, before the task saw it;
``greenlight.clients.kube`` turns that off (the last test)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from prefect import task

from greenlight.clients.kube import Kube
from greenlight.clients.registry import RegistryClient
from greenlight.core.images import parse_image_ref
from greenlight.errors import TransientError
from greenlight.tasks.policy import FRESH, MAX_RETRY_AFTER_S, RETRIES
from greenlight.tasks.registry import resolve_images
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab

IMAGE = "ghcr.io/sma-platform/backend:baseline"  # pushed by the lab, served through its mirror

# what each try of the task below saw: when it started and when it failed (monotonic s), the error
TRIES: list[dict[str, Any]] = []


@task(name="resolve-one-image", **FRESH, **RETRIES)
def resolve_one_image(image: str) -> str:
    """One resolve through the real client, each try recorded."""
    seen: dict[str, Any] = {"started": time.monotonic()}
    TRIES.append(seen)
    with RegistryClient() as registry:
        try:
            return registry.resolve(parse_image_ref(image))
        except TransientError as e:
            seen.update(failed=time.monotonic(), error=e)
            raise


def refuse_manifests(lab: LabState, retry_after: float) -> int:
    """The lab's registry answers the next manifest request 429 with ``Retry-After``."""
    rule = {"target": "registry", "resource": "manifests", "status": 429, "retry_after": retry_after}
    return int(supervisor.control(lab, "POST", "/faults", rule)["id"])


def fired(lab: LabState, rule_id: int) -> int:
    return int(supervisor.control(lab, "GET", f"/faults/{rule_id}")["fired"])


def test_a_task_refused_with_429_retries_no_sooner_than_retry_after(lab: LabState) -> None:
    """The next try starts at least Retry-After (3 s) after the 429, and the error kept the status."""
    TRIES.clear()
    rule = refuse_manifests(lab, retry_after=3)
    assert resolve_one_image(IMAGE).startswith("sha256:")
    assert fired(lab, rule) == 1
    first, second = TRIES  # refused once, then through
    error = first["error"]
    assert (error.status, error.retry_after) == (429, 3.0)
    waited = second["started"] - first["failed"]
    print(f"next try {waited:.2f} s after the 429 (Retry-After: 3)")
    assert waited >= 3.0


def test_the_release_s_image_resolution_waits_out_retry_after(lab: LabState) -> None:
    """resolve-images, as the release runs it, outlasts the server's Retry-After before it resolves."""
    rule = refuse_manifests(lab, retry_after=3)
    started = time.monotonic()
    digests = resolve_images({"backend": parse_image_ref(IMAGE)})
    took = time.monotonic() - started
    print(f"resolve-images took {took:.2f} s across a 429 with Retry-After: 3")
    assert fired(lab, rule) == 1
    assert digests["backend"].startswith("sha256:")
    assert took >= 3.0


def test_a_task_asked_to_wait_longer_than_the_limit_fails_at_once_with_the_status(lab: LabState) -> None:
    """A Retry-After beyond MAX_RETRY_AFTER_S is not waited out: the task fails with the 429
    (had it retried, the spent fault would have let the second try through)."""
    asked = MAX_RETRY_AFTER_S + 30
    rule = refuse_manifests(lab, retry_after=asked)
    with pytest.raises(TransientError, match=r"HTTP 429") as caught:
        resolve_images({"backend": parse_image_ref(IMAGE)})
    assert fired(lab, rule) == 1
    assert (caught.value.status, caught.value.retry_after) == (429, asked)


def test_a_kubernetes_call_refused_with_429_hands_retry_after_to_the_caller(lab: LabState) -> None:
    """The Kubernetes client does not sleep through a 429's Retry-After by itself (urllib3's
    default would, three times, uncapped, inside one call and beyond its timeout): the first 429
    is a TransientError with the status and Retry-After, for the task's retry policy to honour
    (capped at MAX_RETRY_AFTER_S). The rule could refuse three calls; it refused one."""
    rule = {"target": "kube-primary", "verb": "get", "resource": "namespaces", "status": 429,
            "retry_after": 2, "count": 3}  # fmt: skip
    rule_id = int(supervisor.control(lab, "POST", "/faults", rule)["id"])
    kube = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    try:
        with pytest.raises(TransientError, match=r"HTTP 429") as caught:
            kube.get("namespaces", "sma-staging")
    finally:
        kube.close()
        refused = fired(lab, rule_id)
        supervisor.control(lab, "DELETE", "/faults?target=kube-primary")
    assert (caught.value.status, caught.value.retry_after) == (429, 2.0)
    assert refused == 1
