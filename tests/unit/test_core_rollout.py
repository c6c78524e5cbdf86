"""Rollout assessment over Deployment and pod dicts as the Kubernetes API serves them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from greenlight.core.rollout import assess_rollout

IMAGE = "ghcr.io/sma/backend@sha256:" + "ab" * 32
OLD_IMAGE = "ghcr.io/sma/backend@sha256:" + "cd" * 32


def deployment(
    replicas: int = 3,
    updated: int = 3,
    available: int = 3,
    total: int | None = None,
    generation: int = 2,
    observed: int = 2,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Deployment dict with the given spec and status counts."""
    return {
        "metadata": {"name": "backend-green", "generation": generation},
        "spec": {
            "replicas": replicas,
            "template": {"spec": {"containers": [{"name": "app", "image": IMAGE}]}},
        },
        "status": {
            "observedGeneration": observed,
            "replicas": updated if total is None else total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


def pod(
    name: str = "backend-green-abc",
    ready: bool = True,
    waiting: str | None = None,
    message: str = "",
    restarts: int = 0,
    image: str = IMAGE,
    deleting: bool = False,
    init: bool = False,
) -> dict[str, Any]:
    """A pod dict: Ready condition, one container status, optionally waiting or terminating."""
    state: dict[str, Any] = (
        {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    )
    cs: dict[str, Any] = {
        "name": "app",
        "image": image,
        "ready": ready,
        "restartCount": restarts,
        "state": state,
    }
    if waiting == "CrashLoopBackOff":
        cs["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error"}}
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T10:00:00Z"
    status: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    status["initContainerStatuses" if init else "containerStatuses"] = [cs]
    return {"metadata": meta, "spec": {"containers": [{"name": "app", "image": image}]}, "status": status}


def ready_pods(n: int) -> list[dict[str, Any]]:
    return [pod(f"backend-green-{i}") for i in range(n)]


UNAVAILABLE = {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}
DEADLINE = {
    "type": "Progressing",
    "status": "False",
    "reason": "ProgressDeadlineExceeded",
    "message": 'ReplicaSet "backend-green-1" has timed out progressing.',
}

CASES = [
    # id, deployment, pods, elapsed, phase, reason fragment
    ("all-available", deployment(), ready_pods(3), 5, "available", "green 3/3 available"),
    (
        "one-of-three",
        deployment(updated=3, available=1),
        ready_pods(1),
        5,
        "progressing",
        "green 1/3 available",
    ),
    (
        "not-ready-pod-named",
        deployment(available=2),
        [*ready_pods(2), pod("backend-green-x", ready=False)],
        5,
        "progressing",
        "not ready: backend-green-x",
    ),
    (
        "image-pull-backoff",
        deployment(available=0),
        [
            pod(
                ready=False,
                waiting="ImagePullBackOff",
                message=f'Back-off pulling image "{IMAGE}": not found',
            )
        ],
        1,
        "failed",
        "pod backend-green-abc: ImagePullBackOff: Back-off pulling image",
    ),
    (
        "err-image-pull",
        deployment(available=0),
        [pod(ready=False, waiting="ErrImagePull")],
        1,
        "failed",
        f"pod backend-green-abc: ErrImagePull: image {IMAGE}",
    ),
    (
        "invalid-image-name",
        deployment(available=0),
        [pod(ready=False, waiting="InvalidImageName", message="bad")],
        1,
        "failed",
        "InvalidImageName: bad",
    ),
    (
        "crash-loop-after-restart",
        deployment(available=0),
        [pod("x", ready=False, waiting="CrashLoopBackOff", restarts=3)],
        1,
        "failed",
        "pod x: CrashLoopBackOff (restarts 3, last exit code 1)",
    ),
    (
        "crash-loop-in-init-container",
        deployment(available=0),
        [pod("x", ready=False, waiting="CrashLoopBackOff", restarts=1, init=True)],
        1,
        "failed",
        "pod x: CrashLoopBackOff (restarts 1",
    ),
    (
        "crash-loop-without-restart-waits",
        deployment(available=0),
        [pod("x", ready=False, waiting="CrashLoopBackOff", restarts=0)],
        1,
        "progressing",
        "green 0/3 available",
    ),
    (
        "container-creating-waits",
        deployment(available=0),
        [pod("x", ready=False, waiting="ContainerCreating")],
        1,
        "progressing",
        "not ready: x",
    ),
    (
        "controller-deadline",
        deployment(available=1, conditions=[UNAVAILABLE, DEADLINE]),
        ready_pods(1),
        1,
        "failed",
        'green: progress deadline exceeded (ReplicaSet "backend-green-1" has timed out progressing.): 1/3',
    ),
    (
        "stale-deadline-condition-ignored",
        deployment(available=1, generation=3, observed=2, conditions=[DEADLINE]),
        ready_pods(1),
        1,
        "progressing",
        "waiting for the controller to observe generation 3 (observed 2)",
    ),
    (
        "own-deadline",
        deployment(available=1),
        ready_pods(1),
        61,
        "failed",
        "progress deadline 60 s exceeded: green 1/3 available",
    ),
    (
        "deadline-while-unobserved",
        deployment(generation=3, observed=2),
        ready_pods(3),
        61,
        "failed",
        "progress deadline 60 s exceeded: green: waiting for the controller",
    ),
    (
        "counts-complete-but-unobserved",
        deployment(generation=3, observed=2),
        ready_pods(3),
        5,
        "progressing",
        "observe generation 3",
    ),
    (
        "old-replicas-pending",
        deployment(total=4),
        ready_pods(3),
        5,
        "progressing",
        "1 old replica pending termination",
    ),
    ("updated-lags", deployment(updated=1, available=1), ready_pods(1), 5, "progressing", "1/3 updated"),
    ("pods-not-listed-yet", deployment(), ready_pods(2), 5, "progressing", "2/3 pods listed"),
    (
        "terminating-crash-pod-does-not-fail-but-holds-until-gone",
        deployment(),
        [*ready_pods(3), pod("old", ready=False, waiting="CrashLoopBackOff", restarts=5, deleting=True)],
        5,
        "progressing",
        "green 3/3 available (1 earlier pod still terminating (may still answer))",
    ),
    (
        "terminating-ready-pod-of-the-earlier-release-holds-until-gone",
        deployment(),
        [
            *ready_pods(3),
            pod("old", image=OLD_IMAGE, deleting=True),
            pod("old2", image=OLD_IMAGE, deleting=True),
        ],
        5,
        "progressing",
        "2 earlier pods still terminating",
    ),
    (
        "old-image-pod-ignored",
        deployment(),
        [*ready_pods(3), pod("old", ready=False, waiting="ImagePullBackOff", image=OLD_IMAGE)],
        5,
        "available",
        "green 3/3 available",
    ),
    (
        "scaled-to-zero",
        deployment(replicas=0, updated=0, available=0),
        [],
        5,
        "available",
        "green 0/0 available",
    ),
    (
        "many-unready-pods-elided",
        deployment(replicas=5, available=0),
        [pod(f"p{i}", ready=False) for i in range(5)],
        5,
        "progressing",
        "not ready: p0, p1, p2 ...",
    ),
]


@pytest.mark.parametrize(
    ("deploy", "pods", "elapsed", "phase", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_assess_rollout_phase_and_reason(
    deploy: dict[str, Any], pods: list[dict[str, Any]], elapsed: float, phase: str, reason: str
) -> None:
    """Each Deployment/pod state gives its phase and a reason naming the cause."""
    result = assess_rollout(deploy, pods, now=1000 + elapsed, started_at=1000, deadline_s=60, label="green")
    assert result.phase == phase
    assert reason in result.reason
    assert result.done is (phase != "progressing")


def test_reason_defaults_to_deployment_name_and_counts_are_recorded() -> None:
    """Without a label the reason names the Deployment, and the counts behind it are kept."""
    result = assess_rollout(deployment(available=2), ready_pods(2), now=10, started_at=0, deadline_s=60)
    assert result.reason.startswith("backend-green 2/3 available")
    assert (result.desired, result.updated, result.available, result.ready_pods, result.pods) == (
        3,
        3,
        2,
        2,
        2,
    )
    assert result.elapsed_s == 10


def test_long_waiting_message_is_shortened() -> None:
    """A kubelet message longer than 200 characters is cut so the reason stays one readable line."""
    long = pod(ready=False, waiting="ErrImagePull", message="x" * 500)
    result = assess_rollout(deployment(available=0), [long], now=1, started_at=0, deadline_s=60)
    assert result.phase == "failed"
    assert result.reason.endswith("...") and len(result.reason) < 260


def test_malformed_counts_read_as_defaults() -> None:
    """Missing or non-numeric status fields count as zero instead of raising."""
    deploy = {"metadata": {"name": "d"}, "spec": {"replicas": "x"}, "status": {"availableReplicas": None}}
    result = assess_rollout(deploy, [], now=1, started_at=0, deadline_s=60)
    assert result.phase == "progressing"
    assert result.desired == 1 and result.available == 0


def test_a_terminating_pod_past_its_grace_period_no_longer_holds_the_rollout() -> None:
    """deletionTimestamp is when the pod must be gone: past it (a pod stuck on a lost node) the
    rollout is available; before it, the pod may still answer under the colour's label."""
    stuck = pod("old", image=OLD_IMAGE, deleting=True)  # deletionTimestamp 2026-11-26T10:00:00Z
    gone_by = datetime(2026, 11, 26, 10, 0, tzinfo=UTC).timestamp()
    pods = [*ready_pods(3), stuck]
    before = assess_rollout(deployment(), pods, now=gone_by - 1, started_at=gone_by - 10, deadline_s=60)
    after = assess_rollout(deployment(), pods, now=gone_by + 1, started_at=gone_by - 10, deadline_s=60)
    assert (before.phase, after.phase) == ("progressing", "available"), (before, after)
