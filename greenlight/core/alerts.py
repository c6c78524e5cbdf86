"""Alerts by severity: what Greenlight alerts on, how bad each is, where each level goes, and
which condition clears which alert. Pure: no I/O.

Severities are the runbook's P0 (outage) ... P3 (cosmetic). The profile chooses the severity of
each :class:`Kind` (defaults: :func:`default_severity`) and the channels of each level; a
repeated alert carries the same PagerDuty dedup key (:func:`dedup_key`), so it does not page
twice, and the condition that clears it (:data:`CLEARED_BY`) sends a resolve with that key.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """How bad: P0 the service is down ... P3 cosmetic."""

    P0 = "P0"
    P1 = "P1"
    P2 = "P2"
    P3 = "P3"


#: what each level means (docs and messages)
SEVERITY_MEANING: dict[Severity, str] = {
    Severity.P0: "outage",
    Severity.P1: "major: a safety net is gone or production was rolled back",
    Severity.P2: "minor: needs attention within the working day",
    Severity.P3: "cosmetic: for the record",
}

#: PagerDuty Events API v2 ``payload.severity`` for each level
PAGERDUTY_SEVERITY: dict[Severity, str] = {
    Severity.P0: "critical",
    Severity.P1: "error",
    Severity.P2: "warning",
    Severity.P3: "info",
}


class Kind(StrEnum):
    """The alerts Greenlight raises."""

    ROLLBACK = "rollback"  # a release was rolled back (by the bake, or by hand)
    GATE_FAILED = "gate-failed"  # a health gate failed or was inconclusive
    RELEASE_FAILED = "release-failed"  # a release stopped with an error
    BACKUP_NOT_VERIFIED = "backup-not-verified"  # the nightly dump did not verify
    CONFIG_BACKUP_FAILED = "config-backup-failed"  # the configuration bundle was not written
    DRILL_MISSED_TARGET = "drill-missed-target"  # a DR drill restored but missed its RTO/RPO
    DRILL_FAILED = "drill-failed"  # a DR drill did not restore
    DEAD_MANS_SWITCH = "dead-mans-switch"  # no backup verification completed in the window
    MONITORING_DRIFT = "monitoring-drift"  # the alert policies or uptime checks differ from their files
    DNS_FAILED_OVER = "dns-failed-over"  # users are sent to the DR environment (until a failback)


#: the severity of each kind in production (an environment the profile treats as production)
PRODUCTION_SEVERITIES: dict[Kind, Severity] = {
    Kind.ROLLBACK: Severity.P1,
    Kind.GATE_FAILED: Severity.P2,
    Kind.RELEASE_FAILED: Severity.P2,
    Kind.BACKUP_NOT_VERIFIED: Severity.P1,
    Kind.CONFIG_BACKUP_FAILED: Severity.P2,
    Kind.DRILL_MISSED_TARGET: Severity.P2,
    Kind.DRILL_FAILED: Severity.P1,
    Kind.DEAD_MANS_SWITCH: Severity.P1,
    Kind.MONITORING_DRIFT: Severity.P2,
    Kind.DNS_FAILED_OVER: Severity.P1,
}

#: the severity of each kind elsewhere (staging, DR): a release there harms no user
OTHER_SEVERITIES: dict[Kind, Severity] = {
    **PRODUCTION_SEVERITIES,
    Kind.ROLLBACK: Severity.P3,
    Kind.GATE_FAILED: Severity.P3,
    Kind.RELEASE_FAILED: Severity.P3,
    Kind.MONITORING_DRIFT: Severity.P3,
}


def default_severity(kind: Kind, production: bool) -> Severity:
    """The severity of ``kind`` when the profile does not choose one."""
    return (PRODUCTION_SEVERITIES if production else OTHER_SEVERITIES)[kind]


class Condition(StrEnum):
    """Outcomes that clear alerts raised earlier."""

    RELEASE_SUCCEEDED = "release-succeeded"
    BACKUP_VERIFIED = "backup-verified"
    CONFIG_BACKUP_SUCCEEDED = "config-backup-succeeded"
    DRILL_MET_TARGET = "drill-met-target"
    MONITORING_IN_SYNC = "monitoring-in-sync"
    DNS_FAILED_BACK = "dns-failed-back"


#: which alerts of the same environment each condition resolves: a release that succeeds clears
#: its environment's rollback, gate and release alerts; a verified backup clears "not verified"
#: and the dead man's switch; a drill that meets its targets clears both drill alerts
CLEARED_BY: dict[Condition, tuple[Kind, ...]] = {
    Condition.RELEASE_SUCCEEDED: (Kind.ROLLBACK, Kind.GATE_FAILED, Kind.RELEASE_FAILED),
    Condition.BACKUP_VERIFIED: (Kind.BACKUP_NOT_VERIFIED, Kind.DEAD_MANS_SWITCH),
    Condition.CONFIG_BACKUP_SUCCEEDED: (Kind.CONFIG_BACKUP_FAILED,),
    Condition.DRILL_MET_TARGET: (Kind.DRILL_MISSED_TARGET, Kind.DRILL_FAILED),
    Condition.MONITORING_IN_SYNC: (Kind.MONITORING_DRIFT,),
    Condition.DNS_FAILED_BACK: (Kind.DNS_FAILED_OVER,),
}


@dataclass(frozen=True)
class Route:
    """Where one level goes: Slack channels, PagerDuty or not, email recipients."""

    slack: tuple[str, ...] = ()
    pagerduty: bool = False
    email: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.slack or self.pagerduty or self.email)


@dataclass(frozen=True)
class Delivery:
    """One message to send: ``channel`` is ``slack`` (``to`` a channel), ``pagerduty`` or ``email``
    (``to`` the recipients, comma-separated)."""

    channel: str
    to: str = ""

    @property
    def label(self) -> str:
        return f"{self.channel}:{self.to}" if self.to else self.channel


@dataclass(frozen=True)
class Plan:
    """What one alert does: its severity, key and deliveries."""

    kind: Kind
    severity: Severity
    dedup_key: str
    deliveries: tuple[Delivery, ...] = field(default_factory=tuple)


def deliveries(route: Route) -> tuple[Delivery, ...]:
    """The messages a level's route sends: one per Slack channel, one PagerDuty event, one email."""
    out = [Delivery("slack", c) for c in route.slack]
    if route.pagerduty:
        out.append(Delivery("pagerduty"))
    if route.email:
        out.append(Delivery("email", ",".join(route.email)))
    return tuple(out)


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def dedup_key(environment: str, kind: Kind, subject: str = "") -> str:
    """PagerDuty's dedup key: the same for the same environment, kind and subject (so a repeated
    alert updates its incident instead of paging again), at most 255 characters as PagerDuty
    allows. ``subject`` narrows it (an app, a bucket); empty means the whole environment."""
    parts = ["greenlight", environment, kind.value] + ([subject] if subject else [])
    key = "/".join(_UNSAFE.sub("-", p).strip("-") or "-" for p in parts)
    if len(key) <= 255:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[:238]}~{digest}"


def plan(
    environment: str,
    kind: Kind,
    severities: dict[Kind, Severity],
    routes: dict[Severity, Route],
    subject: str = "",
) -> Plan:
    """The plan of one alert: the kind's severity (``severities``, complete), that level's route
    (a level missing from ``routes`` sends nothing) and the dedup key."""
    severity = severities[kind]
    route = routes.get(severity, Route())
    return Plan(kind, severity, dedup_key(environment, kind, subject), deliveries(route))


def resolutions(condition: Condition) -> tuple[Kind, ...]:
    """The kinds ``condition`` clears in its environment."""
    return CLEARED_BY[condition]


def title(environment: str, severity: Severity, kind: Kind, summary: str) -> str:
    """The one line an alert is: ``[P1] production: rollback: <summary>``."""
    return f"[{severity.value}] {environment}: {kind.value}: {summary}"
