"""The receiver over ASGI: status codes for every kind of delivery, dedupe, and its log lines.

Events go to a recording emitter (our own Emitter interface), so these tests need no Prefect;
test_lab.py sends them to the lab's real Prefect server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from greenlight.core.approval import new_signing_key, public_key_of
from greenlight.core.commit_proof import proof_problem
from greenlight.webhook.app import (
    SECRET_BLOCK_ENV,
    SECRET_ENV,
    PrefectEmitter,
    SecretSource,
    create_app,
    load_routes,
)
from greenlight.webhook.dedupe import DeliveryStore
from greenlight.webhook.verify import Route, sign
from greenlight_lab.state import LAB_APPROVAL_SIGNING_KEY, LAB_ENVIRONMENTS

from .support import (
    RECEIVER_KEY,
    RECEIVER_PUBLIC,
    REPO,
    ROUTES,
    RUN_ID,
    SECRET,
    WORKFLOW,
    AppClient,
    RecordingEmitter,
    delivery,
    run_payload,
)

MiB = 1024 * 1024


@pytest.fixture
def emitter() -> RecordingEmitter:
    return RecordingEmitter()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "webhook.sqlite"


def make_app(
    state: Path,
    emitter: RecordingEmitter,
    secret: str | None = SECRET,
    signing_key: str | None = RECEIVER_KEY,
) -> Starlette:
    """The receiver with the lab's routes, its dedupe file at ``state``, a fixed secret and a fixed
    approval signing key (None: none configured)."""
    key = SecretSource(signing_key, env=None, block_env=None, what="approval signing key")
    return create_app(
        routes=ROUTES,
        store=DeliveryStore(state),
        secret=SecretSource(secret),
        emitter=emitter,
        signing_key=key,
    )


@pytest.fixture
def client(state: Path, emitter: RecordingEmitter) -> AppClient:
    return AppClient(make_app(state, emitter))


def post(client: AppClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post("/github", content=body, headers=headers)


def test_signed_successful_develop_run_emits_one_event_for_staging(
    client: AppClient, emitter: RecordingEmitter
) -> None:
    """A signed, successful develop run answers 202 emitted for staging and emits the documented event."""
    body, headers = delivery(run_payload(sha="abc123"), delivery_id="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    response = post(client, body, headers)
    assert response.status_code == 202
    assert response.json() == {"emitted": True, "environment": "staging", "sha": "abc123"}
    [event] = emitter.events
    assert event["event"] == "github.workflow_run.completed"
    assert event["resource"] == {
        "prefect.resource.id": "github.repo.sma-platform/sma",
        "prefect.resource.name": "sma-platform/sma",
        "github.branch": "develop",
        "greenlight.environment": "staging",
    }
    assert event["payload"]["delivery"] == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert event["payload"]["environment"] == "staging"


def test_event_id_is_derived_from_the_signed_run_not_the_delivery_header(state: Path) -> None:
    """One run attempt gets one event id whatever X-GitHub-Delivery says (so Prefect drops a copy sent
    through another receiver); another attempt or another run gets another id."""
    sent = [
        (run_payload(), "d-1"),
        (run_payload(), "d-2"),
        (run_payload(run_attempt=2), "d-3"),
        (run_payload(run_id=RUN_ID + 1), "d-4"),
    ]
    ids = []
    for n, (payload, delivery_id) in enumerate(sent):
        emitter = RecordingEmitter()
        c = AppClient(make_app(state.with_name(f"s{n}.sqlite"), emitter))
        post(c, *delivery(payload, delivery_id=delivery_id))
        ids.append(emitter.events[0]["id"])
    assert isinstance(ids[0], uuid.UUID)
    assert ids[0] == ids[1], "the same signed run under two delivery ids must be one event"
    assert len({ids[0], ids[2], ids[3]}) == 3


def test_old_signed_delivery_replayed_under_a_new_delivery_id_is_a_duplicate(
    client: AppClient, emitter: RecordingEmitter
) -> None:
    """The X-GitHub-Delivery header is not signed: an old signed body sent again under a fresh
    delivery id is the same run, answered 200 duplicate, and starts nothing."""
    body, headers = delivery(run_payload(sha="0ld5ha"), delivery_id="d-original")
    assert post(client, body, headers).status_code == 202
    replay = {**headers, "X-GitHub-Delivery": "d-replayed-later"}
    response = post(client, body, replay)
    assert (response.status_code, response.json()) == (200, {"duplicate": True})
    assert [e["payload"]["delivery"] for e in emitter.events] == ["d-original"]


def test_duplicate_log_line_names_the_run_and_the_delivery_that_brought_it(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The log line of a replay says which run it repeats and which delivery emitted it first."""
    body, headers = delivery(run_payload(), delivery_id="d-first")
    post(client, body, headers)
    with caplog.at_level(logging.INFO, logger="greenlight.webhook"):
        post(client, body, {**headers, "X-GitHub-Delivery": "d-again"})
    [line] = [r.getMessage() for r in caplog.records if r.name == "greenlight.webhook"]
    assert line == (
        "delivery=d-again event=workflow_run decision=duplicate status=200 "
        f"reason=run {REPO}/actions/runs/{RUN_ID}/attempts/1 already emitted (delivery d-first)"
    )


def test_a_rerun_of_the_same_run_is_a_new_release(client: AppClient, emitter: RecordingEmitter) -> None:
    """GitHub's "Re-run" of a workflow gives the same run id a new run_attempt: that releases again."""
    assert post(client, *delivery(run_payload())).status_code == 202
    response = post(client, *delivery(run_payload(run_attempt=2)))
    assert (response.status_code, response.json()["emitted"]) == (202, True)
    assert len(emitter.events) == 2


def test_the_same_run_in_another_repository_is_not_a_duplicate(
    state: Path, emitter: RecordingEmitter
) -> None:
    """Run ids are only unique with their repository: the same id in another configured repository releases."""
    other = Route("qa", "sma-platform/other", WORKFLOW, "develop")
    app = create_app(
        routes=(*ROUTES, other), store=DeliveryStore(state), secret=SecretSource(SECRET), emitter=emitter
    )
    c = AppClient(app)
    assert post(c, *delivery(run_payload())).status_code == 202
    response = post(c, *delivery(run_payload(repository="sma-platform/other")))
    assert (response.status_code, response.json()["environment"]) == (202, "qa")
    assert len(emitter.events) == 2 and emitter.events[0]["id"] != emitter.events[1]["id"]


def test_concurrent_copies_of_one_run_under_new_delivery_ids_emit_once(state: Path) -> None:
    """Five copies of one signed body, each with its own delivery id, arriving together, emit one event."""
    emitter = SlowEmitter()
    body, headers = delivery(run_payload())
    copies = [{**headers, "X-GitHub-Delivery": f"d-{i}"} for i in range(5)]
    responses = post_together(make_app(state, emitter), body, copies)
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 202]
    assert len(emitter.events) == 1


def test_signed_pull_request_run_from_a_fork_on_the_release_branch_is_ignored(
    client: AppClient, emitter: RecordingEmitter
) -> None:
    """A fork's pull request runs our workflow in our repository, on a branch it names 'develop':
    signed by GitHub, yet not ours. 202 ignored naming the fork; nothing emitted."""
    payload = run_payload(trigger="pull_request", head_repository="evil/sma", branch="develop")
    response = post(client, *delivery(payload))
    assert (response.status_code, response.json()) == (
        202,
        {"ignored": "run from fork evil/sma, not sma-platform/sma"},
    )
    assert emitter.events == []


def test_signed_pull_request_run_from_our_own_repository_is_ignored(
    client: AppClient, emitter: RecordingEmitter
) -> None:
    """Only a push releases: a pull_request run from a branch of our own repository is ignored too."""
    response = post(client, *delivery(run_payload(trigger="pull_request")))
    assert (response.status_code, response.json()) == (202, {"ignored": "event pull_request, not push"})
    assert emitter.events == []


def test_main_run_emits_for_production_and_nothing_else(client: AppClient, emitter: RecordingEmitter) -> None:
    """A main-branch run only emits an event naming production; the approval happens in the flow."""
    response = post(client, *delivery(run_payload(branch="main")))
    assert (response.status_code, response.json()["environment"]) == (202, "production")
    assert len(emitter.events) == 1


@pytest.mark.parametrize(
    ("signature", "name"),
    [("sha256=" + "0" * 64, "forged"), ("", "missing"), ("sha1=" + "0" * 40, "other algorithm")],
)
def test_bad_signature_is_401_without_detail_and_emits_nothing(
    client: AppClient, emitter: RecordingEmitter, signature: str, name: str
) -> None:
    """A forged, missing or non-SHA-256 signature answers 401 'unauthorized' and emits nothing."""
    body, headers = delivery(run_payload(), signature=signature)
    if not signature:
        del headers["X-Hub-Signature-256"]
    response = post(client, body, headers)
    assert (response.status_code, response.json()) == (401, {"error": "unauthorized"}), name
    assert emitter.events == []


def test_signed_with_another_secret_is_401(client: AppClient, emitter: RecordingEmitter) -> None:
    """A delivery signed with a different secret is refused."""
    response = post(client, *delivery(run_payload(), secret="not the secret"))
    assert response.status_code == 401 and emitter.events == []


def test_no_secret_configured_is_503_even_for_a_signed_delivery(
    state: Path, emitter: RecordingEmitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the env secret and the block name, every delivery is refused with 503 (never accepted unsigned)."""
    monkeypatch.delenv(SECRET_ENV, raising=False)
    monkeypatch.delenv(SECRET_BLOCK_ENV, raising=False)
    app = create_app(routes=ROUTES, store=DeliveryStore(state), secret=SecretSource(), emitter=emitter)
    c = AppClient(app)
    response = post(c, *delivery(run_payload()))
    assert (response.status_code, response.json()) == (503, {"error": "webhook secret not configured"})
    assert emitter.events == []


def test_secret_comes_from_the_environment(
    state: Path, emitter: RecordingEmitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GREENLIGHT_GITHUB_WEBHOOK_SECRET is the secret when no value is given."""
    monkeypatch.setenv(SECRET_ENV, "from-env")
    app = create_app(routes=ROUTES, store=DeliveryStore(state), secret=SecretSource(), emitter=emitter)
    c = AppClient(app)
    assert post(c, *delivery({"zen": "z"}, event="ping", secret="from-env")).status_code == 200
    assert post(c, *delivery({"zen": "z"}, event="ping", secret=SECRET)).status_code == 401


def test_oversized_body_is_413(client: AppClient, emitter: RecordingEmitter) -> None:
    """A body over 1 MiB answers 413, even correctly signed."""
    payload = run_payload()
    payload["padding"] = "x" * MiB
    response = post(client, *delivery(payload))
    assert response.status_code == 413 and emitter.events == []


def test_lying_content_length_is_cut_off_at_the_limit(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A body that claims 10 bytes but streams 2 MiB is stopped while streaming, at the limit, with 413."""
    body, headers = delivery(b"{" + b" " * (2 * MiB) + b"}")
    headers["Content-Length"] = "10"
    with caplog.at_level(logging.INFO, logger="greenlight.webhook"):
        assert post(client, body, headers).status_code == 413
    assert "body exceeded the limit while streaming" in caplog.text


def test_chunked_body_without_length_is_cut_off_at_the_limit(client: AppClient) -> None:
    """A chunked body with no Content-Length is counted while it streams and refused past 1 MiB."""
    _, headers = delivery(b"{}")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    response = client.post("/github", content=chunks(), headers=headers)
    assert response.status_code == 413


def test_non_numeric_content_length_is_400(client: AppClient) -> None:
    """A Content-Length that is not a number is a malformed request."""
    body, headers = delivery(b"{}")
    headers["Content-Length"] = "ten"
    assert post(client, body, headers).status_code == 400


def test_body_of_exactly_the_limit_is_read(client: AppClient) -> None:
    """A signed body of exactly 1 MiB is read (and then judged on its content)."""
    ping = json.dumps({"zen": "z"}).encode()
    body = ping + b" " * (MiB - len(ping))
    response = post(client, *delivery(body, event="ping"))
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b"{not json",
            "malformed JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b"\xff\xfe", "malformed JSON"),
        (b"[1, 2]", "body: expected a JSON object"),
    ],
)
def test_malformed_json_is_400(client: AppClient, body: bytes, message: str) -> None:
    """A signed body that is not a JSON object answers 400 saying so."""
    response = post(client, *delivery(body))
    assert response.status_code == 400 and response.json()["error"].startswith(message)


def test_missing_field_is_400_naming_it(client: AppClient, emitter: RecordingEmitter) -> None:
    """A workflow_run without head_sha answers 400 naming workflow_run.head_sha."""
    payload = run_payload()
    del payload["workflow_run"]["head_sha"]
    response = post(client, *delivery(payload))
    assert (response.status_code, response.json()) == (400, {"error": "field workflow_run.head_sha: missing"})
    assert emitter.events == []


@pytest.mark.parametrize("header", ["X-GitHub-Event", "X-GitHub-Delivery"])
def test_missing_github_header_is_400_naming_it(client: AppClient, header: str) -> None:
    """A signed delivery without its event or delivery header answers 400 naming the header."""
    body, headers = delivery(run_payload())
    del headers[header]
    response = post(client, body, headers)
    assert response.status_code == 400 and header in response.json()["error"]


def test_form_encoded_delivery_is_415(client: AppClient) -> None:
    """A webhook configured with content type form-urlencoded is told to use JSON."""
    body, headers = delivery(b"payload=%7B%7D")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    response = post(client, body, headers)
    assert response.status_code == 415 and "application/json" in response.json()["error"]


def test_ping_is_answered_with_its_zen(client: AppClient, emitter: RecordingEmitter) -> None:
    """A signed ping answers 200 with ok and GitHub's zen, emitting nothing."""
    response = post(client, *delivery({"zen": "Speak like a human.", "hook_id": 1}, event="ping"))
    assert (response.status_code, response.json()) == (200, {"ok": True, "zen": "Speak like a human."})
    assert emitter.events == []


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("push", {"ref": "refs/heads/develop"}, "event push is not workflow_run"),
        ("workflow_run", run_payload(repository="someone/else"), "repository someone/else is not configured"),
        ("workflow_run", run_payload(conclusion="failure"), "conclusion failure is not success"),
        ("workflow_run", run_payload(branch="feature/x"), "branch feature/x releases no environment"),
        ("workflow_run", run_payload(action="requested"), "action requested is not completed"),
    ],
)
def test_deliveries_that_release_nothing_are_acknowledged_and_ignored(
    client: AppClient, emitter: RecordingEmitter, event: str, payload: dict[str, Any], reason: str
) -> None:
    """Other events, repositories, failed runs and unknown branches answer 202 with the reason and emit nothing."""
    response = post(client, *delivery(payload, event=event))
    assert (response.status_code, response.json()) == (202, {"ignored": reason})
    assert emitter.events == []


def test_replay_is_200_duplicate_and_emits_nothing(client: AppClient, emitter: RecordingEmitter) -> None:
    """The same X-GitHub-Delivery a second time answers 200 duplicate; one event in all."""
    body, headers = delivery(run_payload())
    assert post(client, body, headers).status_code == 202
    response = post(client, body, headers)
    assert (response.status_code, response.json()) == (200, {"duplicate": True})
    assert len(emitter.events) == 1


def test_dedupe_survives_a_new_app_on_the_same_state_file(state: Path) -> None:
    """A delivery emitted by one receiver is a duplicate for a new receiver on the same file (a restart)."""
    body, headers = delivery(run_payload())
    first, second = RecordingEmitter(), RecordingEmitter()
    c = AppClient(make_app(state, first))
    assert post(c, body, headers).status_code == 202
    c = AppClient(make_app(state, second))
    assert post(c, body, headers).json() == {"duplicate": True}
    assert (len(first.events), len(second.events)) == (1, 0)


def test_failed_emit_is_503_and_a_redelivery_emits(client: AppClient, emitter: RecordingEmitter) -> None:
    """When Prefect does not take the event the answer is 503 and nothing is recorded, so a redelivery emits."""
    emitter.failures = 1
    body, headers = delivery(run_payload())
    response = post(client, body, headers)
    assert (response.status_code, response.json()) == (503, {"error": "event not emitted; redeliver later"})
    assert emitter.events == []
    assert post(client, body, headers).status_code == 202
    assert len(emitter.events) == 1


def test_concurrent_copies_of_one_delivery_emit_once(state: Path) -> None:
    """Five copies of one delivery arriving together emit one event; the others answer duplicate."""
    emitter = SlowEmitter()
    body, headers = delivery(run_payload())
    responses = post_together(make_app(state, emitter), body, [headers] * 5)
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 202]
    assert len(emitter.events) == 1


class SlowEmitter(RecordingEmitter):
    """Takes 50 ms per event, so that concurrent copies of a delivery overlap in the receiver."""

    async def emit(self, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(0.05)
        await super().emit(*args, **kwargs)


def post_together(app: Starlette, body: bytes, headers: list[dict[str, str]]) -> list[httpx.Response]:
    """POST ``body`` to ``/github`` once per headers, all at the same time."""

    async def send() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as c:
            return await asyncio.gather(*(c.post("/github", content=body, headers=h) for h in headers))

    return asyncio.run(send())


def test_healthz(client: AppClient) -> None:
    """GET /healthz answers 200 ok."""
    response = client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"ok": True})


def test_one_log_line_per_delivery_without_secrets(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Each delivery logs one line with its id, event and decision, never the secret, signature or payload."""
    good_body, good = delivery(run_payload(sha="feedface"), delivery_id="d-good")
    forged_body, forged = delivery(run_payload(), delivery_id="d-forged", signature="sha256=" + "ab" * 32)
    with caplog.at_level(logging.INFO, logger="greenlight.webhook"):
        post(client, good_body, good)
        post(client, forged_body, forged)
    lines = [r.getMessage() for r in caplog.records if r.name == "greenlight.webhook"]
    assert len(lines) == 2
    assert lines[0].startswith("delivery=d-good event=workflow_run decision=emitted status=202")
    assert lines[0].endswith(
        f"reason=develop of {REPO} releases staging; run {REPO}/actions/runs/{RUN_ID}/attempts/1; "
        "commit time vouched for"
    )
    assert lines[1].startswith("delivery=d-forged event=workflow_run decision=rejected status=401")
    text = "\n".join(lines)
    proof = next(iter(client.app.state.receiver.emitter.events))["payload"]["commit_proof"]
    for leak in (SECRET, good["X-Hub-Signature-256"], "ab" * 32, "dana", '"action"', RECEIVER_KEY, proof):
        assert leak not in text


def test_routes_come_from_the_lab_profiles() -> None:
    """The lab's profiles route develop to staging and main to production; dr has no github section."""
    routes = {(r.branch, r.environment) for r in load_routes(LAB_ENVIRONMENTS)}
    assert routes == {("develop", "staging"), ("main", "production")}
    lab_public = public_key_of(LAB_APPROVAL_SIGNING_KEY)  # the key the lab's receiver signs with
    assert {r.receiver_keys for r in load_routes(LAB_ENVIRONMENTS)} == {(lab_public,)}


def test_signature_of_the_exact_raw_bytes_is_checked(client: AppClient) -> None:
    """Re-serialising the JSON changes the bytes: the signature over the original bytes no longer matches."""
    original = b'{"zen":  "z"}'
    headers = delivery(original, event="ping")[1]
    assert post(client, original, headers).status_code == 200
    headers["X-GitHub-Delivery"] = "d-other"
    assert post(client, json.dumps(json.loads(original)).encode(), headers).status_code == 401
    assert headers["X-Hub-Signature-256"] == sign(SECRET.encode(), original)


def test_unreachable_prefect_is_503_quickly_and_nothing_is_recorded(state: Path) -> None:
    """With the real emitter and no Prefect server listening, the answer is 503 within the emit timeout and a redelivery is not a duplicate."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    app = create_app(
        routes=ROUTES,
        store=DeliveryStore(state),
        secret=SecretSource(SECRET),
        emitter=PrefectEmitter(timeout_s=2),
    )
    body, headers = delivery(run_payload())
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{closed.getsockname()[1]}/api"
        with temporary_settings({PREFECT_API_URL: url}):
            started = time.monotonic()
            response = post(AppClient(app), body, headers)
            elapsed = time.monotonic() - started
    assert response.status_code == 503 and elapsed < 3
    assert DeliveryStore(state).count() == 0


# --- the commit proof: the receiver's word for the commit time (greenlight.core.commit_proof) ----


def test_the_emitted_payload_carries_a_commit_proof_that_verifies(
    client: AppClient, emitter: RecordingEmitter
) -> None:
    """With its signing key, the receiver signs what it verified: the proof in the payload verifies
    with the route's receiver key for this repository, sha, UTC commit time and run id, and for no
    other commit time."""
    post(client, *delivery(run_payload(sha="c0ffee")))
    [event] = emitter.events
    payload = event["payload"]
    assert payload["commit_at"] == "2026-11-30T15:20:05+00:00"  # COMMITTED, in UTC
    assert payload["commit_proof"].startswith(f"{RUN_ID}:ed25519:")
    assert (
        proof_problem([RECEIVER_PUBLIC], payload["commit_proof"], REPO, "c0ffee", payload["commit_at"])
        is None
    )
    later = "2026-11-30T15:20:06+00:00"
    assert proof_problem([RECEIVER_PUBLIC], payload["commit_proof"], REPO, "c0ffee", later) is not None


def test_without_a_signing_key_the_delivery_is_emitted_without_a_proof_and_logged(
    state: Path, emitter: RecordingEmitter, caplog: pytest.LogCaptureFixture
) -> None:
    """No key: no commit_proof in the payload, the delivery is still emitted (202), and a warning
    says the lead time will not count the release."""
    c = AppClient(make_app(state, emitter, signing_key=None))
    with caplog.at_level(logging.INFO, logger="greenlight.webhook"):
        response = post(c, *delivery(run_payload()))
    assert response.status_code == 202
    [event] = emitter.events
    assert "commit_proof" not in event["payload"] and event["payload"]["commit_at"] is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "greenlight.webhook"]
    assert any("no approval signing key" in line and "lead time will not count" in line for line in lines)
    assert lines[-1].endswith("commit time not vouched for (no signing key)")


def test_an_unusable_signing_key_emits_without_a_proof(state: Path, emitter: RecordingEmitter) -> None:
    """A key that is not an Ed25519 key yields no proof; the delivery is emitted all the same."""
    c = AppClient(make_app(state, emitter, signing_key="not-a-key"))
    assert post(c, *delivery(run_payload())).status_code == 202
    assert "commit_proof" not in emitter.events[0]["payload"]


def test_a_run_without_a_head_commit_gets_no_proof(client: AppClient, emitter: RecordingEmitter) -> None:
    """GitHub's head_commit null: no commit time, so nothing to vouch for."""
    assert post(client, *delivery(run_payload(commit_timestamp=None))).status_code == 202
    payload = emitter.events[0]["payload"]
    assert payload["commit_at"] is None and "commit_proof" not in payload


def test_a_key_the_profile_does_not_name_is_used_and_warned_about(
    state: Path, emitter: RecordingEmitter, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver whose key is not among the route's github.receiver_keys still emits (with its
    proof, which the flow will refuse) and says so in the log."""
    other, _ = new_signing_key()
    c = AppClient(make_app(state, emitter, signing_key=other))
    with caplog.at_level(logging.INFO, logger="greenlight.webhook"):
        assert post(c, *delivery(run_payload())).status_code == 202
    payload = emitter.events[0]["payload"]
    assert proof_problem(
        [RECEIVER_PUBLIC], payload["commit_proof"], REPO, payload["sha"], payload["commit_at"]
    )
    assert any("is not among staging's github.receiver_keys" in r.getMessage() for r in caplog.records)
