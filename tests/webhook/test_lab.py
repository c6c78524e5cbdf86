"""The receiver against the lab's real Prefect server: signed deliveries become events that the
API returns and an automation's trigger sees; replayed and forged ones add nothing."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.automations import Automation
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.events.actions import DoNothing
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter, EventResourceFilter
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ReceivedEvent

from greenlight.core.commit_proof import proof_problem, vouch
from greenlight.settings import load_profile
from greenlight.webhook.app import (
    SECRET_BLOCK_ENV,
    SECRET_ENV,
    SecretSource,
    create_app,
    load_routes,
)
from greenlight.webhook.dedupe import DeliveryStore
from greenlight.webhook.verify import EVENT_NAME, RunIdentity
from greenlight_lab.state import LAB_APPROVAL_SIGNING_KEY, LAB_ENVIRONMENTS, LabState

from .support import REPO, SECRET, AppClient, delivery, run_payload

pytestmark = pytest.mark.lab

RESOURCE = "github.repo.sma-platform/sma"
PERSIST_WAIT_S = 6.5  # the server's event persister flushes every 5 s


@dataclass
class Sent:
    """What the module sent and what Prefect holds afterwards."""

    delivery_id: str
    run: RunIdentity
    sha: str
    forged_sha: str
    main_sha: str
    responses: dict[str, httpx.Response]
    elapsed_s: float
    events: list[ReceivedEvent]
    automation_events: list[ReceivedEvent]


def read_events(names: list[str], resource: str, since: Any) -> list[ReceivedEvent]:
    """Events named ``names`` about ``resource`` since ``since``, from the Prefect API (POST /events/filter)."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(name=names),
                resource=EventResourceFilter(id=[resource]),
                occurred=EventOccurredFilter(since=since),
            ),
            limit=50,
        )
    return list(page.events)


@pytest.fixture(scope="module")
def sent(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sent]:
    """A signed develop run, its replay and a forged run sent to a receiver emitting to the lab's
    Prefect, with an automation watching for the event; read back once the server persisted them."""
    from prefect.types._datetime import now

    since = now("UTC")
    automation = Automation(
        name=f"webhook-test-{uuid.uuid4().hex[:8]}",
        trigger=EventTrigger(
            expect={EVENT_NAME},
            match={"prefect.resource.id": RESOURCE, "greenlight.environment": "staging"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[DoNothing()],
    ).create()
    time.sleep(1.0)  # the triggers service loads new automations asynchronously
    app = create_app(
        routes=load_routes(LAB_ENVIRONMENTS),
        store=DeliveryStore(tmp_path_factory.mktemp("webhook") / "state.sqlite"),
        secret=SecretSource(SECRET),
    )
    client = AppClient(app)
    sha, forged_sha, main_sha = (uuid.uuid4().hex + "0" * 8 for _ in range(3))
    run_id, main_run_id = (uuid.uuid4().int % 10**11 + 1 for _ in range(2))  # new runs on a lab that persists
    body, headers = delivery(run_payload(sha=sha, actor="erin", run_id=run_id))
    started = time.monotonic()
    responses = {"signed": client.post("/github", content=body, headers=headers)}
    elapsed = time.monotonic() - started
    responses["replay"] = client.post("/github", content=body, headers=headers)
    new_id = {**headers, "X-GitHub-Delivery": str(uuid.uuid4())}
    responses["replay under a new delivery id"] = client.post("/github", content=body, headers=new_id)
    other_receiver = AppClient(
        create_app(
            routes=load_routes(LAB_ENVIRONMENTS),
            store=DeliveryStore(tmp_path_factory.mktemp("webhook-2") / "state.sqlite"),
            secret=SecretSource(SECRET),
        )
    )
    responses["other receiver"] = other_receiver.post("/github", content=body, headers=new_id)
    forged_body, forged_headers = delivery(run_payload(sha=forged_sha), secret="guessed")
    responses["forged"] = client.post("/github", content=forged_body, headers=forged_headers)
    main_body, main_headers = delivery(run_payload(sha=main_sha, branch="main", run_id=main_run_id))
    responses["main"] = client.post("/github", content=main_body, headers=main_headers)
    time.sleep(PERSIST_WAIT_S)
    try:
        yield Sent(
            delivery_id=headers["X-GitHub-Delivery"],
            run=RunIdentity("sma-platform/sma", run_id, 1),
            sha=sha,
            forged_sha=forged_sha,
            main_sha=main_sha,
            responses=responses,
            elapsed_s=elapsed,
            events=read_events([EVENT_NAME], RESOURCE, since),
            automation_events=read_events(
                ["prefect.automation.triggered"], f"prefect.automation.{automation.id}", since
            ),
        )
    finally:
        automation.delete()


def test_signed_develop_run_becomes_a_prefect_event(sent: Sent) -> None:
    """A signed develop run is answered 202 within a second and the API then holds its event and payload."""
    assert sent.responses["signed"].status_code == 202
    assert sent.responses["signed"].json() == {"emitted": True, "environment": "staging", "sha": sent.sha}
    assert sent.elapsed_s < 1.0
    [event] = [e for e in sent.events if e.payload.get("sha") == sent.sha]
    assert event.id == sent.run.event_id
    assert event.resource.id == RESOURCE
    assert event.payload == {
        "sha": sent.sha,
        "branch": "develop",
        "actor": "erin",
        "delivery": sent.delivery_id,
        "environment": "staging",
        "repository": "sma-platform/sma",
        "workflow": "build-images",
        "run_url": f"https://github.com/sma-platform/sma/actions/runs/{sent.run.run_id}",
        "run_id": sent.run.run_id,
        "run_attempt": 1,
        "commit_at": "2026-11-30T15:20:05+00:00",
        # the lab receiver's key comes from the lab's environment ($GREENLIGHT_APPROVAL_SIGNING_KEY)
        "commit_proof": vouch(
            LAB_APPROVAL_SIGNING_KEY, REPO, sent.sha, "2026-11-30T15:20:05+00:00", sent.run.run_id
        ),
    }
    staging = load_profile("staging", LAB_ENVIRONMENTS).github
    assert staging is not None
    assert proof_problem(
        staging.receiver_keys, event.payload["commit_proof"], staging.repository, sent.sha, event.payload["commit_at"]
    ) is None  # fmt: skip


def test_replay_emits_nothing_more(sent: Sent) -> None:
    """The replay, as is or under a new delivery id, is answered 200 duplicate; a copy that reaches
    a receiver with its own dedupe file is emitted with the same event id, which Prefect drops: the
    API holds one event for the sha, not two (and the trigger fires once, below)."""
    for replay in ("replay", "replay under a new delivery id"):
        assert (sent.responses[replay].status_code, sent.responses[replay].json()) == (
            200,
            {"duplicate": True},
        ), replay
    assert sent.responses["other receiver"].status_code == 202
    assert len([e for e in sent.events if e.payload.get("sha") == sent.sha]) == 1


def test_forged_delivery_emits_nothing(sent: Sent) -> None:
    """A delivery signed with a guessed secret is refused with 401 and no event carries its sha."""
    assert sent.responses["forged"].status_code == 401
    assert [e for e in sent.events if e.payload.get("sha") == sent.forged_sha] == []


def test_main_run_emits_an_event_for_production(sent: Sent) -> None:
    """A main-branch run becomes an event whose resource and payload name production (a promotion still awaits approval)."""
    assert sent.responses["main"].json()["environment"] == "production"
    [event] = [e for e in sent.events if e.payload.get("sha") == sent.main_sha]
    assert (event.resource["greenlight.environment"], event.resource["github.branch"]) == (
        "production",
        "main",
    )


def test_a_trigger_on_the_staging_label_fires_once_for_the_develop_run(sent: Sent) -> None:
    """A trigger matching resource label greenlight.environment=staging fires once, on the develop run's event only."""
    triggering = [r.id for e in sent.automation_events for r in e.related if r.role == "triggering-event"]
    assert triggering == [f"prefect.event.{sent.run.event_id}"]


def test_secret_from_a_prefect_secret_block(
    lab: LabState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the env secret, the Secret block named by GREENLIGHT_GITHUB_WEBHOOK_SECRET_BLOCK verifies deliveries."""
    Secret(value="from-the-block").save("greenlight-webhook-test", overwrite=True)
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.setenv(SECRET_BLOCK_ENV, "greenlight-webhook-test")
    client = AppClient(
        create_app(routes=(), store=DeliveryStore(tmp_path / "s.sqlite"), secret=SecretSource())
    )
    assert (
        client.post(
            "/github", **_kw(delivery({"zen": "z"}, event="ping", secret="from-the-block"))
        ).status_code
        == 200
    )
    assert (
        client.post("/github", **_kw(delivery({"zen": "z"}, event="ping", secret=SECRET))).status_code == 401
    )
    monkeypatch.setenv(SECRET_BLOCK_ENV, "no-such-block")
    missing = AppClient(
        create_app(routes=(), store=DeliveryStore(tmp_path / "s.sqlite"), secret=SecretSource())
    )
    response = missing.post("/github", **_kw(delivery({"zen": "z"}, event="ping", secret="from-the-block")))
    assert (response.status_code, response.json()) == (503, {"error": "webhook secret not configured"})


def _kw(sent: tuple[bytes, dict[str, str]]) -> dict[str, Any]:
    return {"content": sent[0], "headers": sent[1]}
