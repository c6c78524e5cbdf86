"""Where a release's commit time comes from: the request (vouched for by the receiver's proof, or
typed), or for a promotion staging's signed record (tables of cases; no lab)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from greenlight.core.approval import new_signing_key
from greenlight.core.commit_proof import vouch
from greenlight.core.release import sign_record
from greenlight.flows.promotion import requested_commit_time
from greenlight.flows.requests import PromoteRequest
from greenlight.settings import load_profile
from greenlight.tasks.records import staged_commit_time
from greenlight_lab.state import LAB_APPROVAL_SIGNING_KEY, LAB_ENVIRONMENTS

SHA = "0123456789abcdef0123456789abcdef01234567"
AT = datetime(2026, 11, 30, 15, 20, 5, tzinfo=UTC)
AT_TEXT = AT.isoformat()
REPO = "sma-platform/sma"  # the lab profiles' github.repository
OTHER_KEY, _ = new_signing_key()


def lab_proof(
    sha: str = SHA, at: str = AT_TEXT, key: str = LAB_APPROVAL_SIGNING_KEY, repo: str = REPO
) -> str:
    return vouch(key, repo, sha, at, 77)


# each case: commit, commit_at, commit_proof; then the expected commit_at_from (None: no time recorded)
REQUESTS = {
    "the lab receiver's proof": (SHA, AT, lab_proof(), "receiver"),
    "no proof: typed": (SHA, AT, None, "typed"),
    "a proof of another commit": (SHA, AT, lab_proof(sha="f" * 40), "typed"),
    "a proof of another commit time": (SHA, AT, lab_proof(at="2026-11-30T15:20:06+00:00"), "typed"),
    "a proof by a key the profile does not name": (SHA, AT, lab_proof(key=OTHER_KEY), "typed"),
    "a proof for another repository": (SHA, AT, lab_proof(repo="someone/else"), "typed"),
    "garbage": (SHA, AT, "not a proof", "typed"),
    "no commit time: nothing recorded, proof or not": (SHA, None, lab_proof(), None),
}


@pytest.mark.parametrize(("commit", "commit_at", "proof", "source"), REQUESTS.values(), ids=REQUESTS.keys())
def test_requested_commit_time(
    commit: str, commit_at: datetime | None, proof: str | None, source: str | None
) -> None:
    """A request's commit time is the receiver's only when its proof verifies with the lab staging
    profile's github.receiver_keys for this commit and time; otherwise it is typed."""
    profile = load_profile("staging", LAB_ENVIRONMENTS)
    committed, why = requested_commit_time(profile, commit, commit_at, proof)
    if source is None:
        assert committed is None and why == "no commit time"
    else:
        assert committed == (AT_TEXT, source), why


def test_a_profile_without_a_github_section_vouches_for_nothing() -> None:
    """dr has no github section (no receiver_keys): even the lab receiver's proof is typed there."""
    committed, why = requested_commit_time(load_profile("dr", LAB_ENVIRONMENTS), SHA, AT, lab_proof())
    assert committed == (AT_TEXT, "typed") and "github.repository" in why


@pytest.mark.parametrize("absent", ["", "None", None])
def test_a_triggers_rendering_of_a_null_field_is_absent(absent: str | None) -> None:
    """A trigger renders a null payload field as "None" and a missing one as "": both are no value
    (head_commit: null from GitHub, or a receiver without a key)."""
    request = PromoteRequest(environment="staging", commit=SHA, commit_at=absent, commit_proof=absent)
    assert (request.commit_at, request.commit_proof) == (None, None)


KEY = b"record-key"


def rec(
    rid: str, at: str, source: str | None, key: bytes = KEY, digests: dict[str, str] | None = None
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "environment": "staging", "release_id": rid, "outcome": "released", "at": at,
        "digests": digests or {"backend": "sha256:aa"}, "commit_at": "2026-11-30T10:00:00+00:00",
    }  # fmt: skip
    if source is not None:
        entry["commit_at_from"] = source
    entry["signature"] = sign_record(entry, key)
    return entry


DIGESTS = {"backend": "sha256:aa"}
# each case: staging's records (oldest first); the expected (commit_at_from) production records
STAGED = {
    "a vouched record": ([rec("s1", "1", "receiver")], "receiver, record s1"),
    "a vouched record wins over a newer typed one": (
        [rec("s1", "1", "receiver"), rec("s2", "2", "typed")], "receiver, record s1",
    ),
    "the newest of two vouched records": ([rec("s1", "1", "receiver"), rec("s2", "2", "receiver")], "receiver, record s2"),
    "only a typed record: typed": ([rec("s1", "1", "typed")], "typed, record s1"),
    "an old record (request): not vouched": ([rec("s1", "1", "request")], "request, record s1"),
    "an old record without commit_at_from": ([rec("s1", "1", None)], "request, record s1"),
    "a forged vouched record is not trusted": ([rec("s1", "1", "typed"), rec("s2", "2", "receiver", key=b"x")], "typed, record s1"),
    "other digests": ([rec("s1", "1", "receiver", digests={"backend": "sha256:bb"})], None),
}  # fmt: skip


@pytest.mark.parametrize(("records", "source"), STAGED.values(), ids=STAGED.keys())
def test_staged_commit_time(records: list[dict[str, Any]], source: str | None) -> None:
    """Production takes staging's trusted record of the same digests, preferring a vouched one, and
    says where its time came from."""
    staged = staged_commit_time(records, DIGESTS, KEY)
    assert (staged[1] if staged else None) == source
