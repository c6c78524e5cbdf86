"""Point the live Service at a colour, or back at the previous one: decisions, not I/O.

As in Argo Rollouts' blue-green controller, a switch is one idempotent merge patch of the live
Service's selector, made only when the new colour's endpoints are all ready, and guarded by the
snapshot's ``resourceVersion`` (the API server answers 409 when the Service changed since the
snapshot was read). The same patch writes the durable record on the Service, so any run, or a
person with kubectl, can see where things stand:

    greenlight.dev/active-colour      the colour the selector now points at
    greenlight.dev/previous-colour    the colour it replaced (a rollback returns to it)
    greenlight.dev/release-id         the release now live
    greenlight.dev/digests            that release's digests, JSON with sorted keys
    greenlight.dev/previous-release-id, greenlight.dev/previous-digests
                                      the same for the release replaced (a rollback restores them)
    greenlight.dev/rolled-back-release
                                      set by a rollback to the release it took out of service;
                                      cleared by the next switch. While set, rolling back again
                                      does nothing: it would bring that release back.

The live colour is read from the selector, which is what routes traffic; the active-colour
annotation is the record, and a Service whose selector has no colour is not blue-green.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from greenlight.core.manifests import ACTIVE_COLOUR, ANNOTATION_PREFIX, DIGESTS, PREVIOUS_COLOUR, RELEASE_ID
from greenlight.errors import InputInvalid

PREVIOUS_RELEASE_ID = ANNOTATION_PREFIX + "previous-release-id"
PREVIOUS_DIGESTS = ANNOTATION_PREFIX + "previous-digests"
ROLLED_BACK = ANNOTATION_PREFIX + "rolled-back-release"

SwitchAction = Literal["switch", "noop", "wait", "refuse"]
RollbackAction = Literal["scale-up-previous", "wait", "switch", "noop", "refuse"]


@dataclass(frozen=True)
class ServiceSnapshot:
    """What a decision needs of a Service, copied from one read of it."""

    name: str
    resource_version: str
    selector: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""

    def colour(self, colour_label: str) -> str | None:
        """The colour receiving traffic: the selector's ``colour_label`` value (None without one)."""
        return self.selector.get(colour_label) or None

    @property
    def active_colour(self) -> str | None:
        """The colour the last switch recorded as active (the selector is what routes traffic)."""
        return self.annotations.get(ACTIVE_COLOUR) or None

    @property
    def previous_colour(self) -> str | None:
        """The colour the last switch replaced, as recorded on the Service."""
        return self.annotations.get(PREVIOUS_COLOUR) or None

    @property
    def release_id(self) -> str | None:
        """The release recorded as live."""
        return self.annotations.get(RELEASE_ID) or None

    @property
    def digests(self) -> dict[str, str]:
        """The live release's digests as recorded ({} when absent or not a JSON object of strings)."""
        return _parse_digests(self.annotations.get(DIGESTS))

    @property
    def rolled_back_release(self) -> str | None:
        """The release a rollback took out of service, until the next switch clears it."""
        return self.annotations.get(ROLLED_BACK) or None


@dataclass(frozen=True)
class EndpointReadiness:
    """Endpoint addresses of a Service: ready, not ready, and how many are expected."""

    ready: int
    not_ready: int
    expected: int

    @property
    def all_ready(self) -> bool:
        """At least one ready endpoint, as many as expected, and none not ready."""
        return self.ready > 0 and self.ready >= self.expected and self.not_ready == 0

    @property
    def summary(self) -> str:
        """``2/3 endpoints ready`` (plus how many are not ready, when any)."""
        text = f"{self.ready}/{self.expected} endpoints ready"
        return text + (f", {self.not_ready} not ready" if self.not_ready else "")


@dataclass(frozen=True)
class SwitchStep:
    """What to do about the live Service's selector; ``patch`` is set for ``switch`` only."""

    action: SwitchAction
    reason: str
    service: str
    from_colour: str | None
    to_colour: str
    patch: dict[str, Any] | None = None


@dataclass(frozen=True)
class RollbackStep:
    """The next step of a rollback: ``scale_to`` for ``scale-up-previous``, ``patch`` for ``switch``."""

    action: RollbackAction
    reason: str
    service: str
    from_colour: str | None
    to_colour: str | None
    scale_to: int | None = None
    patch: dict[str, Any] | None = None


def snapshot_service(svc: Mapping[str, Any]) -> ServiceSnapshot:
    """The snapshot of a Service dict as the Kubernetes API serves it.

    Raises :class:`InputInvalid` when it has no ``metadata.name``.
    """
    meta = svc.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise InputInvalid("cannot snapshot a Service without metadata.name")
    spec = svc.get("spec") or {}
    return ServiceSnapshot(
        name=str(name),
        resource_version=str(meta.get("resourceVersion") or ""),
        selector={str(k): str(v) for k, v in (spec.get("selector") or {}).items()},
        annotations={str(k): str(v) for k, v in (meta.get("annotations") or {}).items()},
        namespace=str(meta.get("namespace") or ""),
    )


def endpoint_readiness(endpoints: Mapping[str, Any] | None, expected: int) -> EndpointReadiness:
    """Count the ready and not-ready addresses of an Endpoints object (None: no object yet).

    An address is counted once however many subsets list it, identified by its targetRef
    (else by ip and ports); one listed both ready and not ready counts as ready.
    """
    ready: set[str] = set()
    not_ready: set[str] = set()
    for subset in (endpoints or {}).get("subsets") or []:
        ports = ",".join(sorted(str(p.get("port")) for p in subset.get("ports") or []))
        for address in subset.get("addresses") or []:
            ready.add(_address_key(address, ports))
        for address in subset.get("notReadyAddresses") or []:
            not_ready.add(_address_key(address, ports))
    return EndpointReadiness(ready=len(ready), not_ready=len(not_ready - ready), expected=expected)


def other_colour(colours: Sequence[str], colour: str) -> str:
    """The colour of the pair that is not ``colour``; :class:`InputInvalid` when not one of them."""
    if len(colours) != 2 or colours[0] == colours[1]:
        raise InputInvalid(f"colours must be two different names, got {list(colours)}")
    if colour not in colours:
        raise InputInvalid(f"colour {colour!r} is not one of {colours[0]!r} and {colours[1]!r}")
    return colours[1] if colour == colours[0] else colours[0]


def decide_switch(
    live: ServiceSnapshot,
    target_colour: str,
    colour_label: str,
    endpoints: EndpointReadiness,
    release_id: str,
    digests: Mapping[str, str],
) -> SwitchStep:
    """Whether and how to point ``live`` at ``target_colour``.

    ``noop`` when the selector already points there (and the recorded release is this one or
    none); ``refuse`` when it points there for another release, when the Service does not select
    by ``colour_label``, when the snapshot has no resourceVersion, or when the target has no
    ready endpoint (switching would empty the Service); ``wait`` while the target's endpoints
    are not all ready; otherwise ``switch`` with the merge patch (see the module docstring).
    """
    current = live.selector.get(colour_label)

    def step(action: SwitchAction, reason: str, patch: dict[str, Any] | None = None) -> SwitchStep:
        return SwitchStep(action, reason, live.name, current, target_colour, patch)

    if current is None:
        return step(
            "refuse",
            f"refusing: Service {live.name} has no '{colour_label}' in its selector "
            f"({_selector_text(live.selector)}): it is not a blue-green Service",
        )
    if current == target_colour:
        recorded = live.release_id
        if recorded is not None and recorded != release_id:
            return step(
                "refuse",
                f"refusing: {live.name} already selects {target_colour}, recorded for release "
                f"{recorded}, not {release_id}; another release or a person switched it",
            )
        return step("noop", f"already on {target_colour}: nothing to do")
    if not live.resource_version:
        return step(
            "refuse", f"refusing: the snapshot of {live.name} has no resourceVersion to guard the patch"
        )
    if endpoints.ready == 0:
        return step(
            "refuse",
            f"refusing: {target_colour} has no ready endpoints — switching would empty the Service "
            f"({endpoints.summary})",
        )
    if not endpoints.all_ready:
        return step("wait", f"delaying switch: {target_colour} {endpoints.summary}")
    annotations: dict[str, str | None] = {
        ACTIVE_COLOUR: target_colour,
        PREVIOUS_COLOUR: current,
        RELEASE_ID: release_id,
        DIGESTS: _digests_text(digests),
        PREVIOUS_RELEASE_ID: live.release_id,
        PREVIOUS_DIGESTS: live.annotations.get(DIGESTS),
        ROLLED_BACK: None,
    }
    return step(
        "switch",
        f"switching {live.name} from {current} to {target_colour}: {endpoints.summary}",
        _patch(live, colour_label, target_colour, annotations),
    )


def decide_rollback(
    live: ServiceSnapshot,
    colour_label: str,
    previous_ready: EndpointReadiness,
    previous_replicas: int,
    want_replicas: int,
) -> RollbackStep:
    """The next step of returning ``live`` to its recorded previous colour.

    ``refuse`` without a recorded previous colour, or when the Service does not select by
    ``colour_label``; ``noop`` when the selector is already on the previous colour, or when a
    rollback already happened (the rolled-back marker is set); ``scale-up-previous`` (to
    ``want_replicas``) when the previous colour has fewer replicas; ``wait`` until its endpoints
    are all ready; then ``switch``, whose patch restores the previous release's record and
    marks the release taken out of service.
    """
    previous = live.previous_colour
    current = live.selector.get(colour_label)

    def step(action: RollbackAction, reason: str, **extra: Any) -> RollbackStep:
        return RollbackStep(action, reason, live.name, current, previous, **extra)

    if current is None:
        return step(
            "refuse",
            f"refusing: Service {live.name} has no '{colour_label}' in its selector: not a blue-green Service",
        )
    if previous is None:
        return step(
            "refuse", f"refusing: no previous colour recorded on {live.name}: nothing to roll back to"
        )
    if current == previous:
        return step("noop", f"already on {previous}: nothing to roll back")
    if live.rolled_back_release is not None:
        return step(
            "noop",
            f"already rolled back: release {live.rolled_back_release} was taken out of service "
            f"and {current} is live; rolling back again would bring it back",
        )
    if previous_replicas < want_replicas:
        return step(
            "scale-up-previous",
            f"{previous} scaled down ({previous_replicas} replicas): scaling to {want_replicas} "
            "and waiting for readiness first",
            scale_to=want_replicas,
        )
    wanted = EndpointReadiness(previous_ready.ready, previous_ready.not_ready, max(want_replicas, 1))
    if not wanted.all_ready:
        return step("wait", f"waiting for {previous} before rolling back: {wanted.summary}")
    if not live.resource_version:
        return step(
            "refuse", f"refusing: the snapshot of {live.name} has no resourceVersion to guard the patch"
        )
    annotations: dict[str, str | None] = {
        ACTIVE_COLOUR: previous,
        PREVIOUS_COLOUR: current,
        RELEASE_ID: live.annotations.get(PREVIOUS_RELEASE_ID),
        DIGESTS: live.annotations.get(PREVIOUS_DIGESTS),
        PREVIOUS_RELEASE_ID: live.release_id,
        PREVIOUS_DIGESTS: live.annotations.get(DIGESTS),
        ROLLED_BACK: live.release_id or f"unrecorded-on-{current}",
    }
    return step(
        "switch",
        f"fast rollback: {previous} still warm with {previous_ready.ready}/{wanted.expected} ready",
        patch=_patch(live, colour_label, previous, annotations),
    )


def _patch(
    live: ServiceSnapshot, colour_label: str, colour: str, annotations: Mapping[str, str | None]
) -> dict[str, Any]:
    """The merge patch: resourceVersion precondition, annotations (None deletes), selector colour."""
    return {
        "metadata": {"resourceVersion": live.resource_version, "annotations": dict(annotations)},
        "spec": {"selector": {**live.selector, colour_label: colour}},
    }


def _digests_text(digests: Mapping[str, str]) -> str:
    return json.dumps(dict(digests), sort_keys=True, separators=(",", ":"))


def _parse_digests(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        return {}
    return {str(k): v for k, v in value.items()}


def _address_key(address: Mapping[str, Any], ports: str) -> str:
    ref = address.get("targetRef") or {}
    if ref.get("uid") or ref.get("name"):
        return f"{ref.get('kind', '')}/{ref.get('namespace', '')}/{ref.get('name', '')}/{ref.get('uid', '')}"
    return f"{address.get('ip', '')}:{ports}"


def _selector_text(selector: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(selector.items())) or "empty"
