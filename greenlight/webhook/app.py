"""The GitHub receiver: an ASGI app that turns a signed ``workflow_run`` webhook into a Prefect event.

Prefect OSS has no webhooks of its own, so GitHub posts here and this app emits the event
``github.workflow_run.completed`` (resource ``github.repo.OWNER/NAME`` labelled
``github.branch`` and ``greenlight.environment``; payload ``sha``, ``branch``, ``actor``,
``delivery``, ``environment``, ``repository``, ``workflow``, ``run_url``, ``run_id``,
``run_attempt``, ``commit_at``: the head commit's time from the signed body, or null, and
``commit_proof``: the receiver's signature over what it verified, see
:mod:`greenlight.core.commit_proof`) that a deployment's trigger turns into a flow run. The proof
is made with the receiver's approval signing key (``$GREENLIGHT_APPROVAL_SIGNING_KEY`` or the file
named by ``$GREENLIGHT_APPROVAL_SIGNING_KEY_FILE``); without a key, or without a commit time, the
payload has no ``commit_proof`` (logged: the lead time will not count that run) and the delivery
is emitted all the same. A trigger picks its environment by matching the
resource label ``greenlight.environment`` (triggers cannot match on the payload).

**Replays.** Only the body is signed, not the ``X-GitHub-Delivery`` header, so a release is
identified by the run the signed body names (repository, ``workflow_run.id``,
``workflow_run.run_attempt``): an old signed body sent again under any delivery id is answered
duplicate, and the event id is derived from that identity too (uuid5), so a copy that reaches
another receiver (its own dedupe file) is dropped by Prefect. The delivery id is logged and
carried in the payload; see ``greenlight.webhook.dedupe``.

**The receiver never starts a production switch by itself.** It only emits an event; which
environment the branch names is decided from the profiles (``github.branch``), and a production
promotion started from the event pauses for approval in the flow like any other.

Routes:

- ``POST /github``: in this order, 413 when the body exceeds 1 MiB (checked on Content-Length
  and while streaming); 503 ``webhook secret not configured`` when neither
  ``GREENLIGHT_GITHUB_WEBHOOK_SECRET`` nor the Prefect Secret block named by
  ``GREENLIGHT_GITHUB_WEBHOOK_SECRET_BLOCK`` yields a secret (unsigned deliveries are never
  accepted); 401 when ``X-Hub-Signature-256`` is missing or wrong; 400 without
  ``X-GitHub-Event`` / ``X-GitHub-Delivery``, on malformed JSON or a missing field (named);
  200 ``{"ok": true, "zen": ...}`` for ``ping``; 202 ``{"ignored": reason}`` for anything the
  profiles do not release (a run from a fork, or not started by a push, among them: see
  ``greenlight.webhook.verify``); 200 ``{"duplicate": true}`` for a run (or a delivery id)
  already emitted; 202 ``{"emitted": true, "environment": ..., "sha": ...}`` once Prefect
  accepted the event; 503 when it did not (nothing recorded, so GitHub's "Redeliver" retries it).
- ``GET /healthz``: 200 ``{"ok": true}``.

One log line per delivery (logger ``greenlight.webhook``): delivery id, event, decision, status
and reason (naming the run for an emitted or duplicate one). Never the secret, the signature or
the payload.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.events.schemas.events import Event
from prefect.settings import get_current_settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route as HttpRoute

from greenlight.core.approval import public_key_of
from greenlight.core.commit_proof import vouch
from greenlight.errors import GreenlightError, TransientError
from greenlight.settings import available_environments, load_profile
from greenlight.webhook.dedupe import DeliveryStore
from greenlight.webhook.verify import (
    EVENT_NAME,
    Decision,
    PayloadInvalid,
    Route,
    build_routes,
    decide,
    event_resource,
    signature_valid,
)

MAX_BODY = 1024 * 1024
SECRET_ENV = "GREENLIGHT_GITHUB_WEBHOOK_SECRET"
SECRET_BLOCK_ENV = "GREENLIGHT_GITHUB_WEBHOOK_SECRET_BLOCK"
DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

log = logging.getLogger("greenlight.webhook")


class Emitter(Protocol):
    """Delivers one event to Prefect and returns only once it was accepted (raises otherwise)."""

    async def emit(
        self, event: str, resource: dict[str, str], payload: dict[str, Any], id: uuid.UUID
    ) -> None:
        """Send the event; raise :class:`GreenlightError` when Prefect did not accept it."""
        ...


class PrefectEmitter:
    """Posts each event to the Prefect API's ``POST /events`` and waits for its 204.

    The server publishes it on its event bus, where the event persister and the automations'
    triggers (a ``DeploymentEventTrigger`` among them) read it: the same path as events that
    ``emit_event`` streams over the websocket, but acknowledged, so the answer to GitHub can
    say whether the event really arrived. Uses Prefect's own client (its URL, auth and TLS
    settings).
    """

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s

    async def emit(
        self, event: str, resource: dict[str, str], payload: dict[str, Any], id: uuid.UUID
    ) -> None:
        """Send the event within ``timeout_s``; :class:`TransientError` when Prefect did not take it."""
        if not get_current_settings().api.url:
            raise TransientError("PREFECT_API_URL is not set: there is no Prefect server to send events to")
        body = Event(event=event, resource=resource, payload=payload, id=id).model_dump(mode="json")
        try:
            async with asyncio.timeout(self.timeout_s), get_client() as client:
                response = await client.request("POST", "/events", json=[body])
        except TimeoutError as e:
            raise TransientError(f"Prefect API did not answer within {self.timeout_s:g} s") from e
        except Exception as e:  # connection refused, HTTP errors raised by Prefect's client
            raise TransientError(f"Prefect API refused the event: {type(e).__name__}: {e}") from e
        if response.status_code >= 300:
            raise TransientError(f"Prefect API answered {response.status_code} to POST /events")


class SecretSource:
    """A secret the receiver needs: ``$<env>`` when set, else the file named by ``$<file_env>`` (a
    mounted Kubernetes Secret), else the Prefect Secret block named by ``$<block_env>``, else the
    block ``block`` (files and blocks cached for ``ttl_s``, so a rotated secret is picked up within
    a minute). ``value`` overrides all of them (tests, embedding). The defaults are the GitHub
    webhook secret's: ``$GREENLIGHT_GITHUB_WEBHOOK_SECRET``, else the block named by
    ``$GREENLIGHT_GITHUB_WEBHOOK_SECRET_BLOCK``."""

    def __init__(
        self,
        value: str | bytes | None = None,
        *,
        ttl_s: float = 60.0,
        env: str | None = SECRET_ENV,
        file_env: str | None = None,
        block_env: str | None = SECRET_BLOCK_ENV,
        block: str | None = None,
        what: str = "webhook secret",
    ) -> None:
        self._fixed = value.encode() if isinstance(value, str) else value
        self.ttl_s = ttl_s
        self.env, self.file_env, self.block_env, self.block, self.what = env, file_env, block_env, block, what
        self._cached: tuple[float, bytes] | None = None

    def block_name(self) -> str | None:
        """The Prefect Secret block the secret comes from (when no environment variable gives it)."""
        return (os.environ.get(self.block_env) if self.block_env else None) or self.block

    def origin(self) -> str:
        """Where the secret comes from, never its value."""
        if self._fixed is not None:
            return "given by the caller"
        if self.env and os.environ.get(self.env):
            return f"${self.env}"
        if self.file_env and os.environ.get(self.file_env):
            return f"file {os.environ[self.file_env]} (${self.file_env})"
        if self.block_name():
            return f"Prefect Secret block '{self.block_name()}'"
        return "NOT CONFIGURED"

    async def get(self) -> bytes | None:
        """The secret, or None when none is configured (or its block cannot be read: logged)."""
        if self._fixed is not None:
            return self._fixed or None
        from_env = os.environ.get(self.env) if self.env else None
        if from_env:
            return from_env.encode()
        path = os.environ.get(self.file_env) if self.file_env else None
        block = self.block_name()
        if not path and not block:
            return None
        if self._cached and time.monotonic() - self._cached[0] < self.ttl_s:
            return self._cached[1]
        value = (
            _read_secret_file(Path(path), self.what)
            if path
            else await _load_secret_block(str(block), self.what)
        )
        if value:
            self._cached = (time.monotonic(), value)
        return value


def _read_secret_file(path: Path, what: str) -> bytes | None:
    """The secret in file ``path`` (surrounding blanks dropped); None (logged, without the value) otherwise."""
    try:
        value = path.read_bytes().strip()
    except OSError as e:
        log.warning("%s file %s cannot be read: %s", what, path, type(e).__name__)
        return None
    if not value:
        log.warning("%s file %s is empty", what, path)
    return value or None


async def _load_secret_block(name: str, what: str = "webhook secret") -> bytes | None:
    """The string held by Prefect Secret block ``name``; None (logged, without the value) otherwise."""
    try:
        block: Any = await Secret.aload(name)
        value = block.get()
    except Exception as e:  # missing block, unreachable API
        log.warning("%s block %r cannot be read: %s", what, name, type(e).__name__)
        return None
    if not isinstance(value, str) or not value:
        log.warning("%s block %r does not hold a non-empty string", what, name)
        return None
    return value.encode()


@dataclass
class _Named:
    """A lock of :class:`Receiver` and how many requests hold or await it."""

    lock: asyncio.Lock
    users: int = 0


@dataclass
class _Outcome:
    """An answer and the log line that goes with it."""

    status: int
    body: dict[str, Any]
    decision: str
    reason: str
    user: str = "-"  # Slack interactions: who clicked, and the run they answered
    run: str = "-"


class _Reject(Exception):
    """Stop handling a delivery and answer ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.outcome = _Outcome(status, {"error": message}, "rejected", reason or message)


def load_routes(directory: Path | None = None) -> tuple[Route, ...]:
    """Routes from every profile (in ``directory``, else the environments directory) that has a
    ``github`` section. Raises :class:`ProfileInvalid` naming a profile that does not validate."""
    names = available_environments(directory)
    return build_routes((name, load_profile(name, directory).github) for name in names)


class Receiver:
    """Handles deliveries: size, signature, parsing, decision, dedupe, emission, in that order."""

    def __init__(
        self,
        routes: tuple[Route, ...],
        store: DeliveryStore,
        secret: SecretSource,
        emitter: Emitter,
        signing_key: SecretSource | None = None,
    ):
        self.routes = routes
        self.store = store
        self.secret = secret
        self.emitter = emitter
        self.signing_key = signing_key
        self._locks: dict[str, _Named] = {}

    async def github(self, request: Request) -> JSONResponse:
        """``POST /github``: answer the delivery and log one line about it."""
        delivery = _printable(request.headers.get("x-github-delivery"))
        event = _printable(request.headers.get("x-github-event"))
        try:
            outcome = await self._handle(request)
        except _Reject as e:
            outcome = e.outcome
        log.info(
            "delivery=%s event=%s decision=%s status=%d reason=%s",
            delivery,
            event,
            outcome.decision,
            outcome.status,
            outcome.reason,
        )
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def _handle(self, request: Request) -> _Outcome:
        body = await _read_body(request, MAX_BODY)
        secret = await self.secret.get()
        if secret is None:
            raise _Reject(503, "webhook secret not configured")
        if not signature_valid(secret, body, request.headers.get("x-hub-signature-256")):
            raise _Reject(401, "unauthorized", "signature missing or wrong")
        event = request.headers.get("x-github-event")
        if not event:
            raise _Reject(400, "header X-GitHub-Event: missing")
        delivery = request.headers.get("x-github-delivery")
        if not delivery or not DELIVERY_ID.match(delivery):
            raise _Reject(400, "header X-GitHub-Delivery: missing or malformed")
        payload = _parse_json(body, request.headers.get("content-type", ""))
        try:
            decision = decide(event, delivery, payload, self.routes)
        except PayloadInvalid as e:
            raise _Reject(400, str(e)) from None
        if decision.action == "ping":
            return _Outcome(200, {"ok": True, "zen": payload.get("zen")}, "ping", "ping")
        if decision.action == "ignore":
            return _Outcome(202, {"ignored": decision.reason}, "ignored", decision.reason)
        return await self._emit_once(delivery, decision)

    async def _emit_once(self, delivery: str, decision: Decision) -> _Outcome:
        """Emit unless the run (or this delivery id) was emitted before; record it only after
        Prefect accepted it.

        Concurrent requests for one run, or one delivery id, are serialised here; across
        processes, the event id derived from the run makes Prefect drop a second copy.
        """
        payload = dict(decision.payload or {})
        run = decision.run
        if run is None:  # decide() names the run of every emit decision
            raise _Reject(500, "internal error", "emit decision without a run")
        async with self._holding(f"run {run.key}"), self._holding(f"delivery {delivery}"):
            duplicate = await anyio.to_thread.run_sync(
                lambda: self.store.seen(
                    run.key, delivery, environment=decision.environment, sha=payload.get("sha")
                )
            )
            if duplicate:
                return _Outcome(200, {"duplicate": True}, "duplicate", duplicate)
            vouched = await self._vouch(payload, decision.environment, run.key)
            try:
                await self.emitter.emit(EVENT_NAME, event_resource(payload), payload, run.event_id)
            except GreenlightError as e:
                raise _Reject(503, "event not emitted; redeliver later", f"emit failed: {e}") from e
            await anyio.to_thread.run_sync(
                self.store.record, run.key, delivery, decision.environment, payload.get("sha")
            )
        body = {"emitted": True, "environment": decision.environment, "sha": payload.get("sha")}
        return _Outcome(202, body, "emitted", f"{decision.reason}; run {run.key}; {vouched}")

    async def _vouch(self, payload: dict[str, Any], environment: str | None, run: str) -> str:
        """Add ``commit_proof`` (the receiver's signature over the repository, sha, commit time and
        run id it verified) to ``payload``; say what was done. Never refuses the delivery."""
        commit_at = payload.get("commit_at")
        if not commit_at:
            return "no commit time to vouch for"
        raw = await self.signing_key.get() if self.signing_key is not None else None
        origin = self.signing_key.origin() if self.signing_key is not None else "NOT CONFIGURED"
        if raw is None:
            log.warning(
                "run %s: no approval signing key (%s): its commit time goes unvouched, so the lead "
                "time will not count this release",
                run,
                origin,
            )
            return "commit time not vouched for (no signing key)"
        try:
            private = raw.decode()
            proof = vouch(
                private,
                str(payload["repository"]),
                str(payload["sha"]),
                str(commit_at),
                int(payload["run_id"]),
            )
            public = public_key_of(private)
        except (ValueError, UnicodeDecodeError):
            log.warning(
                "run %s: the approval signing key (%s) is not an Ed25519 key: its commit time goes "
                "unvouched, so the lead time will not count this release",
                run,
                origin,
            )
            return "commit time not vouched for (signing key unusable)"
        keys = next((r.receiver_keys for r in self.routes if r.environment == environment), ())
        if public not in keys:
            log.warning(
                "run %s: this receiver's key (%s) is not among %s's github.receiver_keys: the flow will "
                "not accept its commit proof",
                run,
                public,
                environment,
            )
        payload["commit_proof"] = proof
        return "commit time vouched for"

    @asynccontextmanager
    async def _holding(self, key: str) -> AsyncIterator[None]:
        """Hold this process's lock named ``key``; it is forgotten once nobody holds or awaits it.

        Callers take a run's lock before a delivery id's, never the other way round: no deadlock.
        """
        entry = self._locks.setdefault(key, _Named(asyncio.Lock()))
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[key]


async def healthz(_: Request) -> JSONResponse:
    """``GET /healthz``: the process answers."""
    return JSONResponse({"ok": True})


def create_app(
    *,
    routes: tuple[Route, ...] | None = None,
    store: DeliveryStore | None = None,
    secret: SecretSource | None = None,
    emitter: Emitter | None = None,
    slack_signing_secret: SecretSource | None = None,
    signing_key: SecretSource | None = None,
) -> Starlette:
    """The receiver as an ASGI app: GitHub's webhook and Slack's interactivity endpoint. Defaults:
    routes from the profiles, the dedupe file at ``$GREENLIGHT_WEBHOOK_STATE``, the secrets from the
    environment or their Prefect blocks, events posted to ``PREFECT_API_URL``. Raises
    :class:`ProfileInvalid` when a profile is invalid."""
    from greenlight.webhook.slack import SlackInteractions, signing_key_source, signing_secret_source

    store = store or DeliveryStore()
    signing_key = signing_key or signing_key_source()
    receiver = Receiver(
        routes if routes is not None else load_routes(),
        store,
        secret or SecretSource(),
        emitter or PrefectEmitter(),
        signing_key,
    )
    slack = SlackInteractions(
        store,
        slack_signing_secret or signing_secret_source(),
        signing_key,
        MAX_BODY,
    )
    app = Starlette(
        routes=[
            HttpRoute("/github", receiver.github, methods=["POST"]),
            HttpRoute("/slack/interactions", slack.handle, methods=["POST"]),
            HttpRoute("/healthz", healthz, methods=["GET"]),
        ]
    )
    app.state.receiver = receiver
    app.state.slack = slack
    return app


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body; 413 when Content-Length or the bytes actually sent exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise _Reject(400, "header Content-Length: not a number")
        if int(declared) > limit:
            raise _Reject(413, f"body larger than {limit} bytes")
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise _Reject(413, f"body larger than {limit} bytes", "body exceeded the limit while streaming")
    return bytes(received)


def _parse_json(body: bytes, content_type: str) -> Mapping[str, Any]:
    """The body as a JSON object; 415 for form-encoded deliveries, 400 for anything not an object."""
    if content_type.startswith("application/x-www-form-urlencoded"):
        raise _Reject(415, "content type must be application/json (set it in the webhook's settings)")
    try:
        payload = json.loads(body)
    except ValueError as e:
        raise _Reject(400, f"malformed JSON: {e}") from None
    if not isinstance(payload, dict):
        raise _Reject(400, "body: expected a JSON object")
    return payload


def _printable(value: str | None, limit: int = 128) -> str:
    """A header value safe for a log line: printable ASCII, at most ``limit`` characters, '-' if absent."""
    if not value:
        return "-"
    cleaned = "".join(c if 32 < ord(c) < 127 else "?" for c in value[:limit])
    return cleaned + ("..." if len(value) > limit else "")
