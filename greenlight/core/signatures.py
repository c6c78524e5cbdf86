"""Cosign image signatures, judged: does a digest carry a valid signature by a key the profile names?

What ``cosign sign --key cosign.key IMAGE@DIGEST`` writes (the tag-based layout ``cosign verify``
reads): in the image's repository, a tag ``sha256-<hex>.sig`` (:func:`signature_tag`) naming an
OCI image manifest; each of its layers is one signature:

- ``mediaType: application/vnd.dev.cosign.simplesigning.v1+json`` (:data:`SIMPLE_SIGNING`);
- ``digest``/``size``: the "simple signing" payload blob, JSON of the form
  ``{"critical": {"identity": {"docker-reference": REPO}, "image": {"docker-manifest-digest":
  DIGEST}, "type": "cosign container image signature"}, "optional": ...}``;
- annotation ``dev.cosignproject.cosign/signature`` (:data:`SIGNATURE_ANNOTATION`): base64 of an
  ASN.1 DER ECDSA signature over the payload's bytes (SHA-256), by the key whose PEM
  ``PUBLIC KEY`` is ``cosign.pub``.

A digest passes when one layer (any one) is signed by a named key over a payload of the right
type that names that very digest; otherwise :func:`judge` says why, in words the refusal
quotes: unsigned, signed by another key, a signature over another digest, a payload of another
type, a malformed or corrupt layer. Crypto is ``cryptography``'s; nothing here does I/O: the
registry client fetches the manifest and blobs, this module judges them.

Keyless signatures (a Fulcio certificate and a Rekor entry in the layer's annotations) need
Sigstore's trust roots and the network to check: they are not supported, and such a layer
counts as signed by another key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_public_key

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PAYLOAD_TYPE = "cosign container image signature"
#: a payload is a few hundred bytes; anything larger is not fetched
MAX_PAYLOAD_BYTES = 64 * 1024
#: layers judged per signature manifest (cosign appends one per `cosign sign`)
MAX_LAYERS = 32
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def signature_tag(digest: str) -> str:
    """The tag cosign stores ``digest``'s signatures under: ``sha256-<hex>.sig``; ValueError for a
    digest that is not ``sha256:<64 hex>``."""
    if not _DIGEST.match(digest):
        raise ValueError(f"{digest!r} is not a sha256 digest (sha256:<64 hex digits>)")
    return digest.replace(":", "-", 1) + ".sig"


def referrers_tag(digest: str) -> str:
    """The tag OCI's referrers tag schema gives the artifacts about ``digest`` (``sha256-<hex>``, no
    suffix): where cosign 3 stores its bundle-format signatures on a registry without the
    referrers API (GHCR among them)."""
    return signature_tag(digest).removesuffix(".sig")


#: what a refusal says when only cosign 3's bundle format is there
BUNDLE_ONLY = (
    "signed only in cosign 3's bundle format (OCI referrers, tag {tag}), which Greenlight does not "
    "verify yet: sign with `cosign sign --key cosign.key --new-bundle-format=false "
    "--use-signing-config=false IMAGE@DIGEST` (or cosign 2)"
)


def load_public_key(pem: str) -> ec.EllipticCurvePublicKey:
    """The ECDSA P-256 public key of a PEM ``PUBLIC KEY`` (what ``cosign generate-key-pair`` writes
    to cosign.pub); ValueError saying what is wrong otherwise (never the key's bytes)."""
    text = pem.strip() if isinstance(pem, str) else ""
    if not text.startswith("-----BEGIN PUBLIC KEY-----"):
        raise ValueError("is not a PEM public key (-----BEGIN PUBLIC KEY----- ... cosign.pub)")
    try:
        key = load_pem_public_key(text.encode())
    except (ValueError, TypeError):
        raise ValueError("is not a readable PEM public key (its base64 or DER is damaged)") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        kind = type(key).__name__.removeprefix("_").replace("PublicKey", "")
        if isinstance(key, ec.EllipticCurvePublicKey):
            kind = f"ECDSA {key.curve.name}"
        raise ValueError(f"is an {kind} key: only ECDSA P-256 keys (cosign generate-key-pair) are supported")
    return key


def check_public_key(pem: str) -> str:
    """``pem`` stripped, if :func:`load_public_key` reads it; its ValueError otherwise."""
    load_public_key(pem)
    return pem.strip()


@dataclass(frozen=True)
class Layer:
    """One layer of a signature manifest: the payload blob it names and its signature annotation."""

    media_type: str
    digest: str
    size: int
    signature: str | None


def signature_layers(manifest: bytes) -> list[Layer]:
    """The layers of a signature manifest; ValueError naming what makes it no OCI image manifest."""
    try:
        doc = json.loads(manifest)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the signature manifest is not JSON") from None
    layers = doc.get("layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise ValueError("the signature manifest has no 'layers' list (not an OCI image manifest)")
    out = []
    for i, layer in enumerate(layers):
        if not isinstance(layer, dict):
            raise ValueError(f"layer {i} of the signature manifest is not an object")
        digest, size, media_type = layer.get("digest"), layer.get("size"), layer.get("mediaType")
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            raise ValueError(f"layer {i} of the signature manifest has no sha256 digest")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ValueError(f"layer {i} of the signature manifest has no size")
        annotations = layer.get("annotations")
        signature = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
        out.append(
            Layer(
                media_type=media_type if isinstance(media_type, str) else "",
                digest=digest,
                size=size,
                signature=signature if isinstance(signature, str) else None,
            )
        )
    return out


def payload_digests(manifest: bytes) -> list[str]:
    """The payload blobs worth fetching for a signature manifest: its simple-signing layers no
    larger than :data:`MAX_PAYLOAD_BYTES`, at most :data:`MAX_LAYERS` (none when it is malformed:
    :func:`judge` then says so)."""
    try:
        layers = signature_layers(manifest)
    except ValueError:
        return []
    wanted = [la for la in layers if la.media_type == SIMPLE_SIGNING and la.size <= MAX_PAYLOAD_BYTES]
    return list(dict.fromkeys(la.digest for la in wanted[:MAX_LAYERS]))


@dataclass(frozen=True)
class Verdict:
    """Whether a digest is signed as the profile asks: ``key`` names the key that verified it;
    ``problem`` says why not (None when it is)."""

    digest: str
    key: str | None = None
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def text(self) -> str:
        return f"signed by {self.key}" if self.problem is None else self.problem


def _short(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


def _verify_with(
    keys: Mapping[str, ec.EllipticCurvePublicKey], signature: bytes, payload: bytes
) -> str | None:
    for name, key in keys.items():
        try:
            key.verify(signature, payload, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            continue
        return name
    return None


def _payload_problem(payload: bytes, digest: str) -> str | None:
    """Why a verified payload does not sign ``digest`` as an image signature (None: it does)."""
    try:
        doc: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return "malformed signature: its payload is not JSON"
    critical = doc.get("critical") if isinstance(doc, dict) else None
    if not isinstance(critical, dict):
        return "malformed signature: its payload has no 'critical' section (not a simple signing payload)"
    kind = critical.get("type")
    if kind != PAYLOAD_TYPE:
        shown = repr(kind)[:60] if kind is not None else "missing"
        return f"signature payload of the wrong type ({shown}, not {PAYLOAD_TYPE!r})"
    image = critical.get("image")
    signed = image.get("docker-manifest-digest") if isinstance(image, dict) else None
    if not isinstance(signed, str):
        return "malformed signature: its payload names no docker-manifest-digest"
    if signed != digest:
        return f"signature over another digest ({repr(signed)[1:-1][:80]})"
    return None


def judge_layer(
    layer: Layer, payload: bytes | None, digest: str, keys: Mapping[str, ec.EllipticCurvePublicKey]
) -> tuple[str | None, str | None]:
    """(the name of the key that verified, None) when ``layer`` validly signs ``digest``; else
    (None, why not). ``payload`` is the blob the registry served for ``layer.digest`` (None: none)."""
    where = f"signature layer {_short(layer.digest)}"
    if layer.media_type != SIMPLE_SIGNING:
        return None, f"{where} is {repr(layer.media_type)[:60]}, not a cosign simple signing layer"
    if layer.size > MAX_PAYLOAD_BYTES:
        return None, f"{where} is {layer.size} bytes (more than {MAX_PAYLOAD_BYTES}): not a signature payload"
    if payload is None:
        return None, f"{where}: the registry did not serve its payload blob"
    if len(payload) != layer.size or "sha256:" + hashlib.sha256(payload).hexdigest() != layer.digest:
        return None, f"{where}: the payload blob the registry served does not match its digest (corrupt)"
    if layer.signature is None:
        return None, f"{where} has no {SIGNATURE_ANNOTATION} annotation (unsigned)"
    try:
        signature = base64.b64decode(layer.signature, validate=True)
    except (binascii.Error, ValueError):
        return None, f"malformed signature: {where}'s signature is not base64"
    try:
        decode_dss_signature(signature)
    except ValueError:
        return None, f"malformed signature: {where}'s signature is not a DER ECDSA signature"
    name = _verify_with(keys, signature, payload)
    if name is None:
        return None, f"signed by another key (not {', '.join(sorted(keys)) or 'any key the profile names'})"
    problem = _payload_problem(payload, digest)
    return (None, problem) if problem else (name, None)


def judge(
    digest: str,
    manifest: bytes | None,
    blobs: Mapping[str, bytes],
    keys: Mapping[str, str],
    bundle_only: bool = False,
) -> Verdict:
    """Is ``digest`` signed by one of ``keys`` (name -> PEM public key)? ``manifest`` is what its
    ``.sig`` tag holds (None: no such tag), ``blobs`` the payload blobs fetched by their digest;
    ``bundle_only``: there is no ``.sig`` tag but the referrers tag is there (cosign 3's default
    format, refused with how to sign in the format read here).

    One valid layer is enough (cosign appends a layer per signature). With none, the verdict
    names each distinct problem. Never raises for anything the registry served."""
    loaded = {name: load_public_key(pem) for name, pem in keys.items()}
    if manifest is None and bundle_only:
        return Verdict(digest, problem=BUNDLE_ONLY.format(tag=referrers_tag(digest)))
    if manifest is None:
        return Verdict(digest, problem=f"unsigned: no cosign signature ({signature_tag(digest)} not found)")
    try:
        layers = signature_layers(manifest)
    except ValueError as e:
        return Verdict(digest, problem=f"malformed signature: {e}")
    if not layers:
        return Verdict(digest, problem="unsigned: the signature manifest has no layers")
    problems: list[str] = []
    for layer in layers[:MAX_LAYERS]:
        name, problem = judge_layer(layer, blobs.get(layer.digest), digest, loaded)
        if name is not None:
            return Verdict(digest, key=name)
        if problem is not None and problem not in problems:
            problems.append(problem)
    if len(layers) == 1:
        return Verdict(digest, problem=problems[0])
    return Verdict(digest, problem=f"none of {len(layers)} signatures is valid: " + "; ".join(problems))
