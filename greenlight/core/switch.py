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
    greenlight.dev/overlap            while an overlap switch runs: JSON {"from", "to", "release"}

Two ways to move traffic (``release.switch_mode``):

- ``direct``: one patch points the selector at the new colour. Where the data plane keeps the
  old endpoints until it has attached the new ones (kube-proxy, a mesh), nothing is lost.
- ``overlap``: first *widen* the selector to both colours (the colour label is dropped, so the
  Service selects every pod of the app), wait until the new colour serves, then *narrow* to it.
  Container-native load balancing (GKE NEGs) detaches removed endpoints before it attaches new
  ones (kubernetes/ingress-gce#638): a direct switch leaves seconds with no backend there.

The live colour is read from the selector, which is what routes traffic; the active-colour
annotation is the record, and a Service whose selector has no colour is not blue-green unless
an overlap switch recorded on it is under way (then the colour it moves from is live).
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
OVERLAP = ANNOTATION_PREFIX + "overlap"

SwitchAction = Literal["switch", "widen", "narrow", "noop", "wait", "refuse"]
SwitchMode = Literal["direct", "overlap"]
# the final actions of a switch that leaves traffic on the target colour
MOVED = frozenset({"switch", "narrow", "noop"})
RollbackAction = Literal["scale-up-previous", "wait", "widen", "switch", "noop", "refuse"]
ROLLBACK_OVERLAP = "rollback"  # the release an overlap records while a rollback moves traffic


@dataclass(frozen=True)
class ServiceSnapshot:
    """What a decision needs of a Service, copied from one read of it."""

    name: str
    resource_version: str
    selector: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""

    def colour(self, colour_label: str) -> str | None:
        """The colour receiving traffic: the selector's ``colour_label`` value; during an overlap
        switch (no colour in the selector) the colour it moves from; else None."""
        selected = self.selector.get(colour_label)
        if selected:
            return selected
        overlap = self.overlap
        return overlap.from_colour if overlap else None

    @property
    def overlap(self) -> Overlap | None:
        """The overlap switch under way on this Service (its selector selects both colours)."""
        text = self.annotations.get(OVERLAP)
        if not text:
            return None
        try:
            value = json.loads(text)
            return Overlap(str(value["from"]), str(value["to"]), str(value.get("release") or ""))
        except (ValueError, KeyError, TypeError):
            return None

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
class Overlap:
    """An overlap switch recorded on a live Service: from a colour to another, for a release."""

    from_colour: str
    to_colour: str
    release_id: str

    def text(self) -> str:
        return json.dumps(
            {"from": self.from_colour, "to": self.to_colour, "release": self.release_id},
            sort_keys=True,
            separators=(",", ":"),
        )


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
    at: float | None = None  # epoch seconds the patch that moved traffic was sent (set by the caller)


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
    at: float | None = None  # epoch seconds the patch that moved traffic was sent (set by the caller)


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
    mode: SwitchMode = "direct",
) -> SwitchStep:
    """Whether and how to point ``live`` at ``target_colour``.

    ``noop`` when the selector already points there (and the recorded release is this one or
    none); ``refuse`` when it points there for another release, when the Service does not select
    by ``colour_label``, when another overlap switch is under way, when the snapshot has no
    resourceVersion, or when the target has no ready endpoint (switching would empty the
    Service); ``wait`` while the target's endpoints are not all ready. Otherwise, in ``direct``
    mode, ``switch`` with the merge patch (see the module docstring); in ``overlap`` mode
    ``widen`` (the selector without the colour, the overlap recorded), and once this release's
    overlap is recorded on the Service, ``narrow``: the switch patch, clearing the overlap.
    """
    current = live.selector.get(colour_label)
    overlap = live.overlap

    def step(action: SwitchAction, reason: str, patch: dict[str, Any] | None = None) -> SwitchStep:
        return SwitchStep(
            action, reason, live.name, current or live.colour(colour_label), target_colour, patch
        )

    if current is None and overlap is None:
        return step(
            "refuse",
            f"refusing: Service {live.name} has no '{colour_label}' in its selector "
            f"({_selector_text(live.selector)}): it is not a blue-green Service",
        )
    if (
        current is None
        and overlap is not None
        and (overlap.to_colour != target_colour or overlap.release_id != release_id)
    ):
        return step(
            "refuse",
            f"refusing: {live.name} is mid-switch from {overlap.from_colour} to {overlap.to_colour} "
            f"for release {overlap.release_id or '(unrecorded)'} (it selects both colours); "
            "finish or roll back that switch first",
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
    from_colour = current or (overlap.from_colour if overlap else "")
    if current is not None and mode == "overlap":
        widened = {k: v for k, v in live.selector.items() if k != colour_label}
        return step(
            "widen",
            f"widening {live.name} to both colours ({_selector_text(widened)}) before narrowing "
            f"to {target_colour}: {endpoints.summary}",
            _widen_patch(live, colour_label, Overlap(current, target_colour, release_id)),
        )
    annotations: dict[str, str | None] = {
        ACTIVE_COLOUR: target_colour,
        PREVIOUS_COLOUR: from_colour,
        RELEASE_ID: release_id,
        DIGESTS: _digests_text(digests),
        PREVIOUS_RELEASE_ID: live.release_id,
        PREVIOUS_DIGESTS: live.annotations.get(DIGESTS),
        ROLLED_BACK: None,
        OVERLAP: None,
    }
    if current is None:
        return step(
            "narrow",
            f"narrowing {live.name} from both colours to {target_colour}: {endpoints.summary}",
            _patch(live, colour_label, target_colour, annotations),
        )
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
    app: str | None = None,
    previous_digest: str | None = None,
    mode: SwitchMode = "direct",
) -> RollbackStep:
    """The next step of returning ``live`` to its recorded previous colour.

    ``refuse`` without a recorded previous colour, or when the Service does not select by
    ``colour_label``, or when the previous colour no longer runs the previous release's digest
    for ``app`` (``previous_digest`` is what its Deployment runs now: a release has deployed onto
    it, and rolling back would send traffic to a build nobody gated); ``noop`` when the selector
    is already on the previous colour, or when a rollback already happened (the rolled-back
    marker is set); ``scale-up-previous`` (to ``want_replicas``) when the previous colour has
    fewer replicas; ``wait`` until its endpoints are all ready; then ``switch``, whose patch
    restores the previous release's record and marks the release taken out of service; in
    ``overlap`` mode that switch is preceded by ``widen`` (both colours selected, the overlap
    recorded for ``ROLLBACK_OVERLAP``), and a Service found so widened is narrowed to the
    previous colour with the same record. During a release's overlap switch (both colours
    selected) the rollback narrows back to the colour it started from.
    """
    previous = live.previous_colour
    current = live.selector.get(colour_label)
    overlap = live.overlap
    rolling_back = (
        current is None
        and overlap is not None
        and overlap.release_id == ROLLBACK_OVERLAP
        and overlap.to_colour == previous
    )
    if rolling_back:
        assert overlap is not None
        current = overlap.from_colour

    def step(action: RollbackAction, reason: str, **extra: Any) -> RollbackStep:
        return RollbackStep(action, reason, live.name, current, previous, **extra)

    if current is None and overlap is not None:
        return RollbackStep(
            "switch",
            f"abandoning the overlap switch to {overlap.to_colour}: narrowing back to {overlap.from_colour}",
            live.name,
            None,
            overlap.from_colour,
            patch=_patch(live, colour_label, overlap.from_colour, {OVERLAP: None}),
        )
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
    recorded = _parse_digests(live.annotations.get(PREVIOUS_DIGESTS)).get(app or "")
    if recorded and previous_digest != recorded:
        return step(
            "refuse",
            f"refusing: {previous} now runs {_short(previous_digest)}, not the previous release's "
            f"{_short(recorded)}: a release has deployed onto it, and rolling back would send "
            "traffic to a build nobody gated",
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
    if mode == "overlap" and not rolling_back:
        return step(
            "widen",
            f"rolling back behind a load balancer that detaches before it attaches: widening "
            f"{live.name} to both colours before narrowing to {previous}",
            patch=_widen_patch(live, colour_label, Overlap(current, previous, ROLLBACK_OVERLAP)),
        )
    annotations: dict[str, str | None] = {
        ACTIVE_COLOUR: previous,
        PREVIOUS_COLOUR: current,
        RELEASE_ID: live.annotations.get(PREVIOUS_RELEASE_ID),
        DIGESTS: live.annotations.get(PREVIOUS_DIGESTS),
        PREVIOUS_RELEASE_ID: live.release_id,
        PREVIOUS_DIGESTS: live.annotations.get(DIGESTS),
        ROLLED_BACK: live.release_id or f"unrecorded-on-{current}",
        OVERLAP: None,
    }
    return step(
        "switch",
        ("narrowing to " if rolling_back else "fast rollback: ")
        + f"{previous} still warm with {previous_ready.ready}/{wanted.expected} ready",
        patch=_patch(live, colour_label, previous, annotations),
    )


def _short(digest: str | None) -> str:
    if not digest:
        return "no pinned digest"
    return digest[:19]


def _widen_patch(live: ServiceSnapshot, colour_label: str, record: Overlap) -> dict[str, Any]:
    """The merge patch that selects both colours (the colour leaves the selector: a merge patch
    deletes a key given as null) and records the overlap, guarded by the snapshot's version."""
    return {
        "metadata": {"resourceVersion": live.resource_version, "annotations": {OVERLAP: record.text()}},
        "spec": {"selector": {**live.selector, colour_label: None}},
    }


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
