"""The traffic routers: where an app's live traffic goes, read and moved through one interface.

A router reads the object that routes an app's live traffic into a
:class:`~greenlight.core.switch.TrafficSnapshot` (decisions over it are pure, in
:mod:`greenlight.core.switch`), writes a decision's patch to it (guarded by the resourceVersion
the snapshot read: a 409 is a :class:`~greenlight.errors.Conflict`), and observes what the
data plane does, so that a switch knows when traffic has arrived
(:func:`greenlight.core.traffic.decide_arrival`). ``profile.traffic.router`` picks one:

``service-selector``
    The live Service's selector names the colour. Arrival: the Service's Endpoints hold the
    new colour's pods (and only those), then requests seen or the propagation allowance.
``gateway-httproute``
    A Gateway API HTTPRoute's backendRefs name one Service per colour (``<service>-<colour>``)
    and its weights send the traffic (0/100; a progressive release's steps in between).
    Arrival: the gateway's controller reports the route's new generation programmed
    (``status.parents[].conditions`` Accepted and ResolvedRefs, ``observedGeneration``), and the
    colours it sends traffic to have ready endpoints; then requests seen or the allowance.

To add a router: a snapshot class in ``greenlight/core`` (its ``selected``, ``problem`` and
``patch``; see :mod:`greenlight.core.httproute`) and a class here with the five methods of
:class:`Router`, named in :func:`router_for` and in ``settings.Traffic.router``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from greenlight.clients.kube import Kube
from greenlight.core.httproute import PLURAL as ROUTES
from greenlight.core.httproute import RouteSnapshot, colour_service, snapshot_route
from greenlight.core.switch import (
    EndpointReadiness,
    SwitchMode,
    TrafficSnapshot,
    endpoint_readiness,
    snapshot_service,
)
from greenlight.errors import NotFound
from greenlight.settings import App, Profile

NEG_ANNOTATION = "cloud.google.com/neg"  # GKE container-native load balancing serves this Service


@dataclass(frozen=True)
class Observed:
    """What the data plane is seen to do for one app: ready addresses by colour of what serves
    live traffic now (``{}`` while nothing is known to serve), and where that was read."""

    by_colour: Mapping[str, int]
    where: str  # "Service backend Endpoints", "HTTPRoute backend (generation 4, programmed) backends"


class Router(Protocol):
    name: str

    def read(self, kube: Kube, profile: Profile, app: App) -> TrafficSnapshot | None:
        """The snapshot of what routes ``app``'s live traffic; None when it may be made by the
        release (a live Service bootstraps), NotFound when it must exist (an HTTPRoute)."""

    def write(self, kube: Kube, profile: Profile, app: App, patch: dict[str, Any]) -> dict[str, Any]:
        """Apply a decision's patch (its resourceVersion is a precondition)."""

    def observe(self, kube: Kube, profile: Profile, app: App) -> Observed:
        """Which colours the data plane serves live traffic with, as far as the API can tell."""

    def mode(self, profile: Profile, snapshot: TrafficSnapshot) -> SwitchMode:
        """How a release moves traffic through this router (``release.switch_mode`` resolved)."""

    def readiness(
        self, kube: Kube, profile: Profile, app: App, colour: str, expected: int
    ) -> EndpointReadiness | None:
        """The ready endpoints of what this router would send ``colour``'s traffic to, when that
        is not the colour's pods as the preview Service sees them (None: those)."""


class ServiceSelector:
    """``service-selector``: the live Service's selector."""

    name = "service-selector"

    def read(self, kube: Kube, profile: Profile, app: App) -> TrafficSnapshot | None:
        svc = kube.find("services", app.service, profile.namespace)
        return snapshot_service(svc, profile.release.colour_label) if svc else None

    def write(self, kube: Kube, profile: Profile, app: App, patch: dict[str, Any]) -> dict[str, Any]:
        return kube.patch("services", app.service, patch, profile.namespace)

    def observe(self, kube: Kube, profile: Profile, app: App) -> Observed:
        """The ready addresses of the live Service's Endpoints, counted by their pod's colour
        (read from the pod's name: a colour's pods are named after its Deployment,
        ``<app>-<colour>-...``, so no pod list is needed; ``""`` for a pod of no colour's)."""
        eps = kube.find("endpoints", app.service, profile.namespace) or {}
        prefixes = {f"{app.name}-{c}-": c for c in profile.release.colours}
        counts: dict[str, int] = {}
        seen: set[str] = set()
        for subset in eps.get("subsets") or []:
            for address in subset.get("addresses") or []:
                ref = str((address.get("targetRef") or {}).get("name") or address.get("ip") or "")
                if ref in seen:
                    continue
                seen.add(ref)
                colour = next((c for prefix, c in prefixes.items() if ref.startswith(prefix)), "")
                counts[colour] = counts.get(colour, 0) + 1
        return Observed(counts, f"{app.service} Endpoints")

    def mode(self, profile: Profile, snapshot: TrafficSnapshot) -> SwitchMode:
        """``release.switch_mode``; ``auto``: overlap behind GKE's container-native load balancing
        (the Service's ``cloud.google.com/neg`` annotation), direct otherwise."""
        mode = profile.release.switch_mode
        if mode != "auto":
            return mode
        return "overlap" if NEG_ANNOTATION in snapshot.annotations else "direct"

    def readiness(
        self, kube: Kube, profile: Profile, app: App, colour: str, expected: int
    ) -> EndpointReadiness | None:
        return None  # the live Service selects the colour's pods: the preview's view of them


class GatewayHTTPRoute:
    """``gateway-httproute``: an HTTPRoute's backendRef weights over the colours' Services."""

    name = "gateway-httproute"

    @staticmethod
    def backends(profile: Profile, app: App) -> dict[str, str]:
        return {c: colour_service(app.service, c) for c in profile.release.colours}

    def read(self, kube: Kube, profile: Profile, app: App) -> TrafficSnapshot | None:
        route = kube.find(ROUTES, app.route_name, profile.namespace)
        if route is None:
            raise NotFound(
                f"{app.name}: no HTTPRoute {profile.namespace}/{app.route_name} (traffic.router gateway-httproute): "
                f"create it with a backendRef per colour ({', '.join(self.backends(profile, app).values())})"
            )
        return snapshot_route(route, self.backends(profile, app))

    def write(self, kube: Kube, profile: Profile, app: App, patch: dict[str, Any]) -> dict[str, Any]:
        return kube.patch(ROUTES, app.route_name, patch, profile.namespace)

    def observe(self, kube: Kube, profile: Profile, app: App) -> Observed:
        """Until the gateway reports the route's current generation programmed, nothing is known
        to serve (``{}``); then the ready addresses of each colour's Service that has weight."""
        snap = self.read(kube, profile, app)
        assert isinstance(snap, RouteSnapshot)
        where = f"HTTPRoute {snap.name} (generation {snap.generation}"
        if not snap.programmed:
            return Observed({}, f"{where}, not programmed: {snap.programmed_reason})")
        counts: dict[str, int] = {}
        for colour, weight in snap.weights.items():
            if weight > 0:
                eps = kube.find("endpoints", snap.backends[colour], profile.namespace)
                counts[colour] = endpoint_readiness(eps, 0).ready
        return Observed(counts, f"{where}, programmed) backends")

    def mode(self, profile: Profile, snapshot: TrafficSnapshot) -> SwitchMode:
        """Progressive when the profile names steps; else one weights patch (a gateway balances
        each request anew, so there is no need to widen first)."""
        return "progressive" if profile.traffic.progressive else "direct"

    def readiness(
        self, kube: Kube, profile: Profile, app: App, colour: str, expected: int
    ) -> EndpointReadiness | None:
        """The Endpoints of the colour's own Service, the route's backend: a missing Service is
        NotFound (the Gateway would answer 500 for it), one that selects nothing ready counts 0."""
        service = colour_service(app.service, colour)
        if kube.find("services", service, profile.namespace) is None:
            raise NotFound(
                f"{app.name}: no Service {profile.namespace}/{service}: the HTTPRoute's backend for {colour} "
                f"(selecting app={app.name}, {profile.release.colour_label}={colour})"
            )
        return endpoint_readiness(kube.find("endpoints", service, profile.namespace), expected)


ROUTERS: dict[str, Router] = {r.name: r for r in (ServiceSelector(), GatewayHTTPRoute())}


def router_for(profile: Profile) -> Router:
    """The router ``profile.traffic.router`` names."""
    return ROUTERS[profile.traffic.router]
