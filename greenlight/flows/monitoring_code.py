"""Monitoring drift: the project's alert policies and uptime checks against their definition files.

Runs on a schedule (deployment ``monitoring-drift/production-drift`` in prefect.yaml, every 6 hours): compares the files
(``monitoring_code.directory`` of the profile) with the project, as ``greenlight monitoring diff``
does, logs every difference and, when there is drift (a definition not in the project, one
changed there, or one Greenlight labelled that no file names any more), alerts and fails with
GateFailed. Hand-made policies no file names are listed and are not drift. It never changes the
project: ``greenlight monitoring apply`` does.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.core.alerts import Condition, Kind
from greenlight.errors import GateFailed
from greenlight.settings import Environment, Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.monitoring_code import monitoring_diff
from greenlight.tasks.policy import logger


def drift_lines(report: dict[str, Any]) -> list[str]:
    """One line per definition or resource that is not unchanged, with its changed fields."""
    lines = []
    for item in report["items"]:
        if item["action"] == "unchanged":
            continue
        who = item["id"] or item["name"]
        lines.append(f"{item['action']}: {item['kind']} {who} ({item['display_name']})")
        for c in item["changes"]:
            lines.append(f"    {c['field']}: {c['project']!r} -> {c['files']!r}")
    return lines


def alert_drift(profile: Profile, text: str) -> None:
    """The drift alert, at the profile's severity of ``monitoring-drift`` (P2 in production, P3
    elsewhere, by default) on the routes of that level."""
    raise_alert(profile, Kind.MONITORING_DRIFT, text)


@flow(name="monitoring-drift")
def monitoring_drift(environment: Environment, directory: str | None = None) -> dict[str, Any]:
    """Compare ``environment``'s alert policies and uptime checks with their files; fail on drift.

    Args:
        environment: whose project to check (one of the profiles)
        directory: the definition files' directory (default: the profile's monitoring_code.directory)
    """
    profile = load_profile(environment)
    report = monitoring_diff(profile, directory)
    counts = report["counts"]
    summary = (
        f"monitoring of {environment} ({report['project']}): {counts['create']} missing, "
        f"{counts['update']} changed, {counts['orphaned']} orphaned, {counts['unchanged']} unchanged, "
        f"{counts['unmanaged']} hand-made (not in the files)"
    )
    lines = drift_lines(report)
    for line in lines:
        logger().info("%s", line)
    logger().info("%s", summary)
    if report["drift"]:
        alert_drift(
            profile, f"monitoring drift: {summary}; `greenlight monitoring diff {environment}` shows it"
        )
        error = GateFailed(f"monitoring drift: {summary}")
        error.report = report  # type: ignore[attr-defined]
        raise error
    resolve_alerts(profile, Condition.MONITORING_IN_SYNC)
    return report
