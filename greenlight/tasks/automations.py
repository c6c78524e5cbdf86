"""The dead man's switch: a Prefect automation the server runs itself, with no worker.

When no ``backup-verification`` flow run has completed within the profile's window
(``alerts.dead_mans_switch.within_s``, production 26 h), the automation's ``send-notification``
actions (run by the server's actions service: the worker that may be down is not involved)
post the alert through notification blocks Greenlight keeps:

- ``greenlight-dms-<env>-pagerduty``: a Custom Webhook block POSTing a PagerDuty Events v2
  ``trigger`` with the dead man's switch's dedup key (the routing key in the block's secrets);
  ``greenlight-dms-<env>-pagerduty-resolve`` sends the ``resolve`` when a verification completes
  again (the automation's ``actions_on_resolve``);
- ``greenlight-dms-<env>-slack-<n>``: a Custom Webhook block POSTing Slack's ``chat.postMessage``
  to each Slack channel of the level (the bot token in the block's secrets).

The level is the profile's severity of ``dead-mans-switch`` (default P1) and its route. Email is
not sent by this alert (Prefect's server has no SMTP notification block). :func:`ensure_dead_mans_switch`
creates or updates all of it, idempotently (``greenlight setup``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.blocks.notifications import CustomWebhookNotificationBlock
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

from greenlight.clients.pagerduty import DEFAULT_EVENTS_URL, EVENTS_URL_ENV, ROUTING_KEY_ENV
from greenlight.clients.slack import BASE_URL_ENV as SLACK_BASE_URL_ENV
from greenlight.clients.slack import DEFAULT_BASE_URL as SLACK_DEFAULT_BASE_URL
from greenlight.clients.slack import TOKEN_ENV as SLACK_TOKEN_ENV
from greenlight.core.alerts import PAGERDUTY_SEVERITY, Kind, dedup_key, title
from greenlight.settings import Profile
from greenlight.tasks.alerts import alert_plan
from greenlight.tasks.blocks import read_secret_block


def automation_name(environment: str) -> str:
    return f"greenlight-dead-mans-switch-{environment}"


def _secret(env_var: str, block: str | None) -> str | None:
    if os.environ.get(env_var):
        return os.environ[env_var]
    value = read_secret_block(block) if block else None
    return None if value is None else str(value)


def _save(name: str, block: CustomWebhookNotificationBlock, dry_run: bool) -> tuple[UUID, str]:
    """Save ``block`` as ``name`` (replacing one of that name); its id and ``created`` or ``exists``
    (``greenlight setup``'s words: an existing one is brought up to date)."""
    try:
        CustomWebhookNotificationBlock.load(name)
        verb = "exists"  # a dry run too: setup's word for what is there (saving brings it up to date)
    except ValueError:  # Prefect: "Unable to find block document named ..."
        verb = "created" if not dry_run else "would create"
    if dry_run:
        return UUID(int=0), verb
    return UUID(str(block.save(name, overwrite=True))), verb


def ensure_dead_mans_switch(
    profile: Profile, within_s: float | None = None, dry_run: bool = False
) -> list[str]:
    """Create or update the automation and its notification blocks for ``profile`` (``within_s``
    overrides the profile's window); one line per object. Nothing when the switch is off."""
    dms = profile.alerts.dead_mans_switch
    env = profile.name
    name = automation_name(env)
    if not dms.enabled:
        return []
    within = within_s if within_s is not None else dms.within_s
    plan = alert_plan(profile, Kind.DEAD_MANS_SWITCH)
    key = dedup_key(env, Kind.DEAD_MANS_SWITCH)
    hours = within / 3600
    summary = (
        f"no backup of {env} has verified within {hours:g} h: is its verification's schedule or worker down?"
    )
    subject = title(env, plan.severity, Kind.DEAD_MANS_SWITCH, summary)
    lines: list[str] = []
    on_trigger: list[SendNotification] = []
    on_resolve: list[SendNotification] = []
    slack_blocks = 0  # numbered apart from PagerDuty's, so adding or losing it renames none
    for d in plan.deliveries:
        if d.channel == "pagerduty":
            pd = profile.alerts.pagerduty
            routing_key = _secret(ROUTING_KEY_ENV, pd.routing_key_secret_block if pd else None)
            if not routing_key:
                lines.append(
                    f"skipped dead man's switch to PagerDuty in {env}: ${ROUTING_KEY_ENV} is not set"
                )
                continue
            url = (os.environ.get(EVENTS_URL_ENV) or DEFAULT_EVENTS_URL).rstrip("/") + "/v2/enqueue"
            trigger: dict[str, Any] = {
                "routing_key": "{{routing_key}}",
                "event_action": "trigger",
                "dedup_key": key,
                "payload": {
                    "summary": "{{subject}}",
                    "source": f"greenlight/{env}",
                    "severity": PAGERDUTY_SEVERITY[plan.severity],
                    "component": "greenlight",
                    "custom_details": {"body": "{{body}}", "kind": Kind.DEAD_MANS_SWITCH.value},
                },
            }
            resolve = {"routing_key": "{{routing_key}}", "event_action": "resolve", "dedup_key": key}
            for suffix, body, actions in (
                ("pagerduty", trigger, on_trigger),
                ("pagerduty-resolve", resolve, on_resolve),
            ):
                block_name = f"greenlight-dms-{env}-{suffix}"
                block = CustomWebhookNotificationBlock(
                    name=block_name, url=url, json_data=body, secrets={"routing_key": routing_key}
                )
                block_id, verb = _save(block_name, block, dry_run)
                lines.append(
                    f"{verb} notification block {block_name} (PagerDuty {body['event_action']}, key {key})"
                )
                actions.append(SendNotification(block_document_id=block_id, subject=subject, body=summary))
        elif d.channel == "slack":
            token_block = profile.slack.token_secret_block if profile.slack is not None else None
            token = _secret(SLACK_TOKEN_ENV, token_block)
            if not token:
                lines.append(
                    f"skipped dead man's switch to Slack {d.to} in {env}: ${SLACK_TOKEN_ENV} is not set"
                )
                continue
            base = os.environ.get(SLACK_BASE_URL_ENV) or SLACK_DEFAULT_BASE_URL
            block_name = f"greenlight-dms-{env}-slack-{slack_blocks}"
            slack_blocks += 1
            slack = CustomWebhookNotificationBlock(
                name=block_name,
                url=base.rstrip("/") + "/chat.postMessage",
                headers={
                    "Authorization": "Bearer {{token}}",
                    "Content-Type": "application/json; charset=utf-8",
                },
                json_data={"channel": d.to, "text": ":rotating_light: {{subject}}"},
                secrets={"token": token},
            )
            block_id, verb = _save(block_name, slack, dry_run)
            lines.append(f"{verb} notification block {block_name} (Slack {d.to})")
            on_trigger.append(SendNotification(block_document_id=block_id, subject=subject, body=summary))
        # email: not from here (the Prefect server has no SMTP notification block; docs/alerts.md)
    if not on_trigger:
        lines.append(
            f"skipped automation {name}: its level {plan.severity.value} reaches no channel it can notify"
        )
        return lines
    automation = AutomationCore(
        name=name,
        description=f"{plan.severity.value}: {summary} (greenlight setup; the server notifies, no worker)",
        enabled=True,
        trigger=EventTrigger(
            posture=Posture.Proactive,
            # the environment's own verified backups, not any completed run of the flow: one
            # environment's verifications must not keep another's switch quiet
            expect={"greenlight.backup.verified"},
            match={"prefect.resource.id": f"greenlight.environment.{env}"},
            within=timedelta(seconds=within),
            threshold=1,
        ),
        actions=list(on_trigger),
        actions_on_resolve=list(on_resolve),
    )
    with get_client(sync_client=True) as client:
        existing = client.read_automations_by_name(name)
        if dry_run:
            verb = "exists" if existing else "would create"
            lines.append(f"{verb} automation {name} (within {within:g} s)")
        elif existing:
            client.update_automation(existing[0].id, automation)
            for extra in existing[1:]:
                client.delete_automation(extra.id)
            lines.append(
                f"exists automation {name}, brought up to date (within {within:g} s, {len(on_trigger)} notifications)"
            )
        else:
            client.create_automation(automation)
            lines.append(f"created automation {name} (within {within:g} s, {len(on_trigger)} notifications)")
    return lines
