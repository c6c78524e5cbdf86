"""The object store on its own: selectors, metadata, preconditions, watches and speed."""

from __future__ import annotations

import asyncio
import calendar
import time
from typing import Any

import pytest

from greenlight_lab.kube.store import (
    ApiError,
    Store,
    fields_match,
    labels_match,
    name_problem,
    parse_field_selector,
    parse_label_selector,
    rolling_params,
)

LABELS = {"app": "web", "color": "blue", "tier": "front"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app=api", False),
        ("app!=api", True),
        ("missing!=x", True),
        ("color in (blue,green)", True),
        ("color in (green)", False),
        ("color notin (green, red)", True),
        ("missing notin (a)", True),
        ("tier", True),
        ("missing", False),
        ("!missing", True),
        ("!tier", False),
        ("app=web,color in (blue),!missing", True),
        ("app=web,color=green", False),
    ],
)
def test_label_selectors(selector: str, matches: bool) -> None:
    """Every label selector operator holds as in Kubernetes."""
    assert labels_match(parse_label_selector(selector), LABELS) is matches


@pytest.mark.parametrize("selector", ["app=(x", "a in b", "=x", "app=web,!"])
def test_malformed_label_selector_is_bad_request(selector: str) -> None:
    """A malformed selector is a 400 BadRequest naming the selector."""
    with pytest.raises(ApiError) as info:
        parse_label_selector(selector)
    assert info.value.code == 400


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("metadata.name=web", True),
        ("metadata.name!=web", False),
        ("metadata.namespace=prod", True),
        ("metadata.name=web,metadata.namespace=dev", False),
        ("status.phase=Running", True),
    ],
)
def test_field_selectors(selector: str, matches: bool) -> None:
    """Field selectors compare dotted paths with = / == / !=."""
    obj = {"metadata": {"name": "web", "namespace": "prod"}, "status": {"phase": "Running"}}
    assert fields_match(parse_field_selector(selector), obj) is matches


@pytest.mark.parametrize(
    ("plural", "name", "ok"),
    [
        ("pods", "web-1", True),
        ("pods", "web.v1", True),
        ("pods", "Web", False),
        ("pods", "-web", False),
        ("services", "web.v1", False),
        ("namespaces", "a" * 64, False),
        ("configmaps", "a_b", False),
    ],
)
def test_names_are_dns_1123(plural: str, name: str, ok: bool) -> None:
    """Names follow DNS-1123: subdomains for most kinds, labels for namespaces and services."""
    assert (name_problem(plural, name) is None) is ok


@pytest.mark.parametrize(
    ("replicas", "strategy", "expected"),
    [
        (4, {}, (1, 1)),
        (3, {}, (1, 0)),
        (1, {}, (1, 0)),
        (10, {"rollingUpdate": {"maxSurge": 2, "maxUnavailable": "50%"}}, (2, 5)),
        (3, {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}, (0, 1)),
        (3, {"type": "Recreate"}, (0, 3)),
    ],
)
def test_rolling_params_round_like_kubernetes(
    replicas: int, strategy: dict[str, Any], expected: tuple[int, int]
) -> None:
    """maxSurge rounds up, maxUnavailable down, and both zero means one unavailable."""
    assert rolling_params({"spec": {"replicas": replicas, "strategy": strategy}}) == expected


@pytest.fixture
def store() -> Store:
    s = Store("test")
    s.create("namespaces", {"metadata": {"name": "default"}})
    return s


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def test_metadata_is_assigned_and_versions_grow(store: Store) -> None:
    """Create assigns uid, creationTimestamp and a resourceVersion from one growing counter."""
    a = store.create("configmaps", _cm("a"))
    b = store.create("configmaps", _cm("b"))
    assert a["metadata"]["uid"] != b["metadata"]["uid"]
    assert int(b["metadata"]["resourceVersion"]) > int(a["metadata"]["resourceVersion"])
    assert a["kind"] == "ConfigMap" and a["apiVersion"] == "v1" and a["metadata"]["creationTimestamp"]


def test_noop_update_keeps_the_version(store: Store) -> None:
    """Writing back an unchanged object creates no new version (and so no event)."""
    a = store.create("configmaps", _cm("a"))
    again = store.update("configmaps", a)
    assert again["metadata"]["resourceVersion"] == a["metadata"]["resourceVersion"]


def test_stale_update_is_conflict(store: Store) -> None:
    """An update carrying an old resourceVersion is refused with 409 Conflict."""
    a = store.create("configmaps", _cm("a"))
    a["data"] = {"k": "2"}
    store.update("configmaps", a)
    a["data"] = {"k": "3"}
    with pytest.raises(ApiError) as info:
        store.update("configmaps", a)
    assert (info.value.code, info.value.reason) == (409, "Conflict")


def test_generation_bumps_on_spec_changes_only(store: Store) -> None:
    """A Deployment's generation grows when its spec changes, not for labels or status."""
    body = {
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            },
        },
    }
    d = store.create("deployments", body)
    assert d["metadata"]["generation"] == 1
    d["metadata"]["labels"] = {"x": "y"}
    d = store.update("deployments", d)
    assert d["metadata"]["generation"] == 1
    d["status"] = {"replicas": 3}
    d = store.update("deployments", d, subresource="status")
    assert d["metadata"]["generation"] == 1 and d["status"] == {"replicas": 3}
    d["spec"]["replicas"] = 5
    d = store.update("deployments", d)
    assert d["metadata"]["generation"] == 2 and d["status"] == {"replicas": 3}


def test_namespace_delete_takes_its_objects(store: Store) -> None:
    """Deleting a namespace deletes everything in it; creating into a missing namespace is 404."""
    store.create("namespaces", {"metadata": {"name": "tmp"}})
    store.create("configmaps", _cm("a"), "tmp")
    store.delete("namespaces", None, "tmp")
    with pytest.raises(ApiError) as info:
        store.create("configmaps", _cm("a"), "tmp")
    assert info.value.code == 404 and info.value.message == 'namespaces "tmp" not found'


def test_watch_resumes_from_a_resource_version(store: Store) -> None:
    """A watch from a resourceVersion gets exactly the later changes, relabelled for its selector."""

    async def scenario() -> list[tuple[str, str]]:
        a = store.create("configmaps", _cm("a", color="blue"))
        since = store.resource_version
        a["metadata"]["labels"] = {"color": "green"}
        a = store.update("configmaps", a)
        store.create("configmaps", _cm("b", color="blue"))
        store.delete("configmaps", None, "b")
        w = store.watch("configmaps", "default", "color=blue", resource_version=since)
        out = []
        while not w.queue.empty():
            item = w.queue.get_nowait()
            assert item is not None
            event, type_ = item
            out.append((type_, event.obj["metadata"]["name"]))
        return out

    assert asyncio.run(scenario()) == [("DELETED", "a"), ("ADDED", "b"), ("DELETED", "b")]


def test_watch_from_a_forgotten_version_is_expired() -> None:
    """Resuming from a version older than the kept history is 410 Expired."""
    s = Store("test", history=5)
    s.create("namespaces", {"metadata": {"name": "default"}})
    for i in range(10):
        s.create("configmaps", _cm(f"c{i}"))
    with pytest.raises(ApiError) as info:
        s.watch("configmaps", resource_version="1")
    assert info.value.code == 410


def test_thousands_of_objects_and_a_hundred_watchers_stay_fast(store: Store) -> None:
    """5000 writes fanned out to 100 selective watchers, and selector lists over them, stay within seconds."""

    async def scenario() -> tuple[float, float, int]:
        watchers = [
            store.watch("configmaps", "default", f"shard=s{i % 10}", resource_version=store.resource_version)
            for i in range(100)
        ]
        start = time.perf_counter()
        for i in range(5000):
            store.create("configmaps", _cm(f"c{i}", shard=f"s{i % 10}"))
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(20):
            store.list("configmaps", "default", f"shard=s{i % 10}", copy=False)
        list_s = (time.perf_counter() - start) / 20
        return write_s, list_s, sum(w.queue.qsize() for w in watchers)

    write_s, list_s, queued = asyncio.run(scenario())
    assert queued == 5000 * 10
    assert write_s < 4.0, f"5000 creates with 100 watchers took {write_s:.2f}s"
    assert list_s < 0.2, f"a selector list over 5000 objects took {list_s:.3f}s"


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"containers": [{"name": "app", "image": "a:1"}], **spec}}


def _events(store: Store) -> list[tuple[str, str, dict[str, Any]]]:
    seen: list[tuple[str, str, dict[str, Any]]] = []
    store.subscribe(lambda e: seen.append((e.type, e.resource, e.obj)))
    return seen


def test_pod_delete_marks_it_terminating_with_the_default_grace(store: Store) -> None:
    """DELETE of a pod sets deletionTimestamp (now + 30 s default) and deletionGracePeriodSeconds, as MODIFIED."""
    created = store.create("pods", _pod("p"))
    assert created["spec"]["terminationGracePeriodSeconds"] == 30
    seen = _events(store)
    before = time.time()
    out = store.delete("pods", "default", "p")
    meta = out["metadata"]
    assert meta["deletionGracePeriodSeconds"] == 30
    stamp = calendar.timegm(time.strptime(meta["deletionTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
    assert before + 28 <= stamp <= before + 31
    assert int(meta["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert [(t, r) for t, r, _ in seen] == [("MODIFIED", "pods")]
    assert store.get("pods", "default", "p")["metadata"]["deletionTimestamp"] == meta["deletionTimestamp"]
    assert [p["metadata"]["name"] for p in store.list("pods", "default")[0]] == ["p"]


def test_second_pod_delete_is_a_no_op_or_shortens_the_grace(store: Store) -> None:
    """Deleting a terminating pod again changes nothing, unless the grace period is shorter."""
    store.create("pods", _pod("p", terminationGracePeriodSeconds=20))
    first = store.delete("pods", "default", "p")
    assert first["metadata"]["deletionGracePeriodSeconds"] == 20
    assert store.delete("pods", "default", "p") == first
    assert store.delete("pods", "default", "p", grace_period_s=40) == first
    shorter = store.delete("pods", "default", "p", grace_period_s=5)
    assert shorter["metadata"]["deletionGracePeriodSeconds"] == 5
    assert shorter["metadata"]["resourceVersion"] != first["metadata"]["resourceVersion"]
    gone = store.delete("pods", "default", "p", grace_period_s=0)
    assert store.find("pods", "default", "p") is None and gone["metadata"]["name"] == "p"


def test_pod_delete_with_zero_grace_or_when_finished_removes_it_at_once(store: Store) -> None:
    """gracePeriodSeconds 0 (kubectl --force) and pods that Succeeded or Failed are removed at once."""
    store.create("pods", _pod("forced"))
    finished = store.create("pods", _pod("done"))
    finished["status"] = {"phase": "Succeeded"}
    store.update("pods", finished, subresource="status")
    seen = _events(store)
    store.delete("pods", "default", "forced", grace_period_s=0)
    store.delete("pods", "default", "done")
    assert [(t, o["metadata"]["name"]) for t, _, o in seen] == [("DELETED", "forced"), ("DELETED", "done")]
    assert store.list("pods", "default")[0] == []


def test_other_kinds_and_namespace_contents_go_at_once(store: Store) -> None:
    """ConfigMaps are removed at once; a namespace takes its pods, terminating or not, with it at once."""
    store.create("namespaces", {"metadata": {"name": "tmp"}})
    store.create("configmaps", {"metadata": {"name": "c"}}, "tmp")
    store.delete("configmaps", "tmp", "c")
    assert store.find("configmaps", "tmp", "c") is None
    store.create("pods", _pod("a"), "tmp")
    store.create("pods", _pod("b"), "tmp")
    store.delete("pods", "tmp", "a")
    store.delete("namespaces", None, "tmp")
    assert store.find("pods", "tmp", "a") is None and store.find("pods", "tmp", "b") is None


def test_updates_keep_the_deletion_stamp(store: Store) -> None:
    """A PUT without deletionTimestamp (as a client sends it) does not undo a pending deletion."""
    store.create("pods", _pod("p"))
    marked = store.delete("pods", "default", "p")
    body = store.get("pods", "default", "p")
    body["metadata"].pop("deletionTimestamp")
    body["metadata"].pop("deletionGracePeriodSeconds")
    body["metadata"]["labels"] = {"x": "y"}
    updated = store.update("pods", body)
    assert updated["metadata"]["deletionTimestamp"] == marked["metadata"]["deletionTimestamp"]
    assert updated["metadata"]["deletionGracePeriodSeconds"] == 30
    assert updated["metadata"]["labels"] == {"x": "y"}
