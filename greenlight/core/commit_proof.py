"""The receiver's word for a commit time: a signed statement of what it verified. Pure.

The GitHub receiver (``greenlight webhook serve``) verifies the HMAC of each ``workflow_run``
delivery and takes the head commit's time from the signed body. A flow run's parameters are typed
by whoever starts it, so the receiver also signs a **statement** of what it verified, with its
Ed25519 private key (the same key it signs Slack approvals with; it lives only in the receiver's
environment)::

    greenlight-commit-v1
    <repository, lowercased>
    <commit sha>
    <commit time, UTC ISO 8601>
    <workflow run id>

and passes the signature on as ``commit_proof`` (``<run id>:ed25519:<base64 signature>``). The
flow rebuilds the statement from its profile's ``github.repository``, the request's commit and
commit time and the run id in the proof, and verifies it with ``github.receiver_keys``. Only a
commit time that verifies counts for the lead time (:func:`vouched`).

Where a record's commit time came from (``commit_at_from``):

- ``receiver``: the request's time, vouched for by a proof that verified;
- ``typed``: the request's time without a proof that verifies (typed by whoever started the run);
- ``<origin>, record <release id>``: taken from the required environment's trusted record, whose
  own ``commit_at_from`` was ``<origin>``;
- ``request`` / ``record <id>``: records written before proofs existed (not vouched for).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from greenlight.core.approval import key_bytes, verifies

DOMAIN = "greenlight-commit-v1"
RECEIVER = "receiver"
TYPED = "typed"
_SCHEME = "ed25519:"
_PROOF = re.compile(r"^([1-9][0-9]{0,19}):ed25519:([A-Za-z0-9+/=]{1,200})$")


def canonical_time(at: datetime) -> str:
    """The commit time as the statement carries it: UTC, ISO 8601 (as the receiver emits it)."""
    if at.tzinfo is None:
        raise ValueError("the commit time has no UTC offset")
    return at.astimezone(UTC).isoformat()


def statement(repository: str, sha: str, commit_at: str, run_id: int) -> bytes:
    """The domain-separated bytes the receiver signs for one verified delivery."""
    for name, value in (("repository", repository), ("sha", sha), ("commit_at", commit_at)):
        if not value or "\n" in value:
            raise ValueError(f"{name} is empty or spans lines")
    return "\n".join((DOMAIN, repository.strip().lower(), sha.strip(), commit_at, str(int(run_id)))).encode()


def vouch(private_key: str, repository: str, sha: str, commit_at: str, run_id: int) -> str:
    """The proof ``<run id>:ed25519:<signature>`` over :func:`statement`, made with the receiver's key."""
    key = Ed25519PrivateKey.from_private_bytes(key_bytes(private_key, "the receiver's private key"))
    signature = key.sign(statement(repository, sha, commit_at, run_id))
    return f"{int(run_id)}:{_SCHEME}{base64.b64encode(signature).decode()}"


def proof_problem(
    public_keys: Sequence[str],
    proof: str | None,
    repository: str | None,
    sha: str | None,
    commit_at: str | None,
) -> str | None:
    """Why ``proof`` does not vouch for ``commit_at`` of ``sha`` in ``repository`` (None: it does)."""
    if not proof or not proof.strip():
        return "the request carries no commit proof from the GitHub receiver"
    if not commit_at:
        return "the request has a commit proof but no commit time"
    if not repository:
        return "the profile names no github.repository to check the commit proof against"
    if not sha:
        return "the request names no commit"
    if not public_keys:
        return "the profile lists no github.receiver_keys to verify the commit proof with"
    match = _PROOF.match(proof.strip())
    if match is None:
        return "the commit proof is malformed (expected <run id>:ed25519:<base64 signature>)"
    try:
        signature = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        return "the commit proof's signature is not base64"
    try:
        message = statement(repository, sha, commit_at, int(match.group(1)))
    except ValueError as e:
        return f"the commit proof cannot be checked: {e}"
    if not any(verifies(k, signature, message) for k in public_keys):
        return (
            "the commit proof does not verify with github.receiver_keys: made for another commit, "
            "commit time or repository, edited, or signed with another key"
        )
    return None


def vouched(source: object) -> bool:
    """True when a record's ``commit_at_from`` says the receiver vouched for its commit time."""
    return isinstance(source, str) and (source == RECEIVER or source.startswith(f"{RECEIVER}, record "))


def origin(source: object) -> str:
    """What a record's ``commit_at_from`` says about where the time first came from: ``receiver``,
    ``typed``, or ``request`` for records written before proofs (their ``record <id>`` too)."""
    if not isinstance(source, str) or not source:
        return "request"
    first = source.split(", record ", 1)[0]
    return first if first in (RECEIVER, TYPED) else "request"


def left_out_reason(commit_at: object, source: object) -> str | None:
    """Why a deployment with this commit time and ``commit_at_from`` has no lead time (None: it has one)."""
    if commit_at is None:
        return "no commit time (started without one, or GitHub sent no head commit)"
    if vouched(source):
        return None
    if origin(source) == TYPED:
        return "commit time typed, not vouched for by the GitHub receiver"
    return "commit time recorded before the receiver vouched for commit times"
