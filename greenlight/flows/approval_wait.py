"""Waiting for a person's approval: a paused run, a Slack message with buttons, answers judged.

What a production promotion waits on, and anything else that must be approved as verifiably
(a DNS failover): :func:`await_answer` posts the request (Approve / Reject in Slack), pauses the
run for an :class:`ApprovalInput`, checks each answer's attestation by Greenlight's Slack receiver
(:func:`greenlight.core.approval.attestation_problem`) and judges it against the profile's
``release.approval`` (allow-list, people, the four-eyes rule: the subject's author or requester
may not approve), recording every answer, until one ends the wait or the profile's timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from prefect import pause_flow_run
from prefect.context import FlowRunContext
from prefect.exceptions import FlowPauseTimeout
from prefect.input import RunInput
from prefect.settings import PREFECT_UI_URL
from pydantic import Field

from greenlight.core.approval import Answer, Judgement, Person, attestation_problem, judge_answer
from greenlight.core.report import RunReport
from greenlight.errors import ReleaseRefused
from greenlight.settings import Profile
from greenlight.tasks.approval import ApprovalMessage, record_answer


class ApprovalInput(RunInput):
    """The answer to a paused production promotion. The defaults refuse: an empty resume never
    approves. A person answers in Slack; the receiver fills the last four fields, and without them
    (or with ones that do not verify) an answer is unverified."""

    approve: bool = Field(False, description="true approves, false rejects")
    approver: str = Field("", description="who answers (unverified when typed here)")
    reason: str = Field("", description="why: an approval needs one; it goes on the record")
    slack_user: str = Field("", description="set by the Slack receiver: the Slack user who clicked")
    at: float = Field(0.0, description="set by the Slack receiver: when Slack signed the click")
    nonce: str = Field("", description="set by the Slack receiver")
    proof: str = Field("", description="set by the Slack receiver: its attestation of the click")


@dataclass(frozen=True)
class Subject:
    """What waits for approval: ``noun`` ("release", "DNS failover") and ``id`` name it; ``author``
    (the release's author, the failover's requester) may not approve it."""

    noun: str
    id: str
    author: str | None
    author_role: str = "author"


class Asker(Protocol):
    """Where the wait reports: a run's report, its Slack thread, its events (a RunJournal is one)."""

    report: RunReport
    thread: str | None

    def say(self, text: str) -> None: ...

    def step(self, name: str, outcome: str, detail: str) -> None: ...

    def event(self, name: str, **payload: Any) -> None: ...


def ui_url(path: str) -> str | None:
    """A link into the Prefect UI (Prefect derives the UI address from the API's)."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/{path.lstrip('/')}" if ui else None


def current_run_link() -> str:
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return "(no flow run)"
    return ui_url(f"runs/flow-run/{ctx.flow_run.id}") or str(ctx.flow_run.id)


def await_answer(profile: Profile, subject: Subject, rel: Asker, poll_s: int = 2) -> str:
    """Pause until an answer that may end the wait (see :mod:`greenlight.core.approval`); returns
    the approver's verified identity. Refused answers are recorded and the run pauses again, until
    the profile's ``release.approval.timeout_s``; a rejection or the timeout raise ReleaseRefused."""
    rid, author, noun = subject.id, subject.author, subject.noun
    approval = profile.release.approval
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else "?"
    people = [Person(p.name, p.slack, p.github) for p in approval.people]
    message = ApprovalMessage(profile)
    where = (
        f"press Approve or Reject in the release's Slack thread ({message.channel})"
        if approval.require_verified
        else f"Approve or Reject in Slack, or `greenlight approve {run_id} --approver NAME --reason TEXT`"
    )
    waiting = (
        f"{noun} {rid} to {profile.name} waits for approval by {', '.join(approval.approvers)} "
        f"(not the {subject.author_role} {author or '-'}): {where}; run {current_run_link()}"
    )
    rel.say(f":raised_hand: {waiting}")
    message.post(f":raised_hand: {waiting}", rel.thread, run_id, rid, profile.name)
    print(f"waiting for approval of {rid}: {current_run_link()}", flush=True)
    if approval.require_verified:
        print(f"  answer in Slack ({message.channel}): only verified answers count here", flush=True)
    print(f"  approve: greenlight approve {run_id} --approver NAME --reason TEXT", flush=True)
    print(f"  reject:  greenlight reject {run_id} --approver NAME --reason TEXT", flush=True)
    rel.event("approval-requested", run_id=run_id)
    deadline = time.monotonic() + approval.timeout_s
    seen: set[str] = set()
    rows: list[list[Any]] = []
    last = ""
    judgement: Judgement | None = None
    try:
        while judgement is None or not judgement.final:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FlowPauseTimeout("approval timed out")
            pause = f"approval-{len(rows) + 1}"
            raw: ApprovalInput = pause_flow_run(  # type: ignore[call-overload]
                wait_for_input=ApprovalInput.with_initial_data(
                    description=_approval_description(subject, profile, where, last), approve=False
                ),
                timeout=max(1, int(remaining)),
                poll_interval=poll_s,
                key=pause,
            )
            answer = Answer(**raw.model_dump(include=set(Answer.__dataclass_fields__)))
            problem = _proof_problem(approval.receiver_keys, run_id, rid, answer, seen)
            judgement = judge_answer(
                answer,
                proof_problem=problem,
                people=people,
                approvers=approval.approvers,
                author=author,
                allow_self_approval=approval.allow_self_approval,
                require_verified=approval.require_verified,
            )
            seen.add(answer.nonce)
            at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            rows.append([at, judgement.identity, "approve" if answer.approve else "reject", judgement.text])
            record_answer(pause, judgement)
            rel.event(
                "approval-answer", run_id=run_id, final=judgement.final, approved=judgement.approved,
                verified=judgement.verified, who=judgement.who, slack_user=judgement.slack_user,
                text=judgement.text,
            )  # fmt: skip
            if not judgement.final:
                last = judgement.text
                rel.step("approval answer", "refused", judgement.text)
                rel.say(f":warning: {noun} {rid}: {judgement.text}")
    except FlowPauseTimeout as e:
        text = f"approval of {rid} timed out after {approval.timeout_s:g} s: rejected, nothing changed"
        message.close(f":hourglass: {text}")
        rel.report.facts["approval"] = text
        raise ReleaseRefused(text) from e
    finally:
        if rows:
            rel.report.table("Approval answers", ["at", "who", "answer", "judged"], rows)
    at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    rel.report.facts["approval"] = judgement.text
    rel.step("approval", "ok" if judgement.approved else "failed", judgement.text)
    if not judgement.approved:
        message.close(f":no_entry: {noun} {rid} to {profile.name} {judgement.text} (at {at})")
        rel.say(f":no_entry: {noun} {rid} not approved: {judgement.text}")
        rel.event("rejected", reason=judgement.text)
        raise ReleaseRefused(f"{noun} {rid} not approved: {judgement.text}")
    message.close(f":white_check_mark: {noun} {rid} to {profile.name} {judgement.text} (at {at})")
    rel.say(f":ok_hand: {noun} {rid} {judgement.text}")
    return judgement.identity


def _proof_problem(keys: list[str], run_id: str, rid: str, answer: Answer, seen: set[str]) -> str | None:
    if answer.nonce and answer.nonce in seen:
        return "its Slack click was already counted once in this run"
    return attestation_problem(keys, run_id, rid, answer, time.time())


def _approval_description(subject: Subject, profile: Profile, where: str, last: str) -> str:
    text = (
        f"Approve {subject.noun} **{subject.id}** to **{profile.name}** "
        f"({subject.author_role}: {subject.author or '-'}): {where}."
    )
    if profile.release.approval.require_verified:
        text += (
            " Answers from this form are refused: only answers from Slack, attested by Greenlight's"
            " receiver, count (release.approval.require_verified)."
        )
    if last:
        text += f"\n\nThe last answer was {last}"
    return text
