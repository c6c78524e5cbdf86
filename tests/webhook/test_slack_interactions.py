"""Slack's interactivity endpoint over ASGI: what is refused before any run is touched.

A request must be one Slack signed just now (slack-sdk's SignatureVerifier, 5 minutes), never seen
before, a ``payload=`` form with a Greenlight button naming a run. These checks come before the
Prefect API is asked anything, so these tests need no Prefect; the verified path end to end (a
paused run resumed by a click in the lab's Slack) is tests/flows_release/test_release_approval.py.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from slack_sdk.signature import SignatureVerifier

from greenlight.core.approval import APPROVE_ACTION, new_signing_key
from greenlight.webhook.app import SecretSource, create_app
from greenlight.webhook.dedupe import DeliveryStore

from .support import ROUTES, AppClient, RecordingEmitter

SIGNING = "lab-signing-secret-0123"
RUN = "0b5e5c1e-0000-4000-8000-000000000001"


def interaction(
    action_id: str = APPROVE_ACTION, value: Any = None, kind: str = "block_actions"
) -> dict[str, Any]:
    value = json.dumps({"run": RUN, "release": "production-abc-1234"}) if value is None else value
    return {
        "type": kind,
        "user": {"id": "U0LABALICE", "username": "alice", "team_id": "T0LABTEAM1"},
        "actions": [
            {"action_id": action_id, "block_id": "greenlight_decision", "type": "button", "value": value}
        ],
        "state": {"values": {"greenlight_reason": {"reason": {"type": "plain_text_input", "value": "ok"}}}},
        "response_url": "http://127.0.0.1:9/never",
    }


def signed(
    payload: dict[str, Any] | str, secret: str = SIGNING, age_s: float = 0, content_type: str | None = None
) -> dict[str, Any]:
    """Body and headers as Slack sends a click: ``payload=<JSON>`` form-encoded, signed v0."""
    body = urlencode({"payload": payload if isinstance(payload, str) else json.dumps(payload)})
    ts = str(int(time.time() - age_s))
    headers = {
        "Content-Type": content_type or "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": str(SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)),
    }
    return {"content": body.encode(), "headers": headers}


@pytest.fixture
def client(tmp_path: Path) -> AppClient:
    return AppClient(app(tmp_path / "webhook.sqlite", SIGNING))


def app(state: Path, signing: str | None) -> Any:
    return create_app(
        routes=ROUTES, store=DeliveryStore(state), secret=SecretSource("gh"), emitter=RecordingEmitter(),
        slack_signing_secret=SecretSource(signing or ""), signing_key=SecretSource(new_signing_key()[0]),
    )  # fmt: skip


def unsigned(request: dict[str, Any], **headers: str | None) -> dict[str, Any]:
    h = {k: v for k, v in {**request["headers"], **headers}.items() if v is not None}
    return {"content": request["content"], "headers": h}


REFUSED = [
    # id, request (built lazily), status, error fragment
    ("wrong-secret", lambda: signed(interaction(), secret="another-secret"), 401, "does not verify"),
    ("stale-timestamp", lambda: signed(interaction(), age_s=400), 401, "stale request: signed 4"),
    ("future-timestamp", lambda: signed(interaction(), age_s=-400), 401, "stale request"),
    ("no-signature", lambda: unsigned(signed(interaction()), **{"X-Slack-Signature": None}), 401, "missing"),
    ("no-timestamp", lambda: unsigned(signed(interaction()), **{"X-Slack-Request-Timestamp": None}), 401, "missing"),
    ("timestamp-not-a-number", lambda: unsigned(signed(interaction()), **{"X-Slack-Request-Timestamp": "soon"}),
     401, "not a number"),
    ("body-edited-after-signing", lambda: {**signed(interaction()), "content": signed(interaction("x"))["content"]},
     401, "does not verify"),
    ("json-not-a-form", lambda: signed(interaction(), content_type="application/json"), 400, "x-www-form-urlencoded"),
    ("payload-not-json", lambda: signed("{not json"), 400, "expected payload=<JSON object>"),
    ("value-names-no-run", lambda: signed(interaction(value=json.dumps({"release": "r"}))), 400, "expected {run, release}"),
    ("value-missing", lambda: signed(interaction(value=7)), 400, "actions[0].value: missing"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "status", "fragment"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_requests_slack_did_not_sign_just_now_or_cannot_name_a_run_are_refused(
    client: AppClient, build: Any, status: int, fragment: str
) -> None:
    r = client.post("/slack/interactions", **build())
    assert r.status_code == status, r.text
    assert fragment in r.json()["error"], r.json()


@pytest.mark.parametrize(
    "payload",
    [
        interaction("some_other_button"),
        interaction(kind="view_submission"),
        {"type": "block_actions", "actions": []},
    ],
    ids=["another-button", "another-kind", "no-actions"],
)
def test_interactions_that_are_not_greenlight_buttons_are_ignored(
    client: AppClient, payload: dict[str, Any]
) -> None:
    r = client.post("/slack/interactions", **signed(payload))
    assert (r.status_code, r.json()) == (200, {"ignored": "not a Greenlight approval button"})


def test_the_same_signed_request_twice_is_a_replay(client: AppClient) -> None:
    """A signed request sent again (within Slack's 5 minutes, or after a restart: the store is a
    file) is refused with 409 before anything else is looked at."""
    request = signed(interaction("some_other_button"))
    assert client.post("/slack/interactions", **request).status_code == 200
    again = client.post("/slack/interactions", **request)
    assert again.status_code == 409 and "replayed" in again.json()["error"]


def test_replay_is_refused_by_a_restarted_receiver(tmp_path: Path) -> None:
    state = tmp_path / "webhook.sqlite"
    request = signed(interaction("some_other_button"))
    assert AppClient(app(state, SIGNING)).post("/slack/interactions", **request).status_code == 200
    assert AppClient(app(state, SIGNING)).post("/slack/interactions", **request).status_code == 409


def test_no_signing_secret_refuses_everything(tmp_path: Path) -> None:
    r = AppClient(app(tmp_path / "w.sqlite", None)).post("/slack/interactions", **signed(interaction()))
    assert (r.status_code, r.json()) == (503, {"error": "slack signing secret not configured"})


def test_oversized_body_is_refused(client: AppClient) -> None:
    big = {"content": b"payload=" + b"x" * (1024 * 1024 + 1), "headers": signed(interaction())["headers"]}
    assert client.post("/slack/interactions", **big).status_code == 413


def test_log_line_names_the_user_and_decision_never_the_secret_or_signature(
    client: AppClient, caplog: pytest.LogCaptureFixture
) -> None:
    request = signed(interaction(), secret="another-secret")
    with caplog.at_level(logging.INFO, logger="greenlight.webhook"):
        client.post("/slack/interactions", **request)
    text = caplog.text
    assert "decision=rejected status=401" in text
    assert SIGNING not in text and request["headers"]["X-Slack-Signature"] not in text
    assert "another-secret" not in text


def test_response_body_is_never_echoed_from_the_payload(client: AppClient) -> None:
    """An error names the field, not the value sent (the payload can carry a token)."""
    r = client.post("/slack/interactions", **signed(interaction(value="xoxb-secret-looking-value")))
    assert r.status_code == 400 and "xoxb" not in r.text


def test_endpoint_answers_only_post(client: AppClient) -> None:
    assert client.get("/slack/interactions").status_code == 405
