"""Who answered a production approval, and does the answer end the wait: identities, attestations,
the allow-list, the author under any of their names, a reason, typed answers under require_verified."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from greenlight.core.approval import (
    APPROVE_ACTION,
    REJECT_ACTION,
    Answer,
    Person,
    attest,
    attestation_problem,
    check_public_key,
    judge_answer,
    new_signing_key,
    public_key_of,
    request_blocks,
)

KEY, PUBLIC = new_signing_key()
OTHER_KEY, OTHER_PUBLIC = new_signing_key()
RUN, RELEASE, NOW = "0b5e5c1e-0000-4000-8000-000000000001", "production-abc-1234", 1_800_000_000.0
PEOPLE = [
    Person("alice", "U0LABALICE", "alice-gh"),
    Person("bob", "U0LABBOB01", "bob"),
    Person("carol", "U0LABCAROL", "carol-codes"),
    Person("dave", "U0LABDAVE1", "dave"),
]
APPROVERS = ["alice", "bob", "carol"]


def slack(user: str, approve: bool = True, reason: str = "staging is green", **changes: object) -> Answer:
    """An answer as the receiver makes it for a click by Slack user ``user``."""
    answer = Answer(
        approve=approve, approver="", reason=reason, slack_user=user, at=NOW - 2, nonce="n-" + user
    )
    return replace(answer, proof=attest(KEY, RUN, RELEASE, answer), **changes)  # type: ignore[arg-type]


def typed(name: str, approve: bool = True, reason: str = "ok") -> Answer:
    return Answer(approve=approve, approver=name, reason=reason)


def judged(
    answer: Answer, author: str | None = "carol-codes", *, require_verified: bool = True, **kw: object
):
    problem = attestation_problem([PUBLIC], RUN, RELEASE, answer, NOW)
    return judge_answer(
        answer, proof_problem=problem, people=PEOPLE, approvers=kw.get("approvers", APPROVERS),  # type: ignore[arg-type]
        author=author, allow_self_approval=bool(kw.get("allow_self", False)), require_verified=require_verified,
    )  # fmt: skip


CASES = [
    # id, answer, author, require_verified, final, approved, text fragment
    ("slack-approval-by-an-approver", slack("U0LABALICE"), "carol-codes", True, True, True,
     "approved by alice (Slack U0LABALICE), verified: staging is green"),
    ("slack-rejection-by-an-approver", slack("U0LABBOB01", False, "wrong build"), "carol-codes", True, True, False,
     "rejected by bob (Slack U0LABBOB01), verified: wrong build"),
    ("slack-rejection-by-the-author", slack("U0LABCAROL", False, "not ready"), "carol-codes", True, True, False,
     "rejected by carol (Slack U0LABCAROL), verified"),
    ("author-by-github-login", slack("U0LABCAROL"), "carol-codes", True, False, False,
     "carol (Slack U0LABCAROL), verified is the release's author (carol-codes) and cannot approve it"),
    ("author-by-name", slack("U0LABCAROL"), "Carol", True, False, False, "is the release's author"),
    ("author-by-slack-id", slack("U0LABCAROL"), "U0LABCAROL", True, False, False, "is the release's author"),
    ("person-not-on-the-allow-list", slack("U0LABDAVE1"), "carol-codes", True, False, False,
     "dave (Slack U0LABDAVE1), verified is not an allowed approver (allowed: alice, bob, carol)"),
    ("rejection-by-someone-not-on-the-list", slack("U0LABDAVE1", False), "carol-codes", True, False, False,
     "is neither an allowed approver"),
    ("slack-user-who-is-no-person", slack("U0MALLORY9"), "carol-codes", True, False, False,
     "Slack user U0MALLORY9 is not a person of the profile"),
    ("approval-without-a-reason", slack("U0LABALICE", reason="  "), "carol-codes", True, False, False,
     "gave no reason; an approval needs one"),
    ("typed-under-require-verified", typed("alice"), "carol-codes", True, False, False,
     "an unverified approval (typed as 'alice', from the CLI, the Prefect UI or the Prefect API) does not count"),
    ("typed-rejection-under-require-verified", typed("alice", False), "carol-codes", True, False, False,
     "an unverified rejection"),
    ("empty-resume-under-require-verified", Answer(), "carol-codes", True, False, False, "naming nobody"),
    ("typed-without-require-verified", typed("alice"), "carol-codes", False, True, True,
     "approved by alice (typed, unverified): ok"),
    ("typed-github-login-means-the-person", typed("ALICE-GH"), "carol-codes", False, True, True,
     "approved by alice (typed, unverified)"),
    ("typed-author-under-another-name", typed("carol"), "carol-codes", False, False, False, "is the release's author"),
    ("typed-slack-id-is-not-a-name", typed("U0LABALICE"), "carol-codes", False, False, False, "is not an allowed approver"),
    ("empty-resume-without-require-verified", Answer(), "carol-codes", False, False, False, "names nobody"),
    ("forged-name-beside-a-valid-proof", slack("U0LABDAVE1", approver="alice"), "carol-codes", True, False, False,
     "dave (Slack U0LABDAVE1), verified is not an allowed approver"),
    ("proof-over-another-user", replace(slack("U0LABDAVE1"), slack_user="U0LABALICE"), "carol-codes", True, False,
     False, "its proof does not verify"),
    ("proof-with-a-changed-decision", replace(slack("U0LABALICE", False), approve=True), "carol-codes", False, False,
     False, "its proof does not verify"),
    ("stale-proof", slack("U0LABALICE", at=NOW - 301), "carol-codes", True, False, False, "its proof does not verify"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "author", "require_verified", "final", "approved", "fragment"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_judge_answer(
    answer: Answer, author: str, require_verified: bool, final: bool, approved: bool, fragment: str
) -> None:
    j = judged(answer, author, require_verified=require_verified)
    assert (j.final, j.approved) == (final, approved), j
    assert fragment in j.text, j.text
    if not final:
        assert j.text.startswith("refused, still waiting: ")


ATTESTATIONS = [
    # id, answer, run, release, now, problem fragment (None: holds)
    ("holds", slack("U0LABALICE"), RUN, RELEASE, NOW, None),
    ("none", typed("alice"), RUN, RELEASE, NOW, "carries no proof"),
    ("another-run", slack("U0LABALICE"), RUN.replace("1", "2"), RELEASE, NOW, "does not verify"),
    ("another-release", slack("U0LABALICE"), RUN, "production-abc-9999", NOW, "does not verify"),
    ("edited-reason", replace(slack("U0LABALICE"), reason="other"), RUN, RELEASE, NOW, "does not verify"),
    (
        "not-ed25519",
        replace(slack("U0LABALICE"), proof="hmac-sha256:00"),
        RUN,
        RELEASE,
        NOW,
        "is not ed25519",
    ),
    ("garbled", replace(slack("U0LABALICE"), proof="ed25519:@@"), RUN, RELEASE, NOW, "not base64"),
    ("old", slack("U0LABALICE"), RUN, RELEASE, NOW + 400, "s old (at most 300 s)"),
    ("future", slack("U0LABALICE"), RUN, RELEASE, NOW - 400, "in the future"),
    ("no-nonce", replace(slack("U0LABALICE"), nonce=""), RUN, RELEASE, NOW, "no nonce"),
]


@pytest.mark.parametrize(
    ("answer", "run", "release", "now", "fragment"),
    [c[1:] for c in ATTESTATIONS],
    ids=[c[0] for c in ATTESTATIONS],
)
def test_attestation(answer: Answer, run: str, release: str, now: float, fragment: str | None) -> None:
    problem = attestation_problem([OTHER_PUBLIC, PUBLIC], run, release, answer, now)
    assert (problem is None) if fragment is None else (fragment in str(problem)), problem


def test_a_proof_signed_with_another_key_does_not_verify() -> None:
    """Whoever holds a key of their own (or any key read from Prefect) cannot make a proof that the
    profile's receiver keys accept."""
    answer = slack("U0LABALICE")
    forged = replace(answer, proof=attest(OTHER_KEY, RUN, RELEASE, replace(answer, proof="")))
    assert "does not verify with the receiver's keys" in str(
        attestation_problem([PUBLIC], RUN, RELEASE, forged, NOW)
    )
    assert (
        attestation_problem([PUBLIC, OTHER_PUBLIC], RUN, RELEASE, forged, NOW) is None
    )  # a rotation's two keys


@pytest.mark.parametrize(
    ("text", "fragment"),
    [("not base64!", "not base64"), ("c2hvcnQ=", "not an Ed25519 key"), ("", "not an Ed25519 key")],
    ids=["not-base64", "too-short", "empty"],
)
def test_malformed_public_keys_are_named(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_public_key(text)


def test_public_key_of_a_new_pair_is_its_public_half() -> None:
    assert public_key_of(KEY) == PUBLIC and check_public_key(PUBLIC) == PUBLIC


def test_self_approval_allowed_by_the_profile() -> None:
    j = judged(slack("U0LABCAROL"), "carol-codes", allow_self=True)
    assert (j.final, j.approved) == (True, True)


def test_request_blocks_name_the_run_and_confirm_each_button() -> None:
    """Both buttons carry the run and release in their value and open a confirmation dialog; the
    message has a reason field (Slack sends its value in state.values with the click)."""
    blocks = request_blocks("waits", RUN, RELEASE, "production")
    buttons = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]  # type: ignore[attr-defined]
    assert [b["action_id"] for b in buttons] == [APPROVE_ACTION, REJECT_ACTION]
    for b in buttons:
        assert json.loads(b["value"]) == {"run": RUN, "release": RELEASE, "environment": "production"}
        assert {"title", "text", "confirm", "deny"} <= set(b["confirm"])
    assert any(b["type"] == "input" and b["element"]["type"] == "plain_text_input" for b in blocks)  # type: ignore[index]
