"""Who answered a paused production promotion, and does the answer end the wait? Pure.

Prefect OSS has no users: anything that can reach its API can resume a paused run with any run
input, and read every Secret block, so neither a name in the input nor a key kept in Prefect
proves anything. An answer is **verified** only when it carries an attestation of Greenlight's
Slack receiver: an Ed25519 signature over the run, the release, the decision, the Slack user ID,
the reason, the time Slack signed the click and a nonce, made with the receiver's private key
(which lives only in the receiver's environment, never in Prefect) and checked against the
public keys the profile names (``release.approval.receiver_keys``, reviewed like any profile
change). The receiver signs only after Slack's own signature on the click verified; the person is
then the one whose ``slack`` ID the profile declares, never the name the input carries.

The wait ends only on an answer that may end it:

- an **approval** by a person on the allow-list who is not the release's author (matched on every
  identity the profile declares for them: name, GitHub login, Slack ID), with a reason;
- a **rejection** by a person on the allow-list or by the author.

Anything else is refused and the run keeps waiting (the refusal is recorded): an unverified answer
when the profile requires verified ones, a proof that does not verify, a Slack user who is not a
person of the profile, someone not on the allow-list, the author approving, an approval without a
reason, an empty resume. Without ``require_verified``, a typed name counts (matched against the
people's names and GitHub logins) and the record says it was unverified.

Names are compared case-insensitively, ignoring surrounding blanks (GitHub logins are
case-insensitive).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

#: an attestation older than this (from the time Slack signed the click) is refused
MAX_ATTESTATION_AGE_S = 300.0
_SCHEME = "ed25519:"


@dataclass(frozen=True)
class Person:
    """Someone declared once in the profile, by every identity they have."""

    name: str
    slack: str | None = None
    github: str | None = None

    def is_(self, identity: str | None) -> bool:
        """True when ``identity`` is one of this person's (name, GitHub login or Slack ID)."""
        if not identity or not identity.strip():
            return False
        mine = {_norm(v) for v in (self.name, self.github, self.slack) if v}
        return _norm(identity) in mine


@dataclass(frozen=True)
class Answer:
    """What the paused run was resumed with. Only the receiver fills ``slack_user`` .. ``proof``."""

    approve: bool = False
    approver: str = ""
    reason: str = ""
    slack_user: str = ""
    at: float = 0.0  # unix seconds: when Slack signed the click
    nonce: str = ""
    proof: str = ""


@dataclass(frozen=True)
class Judgement:
    """One answer judged: does it end the wait, does it approve, and what the record says."""

    final: bool  # True: the wait is over (approved or rejected); False: refused, keep waiting
    approved: bool
    verified: bool
    who: str  # the person's name, the typed name, or "" when nobody was named
    slack_user: str
    text: str  # for the report, Slack and the log

    @property
    def identity(self) -> str:
        """How the answer's author was known, e.g. "alice (Slack U0LABALICE), verified"."""
        if not self.who:
            return "nobody"
        if self.verified:
            return f"{self.who} (Slack {self.slack_user}), verified"
        return f"{self.who} (typed, unverified)"


def _canonical(run_id: str, release: str, answer: Answer) -> bytes:
    fields = {
        "v": 1,
        "run": run_id,
        "release": release,
        "approve": bool(answer.approve),
        "slack_user": answer.slack_user,
        "reason": answer.reason,
        "at": round(float(answer.at), 3),
        "nonce": answer.nonce,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def new_signing_key() -> tuple[str, str]:
    """A new receiver key pair: (private key, public key), each the base64 of its 32 raw bytes."""
    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    private = base64.b64encode(raw).decode()
    return private, public_key_of(private)


def key_bytes(text: str, what: str) -> bytes:
    """The 32 raw bytes of a base64 Ed25519 key; ValueError naming ``what`` otherwise."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} is not an Ed25519 key (32 bytes, base64)")
    return raw


def public_key_of(private_key: str) -> str:
    """The public key (base64) that verifies what ``private_key`` (base64) signs."""
    key = Ed25519PrivateKey.from_private_bytes(key_bytes(private_key, "the private key"))
    return base64.b64encode(
        key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ).decode()


def check_public_key(text: str) -> str:
    """``text`` if it is a base64 Ed25519 public key; ValueError naming what is wrong otherwise."""
    Ed25519PublicKey.from_public_bytes(key_bytes(text, "the public key"))
    return text.strip()


def attest(private_key: str, run_id: str, release: str, answer: Answer) -> str:
    """The receiver's proof that Slack user ``answer.slack_user`` gave ``answer`` to this run."""
    key = Ed25519PrivateKey.from_private_bytes(key_bytes(private_key, "the receiver's private key"))
    return _SCHEME + base64.b64encode(key.sign(_canonical(run_id, release, answer))).decode()


def attestation_problem(
    public_keys: Sequence[str],
    run_id: str,
    release: str,
    answer: Answer,
    now: float,
    max_age_s: float = MAX_ATTESTATION_AGE_S,
) -> str | None:
    """Why ``answer``'s proof does not hold for this run (None: it holds) under any of ``public_keys``."""
    if not answer.proof:
        return "it carries no proof from the Slack receiver"
    if not answer.slack_user or not answer.nonce:
        return "its proof names no Slack user or no nonce"
    if not answer.proof.startswith(_SCHEME):
        return f"its proof is not {_SCHEME.rstrip(':')}"
    try:
        signature = base64.b64decode(answer.proof[len(_SCHEME) :], validate=True)
    except (binascii.Error, ValueError):
        return "its proof is not base64"
    message = _canonical(run_id, release, answer)
    if not any(verifies(k, signature, message) for k in public_keys):
        return (
            "its proof does not verify with the receiver's keys (release.approval.receiver_keys): made for "
            "another run or release, edited, or signed with another key"
        )
    age = now - float(answer.at)
    if age > max_age_s:
        return f"its proof is {age:.0f} s old (at most {max_age_s:g} s)"
    if age < -max_age_s:
        return "its proof is dated in the future"
    return None


def verifies(public_key: str, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` over ``message`` verifies with the base64 Ed25519 ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(key_bytes(public_key, "a receiver key")).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def person_by_slack(people: Sequence[Person], slack_user: str) -> Person | None:
    """The person whose Slack user ID is ``slack_user`` (IDs compare exactly, as Slack's)."""
    return next((p for p in people if p.slack and p.slack == slack_user.strip()), None)


def person_named(people: Sequence[Person], typed: str) -> Person | None:
    """The person a typed name means: their name or GitHub login (not a Slack ID: that is not a name)."""
    return next((p for p in people if _norm(typed) in {_norm(v) for v in (p.name, p.github) if v}), None)


def judge_answer(
    answer: Answer,
    *,
    proof_problem: str | None,
    people: Sequence[Person],
    approvers: Sequence[str],
    author: str | None,
    allow_self_approval: bool,
    require_verified: bool,
) -> Judgement:
    """Judge one answer; see the module docstring. ``proof_problem`` comes from
    :func:`attestation_problem` (None: the answer is verified)."""
    why = answer.reason.strip()
    verb = "approval" if answer.approve else "rejection"
    if proof_problem is None:
        person = person_by_slack(people, answer.slack_user)
        if person is None:
            return _refused(
                answer, True, "", f"Slack user {answer.slack_user} is not a person of the profile "
                f"(release.approval.people), so their {verb} does not count",
            )  # fmt: skip
        who, verified = person.name, True
    else:
        typed = answer.approver.strip()
        if answer.proof:
            return _refused(
                answer, False, typed, f"an answer whose proof fails ({proof_problem}) does not count"
            )
        if require_verified:
            named = f"typed as '{typed}'" if typed else "naming nobody"
            return _refused(
                answer, False, typed,
                f"an unverified {verb} ({named}, from the CLI, the Prefect UI or the Prefect API) does not "
                "count: this environment requires answers from Slack (release.approval.require_verified)",
            )  # fmt: skip
        if not typed:
            return _refused(
                answer,
                False,
                "",
                "the answer names nobody (an empty resume refuses nothing and approves nothing)",
            )
        match = person_named(people, typed)
        person = match or Person(typed)
        who, verified = person.name, False
    allowed = [a.strip() for a in approvers if a.strip()]
    on_list = _norm(who) in {_norm(a) for a in allowed}
    by_author = _is_author(person, author)
    identity = Judgement(False, False, verified, who, answer.slack_user, "").identity
    if not answer.approve:
        if not (on_list or by_author):
            return _refused(
                answer, verified, who, f"{identity} is neither an allowed approver ({', '.join(allowed)}) "
                "nor the author, so their rejection does not count",
            )  # fmt: skip
        return Judgement(
            True,
            False,
            verified,
            who,
            answer.slack_user,
            f"rejected by {identity}" + (f": {why}" if why else ""),
        )
    if not on_list:
        return _refused(
            answer,
            verified,
            who,
            f"{identity} is not an allowed approver (allowed: {', '.join(allowed) or 'nobody'})",
        )
    if by_author and not allow_self_approval:
        return _refused(
            answer, verified, who, f"{identity} is the release's author ({author}) and cannot approve it"
        )
    if not why:
        return _refused(answer, verified, who, f"{identity} gave no reason; an approval needs one")
    return Judgement(True, True, verified, who, answer.slack_user, f"approved by {identity}: {why}")


def _is_author(person: Person, author: str | None) -> bool:
    return bool(author) and person.is_(author)


def _refused(answer: Answer, verified: bool, who: str, why: str) -> Judgement:
    return Judgement(False, False, verified, who, answer.slack_user, f"refused, still waiting: {why}")


def _norm(name: str) -> str:
    return name.strip().casefold()


# --- the approval request in Slack (Block Kit) -------------------------------------------------

APPROVE_ACTION = "greenlight_approve"
REJECT_ACTION = "greenlight_reject"
REASON_BLOCK = "greenlight_reason"
REASON_ACTION = "reason"
DECISION_BLOCK = "greenlight_decision"


def _plain(text: str, limit: int) -> dict[str, str]:
    return {"type": "plain_text", "text": text if len(text) <= limit else text[: limit - 1] + "…"}


def request_blocks(text: str, run_id: str, release: str, environment: str) -> list[dict[str, object]]:
    """The approval message: what waits, a reason field, and Approve / Reject buttons, each behind a
    confirmation dialog (a mis-tap must not approve). The buttons' value names the run and the
    release; Slack signs it back to the receiver with the click."""
    value = json.dumps({"run": run_id, "release": release, "environment": environment}, separators=(",", ":"))

    def button(action_id: str, label: str, style: str, question: str) -> dict[str, object]:
        return {
            "type": "button",
            "action_id": action_id,
            "text": _plain(label, 75),
            "style": style,
            "value": value,
            "confirm": {
                "title": _plain(f"{label} {release}?", 100),
                "text": {"type": "mrkdwn", "text": question[:300]},
                "confirm": _plain(label, 30),
                "deny": _plain("Cancel", 30),
                "style": style,
            },
        }

    return [
        {"type": "section", "block_id": "greenlight_request", "text": {"type": "mrkdwn", "text": text[:3000]}},
        {
            "type": "input",
            "block_id": REASON_BLOCK,
            "optional": True,
            "label": _plain("Reason (an approval needs one)", 2000),
            "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "max_length": 500},
        },
        {
            "type": "actions",
            "block_id": DECISION_BLOCK,
            "elements": [
                button(
                    APPROVE_ACTION, "Approve", "primary",
                    f"Release *{release}* to *{environment}*: live traffic moves to it. Your reason goes on the record.",
                ),
                button(
                    REJECT_ACTION, "Reject", "danger",
                    f"Stop release *{release}* to *{environment}*: nothing is changed.",
                ),
            ],
        },
    ]  # fmt: skip


def decided_blocks(text: str) -> list[dict[str, object]]:
    """The approval message once decided: what was decided, by whom, when and why; no buttons."""
    return [
        {"type": "section", "block_id": "greenlight_decided", "text": {"type": "mrkdwn", "text": text[:3000]}}
    ]
