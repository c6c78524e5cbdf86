"""Bad GitHub deliveries against the real receiver: forged, replayed, oversized, malformed, of the
wrong event or from an unknown repository. Each is answered with its documented status and
triggers nothing: no ``github.*`` event in the lab's Prefect names it, no flow run carries it.

``greenlight webhook serve`` runs as a process on a free port, emitting to the session's Prefect
server; every delivery goes over real HTTP. A trap (see ``webhook_support``) turns each event
about the fault repository into one flow run that never executes, and two valid deliveries, one
before and one after all the bad ones, must each give exactly one event and one run: the reads
that find nothing for the bad deliveries are thereby shown to find what is there. The module
sends everything once (the server persists events in batches, every few seconds), then each
case reads back its own deliveries.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prefect.client.schemas.objects import FlowRun

from greenlight.webhook.app import MAX_BODY
from greenlight.webhook.verify import resource_id
from greenlight_lab.state import LabState

from .webhook_support import (
    REPOSITORY,
    SECRET,
    Delivery,
    Receiver,
    Sent,
    Trap,
    github_events,
    headers_for,
    naming,
    new_sha,
    raw_post,
    receiver,
    run_payload,
    runs_since,
    trap,
    triggered_by,
    wait_for,
    write_route_profile,
)

if TYPE_CHECKING:
    from .conftest import Fault

pytestmark = pytest.mark.lab


@dataclass
class SentAndHealth(Sent):
    """What ``Sent`` holds, and whether the receiver answered its health check afterwards."""

    healthy_after: bool


class Sender:
    """Sends deliveries to the receiver and keeps each, with its answer, under a case."""

    def __init__(self, r: Receiver) -> None:
        self.r = r
        self.by_case: dict[str, list[Delivery]] = {}

    def keep(self, case: str, d: Delivery) -> Delivery:
        self.by_case.setdefault(case, []).append(d)
        return d

    def post(
        self,
        case: str,
        label: str,
        body: bytes,
        headers: dict[str, str],
        sha: str | None = None,
        content: Any = None,
    ) -> Delivery:
        """POST with httpx (Content-Length computed by the client, or chunked for an iterator)."""
        d = Delivery(label, headers.get("X-GitHub-Delivery", "-"), sha)
        response = httpx.post(
            self.r.url + "/github", content=body if content is None else content, headers=headers, timeout=10
        )
        d.status = response.status_code
        d.body = response.json() if response.headers.get("content-type") == "application/json" else None
        return self.keep(case, d)

    def signed(
        self,
        case: str,
        label: str,
        payload: dict[str, Any] | bytes,
        sha: str | None,
        event: str = "workflow_run",
        delivery_id: str | None = None,
        **headers: str,
    ) -> Delivery:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return self.post(
            case, label, body, {**headers_for(body, event=event, delivery_id=delivery_id), **headers}, sha
        )

    def raw(self, case: str, label: str, head: dict[str, str], body: bytes, sha: str | None) -> Delivery:
        d = Delivery(label, head.get("X-GitHub-Delivery", "-"), sha)
        d.status = raw_post(self.r.url + "/github", head, body)
        return self.keep(case, d)


def padded(sha: str, size: int) -> bytes:
    """A valid delivery body for the fault route, padded with an unread field to ``size`` bytes."""
    payload = run_payload(sha)
    payload["padding"] = ""
    filler = size - len(json.dumps(payload).encode())
    payload["padding"] = "x" * filler
    body = json.dumps(payload).encode()
    assert len(body) == size
    return body


def forged(s: Sender) -> None:
    case = "forged"
    sha = new_sha()
    body = json.dumps(run_payload(sha)).encode()
    good = headers_for(body)
    s.post(case, "other secret", body, headers_for(body, secret="guessed-secret"), sha)
    s.post(case, "zeros", body, {**headers_for(body), "X-Hub-Signature-256": "sha256=" + "0" * 64}, sha)
    no_signature = {k: v for k, v in headers_for(body).items() if k != "X-Hub-Signature-256"}
    s.post(case, "unsigned", body, no_signature, sha)
    sha1 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    s.post(case, "sha1 signature", body, {**headers_for(body), "X-Hub-Signature-256": sha1}, sha)
    tampered_sha = new_sha()
    tampered = json.dumps(run_payload(tampered_sha)).encode()
    s.post(
        case,
        "body changed after signing",
        tampered,
        {**good, "X-GitHub-Delivery": str(uuid.uuid4())},
        tampered_sha,
    )


def oversized(s: Sender) -> None:
    case = "oversized"
    sha = new_sha()
    s.signed(case, "1 MiB + 1 KiB, honest Content-Length", padded(sha, MAX_BODY + 1024), sha)
    sha = new_sha()
    body = padded(sha, 2 * MAX_BODY)

    def chunks() -> Iterator[bytes]:  # httpx sends an iterator chunked, without Content-Length
        for i in range(0, len(body), 256 * 1024):
            yield body[i : i + 256 * 1024]

    s.post(case, "2 MiB chunked, no Content-Length", body, headers_for(body), sha, content=chunks())
    sha = new_sha()
    body = padded(sha, 2 * MAX_BODY)
    head = {**headers_for(body), "Content-Length": "512"}
    s.raw(case, "Content-Length says 512, 2 MiB sent", head, body, sha)
    sha = new_sha()
    body = json.dumps(run_payload(sha)).encode()
    head = {**headers_for(body), "Content-Length": str(2 * MAX_BODY)}
    s.raw(case, "Content-Length says 2 MiB, 1 KiB sent", head, body, sha)


def malformed(s: Sender) -> None:
    case = "malformed"
    sha = new_sha()
    whole = json.dumps(run_payload(sha)).encode()
    s.signed(case, "truncated JSON", whole[: len(whole) // 2], sha)
    s.signed(case, "not UTF-8", b'{"action": "completed\xff\xfe"}', None)
    s.signed(case, "a JSON array", json.dumps([run_payload(sha)]).encode(), sha)
    missing = run_payload(new_sha())
    del missing["repository"]
    s.signed(case, "no repository field", missing, missing["workflow_run"]["head_sha"])
    wrong_type = run_payload(new_sha())
    wrong_type["workflow_run"]["head_sha"] = 12345
    s.signed(case, "sha not a string", wrong_type, None)
    form_sha = new_sha()
    form = f"payload={json.dumps(run_payload(form_sha))}".encode()
    s.signed(case, "form-encoded", form, form_sha, **{"Content-Type": "application/x-www-form-urlencoded"})
    s.signed(case, "malformed delivery id", run_payload(sha), sha, delivery_id="../../etc/passwd")


def wrong_event(s: Sender) -> None:
    case = "wrong-event"
    for event in ("issues", "push", "workflow_job", "check_run"):
        sha = new_sha()
        s.signed(case, f"event {event}", run_payload(sha), sha, event=event)
    for action in ("requested", "in_progress"):
        sha = new_sha()
        payload = run_payload(sha)
        payload["action"] = action
        payload["workflow_run"]["conclusion"] = None
        s.signed(case, f"workflow_run {action}", payload, sha)
    for conclusion in ("failure", "cancelled", None):
        sha = new_sha()
        s.signed(case, f"completed, conclusion {conclusion}", run_payload(sha, conclusion=conclusion), sha)
    sha = new_sha()
    s.signed(case, "other workflow", run_payload(sha, workflow="lint"), sha)
    sha = new_sha()
    s.signed(case, "branch that releases nothing", run_payload(sha, branch="feature/x"), sha)


def unknown_repository(s: Sender) -> None:
    case = "unknown-repository"
    for repository in ("greenlight-faults/unknown", "greenlight-faults/webhook-fork", "someone/webhook"):
        sha = new_sha()
        s.signed(case, repository, run_payload(sha, repository=repository), sha)


@pytest.fixture(scope="module")
def sent(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentAndHealth]:
    """One valid delivery, every bad one, replays (also after a restart), one more valid delivery;
    then what Prefect holds once the last valid delivery's event and run are visible."""
    from prefect.types._datetime import now

    started = time.monotonic()
    since = now("UTC")
    state = tmp_path_factory.mktemp("webhook-faults")
    environments = write_route_profile(tmp_path_factory.mktemp("webhook-fault-envs"))
    with trap() as t, receiver(state, environments) as r:
        s = Sender(r)
        first_sha = new_sha()
        first_body = json.dumps(run_payload(first_sha)).encode()
        first_headers = headers_for(first_body)
        s.post("control", "valid delivery", first_body, first_headers, first_sha)
        forged(s)
        oversized(s)
        malformed(s)
        wrong_event(s)
        unknown_repository(s)
        # replays of the accepted delivery: as is, five at once, with another (signed) body
        s.post("replay", "same delivery again", first_body, first_headers)
        with ThreadPoolExecutor(5) as pool:
            list(
                pool.map(
                    lambda i: s.post("replay", f"concurrent copy {i}", first_body, first_headers), range(5)
                )
            )
        other_sha = new_sha()
        other = json.dumps(run_payload(other_sha)).encode()
        s.post(
            "replay",
            "same id, other body",
            other,
            {**headers_for(other), "X-GitHub-Delivery": first_headers["X-GitHub-Delivery"]},
            other_sha,
        )
        # a new delivery sent five times at once (a redelivery racing the original)
        race_sha = new_sha()
        race_body = json.dumps(run_payload(race_sha)).encode()
        race_headers = headers_for(race_body)
        with ThreadPoolExecutor(5) as pool:
            list(pool.map(lambda i: s.post("race", f"copy {i}", race_body, race_headers, race_sha), range(5)))
        r.stop()
        r.start()
        s.post("replay", "same delivery after a restart", first_body, first_headers)
        last_sha = new_sha()
        s.signed("control", "valid delivery after the faults", run_payload(last_sha), last_sha)
        healthy = httpx.get(r.url + "/healthz", timeout=5).status_code == 200
        accepted = [*s.by_case["control"], s.by_case["race"][0]]
        wait_for("the accepted deliveries' runs", lambda: len(runs_of(t, accepted)) == 3)
        wait_for(
            "the accepted deliveries' events",
            lambda: triggered_by(accepted, github_events(since), []) == 3,
        )
        sent = SentAndHealth(s.by_case, github_events(since), runs_since(since), t.runs(), healthy)
        n = sum(len(v) for v in s.by_case.values())
        print(f"{n} deliveries sent and read back in {time.monotonic() - started:.1f} s")
        yield sent


def runs_of(t: Trap, deliveries: list[Delivery]) -> list[FlowRun]:
    ids = {d.delivery_id for d in deliveries}
    return [r for r in t.runs() if r.parameters.get("delivery") in ids]


def statuses(sent: Sent, case: str) -> dict[str, int | None]:
    return {d.label: d.status for d in sent.by_case[case]}


def nothing_triggered(fault: Fault, sent: Sent, case: str) -> None:
    """The case's deliveries named by no event and no flow run: the loss measured, asserted zero."""
    fault.injected_by_hand(len(sent.by_case[case]))
    n = fault.measured_loss("runs or events triggered", sent.triggered(case))
    assert n == 0, [
        (e.event, e.payload) for e in sent.events if triggered_by(sent.by_case[case], [e], []) == 1
    ]


def test_valid_deliveries_each_emit_one_event_and_start_one_run(sent: SentAndHealth) -> None:
    """Control: a valid signed delivery, before and after all the bad ones, is accepted and gives exactly one event and one run."""
    controls = sent.by_case["control"]
    assert [d.status for d in controls] == [202, 202]
    assert all(
        d.body and d.body["emitted"] is True and d.body["environment"] == "faults-webhook" for d in controls
    )
    for d in controls:
        events = [e for e in sent.events if e.id == d.event_id]
        assert len(events) == 1 and events[0].resource.id == resource_id(REPOSITORY)
        assert events[0].payload["sha"] == d.sha and events[0].payload["delivery"] == d.delivery_id
        assert triggered_by([d], sent.events, sent.runs) == 2  # its event and its run
    race_sha = sent.by_case["race"][0].sha
    accepted_shas = sorted(str(sha) for sha in [race_sha, *(d.sha for d in controls)])
    assert sorted(r.parameters["sha"] for r in sent.trap_runs) == accepted_shas
    assert sent.healthy_after


def test_forged_deliveries_are_refused_and_trigger_nothing(fault: Fault, sent: Sent) -> None:
    """Wrong secret, zeros, no signature, a sha1 signature or a body changed after signing: 401, nothing triggered."""
    fault.describe("webhook: forged signatures (5 kinds)")
    assert set(statuses(sent, "forged").values()) == {401}, statuses(sent, "forged")
    nothing_triggered(fault, sent, "forged")


def test_replayed_delivery_triggers_nothing_more(fault: Fault, sent: Sent) -> None:
    """An accepted delivery sent again (as is, five at once, with another body, after a restart): 200 duplicate, still one event and one run."""
    fault.describe("webhook: replays of an accepted delivery (8, concurrent and after restart)")
    replays = sent.by_case["replay"]
    assert {d.status for d in replays} == {200}, statuses(sent, "replay")
    assert all(d.body == {"duplicate": True} for d in replays)
    first = sent.by_case["control"][0]
    fault.injected_by_hand(len(replays))
    # the accepted delivery's own event and run and nothing more; nothing at all for the other body
    extra = triggered_by([first], sent.events, sent.runs) - 2
    extra += naming(sent.events, sent.runs, {d.sha for d in replays if d.sha})
    assert fault.measured_loss("runs or events triggered", extra) == 0


def test_simultaneous_copies_of_a_new_delivery_emit_once(fault: Fault, sent: Sent) -> None:
    """Five copies of a new delivery at once: one 202 emitted, four 200 duplicate, one event and one run."""
    fault.describe("webhook: 5 simultaneous copies of a new delivery")
    copies = sent.by_case["race"]
    assert sorted(d.status or 0 for d in copies) == [200, 200, 200, 200, 202], statuses(sent, "race")
    fault.injected_by_hand(len(copies) - 1)
    extra = triggered_by(copies[:1], sent.events, sent.runs) - 2  # its one event and its one run
    assert fault.measured_loss("runs or events triggered", extra) == 0


def test_oversized_deliveries_are_refused_and_trigger_nothing(fault: Fault, sent: Sent) -> None:
    """Bodies over 1 MiB are 413 (declared, or found while streaming chunked); a Content-Length that
    understates is read as declared, so the signature fails (401); nothing triggered."""
    fault.describe("webhook: oversized bodies (>1 MiB; lying Content-Length)")
    assert statuses(sent, "oversized") == {
        "1 MiB + 1 KiB, honest Content-Length": 413,
        "2 MiB chunked, no Content-Length": 413,
        "Content-Length says 512, 2 MiB sent": 401,
        "Content-Length says 2 MiB, 1 KiB sent": 413,
    }
    nothing_triggered(fault, sent, "oversized")


def test_malformed_deliveries_are_refused_and_trigger_nothing(fault: Fault, sent: Sent) -> None:
    """Signed but malformed (truncated, not UTF-8, not an object, a field missing or mistyped, a bad
    delivery id): 400; form-encoded: 415; nothing triggered."""
    fault.describe("webhook: malformed signed bodies (7 kinds)")
    expected = {label: 400 for label in statuses(sent, "malformed")} | {"form-encoded": 415}
    assert statuses(sent, "malformed") == expected
    nothing_triggered(fault, sent, "malformed")


def test_wrong_events_are_ignored_and_trigger_nothing(fault: Fault, sent: Sent) -> None:
    """Other event types, a run not completed or not successful, another workflow or branch: 202 ignored, nothing triggered."""
    fault.describe("webhook: wrong event, action, conclusion, workflow or branch (11)")
    assert set(statuses(sent, "wrong-event").values()) == {202}, statuses(sent, "wrong-event")
    assert all(d.body and "ignored" in d.body for d in sent.by_case["wrong-event"])
    nothing_triggered(fault, sent, "wrong-event")


def test_unknown_repositories_are_ignored_and_trigger_nothing(fault: Fault, sent: Sent) -> None:
    """A successful run of a repository no profile names (even a look-alike) is 202 ignored and triggers nothing."""
    fault.describe("webhook: unknown repositories (3)")
    assert set(statuses(sent, "unknown-repository").values()) == {202}
    assert all("is not configured" in d.body["ignored"] for d in sent.by_case["unknown-repository"])
    nothing_triggered(fault, sent, "unknown-repository")
