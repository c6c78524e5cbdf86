"""Alert: raise one alert of a kind at its severity (or one given), to every channel of its level.

The dead man's switch no longer runs this flow (it needs a worker, the very thing that may be
down): it is a Prefect automation the server notifies from (greenlight.tasks.automations). This
flow stays deployable by hand, e.g. to test a profile's routes.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.core.alerts import Kind, Severity
from greenlight.errors import TransientError
from greenlight.settings import Environment, load_profile
from greenlight.tasks.alerts import raise_alert


@flow(name="alert")
def alert(
    environment: Environment,
    summary: str,
    kind: Kind = Kind.DEAD_MANS_SWITCH,
    severity: Severity | None = None,
    subject: str = "by-hand",
) -> dict[str, Any]:
    """Raise ``kind`` in ``environment`` with ``summary``; fail when no channel took it (an alert
    nobody receives must not look sent).

    Args:
        environment: whose alerts (one of the profiles)
        summary: what is wrong, in one line
        kind: which alert (its severity and route come from the profile)
        severity: P0-P3 to override the profile's severity of ``kind``
        subject: part of the PagerDuty dedup key (``greenlight/<env>/<kind>/<subject>``): the
            default keeps a test apart from the real alert of that kind, so it neither joins
            nor is resolved with the real incident; empty: the real alert's key
    """
    profile = load_profile(environment)
    out = raise_alert(
        profile, Kind(kind), summary, subject=subject, severity=Severity(severity) if severity else None
    )
    if not out["delivered"]:
        raise TransientError(f"alert {kind} for {environment} delivered nowhere: {out['failed']}")
    return out
