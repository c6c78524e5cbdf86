"""Cloud Monitoring for gates and evidence: one colour's traffic over a window, and gauges.

The gate's filters come from the profile's ``monitoring`` section, so the same code reads
Managed Service for Prometheus series on GKE and the lab's stand-in::

    metric.type="prometheus.googleapis.com/http_requests_total/counter"
    resource.labels.namespace="sma-staging" resource.labels.job="backend" metric.labels.color="green"

errors add ``metric.labels.code=monitoring.regex.full_match("5..")``. A query with no series is
no data (``Sample(requests=None)``), never zero requests.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import lru_cache

from prefect import task

from greenlight.clients.monitoring import (
    ENDPOINT_ENV,
    INSECURE_ENV,
    MonitoringClient,
    SeriesDistribution,
    SeriesSum,
)
from greenlight.core.gate import GateConfig, Sample
from greenlight.core.stats import Histogram, histogram_from_buckets, pooled
from greenlight.settings import Profile
from greenlight.tasks.policy import FRESH, logger, retry_transient_within

PERCENTILES = (50, 95, 99)
ERROR_CODES = "5.."


def gate_config(profile: Profile) -> GateConfig:
    """The core gate thresholds from a profile's ``gate`` section."""
    g = profile.gate
    return GateConfig(
        max_error_rate=g.max_error_rate,
        latency_limits=tuple((lim.percentile, float(lim.max_ms)) for lim in g.latency),
        max_error_rate_increase=g.max_error_rate_increase,
        max_latency_ratio=g.max_latency_ratio,
        min_requests=g.min_requests,
        intervals=g.intervals,
        smoke_probes=len(g.smoke),
        latency_ratio_floor_ms=g.latency_ratio_floor_ms,
        relative=g.relative,
        confidence=g.confidence,
        max_looks=g.intervals + g.max_extra_intervals,
    )


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def request_filters(profile: Profile, app: str, colour: str) -> tuple[str, str, str]:
    """(all requests, 5xx errors, latency histogram) filters for ``app``'s ``colour``."""
    m = profile.monitoring
    profile.app(app)  # an unknown app fails here, naming the known ones
    scope = (
        f"resource.labels.{m.namespace_label}={_quoted(profile.namespace)} "
        f"resource.labels.{m.app_label}={_quoted(app)} "
        f"metric.labels.{m.colour_label}={_quoted(colour)}"
    )
    requests = f"metric.type={_quoted(m.requests_metric)} {scope}"
    errors = f"{requests} metric.labels.{m.status_label}=monitoring.regex.full_match({_quoted(ERROR_CODES)})"
    latency = f"metric.type={_quoted(m.latency_metric)} {scope}"
    return requests, errors, latency


@lru_cache(maxsize=8)
def _client(project: str, endpoint: str | None, insecure: str | None) -> MonitoringClient:
    # keyed by the environment too: a changed endpoint gets a new channel
    return MonitoringClient(project)


def monitoring_client(profile: Profile) -> MonitoringClient:
    """A (cached) client for the profile's project and the environment's endpoint."""
    return _client(profile.monitoring.project, os.environ.get(ENDPOINT_ENV), os.environ.get(INSECURE_ENV))


def _total(groups: list[SeriesSum]) -> float | None:
    """The sum over groups; None when there was no group with a value (no data)."""
    values = [g.value for g in groups if g.value is not None]
    return sum(values) if values else None


# a gate interval cannot wait long for Monitoring: two quick retries (none when Monitoring asks
# for more than 2 s), then the interval is inconclusive (fail closed) and the gate moves on
@task(
    name="sample-colour",
    **FRESH,
    retries=2,
    retry_delay_seconds=[0.5, 1],
    retry_condition_fn=retry_transient_within(2.0),
)
def sample_colour(profile: Profile, app: str, colour: str, start: datetime, end: datetime) -> Sample:
    """Requests, 5xx errors and the latency histogram of ``app``'s ``colour`` over ``[start, end)``.

    The histogram is the window's latency distribution added up over the colour's series
    (ALIGN_DELTA + REDUCE_SUM), in ms; p50/p95/p99 are read from it. No request series in the
    window gives ``Sample(requests=None)``: no data, never zero. Raises TransientError when
    Monitoring is unavailable (the task retries it).
    """
    return read_sample(profile, app, colour, start, end)


def read_sample(profile: Profile, app: str, colour: str, start: datetime, end: datetime) -> Sample:
    """``sample_colour`` as a plain call (no task run, no retry), for loops that read many
    windows a minute (the bake)."""
    client = monitoring_client(profile)
    group_by = [f"metric.label.{profile.monitoring.colour_label}"]
    requests_filter, errors_filter, latency_filter = request_filters(profile, app, colour)
    t0, t1 = start.timestamp(), end.timestamp()
    requests = _total(client.sum_delta(requests_filter, start, end, group_by))
    if requests is None:
        return Sample(requests=None, start=t0, end=t1)
    errors = _total(client.sum_delta(errors_filter, start, end, group_by)) or 0.0
    histogram = _histogram_ms(client.distribution(latency_filter, start, end, group_by))
    latency: dict[int, float | None] = {
        p: histogram.quantile(p / 100.0) if histogram is not None else None for p in PERCENTILES
    }
    return Sample(requests=requests, errors=errors, latency_ms=latency, start=t0, end=t1, histogram=histogram)


def _histogram_ms(groups: list[SeriesDistribution]) -> Histogram | None:
    """The groups' distributions (seconds) as one histogram in ms; None without data."""
    found = [
        histogram_from_buckets([b * 1000.0 for b in g.bounds], g.counts, g.mean * 1000.0 if g.count else None)
        for g in groups
        if g.count
    ]
    try:
        return pooled(found)
    except ValueError:  # groups with different buckets: the largest alone
        return max(found, key=lambda h: h.count)


def request_count(profile: Profile, app: str, colour: str, start: datetime, end: datetime) -> float | None:
    """Requests Monitoring saw on ``app``'s ``colour`` over ``[start, end)``; None without a series.

    A plain call (no task run, no retry), for loops that poll it many times a second: a switch
    watching traffic arrive, a drain watching it leave. Raises TransientError when Monitoring
    is unavailable."""
    requests_filter, _, _ = request_filters(profile, app, colour)
    group_by = [f"metric.label.{profile.monitoring.colour_label}"]
    return _total(monitoring_client(profile).sum_delta(requests_filter, start, end, group_by))


@task(name="publish-gauge", retries=0, **FRESH)
def publish_gauge(profile: Profile, name: str, value: float, labels: dict[str, str]) -> None:
    """Write ``value`` to ``<custom_prefix>/<name>`` with ``labels``; log, never raise, on failure.

    Evidence is best effort: a Monitoring outage must not fail the release or check it records.
    """
    metric_type = f"{profile.monitoring.custom_prefix.rstrip('/')}/{name.strip('/')}"
    try:
        monitoring_client(profile).write_gauge(metric_type, float(value), labels)
    except Exception as e:  # never raises: the record is best effort
        logger().warning("gauge %s=%s not written: %s: %s", metric_type, value, type(e).__name__, e)
