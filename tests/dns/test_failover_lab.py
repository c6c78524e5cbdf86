"""DNS failover and failback of the lab's production record, through Cloudflare's stand-in, after an
approval as verified as a production promotion's: a click in the lab's Slack, attested by the lab's
receiver, by an approver who is not the requester. Refusals (self approval, typed answers), the dry
run, a record changed by hand, and a DNS API outage leave the record as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from greenlight.errors import Forbidden, ReleaseRefused, TransientError
from greenlight.flows.dns_failover import FailoverRequest, dns_failover
from greenlight.settings import REPO_ROOT
from greenlight_lab import supervisor
from greenlight_lab.cloudflare import LAB_DR, LAB_PRIMARY, LAB_RECORD
from greenlight_lab.state import LabState
from tests.flows_release.support import click, judgement

from .support import fault, fired, production_content, reset, set_production

pytestmark = pytest.mark.lab


@pytest.fixture
def zone(lab: LabState) -> Iterator[None]:
    """The lab's zone as seeded (production at the primary target) before and after each test."""
    reset(lab)
    yield
    reset(lab)


def start(direction: str, requester: str) -> tuple[threading.Thread, dict[str, Any], str]:
    """Run the dns-failover flow in a thread; (thread, out with 'result' or 'error', its tag)."""
    tag = f"test {uuid.uuid4().hex[:8]}"
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = dns_failover(
                FailoverRequest(
                    environment="production", direction=direction, requester=requester, reason=tag
                )  # type: ignore[arg-type]
            )
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out, tag


def paused(tag: str, timeout_s: float = 60) -> UUID:
    """The dns-failover run whose reason is ``tag``, once it is paused."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    # only paused dns-failover runs: the lab's server holds every run of the session, and a page
    # of 50 of them in the server's order may not hold this one (CI: it did not)
    flows = FlowFilter(name=FlowFilterName(any_=["dns-failover"]))
    runs = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED])))
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            for r in client.read_flow_runs(flow_filter=flows, flow_run_filter=runs):
                request = r.parameters.get("request") or {}
                if request.get("reason") == tag and r.state is not None and r.state.is_paused():
                    return r.id
            time.sleep(0.3)
    raise AssertionError(f"no paused dns-failover run {tag} within {timeout_s} s")


def wait_paused(run: UUID, n: int, timeout_s: float = 30) -> None:
    """Wait until the run pauses for its ``n``-th answer."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run).state
            if state is not None and state.is_paused() and state.state_details.pause_key == f"approval-{n}":
                return
            time.sleep(0.3)
    raise AssertionError(f"run {run} is not waiting for answer {n}")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", *args], cwd=REPO_ROOT, env=dict(os.environ),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def artifact(lab: LabState, key: str) -> str:
    found = httpx.post(
        f"{lab.env['PREFECT_API_URL']}/artifacts/latest/filter",
        json={"artifacts": {"key": {"any_": [key]}}},
        timeout=10,
    ).json()
    assert found, f"no artifact {key}"
    return str(found[0]["data"])


def events(lab: LabState, name: str, fid: str, timeout_s: float = 20) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = httpx.post(
            f"{lab.env['PREFECT_API_URL']}/events/filter",
            json={"filter": {"event": {"name": [name]}}, "limit": 50},
            timeout=10,
        ).json()["events"]
        mine = [e for e in found if e["payload"].get("failover_id") == fid]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def finish(t: threading.Thread, out: dict[str, Any]) -> None:
    t.join(120)
    assert not t.is_alive(), "the failover did not finish"


def test_failover_after_a_verified_approval_then_failback(lab: LabState, zone: None) -> None:
    """carol asks; alice approves in Slack: the record points at DR, read back through the API, and
    the record (artifact, event) says who approved, verified. Failback, approved by bob, points it
    back at the primary."""
    t, out, tag = start("failover", "carol")
    run = paused(tag)
    assert production_content() == LAB_PRIMARY  # nothing changes before the approval
    sent = click(lab, "alice", "approve", "primary region down", run)
    assert sent["status"] == 200, sent
    finish(t, out)
    assert "result" in out, out
    result = out["result"]
    assert result["outcome"] == "failover done" and result["read_back"] == LAB_DR
    assert result["approver"] == "alice (Slack U0LABALICE), verified"
    assert (result["from"], result["to"]) == (LAB_PRIMARY, LAB_DR)
    assert production_content() == LAB_DR
    report = artifact(lab, "dns-failover-production")
    assert result["failover_id"] in report and "approved by alice (Slack U0LABALICE), verified" in report
    (event,) = events(lab, "greenlight.dns.failover", result["failover_id"])
    payload = event["payload"]
    assert payload["approver"] == "alice (Slack U0LABALICE), verified" and payload["requester"] == "carol"
    assert (payload["from"], payload["to"]) == (LAB_PRIMARY, LAB_DR)
    # users on DR pages the on-call (production's dns-failed-over is P1, routed to PagerDuty)...
    assert dns_incident(lab)["status"] == "triggered"

    t, out, tag = start("failback", "carol")
    run = paused(tag)
    click(lab, "bob", "approve", "primary is back", run)
    finish(t, out)
    assert out.get("result", {}).get("outcome") == "failback done", out
    assert production_content() == LAB_PRIMARY
    assert dns_incident(lab)["status"] == "resolved"  # ... until the failback resolves it


def dns_incident(lab: LabState) -> dict[str, Any]:
    """The newest PagerDuty incident of production's dns-failed-over alert."""
    key = "greenlight/production/dns-failed-over"
    found = [i for i in supervisor.control(lab, "GET", "/pagerduty/incidents") if i["dedup_key"] == key]
    assert found, f"no PagerDuty incident {key}"
    return dict(found[-1])


def test_the_requesters_own_approval_and_typed_answers_do_not_count(lab: LabState, zone: None) -> None:
    """alice asks: her own Approve in Slack is refused and the run keeps waiting, as is a typed
    `greenlight approve` by bob (production requires verified answers); bob's Reject ends it with
    ReleaseRefused; the record never moved."""
    t, out, tag = start("failover", "alice")
    run = paused(tag)
    click(lab, "alice", "approve", "I asked, I approve", run)
    first = judgement(run, 1)
    assert not first["final"] and "cannot approve it" in first["text"], first
    wait_paused(run, 2)
    typed = cli("approve", str(run), "--approver", "bob", "--reason", "typed")
    assert typed.returncode == 10, typed.stdout + typed.stderr
    assert "does not count" in typed.stdout + typed.stderr
    wait_paused(run, 3)
    assert production_content() == LAB_PRIMARY
    click(lab, "bob", "reject", "not a real outage", run)
    finish(t, out)
    assert isinstance(out.get("error"), ReleaseRefused), out
    assert "rejected by bob (Slack U0LABBOB01), verified" in str(out["error"])
    assert production_content() == LAB_PRIMARY


def test_dry_run_prints_the_plan_and_changes_nothing(zone: None) -> None:
    """`greenlight failover production --dry-run` prints record, current and new content and TTL,
    asks nobody, and the record stays; `failback --dry-run` of a record at the primary is a noop."""
    done = cli("failover", "production", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert f"failover of {LAB_RECORD} (A): change" in done.stdout
    assert (
        f"current content: {LAB_PRIMARY}" in done.stdout
        and f"new content:     {LAB_DR} (TTL 60)" in done.stdout
    )
    assert "DRY RUN: nothing changed" in done.stdout
    back = cli("failback", "production", "--dry-run")
    assert back.returncode == 0 and "failback of app.sma-platform.example (A): noop" in back.stdout
    assert production_content() == LAB_PRIMARY


def test_a_record_already_at_the_target_is_a_noop_without_approval(zone: None) -> None:
    """`greenlight failback production` with the record at the primary exits 0 at once, unchanged."""
    done = cli("failback", "production", "--requester", "carol")
    assert done.returncode == 0, done.stderr
    assert "outcome: unchanged: the record already points at the target" in done.stdout
    assert production_content() == LAB_PRIMARY


def test_a_record_changed_by_hand_is_refused_naming_it_unless_forced(zone: None) -> None:
    """A record at neither target: failover exits 6 naming its content; --dry-run --force plans the change."""
    set_production("192.0.2.77")
    refused = cli("failover", "production", "--requester", "carol")
    assert refused.returncode == 6, refused.stdout + refused.stderr
    assert "FAILED: app.sma-platform.example points at 192.0.2.77, neither the primary" in refused.stderr
    forced = cli("failover", "production", "--dry-run", "--force")
    assert forced.returncode == 0 and "change" in forced.stdout and "--force" in forced.stdout
    assert production_content() == "192.0.2.77"


def test_dns_api_outage_during_the_change_fails_clearly_and_leaves_the_record(
    lab: LabState, zone: None
) -> None:
    """Approved, but Cloudflare answers 503 to every edit: the failover fails with a transient
    error naming the record and the zone, and the record still points at the primary."""
    rule = fault(lab, verb="patch", resource="dns_records", count=-1, status=503)
    t, out, tag = start("failover", "carol")
    run = paused(tag)
    click(lab, "alice", "approve", "primary region down", run)
    finish(t, out)
    error = out.get("error")
    assert isinstance(error, TransientError), out
    assert (
        "Cloudflare API 503" in str(error)
        and LAB_RECORD in str(error)
        and "sma-platform.example" in str(error)
    )
    assert fired(lab, rule) >= 1
    reset(lab)
    assert production_content() == LAB_PRIMARY


def test_dns_api_outage_before_anything_exits_4_and_asks_nobody(lab: LabState, zone: None) -> None:
    """Cloudflare down when the record is read: `greenlight failover` exits 4 with the reason."""
    fault(lab, verb="get", resource="dns_records", count=-1, status=503)
    done = cli("failover", "production", "--requester", "carol")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "FAILED: Cloudflare API 503 while listing records app.sma-platform.example" in done.stderr


def test_read_only_token_is_forbidden_and_changes_nothing(
    lab: LabState, zone: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a token that may only read, the approved failover fails Forbidden; the record stays."""
    monkeypatch.setenv("CLOUDFLARE_API_TOKEN", lab.env["GREENLIGHT_LAB_CLOUDFLARE_READONLY_TOKEN"])
    t, out, tag = start("failover", "carol")
    run = paused(tag)
    click(lab, "alice", "approve", "primary region down", run)
    finish(t, out)
    monkeypatch.undo()
    assert isinstance(out.get("error"), Forbidden), out
    assert lab.env["GREENLIGHT_LAB_CLOUDFLARE_READONLY_TOKEN"] not in str(out["error"])
    assert production_content() == LAB_PRIMARY


def test_a_requester_who_is_not_one_of_the_people_is_refused_before_anything(zone: None) -> None:
    """The requester is typed: one that names none of production's people (a login name, a
    stranger) is refused before the approval is asked, so the four-eyes rule always knows whose
    own Approve not to count; the record never moved."""
    from greenlight.errors import InputInvalid

    with pytest.raises(
        InputInvalid, match=r"requester 'mallory' is not one of production's release\.approval\.people"
    ):
        dns_failover(FailoverRequest(environment="production", requester="mallory"))  # type: ignore[arg-type]
    assert production_content() == LAB_PRIMARY
