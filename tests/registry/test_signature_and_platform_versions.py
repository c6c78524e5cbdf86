"""As on GHCR, over real HTTP: a cosign signature is a package version of its own (listed, with its
own digest; deleting it leaves the image unsigned), tags/list lists ``.sig`` tags, and a
multi-platform push is an OCI index whose platform manifests are untagged versions served by
digest; RegistryClient.manifest reads them and greenlight.core.cleanup.index_children names them."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import httpx
import pytest

from greenlight.core.cleanup import index_children
from greenlight.core.images import parse_image_ref
from greenlight.core.signatures import judge, signature_tag
from greenlight.errors import NotFound
from greenlight_lab.catalogue import OCI_INDEX, OCI_MANIFEST, Behaviour, Catalogue
from greenlight_lab.packages import DELETE_SCOPE, READ_SCOPE, Grant, PackagesStandIn
from greenlight_lab.signing import public_pem

from .conftest import Lab, LoopThread

TOKEN = "ghp_SignaturePlatformReadAndDelete00001"
PLATFORMS = ["linux/amd64", "linux/arm64"]


@pytest.fixture(scope="module")
def packages(lab: Lab, loop_thread: LoopThread) -> Iterator[PackagesStandIn]:
    standin = PackagesStandIn(
        lab.catalogue, lab.faults, tokens={TOKEN: Grant("bot", frozenset({READ_SCOPE, DELETE_SCOPE}))}
    )
    loop_thread.run(standin.start())
    yield standin
    loop_thread.run(standin.stop())


def listed(standin: PackagesStandIn, package: str) -> list[dict]:
    response = httpx.get(
        f"{standin.base_url}/orgs/sp/packages/container/{package}/versions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        params={"per_page": 100},
    )
    assert response.status_code == 200, response.text
    return response.json()


def oci_get(lab: Lab, repository: str, reference: str) -> httpx.Response:
    token = httpx.get(f"{lab.url}/token", params={"scope": f"repository:{repository}:pull"}).json()["token"]
    return httpx.get(
        f"{lab.url}/v2/{repository}/manifests/{reference}",
        headers={"Authorization": f"Bearer {token}", "Accept": f"{OCI_INDEX}, {OCI_MANIFEST}"},
    )


def test_a_signature_is_a_version_with_its_own_digest(lab: Lab, packages: PackagesStandIn) -> None:
    """A signed push lists two versions, newest first: the .sig manifest (its digest the sha256 of
    the bytes served at its tag) and the image; tags/list names the .sig tag too."""
    digest = lab.catalogue.push("ghcr.io/sp/signed:v1", Behaviour("sp-signed"), pushed_at=1_700_000_000)
    tag = signature_tag(digest)
    rows = listed(packages, "signed")
    assert [row["metadata"]["container"]["tags"] for row in rows] == [[tag], ["v1"]]
    served = oci_get(lab, "sp/signed", tag)
    assert served.status_code == 200
    assert rows[0]["name"] == "sha256:" + hashlib.sha256(served.content).hexdigest()
    assert served.headers["Docker-Content-Digest"] == rows[0]["name"]
    assert rows[0]["id"] != rows[1]["id"] and rows[1]["name"] == digest
    assert rows[0]["created_at"] == rows[1]["created_at"] == "2023-11-14T22:13:20Z"
    token = httpx.get(f"{lab.url}/token", params={"scope": "repository:sp/signed:pull"}).json()["token"]
    tags = httpx.get(f"{lab.url}/v2/sp/signed/tags/list", headers={"Authorization": f"Bearer {token}"})
    assert tags.json()["tags"] == sorted(["v1", tag])


def test_deleting_the_signature_version_leaves_the_image_unsigned(
    lab: Lab, packages: PackagesStandIn
) -> None:
    """DELETE of the .sig version: 204, its tag answers 404, the image stays and is judged unsigned."""
    digest = lab.catalogue.push("ghcr.io/sp/unsign:v1", Behaviour("sp-unsign"))
    lab.catalogue.push("ghcr.io/sp/unsign:v2", Behaviour("sp-unsign-2"), signed_by=None)
    sig = next(
        r for r in listed(packages, "unsign") if r["metadata"]["container"]["tags"] == [signature_tag(digest)]
    )
    response = httpx.delete(
        f"{packages.base_url}/orgs/sp/packages/container/unsign/versions/{sig['id']}",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 204
    assert sig["id"] not in [r["id"] for r in listed(packages, "unsign")]
    assert oci_get(lab, "sp/unsign", signature_tag(digest)).status_code == 404
    with lab.client() as client:
        assert client.resolve(parse_image_ref(f"ghcr.io/sp/unsign@{digest}")) == digest
        manifest, blobs = client.signature(parse_image_ref("ghcr.io/sp/unsign:v1"), digest)
    verdict = judge(digest, manifest, blobs, {"lab": public_pem("lab")})
    assert verdict.problem is not None and verdict.problem.startswith("unsigned"), verdict


def test_a_multi_platform_push_is_an_index_over_untagged_platform_versions(
    lab: Lab, packages: PackagesStandIn
) -> None:
    """The tag names an index (served with its media type); each platform manifest is an untagged
    version served by digest; the client reads the index and index_children names the children."""
    digest = lab.catalogue.push(
        "ghcr.io/sp/multi:v1", Behaviour("sp-multi"), signed_by=None, platforms=PLATFORMS
    )
    rows = listed(packages, "multi")
    assert len(rows) == 3 and rows[0]["name"] == digest
    assert rows[0]["metadata"]["container"]["tags"] == ["v1"]
    children = [r["name"] for r in rows[1:]]
    assert all(r["metadata"]["container"]["tags"] == [] for r in rows[1:])
    index = oci_get(lab, "sp/multi", "v1")
    assert index.headers["Content-Type"] == OCI_INDEX
    with lab.client() as client:
        media_type, body = client.manifest(parse_image_ref(f"ghcr.io/sp/multi@{digest}"))
        assert media_type == OCI_INDEX
        named = index_children(media_type, body)
        assert set(named) == set(children)
        for child in named:
            kind, child_body = client.manifest(parse_image_ref(f"ghcr.io/sp/multi@{child}"))
            assert kind == OCI_MANIFEST and index_children(kind, child_body) == ()
            assert client.resolve(parse_image_ref(f"ghcr.io/sp/multi@{child}")) == child
    platforms = [m["platform"]["architecture"] for m in index.json()["manifests"]]
    assert platforms == ["amd64", "arm64"]
    assert lab.catalogue.lookup(f"ghcr.io/sp/multi@{children[0]}") == (children[0], Behaviour("sp-multi"))
    assert lab.catalogue.lookup("ghcr.io/sp/multi:v1") == (digest, Behaviour("sp-multi"))


def test_a_deleted_platform_manifest_is_gone_from_the_oci_api(lab: Lab, packages: PackagesStandIn) -> None:
    """Deleting a child version: the index still resolves, the child answers 404 (the image is broken:
    what cleanup must never do to a live one); RegistryClient.manifest raises NotFound for it."""
    digest = lab.catalogue.push(
        "ghcr.io/sp/broken:v1", Behaviour("sp-broken"), signed_by=None, platforms=PLATFORMS
    )
    lab.catalogue.push("ghcr.io/sp/broken:v2", Behaviour("sp-broken-2"), signed_by=None)
    child = next(r for r in listed(packages, "broken") if not r["metadata"]["container"]["tags"])
    assert lab.catalogue.delete_version("ghcr.io/sp/broken", child["id"]) == child["name"]
    assert oci_get(lab, "sp/broken", digest).status_code == 200
    assert oci_get(lab, "sp/broken", child["name"]).status_code == 404
    with lab.client() as client, pytest.raises(NotFound):
        client.manifest(parse_image_ref(f"ghcr.io/sp/broken@{child['name']}"))


def test_signature_and_platform_versions_survive_a_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new Catalogue on the same file lists the same versions (ids, times, digests) and serves the same index."""
    path = tmp_path / "images.json"
    first = Catalogue(path)
    first.push("ghcr.io/sp/keep:v1", Behaviour("v1"))
    multi = first.push("ghcr.io/sp/keep:m", Behaviour("m"), platforms=["linux/amd64", "linux/arm/v7"])
    again = Catalogue(path)
    assert again.versions("ghcr.io/sp/keep") == first.versions("ghcr.io/sp/keep")
    assert len(again.versions("ghcr.io/sp/keep")) == 6  # v1, its .sig, the index, two children, its .sig
    assert again.manifest("sp/keep", multi) == first.manifest("sp/keep", multi)
    assert again.push("ghcr.io/sp/keep:n", Behaviour("n")) not in {
        r["digest"] for r in first.versions("ghcr.io/sp/keep")
    }
    ids = [r["id"] for r in again.versions("ghcr.io/sp/keep")]
    assert len(ids) == len(set(ids)) == 8


@pytest.mark.parametrize(
    ("platforms", "fragment"),
    [([], "non-empty"), (["linux/amd64", "linux/amd64"], "repeat"), (["amd64"], "os/architecture")],
    ids=["empty", "repeated", "malformed"],
)
def test_bad_platforms_are_refused_and_store_nothing(platforms, fragment) -> None:  # type: ignore[no-untyped-def]
    """A push with bad platforms raises ValueError naming what is wrong, and nothing is stored."""
    catalogue = Catalogue()
    with pytest.raises(ValueError, match=fragment):
        catalogue.push("ghcr.io/sp/bad:v1", Behaviour("bad"), platforms=platforms)
    assert catalogue.versions("ghcr.io/sp/bad") == [] and not catalogue.has_image("ghcr.io/sp/bad")
