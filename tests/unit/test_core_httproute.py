"""The gateway-httproute router's pure half: an HTTPRoute's snapshot (weights, the selected colour,
what is wrong with it, whether the gateway programmed it), its patch, and the switch, rollback and
progressive decisions over it."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from greenlight.core.httproute import RouteSnapshot, colour_service, programmed, snapshot_route
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, PREVIOUS_COLOUR, RELEASE_ID
from greenlight.core.switch import (
    OVERLAP,
    PREVIOUS_DIGESTS,
    EndpointReadiness,
    Overlap,
    decide_rollback,
    decide_switch,
    follows,
)
from greenlight.errors import InputInvalid

BACKENDS = {"blue": "backend-blue", "green": "backend-green"}
READY = EndpointReadiness(3, 0, 3)
D1 = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32


def ref(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 8080, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def route(
    blue: int | None = 100,
    green: int | None = 0,
    generation: int = 3,
    observed: int = 3,
    annotations: dict[str, str] | None = None,
    rules: list[dict[str, Any]] | None = None,
    conditions: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An HTTPRoute as the API serves it, its one rule weighting the two colours' Services."""
    conds = conditions or {"Accepted": "True", "ResolvedRefs": "True"}
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": "backend", "namespace": "gw", "resourceVersion": "77", "generation": generation,
            "annotations": annotations or {},
        },
        "spec": {
            "parentRefs": [{"name": "lab-gateway"}],
            "hostnames": ["backend.example"],
            "rules": rules if rules is not None else [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                 "backendRefs": [ref("backend-blue", blue), ref("backend-green", green)]}
            ],
        },
        "status": {"parents": [{
            "parentRef": {"name": "lab-gateway"}, "controllerName": "networking.gke.io/gateway",
            "conditions": [{"type": t, "status": v, "reason": t, "observedGeneration": observed}
                           for t, v in conds.items()],
        }]},
    }  # fmt: skip


def snap(**kw: Any) -> RouteSnapshot:
    return snapshot_route(route(**kw), BACKENDS)


SELECTED: list[tuple[str, dict[str, Any], str | None, dict[str, int]]] = [
    # id, route(...) arguments, the colour with all the traffic, weights
    ("blue-all", {}, "blue", {"blue": 100, "green": 0}),
    ("green-all", {"blue": 0, "green": 100}, "green", {"blue": 0, "green": 100}),
    ("split", {"blue": 90, "green": 10}, None, {"blue": 90, "green": 10}),
    ("weight-defaults-to-one", {"blue": None, "green": 0}, "blue", {"blue": 1, "green": 0}),
    ("both-default-one", {"blue": None, "green": None}, None, {"blue": 1, "green": 1}),
    ("none", {"blue": 0, "green": 0}, None, {"blue": 0, "green": 0}),
]


@pytest.mark.parametrize(
    ("kw", "selected", "weights"), [c[1:] for c in SELECTED], ids=[c[0] for c in SELECTED]
)
def test_the_colour_with_all_the_weight_is_selected(
    kw: dict[str, Any], selected: str | None, weights: dict[str, int]
) -> None:
    s = snap(**kw)
    assert (s.selected, s.weights) == (selected, weights)


PROBLEMS: list[tuple[str, list[dict[str, Any]] | None, dict[str, Any], str | None]] = [
    # id, rules (None: the default one), other route(...) arguments, a part of the problem (None: none)
    ("blue-green", None, {}, None),
    ("no-colour-backend", [{"backendRefs": [ref("other", 1)]}], {}, "has no backendRef naming Service backend-blue and Service backend-green"),
    ("one-colour-missing", [{"backendRefs": [ref("backend-blue", 100)]}], {}, "rule 0 has no backendRef naming Service backend-green"),
    ("rules-disagree", [
        {"backendRefs": [ref("backend-blue", 100), ref("backend-green", 0)]},
        {"backendRefs": [ref("backend-blue", 0), ref("backend-green", 100)]},
    ], {}, "its rules give the colours different weights"),
    ("split-without-record", None, {"blue": 50, "green": 50}, "splits traffic between colours (blue 50, green 50) without a record"),
    ("split-with-record", None, {"blue": 90, "green": 10, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 10).text()}}, None),
    ("another-kind-is-not-a-colour", [{"backendRefs": [ref("backend-blue", 100, kind="ServiceImport"), ref("backend-green", 0)]}], {}, "rule 0 has no backendRef naming Service backend-blue"),
]  # fmt: skip


@pytest.mark.parametrize(("rules", "kw", "problem"), [c[1:] for c in PROBLEMS], ids=[c[0] for c in PROBLEMS])
def test_what_keeps_a_route_from_being_switched_is_named(
    rules: list[dict[str, Any]] | None, kw: dict[str, Any], problem: str | None
) -> None:
    got = snap(rules=rules, **kw).problem
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got, got


PROGRAMMED: list[tuple[str, dict[str, Any], bool, str]] = [
    # id, route(...) arguments, programmed, a part of why not
    ("current-generation", {}, True, ""),
    ("older-generation", {"generation": 4, "observed": 3}, False, "has not programmed generation 4 yet (Accepted observed generation 3)"),
    ("not-accepted", {"conditions": {"Accepted": "False", "ResolvedRefs": "True"}}, False, "Accepted is False"),
    ("backend-not-found", {"conditions": {"Accepted": "True", "ResolvedRefs": "False"}}, False, "ResolvedRefs is False"),
    ("no-resolvedrefs-yet", {"conditions": {"Accepted": "True"}}, False, "no ResolvedRefs condition yet"),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "ok", "why"), [c[1:] for c in PROGRAMMED], ids=[c[0] for c in PROGRAMMED])
def test_programmed_only_when_every_parent_accepted_and_resolved_this_generation(
    kw: dict[str, Any], ok: bool, why: str
) -> None:
    got, reason = programmed(route(**kw))
    assert got is ok
    assert why in reason


def test_a_route_no_gateway_reported_on_or_without_parents_is_not_programmed() -> None:
    r = route()
    r["status"] = {}
    assert programmed(r) == (
        False,
        "Gateway lab-gateway has not reported on the route yet (no status.parents entry)",
    )
    r["spec"]["parentRefs"] = []
    assert programmed(r)[0] is False and "no parentRefs" in programmed(r)[1]


def test_the_patch_keeps_every_rule_and_field_and_changes_only_the_colours_weights() -> None:
    rules = [
        {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
         "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]}}],
         "backendRefs": [ref("backend-blue", 100), ref("backend-green", 0), ref("mirror", 0)]},
        {"backendRefs": [ref("backend-blue"), ref("backend-green", 0)]},
    ]  # fmt: skip
    s = snap(rules=copy.deepcopy(rules))
    patch = s.patch({"blue": 10, "green": 90}, {OVERLAP: "x"})
    assert patch["metadata"] == {"resourceVersion": "77", "annotations": {OVERLAP: "x"}}
    want = copy.deepcopy(rules)
    for rule in want:
        for r in rule["backendRefs"]:
            r["weight"] = {"backend-blue": 10, "backend-green": 90}.get(r["name"], r.get("weight"))
    assert patch["spec"] == {"rules": want}
    assert s.rules[0]["backendRefs"][0]["weight"] == 100  # the snapshot is not changed


def test_switch_sets_all_the_weight_on_the_new_colour_and_records_what_it_replaced() -> None:
    live = snap(annotations={RELEASE_ID: "r0", DIGESTS: json.dumps({"backend": D1})})
    step = decide_switch(live, "green", READY, "r1", {"backend": D2})
    assert step.action == "switch"
    assert step.patch is not None
    weights = {r["name"]: r["weight"] for r in step.patch["spec"]["rules"][0]["backendRefs"]}
    assert weights == {"backend-blue": 0, "backend-green": 100}
    annotations = step.patch["metadata"]["annotations"]
    assert (annotations[ACTIVE_COLOUR], annotations[PREVIOUS_COLOUR], annotations[RELEASE_ID]) == (
        "green",
        "blue",
        "r1",
    )
    assert annotations[PREVIOUS_DIGESTS] == json.dumps({"backend": D1})


PROGRESSIVE: list[tuple[str, dict[str, Any], int | None, str, dict[str, int] | None]] = [
    # id, route(...) arguments, the step's weight (None: the last move), action, weights patched
    ("first-step", {}, 10, "widen", {"backend-blue": 90, "backend-green": 10}),
    ("next-step", {"blue": 90, "green": 10, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 10).text()}}, 50, "widen", {"backend-blue": 50, "backend-green": 50}),
    ("same-step-again", {"blue": 90, "green": 10, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 10).text()}}, 10, "widen", None),
    ("last-move", {"blue": 50, "green": 50, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 50).text()}}, None, "narrow", {"backend-blue": 0, "backend-green": 100}),
    ("another-release-mid-way", {"blue": 90, "green": 10, "annotations": {OVERLAP: Overlap("blue", "green", "r0", 10).text()}}, 50, "refuse", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kw", "weight", "action", "weights"), [c[1:] for c in PROGRESSIVE], ids=[c[0] for c in PROGRESSIVE]
)
def test_progressive_steps_raise_the_new_colours_share_then_give_it_all(
    kw: dict[str, Any], weight: int | None, action: str, weights: dict[str, int] | None
) -> None:
    step = decide_switch(snap(**kw), "green", READY, "r1", {"backend": D2}, "progressive", weight)
    assert step.action == action, step.reason
    if weights is None:
        assert step.patch is None
        return
    assert step.patch is not None
    got = {r["name"]: r["weight"] for r in step.patch["spec"]["rules"][0]["backendRefs"]}
    assert got == weights
    record = step.patch["metadata"]["annotations"][OVERLAP]
    if action == "widen":
        assert json.loads(record) == {"from": "blue", "to": "green", "release": "r1", "weight": weight}
    else:
        assert record is None


@pytest.mark.parametrize("weight", [0, 100, -5])
def test_a_step_outside_one_to_ninety_nine_is_refused_as_input(weight: int) -> None:
    with pytest.raises(InputInvalid, match="between 1 and 99"):
        decide_switch(snap(), "green", READY, "r1", {}, "progressive", weight)


def test_a_rollback_from_a_progressive_step_gives_the_old_colour_everything_back() -> None:
    live = snap(blue=50, green=50, annotations={OVERLAP: Overlap("blue", "green", "r1", 50).text()})
    step = decide_rollback(live, READY, 3, 3)
    assert step.action == "switch"
    assert "abandoning the progressive release to green at 50%" in step.reason
    assert step.patch is not None
    got = {r["name"]: r["weight"] for r in step.patch["spec"]["rules"][0]["backendRefs"]}
    assert got == {"backend-blue": 100, "backend-green": 0}
    assert step.patch["metadata"]["annotations"] == {OVERLAP: None}


def test_a_route_missing_a_colour_refuses_switch_and_rollback_naming_it() -> None:
    live = snap(rules=[{"backendRefs": [ref("backend-blue", 100)]}], annotations={PREVIOUS_COLOUR: "green"})
    assert decide_switch(live, "green", READY, "r1", {}).action == "refuse"
    step = decide_rollback(live, READY, 3, 3)
    assert step.action == "refuse" and "no backendRef naming Service backend-green" in step.reason


def test_colour_services_are_named_after_the_live_service() -> None:
    assert colour_service("backend", "green") == "backend-green"


FOLLOWS: list[tuple[str, dict[str, Any], Overlap, bool]] = [
    # id, route(...) arguments, the record the release's last move wrote, does the route follow it
    ("where-the-step-left-it", {"blue": 90, "green": 10, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 10).text()}}, Overlap("blue", "green", "r1", 10), True),
    ("someone-set-it-back-keeping-the-record", {"blue": 100, "green": 0, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 10).text()}}, Overlap("blue", "green", "r1", 10), False),
    ("someone-set-it-back-and-cleared-it", {"blue": 100, "green": 0}, Overlap("blue", "green", "r1", 10), False),
    ("someone-changed-the-share", {"blue": 70, "green": 30, "annotations": {OVERLAP: Overlap("blue", "green", "r1", 10).text()}}, Overlap("blue", "green", "r1", 10), False),
    ("another-release-s-record", {"blue": 90, "green": 10, "annotations": {OVERLAP: Overlap("blue", "green", "r0", 10).text()}}, Overlap("blue", "green", "r1", 10), False),
    ("an-overlap-is-half", {"blue": 50, "green": 50, "annotations": {OVERLAP: Overlap("blue", "green", "r1").text()}}, Overlap("blue", "green", "r1"), True),
]  # fmt: skip


@pytest.mark.parametrize(("kw", "record", "ok"), [c[1:] for c in FOLLOWS], ids=[c[0] for c in FOLLOWS])
def test_a_later_move_only_follows_a_route_left_where_the_last_move_left_it(
    kw: dict[str, Any], record: Overlap, ok: bool
) -> None:
    assert follows(snap(**kw), record) is ok


def test_a_step_already_taken_needs_no_patch_only_when_the_weights_agree() -> None:
    """The record alone does not say the share: a route set back by hand keeping the record
    is moved to the step again (the caller's guard refuses it first: follows is False)."""
    record = Overlap("blue", "green", "r1", 10).text()
    there = snap(blue=90, green=10, annotations={OVERLAP: record})
    assert decide_switch(there, "green", READY, "r1", {}, "progressive", 10).patch is None
    moved_back = snap(blue=100, green=0, annotations={OVERLAP: record})
    assert decide_switch(moved_back, "green", READY, "r1", {}, "progressive", 10).patch is not None


def test_the_guard_ignores_the_gateway_s_status_writes_but_not_a_move() -> None:
    """A route's guard is its generation and record: a status write (a new resourceVersion)
    keeps it, a weights change (a new generation) or a record change does not."""
    a = snap()
    b = snapshot_route({**route(), "metadata": {**route()["metadata"], "resourceVersion": "99"}}, BACKENDS)
    assert a.guard == b.guard
    assert snap(generation=4, observed=4).guard != a.guard
    assert snap(annotations={RELEASE_ID: "r9"}).guard != a.guard


def test_a_reconciled_condition_must_be_true_at_this_generation_when_reported() -> None:
    r = route(conditions={"Accepted": "True", "ResolvedRefs": "True", "Reconciled": "False"})
    assert programmed(r)[0] is False and "Reconciled is False" in programmed(r)[1]
    assert programmed(
        route(conditions={"Accepted": "True", "ResolvedRefs": "True", "Reconciled": "True"})
    ) == (True, "")
