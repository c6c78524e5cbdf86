"""Slack notifications: post, reply in a thread, update in place.

Slack is optional. A ``Notifier`` without a token is *disabled*: every call logs that
nothing was sent (method and channel) and returns None. Errors are translated into Greenlight's (``raise ... from
e``), and no message ever carries the token:

    ratelimited / HTTP 429 / HTTP 5xx / connection errors -> TransientError(retry_after=Retry-After)
    invalid_auth / not_authed / account_inactive / token_revoked / missing_scope -> Forbidden
    channel_not_found / message_not_found / thread_not_found -> NotFound
    any other ``{"ok": false}``                            -> PermanentError
    (each keeping the HTTP status, ``status``, and Slack's error, ``code``)

Flows must never fail a release because Slack is down: they call ``safe_post`` /
``safe_update`` (or build the notifier with ``raise_errors=False``), which log the reason
and return None instead of raising.

Rate limits (429) are retried inside the SDK twice, honouring ``Retry-After``; connection
errors once. A ``timeout_s`` bounds every HTTP request.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
)
from slack_sdk.signature import Clock, SignatureVerifier
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from greenlight.errors import Forbidden, GreenlightError, NotFound, PermanentError, TransientError

log = logging.getLogger(__name__)

TOKEN_ENV = "SLACK_BOT_TOKEN"
BASE_URL_ENV = "GREENLIGHT_SLACK_BASE_URL"
DEFAULT_BASE_URL = WebClient.BASE_URL
RATE_LIMIT_RETRIES = 2

_FORBIDDEN = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired", "missing_scope"}
)
_NOT_FOUND = frozenset({"channel_not_found", "message_not_found", "thread_not_found", "not_in_channel"})
_TRANSIENT = frozenset(
    {"ratelimited", "rate_limited", "internal_error", "fatal_error", "service_unavailable"}
)


class Notifier:
    """Posts to one Slack channel through ``slack_sdk.WebClient``.

    ``token`` None reads ``SLACK_BOT_TOKEN``; ``base_url`` None reads
    ``GREENLIGHT_SLACK_BASE_URL`` or uses Slack's own. Without a token the notifier is
    disabled (``enabled`` is False) and its calls only log. With ``raise_errors=False``
    failures are logged and the call returns None instead of raising.
    """

    def __init__(
        self,
        token: str | None,
        channel: str,
        base_url: str | None = None,
        timeout_s: float = 5.0,
        *,
        raise_errors: bool = True,
    ) -> None:
        self.channel = channel
        self.raise_errors = raise_errors
        self._token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self._base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
        if not self._base_url.endswith("/"):
            self._base_url += "/"
        self._channel_ids: dict[str, str] = {}  # ts -> channel id, for chat.update
        self._client: WebClient | None = None
        if self._token:
            self._client = WebClient(
                token=self._token,
                base_url=self._base_url,
                timeout=max(1, math.ceil(timeout_s)),  # the SDK takes whole seconds
                retry_handlers=[
                    RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES),
                    ConnectionErrorRetryHandler(max_retry_count=1),
                ],
            )

    @property
    def enabled(self) -> bool:
        """True when a token is configured and messages are really sent."""
        return self._client is not None

    def __repr__(self) -> str:
        state = "enabled" if self.enabled else "disabled"
        return f"Notifier(channel={self.channel!r}, base_url={self._base_url!r}, {state})"

    # -- API ------------------------------------------------------------------------------

    def post(
        self, text: str, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
    ) -> str | None:
        """Post ``text`` (and ``blocks``) to the channel, in ``thread_ts``'s thread if given; return the ts."""
        args: dict[str, Any] = {"channel": self.channel, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        if thread_ts is not None:
            args["thread_ts"] = thread_ts
        data = self._call("chat.postMessage", lambda client: client.chat_postMessage(**args))
        if data is None:
            return None
        ts = str(data["ts"])
        self._channel_ids[ts] = str(data.get("channel") or self.channel)
        return ts

    def start_thread(self, text: str, blocks: list[dict[str, Any]] | None = None) -> str | None:
        """Post a top-level message whose ts later replies use as ``thread_ts``; return the ts."""
        return self.post(text, blocks=blocks)

    def update(self, ts: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Replace the text (and blocks) of the message ``ts`` posted earlier in the channel."""
        args: dict[str, Any] = {"channel": self._channel_ids.get(ts, self.channel), "ts": ts, "text": text}
        if blocks is not None:
            args["blocks"] = blocks
        self._call("chat.update", lambda client: client.chat_update(**args))

    def auth_test(self) -> dict[str, Any] | None:
        """Who the token is (``auth.test``: team, user, bot_id); None when disabled. Raises
        Forbidden when the token is refused."""
        return self._call("auth.test", lambda client: client.auth_test())

    def safe_post(
        self, text: str, blocks: list[dict[str, Any]] | None = None, thread_ts: str | None = None
    ) -> str | None:
        """Like ``post`` but never raises: any failure is logged and gives None."""
        try:
            return self.post(text, blocks=blocks, thread_ts=thread_ts)
        except Exception as e:
            log.warning("slack: post to %s not sent: %s", self.channel, self._scrub(str(e)))
            return None

    def safe_update(self, ts: str, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """Like ``update`` but never raises: any failure is logged."""
        try:
            self.update(ts, text, blocks=blocks)
        except Exception as e:
            log.warning("slack: update of %s in %s not sent: %s", ts, self.channel, self._scrub(str(e)))

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, method: str, call: Callable[[WebClient], SlackResponse]) -> dict[str, Any] | None:
        """Run ``call`` (one Slack ``method``); its data, or None when disabled or failing quietly."""
        if self._client is None:
            log.info("slack disabled (no %s): %s to %s not sent", TOKEN_ENV, method, self.channel)
            return None
        try:
            return self._send(self._client, method, call)
        except GreenlightError as e:
            if self.raise_errors:
                raise
            log.warning("slack: %s not sent: %s", method, e)
            return None

    def _send(
        self, client: WebClient, method: str, call: Callable[[WebClient], SlackResponse]
    ) -> dict[str, Any]:
        try:
            response = call(client)
        except SlackApiError as e:
            raise self._translate_api_error(method, e) from e
        except SlackClientError as e:
            raise TransientError(f"slack {method}: client error: {self._scrub(str(e))}") from e
        except OSError as e:  # URLError, timeouts, refused connections
            raise TransientError(
                f"slack {method}: cannot reach {self._base_url}: {self._scrub(str(e))}"
            ) from e
        data = response.data
        if not isinstance(data, dict):
            raise PermanentError(f"slack {method}: unexpected non-JSON answer")
        return data

    def _translate_api_error(self, method: str, e: SlackApiError) -> GreenlightError:
        """The Greenlight error for a Slack API failure, from its HTTP status and ``error`` code."""
        status = int(getattr(e.response, "status_code", 0) or 0)
        data = e.response.data if isinstance(e.response.data, dict) else {}
        code = self._scrub(str(data.get("error") or "unknown_error"))[:200]
        where = f"slack {method} to {self.channel}"
        kept = status or None
        if status == 429 or status >= 500 or code in _TRANSIENT:
            return TransientError(
                f"{where}: {code} (HTTP {status})",
                retry_after=_retry_after(e.response.headers),
                status=kept,
                code=code,
            )
        if code in _FORBIDDEN:
            return Forbidden(f"{where}: the bot token was refused ({code})", status=kept, code=code)
        if code in _NOT_FOUND:
            return NotFound(f"{where}: {code}", status=kept, code=code)
        return PermanentError(f"{where}: {code} (HTTP {status})", status=kept, code=code)

    def _scrub(self, text: str) -> str:
        """``text`` with the token masked, in case an SDK message echoed it."""
        if self._token:
            text = text.replace(self._token, "xoxb-***")
        return text


def _retry_after(headers: Any) -> float | None:
    """Seconds from a ``Retry-After`` header (any case), or None."""
    if not headers:
        return None
    for key, value in dict(headers).items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) and value else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return None
    return None


# --- Slack's requests to Greenlight: interactivity -------------------------------------------

#: Slack's own limit: a request signed longer ago than this is refused (replays, delays)
MAX_REQUEST_AGE_S = 300


class _At(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def request_problem(
    signing_secret: str, body: bytes, timestamp: str | None, signature: str | None, now: float
) -> str | None:
    """Why a request is not one Slack signed just now (None: it is), checked with slack-sdk's
    ``SignatureVerifier``: headers present, the timestamp within 5 minutes of ``now``, and
    ``X-Slack-Signature`` the HMAC-SHA256 of ``v0:<timestamp>:<body>`` with the signing secret."""
    if not timestamp or not signature:
        return "X-Slack-Request-Timestamp or X-Slack-Signature is missing"
    try:
        age = now - int(timestamp)
    except ValueError:
        return "X-Slack-Request-Timestamp is not a number"
    if abs(age) > MAX_REQUEST_AGE_S:
        return f"stale request: signed {age:.0f} s ago (Slack's limit: {MAX_REQUEST_AGE_S} s)"
    try:
        valid = SignatureVerifier(signing_secret, clock=_At(now)).is_valid(body, timestamp, signature)
    except (ValueError, UnicodeDecodeError):
        valid = False
    return None if valid else "X-Slack-Signature does not verify with the signing secret"


def respond_ephemeral(
    response_url: str, text: str, allowed_hosts: set[str], timeout_s: float = 2.0
) -> str | None:
    """Tell the person who clicked, and only them (``response_type: ephemeral``), through the
    click's ``response_url``; only to a host in ``allowed_hosts`` (Slack's ``hooks.slack.com``, the
    lab's). Returns why nothing was sent, or None."""
    host = urlsplit(response_url).hostname or ""
    if urlsplit(response_url).scheme not in ("https", "http") or host not in allowed_hosts:
        return f"response_url host {host or '-'} is not Slack's"
    try:
        answer = WebhookClient(response_url, timeout=max(1, math.ceil(timeout_s))).send(
            text=text, response_type="ephemeral", replace_original=False
        )
    except (SlackClientError, OSError) as e:
        return f"response_url not reached: {type(e).__name__}"
    return None if answer.status_code < 300 else f"response_url answered HTTP {answer.status_code}"


def response_hosts() -> set[str]:
    """Hosts a click's ``response_url`` may name: Slack's, and the configured Slack API's host."""
    hosts = {"hooks.slack.com"}
    base = os.environ.get(BASE_URL_ENV)
    if base and urlsplit(base).hostname:
        hosts.add(str(urlsplit(base).hostname))
    return hosts
