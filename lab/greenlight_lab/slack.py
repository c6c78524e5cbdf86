"""A Slack stand-in that records what it is sent and clicks buttons the way Slack does.

**Web API.** It answers the four methods Greenlight uses, the way Slack does, to the official
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

**Block Kit.** ``blocks`` of chat.postMessage and chat.update are validated as Slack does (see
:func:`validate_blocks`): at most 50 blocks; block types section, actions, input, context,
divider, header; buttons, confirmation dialogs, plain-text inputs, text objects with Slack's
length limits; ``block_id`` and ``action_id`` unique in the message; no unknown fields. Invalid
blocks answer HTTP 200 ``{"ok": false, "error": "invalid_blocks", "errors": ["<why>
[json-pointer:/blocks/..]"], "response_metadata": {"messages": ["[ERROR] <why> ..."]}}``;
``blocks`` that are not a JSON array answer ``invalid_blocks_format``. As in Slack, the stored
message (and the ``message`` of the answer) gets a generated ``block_id`` / ``action_id`` where
the caller gave none; the record under ``/lab/messages`` keeps the blocks as sent.

**Interactivity.** ``POST /lab/click`` ``{"user", "action": "approve"|"reject", "reason", "run",
"age_s", "secret"}`` plays a person clicking Greenlight's approval button: it finds the newest
message whose *current* blocks hold a button with ``action_id`` ``greenlight_approve`` (or
``greenlight_reject``), with ``run`` the one whose button ``value`` (JSON) names that run, and
POSTs a ``block_actions`` interaction to the configured Request URL exactly as Slack does:
``application/x-www-form-urlencoded`` ``payload=<JSON>``, signed with ``X-Slack-Request-Timestamp``
(now minus ``age_s``) and ``X-Slack-Signature: v0=hex(HMAC-SHA256(secret, "v0:{ts}:{body}"))``
(``secret`` overrides the signing secret: a forged request), within Slack's 3-second timeout.
``reason`` goes in ``state.values`` of the message's input block. It answers 200 ``{"status",
"answer", "elapsed_s", "timed_out", "error", "message_ts", "channel", "run", "action_id", "user",
"request": {"url", "body", "headers"}}``; 400 bad input; 404 no pending approval message; 503 no
Request URL or no signing secret configured.

``GET /lab/interactivity`` -> ``{"request_url", "signing_secret_set", "timeout_s"}`` (never the
secret); ``PUT /lab/interactivity {"request_url"?, "signing_secret"?}`` changes what is given;
``DELETE /lab/interactivity`` restores the values the stand-in was started with.

**response_url.** Each click carries a fresh ``http://127.0.0.1:PORT/lab/response/<id>``. A JSON
``POST`` ``{"text", "blocks"?, "response_type": "ephemeral" (default) | "in_channel",
"replace_original", "delete_original", "thread_ts"?}`` answers 200 ``{"ok": true}`` and is recorded
(``GET /lab/responses``: ``id, user, channel, channel_name, message_ts, text, blocks,
response_type, visible_to, replace_original, delete_original, use, at``; an ephemeral one is
visible only to the user who clicked). ``replace_original`` replaces the clicked message's
text/blocks (recorded in ``/lab/messages`` as kind ``update``), ``delete_original`` deletes it
(kind ``delete``), an ``in_channel`` one posts a new message (kind ``postMessage``). As Slack
documents, a response_url works 5 times within 30 minutes; then 404 ``{"ok": false, "error":
"expired_url"}``. An unknown one: 404 ``no_service``. Bad JSON: 400 ``invalid_payload``.

``GET /lab/messages`` returns the recorded messages as JSON: one record per successful
``chat.postMessage`` or ``chat.update`` (or response_url effect) with keys ``ts, channel,
channel_name, text, blocks, thread_ts, kind ("postMessage" | "update" | "delete"), at`` (unix
seconds). ``DELETE /lab/messages`` empties the record (the messages themselves stay updatable).

Faults: every API call first asks ``faults.take("slack", None, "<method>")``. An ``error``
rule with status 429 answers HTTP 429 ``ratelimited`` with an integer ``Retry-After``
(``rule.retry_after`` rounded up, default 1: slack-sdk parses the header with ``int()``);
another status answers that HTTP status with ``{"ok": false, "error": "lab_fault"}``. A
``stall`` rule sleeps ``rule.stall_s`` and then answers normally.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.faults import FaultRegistry

FAULT_TARGET = "slack"
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{8,}$")
_USER_ID = re.compile(r"^[UW][A-Z0-9]{8,}$")
_BOT = {"user_id": "U0LABBOT01", "bot_id": "B0LABBOT01", "team_id": "T0LABTEAM1"}
_TEAM = {"id": _BOT["team_id"], "domain": "greenlight-lab"}
APP_ID = "A0LABAPP01"
#: the app's legacy verification token, sent in every interaction payload as Slack does
VERIFICATION_TOKEN = "labVerificationToken0001"
#: the daemon reads the signing secret from here (never from its command line: visible in ps)
SIGNING_SECRET_ENV = "GREENLIGHT_LAB_SLACK_SIGNING_SECRET"
APPROVE_ACTION = "greenlight_approve"
REJECT_ACTION = "greenlight_reject"
ACTIONS = {"approve": APPROVE_ACTION, "reject": REJECT_ACTION}
#: Slack waits this long for the Request URL's answer, then shows the user an error (no retry)
INTERACTION_TIMEOUT_S = 3.0
#: a response_url works this many times within RESPONSE_URL_TTL_S of the click (Slack's limits)
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL_S = 30 * 60.0
_UNSET: Any = object()

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class SlackStandIn:
    """An aiohttp server that speaks enough of the Slack Web API for Greenlight's notifier, and
    plays Slack's side of interactivity (clicks to a Request URL, response_url)."""

    def __init__(
        self,
        faults: FaultRegistry,
        token_prefix: str = "xoxb-",
        *,
        known_channels: Iterable[str] | None = None,
        request_url: str | None = None,
        signing_secret: str | None = None,
        response_url_ttl_s: float = RESPONSE_URL_TTL_S,
    ) -> None:
        """``known_channels``: names or IDs that exist; ``None`` means every channel exists.
        ``request_url`` / ``signing_secret``: the app's interactivity Request URL and signing
        secret (clicks need both); ``response_url_ttl_s``: how long a response_url works."""
        self.faults = faults
        self.token_prefix = token_prefix
        self.messages: list[dict[str, Any]] = []
        self.responses: list[dict[str, Any]] = []
        self._known = None if known_channels is None else {c.lstrip("#") for c in known_channels}
        self._names: dict[str, str] = {}  # channel id -> name
        self._live: dict[tuple[str, str], dict[str, Any]] = {}  # (channel id, ts) -> message
        self._sent: dict[tuple[str, str], Any] = {}  # (channel id, ts) -> its blocks as sent
        self._last_ts_us = 0
        self._boot = (request_url, signing_secret)
        self.request_url, self._signing_secret = request_url, signing_secret
        self.response_url_ttl_s = response_url_ttl_s
        self._response_urls: dict[str, dict[str, Any]] = {}  # id -> what the click was on
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.app = self._build_app()

    # -- lifecycle ------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/api/{method}", self._api)
        app.router.add_get("/lab/messages", self._lab_messages)
        app.router.add_delete("/lab/messages", self._lab_clear)
        app.router.add_post("/lab/click", self._lab_click)
        app.router.add_get("/lab/interactivity", self._lab_interactivity_get)
        app.router.add_put("/lab/interactivity", self._lab_interactivity_put)
        app.router.add_delete("/lab/interactivity", self._lab_interactivity_reset)
        app.router.add_get("/lab/responses", self._lab_responses)
        app.router.add_post("/lab/response/{id}", self._lab_response)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Serve on ``host:port`` (0: a free port) and return the bound port."""
        self._runner, self.port = await serving.serve(self.app, host, port)
        return self.port

    async def stop(self) -> None:
        """Stop serving; recorded messages stay readable."""
        await serving.close(self._runner)
        self._runner = None

    # -- interactivity configuration ------------------------------------------------------

    def configure_interactivity(self, request_url: Any = _UNSET, signing_secret: Any = _UNSET) -> None:
        """Set the Request URL and/or the signing secret (None clears one); raises ValueError."""
        if request_url is not _UNSET:
            if request_url is not None and not (
                isinstance(request_url, str)
                and urllib.parse.urlsplit(request_url).scheme in ("http", "https")
            ):
                raise ValueError(f"request_url must be an http(s) URL or null, not {request_url!r}")
            self.request_url = request_url
        if signing_secret is not _UNSET:
            if signing_secret is not None and not (
                isinstance(signing_secret, str) and signing_secret.strip()
            ):
                raise ValueError("signing_secret must be a non-empty string or null")
            self._signing_secret = signing_secret

    def reset_interactivity(self) -> None:
        """Back to the Request URL and signing secret the stand-in was started with."""
        self.request_url, self._signing_secret = self._boot

    def interactivity(self) -> dict[str, Any]:
        """The interactivity settings, without the secret's value."""
        return {
            "request_url": self.request_url,
            "signing_secret_set": self._signing_secret is not None,
            "timeout_s": INTERACTION_TIMEOUT_S,
        }

    # -- HTTP -----------------------------------------------------------------------------

    async def _lab_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages)

    async def _lab_clear(self, request: web.Request) -> web.Response:
        cleared = len(self.messages)
        self.messages.clear()
        return web.json_response({"cleared": cleared})

    async def _lab_click(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        if body is None:
            return web.json_response({"error": "the body must be a JSON object"}, status=400)
        status, answer = await self.click(body)
        return web.json_response(answer, status=status)

    async def _lab_interactivity_get(self, request: web.Request) -> web.Response:
        return web.json_response(self.interactivity())

    async def _lab_interactivity_put(self, request: web.Request) -> web.Response:
        status, answer = self.put_interactivity(await _json_object(request))
        return web.json_response(answer, status=status)

    async def _lab_interactivity_reset(self, request: web.Request) -> web.Response:
        self.reset_interactivity()
        return web.json_response(self.interactivity())

    async def _lab_responses(self, request: web.Request) -> web.Response:
        return web.json_response(self.responses)

    async def _lab_response(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        status, answer = self.respond(request.match_info["id"], body)
        return web.json_response(answer, status=status)

    def put_interactivity(self, body: dict[str, Any] | None) -> tuple[int, dict[str, Any]]:
        """``PUT /lab/interactivity``: (HTTP status, answer)."""
        if body is None:
            return 400, {"error": "the body must be a JSON object"}
        unknown = set(body) - {"request_url", "signing_secret"}
        if unknown:
            return 400, {"error": f"unknown fields {sorted(unknown)}: use request_url, signing_secret"}
        try:
            self.configure_interactivity(body.get("request_url", _UNSET), body.get("signing_secret", _UNSET))
        except ValueError as e:
            return 400, {"error": str(e)}
        return 200, self.interactivity()

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
        blocks, refusal = _checked_blocks(body.get("blocks"))
        if refusal is not None:
            return refusal
        text = body.get("text")
        if not text and not blocks:
            return {"ok": False, "error": "no_text"}
        thread_ts = body.get("thread_ts") or None
        if thread_ts is not None and (channel_id, thread_ts) not in self._live:
            return {"ok": False, "error": "thread_not_found"}
        message = self._add_message(channel_id, text, blocks, thread_ts)
        return {"ok": True, "channel": channel_id, "ts": message["ts"], "message": message}

    async def _update(self, body: dict[str, Any]) -> dict[str, Any]:
        channel_id = self._resolve(body.get("channel"))
        if channel_id is None:
            return {"ok": False, "error": "channel_not_found"}
        ts = str(body.get("ts") or "")
        old = self._live.get((channel_id, ts))
        if old is None:
            return {"ok": False, "error": "message_not_found"}
        text = body.get("text", old.get("text"))
        if "blocks" not in body:  # Slack keeps the message's blocks
            message = self._replace_message(
                channel_id, ts, text, self._sent.get((channel_id, ts)), old.get("blocks")
            )
            return {"ok": True, "channel": channel_id, "ts": ts, "text": text, "message": message}
        blocks, refusal = _checked_blocks(body["blocks"])
        if refusal is not None:
            return refusal
        message = self._replace_message(channel_id, ts, text, blocks)
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

    # -- messages -------------------------------------------------------------------------

    def _add_message(
        self, channel_id: str, text: Any, blocks: list[dict[str, Any]] | None, thread_ts: str | None
    ) -> dict[str, Any]:
        ts = self._next_ts()
        message = _message(ts, text, _with_ids(blocks), thread_ts)
        self._live[(channel_id, ts)] = message
        self._sent[(channel_id, ts)] = blocks
        self._record("postMessage", channel_id, ts, text, blocks, thread_ts)
        return message

    def _replace_message(
        self, channel_id: str, ts: str, text: Any, blocks: Any, stored: Any = _UNSET
    ) -> dict[str, Any]:
        """Replace a live message's text and blocks (``stored``: its blocks as already stored)."""
        old = self._live[(channel_id, ts)]
        message = _message(ts, text, _with_ids(blocks) if stored is _UNSET else stored, old.get("thread_ts"))
        self._live[(channel_id, ts)] = message
        self._sent[(channel_id, ts)] = blocks
        self._record("update", channel_id, ts, text, blocks, old.get("thread_ts"))
        return message

    # -- clicks ---------------------------------------------------------------------------

    async def click(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A person clicks an approval button (see the module docstring): (HTTP status, answer)."""
        problem = _click_problem(body)
        if problem is not None:
            return 400, {"error": problem}
        user, action_id = body["user"], ACTIONS[body["action"]]
        reason, run = body.get("reason") or "", body.get("run") or None
        secret = body.get("secret") or self._signing_secret
        if self.request_url is None:
            return 503, {"error": "no interactivity Request URL configured (greenlight lab up sets it)"}
        if secret is None:
            return 503, {"error": f"no signing secret configured (the daemon reads ${SIGNING_SECRET_ENV})"}
        found = self._pending(action_id, run)
        if found is None:
            return 404, {"error": "no pending approval message" + (f" for run {run}" if run else "")}
        channel_id, message, block, button = found
        values = _input_values(message.get("blocks") or [], reason)
        if values is None:
            return 400, {"error": "the message has no input block: a reason cannot be typed on it"}
        response_url = self._new_response_url(user, channel_id, message)
        payload = self._payload(user, channel_id, message, block, button, values, response_url)
        timestamp = str(int(time.time() - float(body.get("age_s") or 0)))
        form = urllib.parse.urlencode({"payload": json.dumps(payload)})
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": sign(secret, timestamp, form),
        }
        outcome = await _deliver(self.request_url, form, headers)
        return 200, {
            **outcome,
            "message_ts": message["ts"],
            "channel": channel_id,
            "channel_name": self._names.get(channel_id, channel_id),
            "run": _button_run(button),
            "action_id": action_id,
            "user": user,
            "response_url": response_url,
            "request": {"url": self.request_url, "body": form, "headers": headers},
        }

    def _pending(
        self, action_id: str, run: str | None
    ) -> tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]] | None:
        """The newest live message with that button (for ``run``), its actions block and button."""
        newest_first = sorted(self._live.items(), key=lambda kv: _ts_key(kv[0][1]), reverse=True)
        for (channel_id, _), message in newest_first:
            for block in message.get("blocks") or []:
                if block.get("type") != "actions":
                    continue
                for element in block.get("elements") or []:
                    if element.get("type") != "button" or element.get("action_id") != action_id:
                        continue
                    if run is None or _button_run(element) == run:
                        return channel_id, message, block, element
        return None

    def _new_response_url(self, user: str, channel_id: str, message: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(18)
        self._response_urls[token] = {
            "user": user,
            "channel": channel_id,
            "message_ts": message["ts"],
            "created": time.monotonic(),
            "uses": 0,
        }
        return f"http://127.0.0.1:{self.port}/lab/response/{token}"

    def _payload(
        self,
        user: str,
        channel_id: str,
        message: dict[str, Any],
        block: dict[str, Any],
        button: dict[str, Any],
        values: dict[str, Any],
        response_url: str,
    ) -> dict[str, Any]:
        """The ``block_actions`` payload Slack sends for a click on a button in a message."""
        name = _user_name(user)
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        action: dict[str, Any] = {
            "action_id": button["action_id"],
            "block_id": block["block_id"],
            "text": button["text"],
            "value": button.get("value"),
            "type": "button",
            "action_ts": _slack_ts(time.time()),
        }
        if "style" in button:
            action["style"] = button["style"]
        if action["value"] is None:
            del action["value"]
        return {
            "type": "block_actions",
            "user": {"id": user, "username": name, "name": name, "team_id": _TEAM["id"]},
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": f"{secrets.randbelow(10**13)}.{secrets.randbelow(10**13)}.{secrets.token_hex(16)}",
            "team": dict(_TEAM),
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._names.get(channel_id, channel_id)},
            "message": {**copy.deepcopy(message), "team": _TEAM["id"], "app_id": APP_ID},
            "state": {"values": values},
            "response_url": response_url,
            "actions": [action],
        }

    # -- response_url ---------------------------------------------------------------------

    def respond(self, token: str, body: Any) -> tuple[int, dict[str, Any]]:
        """A POST to a response_url: (HTTP status, answer); see the module docstring."""
        hook = self._response_urls.get(token)
        if hook is None:
            return 404, {"ok": False, "error": "no_service"}
        expired = time.monotonic() - hook["created"] > self.response_url_ttl_s
        if expired or hook["uses"] >= RESPONSE_URL_MAX_USES:
            return 404, {"ok": False, "error": "expired_url"}
        if not isinstance(body, dict):
            return 400, {"ok": False, "error": "invalid_payload"}
        response_type = body.get("response_type") or "ephemeral"
        if response_type not in ("ephemeral", "in_channel"):
            return 400, {"ok": False, "error": "invalid_response_type"}
        replace, delete = _flag(body.get("replace_original")), _flag(body.get("delete_original"))
        blocks, refusal = _checked_blocks(body.get("blocks"))
        if refusal is not None:
            return 400, refusal
        text = body.get("text")
        if not text and not blocks and not delete:
            return 400, {"ok": False, "error": "no_text"}
        channel_id, ts = hook["channel"], hook["message_ts"]
        original = self._live.get((channel_id, ts))
        if (replace or delete) and original is None:
            return 404, {"ok": False, "error": "message_not_found"}
        hook["uses"] += 1
        if delete:
            assert original is not None
            del self._live[(channel_id, ts)]
            self._record("delete", channel_id, ts, None, None, original.get("thread_ts"))
        if replace and not delete:
            self._replace_message(channel_id, ts, text, blocks)
        elif (text or blocks) and response_type == "in_channel":
            thread_ts = body.get("thread_ts") or None
            if thread_ts is not None and (channel_id, thread_ts) not in self._live:
                thread_ts = None
            self._add_message(channel_id, text, blocks, thread_ts)
        self.responses.append(
            {
                "id": token,
                "user": hook["user"],
                "channel": channel_id,
                "channel_name": self._names.get(channel_id, channel_id),
                "message_ts": ts,
                "text": text,
                "blocks": blocks,
                "response_type": response_type,
                "visible_to": hook["user"] if response_type == "ephemeral" and not replace else None,
                "replace_original": replace,
                "delete_original": delete,
                "use": hook["uses"],
                "at": time.time(),
            }
        )
        return 200, {"ok": True}

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


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:{timestamp}:{body}``."""
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


async def _deliver(url: str, form: str, headers: dict[str, str]) -> dict[str, Any]:
    """POST the interaction as Slack does, waiting at most INTERACTION_TIMEOUT_S for the answer."""
    started = time.monotonic()
    outcome: dict[str, Any] = {"status": None, "answer": None, "timed_out": False, "error": None}
    timeout = aiohttp.ClientTimeout(total=INTERACTION_TIMEOUT_S)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                url,
                data=form.encode(),
                headers={**headers, "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)"},
                allow_redirects=False,
            ) as resp,
        ):
            text = await resp.text(errors="replace")
            outcome["status"] = resp.status
            try:
                outcome["answer"] = json.loads(text)
            except json.JSONDecodeError:
                outcome["answer"] = text
    except TimeoutError:
        outcome["timed_out"] = True
        outcome["error"] = (
            f"no answer within {INTERACTION_TIMEOUT_S:g} s: Slack shows the user an error and does not retry"
        )
    except aiohttp.ClientError as e:
        outcome["error"] = f"{type(e).__name__}: {e}"
    outcome["elapsed_s"] = round(time.monotonic() - started, 3)
    return outcome


def _click_problem(body: dict[str, Any]) -> str | None:
    """Why this click request is malformed (None: it is fine)."""
    allowed = {"user", "action", "reason", "run", "age_s", "secret"}
    unknown = set(body) - allowed
    if unknown:
        return f"unknown fields {sorted(unknown)}: use {', '.join(sorted(allowed))}"
    user = body.get("user")
    if not isinstance(user, str) or not _USER_ID.match(user):
        return f"user must be a Slack user ID like U0LABALICE (^[UW][A-Z0-9]{{8,}}$), not {user!r}"
    if body.get("action") not in ACTIONS:
        return f"action must be approve or reject, not {body.get('action')!r}"
    for key in ("reason", "run"):
        if body.get(key) is not None and not isinstance(body[key], str):
            return f"{key} must be a string or null"
    age = body.get("age_s")
    if age is not None and (
        isinstance(age, bool) or not isinstance(age, int | float) or not math.isfinite(age)
    ):
        return f"age_s must be a number of seconds, not {age!r}"
    secret = body.get("secret")
    if secret is not None and not (isinstance(secret, str) and secret.strip()):
        return "secret must be a non-empty string or null"
    return None


def _button_run(button: dict[str, Any]) -> str | None:
    """The run a button's JSON ``value`` names, if any."""
    try:
        value = json.loads(button.get("value") or "")
    except (json.JSONDecodeError, TypeError):
        return None
    run = value.get("run") if isinstance(value, dict) else None
    return str(run) if run is not None else None


def _input_values(blocks: list[dict[str, Any]], reason: str) -> dict[str, Any] | None:
    """``state.values`` of the message: the reason typed in its (first) plain-text input, the other
    inputs empty. None when a reason was given but the message has no input to type it in."""
    values: dict[str, Any] = {}
    typed = False
    for block in blocks:
        element = block.get("element") or {}
        if block.get("type") != "input" or element.get("type") != "plain_text_input":
            continue
        value = reason if reason and not typed else None
        typed = typed or value is not None
        values[block["block_id"]] = {element["action_id"]: {"type": "plain_text_input", "value": value}}
    if reason and not typed:
        return None
    return values


def _user_name(user: str) -> str:
    """A lab user's name: U0LABALICE -> alice; other IDs their lower-case self."""
    return user.removeprefix("U0LAB").lower() or user.lower()


def _ts_key(ts: str) -> tuple[int, ...]:
    """A ``seconds.micros`` ts as integers, to order exactly (a float loses the micros)."""
    return tuple(int(part) if part.isdigit() else 0 for part in ts.split("."))


def _slack_ts(t: float) -> str:
    seconds, micros = divmod(int(t * 1_000_000), 1_000_000)
    return f"{seconds}.{micros:06d}"


def _flag(value: Any) -> bool:
    """Slack's booleans in a response_url body: true/false or the strings "true"/"false"."""
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


async def _json_object(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return body if isinstance(body, dict) else None


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


def _checked_blocks(value: Any) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """The blocks as a list (None when absent or empty) and Slack's refusal when they are invalid.
    JSON bodies carry a list, form bodies a JSON string."""
    if value is None or value == "":
        return None, None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None, {"ok": False, "error": "invalid_blocks_format"}
    if not isinstance(value, list):
        return None, {"ok": False, "error": "invalid_blocks_format"}
    errors = validate_blocks(value)
    if errors:
        return None, {
            "ok": False,
            "error": "invalid_blocks",
            "errors": errors,
            "response_metadata": {"messages": [f"[ERROR] {e}" for e in errors]},
        }
    return (value or None), None


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


def _with_ids(blocks: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """A copy of valid blocks with a generated ``block_id`` / ``action_id`` wherever none was
    given, as Slack stores them."""
    if not blocks:
        return blocks
    out = copy.deepcopy(blocks)
    for block in out:
        block.setdefault("block_id", secrets.token_urlsafe(4)[:5])
        elements = list(block.get("elements") or []) if block.get("type") == "actions" else []
        for element in [*elements, block.get("element"), block.get("accessory")]:
            if isinstance(element, dict) and element.get("type") in ("button", "plain_text_input"):
                element.setdefault("action_id", secrets.token_urlsafe(4)[:5])
    return out


# -- Block Kit validation ---------------------------------------------------------------------

MAX_BLOCKS = 50
_STYLES = ("primary", "danger")
_BLOCK_FIELDS = {
    "section": {"type", "block_id", "text", "fields", "accessory", "expand"},
    "actions": {"type", "block_id", "elements"},
    "input": {"type", "block_id", "label", "element", "hint", "optional", "dispatch_action"},
    "context": {"type", "block_id", "elements"},
    "divider": {"type", "block_id"},
    "header": {"type", "block_id", "text"},
}
_BUTTON_FIELDS = {"type", "text", "action_id", "url", "value", "style", "confirm", "accessibility_label"}
_CONFIRM_FIELDS = {"title", "text", "confirm", "deny", "style"}
_INPUT_FIELDS = {
    "type", "action_id", "initial_value", "multiline", "min_length", "max_length",
    "dispatch_action_config", "focus_on_load", "placeholder",
}  # fmt: skip
_IMAGE_FIELDS = {"type", "image_url", "alt_text", "slack_file"}


class _Check:
    """Collects Slack-style errors: ``<why> [json-pointer:/blocks/0/...]``."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.block_ids: set[str] = set()
        self.action_ids: set[str] = set()

    def fail(self, pointer: str, why: str) -> None:
        self.errors.append(f"{why} [json-pointer:{pointer}]")

    def fields(self, obj: dict[str, Any], allowed: set[str], pointer: str) -> None:
        for key in sorted(set(obj) - allowed):
            self.fail(f"{pointer}/{key}", f"invalid additional property: {key}")

    def string(
        self, obj: dict[str, Any], key: str, pointer: str, limit: int, *, required: bool = False
    ) -> bool:
        """Checks ``obj[key]``; True when it is present and valid."""
        if key not in obj:
            if required:
                self.fail(pointer, f"missing required field: {key}")
            return False
        value = obj[key]
        if not isinstance(value, str):
            self.fail(f"{pointer}/{key}", "must be a string")
            return False
        if not value:
            self.fail(f"{pointer}/{key}", "must be more than 0 characters")
            return False
        if len(value) > limit:
            self.fail(f"{pointer}/{key}", f"must be less than {limit + 1} characters")
            return False
        return True

    def boolean(self, obj: dict[str, Any], key: str, pointer: str) -> None:
        if key in obj and not isinstance(obj[key], bool):
            self.fail(f"{pointer}/{key}", "must be a boolean")

    def text(
        self,
        obj: dict[str, Any],
        key: str,
        pointer: str,
        limit: int,
        *,
        plain_only: bool,
        required: bool = True,
    ) -> None:
        """A text object ``obj[key]``: plain_text (or mrkdwn unless ``plain_only``), 1..limit chars."""
        if key not in obj:
            if required:
                self.fail(pointer, f"missing required field: {key}")
            return
        self.text_value(obj[key], f"{pointer}/{key}", limit, plain_only=plain_only)

    def text_value(self, value: Any, here: str, limit: int, *, plain_only: bool) -> None:
        if not isinstance(value, dict):
            self.fail(here, "must provide an object")
            return
        kinds = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
        kind = value.get("type")
        if kind not in kinds:
            self.fail(
                f"{here}/type",
                f"must be one of {', '.join(kinds)}" if kind else "missing required field: type",
            )
            return
        self.fields(
            value, {"type", "text", "emoji"} if kind == "plain_text" else {"type", "text", "verbatim"}, here
        )
        self.boolean(value, "emoji", here)
        self.boolean(value, "verbatim", here)
        self.string(value, "text", here, limit, required=True)

    def action_id(self, element: dict[str, Any], pointer: str) -> None:
        if self.string(element, "action_id", pointer, 255):
            action_id = element["action_id"]
            if action_id in self.action_ids:
                self.fail(
                    f"{pointer}/action_id",
                    f"duplicate action_id: {action_id} (must be unique in the message)",
                )
            self.action_ids.add(action_id)

    def element_list(self, block: dict[str, Any], pointer: str, most: int) -> list[Any]:
        elements = block.get("elements")
        if "elements" not in block:
            self.fail(pointer, "missing required field: elements")
            return []
        if not isinstance(elements, list):
            self.fail(f"{pointer}/elements", "must provide an array")
            return []
        if not elements:
            self.fail(f"{pointer}/elements", "must provide at least 1 items")
        if len(elements) > most:
            self.fail(f"{pointer}/elements", f"no more than {most} items allowed")
        return elements

    def button(self, button: dict[str, Any], pointer: str) -> None:
        self.fields(button, _BUTTON_FIELDS, pointer)
        self.text(button, "text", pointer, 75, plain_only=True)
        self.action_id(button, pointer)
        self.string(button, "value", pointer, 2000)
        self.string(button, "url", pointer, 3000)
        self.string(button, "accessibility_label", pointer, 75)
        if "style" in button and button["style"] not in _STYLES:
            self.fail(f"{pointer}/style", "must be a valid enum value (primary, danger)")
        if "confirm" in button:
            self.confirm(button["confirm"], f"{pointer}/confirm")

    def confirm(self, confirm: Any, pointer: str) -> None:
        if not isinstance(confirm, dict):
            self.fail(pointer, "must provide an object")
            return
        self.fields(confirm, _CONFIRM_FIELDS, pointer)
        self.text(confirm, "title", pointer, 100, plain_only=True)
        self.text(confirm, "text", pointer, 300, plain_only=False)
        self.text(confirm, "confirm", pointer, 30, plain_only=True)
        self.text(confirm, "deny", pointer, 30, plain_only=True)
        if "style" in confirm and confirm["style"] not in _STYLES:
            self.fail(f"{pointer}/style", "must be a valid enum value (primary, danger)")

    def plain_text_input(self, element: dict[str, Any], pointer: str) -> None:
        self.fields(element, _INPUT_FIELDS, pointer)
        self.action_id(element, pointer)
        self.boolean(element, "multiline", pointer)
        self.boolean(element, "focus_on_load", pointer)
        self.text(element, "placeholder", pointer, 150, plain_only=True, required=False)
        if "initial_value" in element and not isinstance(element["initial_value"], str):
            self.fail(f"{pointer}/initial_value", "must be a string")
        bounds = {"min_length": (0, 3000), "max_length": (1, 3000)}
        for key, (low, high) in bounds.items():
            value = element.get(key)
            if key in element and (
                isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high
            ):
                self.fail(f"{pointer}/{key}", f"must be an integer from {low} to {high}")
        low_v, high_v = element.get("min_length"), element.get("max_length")
        if isinstance(low_v, int) and isinstance(high_v, int) and low_v > high_v:
            self.fail(f"{pointer}/min_length", "must not be more than max_length")

    def block(self, block: Any, pointer: str) -> None:
        if not isinstance(block, dict):
            self.fail(pointer, "must provide an object")
            return
        kind = block.get("type")
        if kind not in _BLOCK_FIELDS:
            self.fail(
                f"{pointer}/type", f"unsupported type: {kind}" if kind else "missing required field: type"
            )
            return
        self.fields(block, _BLOCK_FIELDS[kind], pointer)
        if self.string(block, "block_id", pointer, 255):
            if block["block_id"] in self.block_ids:
                self.fail(f"{pointer}/block_id", f"duplicate block_id: {block['block_id']}")
            self.block_ids.add(block["block_id"])
        getattr(self, f"_{kind}")(block, pointer)

    def _section(self, block: dict[str, Any], pointer: str) -> None:
        if "text" not in block and "fields" not in block:
            self.fail(pointer, "must provide either text or fields")
        self.text(block, "text", pointer, 3000, plain_only=False, required=False)
        self.boolean(block, "expand", pointer)
        if "fields" in block:
            fields = block["fields"]
            if not isinstance(fields, list) or not fields or len(fields) > 10:
                self.fail(f"{pointer}/fields", "must provide an array of 1 to 10 text objects")
            else:
                for i, field in enumerate(fields):
                    self.text_value(field, f"{pointer}/fields/{i}", 2000, plain_only=False)
        if "accessory" in block:
            accessory = block["accessory"]
            if not isinstance(accessory, dict) or accessory.get("type") != "button":
                self.fail(f"{pointer}/accessory", "unsupported accessory (the lab models buttons)")
            else:
                self.button(accessory, f"{pointer}/accessory")

    def _actions(self, block: dict[str, Any], pointer: str) -> None:
        for i, element in enumerate(self.element_list(block, pointer, 25)):
            here = f"{pointer}/elements/{i}"
            if not isinstance(element, dict):
                self.fail(here, "must provide an object")
            elif element.get("type") != "button":
                self.fail(f"{here}/type", f"unsupported type: {element.get('type')} (the lab models buttons)")
            else:
                self.button(element, here)

    def _input(self, block: dict[str, Any], pointer: str) -> None:
        self.text(block, "label", pointer, 2000, plain_only=True)
        self.text(block, "hint", pointer, 2000, plain_only=True, required=False)
        self.boolean(block, "optional", pointer)
        self.boolean(block, "dispatch_action", pointer)
        if "element" not in block:
            self.fail(pointer, "missing required field: element")
            return
        element = block["element"]
        if not isinstance(element, dict):
            self.fail(f"{pointer}/element", "must provide an object")
        elif element.get("type") != "plain_text_input":
            self.fail(
                f"{pointer}/element/type",
                f"unsupported type: {element.get('type')} (the lab models plain_text_input)",
            )
        else:
            self.plain_text_input(element, f"{pointer}/element")

    def _context(self, block: dict[str, Any], pointer: str) -> None:
        for i, element in enumerate(self.element_list(block, pointer, 10)):
            here = f"{pointer}/elements/{i}"
            if isinstance(element, dict) and element.get("type") == "image":
                self.fields(element, _IMAGE_FIELDS, here)
                self.string(element, "alt_text", here, 2000, required=True)
                if "image_url" not in element and "slack_file" not in element:
                    self.fail(here, "must provide either image_url or slack_file")
            else:
                self.text_value(element, here, 3000, plain_only=False)

    def _divider(self, block: dict[str, Any], pointer: str) -> None:
        pass

    def _header(self, block: dict[str, Any], pointer: str) -> None:
        self.text(block, "text", pointer, 150, plain_only=True)


def validate_blocks(blocks: Any) -> list[str]:
    """Slack's objections to a message's ``blocks`` (empty: valid), each ``<why>
    [json-pointer:/blocks/...]`` as in Slack's ``invalid_blocks`` answers."""
    check = _Check()
    if not isinstance(blocks, list):
        check.fail("/blocks", "must provide an array")
        return check.errors
    if len(blocks) > MAX_BLOCKS:
        check.fail("/blocks", f"no more than {MAX_BLOCKS} items allowed")
    for i, block in enumerate(blocks):
        check.block(block, f"/blocks/{i}")
    return check.errors
