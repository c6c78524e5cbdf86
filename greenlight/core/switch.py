"""Point live traffic at a colour, or back at the previous one: decisions, not I/O.

Where live traffic goes is read from one object, the *router*'s (``traffic.router``): the live
Service's selector (``service-selector``, :class:`ServiceSnapshot`) or a Gateway API HTTPRoute's
backendRef weights (``gateway-httproute``, :class:`greenlight.core.httproute.RouteSnapshot`).
The decisions here read any :class:`TrafficSnapshot` and say which weights to set (colour ->
share, 100 for all of it); the snapshot turns them into its own merge patch.

As in Argo Rollouts' blue-green controller, a switch is one idempotent merge patch of that
object, made only when the new colour's endpoints are all ready, and guarded by the
snapshot's ``resourceVersion`` (the API server answers 409 when it changed since the
snapshot was read). The same patch writes the durable record on the object, so any run, or a
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
    greenlight.dev/overlap            while an overlap switch or a progressive release runs:
                                      JSON {"from", "to", "release"} (and "weight", the new
                                      colour's share, for a progressive step)

Two ways to move traffic (``release.switch_mode``):

- ``direct``: one patch points the selector at the new colour. Where the data plane keeps the
  old endpoints until it has attached the new ones (kube-proxy, a mesh), nothing is lost.
- ``overlap``: first *widen* the selector to both colours (the colour label is dropped, so the
  Service selects every pod of the app), wait until the new colour serves, then *narrow* to it.
  Container-native load balancing (GKE NEGs) detaches removed endpoints before it attaches new
  ones (kubernetes/ingress-gce#638): a direct switch leaves seconds with no backend there.

- ``progressive`` (HTTPRoute only, ``traffic.progressive``): the new colour's share rises step by
  step (e.g. 10, 50 %), recorded like an overlap with its weight, the gate judging each step,
  then the switch gives it all.

The live colour is read from what routes traffic (the selector, the weights); the active-colour
annotation is the record, and an object that sends no colour all the traffic is not blue-green
unless an overlap switch recorded on it is under way (then the colour it moves from is live).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from greenlight.core.manifests import ACTIVE_COLOUR, ANNOTATION_PREFIX, DIGESTS, PREVIOUS_COLOUR, RELEASE_ID
from greenlight.errors import InputInvalid

PREVIOUS_RELEASE_ID = ANNOTATION_PREFIX + "previous-release-id"
PREVIOUS_DIGESTS = ANNOTATION_PREFIX + "previous-digests"
ROLLED_BACK = ANNOTATION_PREFIX + "rolled-back-release"
OVERLAP = ANNOTATION_PREFIX + "overlap"

SwitchAction = Literal["switch", "widen", "narrow", "noop", "wait", "refuse"]
SwitchMode = Literal["direct", "overlap", "progressive"]
# the final actions of a switch that leaves traffic on the target colour
MOVED = frozenset({"switch", "narrow", "noop"})
RollbackAction = Literal["scale-up-previous", "wait", "widen", "switch", "noop", "refuse"]
ROLLBACK_OVERLAP = "rollback"  # the release an overlap records while a rollback moves traffic
Weights = Mapping[str, int]  # colour -> share of live traffic (0 none; the only non-zero: all of it)


class TrafficSnapshot(Protocol):
    """What a decision needs of the object that routes an app's live traffic, from one read of it."""

    @property
    def kind(self) -> str:
        """``Service``, ``HTTPRoute``: for messages."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...

    @property
    def resource_version(self) -> str: ...

    @property
    def guard(self) -> str:
        """What must not change between a plan and its move (someone else moving traffic
        changes it; a controller's status write does not)."""

    @property
    def weights(self) -> dict[str, int] | None:
        """colour -> share, where the object says it by weights (None: a selector)."""

    @property
    def annotations(self) -> Mapping[str, str]: ...

    @property
    def selected(self) -> str | None:
        """The colour that gets all the traffic; None when none or several do."""

    @property
    def problem(self) -> str | None:
        """Why the object cannot be switched (not blue-green, or traffic split without an overlap
        recorded), as a sentence naming what to fix; None when it can."""

    def patch(self, weights: Weights, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """The merge patch that sends traffic by ``weights`` and writes ``annotations`` (None
        deletes), guarded by this snapshot's resourceVersion."""

    def colour(self) -> str | None:
        """The colour receiving traffic: the selected one; during an overlap the one it moves from."""

    @property
    def overlap(self) -> Overlap | None: ...

    @property
    def active_colour(self) -> str | None: ...

    @property
    def previous_colour(self) -> str | None: ...

    @property
    def release_id(self) -> str | None: ...

    @property
    def digests(self) -> dict[str, str]: ...

    @property
    def rolled_back_release(self) -> str | None: ...


class Recorded:
    """The record a switch writes on the object that routes traffic (its ``annotations``)."""

    annotations: Mapping[str, str]

    @property
    def selected(self) -> str | None:
        raise NotImplementedError

    def colour(self) -> str | None:
        """The colour receiving traffic: the selected one; during an overlap switch (no colour
        gets all of it) the colour it moves from; else None."""
        selected = self.selected
        if selected:
            return selected
        overlap = self.overlap
        return overlap.from_colour if overlap else None

    @property
    def overlap(self) -> Overlap | None:
        """The overlap switch (or progressive release) under way on this object."""
        text = self.annotations.get(OVERLAP)
        if not text:
            return None
        try:
            value = json.loads(text)
            weight = value.get("weight")
            return Overlap(
                str(value["from"]),
                str(value["to"]),
                str(value.get("release") or ""),
                int(weight) if isinstance(weight, int) and not isinstance(weight, bool) else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    @property
    def active_colour(self) -> str | None:
        """The colour the last switch recorded as active (the selector or weights route traffic)."""
        return self.annotations.get(ACTIVE_COLOUR) or None

    @property
    def previous_colour(self) -> str | None:
        """The colour the last switch replaced, as recorded."""
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
class ServiceSnapshot(Recorded):
    """The live Service (``service-selector``): its selector's ``colour_label`` value is the colour."""

    name: str
    resource_version: str
    selector: Mapping[str, str]
    annotations: Mapping[str, str] = field(default_factory=dict)
    namespace: str = ""
    colour_label: str = "color"

    kind = "Service"

    @property
    def guard(self) -> str:
        return self.resource_version

    @property
    def weights(self) -> dict[str, int] | None:
        return None

    @property
    def selected(self) -> str | None:
        return self.selector.get(self.colour_label) or None

    @property
    def problem(self) -> str | None:
        if self.selected or self.overlap:
            return None
        return (
            f"Service {self.name} has no '{self.colour_label}' in its selector "
            f"({_selector_text(self.selector)}): it is not a blue-green Service"
        )

    def patch(self, weights: Weights, annotations: Mapping[str, str | None]) -> dict[str, Any]:
        """One colour with traffic: the selector names it; several: the colour leaves the selector
        (null in a merge patch), so the Service selects every pod of the app."""
        serving = [c for c, w in weights.items() if w > 0]
        colour = serving[0] if len(serving) == 1 else None
        return {
            "metadata": {"resourceVersion": self.resource_version, "annotations": dict(annotations)},
            "spec": {"selector": {**self.selector, self.colour_label: colour}},
        }


@dataclass(frozen=True)
class Overlap:
    """An overlap switch (or a progressive release's step) recorded on the object that routes
    traffic: from a colour to another, for a release."""

    from_colour: str
    to_colour: str
    release_id: str
    weight: int | None = None  # a progressive step: the new colour's share (None: an overlap)

    def text(self) -> str:
        value: dict[str, Any] = {"from": self.from_colour, "to": self.to_colour, "release": self.release_id}
        if self.weight is not None:
            value["weight"] = self.weight
        return json.dumps(value, sort_keys=True, separators=(",", ":"))


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


def follows(live: TrafficSnapshot, record: Overlap) -> bool:
    """Is ``live`` where a move that wrote ``record`` left it: no colour with all the traffic,
    that very record on it, and (where the object has weights) the share the record says
    (a progressive step's weight; 50 for an overlap)? False when anyone moved traffic since."""
    if live.selected is not None or live.overlap != record:
        return False
    weights = live.weights
    share = record.weight if record.weight is not None else 50
    return weights is None or weights.get(record.to_colour) == share


def snapshot_service(svc: Mapping[str, Any], colour_label: str = "color") -> ServiceSnapshot:
    """The snapshot of a Service dict as the Kubernetes API serves it, whose selector's
    ``colour_label`` names the colour.

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
        colour_label=colour_label,
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
    live: TrafficSnapshot,
    target_colour: str,
    endpoints: EndpointReadiness,
    release_id: str,
    digests: Mapping[str, str],
    mode: SwitchMode = "direct",
    weight: int | None = None,
) -> SwitchStep:
    """Whether and how to point ``live`` at ``target_colour``.

    ``noop`` when all traffic already goes there (and the recorded release is this one or
    none); ``refuse`` when it goes there for another release, when no colour gets all of it
    and no overlap is recorded (not blue-green: the snapshot's ``problem`` says why), when
    another overlap switch is under way, when the snapshot has no resourceVersion, or when the
    target has no ready endpoint (switching would leave it nothing to serve with); ``wait``
    while the target's endpoints are not all ready. Otherwise, in ``direct`` mode, ``switch``
    with the patch (see the module docstring); in ``overlap`` mode ``widen`` (both colours
    serve, the overlap recorded), and once this release's overlap is recorded, ``narrow``: the
    switch patch, clearing the overlap. In ``progressive`` mode ``weight`` (1..99) is the new
    colour's share for this step: ``widen`` to it (without a patch when already there); with
    ``weight`` None, the last step: ``narrow`` (or ``switch`` from a single colour).
    """
    current = live.selected
    overlap = live.overlap
    if weight is not None and not 0 < weight < 100:
        raise InputInvalid(f"a progressive step's weight must be between 1 and 99, got {weight}")

    def step(action: SwitchAction, reason: str, patch: dict[str, Any] | None = None) -> SwitchStep:
        return SwitchStep(action, reason, live.name, current or live.colour(), target_colour, patch)

    problem = live.problem
    if problem or (current is None and overlap is None):
        return step(
            "refuse", f"refusing: {problem or f'{live.kind} {live.name} sends no colour all its traffic'}"
        )
    if (
        current is None
        and overlap is not None
        and (overlap.to_colour != target_colour or overlap.release_id != release_id)
    ):
        return step(
            "refuse",
            f"refusing: {live.name} is mid-switch from {overlap.from_colour} to {overlap.to_colour} "
            f"for release {overlap.release_id or '(unrecorded)'} (both colours serve); "
            "finish or roll back that switch first",
        )
    if current == target_colour:
        recorded = live.release_id
        if recorded is not None and recorded != release_id:
            return step(
                "refuse",
                f"refusing: {live.name} already sends all traffic to {target_colour}, recorded for "
                f"release {recorded}, not {release_id}; another release or a person switched it",
            )
        return step("noop", f"already on {target_colour}: nothing to do")
    if not live.resource_version:
        return step(
            "refuse", f"refusing: the snapshot of {live.name} has no resourceVersion to guard the patch"
        )
    if endpoints.ready == 0:
        return step(
            "refuse",
            f"refusing: {target_colour} has no ready endpoints — switching would leave {live.name} "
            f"nothing to serve with ({endpoints.summary})",
        )
    if not endpoints.all_ready:
        return step("wait", f"delaying switch: {target_colour} {endpoints.summary}")
    from_colour = current or (overlap.from_colour if overlap else "")
    shift = weight is not None and mode == "progressive"
    if shift or (current is not None and mode == "overlap"):
        record = Overlap(from_colour, target_colour, release_id, weight if shift else None)
        if current is None and follows(live, record):
            return step("widen", f"{live.name} already sends {weight}% to {target_colour}")
        share = weight if shift and weight is not None else 50
        how = f"{share}% to {target_colour}" if shift else f"both colours ({from_colour} and {target_colour})"
        return step(
            "widen",
            f"widening {live.name} to {how} before narrowing to {target_colour}: {endpoints.summary}",
            live.patch({from_colour: 100 - share, target_colour: share}, {OVERLAP: record.text()}),
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
    patch = live.patch({from_colour: 0, target_colour: 100}, annotations)
    if current is None:
        return step(
            "narrow",
            f"narrowing {live.name} from both colours to {target_colour}: {endpoints.summary}",
            patch,
        )
    return step(
        "switch", f"switching {live.name} from {current} to {target_colour}: {endpoints.summary}", patch
    )


def decide_rollback(
    live: TrafficSnapshot,
    previous_ready: EndpointReadiness,
    previous_replicas: int,
    want_replicas: int,
    app: str | None = None,
    previous_digest: str | None = None,
    mode: SwitchMode = "direct",
) -> RollbackStep:
    """The next step of returning ``live`` to its recorded previous colour.

    ``refuse`` without a recorded previous colour, or when no colour gets all the traffic (not
    blue-green), or when the previous colour no longer runs the previous release's digest for
    ``app`` (``previous_digest`` is what its Deployment runs now: a release has deployed onto
    it, and rolling back would send traffic to a build nobody gated); ``noop`` when traffic is
    already on the previous colour, or when a rollback already happened (the rolled-back
    marker is set); ``scale-up-previous`` (to ``want_replicas``) when the previous colour has
    fewer replicas; ``wait`` until its endpoints are all ready; then ``switch``, whose patch
    restores the previous release's record and marks the release taken out of service; in
    ``overlap`` mode that switch is preceded by ``widen`` (both colours serve, the overlap
    recorded for ``ROLLBACK_OVERLAP``), and an object found so widened is narrowed to the
    previous colour with the same record. During a release's overlap switch or progressive
    step (both colours serve) the rollback narrows back to the colour it started from.
    """
    previous = live.previous_colour
    current = live.selected
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

    problem = live.problem
    if problem:
        return step("refuse", f"refusing: {problem}")
    if current is None and overlap is not None:
        share = f" at {overlap.weight}%" if overlap.weight is not None else ""
        return RollbackStep(
            "switch",
            f"abandoning the {'progressive release' if overlap.weight is not None else 'overlap switch'} "
            f"to {overlap.to_colour}{share}: narrowing back to {overlap.from_colour}",
            live.name,
            None,
            overlap.from_colour,
            patch=live.patch({overlap.from_colour: 100, overlap.to_colour: 0}, {OVERLAP: None}),
        )
    if current is None:
        return step("refuse", f"refusing: {live.kind} {live.name} sends no colour all its traffic")
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
            patch=live.patch(
                {current: 50, previous: 50}, {OVERLAP: Overlap(current, previous, ROLLBACK_OVERLAP).text()}
            ),
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
        patch=live.patch({current: 0, previous: 100}, annotations),
    )


def _short(digest: str | None) -> str:
    if not digest:
        return "no pinned digest"
    return digest[:19]


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
