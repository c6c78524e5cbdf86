"""Conformance of the lab's Gateway API objects against the official client's CustomObjectsApi
over a real connection: verbs, generation and resourceVersion, 409 on stale writes, the CRD
schema's 422 answers, the status subresource, and the status GKE's gateway controller writes
(only after programming, with observedGeneration, BackendNotFound, NoMatchingParent)."""

from __future__ import annotations

import copy
import json
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from greenlight_lab.faults import FaultRule
from greenlight_lab.gateway import CONTROLLER_NAME, gateway_body, httproute_body, route_programmed

from .conftest import KubeLab

GROUP, VERSION = "gateway.networking.k8s.io", "v1"
PROGRAM_TIMEOUT_S = 10.0  # the lab's programming delay is 2 s plus or minus 0.67 s


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _service(core: client.CoreV1Api, ns: str, name: str) -> None:
    core.create_namespaced_service(
        ns, {"metadata": {"name": name}, "spec": {"selector": {"app": name}, "ports": [{"port": 80}]}}
    )


def _route(name: str = "web", weights: dict[str, int] | None = None, **spec: Any) -> dict[str, Any]:
    body = httproute_body(
        name, "", "gw", "shop.example.com", weights or {"web-blue": 100, "web-green": 0}, 80
    )
    del body["metadata"]["namespace"]
    body["spec"].update(spec)
    return body


def _get(
    custom: client.CustomObjectsApi, ns: str, name: str = "web", plural: str = "httproutes"
) -> dict[str, Any]:
    obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, ns, plural, name)
    return obj


def _setup(core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str) -> None:
    for name in ("web-blue", "web-green"):
        _service(core, ns, name)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gateways", gateway_body("gw", ns))


def _conditions(route: dict[str, Any], parent: int = 0) -> dict[str, dict[str, Any]]:
    parents = (route.get("status") or {}).get("parents") or []
    return {c["type"]: c for c in parents[parent]["conditions"]} if len(parents) > parent else {}


def _wait_observed(
    kube: KubeLab, custom: client.CustomObjectsApi, ns: str, generation: int, name: str = "web"
) -> dict[str, Any]:
    got: dict[str, Any] = {}

    def check() -> bool:
        got.clear()
        got.update(_get(custom, ns, name))
        conds = _conditions(got)
        return bool(conds) and all(c["observedGeneration"] >= generation for c in conds.values())

    kube.wait_for(
        check, timeout=PROGRAM_TIMEOUT_S, what=f"route {ns}/{name} status for generation {generation}"
    )
    return got


def test_discovery_lists_gateway_api_group_and_resources(kube: KubeLab) -> None:
    """/apis names gateway.networking.k8s.io/v1; its resource list has gateways, httproutes and their status."""
    with urllib.request.urlopen(kube.url + "/apis") as r:
        groups = {g["name"]: g for g in json.loads(r.read())["groups"]}
    assert groups[GROUP]["preferredVersion"]["groupVersion"] == f"{GROUP}/{VERSION}"
    with urllib.request.urlopen(f"{kube.url}/apis/{GROUP}/{VERSION}") as r:
        names = {res["name"]: res for res in json.loads(r.read())["resources"]}
    assert {"gateways", "gateways/status", "httproutes", "httproutes/status"} <= set(names)
    assert names["httproutes"]["kind"] == "HTTPRoute" and names["httproutes"]["namespaced"] is True


def test_httproute_create_get_list_patch_replace_delete(custom: client.CustomObjectsApi, ns: str) -> None:
    """The CustomObjectsApi verbs work; the create answer carries the CRD defaults."""
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    ref = created["spec"]["rules"][0]["backendRefs"][0]
    assert (ref["group"], ref["kind"]) == ("", "Service")
    assert created["spec"]["parentRefs"][0] == {"name": "gw", "group": GROUP, "kind": "Gateway"}
    assert created["spec"]["rules"][0]["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert created["metadata"]["generation"] == 1 and created["metadata"]["uid"]
    assert _get(custom, ns)["metadata"]["uid"] == created["metadata"]["uid"]
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, ns, "httproutes")
    assert listed["kind"] == "HTTPRouteList" and [o["metadata"]["name"] for o in listed["items"]] == ["web"]
    assert custom.list_cluster_custom_object(GROUP, VERSION, "httproutes")["items"]
    merged = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"spec": {"hostnames": ["a.example.com"]}}
    )
    assert merged["spec"]["hostnames"] == ["a.example.com"]
    json_patch = [{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 7}]
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", json_patch, _content_type="application/json-patch+json"
    )
    assert patched["spec"]["rules"][0]["backendRefs"][0]["weight"] == 7
    body = copy.deepcopy(patched)
    body["spec"]["hostnames"] = ["b.example.com"]
    replaced = custom.replace_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web", body)
    assert replaced["spec"]["hostnames"] == ["b.example.com"]
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web")
    with pytest.raises(ApiException) as info:
        _get(custom, ns)
    assert info.value.status == 404


def test_httproute_strategic_merge_patch_is_refused_415(
    api: client.ApiClient, custom: client.CustomObjectsApi, ns: str
) -> None:
    """Custom resources have no patch strategy: a strategic merge patch answers 415, as the API server does."""
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    with pytest.raises(ApiException) as info:
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "httproutes", "web", {"spec": {"hostnames": ["a.example.com"]}},
            _content_type="application/strategic-merge-patch+json",
        )  # fmt: skip
    assert info.value.status == 415
    assert "strategic" not in json.loads(info.value.body)["message"]


def test_httproute_generation_moves_on_spec_only(custom: client.CustomObjectsApi, ns: str) -> None:
    """A label change is a new resourceVersion with the same generation; a spec change moves both;
    a write that changes nothing moves neither."""
    v1 = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    v2 = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"metadata": {"labels": {"x": "y"}}}
    )
    assert v2["metadata"]["generation"] == 1
    assert v2["metadata"]["resourceVersion"] != v1["metadata"]["resourceVersion"]
    v3 = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"spec": {"hostnames": ["a.example.com"]}}
    )
    assert v3["metadata"]["generation"] == 2
    v4 = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"spec": {"hostnames": ["a.example.com"]}}
    )
    assert v4["metadata"]["resourceVersion"] == v3["metadata"]["resourceVersion"]


def test_httproute_stale_resource_version_is_409(custom: client.CustomObjectsApi, ns: str) -> None:
    """A replace or a patch carrying an old resourceVersion is refused 409 Conflict."""
    v1 = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"spec": {"hostnames": ["a.example.com"]}}
    )
    stale = copy.deepcopy(v1)
    stale["spec"]["hostnames"] = ["b.example.com"]
    for call in (
        lambda: custom.replace_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", "web", stale),
        lambda: custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "httproutes", "web",
            {"metadata": {"resourceVersion": v1["metadata"]["resourceVersion"]}, "spec": {"hostnames": ["c.example.com"]}},
        ),
    ):  # fmt: skip
        with pytest.raises(ApiException) as info:
            call()
        assert info.value.status == 409
        assert json.loads(info.value.body)["reason"] == "Conflict"
    assert _get(custom, ns)["spec"]["hostnames"] == ["a.example.com"]


def _ref(**fields: Any) -> dict[str, Any]:
    return {"name": "web-blue", "port": 80, **fields}


INVALID_ROUTES = [
    ("weight above 1000000", {"rules": [{"backendRefs": [_ref(weight=1_000_001)]}]}, "spec.rules[0].backendRefs[0].weight", "FieldValueInvalid"),
    ("negative weight", {"rules": [{"backendRefs": [_ref(weight=-1)]}]}, "spec.rules[0].backendRefs[0].weight", "FieldValueInvalid"),
    ("weight not an integer", {"rules": [{"backendRefs": [_ref(weight="10")]}]}, "spec.rules[0].backendRefs[0].weight", "FieldValueTypeInvalid"),
    ("Service without port", {"rules": [{"backendRefs": [{"name": "web-blue"}]}]}, "spec.rules[0].backendRefs[0]", "FieldValueInvalid"),
    ("explicit Service kind without port", {"rules": [{"backendRefs": [{"name": "web-blue", "kind": "Service", "group": ""}]}]}, "spec.rules[0].backendRefs[0]", "FieldValueInvalid"),
    ("backendRef without name", {"rules": [{"backendRefs": [{"port": 80}]}]}, "spec.rules[0].backendRefs[0].name", "FieldValueRequired"),
    ("port out of range", {"rules": [{"backendRefs": [_ref(port=70000)]}]}, "spec.rules[0].backendRefs[0].port", "FieldValueInvalid"),
    ("17 rules", {"rules": [{"backendRefs": [_ref()]}] * 17}, "spec.rules", "FieldValueTooMany"),
    ("17 backendRefs", {"rules": [{"backendRefs": [_ref()] * 17}]}, "spec.rules[0].backendRefs", "FieldValueTooMany"),
    ("33 parentRefs", {"parentRefs": [{"name": "gw"}] * 33}, "spec.parentRefs", "FieldValueTooMany"),
    ("parentRef without name", {"parentRefs": [{"kind": "Gateway"}]}, "spec.parentRefs[0].name", "FieldValueRequired"),
    ("hostname with upper case", {"hostnames": ["Shop.example.com"]}, "spec.hostnames[0]", "FieldValueInvalid"),
    ("hostname with a wildcard inside", {"hostnames": ["shop.*.com"]}, "spec.hostnames[0]", "FieldValueInvalid"),
    ("17 hostnames", {"hostnames": [f"h{i}.example.com" for i in range(17)]}, "spec.hostnames", "FieldValueTooMany"),
    ("path type unknown", {"rules": [{"matches": [{"path": {"type": "Prefix", "value": "/"}}], "backendRefs": [_ref()]}]}, "spec.rules[0].matches[0].path.type", "FieldValueNotSupported"),
    ("relative PathPrefix", {"rules": [{"matches": [{"path": {"type": "PathPrefix", "value": "api"}}], "backendRefs": [_ref()]}]}, "spec.rules[0].matches[0].path", "FieldValueInvalid"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "spec", "field", "reason"), INVALID_ROUTES, ids=[c[0] for c in INVALID_ROUTES]
)
def test_httproute_schema_violation_is_422_naming_the_field(
    custom: client.CustomObjectsApi, ns: str, case: str, spec: dict[str, Any], field: str, reason: str
) -> None:
    """Each rule of the CRD's schema answers 422 Invalid with the field in details.causes, and stores nothing."""
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route(**spec))
    assert info.value.status == 422, case
    status = json.loads(info.value.body)
    assert (status["status"], status["reason"], status["code"]) == ("Failure", "Invalid", 422)
    assert status["details"]["kind"] == "HTTPRoute" and status["details"]["group"] == GROUP
    causes = {(c["field"], c["reason"]) for c in status["details"]["causes"]}
    assert (field, reason) in causes, status
    assert custom.list_namespaced_custom_object(GROUP, VERSION, ns, "httproutes")["items"] == []


def test_httproute_valid_edges_are_accepted(custom: client.CustomObjectsApi, ns: str) -> None:
    """Weight 0 and 1000000, 16 rules of 16 backendRefs, 32 parentRefs, 16 hostnames and a
    wildcard hostname are all valid; an omitted weight defaults to 1."""
    spec = {
        "parentRefs": [{"name": f"gw{i}"} for i in range(32)],
        "hostnames": ["*.example.com", *[f"h{i}.example.com" for i in range(15)]],
        "rules": [{"backendRefs": [_ref(weight=0), _ref(weight=1_000_000), *[_ref()] * 14]}] * 16,
    }
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route(**spec))
    weights = [r["weight"] for r in created["spec"]["rules"][0]["backendRefs"]]
    assert weights[:3] == [0, 1_000_000, 1]


def test_gateway_schema_requires_class_and_listeners(custom: client.CustomObjectsApi, ns: str) -> None:
    """A Gateway without gatewayClassName, or with a listener lacking its port, is 422 naming the field."""
    body = gateway_body("gw", ns)
    del body["spec"]["gatewayClassName"]
    del body["spec"]["listeners"][0]["port"]
    with pytest.raises(ApiException) as info:
        custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gateways", body)
    fields = {c["field"] for c in json.loads(info.value.body)["details"]["causes"]}
    assert {"spec.gatewayClassName", "spec.listeners[0].port"} <= fields


def test_httproute_status_goes_through_the_status_subresource_only(
    custom: client.CustomObjectsApi, ns: str
) -> None:
    """A status in a main-resource write is ignored; a /status write changes only the status (no new generation)."""
    body = _route()
    body["status"] = {
        "parents": [{"controllerName": "example.com/other", "parentRef": {"name": "gw"}, "conditions": []}]
    }
    created = custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", body)
    assert "status" not in created
    written = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, ns, "httproutes", "web",
        {"status": {"parents": [{"controllerName": "example.com/other", "parentRef": {"name": "other"}, "conditions": []}]},
         "spec": {"hostnames": ["ignored.example.com"]}},
    )  # fmt: skip
    assert written["status"]["parents"][0]["controllerName"] == "example.com/other"
    assert written["spec"]["hostnames"] == ["shop.example.com"]
    assert written["metadata"]["generation"] == 1
    again = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"status": {"parents": []}}
    )
    assert again["status"]["parents"][0]["controllerName"] == "example.com/other"
    assert (
        custom.get_namespaced_custom_object_status(GROUP, VERSION, ns, "httproutes", "web")["status"]
        == written["status"]
    )


def test_httproute_status_arrives_only_after_programming(
    kube: KubeLab, core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str
) -> None:
    """The controller writes Accepted, ResolvedRefs and Reconciled for the programmed generation
    only after the programming delay: read right after a patch, the status still names the old
    generation; lastTransitionTime stays while a condition keeps its value. Another
    controller's parents entry is left alone."""
    _setup(core, custom, ns)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    assert "status" not in _get(custom, ns)
    first = _wait_observed(kube, custom, ns, 1)
    entry = first["status"]["parents"][0]
    assert entry["controllerName"] == CONTROLLER_NAME
    assert entry["parentRef"] == {"name": "gw", "group": GROUP, "kind": "Gateway"}
    conds = _conditions(first)
    assert [c["type"] for c in entry["conditions"]] == ["Accepted", "ResolvedRefs", "Reconciled"]
    assert all(c["status"] == "True" and c["observedGeneration"] == 1 for c in conds.values())
    assert conds["Reconciled"]["reason"] == "ReconciliationSucceeded"
    assert route_programmed(first)
    time.sleep(1.1)  # timestamps have whole seconds
    patched = custom.patch_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", "web", {"spec": {"hostnames": ["other.example.com"]}}
    )
    assert patched["metadata"]["generation"] == 2
    right_after = _get(custom, ns)
    assert {c["observedGeneration"] for c in _conditions(right_after).values()} == {1}
    assert not route_programmed(right_after)
    second = _wait_observed(kube, custom, ns, 2)
    assert route_programmed(second)
    for ctype, cond in _conditions(second).items():
        assert cond["lastTransitionTime"] == conds[ctype]["lastTransitionTime"], ctype


def test_httproute_backend_not_found_until_the_service_exists(
    kube: KubeLab, core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str
) -> None:
    """A backendRef naming a missing Service: ResolvedRefs False BackendNotFound (Accepted stays
    True); once the Service is created the controller programs the route again: ResolvedRefs True."""
    _setup(core, custom, ns)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, "httproutes", _route(weights={"web-blue": 1, "web-nowhere": 1})
    )
    route = _wait_observed(kube, custom, ns, 1)
    conds = _conditions(route)
    assert conds["Accepted"]["status"] == "True"
    assert (conds["ResolvedRefs"]["status"], conds["ResolvedRefs"]["reason"]) == ("False", "BackendNotFound")
    assert "web-nowhere" in conds["ResolvedRefs"]["message"]
    assert not route_programmed(route)
    _service(core, ns, "web-nowhere")
    kube.wait_for(
        lambda: _conditions(_get(custom, ns))["ResolvedRefs"]["status"] == "True",
        timeout=PROGRAM_TIMEOUT_S,
        what="ResolvedRefs True",
    )
    assert route_programmed(_get(custom, ns))


def test_httproute_no_matching_parent(
    kube: KubeLab, core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str
) -> None:
    """A parentRef naming no Gateway: Accepted False NoMatchingParent; creating the Gateway accepts it."""
    for name in ("web-blue", "web-green"):
        _service(core, ns, name)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    route = _wait_observed(kube, custom, ns, 1)
    accepted = _conditions(route)["Accepted"]
    assert (accepted["status"], accepted["reason"]) == ("False", "NoMatchingParent")
    assert "Reconciled" not in _conditions(route)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gateways", gateway_body("gw", ns))
    kube.wait_for(
        lambda: route_programmed(_get(custom, ns)), timeout=PROGRAM_TIMEOUT_S, what="route accepted"
    )


def test_gateway_gets_address_conditions_and_url(
    kube: KubeLab, custom: client.CustomObjectsApi, ns: str
) -> None:
    """A Gateway gets its listener URL annotation at once, and after programming status.addresses,
    Accepted and Programmed for its generation, and per listener attachedRoutes."""
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "gateways", gateway_body("gw", ns))
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())

    def programmed() -> dict[str, Any] | None:
        gw = _get(custom, ns, "gw", "gateways")
        conds = {c["type"]: c for c in (gw.get("status") or {}).get("conditions") or []}
        ok = conds.get("Programmed", {}).get("status") == "True"
        attached = ((gw.get("status") or {}).get("listeners") or [{}])[0].get("attachedRoutes")
        return gw if ok and attached == 1 else None

    gw = kube.wait_for(programmed, timeout=PROGRAM_TIMEOUT_S, what="gateway programmed")
    assert gw["status"]["addresses"] == [{"type": "IPAddress", "value": "127.0.0.1"}]
    assert {c["observedGeneration"] for c in gw["status"]["conditions"]} == {1}
    url = gw["metadata"]["annotations"]["lab.greenlight.dev/url"]
    assert kube.cluster.gateways.urls()[f"lab-primary/{ns}/gw"] == url


def test_httproute_changes_are_programmed_in_order_latest_wins(
    kube: KubeLab, core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str
) -> None:
    """Two spec changes in quick succession: the status ends at the last generation and the data
    plane acts on it; it never names a generation the data plane has not programmed."""
    _setup(core, custom, ns)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    _wait_observed(kube, custom, ns, 1)
    for weights in ((50, 50), (0, 100)):
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, ns, "httproutes", "web",
            {"spec": {"rules": [{"backendRefs": [_ref(weight=weights[0]), _ref(name="web-green", weight=weights[1])]}]}},
        )  # fmt: skip
    seen: list[int] = []

    def final() -> bool:
        conds = _conditions(_get(custom, ns))
        observed = conds["Accepted"]["observedGeneration"]
        program = kube.loop.call(kube.cluster.gateways.programmed, ns, "web")
        assert program is not None and program.generation >= observed  # status never runs ahead
        seen.append(observed)
        return bool(observed == 3)

    kube.wait_for(final, timeout=PROGRAM_TIMEOUT_S * 2, what="generation 3 programmed")
    assert seen == sorted(seen)
    program = kube.loop.call(kube.cluster.gateways.programmed, ns, "web")
    assert [b.weight for b in program.rules[0].backends] == [0, 100]


def test_httproute_stalled_controller_programs_nothing(
    kube: KubeLab, core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str
) -> None:
    """While a fault rule (target gateway, verb program) is active the route is neither
    programmed nor given a status; once the rule is cleared it is."""
    _setup(core, custom, ns)
    rule = kube.faults.add(FaultRule(target="gateway", verb="program", resource="httproutes", count=-1))
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    time.sleep(4.0)  # twice the programming delay
    assert "status" not in _get(custom, ns)
    assert kube.loop.call(kube.cluster.gateways.programmed, ns, "web") is None
    assert (kube.faults.get(rule.id) or {})["fired"] > 0
    kube.faults.clear("gateway")
    _wait_observed(kube, custom, ns, 1)


def test_httproute_watch_sees_the_controllers_status(
    kube: KubeLab, core: client.CoreV1Api, custom: client.CustomObjectsApi, ns: str
) -> None:
    """A watch on httproutes (the official client's Watch over list_namespaced_custom_object)
    sees ADDED, then MODIFIED with the controller's status."""
    _setup(core, custom, ns)
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, "httproutes", _route())
    events: list[tuple[str, bool]] = []
    w = watch.Watch()
    for event in w.stream(
        custom.list_namespaced_custom_object, GROUP, VERSION, ns, "httproutes", timeout_seconds=8
    ):
        events.append((event["type"], bool((event["object"].get("status") or {}).get("parents"))))
        if events[-1][1]:
            w.stop()
    assert events[0] == ("ADDED", False)
    assert events[-1] == ("MODIFIED", True)
