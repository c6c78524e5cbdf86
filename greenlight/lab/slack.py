"""A Slack Web API stand-in that records what it is sent.

It answers the four methods Greenlight uses, the way Slack does, to the official
``slack_sdk.WebClient`` pointed at ``http://127.0.0.1:PORT/api/``:

- ``POST /api/chat.postMessage``  -> ``{"ok": true, "channel", "ts", "message"}``
- ``POST /api/chat.update``       -> same shape; an unknown ``ts`` -> ``message_not_found``
- ``POST /api/auth.test``         -> the bot's identity
- ``POST /api/conversations.info`` -> ``{"ok": true, "channel": {"id", "name", ...}}``

Bodies may be JSON or form-encoded (slack-sdk sends both); ``blocks`` in a form body is a
JSON string, as in Slack. A Bearer token (or a ``token`` form field) is required: none
answers ``not_authed``, one without ``token_prefix`` answers ``invalid_auth``, both with
HTTP 200 as Slack does. Channel names (``#releases`` or ``releases``) are given stable
IDs (``C...``); the answers carry the ID, as Slack's do.

``GET /lab/messages`` returns the recorded messages as JSON: one record per successful
``chat.postMessage`` or ``chat.update`` with keys ``ts, channel, channel_name, text, blocks,
thread_ts, kind ("postMessage" | "update"), at`` (unix seconds). ``DELETE /lab/messages``
empties the record (the messages themselves stay updatable).

Faults: every API call first asks ``faults.take("slack", None, "<method>")``. An ``error``
rule with status 429 answers HTTP 429 ``ratelimited`` with an integer ``Retry-After``
(``rule.retry_after`` rounded up, default 1: slack-sdk parses the header with ``int()``);
another status answers that HTTP status with ``{"ok": false, "error": "lab_fault"}``. A
``stall`` rule sleeps ``rule.stall_s`` and then answers normally.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from greenlight.lab.faults import FaultRegistry

FAULT_TARGET = "slack"
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_BOT = {"user_id": "U0LABBOT01", "bot_id": "B0LABBOT01", "team_id": "T0LABTEAM1"}

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class SlackStandIn:
    """An aiohttp server that speaks enough of the Slack Web API for Greenlight's notifier."""

    def __init__(
        self,
        faults: FaultRegistry,
        token_prefix: str = "xoxb-",
        *,
        known_channels: Iterable[str] | None = None,
    ) -> None:
        """``known_channels``: names or IDs that exist; ``None`` means every channel exists."""
        self.faults = faults
        self.token_prefix = token_prefix
        self.messages: list[dict[str, Any]] = []
        self._known = None if known_channels is None else {c.lstrip("#") for c in known_channels}
        self._names: dict[str, str] = {}  # channel id -> name
        self._live: dict[tuple[str, str], dict[str, Any]] = {}  # (channel id, ts) -> message
        self._last_ts_us = 0
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = self._build_app()

    # -- lifecycle ------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/lab/messages", self._lab_messages)
        app.router.add_delete("/lab/messages", self._lab_clear)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0: a free port) and return the bound port."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop serving; recorded messages stay readable."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- HTTP -----------------------------------------------------------------------------

    async def _lab_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages)

    async def _lab_clear(self, request: web.Request) -> web.Response:
        cleared = len(self.messages)
        self.messages.clear()
        return web.json_response({"cleared": cleared})

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        fault = await self._apply_fault(method)
        if fault is not None:
            return fault
        body = await _read_body(request)
        auth_error = self._auth_error(request, body)
        if auth_error is not None:
            return web.json_response({"ok": False, "error": auth_error})
        handler = self._handlers().get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"}, status=404)
        return web.json_response(await handler(body))

    async def _apply_fault(self, method: str) -> web.Response | None:
        """Answer the fault's error, or sleep out its stall and return None."""
        rule = self.faults.take(FAULT_TARGET, None, method)
        if rule is None:
            return None
        if rule.mode == "stall":
            await asyncio.sleep(rule.stall_s)
            return None
        if rule.status == 429:
            retry_after = rule.retry_after if rule.retry_after is not None else 1.0
            return web.json_response(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(max(0, math.ceil(retry_after)))},
            )
        return web.json_response({"ok": False, "error": "lab_fault"}, status=rule.status)

    def _auth_error(self, request: web.Request, body: dict[str, Any]) -> str | None:
        header = request.headers.get("Authorization", "")
        token = header[len("Bearer ") :].strip() if header.startswith("Bearer ") else ""
        token = token or str(body.get("token") or "")
        if not token:
            return "not_authed"
        if not token.startswith(self.token_prefix):
            return "invalid_auth"
        return None

    def _handlers(self) -> dict[str, Handler]:
        return {
            "chat.postMessage": self._post_message,
            "chat.update": self._update,
            "auth.test": self._auth_test,
            "conversations.info": self._conversations_info,
        }

    # -- methods --------------------------------------------------------------------------

    async def _post_message(self, body: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(body.get("channel"))
        if channel_id is None:
            return {"ok": False, "error": "channel_not_found"}
        text, blocks = body.get("text"), _blocks(body.get("blocks"))
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        thread_ts = body.get("thread_ts") or None
        if thread_ts is not None and (channel_id, thread_ts) not in self._live:
            return {"ok": False, "error": "thread_not_found"}
        ts = self._next_ts()
        message = _message(ts, text, blocks, thread_ts)
        self._live[(channel_id, ts)] = message
        self._record("postMessage", channel_id, ts, text, blocks, thread_ts)
        return {"ok": True, "channel": channel_id, "ts": ts, "message": message}

    async def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(body.get("channel"))
        if channel_id is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(body.get("ts") or "")
        old = self._live.get((channel_id, ts))
        if old is None:
            return {"ok": False, "error": "message_not_found"}
        text = body.get("text", old.get("text"))
        blocks = _blocks(body["blocks"]) if "blocks" in body else old.get("blocks")
        message = _message(ts, text, blocks, old.get("thread_ts"))
        self._live[(channel_id, ts)] = message
        self._record("update", channel_id, ts, text, blocks, old.get("thread_ts"))
        return {"ok": True, "channel": channel_id, "ts": ts, "text": text, "message": message}

    async def _auth_test(self, body: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "url": "https://greenlight-lab.slack.com/",
            "team": "lab",
            "user": "greenlight",
        } | _BOT

    async def _conversations_info(self, body: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(body.get("channel"))
        if channel_id is None:
            return {"ok": False, "error": "channel_not_found"}
        name = self._names[channel_id]
        return {
            "ok": True,
            "channel": {"id": channel_id, "name": name, "is_channel": True, "is_archived": False},
        }

    # -- helpers --------------------------------------------------------------------------

    def _resolve(self, channel: Any) -> str | None:
        """The channel's ID (names get a stable one), or None when it does not exist."""
        if not isinstance(channel, str) or not channel.strip():
            return None
        channel = channel.strip()
        if _CHANNEL_ID.match(channel):
            channel_id, name = channel, self._names.get(channel, channel.lower())
        else:
            name = channel.lstrip("#")
            channel_id = "C" + hashlib.sha1(name.encode()).hexdigest()[:10].upper()
        if self._known is not None and name not in self._known and channel_id not in self._known:
            return None
        self._names.setdefault(channel_id, name)
        return channel_id

    def _next_ts(self) -> str:
        """A Slack-style ``seconds.micros`` timestamp, unique and strictly increasing."""
        now_us = int(time.time() * 1_000_000)
        self._last_ts_us = max(now_us, self._last_ts_us + 1)
        seconds, micros = divmod(self._last_ts_us, 1_000_000)
        return f"{seconds}.{micros:06d}"

    def _record(
        self, kind: str, channel_id: str, ts: str, text: Any, blocks: Any, thread_ts: str | None
    ) -> None:
        self.messages.append(
            {
                "ts": ts,
                "channel": channel_id,
                "channel_name": self._names.get(channel_id, channel_id),
                "text": text,
                "blocks": blocks,
                "thread_ts": thread_ts,
                "kind": kind,
                "at": time.time(),
            }
        )


async def _read_body(request: web.Request) -> dict[str, Any]:
    """The call's arguments from a JSON or form-encoded body, plus query parameters."""
    args: dict[str, Any] = dict(request.query)
    if request.content_type == "application/json":
        try:
            data = await request.json()
        except json.JSONDecodeError:
            data = {}
        if isinstance(data, dict):
            args.update(data)
    elif request.can_read_body:
        args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
    return args


def _blocks(value: Any) -> list[dict[str, Any]] | None:
    """Blocks as a list: JSON bodies carry a list, form bodies a JSON string."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    return value if isinstance(value, list) else None


def _message(ts: str, text: Any, blocks: Any, thread_ts: str | None) -> dict[str, Any]:
    message: dict[str, Any] = {
        "type": "message",
        "subtype": "bot_message",
        "text": text or "",
        "user": _BOT["user_id"],
        "bot_id": _BOT["bot_id"],
        "ts": ts,
    }
    if blocks:
        message["blocks"] = blocks
    if thread_ts:
        message["thread_ts"] = thread_ts
    return message
