"""The PagerDuty Events API v2 stand-in and the SMTP sink, held to the real shapes, and the
product's clients against them (no lab: each stand-in on a background loop, real sockets)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from greenlight.clients.email import Mailer
from greenlight.clients.pagerduty import PagerDuty
from greenlight.errors import Forbidden, PermanentError, TransientError
from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.pagerduty import PagerDutyStandIn
from greenlight_lab.smtp import SmtpSink

T = TypeVar("T")
KEY = "R0UT1NGKEY0123456789abcdefabcdef"


class Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    lp = Loop()
    yield lp
    lp.loop.call_soon_threadsafe(lp.loop.stop)


@pytest.fixture
def faults() -> FaultRegistry:
    return FaultRegistry()


@pytest.fixture
def pd(loop: Loop, faults: FaultRegistry) -> Iterator[PagerDutyStandIn]:
    s = PagerDutyStandIn(faults, {KEY})
    loop.run(s.start())
    yield s
    loop.run(s.stop())


@pytest.fixture
def sink(loop: Loop, faults: FaultRegistry) -> Iterator[SmtpSink]:
    s = SmtpSink(faults, user="greenlight", password="s3cret-pw")
    loop.run(s.start())
    yield s
    loop.run(s.stop())


def enqueue(pd: PagerDutyStandIn, body: Any) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{pd.port}/v2/enqueue", json=body, timeout=5)


def trigger(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": KEY,
        "event_action": "trigger",
        "dedup_key": "k1",
        "payload": {"summary": "s", "source": "src", "severity": "error"},
    }
    body.update(over)
    return body


def test_trigger_answers_202_with_the_dedup_key(pd: PagerDutyStandIn) -> None:
    """A valid trigger: 202 {"status": "success", "message": "Event processed", "dedup_key"}."""
    r = enqueue(pd, trigger())
    assert r.status_code == 202
    assert r.json() == {"status": "success", "message": "Event processed", "dedup_key": "k1"}


def test_trigger_without_dedup_key_gets_a_new_one(pd: PagerDutyStandIn) -> None:
    body = trigger()
    del body["dedup_key"]
    r = enqueue(pd, body)
    assert r.status_code == 202 and len(r.json()["dedup_key"]) >= 16


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (trigger(routing_key=""), "routing_key"),
        (trigger(routing_key="not-a-key-it-knows"), "Invalid routing key"),
        (trigger(event_action="escalate"), "event_action"),
        (trigger(payload={"source": "x", "severity": "error"}), "payload.summary"),
        (trigger(payload={"summary": "x", "severity": "error"}), "payload.source"),
        (trigger(payload={"summary": "x", "source": "y"}), "payload.severity"),
        (trigger(payload={"summary": "x", "source": "y", "severity": "P1"}), "payload.severity"),
        ({"routing_key": KEY, "event_action": "resolve"}, "dedup_key"),
    ],
)
def test_invalid_event_answers_400_naming_it(pd: PagerDutyStandIn, body: dict[str, Any], error: str) -> None:
    """A missing routing key/summary/source/severity, a bad action or severity, an unknown key: 400."""
    r = enqueue(pd, body)
    assert r.status_code == 400
    data = r.json()
    assert (data["status"], data["message"]) == ("invalid event", "Event object is invalid")
    assert any(error in e for e in data["errors"]), data["errors"]
    assert pd.incidents == []


def test_same_dedup_key_keeps_one_incident_and_resolve_closes_it(pd: PagerDutyStandIn) -> None:
    """A second trigger with the key of an open incident opens no second one; resolve closes it;
    a trigger after that opens a new one."""
    enqueue(pd, trigger())
    enqueue(pd, trigger())
    assert [(i["dedup_key"], i["status"], i["alerts"]) for i in pd.incidents] == [("k1", "triggered", 2)]
    r = enqueue(pd, {"routing_key": KEY, "event_action": "resolve", "dedup_key": "k1"})
    assert r.status_code == 202 and pd.incidents[0]["status"] == "resolved"
    enqueue(pd, trigger())
    assert [i["status"] for i in pd.incidents] == ["resolved", "triggered"]


def test_resolve_of_an_unknown_key_is_accepted_and_changes_nothing(pd: PagerDutyStandIn) -> None:
    r = enqueue(pd, {"routing_key": KEY, "event_action": "resolve", "dedup_key": "nothing-open"})
    assert r.status_code == 202 and pd.incidents == []


def test_rate_limit_answers_429_with_retry_after(pd: PagerDutyStandIn, faults: FaultRegistry) -> None:
    faults.add(FaultRule(target="pagerduty", status=429, retry_after=2))
    r = enqueue(pd, trigger())
    assert r.status_code == 429 and r.headers["Retry-After"] == "2"
    assert enqueue(pd, trigger()).status_code == 202


def test_client_maps_answers_to_errors_without_the_key(pd: PagerDutyStandIn, faults: FaultRegistry) -> None:
    """202 gives the key; 429 is transient with retry_after; 5xx transient; 400 permanent; the
    routing key never appears in a message."""
    client = PagerDuty(KEY, base_url=f"http://127.0.0.1:{pd.port}")
    assert client.trigger("k2", "sum", "src", "warning", {"a": 1}) == "k2"
    assert pd.incidents[-1]["custom_details"] == {"a": 1}
    faults.add(FaultRule(target="pagerduty", status=429, retry_after=3))
    with pytest.raises(TransientError) as e:
        client.trigger("k2", "sum", "src", "warning")
    assert e.value.retry_after == 3.0
    faults.add(FaultRule(target="pagerduty", status=503))
    with pytest.raises(TransientError):
        client.resolve("k2")
    wrong = PagerDuty("wrong-key-" + KEY[:6], base_url=f"http://127.0.0.1:{pd.port}")
    with pytest.raises(PermanentError) as p:
        wrong.trigger("k3", "sum", "src", "warning")
    assert "Invalid routing key" in str(p.value) and "wrong-key" not in str(p.value)
    assert KEY not in repr(client)
    dead = PagerDuty(KEY, base_url="http://127.0.0.1:9")
    with pytest.raises(TransientError) as t:
        dead.resolve("k2")
    assert KEY not in str(t.value)


def test_sink_keeps_mail_sent_with_auth(sink: SmtpSink) -> None:
    """smtplib with AUTH delivers; the sink keeps sender, recipients, subject and body."""
    m = Mailer(
        "127.0.0.1",
        sink.port or 0,
        "greenlight@lab.invalid",
        starttls=False,
        username="greenlight",
        password="s3cret-pw",
    )
    mid = m.send(["oncall@lab.invalid", "b@lab.invalid"], "[P1] production: rollback: x", "body line")
    got = sink.messages[-1]
    assert (got["from"], got["to"], got["subject"]) == (
        "greenlight@lab.invalid",
        ["oncall@lab.invalid", "b@lab.invalid"],
        "[P1] production: rollback: x",
    )
    assert "body line" in got["body"] and mid in got["raw"]


def test_mailer_errors_name_the_phase_never_the_password(sink: SmtpSink, faults: FaultRegistry) -> None:
    """A refused login is Forbidden, a 451 transient, STARTTLS the sink lacks permanent; no password."""
    port = sink.port or 0
    bad = Mailer(
        "127.0.0.1", port, "g@lab.invalid", starttls=False, username="greenlight", password="wrong-pw-123"
    )
    with pytest.raises(Forbidden) as e:
        bad.send(["a@lab.invalid"], "s", "b")
    assert "wrong-pw-123" not in str(e.value)
    faults.add(FaultRule(target="smtp", status=451))
    good = Mailer(
        "127.0.0.1", port, "g@lab.invalid", starttls=False, username="greenlight", password="s3cret-pw"
    )
    with pytest.raises(TransientError):
        good.send(["a@lab.invalid"], "s", "b")
    tls = Mailer(
        "127.0.0.1", port, "g@lab.invalid", starttls=True, username="greenlight", password="s3cret-pw"
    )
    with pytest.raises(PermanentError):
        tls.send(["a@lab.invalid"], "s", "b")
    with pytest.raises(TransientError):
        Mailer("127.0.0.1", 9, "g@lab.invalid", starttls=False).send(["a@lab.invalid"], "s", "b")
