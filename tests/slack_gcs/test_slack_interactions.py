"""The lab's Slack stand-in held to Slack's interactivity, over real HTTP against the running lab:
Block Kit validation on chat.postMessage / chat.update, a click on an approval button delivered
to a Request URL as Slack sends it (form-encoded ``payload=``, signed, 3 s timeout), response_url
with Slack's limits, and ``greenlight lab slack click``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier

from greenlight_lab.faults import FaultRegistry
from greenlight_lab.slack import SlackStandIn
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab

SECRET = "lab-test-signing-secret-5f1c0a9e"
CHANNEL = "#releases"
ALICE = "U0LABALICE"


# -- a receiver standing in for the app's Request URL ---------------------------------------------


class Receiver:
    """An HTTP server on a free port that records every request and answers ``status`` /
    ``answer`` after ``delay_s``."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status = 200
        self.answer: bytes = b'{"ok": true}'
        self.content_type = "application/json"
        self.delay_s = 0.0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.requests.append({"path": self.path, "headers": headers, "body": body})
                time.sleep(outer.delay_s)
                try:
                    self.send_response(outer.status)
                    self.send_header("Content-Type", outer.content_type)
                    self.send_header("Content-Length", str(len(outer.answer)))
                    self.end_headers()
                    self.wfile.write(outer.answer)
                except OSError:  # the caller gave up (the timeout test)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/interactions"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def last_payload(self) -> dict[str, Any]:
        form = urllib.parse.parse_qs(self.requests[-1]["body"], strict_parsing=True)
        assert list(form) == ["payload"] and len(form["payload"]) == 1
        return dict(json.loads(form["payload"][0]))


# -- helpers ---------------------------------------------------------------------------------------


def http(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def standin_url(lab: LabState) -> str:
    return lab.env["GREENLIGHT_SLACK_BASE_URL"].removesuffix("api/")


def control_url(lab: LabState) -> str:
    return lab.env["GREENLIGHT_LAB_CONTROL"]


def client(lab: LabState) -> WebClient:
    return WebClient(token=lab.env["SLACK_BOT_TOKEN"], base_url=lab.env["GREENLIGHT_SLACK_BASE_URL"])


def click(lab: LabState, **body: Any) -> tuple[int, Any]:
    return http("POST", standin_url(lab) + "lab/click", {"user": ALICE, "action": "approve", **body})


def button(action_id: str, label: str, style: str, value: str) -> dict[str, Any]:
    return {
        "type": "button",
        "action_id": action_id,
        "text": {"type": "plain_text", "text": label},
        "style": style,
        "value": value,
        "confirm": {
            "title": {"type": "plain_text", "text": f"{label}?"},
            "text": {"type": "mrkdwn", "text": "Live traffic moves to it."},
            "confirm": {"type": "plain_text", "text": label},
            "deny": {"type": "plain_text", "text": "Cancel"},
            "style": style,
        },
    }


def approval_blocks(run: str, *, reason_input: bool = True) -> list[dict[str, Any]]:
    """The blocks Greenlight's approval request has (greenlight/core/approval.py request_blocks)."""
    value = json.dumps({"run": run, "release": "production-abc123", "environment": "production"})
    blocks: list[dict[str, Any]] = [
        {
            "type": "section",
            "block_id": "greenlight_request",
            "text": {"type": "mrkdwn", "text": "*Approve?*"},
        }
    ]
    if reason_input:
        blocks.append(
            {
                "type": "input",
                "block_id": "greenlight_reason",
                "optional": True,
                "label": {"type": "plain_text", "text": "Reason (an approval needs one)"},
                "element": {"type": "plain_text_input", "action_id": "reason", "max_length": 500},
            }
        )
    blocks.append(
        {
            "type": "actions",
            "block_id": "greenlight_decision",
            "elements": [
                button("greenlight_approve", "Approve", "primary", value),
                button("greenlight_reject", "Reject", "danger", value),
            ],
        }
    )
    return blocks


def post_approval(lab: LabState, run: str, *, reason_input: bool = True) -> tuple[str, str, str]:
    """A release thread and the approval message in it: (channel id, message ts, thread ts)."""
    web = client(lab)
    parent = web.chat_postMessage(channel=CHANNEL, text=f"release for run {run} started")
    resp = web.chat_postMessage(
        channel=CHANNEL,
        text="approval needed",
        blocks=approval_blocks(run, reason_input=reason_input),
        thread_ts=parent["ts"],
    )
    return resp["channel"], resp["ts"], parent["ts"]


def run_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def receiver(lab: LabState) -> Iterator[Receiver]:
    """A receiver the lab's Slack stand-in sends clicks to (signed with SECRET) for one test; the
    stand-in's own Request URL and secret come back afterwards."""
    rec = Receiver()
    try:
        status, out = http(
            "PUT", standin_url(lab) + "lab/interactivity", {"request_url": rec.url, "signing_secret": SECRET}
        )
        assert status == 200 and out["request_url"] == rec.url, out
        yield rec
    finally:
        http("DELETE", standin_url(lab) + "lab/interactivity")
        rec.stop()


# -- Block Kit validation --------------------------------------------------------------------------


def _approval_with(change: Any) -> list[dict[str, Any]]:
    blocks = approval_blocks("r-1")
    change(blocks)
    return blocks


def _set(path: list[Any], value: Any) -> Any:
    def change(blocks: list[dict[str, Any]]) -> None:
        target: Any = blocks
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return change


INVALID = {
    "button text too long": (
        _approval_with(_set([2, "elements", 0, "text", "text"], "A" * 76)),
        "must be less than 76 characters [json-pointer:/blocks/2/elements/0/text/text]",
    ),
    "button text mrkdwn": (
        _approval_with(_set([2, "elements", 0, "text", "type"], "mrkdwn")),
        "/blocks/2/elements/0/text/type",
    ),
    "duplicate action_id": (
        _approval_with(_set([2, "elements", 1, "action_id"], "greenlight_approve")),
        "duplicate action_id: greenlight_approve",
    ),
    "action_id too long": (
        _approval_with(_set([2, "elements", 0, "action_id"], "a" * 256)),
        "[json-pointer:/blocks/2/elements/0/action_id]",
    ),
    "bad style": (
        _approval_with(_set([2, "elements", 0, "style"], "success")),
        "must be a valid enum value (primary, danger) [json-pointer:/blocks/2/elements/0/style]",
    ),
    "value too long": (
        _approval_with(_set([2, "elements", 0, "value"], "v" * 2001)),
        "must be less than 2001 characters [json-pointer:/blocks/2/elements/0/value]",
    ),
    "confirm without deny": (
        _approval_with(_set([2, "elements", 0, "confirm", "deny"], KeyError)),
        "missing required field: deny [json-pointer:/blocks/2/elements/0/confirm]",
    ),
    "confirm title too long": (
        _approval_with(_set([2, "elements", 0, "confirm", "title", "text"], "t" * 101)),
        "[json-pointer:/blocks/2/elements/0/confirm/title/text]",
    ),
    "confirm button text too long": (
        _approval_with(_set([2, "elements", 0, "confirm", "confirm", "text"], "c" * 31)),
        "[json-pointer:/blocks/2/elements/0/confirm/confirm/text]",
    ),
    "confirm bad style": (
        _approval_with(_set([2, "elements", 0, "confirm", "style"], "warning")),
        "[json-pointer:/blocks/2/elements/0/confirm/style]",
    ),
    "actions with 0 elements": (
        [{"type": "actions", "elements": []}],
        "must provide at least 1 items [json-pointer:/blocks/0/elements]",
    ),
    "actions with 26 elements": (
        [
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "action_id": f"b{i}", "text": {"type": "plain_text", "text": "x"}}
                    for i in range(26)
                ],
            }
        ],
        "no more than 25 items allowed [json-pointer:/blocks/0/elements]",
    ),
    "51 blocks": ([{"type": "divider"}] * 51, "no more than 50 items allowed [json-pointer:/blocks]"),
    "unknown block type": (
        [{"type": "carousel"}],
        "unsupported type: carousel [json-pointer:/blocks/0/type]",
    ),
    "section without text or fields": (
        [{"type": "section"}],
        "must provide either text or fields [json-pointer:/blocks/0]",
    ),
    "section text too long": (
        [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}],
        "must be less than 3001 characters [json-pointer:/blocks/0/text/text]",
    ),
    "duplicate block_id": (
        [{"type": "divider", "block_id": "d"}, {"type": "divider", "block_id": "d"}],
        "duplicate block_id: d [json-pointer:/blocks/1/block_id]",
    ),
    "block_id too long": (
        [{"type": "divider", "block_id": "b" * 256}],
        "must be less than 256 characters [json-pointer:/blocks/0/block_id]",
    ),
    "input without label": (
        _approval_with(_set([1, "label"], KeyError)),
        "missing required field: label [json-pointer:/blocks/1]",
    ),
    "input without element": (
        _approval_with(_set([1, "element"], KeyError)),
        "missing required field: element [json-pointer:/blocks/1]",
    ),
    "input max_length over 3000": (
        _approval_with(_set([1, "element", "max_length"], 3001)),
        "[json-pointer:/blocks/1/element/max_length]",
    ),
    "input optional not a boolean": (
        _approval_with(_set([1, "optional"], "yes")),
        "must be a boolean [json-pointer:/blocks/1/optional]",
    ),
    "unknown field": (
        _approval_with(_set([2, "elements", 0, "action-id"], "typo")),
        "invalid additional property: action-id [json-pointer:/blocks/2/elements/0/action-id]",
    ),
    "header text too long": (
        [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}],
        "[json-pointer:/blocks/0/text/text]",
    ),
}


@pytest.mark.parametrize(("blocks", "expected"), list(INVALID.values()), ids=list(INVALID))
def test_invalid_blocks_are_refused_with_invalid_blocks(lab: LabState, blocks: Any, expected: str) -> None:
    """chat.postMessage and chat.update refuse invalid blocks as Slack does: HTTP 200 ok=false
    invalid_blocks, the reasons in errors and response_metadata.messages; nothing is recorded."""
    web = client(lab)
    before = http("GET", standin_url(lab) + "lab/messages")[1]
    with pytest.raises(SlackApiError) as info:
        web.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks)
    resp = info.value.response
    assert resp.status_code == 200
    assert resp["error"] == "invalid_blocks"
    assert any(expected in e for e in resp["errors"]), resp["errors"]
    assert resp["response_metadata"]["messages"] == [f"[ERROR] {e}" for e in resp["errors"]]
    assert len(http("GET", standin_url(lab) + "lab/messages")[1]) == len(before)

    posted = web.chat_postMessage(channel=CHANNEL, text="before the update")
    with pytest.raises(SlackApiError) as info:
        web.chat_update(channel=posted["channel"], ts=posted["ts"], text="x", blocks=blocks)
    assert info.value.response["error"] == "invalid_blocks"


def test_valid_approval_blocks_are_accepted_and_text_only_messages_unchanged(lab: LabState) -> None:
    """The approval request's blocks are accepted; Slack's stored message gets generated block_ids
    where none was given, the record keeps them as sent; a text-only message is as before; blocks
    that are not a JSON array are invalid_blocks_format."""
    web = client(lab)
    blocks = [*approval_blocks(run_id()), {"type": "divider"}, {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "release production-abc123"}]}]  # fmt: skip
    resp = web.chat_postMessage(channel=CHANNEL, text="approval", blocks=blocks)
    assert resp["ok"] is True
    stored = resp["message"]["blocks"]
    assert [b["block_id"] for b in stored[:3]] == [
        "greenlight_request",
        "greenlight_reason",
        "greenlight_decision",
    ]
    assert all(b.get("block_id") for b in stored)
    record = http("GET", standin_url(lab) + "lab/messages")[1][-1]
    assert record["ts"] == resp["ts"] and record["blocks"] == blocks

    text_only = web.chat_postMessage(channel=CHANNEL, text="just text")
    assert "blocks" not in text_only["message"]
    assert http("GET", standin_url(lab) + "lab/messages")[1][-1]["blocks"] is None

    with pytest.raises(SlackApiError) as info:
        web.api_call("chat.postMessage", data={"channel": CHANNEL, "text": "x", "blocks": "[not json"})
    assert info.value.response["error"] == "invalid_blocks_format"


# -- clicks ----------------------------------------------------------------------------------------


def test_click_arrives_form_encoded_signed_and_shaped_as_slack_sends_it(
    lab: LabState, receiver: Receiver
) -> None:
    """One POST of application/x-www-form-urlencoded ``payload=<JSON>``, signed so that
    slack_sdk's SignatureVerifier accepts it (and refuses another secret), with the block_actions
    fields of a button click in a threaded message; the answer lets a test replay it exactly."""
    run = run_id()
    channel, ts, thread_ts = post_approval(lab, run)
    status, out = click(lab, reason="canary looked fine", run=run)
    assert status == 200, out
    assert (out["status"], out["answer"], out["timed_out"], out["error"]) == (200, {"ok": True}, False, None)
    assert (out["message_ts"], out["channel"], out["run"]) == (ts, channel, run)
    assert 0 <= out["elapsed_s"] < 3

    assert len(receiver.requests) == 1
    sent = receiver.requests[0]
    assert sent["path"] == "/slack/interactions"
    assert sent["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert sent["body"].startswith("payload=")
    timestamp, signature = sent["headers"]["x-slack-request-timestamp"], sent["headers"]["x-slack-signature"]
    assert abs(int(timestamp) - time.time()) < 10
    assert SignatureVerifier(SECRET).is_valid(sent["body"], timestamp, signature)
    assert not SignatureVerifier("another-secret").is_valid(sent["body"], timestamp, signature)
    assert out["request"] == {
        "url": receiver.url,
        "body": sent["body"],
        "headers": {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature,
        },
    }

    payload = receiver.last_payload()
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": ALICE, "username": "alice", "name": "alice", "team_id": "T0LABTEAM1"}
    assert payload["api_app_id"] == "A0LABAPP01" and payload["token"]
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": channel,
        "is_ephemeral": False,
        "thread_ts": thread_ts,
    }
    assert payload["team"]["id"] == "T0LABTEAM1" and payload["team"]["domain"]
    assert payload["enterprise"] is None and payload["is_enterprise_install"] is False
    assert payload["channel"] == {"id": channel, "name": "releases"}
    assert payload["trigger_id"]
    assert payload["message"]["ts"] == ts and payload["message"]["thread_ts"] == thread_ts
    assert [b["block_id"] for b in payload["message"]["blocks"]] == [
        "greenlight_request", "greenlight_reason", "greenlight_decision"
    ]  # fmt: skip
    assert payload["state"] == {
        "values": {
            "greenlight_reason": {"reason": {"type": "plain_text_input", "value": "canary looked fine"}}
        }
    }
    assert payload["response_url"].startswith(standin_url(lab) + "lab/response/")
    (action,) = payload["actions"]
    assert action["type"] == "button"
    assert (action["action_id"], action["block_id"], action["style"]) == (
        "greenlight_approve", "greenlight_decision", "primary"
    )  # fmt: skip
    assert json.loads(action["value"])["run"] == run
    assert action["text"] == {"type": "plain_text", "text": "Approve"}
    assert float(action["action_ts"]) > float(ts)


def test_reject_without_reason_and_a_message_without_input(lab: LabState, receiver: Receiver) -> None:
    """No reason typed: the input's value is null. A message without an input block gets
    ``state.values == {}``, and a reason cannot be typed on it (400)."""
    run = run_id()
    post_approval(lab, run)
    status, out = click(lab, action="reject", run=run)
    assert status == 200 and out["status"] == 200
    payload = receiver.last_payload()
    assert payload["actions"][0]["action_id"] == "greenlight_reject"
    assert payload["actions"][0]["style"] == "danger"
    assert payload["state"]["values"]["greenlight_reason"]["reason"]["value"] is None

    bare = run_id()
    post_approval(lab, bare, reason_input=False)
    status, out = click(lab, action="reject", run=bare)
    assert status == 200 and receiver.last_payload()["state"] == {"values": {}}
    status, out = click(lab, action="reject", run=bare, reason="no input to type it in")
    assert status == 400 and "no input block" in out["error"]


def test_age_s_gives_a_timestamp_the_verifier_refuses_as_stale(lab: LabState, receiver: Receiver) -> None:
    """age_s=400 signs with a timestamp 400 s old: correctly signed, but SignatureVerifier refuses
    it (Slack's 5-minute window)."""
    run = run_id()
    post_approval(lab, run)
    status, out = click(lab, run=run, age_s=400)
    assert status == 200
    headers = out["request"]["headers"]
    timestamp = headers["X-Slack-Request-Timestamp"]
    assert 395 <= time.time() - int(timestamp) <= 410
    assert not SignatureVerifier(SECRET).is_valid(
        out["request"]["body"], timestamp, headers["X-Slack-Signature"]
    )
    # the signature itself is right: a verifier with a clock 400 s back accepts it
    past = type("Past", (), {"now": lambda self: time.time() - 400})()
    assert SignatureVerifier(SECRET, clock=past).is_valid(
        out["request"]["body"], timestamp, headers["X-Slack-Signature"]
    )


def test_a_wrong_secret_gives_a_signature_the_verifier_refuses(lab: LabState, receiver: Receiver) -> None:
    """secret="wrong" signs with another secret: a forged request the app must refuse."""
    run = run_id()
    post_approval(lab, run)
    status, out = click(lab, run=run, secret="wrong")
    assert status == 200 and out["status"] == 200  # this receiver does not verify
    sent = receiver.requests[-1]
    assert not SignatureVerifier(SECRET).is_valid(
        sent["body"], sent["headers"]["x-slack-request-timestamp"], sent["headers"]["x-slack-signature"]
    )
    assert SignatureVerifier("wrong").is_valid(
        sent["body"], sent["headers"]["x-slack-request-timestamp"], sent["headers"]["x-slack-signature"]
    )


def test_run_selects_the_right_message_among_two(lab: LabState, receiver: Receiver) -> None:
    """With run, the message whose button value names it; without, the newest approval message."""
    first, second = run_id(), run_id()
    _, ts_first, _ = post_approval(lab, first)
    _, ts_second, _ = post_approval(lab, second)
    status, out = click(lab, run=first)
    assert status == 200 and (out["message_ts"], out["run"]) == (ts_first, first)
    assert json.loads(receiver.last_payload()["actions"][0]["value"])["run"] == first
    assert receiver.last_payload()["container"]["message_ts"] == ts_first
    status, out = click(lab)
    assert status == 200 and (out["message_ts"], out["run"]) == (ts_second, second)
    status, out = click(lab, run=run_id())
    assert status == 404 and out["error"].startswith("no pending approval message for run ")


def test_a_message_updated_without_buttons_cannot_be_clicked(lab: LabState, receiver: Receiver) -> None:
    """After chat.update replaced the buttons (the decision is in), there is nothing to click: 404,
    and nothing reaches the receiver."""
    run = run_id()
    channel, ts, _ = post_approval(lab, run)
    decided = [
        {"type": "section", "block_id": "greenlight_decided", "text": {"type": "mrkdwn", "text": "done"}}
    ]
    client(lab).chat_update(channel=channel, ts=ts, text="approved", blocks=decided)
    status, out = click(lab, run=run)
    assert status == 404 and out == {"error": f"no pending approval message for run {run}"}
    assert receiver.requests == []


def test_a_text_only_update_keeps_the_buttons(lab: LabState, receiver: Receiver) -> None:
    """chat.update without blocks keeps the message's blocks (as Slack does): still clickable."""
    run = run_id()
    channel, ts, _ = post_approval(lab, run)
    client(lab).chat_update(channel=channel, ts=ts, text="still waiting")
    status, out = click(lab, run=run)
    assert status == 200 and out["message_ts"] == ts
    assert receiver.last_payload()["message"]["text"] == "still waiting"


def test_a_receiver_slower_than_3_s_is_reported_timed_out(lab: LabState, receiver: Receiver) -> None:
    """Slack waits 3 s for the Request URL: a slower receiver is timed_out with no status."""
    run = run_id()
    post_approval(lab, run)
    receiver.delay_s = 3.6
    status, out = click(lab, run=run)
    assert status == 200
    assert out["timed_out"] is True and out["status"] is None and out["answer"] is None
    assert "3 s" in out["error"]
    assert 2.9 <= out["elapsed_s"] < 3.5


def test_receiver_errors_and_unreachable_receivers_are_reported(lab: LabState, receiver: Receiver) -> None:
    """A non-2xx answer is reported with its status and text; an unreachable Request URL with the
    connection error."""
    run = run_id()
    post_approval(lab, run)
    receiver.status, receiver.answer, receiver.content_type = 401, b"invalid signature", "text/plain"
    status, out = click(lab, run=run)
    assert status == 200 and (out["status"], out["answer"], out["timed_out"]) == (
        401,
        "invalid signature",
        False,
    )

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    http("PUT", standin_url(lab) + "lab/interactivity", {"request_url": f"http://127.0.0.1:{closed}/x"})
    status, out = click(lab, run=run)
    assert status == 200 and out["status"] is None and out["timed_out"] is False and out["error"]


def test_bad_clicks_are_refused(lab: LabState, receiver: Receiver) -> None:
    """A user that is not a Slack user ID, an unknown action or field: 400; no Request URL: 503;
    interactivity settings never show the secret."""
    for body in ({"user": "alice"}, {"user": "u0labalice"}, {"action": "merge"}, {"colour": "blue"}):
        status, out = click(lab, **body)
        assert status == 400, (body, out)
    status, out = http("GET", standin_url(lab) + "lab/interactivity")
    assert out == {"request_url": receiver.url, "signing_secret_set": True, "timeout_s": 3.0}
    assert SECRET not in json.dumps(out)
    assert http("PUT", standin_url(lab) + "lab/interactivity", {"request_url": "ftp://x"})[0] == 400
    http("PUT", standin_url(lab) + "lab/interactivity", {"request_url": None})
    status, out = click(lab)
    assert status == 503
    assert out == {"error": "no interactivity Request URL configured (greenlight lab up sets it)"}


def test_the_daemon_control_api_forwards_clicks_and_lists_responses(
    lab: LabState, receiver: Receiver
) -> None:
    """The daemon's POST /slack/click answers as the stand-in's /lab/click; GET /slack/responses and
    GET /slack/interactivity read the same stand-in."""
    run = run_id()
    _, ts, _ = post_approval(lab, run)
    status, out = http(
        "POST",
        control_url(lab) + "/slack/click",
        {"user": ALICE, "action": "approve", "reason": "ok", "run": run},
    )
    assert status == 200 and out["status"] == 200 and out["message_ts"] == ts
    assert SignatureVerifier(SECRET).is_valid(
        out["request"]["body"],
        out["request"]["headers"]["X-Slack-Request-Timestamp"],
        out["request"]["headers"]["X-Slack-Signature"],
    )
    assert http("GET", control_url(lab) + "/slack/interactivity")[1]["request_url"] == receiver.url
    response_url = receiver.last_payload()["response_url"]
    assert http("POST", response_url, {"text": "noted"}) == (200, {"ok": True})
    listed = http("GET", control_url(lab) + "/slack/responses")[1]
    assert listed[-1]["id"] == response_url.rsplit("/", 1)[1] and listed[-1]["text"] == "noted"
    assert (
        http("POST", control_url(lab) + "/slack/click", {"user": ALICE, "action": "approve", "run": "nope"})[
            0
        ]
        == 404
    )


# -- response_url ----------------------------------------------------------------------------------


def test_response_url_ephemeral_is_recorded_and_expires_after_five_uses(
    lab: LabState, receiver: Receiver
) -> None:
    """An ephemeral response is recorded, visible only to the clicking user, answered {"ok": true};
    the sixth use of a response_url is 404 expired_url; an unknown one 404."""
    run = run_id()
    channel, ts, _ = post_approval(lab, run)
    click(lab, run=run, reason="fine")
    response_url = receiver.last_payload()["response_url"]
    messages_before = len(http("GET", standin_url(lab) + "lab/messages")[1])
    for n in range(5):
        body = {"text": f"Thanks, recorded ({n})", "response_type": "ephemeral", "replace_original": False}
        assert http("POST", response_url, body) == (200, {"ok": True})
    assert http("POST", response_url, {"text": "once more"}) == (404, {"ok": False, "error": "expired_url"})
    assert len(http("GET", standin_url(lab) + "lab/messages")[1]) == messages_before  # ephemeral: not posted

    mine = [
        r
        for r in http("GET", standin_url(lab) + "lab/responses")[1]
        if r["id"] == response_url.rsplit("/", 1)[1]
    ]
    assert [r["use"] for r in mine] == [1, 2, 3, 4, 5]
    first = mine[0]
    assert (first["user"], first["channel"], first["channel_name"], first["message_ts"]) == (
        ALICE,
        channel,
        "releases",
        ts,
    )
    assert (first["text"], first["response_type"], first["visible_to"]) == (
        "Thanks, recorded (0)",
        "ephemeral",
        ALICE,
    )
    assert first["replace_original"] is False and first["delete_original"] is False and first["at"] > 0

    unknown = response_url.rsplit("/", 1)[0] + "/nosuchid"
    assert http("POST", unknown, {"text": "x"})[0] == 404
    bad = {"response_type": "loud", "text": "x"}
    assert http("POST", receiver_response_url(lab, receiver, run_id()), bad) == (
        400,
        {"ok": False, "error": "invalid_response_type"},
    )


def receiver_response_url(lab: LabState, receiver: Receiver, run: str) -> str:
    post_approval(lab, run)
    click(lab, run=run)
    return str(receiver.last_payload()["response_url"])


def test_response_url_replace_original_updates_the_message(lab: LabState, receiver: Receiver) -> None:
    """replace_original replaces the clicked message (recorded as an update, "true" as a string
    too, as Slack's docs write it): its buttons are gone and it cannot be clicked again; in_channel
    posts a new message; delete_original deletes it."""
    run = run_id()
    channel, ts, _ = post_approval(lab, run)
    assert click(lab, run=run)[0] == 200
    response_url = receiver.last_payload()["response_url"]
    assert http("POST", response_url, {"replace_original": "true", "text": "Approved by alice"}) == (
        200,
        {"ok": True},
    )
    record = http("GET", standin_url(lab) + "lab/messages")[1][-1]
    assert (record["kind"], record["ts"], record["text"], record["blocks"]) == (
        "update",
        ts,
        "Approved by alice",
        None,
    )
    assert http("GET", standin_url(lab) + "lab/responses")[1][-1]["visible_to"] is None
    assert click(lab, run=run)[0] == 404

    assert http("POST", response_url, {"response_type": "in_channel", "text": "Release approved"})[0] == 200
    posted = http("GET", standin_url(lab) + "lab/messages")[1][-1]
    assert (posted["kind"], posted["channel"], posted["text"]) == ("postMessage", channel, "Release approved")

    assert http("POST", response_url, {"delete_original": True}) == (200, {"ok": True})
    assert http("GET", standin_url(lab) + "lab/messages")[1][-1]["kind"] == "delete"
    with pytest.raises(SlackApiError) as info:
        client(lab).chat_update(channel=channel, ts=ts, text="gone?")
    assert info.value.response["error"] == "message_not_found"


def test_response_url_expires_after_its_lifetime(loop_thread: Any, receiver_only: Receiver) -> None:
    """A response_url stops working after its lifetime (30 min in Slack; 0.3 s for this stand-in of
    our own, configured through its constructor): expired_url. The constructor's Request URL and
    secret are what DELETE /lab/interactivity restores."""
    standin = SlackStandIn(
        FaultRegistry(), request_url=receiver_only.url, signing_secret=SECRET, response_url_ttl_s=0.3
    )
    port = loop_thread.run(standin.start())
    base = f"http://127.0.0.1:{port}/"
    try:
        web = WebClient(token="xoxb-lab", base_url=base + "api/")
        run = run_id()
        web.chat_postMessage(channel=CHANNEL, text="approval", blocks=approval_blocks(run))
        http("PUT", base + "lab/interactivity", {"request_url": None, "signing_secret": None})
        assert http("POST", base + "lab/click", {"user": ALICE, "action": "approve"})[0] == 503
        assert http("DELETE", base + "lab/interactivity")[1]["request_url"] == receiver_only.url
        status, out = http("POST", base + "lab/click", {"user": ALICE, "action": "approve", "run": run})
        assert status == 200 and out["status"] == 200, out
        response_url = receiver_only.last_payload()["response_url"]
        assert response_url.startswith(base + "lab/response/")
        assert http("POST", response_url, {"text": "in time"}) == (200, {"ok": True})
        time.sleep(0.4)
        assert http("POST", response_url, {"text": "too late"}) == (
            404,
            {"ok": False, "error": "expired_url"},
        )
    finally:
        loop_thread.run(standin.stop())


@pytest.fixture
def receiver_only() -> Iterator[Receiver]:
    rec = Receiver()
    try:
        yield rec
    finally:
        rec.stop()


# -- greenlight lab slack click --------------------------------------------------------------------


def greenlight(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_click_prints_the_outcome_and_exits_by_it(lab: LabState, receiver: Receiver) -> None:
    """`greenlight lab slack click` prints what it clicked and the receiver's answer and exits 0;
    3 without a pending approval message, 4 on a non-2xx answer or an unreachable receiver, 2 on bad
    input; `greenlight lab slack` alone still lists the messages."""
    run = run_id()
    _, ts, _ = post_approval(lab, run)
    done = greenlight(
        "lab",
        "slack",
        "click",
        "--user",
        ALICE,
        "--action",
        "approve",
        "--reason",
        "looks good",
        "--run",
        run,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    first, second = done.stdout.splitlines()[:2]
    assert first.startswith(
        f"clicked approve as {ALICE} on the approval of run {run} (message {ts} in #releases): receiver answered 200 in "
    )
    assert first.endswith(" s")
    assert second == 'answer: {"ok": true}'
    assert receiver.last_payload()["state"]["values"]["greenlight_reason"]["reason"]["value"] == "looks good"

    missing = greenlight(
        "lab", "slack", "click", "--user", ALICE, "--action", "reject", "--run", "no-such-run"
    )
    assert missing.returncode == 3, missing.stdout + missing.stderr
    assert "FAILED: no pending approval message for run no-such-run" in missing.stderr

    receiver.status, receiver.answer = 403, b'{"error": "not an approver"}'
    refused = greenlight("lab", "slack", "click", "--user", ALICE, "--action", "reject", "--run", run)
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "receiver answered 403" in refused.stdout
    assert 'FAILED: the receiver answered HTTP 403: {"error": "not an approver"}' in refused.stderr

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    http("PUT", standin_url(lab) + "lab/interactivity", {"request_url": f"http://127.0.0.1:{closed}/x"})
    unreachable = greenlight("lab", "slack", "click", "--user", ALICE, "--action", "reject", "--run", run)
    assert unreachable.returncode == 4, unreachable.stdout + unreachable.stderr
    assert "could not be reached" in unreachable.stdout

    bad = greenlight("lab", "slack", "click", "--user", "alice", "--action", "approve")
    assert bad.returncode == 2 and "FAILED: --user 'alice' is not a Slack user ID" in bad.stderr
    assert greenlight("lab", "slack", "click", "--user", ALICE, "--action", "merge").returncode == 2

    listed = greenlight("lab", "slack")
    assert listed.returncode == 0, listed.stdout + listed.stderr
    assert f"{ts} (thread " in listed.stdout and listed.stdout.rstrip().endswith("message(s)")
