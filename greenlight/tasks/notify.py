"""Slack, for people: one thread per release, backup check or drill. Never fails the caller."""

from __future__ import annotations

import os

from prefect import task

from greenlight.clients.slack import TOKEN_ENV as SLACK_TOKEN_ENV
from greenlight.clients.slack import Notifier
from greenlight.settings import Profile
from greenlight.tasks.blocks import read_secret_block
from greenlight.tasks.policy import FRESH, logger


def _token(block: str | None) -> str | None:
    """``SLACK_BOT_TOKEN`` when set, else the profile's Prefect Secret block (None when neither)."""
    if os.environ.get(SLACK_TOKEN_ENV) or not block:
        return None  # the notifier reads the environment itself
    try:
        value = read_secret_block(block)
    except Exception as e:  # an unreachable API means no Slack, not a failed release
        logger().warning("slack: no token: secret block %s not readable (%s)", block, type(e).__name__)
        return None
    if value is None:
        logger().warning(
            "slack: no token: %s is not set and secret block %s does not exist "
            "(run `greenlight setup` with %s set)",
            SLACK_TOKEN_ENV, block, SLACK_TOKEN_ENV,
        )  # fmt: skip
        return None
    return str(value)


def slack_token_from_block(profile: Profile) -> str | None:
    """The token the profile's Slack block holds when ``SLACK_BOT_TOKEN`` does not give one (for
    redaction: never shown); None otherwise."""
    return _token(profile.slack.token_secret_block if profile.slack is not None else None)


def notifier(profile: Profile) -> Notifier | None:
    """The profile's Slack channel, or None when the profile has no Slack section."""
    if profile.slack is None:
        return None
    return Notifier(
        token=_token(profile.slack.token_secret_block), channel=profile.slack.channel, raise_errors=False
    )


@task(name="slack", retries=0, **FRESH)
def notify(profile: Profile, text: str, thread_ts: str | None = None) -> str | None:
    """Post ``text`` to the profile's channel (in ``thread_ts``'s thread); return its ts, None if not sent.

    A Slack outage, a rate limit or a missing token never raises: the reason is logged and the
    caller carries on (a release never fails because Slack did).
    """
    n = notifier(profile)
    if n is None:
        return None
    ts = n.safe_post(text, thread_ts=thread_ts)
    if ts is None:
        logger().warning("slack: message to %s not sent (see the log above)", n.channel)
    return ts
