"""Conformance of the lab API server with the official Python client (kubernetes 37)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from greenlight_lab.faults import FaultRule

from .conftest import KubeLab, deployment_body, service_body


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def test_discovery_lists_groups_versions_and_short_names(api: client.ApiClient) -> None:
    """/version, /api, /apis and each group version describe the served resources."""
    version = client.VersionApi(api).get_code()
    assert version.major == "1"
    groups = {g.name: g.preferred_version.version for g in client.ApisApi(api).get_api_versions().groups}
    assert groups == {
        "apps": "v1",
        "batch": "v1",
        "autoscaling": "v2",
        "policy": "v1",
        "networking.k8s.io": "v1",
        "gateway.networking.k8s.io": "v1",
        "rbac.authorization.k8s.io": "v1",
        "authorization.k8s.io": "v1",
        "authentication.k8s.io": "v1",
    }
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core["pods"].short_names == ["po"] and core["pods"].namespaced
    assert not core["namespaces"].namespaced and "watch" in core["services"].verbs
    apps = {r.name: r for r in client.AppsV1Api(api).get_api_resources().resources}
    assert apps["deployments"].short_names == ["deploy"] and "deployments/scale" in apps


def test_configmap_crud_and_metadata(core: client.CoreV1Api, ns: str) -> None:
    """A ConfigMap is created, read, listed with kind/apiVersion/resourceVersion, replaced and deleted."""
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}, "data": {"a": "1"}})
    assert cm.metadata.uid and cm.metadata.resource_version and cm.metadata.creation_timestamp
    listed = core.list_namespaced_config_map(ns)
    assert listed.kind == "ConfigMapList" and listed.api_version == "v1" and listed.metadata.resource_version
    assert [c.metadata.name for c in listed.items] == ["cfg"]
    cm.data = {"a": "2"}
    replaced = core.replace_namespaced_config_map("cfg", ns, cm)
    assert replaced.data == {"a": "2"}
    assert int(replaced.metadata.resource_version) > int(cm.metadata.resource_version)
    status = core.delete_namespaced_config_map("cfg", ns)
    assert status["kind"] == "Status" and status["status"] == "Success"
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("cfg", ns)
    assert info.value.status == 404


@pytest.mark.parametrize(
    ("create", "read", "body"),
    [
        (
            "create_namespaced_secret",
            "read_namespaced_secret",
            {"metadata": {"name": "s"}, "stringData": {"password": "x"}},
        ),
        (
            "create_namespaced_service_account",
            "read_namespaced_service_account",
            {"metadata": {"name": "sa"}},
        ),
        (
            "create_namespaced_event",
            "read_namespaced_event",
            {"metadata": {"name": "ev"}, "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Test"},
        ),
        ("create_namespaced_endpoints", "read_namespaced_endpoints", {"metadata": {"name": "manual"}}),
    ],
)
def test_core_store_only_kinds(
    core: client.CoreV1Api, ns: str, create: str, read: str, body: dict[str, Any]
) -> None:
    """Secrets, service accounts, events and endpoints round-trip through the official client."""
    created = getattr(core, create)(ns, body)
    again = getattr(core, read)(body["metadata"]["name"], ns)
    assert again.metadata.uid == created.metadata.uid
    if create == "create_namespaced_secret":
        assert again.data == {"password": "eA=="} and again.type == "Opaque"


def test_other_groups_round_trip(api: client.ApiClient, ns: str) -> None:
    """HPA (autoscaling/v2), PDB (policy/v1), Ingress (networking.k8s.io/v1), ReplicaSet and Job are served."""
    hpa = client.AutoscalingV2Api(api).create_namespaced_horizontal_pod_autoscaler(
        ns,
        {
            "metadata": {"name": "h"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 3,
            },
        },
    )
    assert hpa.spec.max_replicas == 3
    pdb = client.PolicyV1Api(api).create_namespaced_pod_disruption_budget(
        ns,
        {"metadata": {"name": "p"}, "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}}},
    )
    assert pdb.spec.min_available == 1
    ing = client.NetworkingV1Api(api).create_namespaced_ingress(
        ns,
        {
            "metadata": {"name": "i"},
            "spec": {
                "rules": [
                    {
                        "host": "a.example",
                        "http": {
                            "paths": [
                                {
                                    "path": "/",
                                    "pathType": "Prefix",
                                    "backend": {"service": {"name": "web", "port": {"number": 80}}},
                                }
                            ]
                        },
                    }
                ]
            },
        },
    )
    assert ing.spec.rules[0].host == "a.example"
    rs = client.AppsV1Api(api).create_namespaced_replica_set(
        ns,
        {
            "metadata": {"name": "rs"},
            "spec": {
                "selector": {"matchLabels": {"a": "b"}},
                "template": {
                    "metadata": {"labels": {"a": "b"}},
                    "spec": {"containers": [{"name": "c", "image": "i"}]},
                },
            },
        },
    )
    assert rs.metadata.generation == 1
    assert [
        h.metadata.name
        for h in client.AutoscalingV2Api(api)
        .list_horizontal_pod_autoscaler_for_all_namespaces(field_selector=f"metadata.namespace={ns}")
        .items
    ] == ["h"]
    client.NetworkingV1Api(api).delete_namespaced_ingress("i", ns)
    client.PolicyV1Api(api).delete_namespaced_pod_disruption_budget("p", ns)


def test_error_statuses_as_the_client_raises_them(
    core: client.CoreV1Api, apps: client.AppsV1Api, ns: str
) -> None:
    """404 NotFound, 409 AlreadyExists and 422 Invalid come back as Status objects with real messages."""
    with pytest.raises(ApiException) as info:
        apps.read_namespaced_deployment("nope", ns)
    assert info.value.status == 404 and info.value.reason == "Not Found"
    body = _status(info.value)
    assert body["kind"] == "Status" and body["reason"] == "NotFound"
    assert body["message"] == 'deployments.apps "nope" not found'
    core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "dup"}})
    assert info.value.status == 409 and _status(info.value)["reason"] == "AlreadyExists"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map(ns, {"metadata": {"name": "Bad_Name"}})
    assert info.value.status == 422 and _status(info.value)["reason"] == "Invalid"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert info.value.status == 404 and _status(info.value)["message"] == 'namespaces "no-such-ns" not found'


def test_deployment_without_selector_is_422(kube: KubeLab, ns: str) -> None:
    """A Deployment without a selector is 422 Invalid (sent raw: the client refuses it before sending)."""
    body = deployment_body("bad")
    del body["spec"]["selector"]
    answer = httpx.post(f"{kube.url}/apis/apps/v1/namespaces/{ns}/deployments", json=body, timeout=5)
    status = answer.json()
    assert answer.status_code == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith('Deployment.apps "bad" is invalid: spec.selector: Required value')


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda d: d["spec"]["selector"].update(matchLabels={"app": "other"}),
            "spec.template.metadata.labels",
        ),
        (lambda d: d["spec"]["template"]["spec"].update(containers=[]), "spec.template.spec.containers"),
    ],
)
def test_invalid_deployments_are_422(apps: client.AppsV1Api, ns: str, mutate: Any, field: str) -> None:
    """A Deployment without a selector matching its template, or without containers, is 422 Invalid."""
    body = deployment_body("bad")
    mutate(body)
    with pytest.raises(ApiException) as info:
        apps.create_namespaced_deployment(ns, body)
    status = _status(info.value)
    assert info.value.status == 422 and status["reason"] == "Invalid"
    assert field in [c["field"] for c in status["details"]["causes"]]


def test_service_without_ports_is_422(core: client.CoreV1Api, ns: str) -> None:
    """A ClusterIP Service needs ports; a valid one gets a 10.96.x.y clusterIP."""
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service(ns, {"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"}}})
    assert info.value.status == 422
    svc = core.create_namespaced_service(ns, service_body("s", {"a": "b"}))
    assert svc.spec.cluster_ip.startswith("10.96.")


def test_generate_name(core: client.CoreV1Api, ns: str) -> None:
    """generateName gets a random five-character suffix."""
    cm = core.create_namespaced_config_map(ns, {"metadata": {"generateName": "run-"}})
    assert cm.metadata.name.startswith("run-") and len(cm.metadata.name) == 9


def test_stale_put_and_patch_are_conflicts(core: client.CoreV1Api, ns: str) -> None:
    """A PUT or a patch carrying a stale resourceVersion is 409 Conflict; a fresh one passes."""
    cm = core.create_namespaced_config_map(ns, {"metadata": {"name": "c"}, "data": {"v": "1"}})
    stale = cm.metadata.resource_version
    core.patch_namespaced_config_map("c", ns, {"data": {"v": "2"}})
    cm.data = {"v": "3"}
    with pytest.raises(ApiException) as info:
        core.replace_namespaced_config_map("c", ns, cm)
    assert info.value.status == 409 and _status(info.value)["reason"] == "Conflict"
    with pytest.raises(ApiException) as info:
        core.patch_namespaced_config_map(
            "c", ns, {"metadata": {"resourceVersion": stale}, "data": {"v": "4"}}
        )
    assert info.value.status == 409
    fresh = core.read_namespaced_config_map("c", ns).metadata.resource_version
    patched = core.patch_namespaced_config_map(
        "c", ns, {"metadata": {"resourceVersion": fresh}, "data": {"v": "5"}}
    )
    assert patched.data == {"v": "5"}


def test_three_patch_types(apps: client.AppsV1Api, ns: str) -> None:
    """Strategic merge (the client's default) keeps sibling containers; merge patch replaces the list;
    JSON patch edits one path."""
    body = deployment_body("p", replicas=0)
    body["spec"]["template"]["spec"]["containers"].append({"name": "side", "image": "side:1"})
    apps.create_namespaced_deployment(ns, body)
    d = apps.patch_namespaced_deployment(
        "p",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "ghcr.io/acme/app:v2"}]}}}},
    )
    assert [(c.name, c.image) for c in d.spec.template.spec.containers] == [
        ("app", "ghcr.io/acme/app:v2"),
        ("side", "side:1"),
    ]
    d = apps.patch_namespaced_deployment(
        "p", ns, [{"op": "replace", "path": "/spec/template/spec/containers/1/image", "value": "side:2"}]
    )
    assert d.spec.template.spec.containers[1].image == "side:2"
    d = apps.patch_namespaced_deployment(
        "p",
        ns,
        {"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "o:1"}]}}}},
        _content_type="application/merge-patch+json",
    )
    assert [c.name for c in d.spec.template.spec.containers] == ["only"]
    d = apps.patch_namespaced_deployment(
        "p",
        ns,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [{"name": "only", "$patch": "delete"}, {"name": "app", "image": "a:1"}]
                    }
                }
            }
        },
    )
    assert [c.name for c in d.spec.template.spec.containers] == ["app"]


def test_selectors_and_all_namespace_lists(core: client.CoreV1Api, ns: str) -> None:
    """Label and field selectors filter lists, and /api/v1/configmaps lists across namespaces."""
    for name, color in (("a", "blue"), ("b", "green"), ("c", "blue")):
        core.create_namespaced_config_map(
            ns, {"metadata": {"name": name, "labels": {"color": color, "app": "x"}}}
        )

    def names(**kw: Any) -> list[str]:
        return [c.metadata.name for c in core.list_namespaced_config_map(ns, **kw).items]

    assert names(label_selector="color=blue") == ["a", "c"]
    assert names(label_selector="color!=blue") == ["b"]
    assert names(label_selector="color in (green,red),app") == ["b"]
    assert names(label_selector="color notin (blue)") == ["b"]
    assert names(label_selector="!color") == []
    assert names(field_selector="metadata.name=c") == ["c"]
    everywhere = core.list_config_map_for_all_namespaces(label_selector="app=x")
    assert {(c.metadata.namespace, c.metadata.name) for c in everywhere.items} == {
        (ns, "a"),
        (ns, "b"),
        (ns, "c"),
    }


def test_watch_streams_added_modified_deleted(core: client.CoreV1Api, ns: str) -> None:
    """kubernetes.watch.Watch gets the initial ADDED, then MODIFIED and DELETED, for a field selector."""
    core.create_namespaced_config_map(ns, {"metadata": {"name": "w"}, "data": {"v": "0"}})
    core.create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    seen: list[tuple[str, str]] = []

    def changes() -> None:
        time.sleep(0.3)
        core.patch_namespaced_config_map("w", ns, {"data": {"v": "1"}})
        core.patch_namespaced_config_map("other", ns, {"data": {"v": "1"}})
        core.delete_namespaced_config_map("w", ns)

    threading.Thread(target=changes, daemon=True).start()
    w = watch.Watch()
    for event in w.stream(
        core.list_namespaced_config_map, ns, field_selector="metadata.name=w", timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_from_a_resource_version_and_timeout(core: client.CoreV1Api, ns: str) -> None:
    """A watch from a list's resourceVersion sends only later changes and ends at timeoutSeconds."""
    core.create_namespaced_config_map(ns, {"metadata": {"name": "before"}})
    rv = core.list_namespaced_config_map(ns).metadata.resource_version
    core.create_namespaced_config_map(ns, {"metadata": {"name": "after"}})
    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=1, _request_timeout=5
        )
    ]
    assert events == [("ADDED", "after")]
    assert 0.9 < time.monotonic() - started < 4


def test_scale_subresource(apps: client.AppsV1Api, ns: str) -> None:
    """patch/read_namespaced_deployment_scale read and change spec.replicas via autoscaling/v1 Scale."""
    apps.create_namespaced_deployment(ns, deployment_body("s", replicas=1))
    scale = apps.patch_namespaced_deployment_scale("s", ns, {"spec": {"replicas": 4}})
    assert scale.kind == "Scale" and scale.spec.replicas == 4
    assert apps.read_namespaced_deployment("s", ns).spec.replicas == 4
    scale = apps.read_namespaced_deployment_scale("s", ns)
    assert scale.status.selector == "app=s"
    scale.spec.replicas = 0
    assert apps.replace_namespaced_deployment_scale("s", ns, scale).spec.replicas == 0


def test_status_subresource_and_generation(apps: client.AppsV1Api, ns: str) -> None:
    """Status writes go through /status only; spec changes bump generation, label changes do not."""
    apps.create_namespaced_deployment(ns, deployment_body("g", replicas=0, paused=True))
    d = apps.patch_namespaced_deployment(
        "g", ns, {"metadata": {"labels": {"x": "y"}}, "status": {"replicas": 9}}
    )
    assert d.metadata.generation == 1 and (d.status.replicas or 0) != 9
    d = apps.patch_namespaced_deployment_status("g", ns, {"status": {"collisionCount": 2}})
    assert d.status.collision_count == 2 and d.metadata.generation == 1
    d = apps.patch_namespaced_deployment("g", ns, {"spec": {"replicas": 2}})
    assert d.metadata.generation == 2


def test_observed_generation_follows(kube: KubeLab, apps: client.AppsV1Api, ns: str) -> None:
    """The controller reports observedGeneration equal to generation after a spec change."""
    apps.create_namespaced_deployment(ns, deployment_body("og", replicas=1))
    apps.patch_namespaced_deployment("og", ns, {"spec": {"replicas": 2}})
    kube.wait_for(
        lambda: apps.read_namespaced_deployment("og", ns).status.observed_generation == 2,
        what="observedGeneration 2",
    )


def test_error_faults_for_the_next_n_calls(kube: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """An error fault answers its status (with Retry-After) for the next N matching calls only.

    (500, not 503: urllib3 under the client silently retries a 503 that carries Retry-After.)"""
    kube.faults.add(
        FaultRule(
            target="kube-primary", verb="list", resource="configmaps", status=500, count=2, retry_after=2
        )
    )
    for _ in range(2):
        with pytest.raises(ApiException) as info:
            core.list_namespaced_config_map(ns)
        assert info.value.status == 500 and info.value.headers["Retry-After"] == "2"
        assert _status(info.value)["reason"] == "InternalError"
    core.list_namespaced_config_map(ns)
    core.list_namespaced_pod(ns)


def test_stall_faults_delay_then_answer(kube: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """A stall fault holds the call, then answers it normally."""
    kube.faults.add(
        FaultRule(target="kube-primary", verb="get", resource="namespaces", mode="stall", stall_s=0.5)
    )
    started = time.monotonic()
    assert core.read_namespace(ns).metadata.name == ns
    assert time.monotonic() - started >= 0.5


def test_faults_of_the_other_cluster_do_not_apply(kube: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """A fault for kube-dr leaves kube-primary alone."""
    kube.faults.add(FaultRule(target="kube-dr", status=500, count=-1))
    assert core.read_namespace(ns).metadata.name == ns


def test_pod_log(kube: KubeLab, core: client.CoreV1Api, ns: str) -> None:
    """pods/{name}/log answers a short text naming the image and the state."""
    core.create_namespaced_pod(
        ns,
        {
            "metadata": {"name": "lp"},
            "spec": {"containers": [{"name": "c", "image": "ghcr.io/acme/unknown:v1"}]},
        },
    )
    kube.wait_for(lambda: kube.runtime.status(f"lab-primary/{ns}/lp"), what="pod started")
    text = core.read_namespaced_pod_log("lp", ns)
    assert "image=ghcr.io/acme/unknown:v1" in text and "phase=" in text
