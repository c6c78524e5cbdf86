"""Alerts by severity: deliver one alert to every channel of its level, retried, never raising.

``raise_alert`` sends the alert to the Slack channels, PagerDuty (a ``trigger`` with the alert's
dedup key) and the email recipients of the level the profile gives its kind; ``resolve_alerts``
sends PagerDuty a ``resolve`` for each kind a condition clears (Slack and email get nothing:
a resolve of an alert never raised must not post). Each channel is tried ``alerts.retries``
times with doubling pauses (a 429's Retry-After is honoured); a channel that stays down is
logged and reported in the result, and nothing raises into the calling flow: a Slack or
PagerDuty outage never stops the flow that alerts. Each alert emits ``greenlight.alert.raised``
(or ``.resolved``) with its severity, kind and the channels delivered and failed.
Routing keys, tokens and passwords never reach a log line, an event or a result.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prefect import task

from greenlight.clients.email import PASSWORD_ENV, Mailer
from greenlight.clients.pagerduty import ROUTING_KEY_ENV, PagerDuty
from greenlight.clients.slack import Notifier
from greenlight.core.alerts import (
    PAGERDUTY_SEVERITY,
    Condition,
    Delivery,
    Kind,
    Plan,
    Route,
    Severity,
    default_severity,
    plan,
    resolutions,
    title,
)
from greenlight.errors import GreenlightError, TransientError
from greenlight.settings import Profile
from greenlight.tasks.blocks import read_secret_block
from greenlight.tasks.evidence import emit
from greenlight.tasks.notify import _token as slack_token
from greenlight.tasks.policy import FRESH, logger

#: ``HOST:PORT`` of an SMTP relay that replaces the profile's ``alerts.email.host``/``port``
SERVER_ENV = "GREENLIGHT_SMTP_SERVER"
#: the longest pause between two tries, whatever Retry-After says (an alert must not wait long)
MAX_PAUSE_S = 10.0


def severities(profile: Profile) -> dict[Kind, Severity]:
    """Every kind's severity in this environment: the profile's choice, else the default."""
    production = profile.alerts.production
    production = profile.name == "production" if production is None else production
    return {k: profile.alerts.severities.get(k, default_severity(k, production)) for k in Kind}


def routes(profile: Profile) -> dict[Severity, Route]:
    """Every level's route; an unlisted level (or one without ``slack``) goes to the profile's
    Slack channel."""
    default_slack = (profile.slack.channel,) if profile.slack is not None else ()
    out: dict[Severity, Route] = {}
    for level in Severity:
        r = profile.alerts.routes.get(level)
        if r is None:
            out[level] = Route(slack=default_slack)
        else:
            slack = default_slack if r.slack is None else tuple(r.slack)
            out[level] = Route(slack=slack, pagerduty=r.pagerduty, email=tuple(r.email))
    return out


def alert_plan(profile: Profile, kind: Kind, subject: str = "", severity: Severity | None = None) -> Plan:
    """The plan of ``kind`` in this environment (``severity`` overrides the profile's)."""
    sev = severities(profile)
    if severity is not None:
        sev[kind] = severity
    return plan(profile.name, kind, sev, routes(profile), subject)


@dataclass
class Outcome:
    """What happened to one alert: the channels that took it and those that did not (and why)."""

    kind: str
    severity: str
    dedup_key: str
    action: str = "trigger"
    delivered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    tries: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "severity": self.severity,
            "dedup_key": self.dedup_key,
            "action": self.action,
            "delivered": list(self.delivered),
            "failed": dict(self.failed),
            "tries": dict(self.tries),
        }


def _secret(env_var: str, block: str | None) -> str | None:
    value = os.environ.get(env_var)
    if value:
        return value
    if not block:
        return None
    found = read_secret_block(block)
    return None if found is None else str(found)


def _pagerduty(profile: Profile) -> PagerDuty:
    pd = profile.alerts.pagerduty
    key = _secret(ROUTING_KEY_ENV, pd.routing_key_secret_block if pd else None)
    if not key:
        raise GreenlightError(
            f"no PagerDuty routing key (set ${ROUTING_KEY_ENV} or alerts.pagerduty's block)"
        )
    return PagerDuty(key)


def _mailer(profile: Profile) -> Mailer:
    e = profile.alerts.email
    if e is None:
        raise GreenlightError("no 'alerts.email' section")
    password = _secret(PASSWORD_ENV, e.password_secret_block) if e.username else None
    host, port = e.host, e.port
    server = os.environ.get(SERVER_ENV)  # a relay (or the lab's sink) instead of the profile's server
    if server:
        host, _, port_text = server.rpartition(":")
        port = int(port_text)
    return Mailer(
        host,
        port,
        e.sender,
        starttls=e.starttls,
        username=e.username,
        password=password,
        timeout_s=e.timeout_s,
    )


def _retrying(
    label: str, tries: int, delay_s: float, send: Callable[[], str | None], sleep: Callable[[float], None]
) -> tuple[int, str | None, str | None]:
    """Call ``send`` up to ``tries`` times; (tries used, its answer, None) or (tries, None, why)."""
    why = "not tried"
    for attempt in range(1, tries + 1):
        try:
            return attempt, send(), None
        except TransientError as e:
            why = str(e)
            if attempt < tries:
                pause = e.retry_after if e.retry_after is not None else delay_s * 2 ** (attempt - 1)
                logger().warning("alert: %s: try %d of %d failed: %s", label, attempt, tries, why)
                sleep(min(MAX_PAUSE_S, pause))
        except Exception as e:  # permanent: retrying will not help
            return attempt, None, str(e) if isinstance(e, GreenlightError) else type(e).__name__
    return tries, None, why


def _deliver(
    profile: Profile,
    p: Plan,
    d: Delivery,
    text: str,
    summary: str,
    details: dict[str, Any],
    sleep: Callable[[float], None],
) -> tuple[int, str | None, str | None]:
    tries, delay = profile.alerts.retries, profile.alerts.retry_delay_s
    if d.channel == "slack":
        block = profile.slack.token_secret_block if profile.slack is not None else None
        try:  # a Prefect API that cannot give the token's block must not cost the other channels
            n = Notifier(token=slack_token(block), channel=d.to, raise_errors=True)
        except Exception as e:
            return 0, None, str(e) if isinstance(e, GreenlightError) else type(e).__name__
        if not n.enabled:
            return 0, None, "no Slack token"
        return _retrying(d.label, tries, delay, lambda: n.post(text), sleep)
    if d.channel == "pagerduty":
        try:
            pd = _pagerduty(profile)
        except Exception as e:
            return 0, None, str(e) if isinstance(e, GreenlightError) else type(e).__name__
        return _retrying(
            d.label,
            tries,
            delay,
            lambda: pd.trigger(
                p.dedup_key, summary, f"greenlight/{profile.name}", PAGERDUTY_SEVERITY[p.severity], details
            ),
            sleep,
        )
    try:
        mailer = _mailer(profile)
    except Exception as e:
        return 0, None, str(e) if isinstance(e, GreenlightError) else type(e).__name__
    body = "\n".join([text, "", *(f"{k}: {v}" for k, v in details.items()), "", f"dedup key: {p.dedup_key}"])
    return _retrying(d.label, tries, delay, lambda: mailer.send(d.to.split(","), text, body), sleep)


def deliver_alert(
    profile: Profile,
    kind: Kind,
    summary: str,
    subject: str = "",
    details: dict[str, Any] | None = None,
    severity: Severity | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Outcome:
    """Send the alert to every channel of its level (the body of :func:`raise_alert`)."""
    p = alert_plan(profile, kind, subject, severity)
    details = {str(k): v for k, v in (details or {}).items()}
    text = f":rotating_light: {title(profile.name, p.severity, kind, summary)}"
    out = Outcome(kind.value, p.severity.value, p.dedup_key)
    if not p.deliveries:
        logger().warning(
            "alert %s (%s) in %s: its level routes nowhere", kind.value, p.severity.value, profile.name
        )
    for d in p.deliveries:
        tries, answer, why = _deliver(profile, p, d, text, summary, details, sleep)
        out.tries[d.label] = tries
        if why is None:
            out.delivered.append(d.label if d.channel != "slack" else f"{d.label} ts={answer}")
        else:
            out.failed[d.label] = why
            logger().error("alert %s not delivered to %s after %d tries: %s", kind.value, d.label, tries, why)
    return out


def _emit(profile: Profile, event: str, out: Outcome, summary: str) -> None:
    try:
        emit(
            event,
            f"greenlight.environment.{profile.name}",
            {**out.as_dict(), "environment": profile.name, "summary": summary},
            related=[
                {"prefect.resource.id": f"greenlight.alert.{out.dedup_key}", "prefect.resource.role": "alert"}
            ],
        )
    except Exception as e:  # the record must not stop the flow either
        logger().warning("alert event %s not emitted: %s", event, type(e).__name__)


@task(name="raise-alert", retries=0, **FRESH)
def raise_alert(
    profile: Profile,
    kind: Kind,
    summary: str,
    subject: str = "",
    details: dict[str, Any] | None = None,
    severity: Severity | None = None,
) -> dict[str, Any]:
    """Alert ``kind`` in the profile's environment at its severity; never raises.

    Returns ``{kind, severity, dedup_key, delivered: [...], failed: {channel: why}, tries}``.
    """
    try:
        out = deliver_alert(profile, kind, summary, subject, details, severity)
    except Exception as e:  # a bug here must not stop a release or a backup check
        logger().error("alert %s not sent: %s", kind.value, type(e).__name__)
        return {
            "kind": kind.value,
            "severity": None,
            "dedup_key": None,
            "delivered": [],
            "failed": {"*": type(e).__name__},
        }
    logger().info(
        "alert %s %s (%s): delivered to %s%s",
        out.severity, kind.value, out.dedup_key, ", ".join(out.delivered) or "nothing",
        f"; NOT delivered to {', '.join(out.failed)}" if out.failed else "",
    )  # fmt: skip
    _emit(profile, "greenlight.alert.raised", out, summary)
    return out.as_dict()


def clear_alerts(
    profile: Profile, condition: Condition, subject: str = "", sleep: Callable[[float], None] = time.sleep
) -> list[Outcome]:
    """Resolve in PagerDuty every alert ``condition`` clears whose level pages (the body of
    :func:`resolve_alerts`)."""
    outs: list[Outcome] = []
    for kind in resolutions(condition):
        p = alert_plan(profile, kind, subject)
        out = Outcome(kind.value, p.severity.value, p.dedup_key, action="resolve")
        if any(d.channel == "pagerduty" for d in p.deliveries):
            try:
                pd = _pagerduty(profile)
            except Exception as e:
                out.failed["pagerduty"] = str(e) if isinstance(e, GreenlightError) else type(e).__name__
            else:
                tries, _, why = _retrying(
                    "pagerduty", profile.alerts.retries, profile.alerts.retry_delay_s,
                    functools.partial(pd.resolve, p.dedup_key), sleep,
                )  # fmt: skip
                out.tries["pagerduty"] = tries
                if why is None:
                    out.delivered.append("pagerduty")
                else:
                    out.failed["pagerduty"] = why
        outs.append(out)
    return outs


@task(name="resolve-alerts", retries=0, **FRESH)
def resolve_alerts(profile: Profile, condition: Condition, subject: str = "") -> list[dict[str, Any]]:
    """The condition has cleared: resolve the alerts it clears (PagerDuty); never raises."""
    try:
        outs = clear_alerts(profile, condition, subject)
    except Exception as e:
        logger().error("alerts cleared by %s not resolved: %s", condition.value, type(e).__name__)
        return []
    for out in outs:
        if out.delivered or out.failed:
            logger().info(
                "alert %s (%s) resolved: %s", out.kind, out.dedup_key,
                "yes" if out.delivered else f"NOT delivered: {out.failed}",
            )  # fmt: skip
            _emit(profile, "greenlight.alert.resolved", out, f"cleared by {condition.value}")
    return [o.as_dict() for o in outs]
