"""When traffic has moved, when a colour has drained, and what keeps an app from moving without loss."""

from __future__ import annotations

from typing import Any

import pytest

from greenlight.core.traffic import decide_arrival, decide_drain, prestop_sleep_s, shutdown_findings

ARRIVALS: list[tuple[str, str, dict[str, int], float | None, float | None, bool, bool, str]] = [
    # id, phase, endpoints by colour, settled for (s), observed requests, settled, done, reason fragment
    (
        "old-colour-still-listed",
        "moved",
        {"blue": 2, "green": 2},
        None,
        None,
        False,
        False,
        "want green 2 and no other",
    ),
    (
        "new-colour-not-all-there",
        "moved",
        {"green": 1},
        None,
        None,
        False,
        False,
        "waiting for the live Endpoints",
    ),
    ("no-endpoints-at-all", "moved", {}, None, None, False, False, "Endpoints: none"),
    ("settled-just-now", "moved", {"green": 2}, 0.0, None, True, False, "0.0/3 s"),
    ("settled-first-seen", "moved", {"green": 2}, None, None, True, False, "0.0/3 s"),
    ("settled-and-requests-seen", "moved", {"green": 2}, 0.4, 12.0, True, True, "12 request(s) seen"),
    ("settled-zero-requests-counts-as-none", "moved", {"green": 2}, 1.0, 0.0, True, False, "1.0/3 s"),
    ("quiet-allowance-passed", "moved", {"green": 2}, 3.0, None, True, True, "waited out"),
    (
        "overlap-both-listed",
        "overlap",
        {"blue": 2, "green": 2},
        3.5,
        None,
        True,
        True,
        "propagation allowance of 3 s",
    ),
    (
        "overlap-requests-prove-nothing",
        "overlap",
        {"blue": 2, "green": 2},
        1.0,
        12.0,
        True,
        False,
        "health-checks",
    ),
    (
        "overlap-new-colour-missing",
        "overlap",
        {"blue": 2, "green": 1},
        None,
        None,
        False,
        False,
        "want green 2",
    ),
]


@pytest.mark.parametrize(
    ("phase", "by_colour", "settled_for", "observed", "settled", "done", "reason"),
    [c[1:] for c in ARRIVALS],
    ids=[c[0] for c in ARRIVALS],
)
def test_arrival_needs_settled_endpoints_then_traffic_or_the_allowance(
    phase: Any,
    by_colour: dict[str, int],
    settled_for: float | None,
    observed: float | None,
    settled: bool,
    done: bool,
    reason: str,
) -> None:
    """A move is done once the live Endpoints show the colour and requests arrive or the allowance passes."""
    arrival = decide_arrival(phase, "backend Endpoints", "green", 2, by_colour, settled_for, 3.0, observed)
    assert (arrival.settled, arrival.done) == (settled, done)
    assert reason in arrival.reason


DRAINS: list[tuple[str, float | None, float, float | None, str, str]] = [
    # id, since left (s), waited (s), requests in the last window, action, reason fragment
    ("just-left", 1.0, 0.0, None, "wait", "new connections may reach it"),
    ("left-quiet", 5.0, 0.0, None, "drained", "no request in the last 2 s window"),
    ("left-zero-requests", 5.0, 1.0, 0.0, "drained", "drained"),
    ("still-serving", 5.0, 3.0, 40.0, "wait", "still served 40 request(s)"),
    ("still-serving-past-max", 20.0, 15.0, 40.0, "give-up", "scaling down anyway"),
    ("unknown-switch-time-quiet", None, 0.0, None, "drained", "drained"),
]


@pytest.mark.parametrize(
    ("since_left", "waited", "requests", "action", "reason"),
    [c[1:] for c in DRAINS],
    ids=[c[0] for c in DRAINS],
)
def test_drain_waits_for_propagation_then_a_quiet_window_or_the_maximum(
    since_left: float | None, waited: float, requests: float | None, action: str, reason: str
) -> None:
    """A colour out of the live Service drains after the propagation allowance and a quiet window, or gives up at the maximum."""
    drain = decide_drain("blue", since_left, 3.0, waited, 15.0, 2.0, requests)
    assert drain.action == action
    assert reason in drain.reason


SLEEPS: list[tuple[str, dict[str, Any], float | None]] = [
    ("exec-sleep", {"lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}}}, 5.0),
    ("shell-sleep", {"lifecycle": {"preStop": {"exec": {"command": ["/bin/sh", "-c", "sleep 7.5"]}}}}, 7.5),
    ("absolute-sleep", {"lifecycle": {"preStop": {"exec": {"command": ["/bin/sleep", "3"]}}}}, 3.0),
    ("http-hook", {"lifecycle": {"preStop": {"httpGet": {"path": "/drain", "port": 8080}}}}, None),
    ("other-command", {"lifecycle": {"preStop": {"exec": {"command": ["nginx", "-s", "quit"]}}}}, None),
    ("no-hook", {}, None),
]


@pytest.mark.parametrize(("container", "seconds"), [c[1:] for c in SLEEPS], ids=[c[0] for c in SLEEPS])
def test_prestop_sleep_is_read_from_the_usual_forms(container: dict[str, Any], seconds: float | None) -> None:
    """The preStop sleep is read from exec sleep and sh -c sleep; other hooks have no known length."""
    assert prestop_sleep_s(container) == seconds


GOOD = {
    "name": "backend",
    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
    "lifecycle": {"preStop": {"exec": {"command": ["sleep", "5"]}}},
}
FINDINGS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("all-there", {"containers": [GOOD]}, []),
    (
        "no-readiness-probe",
        {"containers": [{**GOOD, "readinessProbe": None}]},
        ["add spec.template.spec.containers[backend].readinessProbe"],
    ),
    (
        "no-prestop",
        {"containers": [{**GOOD, "lifecycle": {}}]},
        ["add spec.template.spec.containers[backend].lifecycle.preStop (exec: sleep 3 or more)"],
    ),
    (
        "prestop-shorter-than-propagation",
        {"containers": [{**GOOD, "lifecycle": {"preStop": {"exec": {"command": ["sleep", "1"]}}}}]},
        ["sleeps 1 s, less than the data plane's propagation allowance of 2.5 s"],
    ),
    (
        "grace-shorter-than-prestop",
        {"containers": [GOOD], "terminationGracePeriodSeconds": 5},
        ["raise spec.template.spec.terminationGracePeriodSeconds"],
    ),
    (
        "http-prestop-is-trusted",
        {"containers": [{**GOOD, "lifecycle": {"preStop": {"httpGet": {"path": "/q"}}}}]},
        [],
    ),
    ("container-missing", {"containers": [{**GOOD, "name": "sidecar"}]}, ["no container 'backend'"]),
]


@pytest.mark.parametrize(("pod_spec", "fragments"), [c[1:] for c in FINDINGS], ids=[c[0] for c in FINDINGS])
def test_shutdown_findings_name_the_field_to_add(pod_spec: dict[str, Any], fragments: list[str]) -> None:
    """Each gap that can drop requests when a pod joins or leaves a Service is named with its field."""
    findings = shutdown_findings("backend", pod_spec, "backend", 2.5)
    assert len(findings) == len(fragments)
    for finding, fragment in zip(findings, fragments, strict=True):
        assert fragment in finding
