"""The pure decisions of config-restore: which bundles are refused, what is compared, what is written."""

from __future__ import annotations

import json
from typing import Any

import pytest

from greenlight.core.restore import (
    RESTORED_WITHOUT_VALUES,
    BundleObject,
    Observed,
    Owner,
    check_bundle_objects,
    check_owner,
    choose_bundle,
    comparable,
    decide,
    decide_secret,
    field_diff,
    hpa_targets,
    index_path_problems,
    keep_live_traffic,
    object_problems,
    restore_body,
    skip_reason,
    summary,
    update_body,
)
from greenlight.errors import BackupInvalid, NotFound

OWNER = Owner("production", "sma-production", "lab-primary")


def entry(path: str, kind: str, name: str) -> dict[str, Any]:
    return {"path": path, "kind": kind, "name": name, "size": 1, "sha256": "0" * 64}


@pytest.mark.parametrize(
    ("index", "refused", "notes"),
    [
        ({"environment": "production", "namespace": "sma-production", "cluster": "lab-primary"}, None, 0),
        ({"environment": "production", "namespace": "sma-production"}, None, 1),  # written before `cluster`
        ({"environment": "staging", "namespace": "sma-production", "cluster": "lab-primary"}, "environment 'staging'", 0),
        ({"environment": "production", "namespace": "sma-staging", "cluster": "lab-primary"}, "namespace 'sma-staging'", 0),
        ({"environment": "production", "namespace": "sma-production", "cluster": "lab-dr"}, "cluster 'lab-dr'", 0),
        ({"namespace": "sma-production", "cluster": "lab-primary"}, "which environment", 0),
        ({"environment": "production"}, "which namespace", 0),
    ],
)  # fmt: skip
def test_owner_check_refuses_another_environments_bundle(
    index: dict[str, Any], refused: str | None, notes: int
) -> None:
    """A bundle whose index names another environment, namespace or cluster (or none) is foreign; one without
    a cluster is checked by environment and namespace, with a note."""
    if refused is None:
        assert len(check_owner(index, OWNER)) == notes
        return
    with pytest.raises(BackupInvalid, match="foreign config bundle") as e:
        check_owner(index, OWNER)
    assert refused in str(e.value)


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ([entry("configmaps/a.json", "ConfigMap", "a")], None),
        ([entry("../configmaps/a.json", "ConfigMap", "a")], "has a '..' component: it is outside the bundle"),
        ([entry("/etc/a.json", "ConfigMap", "a")], "is absolute"),
        ([entry("roles/a.json", "Role", "a")], "kind 'Role' is not one config-backup exports"),
        ([entry("secrets/a.json", "ConfigMap", "a")], "belongs at configmaps/a.json"),
        ([{"path": "configmaps/a.json"}], "entry 0 lacks path"),
    ],
)
def test_index_paths_stay_inside_the_bundle_where_the_backup_puts_each_kind(
    files: list[Any], problem: str | None
) -> None:
    """An index entry outside the bundle, of a kind the backup does not export, or misplaced is a problem."""
    problems = index_path_problems({"files": files})
    assert (problems == []) if problem is None else any(problem in p for p in problems), problems


def obj(kind: str, name: str, **extra: Any) -> dict[str, Any]:
    api = {"Secret": "v1", "ConfigMap": "v1", "Service": "v1", "Deployment": "apps/v1"}[kind]
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, **extra.pop("meta", {})}, **extra}


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (obj("ConfigMap", "a", data={"x": "1"}), None),
        (obj("ConfigMap", "a", meta={"namespace": "sma-production"}), None),
        (b"{not json", "not valid JSON"),
        (["a list"], "not a JSON object"),
        (obj("ConfigMap", "a", meta={"namespace": "kube-system"}), "an object of namespace 'kube-system'"),
        (obj("ConfigMap", "b"), "metadata.name is not 'a'"),
        (
            {**obj("ConfigMap", "a"), "kind": "ClusterRole"},
            "kind 'ClusterRole' is not one config-backup exports",
        ),
        ({**obj("ConfigMap", "a"), "apiVersion": "v2"}, "apiVersion is not v1"),
        (obj("Secret", "a", keys=["k"]), "holds a Secret, index.json says ConfigMap"),
    ],
)
def test_each_object_is_the_kind_name_and_namespace_its_index_says(body: Any, problem: str | None) -> None:
    """Unparsable JSON, another kind, name or namespace than the index's: a problem naming the file."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    _, problems = object_problems(
        "configmaps/a.json", entry("configmaps/a.json", "ConfigMap", "a"), raw, "sma-production"
    )
    if problem is None:
        assert problems == []
    else:
        assert any(p.startswith("configmaps/a.json: ") and problem in p for p in problems), problems


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        (obj("Secret", "s", type="Opaque", keys=["password"]), None),
        (
            obj("Secret", "s", type="Opaque", keys=["password"], data={"password": "aHVudGVyMg=="}),
            "holding values",
        ),
        (obj("Secret", "s", type="Opaque", stringData={"password": "hunter2"}, keys=[]), "holding values"),
        (obj("Secret", "s", type="Opaque"), "without its list of keys"),
    ],
)
def test_a_secret_in_a_bundle_holds_keys_and_never_a_value(
    secret: dict[str, Any], problem: str | None
) -> None:
    """A Secret file with data or stringData is refused, and the refusal quotes no value."""
    raw = json.dumps(secret).encode()
    _, problems = object_problems("secrets/s.json", entry("secrets/s.json", "Secret", "s"), raw, "ns")
    assert (problems == []) if problem is None else any(problem in p for p in problems)
    assert not any("hunter2" in p or "aHVudGVyMg" in p for p in problems)


def test_check_bundle_objects_names_every_bad_file_and_orders_secrets_first() -> None:
    """All problems are named at once; a good bundle comes back in restore order (Secrets, ConfigMaps, ...)."""
    good = {
        "deployments/web.json": obj("Deployment", "web"),
        "secrets/s.json": obj("Secret", "s", keys=[]),
        "configmaps/c.json": obj("ConfigMap", "c"),
    }
    index = {"files": [entry(p, o["kind"], o["metadata"]["name"]) for p, o in good.items()]}
    files = {p: json.dumps(o).encode() for p, o in good.items()}
    assert [o.plural for o in check_bundle_objects(index, files, "ns")] == [
        "secrets",
        "configmaps",
        "deployments",
    ]
    files["configmaps/c.json"] = b"{"
    files["secrets/s.json"] = json.dumps(obj("Secret", "s", keys=[], meta={"namespace": "other"})).encode()
    with pytest.raises(BackupInvalid) as e:
        check_bundle_objects(index, files, "ns")
    assert "configmaps/c.json: not valid JSON" in str(
        e.value
    ) and "secrets/s.json: an object of namespace" in str(e.value)


@pytest.mark.parametrize(
    ("stamps", "wanted", "got"),
    [
        (["20261130T023000.000Z", "20261201T023000.000Z"], None, "20261201T023000.000Z"),
        (["20261130T023000.000Z", "20261201T023000.000Z"], "20261130T023000.000Z", "20261130T023000.000Z"),
        (["20261130T023000.000Z"], "config/production/20261130T023000.000Z/", "20261130T023000.000Z"),
        (["20261130T023000.000Z"], "20261129T000000.000Z", "the most recent: 20261130T023000.000Z"),
        ([], None, "no complete config bundle"),
        ([f"2026110{d}T000000.000Z" for d in range(1, 8)], "x", "20261107T000000.000Z, 20261106T000000.000Z, 20261105T000000.000Z, 20261104T000000.000Z, 20261103T000000.000Z (and 2 older)"),
    ],
)  # fmt: skip
def test_choose_bundle_takes_the_newest_or_the_named_one(
    stamps: list[str], wanted: str | None, got: str
) -> None:
    """No name: the newest; a name that is not a complete bundle: NotFound naming the most recent ones."""
    if got.startswith("2") and "," not in got:
        assert choose_bundle(stamps, wanted, "gs://b/config/production/") == got
        return
    with pytest.raises(NotFound) as e:
        choose_bundle(stamps, wanted, "gs://b/config/production/")
    assert got in str(e.value)


LIVE_SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "web", "namespace": "ns", "uid": "u-1", "resourceVersion": "42", "creationTimestamp": "2026-12-01T00:00:00Z",
        "managedFields": [{"manager": "kubectl"}], "labels": {"app": "web"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "team": "a"},
    },
    "spec": {"selector": {"app": "web"}, "clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"], "type": "NodePort",
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]},
    "status": {"loadBalancer": {}},
}  # fmt: skip


def test_comparable_drops_what_the_server_manages() -> None:
    """uid, resourceVersion, creationTimestamp, managedFields, last-applied, clusterIP(s) and status are not compared."""
    got = comparable(LIVE_SERVICE)
    assert got["metadata"] == {
        "name": "web",
        "namespace": "ns",
        "labels": {"app": "web"},
        "annotations": {"team": "a"},
    }
    assert "status" not in got and "clusterIP" not in got["spec"] and "clusterIPs" not in got["spec"]
    assert got["spec"]["ports"][0]["nodePort"] == 30080


def bundled(kind: str, name: str, body: dict[str, Any]) -> BundleObject:
    plural = {"Service": "services", "Secret": "secrets", "Deployment": "deployments", "ConfigMap": "configmaps",
              "HorizontalPodAutoscaler": "horizontalpodautoscalers"}[kind]  # fmt: skip
    return BundleObject(f"{plural}/{name}.json", plural, kind, name, body)


EXPORTED_SERVICE = {
    "apiVersion": "v1", "kind": "Service",
    "metadata": {"name": "web", "namespace": "sma-production", "labels": {"app": "web"}, "annotations": {"team": "a"}},
    "spec": {"selector": {"app": "web"}, "type": "NodePort",
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]},
}  # fmt: skip


@pytest.mark.parametrize(("same", "node_port"), [(True, 30080), (False, None)])
def test_restore_body_rewrites_the_namespace_and_keeps_node_ports_only_at_home(
    same: bool, node_port: int | None
) -> None:
    """The target namespace replaces the exported one; node ports (cluster-wide) are kept only in the bundle's own namespace."""
    body = restore_body(bundled("Service", "web", EXPORTED_SERVICE), "target", same)
    assert body["metadata"] == {
        "name": "web",
        "namespace": "target",
        "labels": {"app": "web"},
        "annotations": {"team": "a"},
    }
    assert body["spec"]["ports"][0].get("nodePort") == node_port


def test_update_body_keeps_what_the_cluster_assigned() -> None:
    """Written over the live Service: its resourceVersion, uid, cluster IPs and the cluster's annotations stay."""
    desired = restore_body(bundled("Service", "web", EXPORTED_SERVICE), "ns", False)
    body = update_body(desired, LIVE_SERVICE)
    assert body["metadata"]["resourceVersion"] == "42" and body["metadata"]["uid"] == "u-1"
    assert "managedFields" not in body["metadata"]
    assert body["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == "{}"
    controller = {
        **LIVE_SERVICE,
        "metadata": {**LIVE_SERVICE["metadata"], "annotations": {"team": "b", "ctl/x": "1"}},
    }
    assert update_body(desired, controller)["metadata"]["annotations"] == {"team": "a", "ctl/x": "1"}
    assert body["spec"]["clusterIP"] == "10.0.0.7" and body["spec"]["ports"][0]["nodePort"] == 30080
    assert field_diff(comparable(LIVE_SERVICE), comparable(body)) == []


def test_a_deployment_an_hpa_scales_keeps_its_live_replicas() -> None:
    """The replicas of a Deployment an HPA of the bundle scales are the HPA's: kept from the live object."""
    hpa = bundled(
        "HorizontalPodAutoscaler", "web", {"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}}}
    )
    assert hpa_targets([hpa]) == {"web"}
    desired = {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 2}}
    live = {
        "kind": "Deployment",
        "metadata": {"name": "web", "resourceVersion": "3"},
        "spec": {"replicas": 5},
    }
    assert update_body(desired, live, keep_replicas=True)["spec"]["replicas"] == 5
    assert update_body(desired, live)["spec"]["replicas"] == 2


def service(selector: dict[str, str]) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": selector}}


def route(*rules: list[tuple[str, int | None]]) -> dict[str, Any]:
    refs = [
        [{"name": n, "port": 80, **({} if w is None else {"weight": w})} for n, w in rule] for rule in rules
    ]
    return {
        "kind": "HTTPRoute",
        "metadata": {"name": "web"},
        "spec": {"rules": [{"backendRefs": r} for r in refs]},
    }


BLUE, GREEN = {"app": "web", "color": "blue"}, {"app": "web", "color": "green"}


@pytest.mark.parametrize(
    ("bundle", "live", "restored", "kept"),
    [
        # a Service: the colour it selects is the cluster's; the rest of its selector is the bundle's
        (service(BLUE), service(GREEN), service(GREEN), ["selector color=green (the bundle has blue)"]),
        (service(GREEN), service(GREEN), service(GREEN), []),
        (service({"app": "web", "color": "blue", "tier": "x"}), service(GREEN),
         service({"app": "web", "color": "green", "tier": "x"}), ["selector color=green (the bundle has blue)"]),
        # a Service without the colour label on one side is not a blue-green Service: the bundle's
        (service({"app": "web"}), service(GREEN), service({"app": "web"}), []),
        (service(BLUE), service({"app": "web"}), service(BLUE), []),
        # an HTTPRoute: the weights are the cluster's where a rule names the same backends
        (route([("web-blue", 100), ("web-green", 0)]), route([("web-blue", 0), ("web-green", 100)]),
         route([("web-blue", 0), ("web-green", 100)]),
         ["rules[0] web-blue weight 0 (the bundle has 100)", "rules[0] web-green weight 100 (the bundle has 0)"]),
        (route([("web-green", 0), ("web-blue", 100)]), route([("web-blue", 100), ("web-green", 0)]),
         route([("web-green", 0), ("web-blue", 100)]), []),
        # a missing weight is 1 (Gateway API's default), on either side
        (route([("web-blue", 1), ("web-green", 0)]), route([("web-blue", None), ("web-green", 0)]),
         route([("web-blue", None), ("web-green", 0)]), []),
        (route([("web-blue", None), ("web-green", 0)]), route([("web-blue", 90), ("web-green", 10)]),
         route([("web-blue", 90), ("web-green", 10)]),
         ["rules[0] web-blue weight 90 (the bundle has 1)", "rules[0] web-green weight 10 (the bundle has 0)"]),
        # a rule whose backends differ, and a rule the cluster lacks: the bundle's
        (route([("web-blue", 100), ("web-green", 0)]), route([("web-blue", 0), ("web-canary", 100)]),
         route([("web-blue", 100), ("web-green", 0)]), []),
        (route([("a", 0), ("b", 100)], [("c", 100), ("d", 0)]), route([("a", 100), ("b", 0)]),
         route([("a", 100), ("b", 0)], [("c", 100), ("d", 0)]),
         ["rules[0] a weight 100 (the bundle has 0)", "rules[0] b weight 0 (the bundle has 100)"]),
        # other kinds are the bundle's whole
        ({"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"color": "blue"}},
         {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"color": "green"}},
         {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"color": "blue"}}, []),
    ],
)  # fmt: skip
def test_a_restore_keeps_where_live_traffic_goes(
    bundle: dict[str, Any], live: dict[str, Any], restored: dict[str, Any], kept: list[str]
) -> None:
    """A restore writes configuration, never moves traffic: the live colour of a Service and the live
    weights of an HTTPRoute stay, and what the bundle would have changed is said."""
    body = json.loads(json.dumps(bundle))
    assert keep_live_traffic(body, live, "color") == kept
    assert body == restored


def test_update_body_keeps_live_traffic_only_when_told_the_colour_label() -> None:
    """``update_body`` keeps the live colour with ``colour_label`` (config-restore passes the profile's),
    and writes the bundle's without (the DR drill, into its own namespace)."""
    assert update_body(service(BLUE), service(GREEN), colour_label="color")["spec"]["selector"] == GREEN
    assert update_body(service(BLUE), service(GREEN))["spec"]["selector"] == BLUE


@pytest.mark.parametrize(
    ("before", "after", "lines"),
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, ["a: 1 -> 2"]),
        ({"a": 1}, {}, ["a: 1 -> (unset)"]),
        ({}, {"a": {"b": "x"}}, ['a: (unset) -> {"b": "x"}']),
        ({"c": [{"name": "web", "image": "a:1"}, {"name": "side", "image": "s"}]},
         {"c": [{"name": "side", "image": "s"}, {"name": "web", "image": "a:2"}]}, ['c[web].image: "a:1" -> "a:2"']),
        ({"c": [{"name": "a"}, {"name": "b"}]}, {"c": [{"name": "b"}, {"name": "a"}]}, ['c (order): ["a", "b"] -> ["b", "a"]']),
        ({"c": [{"name": "a"}]}, {"c": [{"name": "a"}, {"name": "b"}]}, ['c[b]: (unset) -> {"name": "b"}']),
        ({"args": ["-v", "-x"]}, {"args": ["-v", "-y"]}, ['args[1]: "-x" -> "-y"']),
        ({"args": ["-v"]}, {"args": ["-v", "-y"]}, ['args: ["-v"] -> ["-v", "-y"]']),
    ],
)  # fmt: skip
def test_field_diff_names_each_changed_field(before: Any, after: Any, lines: list[str]) -> None:
    """Leaves by path; named list items (containers, ports, env) by name; other lists by position or whole."""
    assert [c.line() for c in field_diff(before, after)] == lines


def test_decide_create_update_unchanged_from_the_dry_run_answer() -> None:
    """Missing: create. The dry-run answer equal to live once server fields are gone: unchanged (defaults the
    server adds are in both). Different: update with the fields."""
    o = bundled("Service", "web", EXPORTED_SERVICE)
    body = restore_body(o, "ns", True)
    assert decide(o, body, Observed(None, None, body)).action == "create"
    defaulted = {**LIVE_SERVICE, "metadata": {**LIVE_SERVICE["metadata"], "resourceVersion": "43"}}
    assert decide(o, body, Observed(LIVE_SERVICE, "42", defaulted)).action == "unchanged"
    moved = {**defaulted, "spec": {**defaulted["spec"], "selector": {"app": "web", "color": "blue"}}}
    item = decide(o, body, Observed(LIVE_SERVICE, "42", moved))
    assert item.action == "update" and item.resource_version == "42"
    assert [c.line() for c in item.changes] == ['spec.selector.color: (unset) -> "blue"']


@pytest.mark.parametrize(
    ("live_keys", "action", "keys", "detail"),
    [
        (None, "create-without-values", ("password", "user"), "fill in keys password, user"),
        (["password", "user"], "left-alone", (), "exists: never overwritten"),
        (
            ["password"],
            "left-alone",
            ("user",),
            "exists: never overwritten; lacks key(s) the bundle has: user",
        ),
    ],
)
def test_secrets_are_created_without_values_or_left_alone(
    live_keys: list[str] | None, action: str, keys: tuple[str, ...], detail: str
) -> None:
    """A missing Secret is created with its keys and empty values; an existing one is never written."""
    o = bundled("Secret", "db", {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "type": "Opaque",
                                 "keys": ["user", "password"]})  # fmt: skip
    body = restore_body(o, "ns", True)
    assert body["data"] == {"password": "", "user": ""}
    assert body["metadata"]["annotations"][RESTORED_WITHOUT_VALUES] == "password,user"
    item = decide_secret(o, body, live_keys)
    assert (item.action, item.keys, item.detail) == (action, keys, detail)
    assert item.writes == (action == "create-without-values")
    assert (item.body is None) == (action == "left-alone")


@pytest.mark.parametrize(
    ("kind", "name", "body", "skipped"),
    [
        ("ConfigMap", "kube-root-ca.crt", {}, True),
        ("ConfigMap", "app", {}, False),
        ("Secret", "sa-token", {"type": "kubernetes.io/service-account-token"}, True),
        ("Secret", "db", {"type": "Opaque"}, False),
    ],
)
def test_what_each_cluster_makes_itself_is_not_restored(
    kind: str, name: str, body: dict[str, Any], skipped: bool
) -> None:
    """kube-root-ca.crt and service-account tokens are the cluster's own: left out."""
    assert (skip_reason(bundled(kind, name, body)) is not None) == skipped


@pytest.mark.parametrize(
    ("counts", "text"),
    [
        ({"create": 1, "update": 2, "unchanged": 3}, "1 created, 2 changed, 3 left alone"),
        ({"create-without-values": 1, "left-alone": 1, "unchanged": 1},
         "1 created, 0 changed, 2 left alone (1 Secret(s) created without values; 1 existing Secret(s) never overwritten)"),
    ],
)  # fmt: skip
def test_summary_counts_created_changed_and_left_alone(counts: dict[str, int], text: str) -> None:
    """The outcome line's counts."""
    assert summary(counts) == text
