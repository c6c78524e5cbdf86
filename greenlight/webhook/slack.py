"""Slack's interactivity endpoint: a click on Approve / Reject becomes a verified answer.

``POST /slack/interactions`` is the Request URL of the Slack app (Interactivity & Shortcuts). In
this order it answers:

- 413 when the body exceeds 1 MiB; 503 when no signing secret is configured
  (``$GREENLIGHT_SLACK_SIGNING_SECRET``, else the Prefect Secret block named by
  ``$GREENLIGHT_SLACK_SIGNING_SECRET_BLOCK``, else block ``greenlight-slack-signing-secret``);
- 401 when Slack did not sign it just now: headers missing, the timestamp more than 5 minutes
  away (a stale or replayed request), or a signature that slack-sdk's ``SignatureVerifier``
  refuses;
- 409 when the very same signed request came before (a replay within the 5 minutes);
- 400 when the body is not a ``payload=`` form with a JSON interaction naming a run;
- 200 ``{"ignored": ...}`` for interactions that are not Greenlight's buttons;
- 404 / 409 when the run named by the button does not exist or no longer waits for an answer
  (the clicker is told so, ephemerally, through the click's ``response_url``);
- 503 when the receiver's signing key is missing (``$GREENLIGHT_APPROVAL_SIGNING_KEY`` or the file
  named by ``$GREENLIGHT_APPROVAL_SIGNING_KEY_FILE``) or is not the half of one of the run's
  profile's ``release.approval.receiver_keys``, or when Prefect refused the resume;
- 200 ``{"ok": true, "resumed": RUN, "as": NAME, "slack_user": U...}`` once the run was resumed.

The answer it resumes the run with carries the Slack user ID from the signed payload, the person
of the run's environment profile with that ID (``release.approval.people``), the reason typed in
the message, the time Slack signed the click, a nonce, and an attestation over all of them and the
run and release: an Ed25519 signature with the receiver's private key, which the run verifies with
the profile's public keys (no key that verifies an answer is kept in Prefect). The run judges the answer itself (see
:mod:`greenlight.core.approval`), says its decision in the release's Slack thread and updates the
approval message; the receiver decides nothing but who clicked.

One log line per request (logger ``greenlight.webhook``): decision, status, Slack user, run,
reason. Never the signing secret, the signature, the token or the payload.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs
from uuid import UUID

import anyio.to_thread
from prefect.client.orchestration import get_client
from prefect.client.schemas.responses import SetStateStatus
from prefect.exceptions import ObjectNotFound
from starlette.requests import Request
from starlette.responses import JSONResponse

from greenlight.clients.slack import request_problem, respond_ephemeral, response_hosts
from greenlight.core.approval import (
    APPROVE_ACTION,
    REASON_ACTION,
    REJECT_ACTION,
    Answer,
    Person,
    attest,
    person_by_slack,
    public_key_of,
)
from greenlight.errors import GreenlightError
from greenlight.settings import load_profile
from greenlight.webhook.app import SecretSource, _Outcome, _read_body, _Reject
from greenlight.webhook.dedupe import DeliveryStore

SIGNING_SECRET_ENV = "GREENLIGHT_SLACK_SIGNING_SECRET"
SIGNING_SECRET_BLOCK_ENV = "GREENLIGHT_SLACK_SIGNING_SECRET_BLOCK"
SIGNING_SECRET_BLOCK = "greenlight-slack-signing-secret"


SIGNING_KEY_ENV = "GREENLIGHT_APPROVAL_SIGNING_KEY"


def signing_secret_source() -> SecretSource:
    """Slack's signing secret: ``$GREENLIGHT_SLACK_SIGNING_SECRET``, else the file named by
    ``$GREENLIGHT_SLACK_SIGNING_SECRET_FILE``, else the Prefect Secret block named by
    ``$GREENLIGHT_SLACK_SIGNING_SECRET_BLOCK``, else block ``greenlight-slack-signing-secret``.
    Anyone who can read Prefect's blocks can read it there: keep it in the receiver's environment
    (a Kubernetes Secret) where Prefect API users must not approve."""
    return SecretSource(
        env=SIGNING_SECRET_ENV, file_env=f"{SIGNING_SECRET_ENV}_FILE", block_env=SIGNING_SECRET_BLOCK_ENV,
        block=SIGNING_SECRET_BLOCK, what="slack signing secret",
    )  # fmt: skip


def signing_key_source() -> SecretSource:
    """The receiver's private Ed25519 key (base64), with which it signs each answer it passes on:
    ``$GREENLIGHT_APPROVAL_SIGNING_KEY``, else the file named by ``$GREENLIGHT_APPROVAL_SIGNING_KEY_FILE``;
    never a Prefect block (the flows verify with the public keys of the profile instead)."""
    return SecretSource(
        env=SIGNING_KEY_ENV, file_env=f"{SIGNING_KEY_ENV}_FILE", block_env=None, block=None,
        what="approval signing key",
    )  # fmt: skip


#: the flows whose paused runs wait for an approval
APPROVAL_FLOWS = frozenset({"build-promote", "deploy", "dns-failover"})

log = logging.getLogger("greenlight.webhook")


class _Stop(_Reject):
    """Stop handling a click: answer ``status`` with ``{"error": message}``, and tell the clicker
    ``tell`` (ephemerally) when given."""

    def __init__(
        self, status: int, message: str, decision: str = "rejected", *, tell: str | None = None
    ) -> None:
        super().__init__(status, message)
        self.outcome.decision = decision
        self.tell = tell


class SlackInteractions:
    """Handles ``POST /slack/interactions``; see the module docstring."""

    def __init__(
        self, store: DeliveryStore, signing_secret: SecretSource, signing_key: SecretSource, max_body: int
    ) -> None:
        self.store = store
        self.signing_secret = signing_secret
        self.signing_key = signing_key
        self.max_body = max_body
        self._replies: set[asyncio.Task[None]] = set()

    async def handle(self, request: Request) -> JSONResponse:
        """``POST /slack/interactions``: answer the click and log one line about it."""
        payload: dict[str, Any] = {}
        try:
            body = await _read_body(request, self.max_body)
            outcome = await self._handle(request, body, payload)
        except _Reject as e:
            outcome = e.outcome
            tell = getattr(e, "tell", None)
            if tell and isinstance(payload.get("response_url"), str):
                self._tell(payload["response_url"], tell)
        user = payload.get("user") if isinstance(payload.get("user"), dict) else {}
        outcome.user = _printable(str((user or {}).get("id") or "-"))
        log.info(
            "slack interaction decision=%s status=%d user=%s run=%s reason=%s",
            outcome.decision, outcome.status, outcome.user, outcome.run, outcome.reason,
        )  # fmt: skip
        return JSONResponse(outcome.body, status_code=outcome.status)

    async def _handle(self, request: Request, body: bytes, payload: dict[str, Any]) -> _Outcome:
        secret = await self.signing_secret.get()
        if secret is None:
            raise _Stop(503, "slack signing secret not configured")
        signature = request.headers.get("x-slack-signature")
        problem = request_problem(
            secret.decode(), body, request.headers.get("x-slack-request-timestamp"), signature, time.time()
        )
        if problem is not None:
            raise _Stop(401, f"unauthorized: {problem}")
        assert signature is not None  # request_problem refuses a request without one
        if not await anyio.to_thread.run_sync(self.store.claim_click, signature):
            raise _Stop(409, "replayed request: this signed Slack request was already handled", "replay")
        payload.update(_interaction(body, request.headers.get("content-type", "")))
        action = _greenlight_action(payload)
        if action is None:
            return _Outcome(
                200, {"ignored": "not a Greenlight approval button"}, "ignored", "other interaction"
            )
        action_id, value = action
        run_id, release = _target(value)
        slack_user = _slack_user(payload)
        reason = _reason(payload)
        environment = await self._waiting_run(run_id, release)
        people, receiver_keys = _approval_of(environment)
        person = person_by_slack(people, slack_user)
        key = await self._key(environment, receiver_keys)
        answer = Answer(
            approve=action_id == APPROVE_ACTION,
            approver=person.name if person else "",
            reason=reason,
            slack_user=slack_user,
            at=float(request.headers.get("x-slack-request-timestamp") or 0),
            nonce=hashlib.sha256(signature.encode()).hexdigest()[:32],
        )
        answer = Answer(**{**asdict(answer), "proof": attest(key, str(run_id), release, answer)})
        await self._resume(run_id, answer)
        who = person.name if person else f"{slack_user} (not a person of {environment})"
        verb = "approval" if answer.approve else "rejection"
        self._tell(
            str(payload.get("response_url") or ""),
            f"Your {verb} of {release} was passed to the release as {who}; its decision follows in the thread.",
        )
        return _Outcome(
            200,
            {"ok": True, "resumed": str(run_id), "as": person.name if person else None, "slack_user": slack_user,
             "action": "approve" if answer.approve else "reject"},
            "resumed",
            f"{verb} by {who} for release {release}",
            run=str(run_id),
        )  # fmt: skip

    async def _waiting_run(self, run_id: UUID, release: str) -> str:
        """The environment of the flow run ``run_id``, which must be an approval that waits now."""
        async with get_client() as client:
            try:
                run = await client.read_flow_run(run_id)
            except ObjectNotFound:
                raise _Stop(
                    404, f"no flow run {run_id}", tell=f"Release {release}: its run {run_id} does not exist."
                ) from None
            flow = await client.read_flow(run.flow_id)
        if flow.name not in APPROVAL_FLOWS:
            raise _Stop(400, f"flow run {run_id} is a {flow.name} run, not a release waiting for approval")
        if run.state is None or not run.state.is_paused() or not run.state.state_details.run_input_keyset:
            state = run.state.name if run.state else "unknown"
            raise _Stop(
                409, f"flow run {run_id} does not wait for an answer (state: {state})", "not-waiting",
                tell=f"Release {release} no longer waits for an answer (its run is {state}).",
            )  # fmt: skip
        request = run.parameters.get("request") if isinstance(run.parameters, dict) else None
        environment = request.get("environment") if isinstance(request, dict) else None
        if not isinstance(environment, str) or not environment:
            raise _Stop(400, f"flow run {run_id} names no environment")
        return environment

    async def _key(self, environment: str, receiver_keys: list[str]) -> str:
        """The receiver's private key, which must be the half of one of the profile's receiver keys
        (else the run would refuse every answer it signs: say so now, to the clicker too)."""
        raw = await self.signing_key.get()
        if raw is None:
            raise _Stop(
                503, f"approval signing key not configured ({SIGNING_KEY_ENV} or {SIGNING_KEY_ENV}_FILE)"
            )
        try:
            public = public_key_of(raw.decode())
        except (ValueError, UnicodeDecodeError):
            raise _Stop(
                503, f"approval signing key ({self.signing_key.origin()}) is not an Ed25519 key"
            ) from None
        if public not in receiver_keys:
            raise _Stop(
                503, f"this receiver's key ({public}) is not among {environment}'s release.approval.receiver_keys",
                tell="Greenlight's receiver is not set up to answer for this release; tell the platform team.",
            )  # fmt: skip
        return raw.decode()

    async def _resume(self, run_id: UUID, answer: Answer) -> None:
        try:
            async with get_client() as client:
                response = await client.resume_flow_run(run_id, run_input=asdict(answer))
        except Exception as e:  # connection refused, HTTP errors raised by Prefect's client
            raise _Stop(503, f"Prefect did not take the answer: {type(e).__name__}") from e
        if response.status != SetStateStatus.ACCEPT:
            reason = getattr(response.details, "reason", None) or response.status.value
            raise _Stop(409, f"Prefect refused to resume flow run {run_id}: {reason}", "not-waiting")

    def _tell(self, response_url: str, text: str) -> None:
        """Say ``text`` to the clicker only, in the background (Slack wants the answer within 3 s)."""
        if not response_url:
            return

        async def send() -> None:
            why = await anyio.to_thread.run_sync(respond_ephemeral, response_url, text, response_hosts())
            if why:
                log.warning("slack interaction: the clicker was not told: %s", why)

        task = asyncio.get_running_loop().create_task(send())
        self._replies.add(task)
        task.add_done_callback(self._replies.discard)


def _interaction(body: bytes, content_type: str) -> dict[str, Any]:
    """The interaction: Slack posts ``payload=<JSON>`` form-encoded."""
    if not content_type.startswith("application/x-www-form-urlencoded"):
        raise _Stop(
            400, "content type must be application/x-www-form-urlencoded (Slack's interactivity payload)"
        )
    try:
        fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
        data = json.loads(fields["payload"][0])
    except (UnicodeDecodeError, ValueError, KeyError, IndexError):
        raise _Stop(400, "body: expected payload=<JSON object>") from None
    if not isinstance(data, dict):
        raise _Stop(400, "payload: expected a JSON object")
    return data


def _greenlight_action(payload: dict[str, Any]) -> tuple[str, str] | None:
    if payload.get("type") != "block_actions":
        return None
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        return None
    action_id = actions[0].get("action_id")
    if action_id not in (APPROVE_ACTION, REJECT_ACTION):
        return None
    value = actions[0].get("value")
    if not isinstance(value, str):
        raise _Stop(400, f"payload: actions[0].value: missing for {action_id}")
    return str(action_id), value


def _target(value: str) -> tuple[UUID, str]:
    try:
        data = json.loads(value)
        return UUID(str(data["run"])), str(data["release"])
    except (ValueError, KeyError, TypeError):
        raise _Stop(400, "payload: actions[0].value: expected {run, release}") from None


def _slack_user(payload: dict[str, Any]) -> str:
    user = payload.get("user")
    uid = user.get("id") if isinstance(user, dict) else None
    if not isinstance(uid, str) or not uid.strip():
        raise _Stop(400, "payload: user.id: missing")
    return uid.strip()


def _reason(payload: dict[str, Any]) -> str:
    """The text typed in the message's reason field (Slack sends input values in ``state.values``)."""
    values = (payload.get("state") or {}).get("values") if isinstance(payload.get("state"), dict) else None
    for block in (values or {}).values():
        field = block.get(REASON_ACTION) if isinstance(block, dict) else None
        if isinstance(field, dict) and isinstance(field.get("value"), str):
            return str(field["value"]).strip()[:500]
    return ""


def _approval_of(environment: str) -> tuple[list[Person], list[str]]:
    """The people and the receiver keys of ``environment``'s profile."""
    try:
        approval = load_profile(environment).release.approval
    except GreenlightError as e:
        raise _Stop(400, f"environment {environment!r} of the run: {e}") from None
    return [Person(p.name, p.slack, p.github) for p in approval.people], list(approval.receiver_keys)


def _printable(value: str, limit: int = 32) -> str:
    return "".join(c if 32 < ord(c) < 127 else "?" for c in value[:limit])
