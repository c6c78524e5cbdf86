"""Pure DR drill decisions (greenlight/core/drill.py), table by table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from greenlight.core.drill import (
    DRILL_LABEL,
    AppTarget,
    SecretRef,
    compare_target,
    data_loss_seconds,
    decide_drill,
    dr_database_name,
    drill_id,
    live_digests,
    plan_apply,
    prepare_object,
    secret_gaps,
    timed_step,
)
from greenlight.core.switch import OVERLAP
from greenlight.errors import InputInvalid

T0 = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("measure", "value", "target", "ok", "reason"),
    [
        ("RTO", 143.2, 300, True, "RTO 143 s within target 300 s"),
        ("RTO", 300, 300, True, "RTO 300 s within target 300 s"),
        ("RTO", 312.4, 300, False, "RTO 312 s missed target 300 s by 12 s"),
        ("RTO", 9.5, 1, False, "RTO 9.5 s missed target 1 s by 8.5 s"),
        ("RPO", 25117, 86400, True, "RPO 25117 s within target 86400 s"),
        ("RPO", None, 86400, False, "RPO not measured (target 86400 s): why"),
    ],
)
def test_compare_target_says_within_or_missed_by_how_much(
    measure: str, value: float | None, target: float, ok: bool, reason: str
) -> None:
    """A value at or under its target is within it; over it, the reason says by how many seconds."""
    check = compare_target(measure, value, target, "why")
    assert check.ok is ok
    assert check.reason == reason


def test_a_non_positive_target_is_refused() -> None:
    """A target of 0 s is a profile mistake, not a drill result."""
    with pytest.raises(InputInvalid, match="RTO target must be positive"):
        compare_target("RTO", 1, 0)


@pytest.mark.parametrize(
    ("newest", "expected"),
    [(T0 - timedelta(hours=7), 25200.0), (T0, 0.0), (T0 + timedelta(seconds=30), 0.0), (None, None)],
)
def test_data_loss_is_drill_start_minus_newest_row(newest: datetime | None, expected: float | None) -> None:
    """RPO is what a disaster at the drill's start loses back to the newest restored row; never negative."""
    assert data_loss_seconds(T0, newest) == expected


def step(name: str, outcome: str = "ok", detail: str = "fine") -> Any:
    return timed_step(name, T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=3.5), outcome, detail)


@pytest.mark.parametrize(
    ("steps", "rto", "rpo", "leftovers", "passed", "reasons"),
    [
        (["restore", "smoke"], 100, 500, [], True, []),
        (["restore", "smoke"], 400, 500, [], False, ["RTO 400 s missed target 300 s by 100 s"]),
        (["restore", "smoke"], 100, 90000, [], False, ["RPO 90000 s missed target 86400 s by 3600 s"]),
        (["restore", "smoke!"], None, 500, [], False, ["smoke: boom"]),
        (["restore"], None, None, [], False, ["RTO not measured (target 300 s)", "RPO not measured (target 86400 s)"]),
        (["restore", "smoke"], 100, 500, ["deployments/backend-blue"], False,
         ["teardown left behind: deployments/backend-blue"]),
        ([], None, None, [], False, ["RTO not measured (target 300 s)", "RPO not measured (target 86400 s)",
                                      "no step ran"]),
    ],
)  # fmt: skip
def test_decide_drill_passes_only_when_every_step_target_and_teardown_passed(
    steps: list[str],
    rto: float | None,
    rpo: float | None,
    leftovers: list[str],
    passed: bool,
    reasons: list[str],
) -> None:
    """A failed step is the reason (an unmeasured target then is not); a missed target or a leftover fails too."""
    recorded = [step(n.rstrip("!"), "failed" if n.endswith("!") else "ok", "boom" if n.endswith("!") else "x")
                for n in steps]  # fmt: skip
    verdict = decide_drill(
        recorded, compare_target("RTO", rto, 300), compare_target("RPO", rpo, 86400), leftovers
    )
    assert verdict.passed is passed
    assert list(verdict.reasons) == reasons


def test_timed_step_measures_offset_and_duration() -> None:
    """A step's offset is from the drill's start and its duration from its own start."""
    s = step("restore")
    assert (s.offset_s, s.seconds, s.ok) == (1.0, 2.5, True)
    with pytest.raises(InputInvalid):
        timed_step("x", T0, T0, T0, "maybe", "")


@pytest.mark.parametrize(
    ("live", "digests", "problems"),
    [
        ({"backend": {"digests": {"backend": D1}, "live_colour": "blue"}}, {"backend": D1}, []),
        ({"backend": {"digests": {}, "live_colour": "green", "colours": {"green": {"digest": D2}}}},
         {"backend": D2}, []),
        ({"backend": {"digests": {}, "live_colour": None, "colours": {}}}, {},
         ["backend: no digest is live in the source environment (live colour none)"]),
        ({}, {}, ["backend: no live Service in the source environment"]),
    ],
)  # fmt: skip
def test_live_digests_come_from_the_annotation_else_the_live_colour(
    live: dict[str, Any], digests: dict[str, str], problems: list[str]
) -> None:
    """The live Service's digests annotation wins; else the live colour's Deployment; else a problem naming the app."""
    assert live_digests(live, ["backend"]) == (digests, problems)


def deployment(name: str, colour: str, image: str = "ghcr.io/sma-platform/backend:old") -> dict[str, Any]:
    labels = {"app": "backend", "color": colour}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels, "uid": "u-1", "ownerReferences": [{"uid": "x"}],
                     "annotations": {"deployment.kubernetes.io/revision": "3", "team": "core"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": dict(labels)},
                              "spec": {"containers": [{"name": "backend", "image": image}]}}},
        "status": {"readyReplicas": 2},
    }  # fmt: skip


def service(selector: dict[str, str], name: str = "backend") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": selector, "clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"],
                 "ports": [{"name": "http", "port": 80, "nodePort": 30080}]},
    }  # fmt: skip


BACKEND = AppTarget("backend", "backend", "backend", "ghcr.io/sma-platform/backend", D1)
HPA_GREEN = {
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "backend-green"},
    "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "backend-green"}},
}
BUNDLE = [
    service({"app": "backend", "color": "blue"}),
    deployment("backend-blue", "blue"),
    deployment("backend-green", "green"),
    HPA_GREEN,
    {"kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {}},
    {"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}},
    {"kind": "Secret", "metadata": {"name": "app-secrets"}, "type": "Opaque", "keys": ["B", "A"]},
    {
        "kind": "Secret",
        "metadata": {"name": "sa-token"},
        "type": "kubernetes.io/service-account-token",
        "keys": [],
    },
]


def test_plan_applies_the_selected_colour_pinned_and_leaves_out_the_idle_one() -> None:
    """The Deployment the live Service selects runs the digest; the idle colour, its HPA, the cluster's own
    ConfigMap and every Secret stay out; Secrets become the list to check (generated ones excepted)."""
    plan = plan_apply(BUNDLE, [BACKEND], "sma-production", "dr-1")
    assert plan.problems == ()
    assert [(p, n) for p, n, _ in plan.objects] == [
        ("configmaps", "settings"),
        ("services", "backend"),
        ("deployments", "backend-blue"),
    ]
    dep = plan.objects[2][2]
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"ghcr.io/sma-platform/backend@{D1}"
    assert plan.pinned == {"backend": "backend-blue"}
    assert any(s.startswith("deployments/backend-green: idle colour") for s in plan.skipped)
    assert any(s.startswith("horizontalpodautoscalers/backend-green") for s in plan.skipped)
    assert plan.secrets == (SecretRef("app-secrets", ("A", "B")),)


@pytest.mark.parametrize(
    ("bundle", "problem"),
    [
        ([deployment("backend-blue", "blue")], "backend: the bundle has no Service backend"),
        ([service({"app": "backend", "color": "red"}), deployment("backend-blue", "blue")],
         "backend: Service backend must select exactly one Deployment of the bundle, selects none"),
        ([service({"app": "backend"}), deployment("backend-blue", "blue"), deployment("backend-green", "green")],
         "backend: Service backend must select exactly one Deployment of the bundle, selects backend-blue, "
         "backend-green"),
    ],
)  # fmt: skip
def test_plan_names_what_stops_the_apply(bundle: list[dict[str, Any]], problem: str) -> None:
    """No live Service, no selected Deployment or an ambiguous selector is a problem naming the app."""
    assert plan_apply(bundle, [BACKEND], "ns", "dr-1").problems == (problem,)


def test_plan_names_a_missing_container() -> None:
    """A selected Deployment without the profile's container cannot be pinned."""
    app = AppTarget("backend", "backend", "api", "ghcr.io/sma-platform/backend", D1)
    plan = plan_apply(BUNDLE[:2], [app], "ns", "dr-1")
    assert plan.problems == ("backend: Deployment backend-blue has no container 'api'",)


def route(blue: int, green: int, name: str = "backend", **annotations: str) -> dict[str, Any]:
    """An HTTPRoute as config-backup exports it: the colours' Services weighted, its status kept."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": name, "generation": 4, "annotations": annotations},
        "spec": {"parentRefs": [{"name": "external-gateway"}], "hostnames": ["api.example.com"],
                 "rules": [{"backendRefs": [{"name": "backend-blue", "port": 80, "weight": blue},
                                            {"name": "backend-green", "port": 80, "weight": green}]}]},
        "status": {"parents": [{"parentRef": {"name": "external-gateway"}, "conditions": []}]},
    }  # fmt: skip


ROUTED = [
    service({"app": "backend", "color": "blue"}, "backend-blue"),
    service({"app": "backend", "color": "green"}, "backend-green"),
    deployment("backend-blue", "blue"),
    deployment("backend-green", "green"),
    HPA_GREEN,
]


@pytest.mark.parametrize(
    ("bundle", "pinned", "idle"),
    [
        ([*ROUTED, route(0, 100)], "backend-green", "backend-blue"),
        ([*ROUTED, route(100, 0)], "backend-blue", "backend-green"),
    ],
)  # fmt: skip
def test_an_httproute_plan_pins_the_colour_the_route_serves_and_applies_the_route(
    bundle: list[dict[str, Any]], pinned: str, idle: str
) -> None:
    """With gateway-httproute the route's weights say which colour is live (its colour's Service
    selects the Deployment to pin); both colours' Services and the route are applied, the route
    last and without the source cluster's status."""
    plan = plan_apply(bundle, [BACKEND], "dr-ns", "dr-1", router="gateway-httproute")
    assert plan.problems == ()
    assert plan.pinned == {"backend": pinned}
    assert [(p, n) for p, n, _ in plan.objects] == [
        ("services", "backend-blue"),
        ("services", "backend-green"),
        ("deployments", pinned),
        *([("horizontalpodautoscalers", "backend-green")] if pinned == "backend-green" else []),
        ("httproutes", "backend"),
    ]
    assert f"deployments/{idle}: idle colour of backend (not selected by {pinned})" in plan.skipped
    body = plan.objects[-1][2]
    assert "status" not in body and body["metadata"]["labels"] == {DRILL_LABEL: "dr-1"}
    assert body["metadata"]["namespace"] == "dr-ns" and "generation" not in body["metadata"]
    assert body["spec"] == bundle[-1]["spec"]


@pytest.mark.parametrize(
    ("bundle", "problem"),
    [
        (ROUTED, "backend: the bundle has no HTTPRoute backend (traffic.router gateway-httproute)"),
        ([*ROUTED, route(50, 50)],
         "backend: HTTPRoute backend splits traffic between colours (blue 50, green 50) without a record of why"),
        ([*ROUTED, route(50, 50, **{OVERLAP: '{"from": "blue", "to": "green", "release": "r1", "weight": 50}'})],
         "backend: HTTPRoute backend gives no colour all of its traffic"),
        ([*ROUTED[1:], route(100, 0)], "backend: the bundle has no Service backend-blue"),
        ([*ROUTED, route(100, 0, name="api")], "backend: the bundle has no HTTPRoute backend (traffic.router "
         "gateway-httproute)"),
    ],
)  # fmt: skip
def test_an_httproute_plan_names_what_stops_the_apply(bundle: list[dict[str, Any]], problem: str) -> None:
    """No route, a split route, or no Service for the colour it serves is a problem naming the app."""
    assert plan_apply(bundle, [BACKEND], "ns", "dr-1", router="gateway-httproute").problems == (problem,)


def test_the_app_names_its_route() -> None:
    """``AppTarget.route`` names the HTTPRoute when it is not the Service's name."""
    app = AppTarget("backend", "backend", "backend", "ghcr.io/sma-platform/backend", D1, route="api")
    plan = plan_apply([*ROUTED, route(0, 100, name="api")], [app], "ns", "dr-1", router="gateway-httproute")
    assert plan.problems == () and plan.pinned == {"backend": "backend-green"}


def test_a_selector_plan_leaves_routes_out() -> None:
    """A DR profile routed by Services has nothing to program a route: it is left out, saying why."""
    plan = plan_apply([*BUNDLE, route(100, 0)], [BACKEND], "ns", "dr-1")
    assert plan.problems == () and "httproutes" not in plan.count_by_kind()
    assert (
        "httproutes/backend: the DR profile's traffic.router is service-selector: nothing there programs a route"
        in (plan.skipped)
    )


def test_prepare_deployment_drops_what_belongs_to_the_source_cluster() -> None:
    """Status, uid, owners and cluster-written annotations go; the app's annotations stay; the drill labels it
    and its pods; the input is not changed."""
    source = deployment("backend-blue", "blue")
    out = prepare_object(source, "dr-ns", "dr-1")
    assert "status" not in out
    assert out["metadata"] == {
        "name": "backend-blue",
        "labels": {"app": "backend", "color": "blue", DRILL_LABEL: "dr-1"},
        "annotations": {"team": "core"},
        "namespace": "dr-ns",
    }
    assert out["spec"]["template"]["metadata"]["labels"][DRILL_LABEL] == "dr-1"
    assert out["spec"]["selector"]["matchLabels"] == {"app": "backend", "color": "blue"}
    assert source["status"] == {"readyReplicas": 2} and DRILL_LABEL not in source["metadata"]["labels"]


def test_prepare_service_drops_what_the_dr_cluster_assigns() -> None:
    """A Service loses its cluster IPs and node ports (the DR cluster assigns its own), keeps its ports."""
    out = prepare_object(service({"app": "backend"}), "dr-ns", "dr-1")
    assert out["spec"] == {
        "type": "NodePort",
        "selector": {"app": "backend"},
        "ports": [{"name": "http", "port": 80}],
    }


@pytest.mark.parametrize(
    ("present", "gaps"),
    [
        ({"app-secrets": ["A", "B", "C"]}, []),
        ({"app-secrets": ["A"]}, ["Secret app-secrets lacks key(s) B"]),
        ({"app-secrets": None}, ["Secret app-secrets is missing"]),
        ({}, ["Secret app-secrets is missing"]),
    ],
)
def test_secret_gaps_name_missing_secrets_and_keys(
    present: dict[str, list[str] | None], gaps: list[str]
) -> None:
    """Every Secret the bundle names must exist in the DR cluster with at least its keys."""
    assert secret_gaps([SecretRef("app-secrets", ("A", "B"))], present) == gaps


@pytest.mark.parametrize(
    ("database", "name"),
    [("sma", "sma_dr"), ("orders_db", "orders_db_dr"), ("Bad-Name", None), ("x" * 61, None)],
)
def test_dr_database_name_is_the_source_name_with_dr(database: str, name: str | None) -> None:
    """The DR database never takes the source's own name (both may share a server)."""
    if name is None:
        with pytest.raises(InputInvalid):
            dr_database_name(database)
    else:
        assert dr_database_name(database) == name


def test_drill_id_is_a_valid_label_value() -> None:
    """The drill's id goes into labels: lowercase, at most 63 characters, no odd characters."""
    assert drill_id("dr", T0, "ab12cd") == "dr-20261126t100000-ab12cd"
    assert len(drill_id("x" * 80, T0, "ab")) <= 63
