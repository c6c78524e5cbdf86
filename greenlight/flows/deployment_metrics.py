"""Deployment metrics: the DORA figures of an environment, from its release records, to Cloud Monitoring.

Runs daily (deployment ``deployment-metrics/daily-dora`` in prefect.yaml): reads the signed release
records, computes deployment frequency, lead time for changes, change failure rate and time to
restore over the last ``days`` days (see :mod:`greenlight.core.dora` for the exact definitions),
writes each figure that has data as a custom metric (:mod:`greenlight.tasks.dora`) and publishes
the figures with the releases behind them as a markdown artifact ``dora-<env>``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from greenlight.core.dora import report_dict, report_lines
from greenlight.settings import Environment, load_profile
from greenlight.tasks.dora import compute_dora, publish_dora
from greenlight.tasks.evidence import publish_report
from greenlight.tasks.policy import logger


@flow(name="deployment-metrics")
def deployment_metrics(environment: Environment, days: int = 30, publish: bool = True) -> dict[str, Any]:
    """Compute the DORA figures of ``environment`` over the last ``days`` days and publish them.

    Args:
        environment: whose releases to measure (one of the profiles)
        days: the window, in days ending now (1 to 366)
        publish: write the figures to Cloud Monitoring (custom metrics under <custom_prefix>/dora/)
    """
    profile = load_profile(environment)
    report = compute_dora(profile, days)
    lines = report_lines(report)
    for line in lines:
        logger().info("%s", line)
    result = report_dict(report)
    result["published"] = publish_dora(profile, report) if publish else {}
    title = f"DORA metrics of {environment} ({days} days)"
    markdown = "\n".join([f"# {title}", "", "```", *lines, "```", ""])
    try:
        publish_report(f"dora-{environment}", markdown, title)
    except Exception as e:  # the figures are the outcome; the artifact is a convenience
        logger().warning("DORA report artifact not published: %s", e)
    return result
