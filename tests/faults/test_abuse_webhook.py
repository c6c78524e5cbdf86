"""Abuse of deliveries that GitHub really signed, against the real receiver: an old signed body
replayed under a new ``X-GitHub-Delivery`` id (the header is not signed), and a run of our
workflow from a fork's pull request on the release branch (GitHub signs that too). Neither may
start a release: no ``github.*`` event in the lab's Prefect names it beyond what was accepted
before, no flow run carries it.

As in ``test_webhook_faults``: ``greenlight webhook serve`` runs as a process on a free port
emitting to the session's Prefect, a trap turns every event about the fault repository into one
flow run that never executes, and two valid deliveries, one before and one after the abuse, must
each give exactly one event and one run, so that the reads finding nothing are shown to find
what is there.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from greenlight_lab.state import LabState

from .webhook_support import (
    REPOSITORY,
    Delivery,
    Receiver,
    Sent,
    github_events,
    headers_for,
    naming,
    new_sha,
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

FORK = "greenlight-faults-evil/webhook"  # a fork of REPOSITORY under another owner


class Sender:
    """POSTs signed bodies to a receiver and keeps each delivery, with its answer, under a case."""

    def __init__(self) -> None:
        self.by_case: dict[str, list[Delivery]] = {}

    def post(
        self, r: Receiver, case: str, label: str, body: bytes, sha: str, delivery_id: str | None = None
    ) -> Delivery:
        headers = headers_for(body, delivery_id=delivery_id)
        d = Delivery(label, headers["X-GitHub-Delivery"], sha)
        response = httpx.post(r.url + "/github", content=body, headers=headers, timeout=10)
        d.status, d.body = response.status_code, response.json()
        self.by_case.setdefault(case, []).append(d)
        return d


@pytest.fixture(scope="module")
def sent(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    """A valid delivery; its signed body replayed under new delivery ids (to the same receiver,
    after its restart, and to a second receiver with a dedupe file of its own); signed runs of a
    fork's pull request on the release branch; one more valid delivery. Then what Prefect holds
    once the valid deliveries' events and runs are visible."""
    from prefect.types._datetime import now

    since = now("UTC")
    environments = write_route_profile(tmp_path_factory.mktemp("abuse-webhook-envs"))
    state, other_state = (tmp_path_factory.mktemp(f"abuse-webhook-{n}") for n in (1, 2))
    s = Sender()
    with trap() as t, receiver(state, environments) as r, receiver(other_state, environments) as other:
        first_sha = new_sha()
        first = json.dumps(run_payload(first_sha)).encode()
        s.post(r, "control", "valid delivery", first, first_sha)
        # the same signed bytes, each time under a delivery id never seen: what anyone holding an
        # old delivery (a proxy's log, GitHub's "Recent Deliveries" page) can send
        s.post(r, "replay", "old body, new delivery id", first, first_sha, str(uuid.uuid4()))
        r.stop()
        r.start()
        s.post(r, "replay", "old body, new delivery id, after a restart", first, first_sha, str(uuid.uuid4()))
        s.post(
            other, "replay", "old body, new delivery id, other receiver", first, first_sha, str(uuid.uuid4())
        )
        for trigger in ("pull_request", "pull_request_target"):
            sha = new_sha()
            payload = run_payload(sha, event=trigger, head_repository=FORK)
            s.post(r, "fork", f"{trigger} from {FORK} on develop", json.dumps(payload).encode(), sha)
        last_sha = new_sha()
        s.post(
            r,
            "control",
            "valid delivery after the abuse",
            json.dumps(run_payload(last_sha)).encode(),
            last_sha,
        )
        controls = s.by_case["control"]
        ids = {d.delivery_id for d in controls}
        wait_for(
            "the valid deliveries' runs",
            lambda: len([x for x in t.runs() if x.parameters.get("delivery") in ids]) == 2,
        )
        wait_for(  # at least: what a replay adds is for the cases to count
            "the valid deliveries' events",
            lambda: ids <= {e.payload.get("delivery") for e in github_events(since)},
        )
        yield Sent(s.by_case, github_events(since), runs_since(since), t.runs())


def statuses(sent: Sent, case: str) -> dict[str, tuple[int | None, Any]]:
    return {d.label: (d.status, d.body) for d in sent.by_case[case]}


def test_valid_deliveries_each_emit_one_event_and_start_one_run(sent: Sent) -> None:
    """Control: a valid delivery before and after the abuse is accepted, with one event and one run each."""
    controls = sent.by_case["control"]
    assert [d.status for d in controls] == [202, 202], statuses(sent, "control")
    for d in controls:
        [event] = [e for e in sent.events if e.id == d.event_id]
        assert event.payload["sha"] == d.sha and event.payload["delivery"] == d.delivery_id
        assert triggered_by([d], sent.events, sent.runs) == 2  # its event and its run
    assert sorted(r.parameters["sha"] for r in sent.trap_runs) == sorted(str(d.sha) for d in controls)


def test_old_signed_delivery_replayed_under_a_new_delivery_id_starts_nothing(
    fault: Fault, sent: Sent
) -> None:
    """The accepted body sent again under fresh delivery ids: 200 duplicate from its receiver (also
    after a restart); a second receiver, knowing nothing of it, emits it under the same event id,
    which Prefect drops. Still one event and one run in all."""
    fault.describe("webhook: an old signed delivery replayed under a new delivery id")
    replays = sent.by_case["replay"]
    fault.injected_by_hand(len(replays))
    first = sent.by_case["control"][0]
    marks = {first.delivery_id, str(first.sha)} | {d.delivery_id for d in replays}
    # beyond the accepted delivery's own event and run (measured before the answers are checked,
    # so that the report shows what a replay started when it did)
    events = fault.measured_loss("events emitted", naming(sent.events, [], marks, {first.event_id}) - 1)
    runs = fault.measured_loss("releases started", naming([], sent.runs, marks) - 1)
    assert statuses(sent, "replay") == {
        "old body, new delivery id": (200, {"duplicate": True}),
        "old body, new delivery id, after a restart": (200, {"duplicate": True}),
        "old body, new delivery id, other receiver": (
            202,
            {"emitted": True, "environment": "faults-webhook", "sha": replays[0].sha},
        ),
    }
    assert {d.event_id for d in replays} == {first.event_id}  # one run, one event id
    assert (events, runs) == (0, 0), [
        (e.id, e.payload) for e in sent.events if e.payload.get("sha") == first.sha
    ]


def test_signed_pull_request_run_from_a_fork_starts_nothing(fault: Fault, sent: Sent) -> None:
    """A fork's pull request runs our workflow in our repository, on its branch 'develop', and
    GitHub signs the delivery: 202 ignored naming the fork, no event, no run."""
    fault.describe("webhook: a signed pull_request run from a fork on the release branch")
    forks = sent.by_case["fork"]
    fault.injected_by_hand(len(forks))
    events = fault.measured_loss("events emitted", triggered_by(forks, sent.events, []))
    runs = fault.measured_loss("releases started", triggered_by(forks, [], sent.runs))
    expected = (202, {"ignored": f"run from fork {FORK}, not {REPOSITORY}"})
    assert statuses(sent, "fork") == {d.label: expected for d in forks}
    assert (events, runs) == (0, 0)
