"""Signature task: is every digest of a release signed by a key the profile names?

Fetches what cosign stored beside each digest (the ``sha256-<hex>.sig`` manifest and its payload
blobs, through greenlight.clients.registry with the registry credentials of
greenlight.tasks.registry) and judges it with greenlight.core.signatures.
"""

from __future__ import annotations

from prefect import task

from greenlight.clients.registry import RegistryClient
from greenlight.core.images import ImageRef
from greenlight.core.signatures import Verdict, judge
from greenlight.settings import Signatures
from greenlight.tasks.policy import FRESH, RETRIES
from greenlight.tasks.registry import registry_credentials


@task(name="verify-signatures", **FRESH, **RETRIES)
def verify_signatures(
    signatures: Signatures, refs: dict[str, ImageRef], digests: dict[str, str]
) -> dict[str, Verdict]:
    """app -> the verdict on ``digests[app]`` (in ``refs[app]``'s repository) under
    ``signatures.signers``. Registry errors (unreachable, refused) raise as they do when resolving;
    what the registry serves never does: a bad signature is a verdict."""
    keys = {key.name: key.public_key for key in signatures.signers}
    with RegistryClient(default_credentials=registry_credentials()) as reg:
        verdicts = {}
        for app, ref in refs.items():
            manifest, blobs = reg.signature(ref, digests[app])
            bundle_only = manifest is None and reg.has_bundle_signature(ref, digests[app])
            verdicts[app] = judge(digests[app], manifest, blobs, keys, bundle_only)
        return verdicts


def refusal(refs: dict[str, ImageRef], verdicts: dict[str, Verdict]) -> str | None:
    """``image <repo>@<digest>: <problem>`` for every image whose verdict fails, joined by "; "
    (None when all pass)."""
    lines = [
        f"image {refs[app].name}@{verdict.digest}: {verdict.problem}"
        for app, verdict in sorted(verdicts.items())
        if not verdict.ok
    ]
    return "; ".join(lines) if lines else None
