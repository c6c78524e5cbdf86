"""Alerts by severity against the lab: each level reaches its channels (Slack, PagerDuty, email),
a repeated alert pages once, a cleared condition resolves it, outages of Slack and PagerDuty
never stop the flow (the alert is retried, or reported as not delivered), the dead man's switch
fires from the Prefect server with no worker, and no secret reaches a log or an event."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolUpdate

from greenlight.core.alerts import Condition, Kind, dedup_key
from greenlight.errors import BackupNotVerified
from greenlight.flows.backup_verification import verify_backups
from greenlight.settings import Alerts, Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.automations import automation_name, ensure_dead_mans_switch
from greenlight.tasks.evidence import emit
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab
WORK_POOL = "greenlight-local"


def control(lab: LabState, path: str) -> Any:
    r = httpx.get(lab.env["GREENLIGHT_LAB_CONTROL"] + path, timeout=10)
    r.raise_for_status()
    return r.json()


def fault(lab: LabState, **rule: Any) -> int:
    r = httpx.post(lab.env["GREENLIGHT_LAB_CONTROL"] + "/faults", json=rule, timeout=10)
    r.raise_for_status()
    return int(r.json()["id"])


def fault_fired(lab: LabState, rule_id: int) -> int:
    return int(control(lab, f"/faults/{rule_id}")["fired"])


def incidents(lab: LabState, key: str) -> list[dict[str, Any]]:
    return [i for i in control(lab, "/pagerduty/incidents") if i["dedup_key"] == key]


def slack_with(lab: LabState, needle: str) -> list[dict[str, Any]]:
    return [m for m in control(lab, "/slack") if needle in (m.get("text") or "")]


def mail_with(lab: LabState, needle: str) -> list[dict[str, Any]]:
    return [m for m in control(lab, "/smtp/messages") if needle in m["subject"]]


def renamed(profile: Profile, case: str, **alerts: Any) -> Profile:
    """``profile`` as environment ``al-<case>-<random>`` (its own dedup keys), alerts overridden."""
    name = f"al-{case}-{uuid.uuid4().hex[:6]}"
    a = profile.alerts.model_dump() | alerts
    return profile.model_copy(update={"name": name, "alerts": Alerts.model_validate(a)})


@pytest.fixture(scope="module")
def production(lab: LabState) -> Profile:
    return load_profile("production")


@pytest.fixture(autouse=True)
def no_faults(lab: LabState) -> Iterator[None]:
    yield
    httpx.delete(lab.env["GREENLIGHT_LAB_CONTROL"] + "/faults", timeout=10)


def test_each_level_reaches_its_channels(lab: LabState, production: Profile) -> None:
    """P1 (a backup not verified) goes to #incidents, PagerDuty (severity error) and the on-call's
    mail; P3 (a gate failure outside production) to Slack only: no page, no mail."""
    p = renamed(production, "route", production=False)
    out = raise_alert(p, Kind.BACKUP_NOT_VERIFIED, "dump of sma missing", details={"dump": "none"})
    key = dedup_key(p.name, Kind.BACKUP_NOT_VERIFIED)
    assert out["severity"] == "P1" and out["dedup_key"] == key and out["failed"] == {}
    assert sorted(d.split(" ")[0] for d in out["delivered"]) == [
        "email:oncall@lab.invalid", "pagerduty", "slack:#incidents"
    ]  # fmt: skip
    [inc] = incidents(lab, key)
    assert (inc["status"], inc["severity"], inc["source"]) == ("triggered", "error", f"greenlight/{p.name}")
    [msg] = slack_with(lab, f"[P1] {p.name}: backup-not-verified")
    assert msg["channel_name"] in ("incidents", "#incidents")
    [mail] = mail_with(lab, f"[P1] {p.name}: backup-not-verified")
    assert mail["to"] == ["oncall@lab.invalid"] and "dump: none" in mail["body"] and key in mail["body"]

    out3 = raise_alert(p, Kind.GATE_FAILED, "backend: error rate 9 %")
    assert out3["severity"] == "P3" and [d.split(" ")[0] for d in out3["delivered"]] == ["slack:#incidents"]
    assert incidents(lab, dedup_key(p.name, Kind.GATE_FAILED)) == []
    assert mail_with(lab, f"{p.name}: gate-failed") == []
    assert len(slack_with(lab, f"[P3] {p.name}: gate-failed")) == 1


def test_repeated_alert_pages_once_and_the_cleared_condition_resolves_it(
    lab: LabState, production: Profile
) -> None:
    """The same rollback twice: one incident with two alerts; a release that succeeds resolves it."""
    p = renamed(production, "dedup", production=True)
    key = dedup_key(p.name, Kind.ROLLBACK)
    raise_alert(p, Kind.ROLLBACK, "release r1 rolled back")
    raise_alert(p, Kind.ROLLBACK, "release r1 rolled back")
    [inc] = incidents(lab, key)
    assert (inc["status"], inc["alerts"], inc["severity"]) == ("triggered", 2, "error")
    outs = resolve_alerts(p, Condition.RELEASE_SUCCEEDED)
    assert {o["kind"]: o["delivered"] for o in outs}[Kind.ROLLBACK.value] == ["pagerduty"]
    [inc] = incidents(lab, key)
    assert inc["status"] == "resolved"


def test_failed_backup_verification_raises_p1_and_a_verified_one_resolves_it(
    lab: LabState, production: Profile
) -> None:
    """The flow's failure (no dump under the prefix) pages P1 with the reason; the next run that
    verifies resolves the incident."""
    p = renamed(production, "backup")
    assert p.backups is not None
    empty = p.model_copy(update={"backups": p.backups.model_copy(update={"prefix": f"nothing-{p.name}/"})})
    with pytest.raises(BackupNotVerified):
        verify_backups(p.name, profile=empty)
    key = dedup_key(p.name, Kind.BACKUP_NOT_VERIFIED)
    [inc] = incidents(lab, key)
    assert inc["status"] == "triggered" and "NOT verified" in inc["summary"]
    assert inc["custom_details"]["database"] == "sma"
    assert slack_with(lab, f"[P1] {p.name}: backup-not-verified")
    assert verify_backups(p.name, profile=p)["verified"] is True
    assert incidents(lab, key)[0]["status"] == "resolved"


def test_slack_and_pagerduty_outage_is_retried_until_it_ends(lab: LabState, production: Profile) -> None:
    """Two failed tries each (Slack 503, PagerDuty 429 with Retry-After): the third delivers."""
    p = renamed(production, "retry")
    slack_rule = fault(lab, target="slack", resource="chat.postMessage", status=503, count=2)
    pd_rule = fault(lab, target="pagerduty", status=429, retry_after=1, count=2)
    out = raise_alert(p, Kind.DRILL_FAILED, "drill stopped at restore")
    assert out["failed"] == {}
    assert out["tries"]["pagerduty"] == 3 and out["tries"]["slack:#incidents"] == 3
    assert (fault_fired(lab, slack_rule), fault_fired(lab, pd_rule)) == (2, 2)
    assert len(incidents(lab, dedup_key(p.name, Kind.DRILL_FAILED))) == 1
    assert len(slack_with(lab, f"{p.name}: drill-failed")) == 1


def test_outage_that_outlasts_the_retries_is_reported_and_never_stops_the_flow(
    lab: LabState, production: Profile
) -> None:
    """Slack and PagerDuty down for good: the alert says so (not delivered, after 3 tries each) and
    returns; a backup verification that resolves alerts during the outage still completes, and one that
    fails still fails with its own error, not the alert's."""
    p = renamed(production, "outage")
    fault(lab, target="slack", status=503, count=-1)
    fault(lab, target="pagerduty", status=503, count=-1)
    out = raise_alert(p, Kind.DRILL_FAILED, "drill stopped at restore")
    assert set(out["failed"]) == {"slack:#incidents", "pagerduty"}
    assert out["delivered"] == ["email:oncall@lab.invalid"]
    assert out["tries"] == {"slack:#incidents": 3, "pagerduty": 3, "email:oncall@lab.invalid": 1}
    # a verified backup resolves its alerts in PagerDuty, which is down: the flow still completes
    assert verify_backups(p.name, profile=p)["verified"] is True
    assert p.backups is not None
    empty = p.model_copy(update={"backups": p.backups.model_copy(update={"prefix": f"nothing-{p.name}/"})})
    with pytest.raises(BackupNotVerified):
        verify_backups(p.name, profile=empty)
    assert incidents(lab, dedup_key(p.name, Kind.BACKUP_NOT_VERIFIED)) == []


def test_no_secret_in_logs_results_or_events(
    lab: LabState, production: Profile, caplog: pytest.LogCaptureFixture
) -> None:
    """The routing key, the Slack token and the lab's secrets appear in no log line, result or
    greenlight.alert.* event, also when a channel fails."""
    p = renamed(production, "secret", production=True)
    fault(lab, target="pagerduty", status=400, count=1)
    caplog.set_level(logging.DEBUG)
    outs = [raise_alert(p, Kind.ROLLBACK, "secret check"), raise_alert(p, Kind.ROLLBACK, "secret check")]
    outs += resolve_alerts(p, Condition.RELEASE_SUCCEEDED)
    secrets = [os.environ["GREENLIGHT_PAGERDUTY_ROUTING_KEY"], os.environ["SLACK_BOT_TOKEN"]]
    events: list[dict[str, Any]] = []
    for _ in range(50):  # events reach the server asynchronously
        r = httpx.post(
            os.environ["PREFECT_API_URL"] + "/events/filter",
            json={
                "filter": {
                    "event": {"prefix": ["greenlight.alert."]},
                    "any_resource": {"id": [f"greenlight.environment.{p.name}"]},
                }
            },
            timeout=10,
        )
        events = r.json()["events"]
        if len(events) >= 3:
            break
        time.sleep(0.2)
    assert {e["event"] for e in events} == {"greenlight.alert.raised", "greenlight.alert.resolved"}
    raised = [e for e in events if e["event"] == "greenlight.alert.raised"]
    assert all(e["payload"]["severity"] == "P1" and e["payload"]["kind"] == "rollback" for e in raised)
    text = caplog.text + repr(outs) + repr(events)
    assert outs[0]["failed"].keys() == {"pagerduty"}
    for s in secrets:
        assert s not in text


def test_dead_mans_switch_fires_from_the_server_with_no_worker(lab: LabState, production: Profile) -> None:
    """With the work pool paused (no worker can run anything), a switch whose environment has no
    verified backup within its 10 s window pages PagerDuty and posts to Slack: the server's own
    notification actions, no flow run; production's verified backups meanwhile do not quiet it."""
    p = renamed(production, "dms", dead_mans_switch={"enabled": True, "within_s": 10})
    with get_client(sync_client=True) as client:
        client.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=True))
        try:
            lines = ensure_dead_mans_switch(p)
            assert any(line.startswith("created automation") for line in lines), lines
            again = ensure_dead_mans_switch(p)  # idempotent: the same automation, updated
            assert any(line.startswith("exists automation") for line in again), again
            [auto] = client.read_automations_by_name(automation_name(p.name))
            assert {a.type for a in auto.actions} == {"send-notification"}
            key = dedup_key(p.name, Kind.DEAD_MANS_SWITCH)
            found: list[dict[str, Any]] = []
            for _ in range(120):  # the window (10 s) plus the server's proactive evaluation
                # another environment's verified backups do not keep this one's switch quiet
                emit("greenlight.backup.verified", f"greenlight.environment.{production.name}", {})
                found = incidents(lab, key)
                if found and slack_with(lab, f"{p.name}: dead-mans-switch"):
                    break
                time.sleep(0.5)
            assert [(i["status"], i["severity"]) for i in found] == [("triggered", "error")]
            assert f"no backup of {p.name} has verified" in found[0]["summary"]
            assert slack_with(lab, f"[P1] {p.name}: dead-mans-switch")
            assert client.read_work_pool(WORK_POOL).is_paused
        finally:
            for a in client.read_automations_by_name(automation_name(p.name)):
                client.delete_automation(a.id)
            client.update_work_pool(WORK_POOL, WorkPoolUpdate(is_paused=False))
