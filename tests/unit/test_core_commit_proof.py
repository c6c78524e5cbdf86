"""The GitHub receiver's commit proof: the statement it signs, and what verifies (tables of cases)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from greenlight.core.approval import new_signing_key
from greenlight.core.commit_proof import (
    canonical_time,
    left_out_reason,
    origin,
    proof_problem,
    statement,
    vouch,
    vouched,
)

PRIVATE, PUBLIC = new_signing_key()
OTHER_PRIVATE, OTHER_PUBLIC = new_signing_key()
REPO, SHA, AT, RUN = "sma-platform/sma", "a" * 40, "2026-11-30T15:20:05+00:00", 4242
PROOF = vouch(PRIVATE, REPO, SHA, AT, RUN)


def test_the_statement_is_domain_separated_and_names_what_was_verified() -> None:
    """The signed bytes are the domain, the lowercased repository, the sha, the time and the run id, one a line."""
    assert statement("SMA-Platform/SMA", SHA, AT, RUN) == (
        f"greenlight-commit-v1\nsma-platform/sma\n{SHA}\n{AT}\n4242".encode()
    )


@pytest.mark.parametrize(
    ("repository", "sha", "commit_at"),
    [("", SHA, AT), (REPO, "", AT), (REPO, SHA, ""), (REPO, f"{SHA}\nx", AT), (REPO, SHA, f"{AT}\n1")],
)
def test_a_statement_of_an_empty_or_multi_line_field_is_refused(
    repository: str, sha: str, commit_at: str
) -> None:
    """No field may be empty or hold a newline (it could shift the fields of the statement)."""
    with pytest.raises(ValueError, match="empty or spans lines"):
        statement(repository, sha, commit_at, RUN)


def test_canonical_time_is_utc_iso_as_the_receiver_emits_it() -> None:
    """A time with any offset becomes the UTC ISO string the receiver signed; a naive one is refused."""
    plus_one = datetime(2026, 11, 30, 16, 20, 5, tzinfo=timezone(timedelta(hours=1)))
    assert canonical_time(plus_one) == AT
    with pytest.raises(ValueError, match="no UTC offset"):
        canonical_time(datetime(2026, 11, 30, 15, 20, 5))


# each case: keys, proof, repository, sha, commit_at; then a fragment of the problem (None: it verifies)
VERIFY = {
    "right key": ([PUBLIC], PROOF, REPO, SHA, AT, None),
    "right key among others (rotation)": ([OTHER_PUBLIC, PUBLIC], PROOF, REPO, SHA, AT, None),
    "repository in another case (GitHub's names are case-insensitive)": (
        [PUBLIC], PROOF, "SMA-platform/SMA", SHA, AT, None,
    ),
    "other key": ([OTHER_PUBLIC], PROOF, REPO, SHA, AT, "does not verify"),
    "signed by another receiver": ([PUBLIC], vouch(OTHER_PRIVATE, REPO, SHA, AT, RUN), REPO, SHA, AT, "does not verify"),
    "altered commit_at": ([PUBLIC], PROOF, REPO, SHA, "2026-11-30T15:20:04+00:00", "does not verify"),
    "altered sha": ([PUBLIC], PROOF, REPO, "b" * 40, AT, "does not verify"),
    "another repository": ([PUBLIC], PROOF, "someone/else", SHA, AT, "does not verify"),
    "altered run id": ([PUBLIC], "4243" + PROOF[len("4242") :], REPO, SHA, AT, "does not verify"),
    "malformed: no run id": ([PUBLIC], PROOF.split(":", 1)[1], REPO, SHA, AT, "malformed"),
    "malformed: other scheme": ([PUBLIC], PROOF.replace("ed25519", "rsa"), REPO, SHA, AT, "malformed"),
    "malformed: not base64": ([PUBLIC], "4242:ed25519:!!!!", REPO, SHA, AT, "malformed"),
    "malformed: bad padding": ([PUBLIC], "4242:ed25519:abc", REPO, SHA, AT, "not base64"),
    "truncated signature": ([PUBLIC], PROOF[:-8], REPO, SHA, AT, "does not verify"),
    "no proof": ([PUBLIC], None, REPO, SHA, AT, "carries no commit proof"),
    "empty proof (a trigger's missing field)": ([PUBLIC], "", REPO, SHA, AT, "carries no commit proof"),
    "a proof but no commit time": ([PUBLIC], PROOF, REPO, SHA, None, "no commit time"),
    "no receiver keys in the profile": ([], PROOF, REPO, SHA, AT, "no github.receiver_keys"),
    "a malformed receiver key only": (["not-a-key"], PROOF, REPO, SHA, AT, "does not verify"),
    "no github section (no repository)": ([PUBLIC], PROOF, None, SHA, AT, "no github.repository"),
    "no commit": ([PUBLIC], PROOF, REPO, None, AT, "names no commit"),
}  # fmt: skip


@pytest.mark.parametrize(
    ("keys", "proof", "repository", "sha", "commit_at", "fragment"), VERIFY.values(), ids=VERIFY.keys()
)
def test_proof_problem(
    keys: list[str], proof: str | None, repository: str | None, sha: str | None, commit_at: str | None,
    fragment: str | None,
) -> None:  # fmt: skip
    """Only the receiver's signature over exactly this repository, sha, time and run verifies."""
    problem = proof_problem(keys, proof, repository, sha, commit_at)
    if fragment is None:
        assert problem is None
    else:
        assert problem is not None and fragment in problem, problem


def test_the_proof_names_its_run_and_never_the_key() -> None:
    """The proof is ``<run id>:ed25519:<signature>`` and holds neither half of the key."""
    run, scheme, signature = PROOF.split(":")
    assert (run, scheme) == ("4242", "ed25519") and len(signature) == 88
    assert PRIVATE not in PROOF and PUBLIC not in PROOF


# commit_at_from -> vouched?, origin
SOURCES = {
    "receiver": (True, "receiver"),
    "receiver, record staging-abc": (True, "receiver"),
    "typed": (False, "typed"),
    "typed, record staging-abc": (False, "typed"),
    "request": (False, "request"),  # written before commit proofs
    "record staging-abc": (False, "request"),  # a production record written before commit proofs
    "request, record staging-abc": (False, "request"),
    "receiver-ish": (False, "request"),
    "": (False, "request"),
}


@pytest.mark.parametrize(("source", "expected"), SOURCES.items(), ids=SOURCES.keys())
def test_vouched_and_origin(source: str, expected: tuple[bool, str]) -> None:
    """Only ``receiver`` (itself or through a staging record) is vouched for; old values are ``request``."""
    assert (vouched(source), origin(source)) == expected


def test_none_is_not_vouched() -> None:
    """A record without commit_at_from (older still) is not vouched for."""
    assert (vouched(None), origin(None)) == (False, "request")


@pytest.mark.parametrize(
    ("commit_at", "source", "fragment"),
    [
        (datetime(2026, 11, 30, tzinfo=UTC), "receiver", None),
        (datetime(2026, 11, 30, tzinfo=UTC), "receiver, record s-1", None),
        (None, "receiver", "no commit time"),
        (datetime(2026, 11, 30, tzinfo=UTC), "typed", "typed"),
        (datetime(2026, 11, 30, tzinfo=UTC), "request", "before the receiver vouched"),
        (datetime(2026, 11, 30, tzinfo=UTC), "record s-1", "before the receiver vouched"),
    ],
)
def test_left_out_reason(commit_at: datetime | None, source: str, fragment: str | None) -> None:
    """A deployment keeps its lead time only with a commit time the receiver vouched for."""
    why = left_out_reason(commit_at, source)
    assert (why is None) if fragment is None else (why is not None and fragment in why)
