"""PagerDuty's Events API v2 over httpx: ``POST /v2/enqueue`` with ``trigger`` or ``resolve``.

The base URL is ``$GREENLIGHT_PAGERDUTY_EVENTS_URL`` (default ``https://events.pagerduty.com``).
The routing key goes in the body only; it never appears in an error or a log line.

    202 -> the dedup key PagerDuty kept
    400 -> PermanentError (the event is invalid, or the routing key is)
    429 -> TransientError with retry_after (Retry-After, when given)
    5xx, timeouts, refused connections -> TransientError
"""

from __future__ import annotations

import os
from typing import Any, Literal

import httpx

from greenlight.errors import PermanentError, TransientError

EVENTS_URL_ENV = "GREENLIGHT_PAGERDUTY_EVENTS_URL"
ROUTING_KEY_ENV = "GREENLIGHT_PAGERDUTY_ROUTING_KEY"
DEFAULT_EVENTS_URL = "https://events.pagerduty.com"

Action = Literal["trigger", "resolve"]


class PagerDuty:
    """Sends events to one PagerDuty service integration (its routing key)."""

    def __init__(
        self,
        routing_key: str,
        base_url: str | None = None,
        timeout_s: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._key = routing_key
        self.base_url = (base_url or os.environ.get(EVENTS_URL_ENV) or DEFAULT_EVENTS_URL).rstrip("/")
        self._timeout = timeout_s
        self._transport = transport

    def __repr__(self) -> str:
        return f"PagerDuty(base_url={self.base_url!r})"

    def send(
        self,
        action: Action,
        dedup_key: str,
        summary: str = "",
        source: str = "",
        severity: str = "error",
        custom_details: dict[str, Any] | None = None,
    ) -> str:
        """Send one event; return the dedup key PagerDuty answered with."""
        body: dict[str, Any] = {"routing_key": self._key, "event_action": action, "dedup_key": dedup_key}
        if action == "trigger":
            body["payload"] = {
                "summary": summary[:1024],
                "source": source,
                "severity": severity,
                "component": "greenlight",
                "custom_details": custom_details or {},
            }
        url = f"{self.base_url}/v2/enqueue"
        try:
            with httpx.Client(timeout=self._timeout, transport=self._transport) as client:
                response = client.post(url, json=body)
        except httpx.HTTPError as e:
            raise TransientError(f"pagerduty {action}: cannot reach {url}: {type(e).__name__}") from None
        return self._answer(action, response)

    def trigger(
        self,
        dedup_key: str,
        summary: str,
        source: str,
        severity: str,
        custom_details: dict[str, Any] | None = None,
    ) -> str:
        return self.send("trigger", dedup_key, summary, source, severity, custom_details)

    def resolve(self, dedup_key: str) -> str:
        return self.send("resolve", dedup_key)

    def _answer(self, action: str, response: httpx.Response) -> str:
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = {}
        data = data if isinstance(data, dict) else {}
        where = f"pagerduty {action}"
        if status == 202:
            return str(data.get("dedup_key") or "")
        message = self._scrub(str(data.get("message") or response.reason_phrase))[:300]
        errors = "; ".join(self._scrub(str(e)) for e in data.get("errors") or [])[:500]
        detail = f"{message}" + (f" ({errors})" if errors else "")
        if status == 429:
            raise TransientError(
                f"{where}: rate limited (HTTP 429)", retry_after=_retry_after(response), status=status
            )
        if status >= 500:
            raise TransientError(f"{where}: HTTP {status}: {detail}", status=status)
        raise PermanentError(f"{where}: HTTP {status}: {detail}", status=status)

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
