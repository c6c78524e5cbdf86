"""The real google-cloud-monitoring client against the lab's MetricService, over real gRPC."""

from __future__ import annotations

import itertools
import math
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
from google.api import metric_pb2
from google.cloud import monitoring_v3

from greenlight.clients.monitoring import MonitoringClient, make_metric_client
from greenlight.errors import InputInvalid, NotFound, TransientError
from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.metrics import DEFAULT_BOUNDS, RequestRecorder
from greenlight_lab.monitoring import MonitoringServer

from .monitoring_support import LATENCY, NAMESPACE, PROJECT, REQUESTS, Request, Traffic, pod_labels

REQ_FILTER = f'metric.type="{REQUESTS}" resource.labels.namespace="{NAMESPACE}"'
ERR_FILTER = REQ_FILTER + ' metric.labels.code=monitoring.regex.full_match("5..")'
LAT_FILTER = f'metric.type="{LATENCY}" resource.labels.namespace="{NAMESPACE}"'
BY_COLOUR = ["metric.label.color"]


def by_colour(sums: list) -> dict[str, float | None]:  # type: ignore[type-arg]
    return {s.labels.get("color", ""): s.value for s in sums}


def true_percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bucket_width(value: float) -> float:
    bounds = (0.0, *DEFAULT_BOUNDS)
    for lower, upper in itertools.pairwise(bounds):
        if value <= upper:
            return upper - lower
    return float("inf")


def raw_request(traffic: Traffic, filter: str, **extra: object) -> dict[str, object]:
    return {
        "name": f"projects/{PROJECT}",
        "filter": filter,
        "interval": {"start_time": traffic.start, "end_time": traffic.end},
        **extra,
    }


# -- the gate's queries -------------------------------------------------------------------------


def visible_by_colour(
    traffic: Traffic, errors_only: bool = False, start: float | None = None, end: float | None = None
) -> dict[str, float]:
    return {c: traffic.visible_count(c, errors_only, start, end) for c in ("blue", "green")}


def test_sum_delta_counts_requests_per_colour(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """ALIGN_DELTA + REDUCE_SUM by colour counts each staging request of a colour once, except those
    its series' first scrape counted (GMP's reset point: 22 blue, 21 green)."""
    sums = monitoring.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)
    assert by_colour(sums) == visible_by_colour(traffic) == {"blue": 978.0, "green": 979.0}
    assert all(s.points == 1 for s in sums)


def test_sum_delta_counts_5xx_per_colour_with_regex_filter(
    monitoring: MonitoringClient, traffic: Traffic
) -> None:
    """The 5.. regex on metric.labels.code counts 500s and 503s but not 404s, per colour (each
    (pod, code) series' first errors, counted by its own first scrape, excepted)."""
    sums = monitoring.sum_delta(ERR_FILTER, traffic.start, traffic.end, BY_COLOUR)
    assert by_colour(sums) == visible_by_colour(traffic, errors_only=True) == {"blue": 9.0, "green": 196.0}
    assert traffic.errors == {"blue": 10, "green": 200}


def test_colour_filter_selects_one_colour(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """metric.labels.color="green" keeps only green's series."""
    sums = monitoring.sum_delta(
        REQ_FILTER + ' metric.labels.color="green"', traffic.start, traffic.end, BY_COLOUR
    )
    assert by_colour(sums) == {"green": traffic.visible_count("green")}


def test_sum_without_group_by_is_one_total(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """No group_by sums every matching series into one unlabelled group."""
    sums = monitoring.sum_delta(REQ_FILTER, traffic.start, traffic.end, [])
    assert [(s.labels, s.value) for s in sums] == [({}, sum(visible_by_colour(traffic).values()))]


def test_grouping_by_resource_label_splits_namespaces(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """resource.label.namespace groups staging and production traffic apart."""
    sums = monitoring.sum_delta(
        f'metric.type="{REQUESTS}"', traffic.start, traffic.end, ["resource.label.namespace"]
    )
    # production: one series (blue-0, 500) whose first scrape counted its first 10 requests
    staging = sum(visible_by_colour(traffic).values())
    assert {s.labels["namespace"]: s.value for s in sums} == {"sma-staging": staging, "sma-production": 290.0}


def test_sum_over_part_of_the_traffic_counts_that_part(
    monitoring: MonitoringClient, traffic: Traffic
) -> None:
    """A window over the first 10 s counts only the requests served in those seconds after each
    series' first scrape (the first second's 20 per colour, and the first 404 or 500 of a pod
    that appears later, were counted by their series' reset points)."""
    start = datetime.fromtimestamp(traffic.first_second, UTC)
    sums = monitoring.sum_delta(REQ_FILTER, start, start + timedelta(seconds=10), BY_COLOUR)
    truth = visible_by_colour(traffic, start=start.timestamp(), end=start.timestamp() + 10)
    assert by_colour(sums) == truth == {"blue": 178.0, "green": 179.0}


def test_percentile_p95_within_a_bucket_of_truth(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """p95 from the latency histogram lies within one bucket's width of the true p95, per colour."""
    sums = monitoring.percentile(LAT_FILTER, traffic.start, traffic.end, 95, BY_COLOUR)
    got = by_colour(sums)
    assert set(got) == {"blue", "green"}
    for colour, value in got.items():

        def keep(r: Request, c: str = colour) -> bool:
            return r.colour == c and r.namespace == NAMESPACE

        seen = traffic.visible(keep=keep, histogram=True)
        truth = true_percentile([r.latency for r in seen], 0.95)
        assert value is not None
        assert abs(value - truth) <= bucket_width(truth), (colour, value, truth)


def test_percentile_refuses_unsupported_rank(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """Only p50, p95 and p99 exist as reducers: p90 is InputInvalid before any call."""
    with pytest.raises(InputInvalid, match="percentile"):
        monitoring.percentile(LAT_FILTER, traffic.start, traffic.end, 90, BY_COLOUR)


def test_window_without_traffic_returns_no_series(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """A window before any traffic answers no series at all (no data), not zeros."""
    before = traffic.start - timedelta(hours=1)
    assert monitoring.sum_delta(REQ_FILTER, before, before + timedelta(minutes=30), BY_COLOUR) == []
    assert monitoring.percentile(LAT_FILTER, before, before + timedelta(minutes=30), 95, BY_COLOUR) == []


def test_window_after_traffic_stopped_returns_no_series(
    monitoring: MonitoringClient, traffic: Traffic
) -> None:
    """Once a label set stops serving, later windows have no series either."""
    after = traffic.end + timedelta(seconds=10)
    assert monitoring.sum_delta(REQ_FILTER, after, after + timedelta(seconds=60), BY_COLOUR) == []


def test_live_requests_are_readable_one_scrape_and_the_ingestion_delay_after_serving(
    monitoring: MonitoringClient, recorder: RequestRecorder, server: MonitoringServer
) -> None:
    """Requests served now (on a series that already had its first scrape) are counted by the next
    scrape and readable the ingestion delay after it: never earlier, and soon after."""
    labels = pod_labels("green", 7, namespace="live-ns")
    now = time.time()
    recorder.record(labels, 200, 0.02, at=now - 2.0)  # the series' first scrape (its reset) is behind us
    for _ in range(25):
        recorder.record(labels, 200, 0.02, at=now)
    readable_at = math.floor(now) + 1 + server.model.ingestion_delay_s  # the next scrape, plus the delay
    flt = f'metric.type="{REQUESTS}" resource.labels.namespace="live-ns"'
    seen: dict[str, float | None] = {}
    while time.time() < readable_at + 1.0 and seen != {"green": 25.0}:
        before = time.time()
        end = datetime.now(UTC)
        seen = by_colour(monitoring.sum_delta(flt, end - timedelta(seconds=30), end, BY_COLOUR))
        if before < readable_at - 0.05:  # allow for the clocks read a hair apart
            assert seen in ({}, {"green": 0.0}), (before, readable_at, seen)
        time.sleep(0.05)
    assert seen == {"green": 25.0}
    assert time.time() >= readable_at


# -- the shape of the series ---------------------------------------------------------------------


def test_counter_series_are_shaped_as_gmp_exports_them(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """Raw counter series: CUMULATIVE DOUBLE on prometheus_target with GMP's labels, newest point first."""
    flt = REQ_FILTER + ' metric.labels.pod="backend-green-0" metric.labels.code="503"'
    series = list(metric_client.list_time_series(request=raw_request(traffic, flt)))
    assert len(series) == 1
    ts = series[0]
    assert ts.metric_kind == metric_pb2.MetricDescriptor.CUMULATIVE
    assert ts.value_type == metric_pb2.MetricDescriptor.DOUBLE
    assert dict(ts.metric.labels) == {
        "code": "503",
        "method": "GET",
        "pod": "backend-green-0",
        "container": "backend",
        "top_level_controller_name": "backend-green",
        "color": "green",
    }
    assert ts.resource.type == "prometheus_target"
    assert dict(ts.resource.labels) == {
        "project_id": PROJECT,
        "location": "lab",
        "cluster": "lab-primary",
        "namespace": NAMESPACE,
        "job": "backend",
        "instance": "backend-green-0:8080",
    }
    ends = [p.interval.end_time for p in ts.points]
    values = [p.value.double_value for p in ts.points]
    assert ends == sorted(ends, reverse=True)
    assert values == sorted(values, reverse=True)
    # green pod 0 served 500 requests, every 5th a 503: 100, of which the first scrape counted 2
    assert values[0] == 98.0
    reset = datetime.fromtimestamp(traffic.first_second + 1, UTC)  # its first 503 was at +0.2 s
    assert {p.interval.start_time for p in ts.points} == {reset}
    assert all(p.interval.start_time < p.interval.end_time for p in ts.points)


def test_histogram_series_has_explicit_bucket_bounds(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """The latency histogram is a CUMULATIVE DISTRIBUTION whose buckets are the Prometheus le bounds."""
    flt = LAT_FILTER + ' metric.labels.pod="backend-blue-1"'
    (ts,) = list(metric_client.list_time_series(request=raw_request(traffic, flt)))
    assert ts.metric_kind == metric_pb2.MetricDescriptor.CUMULATIVE
    assert ts.value_type == metric_pb2.MetricDescriptor.DISTRIBUTION
    dist = ts.points[0].value.distribution_value
    assert list(dist.bucket_options.explicit_buckets.bounds) == list(DEFAULT_BOUNDS)
    # pod 1 served 500 requests; the 10 of its first second are its reset point
    seen = traffic.visible(
        keep=lambda r: r.pod == "backend-blue-1" and r.namespace == NAMESPACE, histogram=True
    )
    assert len(seen) == 490
    assert dist.count == 490
    assert sum(dist.bucket_counts) == 490
    assert dist.mean == pytest.approx(sum(r.latency for r in seen) / len(seen))
    assert 0.0 < dist.mean < 0.1


def test_headers_view_returns_series_without_points(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """view=HEADERS lists the matching series with no points."""
    req = raw_request(
        traffic,
        REQ_FILTER + ' metric.labels.color="blue"',
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS,
    )
    series = list(metric_client.list_time_series(request=req))
    # blue errors (every 100th request, odd i) all land on pod 1 as 500s; 404s on both pods
    assert {(s.metric.labels["pod"], s.metric.labels["code"]) for s in series} == {
        ("backend-blue-0", "200"),
        ("backend-blue-0", "404"),
        ("backend-blue-1", "200"),
        ("backend-blue-1", "404"),
        ("backend-blue-1", "500"),
    }
    assert all(len(s.points) == 0 for s in series)


def test_pager_follows_page_tokens(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """page_size=1 makes one series per page and the client's pager fetches them all."""
    req = raw_request(
        traffic, REQ_FILTER, view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS, page_size=1
    )
    pager = metric_client.list_time_series(request=req)
    assert len(list(pager)) == 11  # blue: 5 (pod, code) series, green: 6


def test_rate_aligner_gives_per_second_rate(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """ALIGN_RATE over 10 s periods with REDUCE_SUM gives 20 requests/s per colour while serving;
    the first period lacks what the series' first scrapes counted (first second, first 404, first 500)."""
    start = datetime.fromtimestamp(traffic.first_second, UTC)
    req = {
        "name": f"projects/{PROJECT}",
        "filter": REQ_FILTER + ' metric.labels.color="blue"',
        "interval": {"start_time": start, "end_time": start + timedelta(seconds=40)},
        "aggregation": {
            "alignment_period": {"seconds": 10},
            "per_series_aligner": monitoring_v3.Aggregation.Aligner.ALIGN_RATE,
            "cross_series_reducer": monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
            "group_by_fields": ["metric.labels.color"],
        },
    }
    (ts,) = list(metric_client.list_time_series(request=req))
    assert [p.value.double_value for p in ts.points] == [20.0, 20.0, 20.0, 17.8]
    assert ts.points[0].interval.end_time > ts.points[-1].interval.end_time


def test_reduce_count_counts_series_per_group(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """REDUCE_COUNT by colour counts the 5xx series (pod x code) that had points."""
    req = raw_request(
        traffic,
        ERR_FILTER,
        aggregation={
            "alignment_period": {"seconds": 65},
            "per_series_aligner": monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
            "cross_series_reducer": monitoring_v3.Aggregation.Reducer.REDUCE_COUNT,
            "group_by_fields": ["metric.label.color"],
        },
    )
    got = {
        s.metric.labels["color"]: s.points[0].value.int64_value
        for s in metric_client.list_time_series(request=req)
    }
    assert got == {"blue": 1, "green": 2}  # blue-1/500; green-0/503, green-1/500


def test_sum_aligner_on_a_counter_is_refused(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """As in Cloud Monitoring, ALIGN_SUM on a CUMULATIVE counter is INVALID_ARGUMENT naming the aligner."""
    from google.api_core.exceptions import InvalidArgument

    req = raw_request(
        traffic,
        REQ_FILTER,
        aggregation={
            "alignment_period": {"seconds": 60},
            "per_series_aligner": monitoring_v3.Aggregation.Aligner.ALIGN_SUM,
        },
    )
    with pytest.raises(InvalidArgument, match="ALIGN_SUM"):
        list(metric_client.list_time_series(request=req, retry=None, timeout=2))


def test_metric_descriptors_list_prometheus_and_written_types(
    metric_client,
    monitoring: MonitoringClient,
    traffic: Traffic,  # type: ignore[no-untyped-def]
) -> None:
    """ListMetricDescriptors shows the GMP types implied by traffic and types created by writes."""
    monitoring.write_gauge("custom.googleapis.com/greenlight/descriptor_probe", 1.0, {})
    types = {d.type for d in metric_client.list_metric_descriptors(name=f"projects/{PROJECT}")}
    assert {REQUESTS, LATENCY, "custom.googleapis.com/greenlight/descriptor_probe"} <= types
    only = metric_client.list_metric_descriptors(
        request={
            "name": f"projects/{PROJECT}",
            "filter": 'metric.type = starts_with("custom.googleapis.com/")',
        }
    )
    assert all(d.type.startswith("custom.googleapis.com/") for d in only)


# -- written series ------------------------------------------------------------------------------


def test_write_gauge_then_read_latest(monitoring: MonitoringClient) -> None:
    """A gauge written with CreateTimeSeries reads back as its newest value with labels and time."""
    metric = "custom.googleapis.com/greenlight/backup_rpo_seconds"
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    monitoring.write_gauge(metric, 120.0, {"environment": "lab"}, at=t0)
    monitoring.write_gauge(metric, 90.5, {"environment": "lab"}, at=t0 + timedelta(seconds=10))
    monitoring.write_gauge(metric, 7.0, {"environment": "dr"}, at=t0 + timedelta(seconds=5))
    got = monitoring.read_latest(
        f'metric.type="{metric}"', t0 - timedelta(seconds=1), t0 + timedelta(seconds=20)
    )
    assert sorted(got, key=lambda r: r[0]["environment"]) == [
        ({"environment": "dr"}, 7.0, t0 + timedelta(seconds=5)),
        ({"environment": "lab"}, 90.5, t0 + timedelta(seconds=10)),
    ]
    only_lab = monitoring.read_latest(
        f'metric.type="{metric}" metric.labels.environment != "dr"',
        t0 - timedelta(seconds=1),
        t0 + timedelta(seconds=20),
    )
    assert [r[1] for r in only_lab] == [90.5]


def test_out_of_order_gauge_write_is_input_invalid(monitoring: MonitoringClient) -> None:
    """Writing a point older than the series' newest is refused, as the real API does."""
    metric = "custom.googleapis.com/greenlight/out_of_order"
    now = datetime.now(UTC)
    monitoring.write_gauge(metric, 1.0, {}, at=now)
    with pytest.raises(InputInvalid, match="written in order"):
        monitoring.write_gauge(metric, 2.0, {}, at=now - timedelta(seconds=5))


def test_a_second_point_within_5_s_on_one_series_is_refused(monitoring: MonitoringClient) -> None:
    """One series takes at most one point every 5 s, as the real API's sampling period; another
    series (other labels) at the same moment is fine."""
    metric = "custom.googleapis.com/greenlight/sampling_probe"
    now = datetime.now(UTC) - timedelta(seconds=20)
    monitoring.write_gauge(metric, 1.0, {"environment": "a"}, at=now)
    with pytest.raises(InputInvalid, match="more frequently than the maximum sampling period"):
        monitoring.write_gauge(metric, 2.0, {"environment": "a"}, at=now + timedelta(seconds=4.9))
    monitoring.write_gauge(metric, 3.0, {"environment": "b"}, at=now + timedelta(seconds=1))
    monitoring.write_gauge(metric, 4.0, {"environment": "a"}, at=now + timedelta(seconds=5))


def test_a_point_written_now_too_soon_is_written_again_after_the_sampling_period(
    monitoring: MonitoringClient,
) -> None:
    """Two writes "now" to one series back to back both land: the second, refused for the
    sampling period, is written again at a new now, at least 5 s after the first point."""
    metric = "custom.googleapis.com/greenlight/resample_probe"
    since = datetime.now(UTC) - timedelta(seconds=1)
    monitoring.write_gauge(metric, 1.0, {"environment": "a"})
    monitoring.write_gauge(metric, 2.0, {"environment": "a"})
    request = {"name": f"projects/{PROJECT}", "filter": f'metric.type="{metric}"',
               "interval": {"start_time": since, "end_time": datetime.now(UTC) + timedelta(seconds=1)}}  # fmt: skip
    (series,) = list(monitoring.client.list_time_series(request=request))
    newest, first = series.points  # newest first
    assert (newest.value.double_value, first.value.double_value) == (2.0, 1.0)
    assert (newest.interval.end_time - first.interval.end_time) >= timedelta(seconds=5)


def test_a_point_older_than_25_hours_is_refused(monitoring: MonitoringClient) -> None:
    """A point more than 25 hours in the past is refused, as the real API refuses it."""
    metric = "custom.googleapis.com/greenlight/age_probe"
    with pytest.raises(InputInvalid, match="25h in the past"):
        monitoring.write_gauge(metric, 1.0, {}, at=datetime.now(UTC) - timedelta(hours=25, seconds=5))
    monitoring.write_gauge(metric, 1.0, {}, at=datetime.now(UTC) - timedelta(hours=24, minutes=59))


def test_write_gauges_writes_many_series_in_one_call(monitoring: MonitoringClient) -> None:
    """write_gauges sends every series in one CreateTimeSeries call, each point at the same time."""
    base = "custom.googleapis.com/greenlight/many_probe"
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=3)
    monitoring.write_gauges([(f"{base}/a", 1.5, {"k": "x"}), (f"{base}/b", 2.5, {"k": "x"})], at=when)
    got = monitoring.read_latest(
        f'metric.type = starts_with("{base}/")', when - timedelta(seconds=1), when + timedelta(seconds=1)
    )
    assert sorted((labels["k"], value, t) for labels, value, t in got) == [("x", 1.5, when), ("x", 2.5, when)]


def test_write_to_a_non_custom_type_is_input_invalid(monitoring: MonitoringClient) -> None:
    """Only custom.googleapis.com/ (and external/workload) types are writable."""
    with pytest.raises(InputInvalid, match="not writable"):
        monitoring.write_gauge(REQUESTS, 1.0, {})


# -- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad_filter", "named"),
    [
        (REQ_FILTER + ' metric.labels.code ~ "5.."', "'~'"),
        (REQ_FILTER + ' metric.labls.code = "500"', "metric.labls.code"),
        (REQ_FILTER + ' metric.labels.code = regex("5..")', "regex"),
        (REQ_FILTER + ' metric.labels.code = "500', "'\"'"),
        (REQ_FILTER + " metric.labels.code =", "a value after '='"),
        (REQ_FILTER + ' (metric.labels.code = "500"', "')'"),
        ('resource.labels.namespace = "sma-staging"', "metric type"),
    ],
)
def test_malformed_filter_is_input_invalid_naming_the_part(
    monitoring: MonitoringClient, traffic: Traffic, bad_filter: str, named: str
) -> None:
    """A filter the API cannot parse raises InputInvalid whose message names the offending part."""
    with pytest.raises(InputInvalid) as caught:
        monitoring.sum_delta(bad_filter, traffic.start, traffic.end, BY_COLOUR)
    assert named in str(caught.value)


def test_unknown_group_by_field_is_input_invalid(monitoring: MonitoringClient, traffic: Traffic) -> None:
    """A group_by field that is not metric.label.X / resource.label.X is InputInvalid naming it."""
    with pytest.raises(InputInvalid, match=r"metric\.colour"):
        monitoring.sum_delta(REQ_FILTER, traffic.start, traffic.end, ["metric.colour"])


def test_unknown_project_is_not_found(metric_client, traffic: Traffic) -> None:  # type: ignore[no-untyped-def]
    """Asking for another project than the lab's raises NotFound naming it."""
    other = MonitoringClient("someone-elses-project", metric_client, timeout_s=2)
    with pytest.raises(NotFound, match="someone-elses-project"):
        other.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)


def test_unavailable_fault_is_transient_and_fast(
    monitoring: MonitoringClient, faults: FaultRegistry, traffic: Traffic
) -> None:
    """An injected UNAVAILABLE becomes TransientError in well under 3 s, carrying the server's retry delay."""
    faults.add(FaultRule("monitoring", "ListTimeSeries", retry_after=4.0))
    started = time.monotonic()
    with pytest.raises(TransientError) as caught:
        monitoring.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)
    assert time.monotonic() - started < 3.0
    assert caught.value.retry_after == 4.0
    assert by_colour(monitoring.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)) == (
        visible_by_colour(traffic)
    )


def test_write_fault_is_transient(monitoring: MonitoringClient, faults: FaultRegistry) -> None:
    """A fault on CreateTimeSeries makes write_gauge raise TransientError."""
    faults.add(FaultRule("monitoring", "CreateTimeSeries"))
    with pytest.raises(TransientError, match="CreateTimeSeries"):
        monitoring.write_gauge("custom.googleapis.com/greenlight/faulted", 1.0, {})


def test_stall_longer_than_the_timeout_is_transient(
    metric_client,
    faults: FaultRegistry,
    traffic: Traffic,  # type: ignore[no-untyped-def]
) -> None:
    """A stalled call times out at the client's deadline and raises TransientError."""
    faults.add(FaultRule("monitoring", "ListTimeSeries", mode="stall", stall_s=5.0))
    impatient = MonitoringClient(PROJECT, metric_client, timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(TransientError):
        impatient.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)
    assert time.monotonic() - started < 2.0


def test_short_stall_then_answers(
    monitoring: MonitoringClient, faults: FaultRegistry, traffic: Traffic
) -> None:
    """A stall shorter than the deadline delays the answer but the answer is right."""
    faults.add(FaultRule("monitoring", "ListTimeSeries", mode="stall", stall_s=0.3))
    started = time.monotonic()
    sums = monitoring.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)
    assert time.monotonic() - started >= 0.3
    assert by_colour(sums) == visible_by_colour(traffic)


def test_unreachable_endpoint_fails_fast(traffic: Traffic) -> None:
    """With nothing listening, a call raises TransientError within seconds, not after 90 s of retries."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dead = MonitoringClient(PROJECT, make_metric_client(f"127.0.0.1:{port}", insecure=True), timeout_s=2.0)
    started = time.monotonic()
    with pytest.raises(TransientError):
        dead.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)
    assert time.monotonic() - started < 3.0


def test_make_metric_client_reads_the_environment(
    monkeypatch: pytest.MonkeyPatch,
    server,
    traffic: Traffic,  # type: ignore[no-untyped-def]
) -> None:
    """With no endpoint argument, GREENLIGHT_MONITORING_ENDPOINT/_INSECURE pick the lab endpoint."""
    monkeypatch.setenv("GREENLIGHT_MONITORING_ENDPOINT", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("GREENLIGHT_MONITORING_INSECURE", "1")
    client = MonitoringClient(PROJECT, timeout_s=2.0)
    assert by_colour(client.sum_delta(REQ_FILTER, traffic.start, traffic.end, BY_COLOUR)) == (
        visible_by_colour(traffic)
    )


def test_naive_datetimes_are_input_invalid(monitoring: MonitoringClient) -> None:
    """A window given in naive datetimes is refused rather than guessed."""
    with pytest.raises(InputInvalid, match="time zone"):
        monitoring.sum_delta(REQ_FILTER, datetime(2026, 11, 26, 8), datetime(2026, 11, 26, 9), BY_COLOUR)
