"""When has traffic moved, when has a colour drained, and can an app move without loss? Pure.

A Service's data plane acts on endpoint changes late. kube-proxy (iptables, IPVS, Dataplane
V2) reprograms every node on its own schedule (kubernetes#98570) and keeps established
connections on the pod they chose (kubernetes#46753); container-native load balancing
attaches new endpoints only after its health checks (kubernetes/ingress-gce#638). So:

- a switch is done when the live Service's Endpoints hold the new colour's pods *and* the
  data plane has acted on it: requests are seen arriving on the new colour in Monitoring, or,
  where none arrive (a quiet environment, kept-alive connections still on the old colour), the
  profile's propagation allowance (``release.propagation_s``) has passed (:func:`decide_arrival`);
- a colour taken out of the live Service may still get new connections for that allowance, and
  kept-alive ones until they close: it is scaled down only once it served nothing for a whole
  window, or after the profile's maximum drain wait, which is said (:func:`decide_drain`);
- pods stopped by anything else than that drain (an HPA, a node drain, a rolling restart) need
  a readiness probe, a preStop hook that outlasts the propagation and a grace period longer
  than both (:func:`shutdown_findings`).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

ArrivalPhase = Literal["moved", "overlap"]
DrainAction = Literal["wait", "drained", "give-up"]
DEFAULT_GRACE_S = 30.0  # Kubernetes' terminationGracePeriodSeconds when a pod sets none
_SLEEP = re.compile(r"^(?:exec\s+)?sleep\s+(\d+(?:\.\d+)?)s?$")


@dataclass(frozen=True)
class Arrival:
    """Whether traffic has moved to a colour; ``settled``: the live Endpoints already show it."""

    done: bool
    settled: bool
    reason: str


@dataclass(frozen=True)
class Drain:
    """What to do about a colour taken out of the live Service."""

    action: DrainAction
    reason: str


def endpoints_summary(by_colour: Mapping[str, int]) -> str:
    """``green 2, blue 0`` (sorted by colour; ``?`` for addresses of no known colour)."""
    return ", ".join(f"{c or '?'} {n}" for c, n in sorted(by_colour.items())) or "none"


def decide_arrival(
    phase: ArrivalPhase,
    seen_at: str,
    colour: str,
    expected: int,
    by_colour: Mapping[str, int],
    settled_for_s: float | None,
    propagation_s: float,
    observed_requests: float | None,
) -> Arrival:
    """Has live traffic moved to ``colour``?

    ``by_colour`` counts the ready addresses that serve live traffic by pod colour, as
    ``seen_at`` names them (the live Service's Endpoints, or the Services an HTTPRoute the
    gateway has programmed sends traffic to; ``{}`` while nothing is known to serve).
    Settled: ``colour`` has at least ``expected`` (and at least one) of them and, in the
    ``moved`` phase, no other colour has any (in ``overlap`` both colours are meant to be
    there). ``settled_for_s``: how long the Endpoints have been settled (None: not yet seen
    settled). ``observed_requests``: requests Monitoring saw on ``colour`` since the move began
    (None or 0: none seen). Done once settled and either requests were seen or the Endpoints
    have been settled for ``propagation_s``; in ``overlap`` only the allowance counts (a load
    balancer's health checks reach a new endpoint before any caller does, and look the same).
    """
    mine = by_colour.get(colour, 0)
    others = sum(n for c, n in by_colour.items() if c != colour)
    settled = mine >= max(expected, 1) and (phase == "overlap" or others == 0)
    where = f"{seen_at}: {endpoints_summary(by_colour)}"
    if not settled:
        want = f"{colour} {max(expected, 1)}" + ("" if phase == "overlap" else " and no other colour")
        return Arrival(False, False, f"waiting for the live Endpoints ({where}; want {want})")
    if settled_for_s is None:
        settled_for_s = 0.0
    if phase == "overlap":
        # a load balancer health-checks new endpoints before it sends them traffic, and Monitoring
        # cannot tell its checks from callers' requests: requests seen prove nothing here
        if settled_for_s >= propagation_s:
            return Arrival(
                True,
                True,
                f"{colour} joined the live Endpoints beside the old colour ({where}) and the data "
                f"plane's propagation allowance of {propagation_s:g} s has passed",
            )
        return Arrival(
            False,
            True,
            f"both colours in the live Endpoints ({where}); waiting out the propagation allowance "
            f"({settled_for_s:.1f}/{propagation_s:g} s): a load balancer health-checks new "
            "endpoints before it sends them traffic, and requests seen cannot tell the two apart",
        )
    if observed_requests:
        return Arrival(
            True,
            True,
            f"traffic arrived on {colour}: {observed_requests:.0f} request(s) seen in Monitoring, "
            f"{settled_for_s:.1f} s after the Endpoints settled ({where})",
        )
    if settled_for_s >= propagation_s:
        return Arrival(
            True,
            True,
            f"{colour} holds the live Endpoints ({where}); no request seen on it in Monitoring "
            f"(quiet, or callers' kept-alive connections stay where they are), so waited out the "
            f"data plane's propagation allowance of {propagation_s:g} s",
        )
    return Arrival(
        False,
        True,
        f"Endpoints settled ({where}); waiting for requests on {colour} or the propagation "
        f"allowance ({settled_for_s:.1f}/{propagation_s:g} s)",
    )


def decide_drain(
    colour: str,
    since_left_s: float | None,
    propagation_s: float,
    waited_s: float,
    max_drain_s: float,
    window_s: float,
    window_requests: float | None,
) -> Drain:
    """May ``colour``, out of the live Service, be scaled down now?

    ``since_left_s``: seconds since the live Service stopped selecting it (None: unknown, taken
    as long ago). ``window_requests``: the requests Monitoring saw on it in the last complete
    window of ``window_s`` (None: no series, which is no traffic). Wait while new connections
    may still reach it (the propagation allowance since it left), then while it still serves,
    up to ``max_drain_s`` of waiting; then give up, saying so.
    """
    if since_left_s is not None and since_left_s < propagation_s:
        return Drain(
            "wait",
            f"{colour} left the live Service {since_left_s:.1f} s ago: new connections may reach it "
            f"until the data plane catches up ({propagation_s:g} s)",
        )
    if not window_requests:
        return Drain("drained", f"{colour} drained: no request in the last {window_s:g} s window")
    serving = f"{colour} still served {window_requests:.0f} request(s) in the last {window_s:g} s window"
    if waited_s >= max_drain_s:
        return Drain(
            "give-up",
            f"{serving} after the maximum drain wait of {max_drain_s:g} s (callers' kept-alive "
            "connections stay on their pod until they close): scaling down anyway; an app that "
            "closes them on SIGTERM, and clients that retry, lose nothing",
        )
    return Drain("wait", f"{serving}; waiting ({waited_s:.0f}/{max_drain_s:g} s)")


def prestop_sleep_s(container: Mapping[str, Any]) -> float | None:
    """Seconds a container's preStop ``exec`` sleeps (``sleep 5``, ``sh -c "sleep 5"``); None
    without a preStop exec sleep (no hook, an httpGet hook, another command)."""
    hook = ((container.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}
    command: Sequence[str] = hook.get("command") or []
    if not command:
        return None
    words = [str(w) for w in command]
    if len(words) >= 3 and words[-2] == "-c":
        text = words[-1].strip()
    else:
        text = shlex.join(words[-2:]) if len(words) >= 2 else words[0]
        text = text.rsplit("/", 1)[-1]  # /bin/sleep 5
    match = _SLEEP.match(text.strip())
    return float(match.group(1)) if match else None


def shutdown_findings(
    app: str, pod_spec: Mapping[str, Any], container_name: str, propagation_s: float
) -> tuple[str, ...]:
    """What keeps ``app``'s pods from joining and leaving a Service without loss, each naming the
    field to add or raise; () when nothing does. ``pod_spec`` is a Deployment's
    ``spec.template.spec``."""
    containers = pod_spec.get("containers") or []
    container = next((c for c in containers if c.get("name") == container_name), None)
    field = f"spec.template.spec.containers[{container_name}]"
    if container is None:
        return (f"{app}: no container '{container_name}' in the Deployment's pod template",)
    out = []
    if not container.get("readinessProbe"):
        out.append(
            f"{app}: no readinessProbe: its pods join the Service before they can answer; "
            f"add {field}.readinessProbe"
        )
    pre_stop = (container.get("lifecycle") or {}).get("preStop")
    sleep = prestop_sleep_s(container)
    need = math.ceil(propagation_s)
    if not pre_stop:
        out.append(
            f"{app}: no preStop hook: a pod stopped by anything but Greenlight's drain (an HPA, a "
            f"node drain, a rolling restart) exits while the data plane still sends it new "
            f"connections, for up to {propagation_s:g} s; add {field}.lifecycle.preStop "
            f"(exec: sleep {need} or more)"
        )
    elif sleep is not None and sleep < propagation_s:
        out.append(
            f"{app}: the preStop hook sleeps {sleep:g} s, less than the data plane's propagation "
            f"allowance of {propagation_s:g} s; raise it in {field}.lifecycle.preStop"
        )
    grace = pod_spec.get("terminationGracePeriodSeconds")
    grace_s = float(grace) if grace is not None else DEFAULT_GRACE_S
    if sleep is not None and grace_s <= sleep:
        out.append(
            f"{app}: terminationGracePeriodSeconds {grace_s:g} s ends before the preStop sleep of "
            f"{sleep:g} s does: the pod is killed with requests in flight; raise "
            "spec.template.spec.terminationGracePeriodSeconds above it"
        )
    return tuple(out)
