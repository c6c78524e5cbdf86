"""A registry whose signature blobs no longer match their digests (a corrupt store, a tampering
mirror): the signature check refuses the image, naming it and the problem; it does not crash, and
it never takes the corrupt signature for a valid one."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from greenlight.core.images import parse_image_ref
from greenlight.settings import Signatures, SigningKey
from greenlight.tasks.signatures import refusal, verify_signatures
from greenlight_lab.catalogue import Behaviour
from greenlight_lab.signing import public_pem

from .test_abuse_secrets import registry_stand_in

if TYPE_CHECKING:
    from .conftest import Fault


def test_a_corrupt_signature_blob_is_refused_not_crashed(
    fault: Fault, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both images are signed by the lab key, but the registry serves their payloads with a byte
    changed: each is refused as corrupt (digest mismatch), by name; none passes, nothing raises."""
    fault.describe("registry: corrupt signature blobs (digest mismatch) -> refused, not crashed")
    with registry_stand_in(tmp_path) as registry:
        images = {app: f"ghcr.io/sma-platform/{app}:corrupt" for app in ("backend", "frontend")}
        digests = {
            app: registry.catalogue.push(ref, Behaviour(f"{app}-corrupt")) for app, ref in images.items()
        }
        registry.corrupt_signature_blobs = True
        monkeypatch.setenv("GREENLIGHT_REGISTRY_MIRRORS", f"ghcr.io={registry.base_url}")
        monkeypatch.setenv("GREENLIGHT_REGISTRY_USERNAME", "bot")
        monkeypatch.setenv("GREENLIGHT_REGISTRY_PASSWORD", "not-a-real-token")
        refs = {app: parse_image_ref(ref) for app, ref in images.items()}
        signatures = Signatures(required=True, signers=[SigningKey(name="lab", public_key=public_pem("lab"))])
        fault.injected_by_hand(len(images))
        verdicts = verify_signatures.fn(signatures, refs, digests)
    passed = [app for app, verdict in verdicts.items() if verdict.ok]
    assert fault.measured_loss("images passed on a corrupt signature", len(passed)) == 0
    text = refusal(refs, verdicts) or ""
    for app, digest in digests.items():
        assert f"image ghcr.io/sma-platform/{app}@{digest}: " in text, text
    assert text.count("the payload blob the registry served does not match its digest (corrupt)") == 2, text
