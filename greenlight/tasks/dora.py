"""DORA figures of an environment: computed from its release records, published to Cloud Monitoring.

One GAUGE DOUBLE series per figure, ``<monitoring.custom_prefix>/dora/<figure>`` (by default
``custom.googleapis.com/greenlight/dora/deployment_frequency`` and so on, see
:data:`greenlight.core.dora.METRICS`), labelled ``environment`` and ``window_days``, on the
``global`` resource. A figure with no data writes no point (a gap, not a zero).

Cloud Monitoring refuses a point more than 25 hours old and a second point on one series less than
5 s after its newest: the points are written at the present (never backdated), all in one call, and
a publication refused for coming within 5 s of the last one (the schedule and ``greenlight metrics
--publish`` back to back) is written again once the 5 s have passed
(:meth:`~greenlight.clients.monitoring.MonitoringClient.write_gauges`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from greenlight.core.dora import DoraReport, compute
from greenlight.settings import Profile
from greenlight.tasks.metrics import monitoring_client
from greenlight.tasks.policy import FRESH, RETRIES
from greenlight.tasks.records import read_records, record_key


def dora_prefix(profile: Profile) -> str:
    """``<custom prefix>/dora``: where the figures' metric types live."""
    return f"{profile.monitoring.custom_prefix.rstrip('/')}/dora"


def series_labels(profile: Profile, days: int) -> dict[str, str]:
    return {"environment": profile.name, "window_days": str(days)}


def dora_report(profile: Profile, days: int, now: datetime | None = None) -> DoraReport:
    """The figures of ``profile``'s environment over the ``days`` days ending ``now`` (default:
    the present), from its signed release records. Raises Forbidden without the record key."""
    records = read_records.fn(profile)
    return compute(records, record_key(), profile.name, days, now or datetime.now(UTC))


def publish_figures(profile: Profile, report: DoraReport) -> dict[str, float]:
    """Write each figure that has data as one point, now; returns metric type -> value written."""
    prefix = dora_prefix(profile)
    labels = series_labels(profile, report.days)
    values = {f"{prefix}/{name}": v for name, v in report.figures().items() if v is not None}
    if not values:
        return {}
    monitoring_client(profile).write_gauges([(metric, value, labels) for metric, value in values.items()])
    return values


@task(name="compute-dora-metrics", **FRESH, **RETRIES)
def compute_dora(profile: Profile, days: int) -> DoraReport:
    """The DORA figures of the environment over the last ``days`` days (see :mod:`greenlight.core.dora`)."""
    return dora_report(profile, days)


@task(name="publish-dora-metrics", **FRESH, **RETRIES)
def publish_dora(profile: Profile, report: DoraReport) -> dict[str, float]:
    """Publish the figures that have data to Cloud Monitoring; metric type -> value written."""
    return publish_figures(profile, report)
