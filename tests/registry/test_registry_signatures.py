"""Cosign signatures over real HTTP: the lab's registry stand-in serves what the lab signed on push
(the ``.sig`` manifest and its blobs), RegistryClient.signature fetches it through the registry's
token auth, and greenlight.core.signatures judges it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenlight.core.images import parse_image_ref
from greenlight.core.signatures import Verdict, judge, referrers_tag, signature_tag
from greenlight.errors import TransientError
from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.faults import FaultRule
from greenlight_lab.signing import public_pem

from .conftest import Lab

KEYS = {"lab": public_pem("lab")}


@pytest.fixture(autouse=True)
def _whole_blobs(lab: Lab) -> Iterator[None]:
    yield
    lab.registry.corrupt_signature_blobs = False


def verdict(lab: Lab, image: str, digest: str) -> Verdict:
    with lab.client() as client:
        manifest, blobs = client.signature(parse_image_ref(image), digest)
    return judge(digest, manifest, blobs, KEYS)


def test_a_push_is_signed_by_the_lab_key_and_verifies(lab: Lab) -> None:
    """The default push carries a signature by the lab key over its digest, fetched with a token."""
    digest = lab.catalogue.push("ghcr.io/sig/app:v1", Behaviour("sig-v1"))
    mark = len(lab.registry.requests)
    assert verdict(lab, "ghcr.io/sig/app:v1", digest) == Verdict(digest, key="lab")
    paths = [(r.path, r.status) for r in lab.requests_since(mark)]
    assert (f"/v2/sig/app/manifests/{signature_tag(digest)}", 200) in paths
    assert sum(1 for p, s in paths if "/blobs/" in p and s == 200) == 1


@pytest.mark.parametrize(
    ("signed_by", "problem"),
    [(None, "unsigned: no cosign signature"), ("other", "signed by another key (not lab)")],
    ids=["unsigned", "other key"],
)
def test_unsigned_and_other_key_pushes_are_refused(lab: Lab, signed_by: str | None, problem: str) -> None:
    """--unsigned leaves no .sig tag (404: unsigned); --signed-by other verifies with no named key."""
    digest = lab.catalogue.push(
        f"ghcr.io/sig/app:{signed_by}", Behaviour(f"sig-{signed_by}"), signed_by=signed_by
    )
    found = verdict(lab, f"ghcr.io/sig/app:{signed_by}", digest)
    assert found.problem is not None and found.problem.startswith(problem), found


def test_an_unsigned_re_push_drops_the_earlier_signature(lab: Lab) -> None:
    """Re-pushing the same behaviour --unsigned leaves that digest unsigned."""
    first = lab.catalogue.push("ghcr.io/sig/app:again", Behaviour("sig-again"))
    assert verdict(lab, "ghcr.io/sig/app:again", first).ok
    again = lab.catalogue.push("ghcr.io/sig/app:again", Behaviour("sig-again"), signed_by=None)
    assert again == first
    assert "unsigned" in (verdict(lab, "ghcr.io/sig/app:again", first).problem or "")


def test_a_signature_copied_from_another_image_is_over_another_digest(lab: Lab) -> None:
    """Image A's valid signature placed at image B's .sig tag: B is refused, naming A's digest."""
    a = lab.catalogue.push("ghcr.io/sig/app:a", Behaviour("sig-a"))
    b = lab.catalogue.push("ghcr.io/sig/app:b", Behaviour("sig-b"), signed_by=None)
    assert lab.catalogue.place_signature("ghcr.io/sig/app:b", "ghcr.io/sig/app:a") == signature_tag(b)
    assert verdict(lab, "ghcr.io/sig/app:b", b).problem == f"signature over another digest ({a})"
    assert lab.catalogue.signer("ghcr.io/sig/app:b") == f"copied from {a}"


def test_a_corrupt_signature_blob_is_a_verdict_not_a_crash(lab: Lab) -> None:
    """A registry serving the payload with a changed byte: refused as corrupt, nothing raised."""
    digest = lab.catalogue.push("ghcr.io/sig/app:corrupt", Behaviour("sig-corrupt"))
    lab.registry.corrupt_signature_blobs = True
    found = verdict(lab, "ghcr.io/sig/app:corrupt", digest)
    assert "does not match its digest (corrupt)" in (found.problem or ""), found


def test_a_registry_error_on_the_signature_is_transient_not_unsigned(lab: Lab) -> None:
    """A 503 on the .sig manifest raises TransientError (retried), never "unsigned"."""
    digest = lab.catalogue.push("ghcr.io/sig/app:503", Behaviour("sig-503"))
    lab.faults.add(FaultRule("registry", "get", "manifests", status=503))
    with lab.client() as client, pytest.raises(TransientError, match="HTTP 503"):
        client.signature(parse_image_ref("ghcr.io/sig/app:503"), digest)


def test_signatures_survive_a_catalogue_reload(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A new Catalogue on the same file serves the same signature manifests and blobs."""
    path = tmp_path / "images.json"
    first = Catalogue(path)
    digest = first.push("ghcr.io/sig/app:v1", Behaviour("v1"))
    unsigned = first.push("ghcr.io/sig/app:v2", Behaviour("v2"), signed_by=None)
    again = Catalogue(path)
    assert again.manifest("sig/app", signature_tag(digest)) == first.manifest(
        "sig/app", signature_tag(digest)
    )
    assert again.manifest("sig/app", signature_tag(unsigned)) is None
    assert [row["signature"] for row in again.list()] == ["lab", None]
    assert again.tags("sig/app") == sorted(["v1", "v2", signature_tag(digest)])  # as tags/list lists them
    assert again.versions("ghcr.io/sig/app") == first.versions("ghcr.io/sig/app")  # ids and times kept


def test_a_cosign3_bundle_signature_is_refused_naming_how_to_sign(lab: Lab) -> None:
    """cosign 3 signs in its bundle format by default, kept on a registry without the referrers API
    under the tag sha256-<hex> (no .sig): refused, but told apart from unsigned, with the flags that
    make cosign write the format Greenlight verifies."""
    digest = lab.catalogue.push("ghcr.io/sig/app:cosign3", Behaviour("sig-cosign3"), signed_by="cosign3")
    ref = parse_image_ref("ghcr.io/sig/app:cosign3")
    with lab.client() as client:
        manifest, blobs = client.signature(ref, digest)
        assert manifest is None  # no .sig tag
        assert client.has_bundle_signature(ref, digest)
        assert not client.has_bundle_signature(
            ref, lab.catalogue.push("ghcr.io/sig/app:plain", Behaviour("p"))
        )
    found = judge(digest, manifest, blobs, KEYS, bundle_only=True)
    assert found.problem is not None
    assert found.problem.startswith("signed only in cosign 3's bundle format"), found
    assert "--new-bundle-format=false" in found.problem
    assert referrers_tag(digest) in found.problem
