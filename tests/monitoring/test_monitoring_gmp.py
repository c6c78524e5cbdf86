"""GMP's export rules in the lab's Monitoring, through the real client over real gRPC, on a clock the tests set.

Rules held (see greenlight_lab.monitoring): a point scraped at t is readable once now >= t +
ingestion_delay_s; a series' first scrape is its reset point (not exported; later points start
there and count what came after it); a status code that appears later has its own reset point;
points come newest first; a window without traffic has no series.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from google.api import metric_pb2
from google.cloud import monitoring_v3

from greenlight.clients.monitoring import make_metric_client
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.metrics import DEFAULT_BOUNDS, RequestRecorder
from greenlight_lab.monitoring import MonitoringServer

from .monitoring_support import LATENCY, PROJECT, REQUESTS, pod_labels

T = 1_700_000_000  # a whole second; every test's traffic is placed relative to it
DELAY = 1.0
Aligner = monitoring_v3.Aggregation.Aligner
Reducer = monitoring_v3.Aggregation.Reducer


@dataclass
class Clock:
    now: float = T + 100.0  # within the recorder's retention of every test's traffic

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def recorder(clock: Clock) -> RequestRecorder:
    return RequestRecorder(clock=clock)


@pytest.fixture(scope="module")
def client(recorder: RequestRecorder, clock: Clock) -> Iterator[monitoring_v3.MetricServiceClient]:
    srv = MonitoringServer(
        recorder, FaultRegistry(), project_id=PROJECT, ingestion_delay_s=DELAY, clock=clock
    )
    srv.start()
    yield make_metric_client(f"127.0.0.1:{srv.port}", insecure=True)
    srv.stop()


def at(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def list_series(
    client: monitoring_v3.MetricServiceClient,
    flt: str,
    start: float,
    end: float,
    aggregation: monitoring_v3.Aggregation | None = None,
) -> list[monitoring_v3.TimeSeries]:
    request = monitoring_v3.ListTimeSeriesRequest(
        name=f"projects/{PROJECT}",
        filter=flt,
        interval=monitoring_v3.TimeInterval(start_time=at(start), end_time=at(end)),
        aggregation=aggregation,
    )
    return list(client.list_time_series(request=request, retry=None, timeout=5))


def whole_window(
    start: float, end: float, group_by: list[str], reducer: int = Reducer.REDUCE_SUM
) -> monitoring_v3.Aggregation:
    """The gate's aggregation: one ALIGN_DELTA over the whole window, summed (by default) per group."""
    return monitoring_v3.Aggregation(
        alignment_period={"seconds": int(end - start)},
        per_series_aligner=Aligner.ALIGN_DELTA,
        cross_series_reducer=reducer,
        group_by_fields=group_by,
    )


def ts(t: datetime) -> float:
    return t.timestamp()


def requests_filter(namespace: str) -> str:
    return f'metric.type="{REQUESTS}" resource.labels.namespace="{namespace}"'


def record(
    recorder: RequestRecorder, namespace: str, times: list[float], code: int = 200, latency: float = 0.01
) -> None:
    for t in times:
        recorder.record(pod_labels("blue", 0, namespace), code, latency, at=t)


# -- ingestion delay -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delayed(recorder: RequestRecorder) -> str:
    """Requests at T+0.5 (counted by the reset at T+1), T+1.5, T+2.5, T+3.5: points at T+2, T+3, T+4."""
    record(recorder, "gmp-delay", [T + 0.5, T + 1.5, T + 2.5, T + 3.5])
    return "gmp-delay"


@pytest.mark.parametrize(
    ("now", "points"),
    [
        (T + 2.0, []),
        (T + 2.999, []),
        (T + 3.0, [(T + 2, 1.0)]),
        (T + 3.999, [(T + 2, 1.0)]),
        (T + 4.0, [(T + 3, 2.0), (T + 2, 1.0)]),
        (T + 5.0, [(T + 4, 3.0), (T + 3, 2.0), (T + 2, 1.0)]),
        (T + 60.0, [(T + 4, 3.0), (T + 3, 2.0), (T + 2, 1.0)]),
    ],
)
def test_a_point_is_returned_only_the_ingestion_delay_after_its_scrape(
    client: monitoring_v3.MetricServiceClient,
    clock: Clock,
    delayed: str,
    now: float,
    points: list[tuple[float, float]],
) -> None:
    """The point scraped at t is not in any answer before now = t + 1 s and is in every one from then on, newest first."""
    clock.now = now
    got = list_series(client, requests_filter(delayed), T - 10, T + 10)
    assert [[(ts(p.interval.end_time), p.value.double_value) for p in s.points] for s in got] == (
        [points] if points else []
    )


def test_aggregated_reads_see_only_readable_points(
    client: monitoring_v3.MetricServiceClient, clock: Clock, delayed: str
) -> None:
    """A window ending now counts up to the newest readable scrape: reading sooner than the delay misses the last points."""
    flt = requests_filter(delayed)
    clock.now = T + 4.5  # the scrape at T+4 is not readable yet
    (early,) = list_series(client, flt, T, T + 4, whole_window(T, T + 4, ["metric.label.color"]))
    clock.now = T + 5.0
    (late,) = list_series(client, flt, T, T + 4, whole_window(T, T + 4, ["metric.label.color"]))
    assert [p.value.double_value for p in early.points] == [2.0]
    assert [p.value.double_value for p in late.points] == [3.0]


def test_written_points_are_readable_at_once(client: monitoring_v3.MetricServiceClient, clock: Clock) -> None:
    """A gauge written with CreateTimeSeries reads back at once: the ingestion delay is the scraped series' only."""
    clock.now = T + 50.0
    series = monitoring_v3.TimeSeries(
        metric={"type": "custom.googleapis.com/greenlight/gmp_probe"},
        resource={"type": "global", "labels": {"project_id": PROJECT}},
        points=[{"interval": {"end_time": at(T + 50)}, "value": {"double_value": 4.0}}],
    )
    client.create_time_series(name=f"projects/{PROJECT}", time_series=[series], retry=None, timeout=5)
    (got,) = list_series(client, 'metric.type="custom.googleapis.com/greenlight/gmp_probe"', T + 49, T + 50)
    assert [p.value.double_value for p in got.points] == [4.0]


# -- reset points ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fresh(recorder: RequestRecorder) -> str:
    """A new series: 7 requests before its first scrape (T+1), 5 in the next second, 3 in the one after."""
    record(recorder, "gmp-reset", [T + 0.1 * k for k in range(1, 8)])
    record(recorder, "gmp-reset", [T + 1.2, T + 1.35, T + 1.5, T + 1.65, T + 1.8])
    record(recorder, "gmp-reset", [T + 2.25, T + 2.5, T + 2.75])
    return "gmp-reset"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (T - 10, T + 1, None),  # only the first scrape is in the window: no series
        (T - 10, T + 2, 5.0),  # the 7 counted by the first scrape are never seen
        (T - 10, T + 10, 8.0),
        (T, T + 3, 8.0),
        (T + 1, T + 3, 8.0),
        (T + 2, T + 3, 3.0),
        (T + 2, T + 10, 3.0),
        (T + 3, T + 10, None),  # after the traffic: no series, not zero
    ],
)
def test_a_new_series_counts_from_its_first_scrape_on(
    client: monitoring_v3.MetricServiceClient,
    clock: Clock,
    fresh: str,
    start: float,
    end: float,
    expected: float | None,
) -> None:
    """ALIGN_DELTA over a window counts exactly the requests recorded after the series' first scrape."""
    clock.now = T + 100
    got = list_series(
        client, requests_filter(fresh), start, end, whole_window(start, end, ["metric.label.color"])
    )
    assert [[p.value.double_value for p in s.points] for s in got] == (
        [[expected]] if expected is not None else []
    )


def test_points_start_at_the_first_scrape_and_come_newest_first(
    client: monitoring_v3.MetricServiceClient, clock: Clock, fresh: str
) -> None:
    """Raw points: start_time is the first scrape's time, end times descend, values count from the reset."""
    clock.now = T + 100
    (series,) = list_series(client, requests_filter(fresh), T - 10, T + 10)
    assert [(ts(p.interval.end_time), p.value.double_value) for p in series.points] == [
        (T + 3, 8.0),
        (T + 2, 5.0),
    ]
    assert {ts(p.interval.start_time) for p in series.points} == {T + 1}
    (hist,) = list_series(
        client, f'metric.type="{LATENCY}" resource.labels.namespace="{fresh}"', T - 10, T + 10
    )
    assert [p.value.distribution_value.count for p in hist.points] == [8, 5]
    assert {ts(p.interval.start_time) for p in hist.points} == {T + 1}


@pytest.fixture(scope="module")
def later_errors(recorder: RequestRecorder) -> str:
    """200s every 0.5 s from T+0.5 to T+10; the first 500 at T+3.4, then three more."""
    record(recorder, "gmp-5xx", [T + 0.5 + 0.5 * k for k in range(20)])
    record(recorder, "gmp-5xx", [T + 3.4, T + 4.2, T + 5.5, T + 7.1], code=500, latency=0.3)
    return "gmp-5xx"


def test_a_5xx_counter_that_appears_later_has_its_own_reset_point(
    client: monitoring_v3.MetricServiceClient, clock: Clock, later_errors: str
) -> None:
    """The 500 counter starts at its own first scrape (T+4): its first 500 is not counted, the 200s count from T+1."""
    clock.now = T + 100
    flt = requests_filter(later_errors)
    sums = list_series(client, flt, T, T + 12, whole_window(T, T + 12, ["metric.label.code"]))
    assert {s.metric.labels["code"]: s.points[0].value.double_value for s in sums} == {
        "200": 19.0,
        "500": 3.0,
    }
    starts = {
        s.metric.labels["code"]: {ts(p.interval.start_time) for p in s.points}
        for s in list_series(client, flt, T, T + 12)
    }
    assert starts == {"200": {T + 1}, "500": {T + 4}}
    # a window the 500 counter has only its reset point in: no 500 series at all
    early = list_series(client, flt, T, T + 4, whole_window(T, T + 4, ["metric.label.code"]))
    assert {s.metric.labels["code"] for s in early} == {"200"}


# -- whole histograms, as the gate reads them -----------------------------------------------------

# (colour, pod, latencies served in second T: counted by the pod's reset point, latencies served after it)
HISTOGRAMS = [
    ("blue", 0, [0.5], [0.003, 0.007, 0.02, 0.02, 0.04]),
    ("blue", 1, [0.2, 0.2], [0.06, 0.3, 1.2]),
    ("green", 0, [0.001], [0.09, 0.09, 0.09, 3.0, 12.0]),
]


@pytest.fixture(scope="module")
def histograms(recorder: RequestRecorder) -> str:
    for colour, pod, before, after in HISTOGRAMS:
        served = [(T + 0.2 + 0.1 * k, lat) for k, lat in enumerate(before)]
        served += [(T + 1.5 + k, lat) for k, lat in enumerate(after)]
        for t, latency in served:
            recorder.record(pod_labels(colour, pod, "gmp-hist"), 200, latency, at=t)
    return "gmp-hist"


def expected_dist(colour: str) -> tuple[list[int], int, float]:
    """Bucket counts, count and mean of what a colour's pods served after their reset points."""
    seen = [lat for c, _, _, after in HISTOGRAMS if c == colour for lat in after]
    counts = [0] * (len(DEFAULT_BOUNDS) + 1)
    for latency in seen:
        counts[sum(latency > b for b in DEFAULT_BOUNDS)] += 1
    return counts, len(seen), sum(seen) / len(seen)


def test_align_delta_reduce_sum_over_the_histogram_gives_each_colours_distribution(
    client: monitoring_v3.MetricServiceClient, clock: Clock, histograms: str
) -> None:
    """ALIGN_DELTA + REDUCE_SUM by colour over the latency histogram is one Distribution per colour:
    its bounds, bucket counts, count and mean are those of the requests served after the reset points."""
    clock.now = T + 100
    flt = f'metric.type="{LATENCY}" resource.labels.namespace="{histograms}"'
    got = list_series(client, flt, T - 30, T + 30, whole_window(T - 30, T + 30, ["metric.label.color"]))
    by_colour = {s.metric.labels["color"]: s for s in got}
    assert set(by_colour) == {"blue", "green"}
    for colour, series in by_colour.items():
        assert series.metric_kind == metric_pb2.MetricDescriptor.DELTA
        assert series.value_type == metric_pb2.MetricDescriptor.DISTRIBUTION
        (point,) = series.points
        assert ts(point.interval.start_time) == T - 30 and ts(point.interval.end_time) == T + 30
        dist = point.value.distribution_value
        counts, count, mean = expected_dist(colour)
        assert list(dist.bucket_options.explicit_buckets.bounds) == list(DEFAULT_BOUNDS)
        assert list(dist.bucket_counts) == counts
        assert dist.count == count
        assert dist.mean == pytest.approx(mean)
    assert expected_dist("blue")[:2] == ([1, 1, 2, 1, 1, 0, 1, 0, 1, 0, 0, 0], 8)
    assert expected_dist("green")[:2] == ([0, 0, 0, 0, 3, 0, 0, 0, 0, 1, 0, 1], 5)


def test_percentile_over_the_histogram_ignores_the_reset_points(
    client: monitoring_v3.MetricServiceClient, clock: Clock, histograms: str
) -> None:
    """REDUCE_PERCENTILE_50 over the colours' deltas interpolates within the bucket of the post-reset median."""
    clock.now = T + 100
    flt = f'metric.type="{LATENCY}" resource.labels.namespace="{histograms}" metric.labels.color="green"'
    agg = whole_window(T - 30, T + 30, ["metric.label.color"], Reducer.REDUCE_PERCENTILE_50)
    (series,) = list_series(client, flt, T - 30, T + 30, agg)
    # green after its reset: 0.09 x3, 3.0, 12.0: rank 2.5 of 5 lies in (0.05, 0.1] holding 3
    assert series.points[0].value.double_value == pytest.approx(0.05 + 0.05 * 2.5 / 3)


# -- no traffic, no series -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "end"),
    [(T - 3600, T - 60), (T - 10, T + 1), (T + 30, T + 90), (T + 10_000, T + 10_060)],
)
def test_a_window_without_exported_traffic_has_no_series(
    client: monitoring_v3.MetricServiceClient, clock: Clock, fresh: str, start: float, end: float
) -> None:
    """Before the traffic, over its reset point only, after it stopped, and in the future: no series, not zeros."""
    clock.now = T + 100
    for flt in (requests_filter(fresh), f'metric.type="{LATENCY}" resource.labels.namespace="{fresh}"'):
        assert list_series(client, flt, start, end, whole_window(start, end, ["metric.label.color"])) == []
        assert list_series(client, flt, start, end) == []
