"""The patch helpers: RFC 7386 merge, RFC 6902 JSON patch and strategic merge, table-driven."""

from __future__ import annotations

from typing import Any

import pytest

from greenlight_lab.kube.patch import PatchError, json_patch, merge_patch, strategic_merge_patch

CONTAINERS = {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": 1, "b": 2}, {"b": None}, {"a": 1}),
        ({"a": {"x": 1}}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}}),
        ({"a": [1, 2]}, {"a": [3]}, {"a": [3]}),
        ({"a": 1}, {"a": {"b": None}}, {"a": {}}),
        (
            CONTAINERS,
            {"spec": {"containers": [{"name": "a", "image": "a:2"}]}},
            {"spec": {"containers": [{"name": "a", "image": "a:2"}]}},
        ),
    ],
)
def test_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    """A merge patch merges objects, deletes on null and replaces lists whole."""
    assert merge_patch(target, patch) == expected


@pytest.mark.parametrize(
    ("target", "ops", "expected"),
    [
        ({"a": 1}, [{"op": "add", "path": "/b", "value": 2}], {"a": 1, "b": 2}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/-", "value": 3}], {"a": [1, 2, 3]}),
        ({"a": [1, 2]}, [{"op": "add", "path": "/a/0", "value": 0}], {"a": [0, 1, 2]}),
        ({"a": 1, "b": 2}, [{"op": "remove", "path": "/a"}], {"b": 2}),
        ({"a": {"b/c": 1}}, [{"op": "replace", "path": "/a/b~1c", "value": 5}], {"a": {"b/c": 5}}),
        ({"a": 1}, [{"op": "move", "from": "/a", "path": "/b"}], {"b": 1}),
        ({"a": [1]}, [{"op": "copy", "from": "/a/0", "path": "/b"}], {"a": [1], "b": 1}),
        (
            {"a": 1},
            [{"op": "test", "path": "/a", "value": 1}, {"op": "replace", "path": "/a", "value": 2}],
            {"a": 2},
        ),
    ],
)
def test_json_patch(target: Any, ops: Any, expected: Any) -> None:
    """JSON patch operations apply in order with RFC 6901 pointers."""
    assert json_patch(target, ops) == expected


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "test", "path": "/a", "value": 2}],
        [{"op": "frobnicate", "path": "/a"}],
        {"op": "add"},
    ],
)
def test_json_patch_refuses_bad_operations(ops: Any) -> None:
    """A JSON patch that cannot apply raises PatchError and changes nothing."""
    target = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(target, ops)
    assert target == {"a": 1}


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        # containers merge by name: one image changes, the other container stays
        (
            CONTAINERS,
            {"spec": {"containers": [{"name": "b", "image": "b:2"}]}},
            {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:2"}]}},
        ),
        # a new container is appended
        (
            CONTAINERS,
            {"spec": {"containers": [{"name": "c", "image": "c:1"}]}},
            {
                "spec": {
                    "containers": [
                        {"name": "a", "image": "a:1"},
                        {"name": "b", "image": "b:1"},
                        {"name": "c", "image": "c:1"},
                    ]
                }
            },
        ),
        # $patch: delete removes by key
        (
            CONTAINERS,
            {"spec": {"containers": [{"name": "a", "$patch": "delete"}]}},
            {"spec": {"containers": [{"name": "b", "image": "b:1"}]}},
        ),
        # env merges by name, null deletes a field inside an item
        (
            {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"env": [{"name": "B", "value": "3"}]},
            {"env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"}]},
        ),
        # container ports merge by containerPort
        (
            {"ports": [{"containerPort": 80, "name": "http"}]},
            {"ports": [{"containerPort": 80, "protocol": "TCP"}]},
            {"ports": [{"containerPort": 80, "name": "http", "protocol": "TCP"}]},
        ),
        # service ports merge by port
        (
            {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https"}]},
            {"ports": [{"port": 443, "targetPort": 8443}]},
            {"ports": [{"port": 80, "name": "http"}, {"port": 443, "name": "https", "targetPort": 8443}]},
        ),
        # lists without a merge key are replaced; maps merge; null deletes
        (
            {"args": ["a"], "labels": {"x": "1", "y": "2"}},
            {"args": ["b"], "labels": {"y": None, "z": "3"}},
            {"args": ["b"], "labels": {"x": "1", "z": "3"}},
        ),
        # $patch: replace on a map replaces it
        (
            {"selector": {"app": "web", "color": "blue"}},
            {"selector": {"color": "green", "$patch": "replace"}},
            {"selector": {"color": "green"}},
        ),
        # kubectl's $setElementOrder reorders merged items
        (
            CONTAINERS,
            {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "a", "image": "a:3"}],
                }
            },
            {"spec": {"containers": [{"name": "b", "image": "b:1"}, {"name": "a", "image": "a:3"}]}},
        ),
        # finalizers merge as a set
        ({"finalizers": ["a"]}, {"finalizers": ["b", "a"]}, {"finalizers": ["a", "b"]}),
    ],
)
def test_strategic_merge_patch(target: Any, patch: Any, expected: Any) -> None:
    """Strategic merge merges keyed lists by their key and honours the $patch directives."""
    assert strategic_merge_patch(target, patch) == expected
