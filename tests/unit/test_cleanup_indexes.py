"""Image cleanup and multi-platform images: the platform manifests of a kept index stay, those of a
deleted one go with it, and a kept manifest that cannot be read stops every untagged delete."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from greenlight.core.cleanup import PackageVersion, index_children, plan_cleanup

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def version(n: int, age_days: float, tags: tuple[str, ...] = ()) -> PackageVersion:
    return PackageVersion(id=n, digest=digest(n), tags=tags, created_at=NOW - timedelta(days=age_days))


def plan(versions, indexes, unreadable=None, protected=None, keep_newest=1):
    return plan_cleanup(
        "ghcr.io/o/app",
        versions,
        protected or {},
        30,
        keep_newest,
        NOW,
        indexes=indexes,
        unreadable=unreadable,
    )


def actions(p):
    return {v.version.id: (v.action, "; ".join(v.reasons)) for v in p.verdicts}


# Each case: versions, protected digests, indexes (id -> child ids; an id absent was not given),
# unreadable ids, keep_newest, and the expected action per id with a fragment of its reasons.
# Ids 1..9 are tagged images or indexes, 10+ untagged platform manifests.
CASES = [
    pytest.param(
        [version(1, 1, ("new",)), version(2, 200, ("live",)), version(10, 200), version(11, 200)],
        {digest(2): ["live in production (app-blue)"]},
        {1: [], 2: [10, 11], 10: [], 11: []}, {}, 1,
        {2: ("keep", "live in production"),
         10: ("keep", f"platform manifest of {digest(2)[:19]} (kept: live in production (app-blue))"),
         11: ("keep", "platform manifest of")},
        id="live-index-keeps-its-old-children",
    ),
    pytest.param(
        [version(1, 1, ("new",)), version(3, 90, ("old",)), version(12, 90), version(13, 90)],
        {}, {1: []}, {}, 1,
        {3: ("delete", "older than"), 12: ("delete", "older than"), 13: ("delete", "older than")},
        id="a-deleted-index-children-go-with-it",
    ),
    pytest.param(
        [version(1, 1, ("new",)), version(2, 200, ("live",)), version(3, 90, ("old",)),
         version(10, 200), version(11, 200), version(12, 90)],
        {digest(2): ["live in production (app-blue)"]},
        {1: [], 2: [10, 11], 10: [], 11: []}, {}, 1,
        {3: ("delete", "older than"), 10: ("keep", "platform manifest of"), 11: ("keep", "platform manifest of"),
         12: ("delete", "older than")},
        id="a-child-shared-with-a-kept-index-stays",
    ),
    pytest.param(
        [version(1, 1, ("new",)), version(10, 1), version(11, 1), version(4, 2, ("second",)),
         version(5, 90, ("old",))],
        {}, {1: [10, 11], 4: [], 10: [], 11: []}, {}, 2,
        {1: ("keep", "among the 2 newest"), 10: ("keep", "platform manifest of"),
         4: ("keep", "among the 2 newest"), 5: ("delete", "older than")},
        id="children-are-not-counted-among-the-newest",
    ),
    pytest.param(
        [version(1, 1, ("new",)), version(2, 200, ("live",)), version(3, 90, ("old",)),
         version(12, 90), version(13, 95)],
        {digest(2): ["live in production (app-blue)"]},
        {1: []}, {2: "HTTP 503"}, 1,
        {2: ("keep", "live in production"), 3: ("delete", "older than"),
         12: ("keep", "untagged, not deleted: the manifest of kept"),
         13: ("keep", "could not be read (HTTP 503)")},
        id="an-unreadable-kept-manifest-stops-untagged-deletes",
    ),
    pytest.param(
        [version(1, 1, ("new",)), version(2, 200, ("live",)), version(10, 200), version(11, 200),
         version(12, 200)],
        {digest(2): ["live in production (app-blue)"]},
        {1: [], 2: [10], 10: [11], 11: [], 12: []}, {}, 1,
        {10: ("keep", "platform manifest of"), 11: ("keep", f"platform manifest of {digest(10)[:19]}"),
         12: ("delete", "older than")},
        id="a-nested-index-keeps-its-children-too",
    ),
    pytest.param(
        [version(1, 1, ("new",)), version(2, 200, ("live",)), version(10, 200),
         version(20, 200, (f"sha256-{digest(10)[7:]}.sig",)), version(21, 200, (f"sha256-{digest(12)[7:]}.sig",)),
         version(12, 90)],
        {digest(2): ["live in production (app-blue)"]},
        {1: [], 2: [10], 10: []}, {}, 1,
        {20: ("keep", "signature of kept"), 21: ("delete", "which is deleted"), 12: ("delete", "older than")},
        id="a-signature-of-a-child-follows-the-child",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("versions", "protected", "indexes", "unreadable", "keep_newest", "expected"), CASES)
def test_plan_follows_indexes(versions, protected, indexes, unreadable, keep_newest, expected):
    """Each case's versions get the expected action, for the reason given."""
    p = plan(
        versions,
        {digest(i): [digest(c) for c in cs] for i, cs in indexes.items()},
        {digest(i): why for i, why in unreadable.items()},
        protected,
        keep_newest,
    )
    got = actions(p)
    for n, (action, fragment) in expected.items():
        assert got[n][0] == action, (n, got[n])
        assert fragment in got[n][1], (n, got[n])
    assert p.unread == ()
    assert (p.refusal is not None) == bool(unreadable)


def test_unread_lists_kept_manifests_until_every_one_is_read():
    """Planning again with what ``unread`` asked for converges: first the kept index, then its children."""
    store = {digest(1): (), digest(2): (digest(10), digest(11)), digest(10): (), digest(11): ()}
    versions = [version(1, 1, ("new",)), version(2, 200, ("live",)), version(10, 200), version(11, 200)]
    protected = {digest(2): ["live in production (app-blue)"]}
    indexes: dict[str, tuple[str, ...]] = {}
    asked = []
    while True:
        p = plan(versions, indexes, protected=protected)
        if not p.unread:
            break
        asked.append(set(p.unread))
        indexes |= {d: store[d] for d in p.unread}
    assert asked == [{digest(1), digest(2)}, {digest(10), digest(11)}]
    assert {v.version.id for v in p.delete} == set()


def test_a_refused_plan_still_deletes_old_tagged_versions_and_says_why():
    """The refusal is the plan's, and only untagged versions are held back by it."""
    versions = [version(1, 1, ("new",)), version(3, 90, ("old",)), version(12, 90)]
    p = plan(versions, {}, {digest(1): "image 'ghcr.io/o/app@sha256:…' not found (MANIFEST_UNKNOWN)"})
    assert p.refusal is not None and "MANIFEST_UNKNOWN" in p.refusal
    assert "never deletes on partial knowledge" in p.refusal
    assert [v.version.id for v in p.delete] == [3]


def _index(kind: str | None, digests: list[str]) -> bytes:
    doc: dict[str, object] = {"schemaVersion": 2, "manifests": [{"digest": d, "size": 1} for d in digests]}
    if kind:
        doc["mediaType"] = kind
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("media_type", "body", "expected"),
    [
        (OCI_INDEX, _index(OCI_INDEX, [digest(1), digest(2)]), (digest(1), digest(2))),
        (DOCKER_LIST, _index(DOCKER_LIST, [digest(3)]), (digest(3),)),
        (f"{OCI_INDEX}; charset=utf-8", _index(None, [digest(1)]), (digest(1),)),
        ("application/json", _index(OCI_INDEX, [digest(4)]), (digest(4),)),
        (OCI_INDEX, _index(OCI_INDEX, [digest(1), digest(1)]), (digest(1),)),
        (OCI_MANIFEST, json.dumps({"mediaType": OCI_MANIFEST, "layers": []}).encode(), ()),
        ("application/octet-stream", b"not json", ()),
    ],
    ids=["oci-index", "docker-list", "type-with-parameters", "body-says-index", "repeated-child",
         "image-manifest", "not-json-not-an-index"],
)  # fmt: skip
def test_index_children(media_type, body, expected):
    """The digests an index names, whichever way it says it is one; none for an image manifest."""
    assert index_children(media_type, body) == expected


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not JSON"),
        (json.dumps({"mediaType": OCI_INDEX}).encode(), "no manifests list"),
        (
            json.dumps({"mediaType": OCI_INDEX, "manifests": [{"size": 3}]}).encode(),
            "without a sha256 digest",
        ),
    ],
    ids=["not-json", "no-manifests", "entry-without-digest"],
)
def test_index_children_refuses_a_broken_index(body, fragment):
    """An index body that names its children unreadably is an error, never "no children"."""
    with pytest.raises(ValueError, match=fragment):
        index_children(OCI_INDEX, body)
