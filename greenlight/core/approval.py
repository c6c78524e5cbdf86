"""May this answer approve a production release? Pure.

The paused run's input (approve, approver, reason) defaults to a refusal, so an empty resume
never approves. An approval counts only when it says yes, names an approver on the profile's
allow-list who is not the release's author (unless the profile allows self-approval) and gives
a reason. Names are compared case-insensitively, ignoring surrounding blanks (GitHub logins are
case-insensitive).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ApprovalDecision:
    """Whether the release is approved, by whom, and why (or why not)."""

    approved: bool
    reason: str
    approver: str = ""


def decide_approval(
    approve: bool,
    approver: str,
    reason: str,
    allowed: Sequence[str],
    author: str | None,
    allow_self_approval: bool,
) -> ApprovalDecision:
    """Judge one answer to the approval request; see the module docstring for the rules."""
    who = approver.strip()
    why = reason.strip()
    if not approve:
        if not who:
            return ApprovalDecision(False, "not approved: the answer did not approve (the default refuses)")
        return ApprovalDecision(False, f"rejected by {who}" + (f": {why}" if why else ""), who)
    if not who:
        return ApprovalDecision(False, "not approved: no approver named")
    names = [a.strip() for a in allowed if a.strip()]
    if not names:
        return ApprovalDecision(
            False, f"not approved: {who} cannot approve, the profile allows no approvers", who
        )
    if _norm(who) not in {_norm(a) for a in names}:
        return ApprovalDecision(
            False, f"not approved: {who} is not an allowed approver (allowed: {', '.join(names)})", who
        )
    if author and _norm(author) == _norm(who) and not allow_self_approval:
        return ApprovalDecision(False, f"not approved: {who} cannot approve their own release", who)
    if not why:
        return ApprovalDecision(False, f"not approved: {who} gave no reason; an approval needs one", who)
    return ApprovalDecision(True, f"approved by {who}: {why}", who)


def _norm(name: str) -> str:
    return name.strip().casefold()
