"""The lab's cosign signer: what ``cosign sign --key`` writes, made for the lab's registry.

Two ECDSA P-256 key pairs, committed on purpose: LAB-ONLY keys, not a secret of any real
platform (nothing outside the lab trusts them). ``lab`` signs every push unless told otherwise,
and its public half is ``registry.signatures.signers`` of the lab's production profiles; ``other``
is a key nobody's profile names (``greenlight lab image push --signed-by other``).

A signature is cosign's tag-based layout (see greenlight.core.signatures): a simple signing
payload blob naming the repository and the digest, signed (ECDSA, SHA-256, DER, base64) into the
``dev.cosignproject.cosign/signature`` annotation of a layer of the manifest that the tag
``sha256-<hex>.sig`` names.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from greenlight.core.signatures import PAYLOAD_TYPE, SIGNATURE_ANNOTATION, SIMPLE_SIGNING

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
# lab-only private keys (PKCS#8 PEM); the matching public keys are SIGNERS' .public_pem
LAB_COSIGN_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIBN7j9l1tkOAjtKD
9fdIMqvkQr05fLr0bvMBdlq7z0GhRANCAARly9X/jrHfh2fSc96sAMV2ElVPV+uC
F4/fMXvbBllKP8zw18AH5ZcENTPu/9CT1pGVH2lArcKnHNyKm8QbvZjT
-----END PRIVATE KEY-----
"""
OTHER_COSIGN_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVMIrPEJv+kNtAKe5
RPzbcVo2zNqGacw76P/Wxci6u+6hRANCAATrIt5mWLlCJc/0z+cIbw7lOrAOyCOA
hHk6bLKQUo3ovQqrRl5L1KVxfJr5eDeA1MrGZ1lawVizRc5WYbWfEYqX
-----END PRIVATE KEY-----
"""
SIGNERS = {"lab": LAB_COSIGN_KEY, "other": OTHER_COSIGN_KEY}


def _private(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def public_pem(signer: str) -> str:
    """The PEM public key (cosign.pub) of the lab signer ``signer`` (``lab`` or ``other``)."""
    return (
        _private(SIGNERS[signer])
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def simple_signing_payload(docker_reference: str, digest: str, kind: str = PAYLOAD_TYPE) -> bytes:
    """The payload cosign signs: the image's repository and digest (cosign's key order, compact)."""
    doc = {
        "critical": {
            "identity": {"docker-reference": docker_reference},
            "image": {"docker-manifest-digest": digest},
            "type": kind,
        },
        "optional": None,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def sign(signer: str, payload: bytes) -> str:
    """base64 of the DER ECDSA P-256/SHA-256 signature of ``payload`` by ``signer``'s key."""
    return base64.b64encode(_private(SIGNERS[signer]).sign(payload, ec.ECDSA(hashes.SHA256()))).decode()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def signature_manifest(layers: Sequence[tuple[bytes, str | None]]) -> tuple[bytes, dict[str, bytes]]:
    """(manifest bytes, {digest: blob}) of a ``.sig`` manifest with one layer per (payload,
    base64 signature or None for a layer without the annotation), as cosign writes it."""
    config = b"{}"
    blobs = {_sha256(config): config}
    descriptors = []
    for payload, signature in layers:
        blobs[_sha256(payload)] = payload
        descriptor: dict[str, object] = {
            "mediaType": SIMPLE_SIGNING,
            "size": len(payload),
            "digest": _sha256(payload),
        }
        if signature is not None:
            descriptor["annotations"] = {SIGNATURE_ANNOTATION: signature}
        descriptors.append(descriptor)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "size": len(config), "digest": _sha256(config)},
        "layers": descriptors,
    }
    return json.dumps(manifest, separators=(",", ":")).encode(), blobs


#: the lab signer that plays cosign 3's default: a bundle-format signature kept, as on GHCR (no
#: referrers API), under the referrers tag ``sha256-<hex>``; Greenlight does not verify that format
BUNDLE_SIGNER = "cosign3"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def referrers_index(digest: str) -> bytes:
    """What the referrers tag of ``digest`` holds after a cosign 3 ``sign``: an OCI index naming one
    referrer, a manifest of artifact type Sigstore bundle whose subject is ``digest``. (The lab
    stores the index only: nothing in Greenlight reads further.)"""
    bundle = json.dumps({"mediaType": SIGSTORE_BUNDLE, "subject": digest}, separators=(",", ":")).encode()
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "artifactType": SIGSTORE_BUNDLE,
                "size": len(bundle),
                "digest": _sha256(bundle),
            }
        ],
    }
    return json.dumps(index, separators=(",", ":")).encode()


def signed_manifest(signer: str, docker_reference: str, digest: str) -> tuple[bytes, dict[str, bytes]]:
    """The ``.sig`` manifest and blobs of ``digest`` signed by ``signer`` (``lab`` or ``other``)."""
    payload = simple_signing_payload(docker_reference, digest)
    return signature_manifest([(payload, sign(signer, payload))])
