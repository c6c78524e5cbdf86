"""dns-failover: point the production DNS record at the DR environment (failover) or back at the
primary (failback), after an approval as verified as a production promotion's.

The flow reads the record through the provider's API (Cloudflare), asks
:func:`greenlight.core.dns.plan_failover` what to do, and then:

- ``dry_run``: returns the plan (record, current content, new content, TTL), changing nothing;
- the record already holds the target: nothing to do (no approval asked);
- the record holds neither target (changed by hand): refused, Conflict naming it, unless ``force``;
- otherwise it waits for an approval (:func:`greenlight.flows.approval_wait.await_answer`: the
  Slack message with buttons, the receiver's attestation, the profile's ``release.approval``
  allow-list; the requester may not approve), reads the record again (it may have moved while
  waiting) and plans again, edits it (one PATCH: either it changed or it did not), reads it back
  by id and checks content and TTL.

The record of it: the markdown artifact ``dns-failover-<env>``, the event
``greenlight.dns.failover|failback`` (who asked, who approved and how verified, from, to), Slack.
"""

from __future__ import annotations

import secrets as pysecrets
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import flow
from pydantic import BaseModel, Field

from greenlight.core.alerts import Condition, Kind
from greenlight.core.approval import Person, person_named
from greenlight.core.dns import FailoverPlan, Record, normalise, plan_failover, readback_problem
from greenlight.core.report import RunReport
from greenlight.errors import Conflict, InputInvalid, NotFound
from greenlight.flows.approval_wait import Subject, await_answer, current_run_link
from greenlight.flows.journal import Journal
from greenlight.settings import Dns, Environment, Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.dns import point_record, read_back, read_record
from greenlight.tasks.evidence import emit


class FailoverRequest(BaseModel):
    """Move an environment's DNS record to DR, or back (the form the Prefect UI shows)."""

    environment: Environment = Field(
        description="the environment whose DNS record moves (its profile's dns section)"
    )
    direction: Literal["failover", "failback"] = Field(
        "failover", description="failover: point the record at dns.dr_target; failback: at dns.primary_target"
    )
    requester: str = Field(min_length=1, description="who asks (on the record); they cannot approve it")
    reason: str = Field("", description="why, on the record")
    dry_run: bool = Field(False, description="print the plan, change nothing, ask no approval")
    force: bool = Field(
        False,
        description="change the record even when it points at neither target (someone changed it by hand)",
    )


def failover_id(direction: str, environment: str, at: datetime, token: str) -> str:
    """``failover-production-20261201t101500-ab12cd``: names the run's approval and its record."""
    return f"{direction}-{environment}-{at.strftime('%Y%m%dt%H%M%S')}-{token}"


def dns_of(profile: Profile) -> Dns:
    if profile.dns is None:
        raise InputInvalid(
            f"environment '{profile.name}' has no 'dns' section in its profile: no record to fail over"
        )
    return profile.dns


def plan_for(
    dns: Dns, direction: Literal["failover", "failback"], force: bool, records: list[Record]
) -> FailoverPlan:
    """The plan over the records named ``dns.record``; refuses more than one record of the type."""
    same = [r for r in records if r.type == dns.type]
    if len(same) > 1:
        contents = ", ".join(r.content for r in same)
        return FailoverPlan(
            direction, dns.record, dns.type, "refuse", contents, "", dns.ttl, None,
            f"{dns.record} has {len(same)} {dns.type} records ({contents}): Greenlight moves exactly one",
        )  # fmt: skip
    current = same[0] if same else (records[0] if records else None)
    return plan_failover(
        direction, normalise(dns.record), dns.type, current, dns.primary_target, dns.dr_target, dns.ttl, force
    )


def refusal(plan: FailoverPlan) -> NotFound | Conflict:
    """The error of a refused plan: NotFound when there is no record, else Conflict naming it."""
    return NotFound(plan.reason) if plan.current is None else Conflict(plan.reason)


def requester_of(profile: Profile, typed: str) -> str:
    """The person of ``profile``'s approval list a typed requester names (their name). The
    requester is typed (the Prefect API has no users), so it must at least be one of the people:
    a login name or a stranger's name would match nobody, and the requester's own Approve would
    not be recognised as theirs."""
    people = [Person(p.name, p.slack, p.github) for p in profile.release.approval.people]
    person = person_named(people, typed)
    if person is None:
        known = ", ".join(p.name for p in people) or "nobody"
        raise InputInvalid(
            f"requester {typed!r} is not one of {profile.name}'s release.approval.people ({known}): "
            "name yourself with --requester"
        )
    return person.name


def read_plan(request: FailoverRequest, profile: Profile | None = None) -> FailoverPlan:
    """The plan, read-only (plain Python, no Prefect run): what ``--dry-run`` prints."""
    prof = profile if profile is not None else load_profile(request.environment)
    dns = dns_of(prof)
    return plan_for(dns, request.direction, request.force, read_record.fn(dns))


class Failover(Journal):
    """One failover while it runs: its report, its Slack thread, its events (an approval_wait.Asker)."""

    def __init__(self, profile: Profile, request: FailoverRequest, fid: str) -> None:
        super().__init__(
            profile, fid, RunReport(f"DNS {request.direction} {fid} of {profile.name}"),
            f"dns-failover-{profile.name}", "DNS",
        )  # fmt: skip
        self.request = request
        self.report.facts.update(
            {"environment": profile.name, "record": dns_of(profile).record, "requested by": request.requester,
             "reason": request.reason or "-", "run": current_run_link()}
        )  # fmt: skip

    def event(self, name: str, **payload: Any) -> None:
        emit(
            f"greenlight.dns.{name}",
            f"greenlight.environment.{self.profile.name}",
            {"failover_id": self.id, "environment": self.profile.name, "direction": self.request.direction,
             "record": dns_of(self.profile).record, **payload},
        )  # fmt: skip


def _result(fid: str, plan: FailoverPlan, outcome: str, **more: Any) -> dict[str, Any]:
    return {
        "failover_id": fid, "direction": plan.direction, "record": plan.record, "type": plan.type,
        "outcome": outcome, "from": plan.current, "to": plan.new, "ttl": plan.ttl, "reason": plan.reason,
        "forced": plan.forced, **more,
    }  # fmt: skip


@flow(name="dns-failover")
def dns_failover(request: FailoverRequest, profile: Profile | None = None) -> dict[str, Any]:
    """Point ``request.environment``'s DNS record at DR (failover) or back at the primary (failback),
    after a verified approval; see the module docstring.

    Args:
        request: the environment, the direction, who asks and why, dry run, force
        profile: for tests and ad-hoc runs only: a whole profile that replaces the environment's file (leave empty)
    """
    prof = profile if profile is not None else load_profile(request.environment)
    dns = dns_of(prof)
    fid = failover_id(request.direction, prof.name, datetime.now(UTC), pysecrets.token_hex(3))
    plan = plan_for(dns, request.direction, request.force, read_record(dns))
    if plan.action == "refuse":
        raise refusal(plan)
    if request.dry_run:
        return _result(fid, plan, "dry-run: nothing changed", plan_lines=plan.lines())
    if plan.action == "noop":
        return _result(fid, plan, "unchanged: the record already points at the target")
    requester = requester_of(prof, request.requester)
    run = Failover(prof, request, fid)
    run.step("plan", "ok", plan.reason)
    try:
        approver = await_answer(prof, Subject(f"DNS {request.direction}", fid, requester, "requester"), run)
        records = read_record(dns)  # the wait may have been long: plan again over what is there now
        plan = plan_for(dns, request.direction, request.force, records)
        if plan.action == "refuse":
            raise refusal(plan)
        if plan.action == "noop":
            run.step("change", "skipped", plan.reason)
            run.publish("unchanged")
            return _result(fid, plan, "unchanged: the record already points at the target", approver=approver)
        record = next(r for r in records if r.type == dns.type)
        point_record(dns, record, plan.new, plan.ttl)
        run.step("change", "ok", f"{plan.record}: {plan.current} -> {plan.new} (TTL {plan.ttl})")
        back = read_back(dns, record)
        problem = readback_problem(plan, back)
        if problem:
            raise Conflict(f"{request.direction} of {plan.record} not confirmed: {problem}")
        run.step("read-back", "ok", f"{plan.record} reads back {plan.new} (TTL {plan.ttl}) through the API")
    except Exception as e:
        run.step(request.direction, "failed", str(e))
        run.publish("failed")
        run.event(f"{request.direction}-failed", reason=str(e))
        raise
    run.report.facts["approved by"] = approver
    run.event(
        request.direction, requester=request.requester, approver=approver, reason=request.reason,
        **{"from": plan.current, "to": plan.new, "ttl": plan.ttl, "forced": plan.forced},
    )  # fmt: skip
    run.say(
        f":globe_with_meridians: DNS {request.direction} {fid}: {plan.record} now points at {plan.new} (was {plan.current}); approved by {approver}"
    )
    # users on DR is a state the on-call must know about until the failback clears it
    if request.direction == "failover":
        raise_alert(
            prof, Kind.DNS_FAILED_OVER,
            f"{plan.record} points at DR ({plan.new}) since {fid}, approved by {approver}: "
            f"`greenlight failback {prof.name}` returns it",
        )  # fmt: skip
    else:
        resolve_alerts(prof, Condition.DNS_FAILED_BACK)
    run.publish("done")
    return _result(fid, plan, f"{request.direction} done", approver=approver, read_back=plan.new)
