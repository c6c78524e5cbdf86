"""A PagerDuty Events API v2 stand-in, held to the real API's shapes.

``POST /v2/enqueue`` with a JSON body ``{"routing_key", "event_action": "trigger" | "acknowledge" |
"resolve", "dedup_key"?, "payload": {"summary", "source", "severity": "critical" | "error" |
"warning" | "info", ...}}`` (payload needed for a trigger only):

- 202 ``{"status": "success", "message": "Event processed", "dedup_key": KEY}`` (a trigger without
  a ``dedup_key`` is given a new one, as PagerDuty does);
- 400 ``{"status": "invalid event", "message": "Event object is invalid", "errors": [...]}`` for a
  missing or unknown routing key (PagerDuty answers 400 for an invalid key too), a missing
  summary/source/severity, a bad severity or event_action, or a body that is not JSON;
- 429 (a ``pagerduty`` fault with status 429; ``Retry-After`` when the rule gives one) as when a
  service is rate-limited; another fault status answers it with ``{"status": "error"}``; a
  ``stall`` rule holds the call.

Incidents are kept by dedup key: a trigger with the key of an open incident adds an alert to it
(no new incident, no new page); ``resolve`` closes it (a resolve of an unknown or closed key
still answers 202, as PagerDuty does, and changes nothing); a trigger after a resolve opens a
new incident. Lab API: ``GET /lab/incidents``, ``GET /lab/events`` (the routing key masked),
``DELETE /lab/incidents`` (forget everything).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from typing import Any

from aiohttp import web

from greenlight_lab import serving
from greenlight_lab.faults import FaultRegistry

FAULT_TARGET = "pagerduty"
ROUTING_KEY_ENV = "GREENLIGHT_PAGERDUTY_ROUTING_KEY"
ACTIONS = ("trigger", "acknowledge", "resolve")
SEVERITIES = ("critical", "error", "warning", "info")


def _invalid(*errors: str) -> web.Response:
    return web.json_response(
        {"status": "invalid event", "message": "Event object is invalid", "errors": list(errors)}, status=400
    )


class PagerDutyStandIn:
    """Events API v2 for the routing keys it is given."""

    def __init__(self, faults: FaultRegistry, routing_keys: set[str]) -> None:
        self.faults = faults
        self.routing_keys = set(routing_keys)
        self.incidents: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self._enqueue)
        app.router.add_get("/lab/incidents", self._incidents)
        app.router.add_get("/lab/events", self._events)
        app.router.add_delete("/lab/incidents", self._forget)
        self._runner, self.port = await serving.serve(app, host, port)
        return self.port

    async def stop(self) -> None:
        await serving.close(self._runner)
        self._runner = None

    async def _incidents(self, _: web.Request) -> web.Response:
        return web.json_response(self.incidents)

    async def _events(self, _: web.Request) -> web.Response:
        return web.json_response(self.events)

    async def _forget(self, _: web.Request) -> web.Response:
        n = len(self.incidents)
        self.incidents.clear()
        self.events.clear()
        return web.json_response({"forgotten": n})

    def open_incident(self, key: str) -> dict[str, Any] | None:
        for inc in self.incidents:
            if inc["dedup_key"] == key and inc["status"] != "resolved":
                return inc
        return None

    async def _enqueue(self, request: web.Request) -> web.Response:
        rule = self.faults.take(FAULT_TARGET, request.method.lower(), "enqueue")
        if rule is not None:
            if rule.mode == "stall":
                await asyncio.sleep(rule.stall_s)
            elif rule.status == 429:
                headers = {}
                if rule.retry_after is not None:
                    headers["Retry-After"] = str(max(0, math.ceil(rule.retry_after)))
                return web.json_response(
                    {
                        "status": "throttle event",
                        "message": "Requests for this service are arriving too quickly.",
                    },
                    status=429,
                    headers=headers,
                )
            else:
                return web.json_response({"status": "error", "message": "lab fault"}, status=rule.status)
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _invalid("Could not parse the request body as JSON")
        if not isinstance(body, dict):
            return _invalid("Event must be a JSON object")
        errors = []
        key = body.get("routing_key")
        if not isinstance(key, str) or not key:
            errors.append("'routing_key' is missing or blank")
        elif key not in self.routing_keys:
            errors.append("Invalid routing key")
        action = body.get("event_action")
        if action not in ACTIONS:
            errors.append(
                "'event_action' is missing or invalid: must be one of trigger, acknowledge, resolve"
            )
        dedup = body.get("dedup_key")
        if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
            errors.append("'dedup_key' must be a string of at most 255 characters")
        payload = body.get("payload")
        if action == "trigger":
            if not isinstance(payload, dict):
                errors.append("'payload' is missing or not an object")
            else:
                for name in ("summary", "source", "severity"):
                    if not isinstance(payload.get(name), str) or not payload.get(name):
                        errors.append(f"'payload.{name}' is missing or blank")
                if payload.get("severity") and payload.get("severity") not in SEVERITIES:
                    errors.append("'payload.severity' must be one of critical, error, warning, info")
        elif action in ("acknowledge", "resolve") and not dedup:
            errors.append(f"'dedup_key' is required for {action}")
        if errors:
            return _invalid(*errors)
        dedup = dedup or uuid.uuid4().hex
        now = time.time()
        self.events.append(
            {"event_action": action, "dedup_key": dedup, "payload": payload, "routing_key": "***", "at": now}
        )
        incident = self.open_incident(dedup)
        if action == "trigger":
            assert isinstance(payload, dict)
            if incident is None:
                self.incidents.append(
                    {
                        "id": f"P{len(self.incidents) + 1:06d}",
                        "dedup_key": dedup,
                        "status": "triggered",
                        "summary": payload["summary"],
                        "source": payload["source"],
                        "severity": payload["severity"],
                        "custom_details": payload.get("custom_details"),
                        "alerts": 1,
                        "triggered_at": now,
                        "resolved_at": None,
                    }
                )
            else:
                incident["alerts"] += 1
                incident["severity"] = payload["severity"]
        elif incident is not None:
            incident["status"] = "acknowledged" if action == "acknowledge" else "resolved"
            if action == "resolve":
                incident["resolved_at"] = now
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": dedup}, status=202
        )
