"""Cloud Monitoring for Greenlight: aggregated sums and percentiles for gates, gauges for evidence.

The only module that talks to ``google.cloud.monitoring_v3``. Every call carries a timeout
and no client-side retry (``retry=None``): a dead endpoint fails in seconds, and retry policy
belongs to the callers (Prefect task retries on :class:`~greenlight.errors.TransientError`).

Errors become Greenlight errors::

    ServiceUnavailable, DeadlineExceeded, ResourceExhausted, InternalServerError, other 5xx
                                        -> TransientError (retry_after from RetryInfo when sent)
    InvalidArgument / other 400         -> InputInvalid (the server's message)
    NotFound                            -> NotFound
    PermissionDenied / Unauthenticated  -> Forbidden
    AlreadyExists / Aborted / Conflict  -> Conflict

each with the HTTP status the error maps to (``status``, 503) and its gRPC status code name
(``code``, UNAVAILABLE).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import grpc
from google.api import metric_pb2
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import MetricServiceGrpcTransport
from google.protobuf import duration_pb2, timestamp_pb2

from greenlight.errors import (
    Conflict,
    Forbidden,
    GreenlightError,
    InputInvalid,
    NotFound,
    PermanentError,
    TransientError,
)

ENDPOINT_ENV = "GREENLIGHT_MONITORING_ENDPOINT"
INSECURE_ENV = "GREENLIGHT_MONITORING_INSECURE"
PERCENTILE_REDUCERS = {
    50: monitoring_v3.Aggregation.Reducer.REDUCE_PERCENTILE_50,
    95: monitoring_v3.Aggregation.Reducer.REDUCE_PERCENTILE_95,
    99: monitoring_v3.Aggregation.Reducer.REDUCE_PERCENTILE_99,
}

T = TypeVar("T")
#: Cloud Monitoring's sampling period of a written series, and what it answers when a point comes sooner
SAMPLING_PERIOD_S = 5.0
SAMPLED_TOO_OFTEN = "more frequently than the maximum sampling period"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def make_metric_client(
    endpoint: str | None = None, insecure: bool = False
) -> monitoring_v3.MetricServiceClient:
    """A MetricServiceClient for ``endpoint`` (``host:port``).

    ``endpoint`` None reads ``GREENLIGHT_MONITORING_ENDPOINT`` and
    ``GREENLIGHT_MONITORING_INSECURE`` (``1``/``true``) from the environment; with neither, the
    default Google endpoint with Application Default Credentials. ``insecure`` uses a plaintext
    gRPC channel (the lab). Raises Forbidden when no credentials can be found.
    """
    if endpoint is None:
        endpoint = os.environ.get(ENDPOINT_ENV) or None
        insecure = insecure or _truthy(os.environ.get(INSECURE_ENV))
    try:
        if endpoint and insecure:
            transport = MetricServiceGrpcTransport(channel=grpc.insecure_channel(endpoint))
            return monitoring_v3.MetricServiceClient(transport=transport)
        if endpoint:
            return monitoring_v3.MetricServiceClient(client_options={"api_endpoint": endpoint})
        return monitoring_v3.MetricServiceClient()
    except auth_exc.DefaultCredentialsError as e:
        raise Forbidden(
            "no Google credentials for Cloud Monitoring (Application Default Credentials not found); "
            f"set them up or point {ENDPOINT_ENV} at a local endpoint"
        ) from e


@dataclass(frozen=True)
class SeriesSum:
    """One group of an aggregated query.

    ``labels``: the group's label values by short name (``{"color": "green"}`` for
    ``metric.label.color``), resource labels first, metric labels over them.
    ``value``: the aggregated value (None when the group had no point); ``points``: how many
    points went into it.
    """

    labels: dict[str, str]
    value: float | None
    points: int


@dataclass(frozen=True)
class SeriesDistribution:
    """One group's distribution: bucket upper ``bounds`` and ``counts`` (the counts may stop
    early: trailing empty buckets are left out on the wire), with its count and mean."""

    labels: dict[str, str]
    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    count: int
    mean: float


def _bucket_bounds(options: Any) -> tuple[float, ...]:
    """The finite bucket upper bounds of a Distribution's BucketOptions (explicit, linear or
    exponential, as the API defines them)."""
    which = options.WhichOneof("options")
    if which == "explicit_buckets":
        return tuple(options.explicit_buckets.bounds)
    if which == "linear_buckets":
        lin = options.linear_buckets
        return tuple(lin.offset + lin.width * i for i in range(lin.num_finite_buckets + 1))
    if which == "exponential_buckets":
        exp = options.exponential_buckets
        return tuple(exp.scale * exp.growth_factor**i for i in range(exp.num_finite_buckets + 1))
    raise InputInvalid("Cloud Monitoring returned a distribution without bucket options")


def _retry_after(e: gexc.GoogleAPICallError) -> float | None:
    for detail in getattr(e, "details", None) or []:
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and (delay.seconds or delay.nanos):
            return float(delay.seconds + delay.nanos / 1e9)
    return None


def call(what: str, fn: Callable[[], T]) -> T:
    """``fn()``, its Google API, gRPC and auth errors translated (:func:`translate_error`)."""
    try:
        return fn()
    except (gexc.GoogleAPIError, grpc.RpcError, auth_exc.TransportError, auth_exc.RefreshError) as e:
        raise translate_error(e, what) from e


def translate_error(e: Exception, what: str) -> GreenlightError:
    """The Greenlight error for an API error raised while doing ``what``; the HTTP status the
    error maps to and the gRPC status code name (UNAVAILABLE, PERMISSION_DENIED) stay on it."""
    message = getattr(e, "message", None) or str(e)
    status, code = _status(e)
    said = f" ({code})" if code else ""  # gRPC names the failure; the HTTP status it maps to adds nothing
    text = f"Cloud Monitoring {what} failed{said}: {message}"
    if isinstance(e, gexc.BadRequest):  # InvalidArgument, FailedPrecondition, OutOfRange
        return InputInvalid(text, status=status, code=code)
    if isinstance(e, gexc.NotFound):
        return NotFound(text, status=status, code=code)
    if isinstance(e, gexc.Forbidden | gexc.Unauthorized):  # PermissionDenied, Unauthenticated
        return Forbidden(text, status=status, code=code)
    if isinstance(e, gexc.Conflict):  # AlreadyExists, Aborted
        return Conflict(text, status=status, code=code)
    if isinstance(e, gexc.ServerError | gexc.TooManyRequests | gexc.Cancelled):
        return TransientError(text, retry_after=_retry_after(e), status=status, code=code)
    if isinstance(e, gexc.GoogleAPICallError):
        return PermanentError(text, status=status, code=code)
    if isinstance(e, gexc.GoogleAPIError | grpc.RpcError | auth_exc.TransportError):
        return TransientError(text, status=status, code=code)
    if isinstance(e, auth_exc.RefreshError):
        return Forbidden(text)
    raise TypeError(f"not an API error: {type(e).__name__}")


def _status(e: Exception) -> tuple[int | None, str | None]:
    """The HTTP status and the gRPC status code name of an API error (None each when unknown)."""
    if isinstance(e, gexc.GoogleAPICallError):
        grpc_code = e.grpc_status_code
        return (e.code or None), (grpc_code.name if grpc_code is not None else None)
    if isinstance(e, grpc.RpcError) and callable(getattr(e, "code", None)):
        raw = e.code()
        return None, (raw.name if isinstance(raw, grpc.StatusCode) else None)
    return None, None


def _timestamp(at: datetime) -> timestamp_pb2.Timestamp:
    if at.tzinfo is None:
        raise InputInvalid(f"time {at.isoformat()} has no time zone; pass an aware datetime (UTC)")
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(at.astimezone(UTC))
    return ts


def _window(start: datetime, end: datetime) -> monitoring_v3.TimeInterval:
    if end <= start:
        raise InputInvalid(f"window end {end.isoformat()} is not after its start {start.isoformat()}")
    return monitoring_v3.TimeInterval(start_time=_timestamp(start), end_time=_timestamp(end))


def _period(start: datetime, end: datetime) -> duration_pb2.Duration:
    """The whole window as one alignment period, in whole seconds (at least 1)."""
    return duration_pb2.Duration(seconds=max(1, math.ceil((end - start).total_seconds())))


def _point_value(value: Any) -> float | None:
    """A TypedValue as a float (a distribution gives its mean); None when it has no number."""
    pb = monitoring_v3.TypedValue.pb(value)
    which = pb.WhichOneof("value")
    if which == "double_value":
        return float(pb.double_value)
    if which == "int64_value":
        return float(pb.int64_value)
    if which == "bool_value":
        return 1.0 if pb.bool_value else 0.0
    if which == "distribution_value":
        return float(pb.distribution_value.mean)
    return None


def _labels(series: Any, resource: bool = True) -> dict[str, str]:
    labels = dict(series.resource.labels) if resource else {}
    labels.update(dict(series.metric.labels))
    return labels


class MonitoringClient:
    """Greenlight's Cloud Monitoring operations for one project.

    Args:
        project_id: the project whose metrics are read and written.
        client: a MetricServiceClient (default: :func:`make_metric_client` from the environment).
        timeout_s: the deadline of every call, in seconds.
    """

    def __init__(
        self,
        project_id: str,
        client: monitoring_v3.MetricServiceClient | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not project_id:
            raise InputInvalid("project_id is empty")
        self.project_id = project_id
        self.client = client if client is not None else make_metric_client()
        self.timeout_s = timeout_s

    @property
    def _name(self) -> str:
        return f"projects/{self.project_id}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call(what, fn)

    def _list(self, request: monitoring_v3.ListTimeSeriesRequest) -> list[Any]:
        def fetch() -> list[Any]:
            pager = self.client.list_time_series(request=request, retry=None, timeout=self.timeout_s)
            return list(pager)  # later pages are fetched here: keep them inside the translation

        return self._call("ListTimeSeries", fetch)

    def _aggregated(
        self, filter: str, start: datetime, end: datetime, reducer: Any, group_by: Iterable[str]
    ) -> list[Any]:
        request = monitoring_v3.ListTimeSeriesRequest(
            name=self._name,
            filter=filter,
            interval=_window(start, end),
            aggregation=monitoring_v3.Aggregation(
                alignment_period=_period(start, end),
                per_series_aligner=monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
                cross_series_reducer=reducer,
                group_by_fields=list(group_by),
            ),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )
        return self._list(request)

    def sum_delta(self, filter: str, start: datetime, end: datetime, group_by: list[str]) -> list[SeriesSum]:
        """What the matching counters gained over ``[start, end]``, summed per group.

        ALIGN_DELTA over one alignment period spanning the window, REDUCE_SUM by ``group_by``
        (e.g. ``["metric.label.color"]``). No traffic: an empty list (no data, not zero).
        """
        out = []
        for series in self._aggregated(
            filter, start, end, monitoring_v3.Aggregation.Reducer.REDUCE_SUM, group_by
        ):
            values = [v for v in (_point_value(p.value) for p in series.points) if v is not None]
            out.append(SeriesSum(_labels(series), sum(values) if values else None, len(series.points)))
        return out

    def percentile(
        self, filter: str, start: datetime, end: datetime, percentile: int, group_by: list[str]
    ) -> list[SeriesSum]:
        """The ``percentile`` (50, 95 or 99) of the matching distributions over ``[start, end]``.

        ALIGN_DELTA + REDUCE_PERCENTILE_N per group; the value is in the metric's unit (seconds
        for GMP latency histograms). No traffic: an empty list.
        """
        reducer = PERCENTILE_REDUCERS.get(percentile)
        if reducer is None:
            raise InputInvalid(f"percentile must be one of 50, 95, 99, not {percentile}")
        out = []
        for series in self._aggregated(filter, start, end, reducer, group_by):
            newest = _point_value(series.points[0].value) if series.points else None
            out.append(SeriesSum(_labels(series), newest, len(series.points)))
        return out

    def distribution(
        self, filter: str, start: datetime, end: datetime, group_by: list[str]
    ) -> list[SeriesDistribution]:
        """The matching distributions' buckets added up over ``[start, end]``, per group.

        ALIGN_DELTA over one alignment period spanning the window and REDUCE_SUM by
        ``group_by``: what the window added to each bucket, in the metric's unit (seconds for
        GMP latency histograms). No traffic: an empty list.
        """
        out = []
        for series in self._aggregated(
            filter, start, end, monitoring_v3.Aggregation.Reducer.REDUCE_SUM, group_by
        ):
            if not series.points:
                continue
            pb = monitoring_v3.TypedValue.pb(series.points[0].value)
            if pb.WhichOneof("value") != "distribution_value":
                raise InputInvalid(f"Cloud Monitoring: {filter} is not a distribution metric")
            d = pb.distribution_value
            out.append(
                SeriesDistribution(
                    _labels(series), _bucket_bounds(d.bucket_options), tuple(d.bucket_counts), d.count, d.mean
                )
            )
        return out

    def write_gauge(
        self,
        metric_type: str,
        value: float,
        labels: dict[str, str],
        resource_type: str = "global",
        resource_labels: dict[str, str] | None = None,
        at: datetime | None = None,
    ) -> None:
        """Write one GAUGE DOUBLE point (``at``, default now) to ``metric_type`` (see :meth:`write_gauges`).

        The ``global`` resource gets ``project_id`` when no resource labels are given.
        """
        self.write_gauges([(metric_type, value, labels)], at, resource_type, resource_labels)

    def write_gauges(
        self,
        points: list[tuple[str, float, dict[str, str]]],
        at: datetime | None = None,
        resource_type: str = "global",
        resource_labels: dict[str, str] | None = None,
    ) -> None:
        """Write one GAUGE DOUBLE point per ``(metric type, value, labels)``, all at ``at`` (default
        now), in one CreateTimeSeries call (at most 200 series, as the API allows).

        The API refuses a point more than 25 hours old, and a second point on one series less than
        5 s after its newest (InputInvalid). A point written now (``at`` None) that is refused for
        the second reason is written again, at the new now, once the 5 s have passed; one with an
        explicit ``at`` is not (its time is the caller's)."""
        if not points:
            return
        if len(points) > 200:
            raise InputInvalid(f"at most 200 time series per CreateTimeSeries call, not {len(points)}")
        if resource_labels is None:
            resource_labels = {"project_id": self.project_id} if resource_type == "global" else {}

        def series(when: datetime) -> list[monitoring_v3.TimeSeries]:
            end = _timestamp(when)
            return [
                monitoring_v3.TimeSeries(
                    metric={"type": metric_type, "labels": labels},
                    resource={"type": resource_type, "labels": resource_labels},
                    metric_kind=metric_pb2.MetricDescriptor.MetricKind.GAUGE,
                    value_type=metric_pb2.MetricDescriptor.ValueType.DOUBLE,
                    points=[
                        monitoring_v3.Point(
                            interval=monitoring_v3.TimeInterval(end_time=end),
                            value=monitoring_v3.TypedValue(double_value=float(value)),
                        )
                    ],
                )
                for metric_type, value, labels in points
            ]

        def create(when: datetime) -> None:
            written = series(when)
            self._call(
                "CreateTimeSeries",
                lambda: self.client.create_time_series(
                    name=self._name, time_series=written, retry=None, timeout=self.timeout_s
                ),
            )

        if at is not None:
            create(at)
            return
        try:
            create(datetime.now(UTC))
        except InputInvalid as e:
            if SAMPLED_TOO_OFTEN not in str(e):
                raise
            # a point written "now" less than the sampling period after the series' newest (two
            # publications back to back): wait the period out and write it at the new now
            time.sleep(SAMPLING_PERIOD_S)
            create(datetime.now(UTC))

    def read_latest(
        self, filter: str, start: datetime, end: datetime
    ) -> list[tuple[dict[str, str], float, datetime]]:
        """The newest point of each matching series in ``(start, end]``: (metric labels, value, time).

        Series without a numeric point are left out; an empty list means no data.
        """
        request = monitoring_v3.ListTimeSeriesRequest(
            name=self._name,
            filter=filter,
            interval=_window(start, end),
            view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        )
        out = []
        for series in self._list(request):
            if not series.points:
                continue
            newest = series.points[0]  # the API answers newest first
            value = _point_value(newest.value)
            if value is None:
                continue
            when: datetime = newest.interval.end_time  # proto-plus gives an aware datetime
            stamp = when if when.tzinfo else when.replace(tzinfo=UTC)
            out.append((_labels(series, resource=False), value, stamp.astimezone(UTC)))
        return out
