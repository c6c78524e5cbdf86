"""The live Service's selector switch and rollback: snapshots, endpoint readiness, decisions, patches."""

from __future__ import annotations

import json
from typing import Any

import pytest

from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, PREVIOUS_COLOUR, RELEASE_ID
from greenlight.core.switch import (
    OVERLAP,
    PREVIOUS_DIGESTS,
    PREVIOUS_RELEASE_ID,
    ROLLED_BACK,
    EndpointReadiness,
    Overlap,
    ServiceSnapshot,
    decide_rollback,
    decide_switch,
    endpoint_readiness,
    other_colour,
    snapshot_service,
)
from greenlight.errors import InputInvalid

D1 = "sha256:" + "11" * 32
D2 = "sha256:" + "22" * 32
OLD_DIGESTS = json.dumps({"backend": D1})


def live(colour: str | None = "blue", rv: str = "41", **annotations: str) -> ServiceSnapshot:
    """The live Service selecting ``colour`` (no colour key when None), with the given annotations."""
    selector = {"app": "backend"} | ({"color": colour} if colour else {})
    return ServiceSnapshot("backend", rv, selector, annotations, "sma-staging")


RECORDED = {
    ACTIVE_COLOUR: "blue",
    PREVIOUS_COLOUR: "green",
    RELEASE_ID: "staging-aaa",
    DIGESTS: OLD_DIGESTS,
}


def test_snapshot_service_copies_name_version_selector_annotations() -> None:
    """A Service dict becomes a snapshot of its name, resourceVersion, selector and annotations."""
    svc = {
        "metadata": {
            "name": "backend",
            "namespace": "sma-staging",
            "resourceVersion": "41",
            "annotations": {RELEASE_ID: "staging-aaa", DIGESTS: OLD_DIGESTS, PREVIOUS_COLOUR: "green"},
        },
        "spec": {"selector": {"app": "backend", "color": "blue"}},
    }
    snap = snapshot_service(svc)
    assert (snap.name, snap.namespace, snap.resource_version) == ("backend", "sma-staging", "41")
    assert snap.colour() == "blue"
    assert (snap.release_id, snap.previous_colour, snap.digests) == ("staging-aaa", "green", {"backend": D1})
    assert snap.rolled_back_release is None
    assert snap.active_colour is None


SNAPSHOT_EDGES: list[tuple[str, dict[str, Any], str | None, dict[str, str]]] = [
    # id, service dict, colour, digests
    (
        "no-selector-ignores-annotation",
        {"metadata": {"name": "s", "annotations": {ACTIVE_COLOUR: "green"}}},
        None,
        {},
    ),
    ("nothing-recorded", {"metadata": {"name": "s"}, "spec": {"selector": None}}, None, {}),
    ("digests-not-json", {"metadata": {"name": "s", "annotations": {DIGESTS: "{"}}}, None, {}),
    ("digests-not-object", {"metadata": {"name": "s", "annotations": {DIGESTS: "[1]"}}}, None, {}),
    ("digests-not-strings", {"metadata": {"name": "s", "annotations": {DIGESTS: '{"a": 1}'}}}, None, {}),
]


@pytest.mark.parametrize(
    ("svc", "colour", "digests"), [c[1:] for c in SNAPSHOT_EDGES], ids=[c[0] for c in SNAPSHOT_EDGES]
)
def test_snapshot_tolerates_missing_or_malformed_record(
    svc: dict[str, Any], colour: str | None, digests: dict[str, str]
) -> None:
    """Missing selectors and unreadable digest annotations read as absent, never raise."""
    snap = snapshot_service(svc)
    assert snap.colour() == colour
    assert snap.active_colour == (svc["metadata"].get("annotations") or {}).get(ACTIVE_COLOUR)
    assert snap.digests == digests
    assert snap.resource_version == ""


def test_snapshot_without_name_is_refused() -> None:
    """A Service dict without metadata.name raises InputInvalid."""
    with pytest.raises(InputInvalid, match=r"metadata\.name"):
        snapshot_service({"metadata": {}})


def addr(name: str) -> dict[str, Any]:
    return {"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "namespace": "ns", "name": name}}


ENDPOINTS: list[tuple[str, dict[str, Any] | None, int, tuple[int, int], bool, str]] = [
    # id, endpoints, expected, (ready, not_ready), all_ready, summary
    ("none", None, 3, (0, 0), False, "0/3 endpoints ready"),
    ("no-subsets", {"metadata": {}}, 3, (0, 0), False, "0/3 endpoints ready"),
    (
        "lab-shape-one-subset-per-pod",
        {
            "subsets": [
                {"addresses": [addr("a")], "ports": [{"port": 1}]},
                {"addresses": [addr("b")], "ports": [{"port": 2}]},
                {"notReadyAddresses": [addr("c")], "ports": [{"port": 3}]},
            ]
        },
        3,
        (2, 1),
        False,
        "2/3 endpoints ready, 1 not ready",
    ),
    (
        "same-pod-in-two-subsets-counted-once",
        {
            "subsets": [
                {"addresses": [addr("a")], "ports": [{"port": 80}]},
                {"addresses": [addr("a")], "ports": [{"port": 81}]},
            ]
        },
        1,
        (1, 0),
        True,
        "1/1 endpoints ready",
    ),
    (
        "ready-and-not-ready-counts-ready",
        {"subsets": [{"addresses": [addr("a")], "notReadyAddresses": [addr("a")]}]},
        1,
        (1, 0),
        True,
        "1/1 endpoints ready",
    ),
    (
        "no-target-ref-uses-ip-and-ports",
        {"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]},
        2,
        (2, 0),
        True,
        "2/2 endpoints ready",
    ),
]


@pytest.mark.parametrize(
    ("endpoints", "expected", "counts", "all_ready", "summary"),
    [c[1:] for c in ENDPOINTS],
    ids=[c[0] for c in ENDPOINTS],
)
def test_endpoint_readiness_counts_addresses(
    endpoints: dict[str, Any] | None, expected: int, counts: tuple[int, int], all_ready: bool, summary: str
) -> None:
    """Ready and not-ready addresses are counted once each, and all_ready needs every expected one."""
    r = endpoint_readiness(endpoints, expected)
    assert (r.ready, r.not_ready) == counts
    assert r.all_ready is all_ready
    assert r.summary == summary


@pytest.mark.parametrize(
    ("colours", "colour", "other"),
    [(("blue", "green"), "blue", "green"), (("blue", "green"), "green", "blue"), (["a", "b"], "b", "a")],
)
def test_other_colour_returns_the_other_of_the_pair(
    colours: tuple[str, str], colour: str, other: str
) -> None:
    """other_colour gives the colour of the pair that is not the one named."""
    assert other_colour(colours, colour) == other


@pytest.mark.parametrize(
    ("colours", "colour", "message"),
    [
        (("blue", "green"), "red", "not one of"),
        (("blue", "blue"), "blue", "two different"),
        (("a",), "a", "two different"),
    ],
)
def test_other_colour_refuses_unknown_colour_or_bad_pair(
    colours: tuple[str, ...], colour: str, message: str
) -> None:
    """An unknown colour or a pair that is not two distinct names raises InputInvalid."""
    with pytest.raises(InputInvalid, match=message):
        other_colour(colours, colour)


READY3 = EndpointReadiness(3, 0, 3)

SWITCHES = [
    # id, snapshot, endpoints, action, reason fragment
    (
        "switch-when-all-ready",
        live("blue", **RECORDED),
        READY3,
        "switch",
        "switching backend from blue to green: 3/3 endpoints ready",
    ),
    (
        "noop-already-there",
        live("green", **{RELEASE_ID: "staging-bbb"}),
        READY3,
        "noop",
        "already on green: nothing to do",
    ),
    (
        "noop-already-there-unrecorded",
        live("green"),
        EndpointReadiness(0, 0, 3),
        "noop",
        "already on green: nothing to do",
    ),
    (
        "refuse-there-for-other-release",
        live("green", **{RELEASE_ID: "staging-zzz"}),
        READY3,
        "refuse",
        "recorded for release staging-zzz, not staging-bbb",
    ),
    (
        "wait-partly-ready",
        live("blue"),
        EndpointReadiness(2, 1, 3),
        "wait",
        "delaying switch: green 2/3 endpoints ready, 1 not ready",
    ),
    (
        "wait-fewer-than-expected",
        live("blue"),
        EndpointReadiness(2, 0, 3),
        "wait",
        "delaying switch: green 2/3 endpoints ready",
    ),
    (
        "refuse-no-ready-endpoints",
        live("blue"),
        EndpointReadiness(0, 3, 3),
        "refuse",
        "refusing: green has no ready endpoints — switching would leave backend nothing to serve with",
    ),
    ("refuse-not-blue-green", live(None), READY3, "refuse", "has no 'color' in its selector (app=backend)"),
    ("refuse-without-resource-version", live("blue", rv=""), READY3, "refuse", "no resourceVersion"),
]


@pytest.mark.parametrize(
    ("snap", "endpoints", "action", "reason"), [c[1:] for c in SWITCHES], ids=[c[0] for c in SWITCHES]
)
def test_decide_switch_action_and_reason(
    snap: ServiceSnapshot, endpoints: EndpointReadiness, action: str, reason: str
) -> None:
    """Each Service state and endpoint readiness gives its action, with a reason naming the cause."""
    step = decide_switch(snap, "green", endpoints, "staging-bbb", {"backend": D2})
    assert step.action == action
    assert reason in step.reason
    assert (step.patch is not None) is (action == "switch")
    assert step.to_colour == "green" and step.service == "backend"


def test_switch_patch_guards_version_records_previous_and_moves_selector() -> None:
    """The switch patch carries the snapshot's resourceVersion, the record of what it replaced, and the new colour."""
    step = decide_switch(
        live("blue", **RECORDED, **{ROLLED_BACK: "x"}),
        "green",
        READY3,
        "staging-bbb",
        {"z": D2, "a": D1},
    )
    assert step.from_colour == "blue"
    assert step.patch == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {
                ACTIVE_COLOUR: "green",
                PREVIOUS_COLOUR: "blue",
                RELEASE_ID: "staging-bbb",
                DIGESTS: f'{{"a":"{D1}","z":"{D2}"}}',
                PREVIOUS_RELEASE_ID: "staging-aaa",
                PREVIOUS_DIGESTS: OLD_DIGESTS,
                ROLLED_BACK: None,
                OVERLAP: None,
            },
        },
        "spec": {"selector": {"app": "backend", "color": "green"}},
    }


def test_first_switch_deletes_absent_previous_record() -> None:
    """Switching a Service with no record writes null previous-release annotations (a merge patch deletes them)."""
    step = decide_switch(live("blue"), "green", READY3, "staging-bbb", {})
    assert step.patch is not None
    annotations = step.patch["metadata"]["annotations"]
    assert annotations[PREVIOUS_RELEASE_ID] is None and annotations[PREVIOUS_DIGESTS] is None
    assert annotations[DIGESTS] == "{}"


AFTER_SWITCH = {
    ACTIVE_COLOUR: "green",
    PREVIOUS_COLOUR: "blue",
    RELEASE_ID: "staging-bbb",
    DIGESTS: json.dumps({"backend": D2}),
    PREVIOUS_RELEASE_ID: "staging-aaa",
    PREVIOUS_DIGESTS: OLD_DIGESTS,
}

ROLLBACKS = [
    # id, snapshot, previous endpoints, previous replicas, action, reason, scale_to
    (
        "fast-rollback-warm",
        live("green", **AFTER_SWITCH),
        READY3,
        3,
        "switch",
        "fast rollback: blue still warm with 3/3 ready",
        None,
    ),
    (
        "scale-up-when-scaled-down",
        live("green", **AFTER_SWITCH),
        EndpointReadiness(0, 0, 0),
        0,
        "scale-up-previous",
        "blue scaled down (0 replicas): scaling to 3 and waiting for readiness first",
        3,
    ),
    (
        "scale-up-when-fewer",
        live("green", **AFTER_SWITCH),
        EndpointReadiness(1, 0, 1),
        1,
        "scale-up-previous",
        "scaling to 3",
        3,
    ),
    (
        "wait-for-readiness",
        live("green", **AFTER_SWITCH),
        EndpointReadiness(1, 2, 3),
        3,
        "wait",
        "waiting for blue before rolling back: 1/3 endpoints ready, 2 not ready",
        None,
    ),
    (
        "refuse-no-previous",
        live("green", **{ACTIVE_COLOUR: "green"}),
        READY3,
        3,
        "refuse",
        "no previous colour recorded on backend",
        None,
    ),
    (
        "refuse-not-blue-green",
        live(None, **AFTER_SWITCH),
        READY3,
        3,
        "refuse",
        "no 'color' in its selector",
        None,
    ),
    (
        "noop-already-on-previous",
        live("blue", **AFTER_SWITCH),
        READY3,
        3,
        "noop",
        "already on blue: nothing to roll back",
        None,
    ),
    (
        "noop-after-rollback",
        live("blue", **{PREVIOUS_COLOUR: "green", ROLLED_BACK: "staging-bbb"}),
        READY3,
        3,
        "noop",
        "release staging-bbb was taken out of service",
        None,
    ),
    (
        "refuse-without-resource-version",
        live("green", rv="", **AFTER_SWITCH),
        READY3,
        3,
        "refuse",
        "no resourceVersion",
        None,
    ),
]


@pytest.mark.parametrize(
    ("snap", "ready", "replicas", "action", "reason", "scale_to"),
    [c[1:] for c in ROLLBACKS],
    ids=[c[0] for c in ROLLBACKS],
)
def test_decide_rollback_action_and_reason(
    snap: ServiceSnapshot,
    ready: EndpointReadiness,
    replicas: int,
    action: str,
    reason: str,
    scale_to: int | None,
) -> None:
    """Each state of the previous colour gives its rollback step, with a reason naming the cause."""
    step = decide_rollback(snap, ready, previous_replicas=replicas, want_replicas=3)
    assert step.action == action
    assert reason in step.reason
    assert step.scale_to == scale_to
    assert (step.patch is not None) is (action == "switch")


def test_rollback_patch_restores_previous_release_and_marks_the_bad_one() -> None:
    """The rollback patch points the selector at the previous colour and swaps the release records."""
    step = decide_rollback(live("green", **AFTER_SWITCH), READY3, 3, 3)
    assert (step.from_colour, step.to_colour) == ("green", "blue")
    assert step.patch == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {
                ACTIVE_COLOUR: "blue",
                PREVIOUS_COLOUR: "green",
                RELEASE_ID: "staging-aaa",
                DIGESTS: OLD_DIGESTS,
                PREVIOUS_RELEASE_ID: "staging-bbb",
                PREVIOUS_DIGESTS: json.dumps({"backend": D2}),
                ROLLED_BACK: "staging-bbb",
                OVERLAP: None,
            },
        },
        "spec": {"selector": {"app": "backend", "color": "blue"}},
    }


def test_rollback_then_rollback_again_is_a_noop() -> None:
    """Applying a rollback's annotations and asking again gives noop: a second rollback would restore the bad release."""
    first = decide_rollback(live("green", **AFTER_SWITCH), READY3, 3, 3)
    assert first.patch is not None
    applied = {k: v for k, v in first.patch["metadata"]["annotations"].items() if v is not None}
    second = decide_rollback(live("blue", **applied), READY3, 3, 3)
    assert second.action == "noop"


def test_switch_after_rollback_clears_the_marker() -> None:
    """A new switch after a rollback deletes the rolled-back marker so the next rollback works again."""
    after_rollback = {
        ACTIVE_COLOUR: "blue",
        PREVIOUS_COLOUR: "green",
        RELEASE_ID: "staging-aaa",
        ROLLED_BACK: "staging-bbb",
    }
    step = decide_switch(live("blue", **after_rollback), "green", READY3, "staging-ccc", {})
    assert step.patch is not None
    assert step.patch["metadata"]["annotations"][ROLLED_BACK] is None


def test_rollback_of_unrecorded_release_still_marks_it() -> None:
    """A rollback of a Service without a recorded release id marks the rolled-back colour instead."""
    step = decide_rollback(live("green", **{PREVIOUS_COLOUR: "blue"}), READY3, 3, 3)
    assert step.patch is not None
    assert step.patch["metadata"]["annotations"][ROLLED_BACK] == "unrecorded-on-green"


# --- overlap switches (select both colours, wait, narrow) and the rollback's digest check -------


def overlapping(release: str = "staging-bbb", **annotations: str) -> ServiceSnapshot:
    """The live Service mid-overlap from blue to green for ``release`` (no colour in its selector)."""
    record = Overlap("blue", "green", release).text()
    return live(None, **RECORDED, **{OVERLAP: record}, **annotations)


def test_overlap_mode_widens_to_both_colours_recording_the_overlap() -> None:
    """In overlap mode the first step drops the colour from the selector (null in the merge patch) and records the overlap."""
    step = decide_switch(live("blue", **RECORDED), "green", READY3, "staging-bbb", {}, "overlap")
    assert step.action == "widen"
    assert step.patch == {
        "metadata": {
            "resourceVersion": "41",
            "annotations": {OVERLAP: '{"from":"blue","release":"staging-bbb","to":"green"}'},
        },
        "spec": {"selector": {"app": "backend", "color": None}},
    }


def test_overlap_recorded_for_this_release_narrows_with_the_switch_record() -> None:
    """Once this release's overlap is on the Service, the next step narrows to the new colour and clears the overlap."""
    snap = overlapping()
    assert snap.colour() == "blue"  # traffic is taken to be on the colour it moves from
    step = decide_switch(snap, "green", READY3, "staging-bbb", {"backend": D2}, "overlap")
    assert step.action == "narrow"
    assert step.patch is not None
    annotations = step.patch["metadata"]["annotations"]
    assert (annotations[ACTIVE_COLOUR], annotations[PREVIOUS_COLOUR], annotations[OVERLAP]) == (
        "green",
        "blue",
        None,
    )
    assert step.patch["spec"]["selector"] == {"app": "backend", "color": "green"}


OVERLAP_REFUSALS = [
    # id, snapshot, target, release
    ("other-release", overlapping("staging-ccc"), "green", "staging-bbb"),
    ("other-target", overlapping(), "blue", "staging-bbb"),
]


@pytest.mark.parametrize(
    ("snap", "target", "release"), [c[1:] for c in OVERLAP_REFUSALS], ids=[c[0] for c in OVERLAP_REFUSALS]
)
def test_another_switchs_overlap_is_refused(snap: ServiceSnapshot, target: str, release: str) -> None:
    """A Service mid-overlap for another release or towards another colour is not switched over."""
    step = decide_switch(snap, target, READY3, release, {}, "overlap")
    assert step.action == "refuse"
    assert "mid-switch from blue to green" in step.reason


def test_direct_mode_never_widens() -> None:
    """Direct mode switches with one patch, whatever the Service."""
    step = decide_switch(live("blue", **RECORDED), "green", READY3, "staging-bbb", {}, "direct")
    assert step.action == "switch"


def test_rollback_mid_overlap_narrows_back_to_where_it_started() -> None:
    """A rollback of a Service mid-overlap points it back at the colour the overlap moved from."""
    step = decide_rollback(overlapping(), EndpointReadiness(0, 0, 0), 0, 3, "backend", None)
    assert (step.action, step.to_colour) == ("switch", "blue")
    assert step.patch is not None
    assert step.patch["spec"]["selector"] == {"app": "backend", "color": "blue"}
    assert step.patch["metadata"]["annotations"] == {OVERLAP: None}


ROLLBACK_DIGESTS = [
    # id, digest the previous colour runs now, action
    ("still-the-previous-release", D1, "switch"),
    ("a-release-deployed-onto-it", D2, "refuse"),
    ("not-pinned", None, "refuse"),
]


@pytest.mark.parametrize(
    ("digest", "action"), [c[1:] for c in ROLLBACK_DIGESTS], ids=[c[0] for c in ROLLBACK_DIGESTS]
)
def test_rollback_only_to_a_colour_still_running_the_previous_digest(digest: str | None, action: str) -> None:
    """A rollback returns to the previous colour only while it runs the previous release's digest."""
    step = decide_rollback(live("green", **AFTER_SWITCH), READY3, 3, 3, "backend", digest)
    assert step.action == action
    if action == "refuse":
        assert "a release has deployed onto it" in step.reason


def test_rollback_without_recorded_previous_digest_is_not_blocked() -> None:
    """Without a recorded previous digest for the app (a first release), the check cannot apply and the rollback goes on."""
    snap = live("green", **{k: v for k, v in AFTER_SWITCH.items() if k != PREVIOUS_DIGESTS})
    assert decide_rollback(snap, READY3, 3, 3, "backend", D2).action == "switch"


def test_overlap_rollback_widens_then_narrows_with_the_rollback_record() -> None:
    """Behind a load balancer that detaches before attaching, a rollback first widens to both
    colours, then (seeing its own overlap) narrows to the previous colour with the rollback's record."""
    first = decide_rollback(live("green", **AFTER_SWITCH), READY3, 3, 3, "backend", D1, "overlap")
    assert first.action == "widen" and first.patch is not None
    assert first.patch["spec"]["selector"] == {"app": "backend", "color": None}
    record = first.patch["metadata"]["annotations"][OVERLAP]
    widened = live(None, **AFTER_SWITCH, **{OVERLAP: record})
    assert widened.colour() == "green"  # still taken to be on the bad colour until narrowed
    second = decide_rollback(widened, READY3, 3, 3, "backend", D1, "overlap")
    assert (second.action, second.from_colour, second.to_colour) == ("switch", "green", "blue")
    assert second.patch is not None
    annotations = second.patch["metadata"]["annotations"]
    assert (annotations[ROLLED_BACK], annotations[OVERLAP], annotations[ACTIVE_COLOUR]) == (
        "staging-bbb",
        None,
        "blue",
    )
    assert second.patch["spec"]["selector"] == {"app": "backend", "color": "blue"}
