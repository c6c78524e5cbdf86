"""Is a colour's Deployment rolled out? A pure reading of what the Kubernetes API serves.

:func:`assess_rollout` takes the Deployment and its pods as the API returns them (camelCase
dicts) and says ``progressing``, ``available`` or ``failed``, with a reason fit for a log line,
the release report and Slack (``green 1/3 available``).

It fails fast instead of waiting out the deadline when a pod cannot start: a container (or init
container) waiting in ImagePullBackOff, ErrImagePull, ErrImageNeverPull or InvalidImageName, or
in CrashLoopBackOff after at least one restart; and when the Deployment controller itself has
given up (condition ``Progressing=False``, reason ``ProgressDeadlineExceeded``), a condition it
trusts only once the controller has observed the current generation.

Pods that are terminating, or whose containers run other images than the Deployment's template
(an older ReplicaSet's pods), are not counted and cannot fail the rollout. But a rollout is not
``available`` while a pod that is not current is still terminating within its grace period
(``deletionTimestamp`` is when it must be gone): with a preStop sleep it still answers on the
connections it holds and, for the data plane's propagation delay, on new ones, under the same
colour label, so a gate started then would judge the earlier release's pods as the candidate's.
(A pod past its deletionTimestamp, stuck on a lost node, no longer holds the rollout.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

RolloutPhase = Literal["progressing", "available", "failed"]

IMAGE_FAILURES = frozenset({"ImagePullBackOff", "ErrImagePull", "ErrImageNeverPull", "InvalidImageName"})
CRASH_LOOP = "CrashLoopBackOff"
MESSAGE_MAX = 200


@dataclass(frozen=True)
class RolloutAssessment:
    """Where a Deployment's rollout stands; ``reason`` says why in one line."""

    phase: RolloutPhase
    reason: str
    label: str  # what the reason calls the Deployment (its colour, or its name)
    desired: int
    updated: int
    available: int
    ready_pods: int  # current, non-terminating pods that are Ready
    pods: int  # current, non-terminating pods
    elapsed_s: float

    @property
    def done(self) -> bool:
        """True once waiting longer cannot change the outcome (available or failed)."""
        return self.phase != "progressing"


def assess_rollout(
    deployment: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    now: float,
    started_at: float,
    deadline_s: float,
    *,
    label: str | None = None,
) -> RolloutAssessment:
    """Assess the rollout of ``deployment`` given its ``pods``, ``now - started_at`` seconds in.

    ``available`` needs ``observedGeneration >= generation``, ``updatedReplicas ==
    availableReplicas == spec.replicas``, no old replicas left and every current pod Ready.
    ``failed`` on a pod that cannot start (see the module docstring), on the controller's
    ProgressDeadlineExceeded, or when ``deadline_s`` has passed without becoming available.
    ``label`` names the Deployment in reasons (e.g. its colour); default: its name.
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = label or str(meta.get("name") or "deployment")
    desired = _int(spec.get("replicas"), 1)
    updated = _int(status.get("updatedReplicas"), 0)
    available = _int(status.get("availableReplicas"), 0)
    total = _int(status.get("replicas"), 0)
    current = _current_pods(pods, _template_images(spec))
    ready = [p for p in current if _pod_ready(p)]
    lingering = _lingering(pods, now)
    elapsed = max(0.0, now - started_at)

    def result(phase: RolloutPhase, reason: str) -> RolloutAssessment:
        return RolloutAssessment(
            phase, reason, name, desired, updated, available, len(ready), len(current), elapsed
        )

    counts = f"{available}/{desired} available"
    for pod in current:
        problem = _pod_failure(pod)
        if problem is not None:
            return result("failed", problem)
    observed = _int(status.get("observedGeneration"), 0)
    generation = _int(meta.get("generation"), 0)
    fresh = observed >= generation
    deadline_condition = _deadline_condition(status) if fresh else None
    if deadline_condition is not None:
        return result("failed", f"{name}: progress deadline exceeded ({deadline_condition}): {counts}")
    if not fresh:
        waiting = (
            f"{name}: waiting for the controller to observe generation {generation} (observed {observed})"
        )
    elif (
        updated == available == desired
        and total == desired
        and len(ready) == len(current) >= desired
        and not lingering
    ):
        return result("available", f"{name} {counts}")
    else:
        waiting = f"{name} {counts}" + _waiting_detail(desired, updated, total, current, ready, lingering)
    if elapsed > deadline_s:
        return result("failed", f"progress deadline {deadline_s:g} s exceeded: {waiting}")
    return result("progressing", waiting)


def _waiting_detail(
    desired: int,
    updated: int,
    total: int,
    current: list[Mapping[str, Any]],
    ready: list[Mapping[str, Any]],
    lingering: Sequence[Mapping[str, Any]] = (),
) -> str:
    """What the rollout still waits for, after the 'N/M available' count."""
    notes = []
    if lingering:
        n = len(lingering)
        notes.append(f"{n} earlier pod{'s' if n != 1 else ''} still terminating (may still answer)")
    if updated < desired:
        notes.append(f"{updated}/{desired} updated")
    if total > updated:
        old = total - updated
        notes.append(f"{old} old replica{'s' if old != 1 else ''} pending termination")
    unready = [_pod_name(p) for p in current if p not in ready]
    if unready:
        shown = ", ".join(unready[:3]) + (" ..." if len(unready) > 3 else "")
        notes.append(f"not ready: {shown}")
    elif len(current) < desired:
        notes.append(f"{len(current)}/{desired} pods listed")
    return f" ({'; '.join(notes)})" if notes else ""


def _deadline_condition(status: Mapping[str, Any]) -> str | None:
    """The controller's message when it reports Progressing=False/ProgressDeadlineExceeded."""
    for cond in status.get("conditions") or []:
        if (
            cond.get("type") == "Progressing"
            and cond.get("status") == "False"
            and cond.get("reason") == "ProgressDeadlineExceeded"
        ):
            return str(cond.get("message") or "ProgressDeadlineExceeded")
    return None


def _pod_failure(pod: Mapping[str, Any]) -> str | None:
    """Why ``pod`` cannot start (image cannot be pulled, crash loop), or None."""
    status = pod.get("status") or {}
    statuses = list(status.get("initContainerStatuses") or []) + list(status.get("containerStatuses") or [])
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason in IMAGE_FAILURES:
            message = _short(str(waiting.get("message") or f"image {cs.get('image', '?')}"))
            return f"pod {_pod_name(pod)}: {reason}: {message}"
        restarts = _int(cs.get("restartCount"), 0)
        if reason == CRASH_LOOP and restarts >= 1:
            last = ((cs.get("lastState") or {}).get("terminated")) or {}
            exit_note = f", last exit code {last['exitCode']}" if "exitCode" in last else ""
            return f"pod {_pod_name(pod)}: {CRASH_LOOP} (restarts {restarts}{exit_note})"
    return None


def _current_pods(pods: Sequence[Mapping[str, Any]], images: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """Pods not terminating and running the template's images (all pods when it names none)."""
    out = []
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        containers = (pod.get("spec") or {}).get("containers") or []
        pod_images = {str(c.get("name")): str(c.get("image")) for c in containers}
        if images and pod_images and pod_images != images:
            continue
        out.append(pod)
    return out


def _lingering(pods: Sequence[Mapping[str, Any]], now: float) -> list[Mapping[str, Any]]:
    """Terminating pods still within their grace period (``deletionTimestamp`` after ``now``)."""
    out = []
    for pod in pods:
        stamp = (pod.get("metadata") or {}).get("deletionTimestamp")
        if not stamp:
            continue
        try:
            gone_by = datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if gone_by > now:
            out.append(pod)
    return out


def _template_images(spec: Mapping[str, Any]) -> dict[str, str]:
    containers = (((spec.get("template") or {}).get("spec")) or {}).get("containers") or []
    return {str(c.get("name")): str(c.get("image")) for c in containers}


def _pod_ready(pod: Mapping[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "?")


def _int(value: Any, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _short(text: str) -> str:
    return text if len(text) <= MESSAGE_MAX else text[: MESSAGE_MAX - 3] + "..."
