"""Alert: post a message to an environment's Slack channel (what automations call, e.g. the dead man's switch)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.errors import TransientError
from greenlight.settings import Environment, load_profile
from greenlight.tasks.evidence import emit
from greenlight.tasks.notify import notify


@flow(name="alert")
def alert(environment: Environment, text: str) -> dict[str, Any]:
    """Post ``text`` to the environment's channel and emit ``greenlight.alert.sent``; fail when Slack did not take it
    (an alert nobody receives must not look sent).

    Args:
        environment: whose Slack channel to alert (one of the profiles)
        text: the alert
    """
    profile = load_profile(environment)
    ts = notify(profile, f":rotating_light: {text}")
    emit("greenlight.alert.sent", f"greenlight.environment.{environment}", {"text": text, "slack_ts": ts})
    if ts is None:
        raise TransientError(f"alert for {environment} not delivered to Slack: {text}")
    return {"environment": environment, "text": text, "slack_ts": ts}
