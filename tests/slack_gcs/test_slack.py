"""The Slack stand-in held to slack-sdk, and Greenlight's Notifier against it, over HTTP."""

from __future__ import annotations

import json
import logging
import time
import traceback
import urllib.request
from typing import Any

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from greenlight.clients.slack import Notifier
from greenlight.errors import Forbidden, NotFound, PermanentError, TransientError
from greenlight_lab.faults import FaultRule


def recorded(slack: Any) -> list[dict[str, Any]]:
    with urllib.request.urlopen(slack.url + "lab/messages", timeout=5) as resp:
        return list(json.loads(resp.read()))


def notifier(slack: Any, **kwargs: Any) -> Notifier:
    return Notifier(slack.token, slack.channel, base_url=slack.base_url, **kwargs)


# -- the stand-in, held to slack-sdk's WebClient ------------------------------------------


def test_webclient_post_is_answered_like_slack_and_recorded(slack: Any) -> None:
    """chat.postMessage answers ok with a channel ID, a ts and the message, and /lab/messages records it."""
    client = WebClient(token=slack.token, base_url=slack.base_url)
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hello*"}}]
    resp = client.chat_postMessage(channel=slack.channel, text="hello", blocks=blocks)
    assert resp["ok"] is True
    assert resp["channel"].startswith("C")
    assert resp["message"]["text"] == "hello"
    last = recorded(slack)[-1]
    assert last["ts"] == resp["ts"]
    assert (last["kind"], last["text"], last["blocks"], last["thread_ts"]) == (
        "postMessage",
        "hello",
        blocks,
        None,
    )
    assert last["channel"] == resp["channel"] and last["channel_name"] == "releases"


def test_form_encoded_body_with_json_blocks_is_understood(slack: Any) -> None:
    """A form-encoded call (blocks as a JSON string, as Slack accepts) is recorded with parsed blocks."""
    client = WebClient(token=slack.token, base_url=slack.base_url)
    blocks = [{"type": "divider"}]
    resp = client.api_call(
        "chat.postMessage", data={"channel": "lab-alerts", "text": "form", "blocks": json.dumps(blocks)}
    )
    assert resp["ok"] is True
    assert recorded(slack)[-1]["blocks"] == blocks


def test_ts_values_are_unique_and_increasing(slack: Any) -> None:
    """Message timestamps are Slack-shaped ("seconds.micros"), unique and strictly increasing."""
    client = WebClient(token=slack.token, base_url=slack.base_url)
    stamps = [client.chat_postMessage(channel=slack.channel, text=f"n{i}")["ts"] for i in range(5)]
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)
    assert [float(ts) for ts in stamps] == sorted({float(ts) for ts in stamps})


@pytest.mark.parametrize(
    ("token", "error"),
    [(None, "not_authed"), ("xoxp-not-a-bot-token", "invalid_auth")],
)
def test_calls_without_a_valid_bot_token_are_refused(slack: Any, token: str | None, error: str) -> None:
    """A missing token answers not_authed and a foreign one invalid_auth, as Slack does."""
    client = WebClient(token=token, base_url=slack.base_url)
    with pytest.raises(SlackApiError) as info:
        client.chat_postMessage(channel=slack.channel, text="x")
    assert info.value.response["error"] == error


def test_update_of_an_unknown_ts_is_message_not_found(slack: Any) -> None:
    """chat.update of a ts never posted answers message_not_found."""
    client = WebClient(token=slack.token, base_url=slack.base_url)
    with pytest.raises(SlackApiError) as info:
        client.chat_update(channel=slack.channel, ts="1000000000.000001", text="x")
    assert info.value.response["error"] == "message_not_found"


def test_auth_test_and_conversations_info_answer(slack: Any) -> None:
    """auth.test names the bot and conversations.info resolves a channel name to its ID."""
    client = WebClient(token=slack.token, base_url=slack.base_url)
    assert client.auth_test()["bot_id"]
    info = client.conversations_info(channel="releases")["channel"]
    assert info["name"] == "releases" and info["id"].startswith("C")


# -- the Notifier ------------------------------------------------------------------------


def test_notifier_posts_replies_in_thread_and_updates(slack: Any) -> None:
    """post starts a thread, a reply carries its thread_ts, and update rewrites the first message."""
    n = notifier(slack)
    root = n.start_thread("release r1: started")
    assert root is not None
    reply = n.post("gate passed", thread_ts=root)
    n.update(root, "release r1: done", blocks=[{"type": "divider"}])
    by_kind = [(m["kind"], m["ts"], m["thread_ts"], m["text"]) for m in recorded(slack)[-3:]]
    assert by_kind == [
        ("postMessage", root, None, "release r1: started"),
        ("postMessage", reply, root, "gate passed"),
        ("update", root, None, "release r1: done"),
    ]


def test_one_rate_limit_is_retried_and_the_post_succeeds(slack: Any) -> None:
    """A single 429 with Retry-After is retried inside the SDK and the post goes through."""
    rule = slack.faults.add(
        FaultRule("slack", resource="chat.postMessage", status=429, count=1, retry_after=0.2)
    )
    ts = notifier(slack).post("after a rate limit")
    assert ts is not None and rule.fired == 1
    assert recorded(slack)[-1]["ts"] == ts


def test_persistent_rate_limit_is_transient_with_retry_after(slack: Any) -> None:
    """A 429 that outlasts the retries becomes TransientError carrying the Retry-After seconds."""
    slack.faults.add(FaultRule("slack", resource="chat.postMessage", status=429, count=-1, retry_after=0))
    with pytest.raises(TransientError) as info:
        notifier(slack).post("x")
    assert info.value.retry_after == 0.0
    assert "ratelimited" in str(info.value)


def test_persistent_server_error_is_transient(slack: Any) -> None:
    """HTTP 500 on every call becomes TransientError naming the method and status."""
    slack.faults.add(FaultRule("slack", resource="chat.postMessage", status=500, count=-1))
    with pytest.raises(TransientError, match=r"chat\.postMessage.*HTTP 500"):
        notifier(slack).post("x")


def test_a_stalled_slack_times_out_as_transient(slack: Any) -> None:
    """A call held longer than timeout_s fails as TransientError instead of hanging."""
    slack.faults.add(FaultRule("slack", resource="chat.postMessage", mode="stall", stall_s=3, count=2))
    started = time.monotonic()
    with pytest.raises(TransientError):
        notifier(slack, timeout_s=1).post("x")
    assert time.monotonic() - started < 3


def test_unknown_channel_is_not_found(slack: Any) -> None:
    """Posting to a channel that does not exist raises NotFound naming it."""
    with pytest.raises(NotFound, match=r"no-such-channel.*channel_not_found"):
        Notifier(slack.token, "#no-such-channel", base_url=slack.base_url).post("x")


def test_refused_token_is_forbidden_and_never_in_any_message(slack: Any) -> None:
    """A refused token raises Forbidden whose text, repr and traceback chain never contain the token."""
    secret = "xoxp-9999-this-must-not-leak"
    n = Notifier(secret, slack.channel, base_url=slack.base_url)
    with pytest.raises(Forbidden) as info:
        n.post("x")
    rendered = "".join(traceback.format_exception(info.value)) + repr(info.value) + repr(n)
    assert secret not in rendered
    assert "invalid_auth" in str(info.value)


def test_other_api_errors_are_permanent(slack: Any) -> None:
    """An ok=false answer that is neither auth, missing nor transient raises PermanentError."""
    with pytest.raises(PermanentError, match="no_text"), pytest.warns(UserWarning, match="text"):
        notifier(slack).post("")


def test_safe_post_never_raises_and_logs_why(slack: Any, caplog: pytest.LogCaptureFixture) -> None:
    """safe_post returns None on server errors and on an unreachable Slack, logging the reason."""
    slack.faults.add(FaultRule("slack", resource="chat.postMessage", status=503, count=-1))
    with caplog.at_level(logging.WARNING, logger="greenlight.clients.slack"):
        assert notifier(slack).safe_post("x") is None
        closed = Notifier(slack.token, slack.channel, base_url="http://127.0.0.1:9/api/", timeout_s=1)
        assert closed.safe_post("x") is None
    assert "HTTP 503" in caplog.text and "cannot reach" in caplog.text
    assert slack.token not in caplog.text


def test_raise_errors_false_makes_every_call_quiet(slack: Any) -> None:
    """A notifier built with raise_errors=False returns None from post and update instead of raising."""
    slack.faults.add(FaultRule("slack", status=500, count=-1))
    n = notifier(slack, raise_errors=False)
    assert n.post("x") is None
    assert n.update("1000000000.000001", "y") is None


def test_no_token_gives_a_disabled_notifier(slack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a token (argument or SLACK_BOT_TOKEN) the notifier is disabled and sends nothing."""
    monkeypatch.delenv("SLACK_BOT_TOKEN", raising=False)
    before = len(recorded(slack))
    n = Notifier(None, slack.channel, base_url=slack.base_url)
    assert not n.enabled
    assert n.post("x") is None and n.start_thread("y") is None
    n.update("1.000001", "z")
    assert len(recorded(slack)) == before


def test_token_and_base_url_come_from_the_environment(slack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """token=None and base_url=None read SLACK_BOT_TOKEN and GREENLIGHT_SLACK_BASE_URL."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", slack.token)
    monkeypatch.setenv("GREENLIGHT_SLACK_BASE_URL", slack.base_url)
    n = Notifier(None, slack.channel)
    assert n.enabled
    ts = n.post("from env")
    assert recorded(slack)[-1]["ts"] == ts


def test_lab_messages_can_be_cleared(slack: Any) -> None:
    """DELETE /lab/messages empties the record that GET /lab/messages returns."""
    notifier(slack).post("to be cleared")
    request = urllib.request.Request(slack.url + "lab/messages", method="DELETE")
    with urllib.request.urlopen(request, timeout=5) as resp:
        assert json.loads(resp.read())["cleared"] >= 1
    assert recorded(slack) == []
