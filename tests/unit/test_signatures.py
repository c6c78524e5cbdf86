"""greenlight.core.signatures: cosign's registry layout judged, by tables of cases (no I/O).

The signatures are made by the lab's signer (greenlight_lab.signing, what ``cosign sign --key``
writes) and, for one case, by cosign itself (tests/unit/cosign_fixture, from containers/image)."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from greenlight.core.signatures import (
    SIGNATURE_ANNOTATION,
    SIMPLE_SIGNING,
    Verdict,
    check_public_key,
    judge,
    payload_digests,
    referrers_tag,
    signature_tag,
)
from greenlight_lab.signing import (
    public_pem,
    sign,
    signature_manifest,
    signed_manifest,
    simple_signing_payload,
)

FIXTURE = Path(__file__).parent / "cosign_fixture"
REPO = "ghcr.io/sma-platform/backend"
DIGEST = "sha256:" + "a" * 64
OTHER_DIGEST = "sha256:" + "b" * 64
KEYS = {"lab": public_pem("lab")}

Case = tuple[bytes | None, dict[str, bytes]]


def signed(signer: str = "lab", digest: str = DIGEST) -> Case:
    return signed_manifest(signer, REPO, digest)


def layers(*pairs: tuple[bytes, str | None]) -> Case:
    return signature_manifest(list(pairs))


def good_layer(signer: str = "lab", digest: str = DIGEST, kind: str | None = None) -> tuple[bytes, str]:
    payload = (
        simple_signing_payload(REPO, digest)
        if kind is None
        else simple_signing_payload(REPO, digest, kind=kind)
    )
    return payload, sign(signer, payload)


def signed_raw(payload: bytes) -> tuple[bytes, str]:
    return payload, sign("lab", payload)


def edit_manifest(case: Case, change: Callable[[dict[str, object]], None]) -> Case:
    manifest, blobs = case
    assert manifest is not None
    doc = json.loads(manifest)
    change(doc)
    return json.dumps(doc).encode(), blobs


def set_annotation(value: str | None) -> Callable[[dict[str, object]], None]:
    def change(doc: dict[str, object]) -> None:
        layer = doc["layers"][0]  # type: ignore[index]
        if value is None:
            layer.pop("annotations")
        else:
            layer["annotations"] = {SIGNATURE_ANNOTATION: value}

    return change


def corrupt_blobs(case: Case) -> Case:
    manifest, blobs = case
    return manifest, {
        d: (b[:-1] + b"!" if d != "sha256:" + hashlib.sha256(b"{}").hexdigest() else b)
        for d, b in blobs.items()
    }


def without_blobs(case: Case) -> Case:
    return case[0], {}


VALID: list[tuple[str, Case]] = [
    ("one layer by the lab key", signed()),
    ("the second of two layers (the first by another key)", layers(good_layer("other"), good_layer("lab"))),
    (
        "the first of two layers (the second over another digest)",
        layers(good_layer(), good_layer(digest=OTHER_DIGEST)),
    ),
]


@pytest.mark.parametrize(("case", "given"), VALID, ids=[c for c, _ in VALID])
def test_a_layer_signed_by_a_named_key_over_the_digest_passes(case: str, given: Case) -> None:
    """Any one valid layer by a key the profile names passes, and the verdict names that key."""
    verdict = judge(DIGEST, given[0], given[1], KEYS)
    assert verdict == Verdict(DIGEST, key="lab"), case
    assert verdict.ok and verdict.text == "signed by lab"


REFUSED: list[tuple[str, Case, str]] = [
    ("no .sig tag", (None, {}), f"unsigned: no cosign signature ({signature_tag(DIGEST)} not found)"),
    ("signed by another key", signed("other"), "signed by another key (not lab)"),
    ("signature over another digest", signed(digest=OTHER_DIGEST), f"signature over another digest ({OTHER_DIGEST})"),
    ("payload of the wrong type", layers(good_layer(kind="cosign attestation")), "signature payload of the wrong type ('cosign attestation'"),
    ("payload not JSON", layers(signed_raw(b"not json")), "malformed signature: its payload is not JSON"),
    ("payload without critical", layers(signed_raw(b'{"optional":null}')), "no 'critical' section"),
    ("payload without a digest", layers(signed_raw(b'{"critical":{"type":"cosign container image signature"}}')), "names no docker-manifest-digest"),
    ("signature not base64", edit_manifest(signed(), set_annotation("%%%")), "signature is not base64"),
    ("signature not DER", edit_manifest(signed(), set_annotation(base64.b64encode(b"garbage").decode())), "not a DER ECDSA signature"),
    ("no signature annotation", edit_manifest(signed(), set_annotation(None)), "has no dev.cosignproject.cosign/signature annotation"),
    ("payload blob corrupt", corrupt_blobs(signed()), "does not match its digest (corrupt)"),
    ("payload blob not served", without_blobs(signed()), "the registry did not serve its payload blob"),
    ("manifest not JSON", (b"\xff{", {}), "malformed signature: the signature manifest is not JSON"),
    ("manifest without layers", (b'{"schemaVersion":2}', {}), "has no 'layers' list"),
    ("manifest with no layer", (b'{"layers":[]}', {}), "unsigned: the signature manifest has no layers"),
    ("layer without digest", (b'{"layers":[{"mediaType":"x","size":1}]}', {}), "layer 0 of the signature manifest has no sha256 digest"),
    ("layer not an object", (b'{"layers":[7]}', {}), "layer 0 of the signature manifest is not an object"),
    ("layer of another media type", edit_manifest(signed(), lambda d: d["layers"][0].update(mediaType="application/x")), "not a cosign simple signing layer"),  # type: ignore[index]
    ("two layers, both bad", layers(good_layer("other"), good_layer(digest=OTHER_DIGEST)), "none of 2 signatures is valid: signed by another key (not lab); signature over another digest"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "given", "problem"), REFUSED, ids=[c for c, _, _ in REFUSED])
def test_every_signature_problem_is_refused_and_named(case: str, given: Case, problem: str) -> None:
    """Unsigned, another key, another digest, another type and every malformed or corrupt shape
    give a verdict naming the problem; none raises."""
    verdict = judge(DIGEST, given[0], given[1], KEYS)
    assert not verdict.ok and verdict.key is None, case
    assert problem in (verdict.problem or ""), (case, verdict.problem)


def test_a_key_not_in_the_profile_is_another_key_even_if_it_signed() -> None:
    """The same signature passes with the signer's key named and is refused without it."""
    manifest, blobs = signed("other")
    assert judge(DIGEST, manifest, blobs, {"ci": public_pem("other")}).key == "ci"
    assert (
        judge(DIGEST, manifest, blobs, {"lab": public_pem("lab")}).problem
        == "signed by another key (not lab)"
    )


def test_payload_digests_lists_only_small_simple_signing_layers() -> None:
    """The client fetches simple-signing payloads only (none for a malformed manifest)."""
    manifest, blobs = layers(good_layer(), good_layer("other"), good_layer(digest=OTHER_DIGEST))
    assert manifest is not None
    wanted = payload_digests(manifest)  # the first two share one payload: it is fetched once
    assert len(wanted) == 2 and all(d in blobs for d in wanted)
    assert payload_digests(b"nonsense") == []
    big = json.dumps({"layers": [{"mediaType": SIMPLE_SIGNING, "digest": DIGEST, "size": 10**9}]}).encode()
    assert payload_digests(big) == []


TAGS = [
    (DIGEST, "sha256-" + "a" * 64 + ".sig"),
]


@pytest.mark.parametrize(("digest", "tag"), TAGS)
def test_signature_tag_is_cosigns(digest: str, tag: str) -> None:
    """``sha256:<hex>`` is signed under the tag ``sha256-<hex>.sig``."""
    assert signature_tag(digest) == tag


def test_without_a_sig_tag_a_bundle_signature_is_told_apart_from_none() -> None:
    """No .sig tag and no referrers tag: unsigned. No .sig tag but a referrers tag (cosign 3's
    default bundle format): refused too, naming that format and how to sign in the one read here."""
    unsigned = judge(DIGEST, None, {}, KEYS)
    bundle = judge(DIGEST, None, {}, KEYS, bundle_only=True)
    assert unsigned.problem is not None and unsigned.problem.startswith("unsigned")
    assert bundle.problem is not None and not bundle.ok
    assert bundle.problem.startswith(
        "signed only in cosign 3's bundle format (OCI referrers, tag sha256-" + "a" * 64 + ")"
    )
    assert "--new-bundle-format=false --use-signing-config=false" in bundle.problem
    assert referrers_tag(DIGEST) == "sha256-" + "a" * 64


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "a" * 32, "latest", "sha256:" + "A" * 64])
def test_signature_tag_refuses_what_is_no_sha256_digest(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a sha256 digest"):
        signature_tag(bad)


BAD_KEYS = [
    ("empty", "", "is not a PEM public key"),
    (
        "a private key",
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        "is not a PEM public key",
    ),
    (
        "damaged base64",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "is not a readable PEM public key",
    ),
]


@pytest.mark.parametrize(("case", "pem", "problem"), BAD_KEYS, ids=[c for c, _, _ in BAD_KEYS])
def test_check_public_key_names_what_is_wrong(case: str, pem: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_public_key(pem)


def test_check_public_key_refuses_keys_cosign_verification_here_does_not_support() -> None:
    """An RSA or P-384 key is named as such (only P-256, cosign's default, is verified)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    for key, kind in (
        (ec.generate_private_key(ec.SECP384R1()), "ECDSA secp384r1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ):
        pem = (
            key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        )
        with pytest.raises(ValueError, match=f"is an {kind} key: only ECDSA P-256"):
            check_public_key(pem)
    assert check_public_key("\n" + public_pem("lab")) == public_pem("lab").strip()


# --- a signature made by cosign itself --------------------------------------------------------


def cosign_made() -> tuple[str, bytes, str]:
    """(the signed image's digest, cosign's payload, cosign's base64 signature) of the fixture."""
    digest = "sha256:" + hashlib.sha256((FIXTURE / "manifest.json").read_bytes()).hexdigest()
    header, _, body = (FIXTURE / "signature-1").read_bytes().partition(b"\n")
    assert header == b"\x00sigstore-json"
    doc = json.loads(body)
    return digest, base64.b64decode(doc["payload"]), doc["annotations"][SIGNATURE_ANNOTATION]


def test_a_signature_made_by_cosign_verifies_with_its_key_and_not_altered() -> None:
    """cosign's own signature, in the registry layout, passes with cosign.pub; with another key,
    a changed payload byte, a changed signature byte or for another digest it is refused."""
    digest, payload, signature = cosign_made()
    keys = {"cosign": (FIXTURE / "cosign.pub").read_text()}
    manifest, blobs = signature_manifest([(payload, signature)])
    assert judge(digest, manifest, blobs, keys) == Verdict(digest, key="cosign")
    assert judge(digest, manifest, blobs, {"two": (FIXTURE / "cosign2.pub").read_text()}).problem == (
        "signed by another key (not two)"
    )
    altered = payload.replace(b"cosign-signed-single-sample", b"cosign-signed-single-sampl3")
    assert (
        judge(digest, *signature_manifest([(altered, signature)]), keys).problem
        == "signed by another key (not cosign)"
    )
    raw = bytearray(base64.b64decode(signature))
    raw[-1] ^= 0x01
    flipped = base64.b64encode(bytes(raw)).decode()
    assert "signed by another key" in (
        judge(digest, *signature_manifest([(payload, flipped)]), keys).problem or ""
    )
    assert judge(OTHER_DIGEST, manifest, blobs, keys).problem == f"signature over another digest ({digest})"


# --- the profile's registry.signatures --------------------------------------------------------

PROFILE_BAD = [
    ("required without keys", {"required": True}, "registry.signatures: Value error, signatures are required but 'signers' is empty"),
    ("a key that is no PEM", {"signers": [{"name": "ci", "public_key": "ssh-ed25519 AAAA"}]}, "signers.0 (ci): public_key is not a PEM public key"),
    ("a damaged PEM", {"signers": [{"name": "ci", "public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"}]}, "signers.0 (ci): public_key is not a readable PEM public key"),
    ("one name twice", {"signers": [{"name": "ci", "public_key": public_pem("lab")}, {"name": "ci", "public_key": public_pem("other")}]}, "signers: ci is declared twice"),
    ("a key without a name", {"signers": [{"public_key": public_pem("lab")}]}, "registry.signatures.signers.0.name: Field required"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "signatures", "problem"), PROFILE_BAD, ids=[c for c, _, _ in PROFILE_BAD])
def test_a_bad_signatures_section_is_a_profile_error_naming_the_key(
    tmp_path: Path, case: str, signatures: dict[str, object], problem: str
) -> None:
    """Required with no keys, a key that is no PEM P-256 public key (named), a name twice: the
    profile does not load."""
    import yaml

    from greenlight.errors import ProfileInvalid
    from greenlight.settings import load_profile
    from greenlight_lab.state import LAB_ENVIRONMENTS

    doc = yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())
    doc["registry"]["signatures"] = signatures
    (tmp_path / "staging.yaml").write_text(yaml.safe_dump(doc))
    with pytest.raises(ProfileInvalid) as err:
        load_profile("staging", tmp_path)
    assert problem in str(err.value), (case, str(err.value))


def test_the_shipped_production_profiles_require_signatures_and_the_lab_staging_does_not() -> None:
    """Real production and DR require a key (a placeholder nobody holds); the lab's production
    and DR require the lab's key; both staging profiles require none."""
    from greenlight.settings import REPO_ROOT, load_profile
    from greenlight_lab.state import LAB_ENVIRONMENTS

    for directory in (REPO_ROOT / "deployments" / "environments", LAB_ENVIRONMENTS):
        for env in ("production", "dr"):
            assert load_profile(env, directory).registry.signatures.required, (directory, env)
        assert not load_profile("staging", directory).registry.signatures.required
    lab_keys = load_profile("production", LAB_ENVIRONMENTS).registry.signatures.signers
    assert [(k.name, k.public_key.strip()) for k in lab_keys] == [("lab", public_pem("lab").strip())]
    shipped = load_profile(
        "production", REPO_ROOT / "deployments" / "environments"
    ).registry.signatures.signers
    assert all(
        k.public_key.strip() not in (public_pem("lab").strip(), public_pem("other").strip()) for k in shipped
    )
