"""Aggregation math, the scrape model and the request recorder, by tables of cases."""

from __future__ import annotations

import math
import threading
from typing import Any

import pytest

from greenlight_lab.faults import FaultRegistry
from greenlight_lab.metrics import DEFAULT_BOUNDS, RequestRecorder
from greenlight_lab.monitoring import (
    CUMULATIVE,
    DELTA,
    DISTRIBUTION,
    DOUBLE,
    GAUGE,
    INT64,
    Aggregation,
    Aligner,
    ApiError,
    Dist,
    Header,
    MonitoringServer,
    Point,
    Reducer,
    ScrapeModel,
    Series,
    align,
    dist_percentile,
    first_scrape,
    parse_filter,
    parse_group_by,
    period_ends,
    prometheus_headers,
    prometheus_points,
    reduce_series,
    value_percentile,
)

BOUNDS = (0.1, 0.2, 0.5)
MODEL = ScrapeModel("lab-project", "lab", interval_s=1.0, stale_after_s=0.0)


def counter(labels: dict[str, str], points: list[tuple[float, float, float]]) -> Series:
    header = Header("m/counter", labels, "prometheus_target", {"namespace": "ns"}, CUMULATIVE, DOUBLE)
    return Series(header, [Point(s, e, v) for s, e, v in points])


def dist(*counts: int) -> Dist:
    return Dist(BOUNDS, counts)


@pytest.mark.parametrize(
    ("d", "q", "expected"),
    [
        (dist(10, 0, 0, 0), 0.5, 0.05),  # first bucket starts at 0
        (dist(0, 10, 0, 0), 0.5, 0.15),
        (dist(0, 10, 0, 0), 1.0, 0.2),
        (dist(5, 5, 0, 0), 0.5, 0.1),
        (dist(5, 5, 0, 0), 0.75, 0.15),
        (dist(0, 0, 10, 0), 0.95, 0.2 + 0.3 * 0.95),
        (dist(0, 0, 0, 4), 0.5, 0.5),  # overflow answers the last finite bound
        (dist(90, 0, 0, 10), 0.95, 0.5),
        (dist(0, 0, 0, 0), 0.5, None),
    ],
)
def test_dist_percentile_interpolates_within_the_bucket(d: Dist, q: float, expected: float | None) -> None:
    """Percentiles of a bucketed distribution follow Prometheus' histogram_quantile."""
    got = dist_percentile(d, q)
    assert got == pytest.approx(expected) if expected is not None else got is None


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.5, None), ([3.0], 0.95, 3.0), ([1.0, 2.0, 3.0], 0.5, 2.0), ([0.0, 10.0], 0.95, 9.5)],
)
def test_value_percentile_interpolates_linearly(
    values: list[float], q: float, expected: float | None
) -> None:
    """Percentiles across plain values interpolate between neighbours."""
    assert value_percentile(values, q) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("start", "end", "period", "expected"),
    [
        (0, 60, 60, [60]),
        (0, 60, 20, [60, 40, 20]),
        (0, 60, 25, [60, 35, 10]),  # the oldest period reaches before the start
        (10, 10.5, 1, [10.5]),
    ],
)
def test_period_ends_are_anchored_at_the_end(
    start: float, end: float, period: float, expected: list[float]
) -> None:
    """Alignment periods end at end_time and step back by the period, newest first."""
    assert period_ends(start, end, period) == expected


def test_too_many_periods_is_refused() -> None:
    """An interval that would need more than the allowed number of periods is INVALID_ARGUMENT."""
    with pytest.raises(ApiError, match="alignment periods"):
        period_ends(0, 10_000_000, 1)


@pytest.mark.parametrize(
    ("points", "ends", "period", "expected"),
    [
        # (start, end, cumulative) points; one period over everything
        ([(0, 1, 5), (0, 2, 8), (0, 3, 12)], [3], 3, [12.0]),
        # a prior point before the period is subtracted
        ([(0, 1, 5), (0, 2, 8), (0, 3, 12)], [3], 1, [4.0]),
        # two periods
        ([(0, 1, 5), (0, 2, 8), (0, 3, 12), (0, 4, 20)], [2, 4], 2, [8.0, 12.0]),
        # a reset (new start time) counts from zero again
        ([(0, 1, 5), (0, 2, 8), (2, 3, 3)], [3], 2, [6.0]),
        # a period with no points yields no point
        ([(0, 1, 5)], [1, 3], 1, [5.0]),
    ],
)
def test_align_delta_on_a_counter(
    points: list[tuple[float, float, float]], ends: list[float], period: float, expected: list[float]
) -> None:
    """ALIGN_DELTA on a cumulative counter is what it gained in each period (resets handled)."""
    out = align(counter({}, points), ends, period, Aligner.ALIGN_DELTA)
    assert [p.value for p in out.points] == expected
    assert out.header.kind == DELTA
    assert all(p.start == p.end - period for p in out.points)


def test_align_rate_divides_the_delta_by_the_period() -> None:
    """ALIGN_RATE is the period's delta per second, as a GAUGE DOUBLE."""
    out = align(counter({}, [(0, 1, 0), (0, 11, 50)]), [11], 10, Aligner.ALIGN_RATE)
    assert [p.value for p in out.points] == [5.0]
    assert (out.header.kind, out.header.value_type) == (GAUGE, DOUBLE)


def test_align_delta_on_a_distribution_subtracts_buckets() -> None:
    """ALIGN_DELTA on a cumulative histogram keeps only the period's observations."""
    header = Header("m/histogram", {}, "prometheus_target", {}, CUMULATIVE, DISTRIBUTION)
    series = Series(header, [Point(0, 1, dist(5, 0, 0, 0)), Point(0, 2, dist(5, 3, 1, 0))])
    out = align(series, [2], 1, Aligner.ALIGN_DELTA)
    assert out.points[0].value == dist(0, 3, 1, 0)
    p95 = align(series, [2], 1, Aligner.ALIGN_PERCENTILE_95)
    assert p95.points[0].value == pytest.approx(dist_percentile(dist(0, 3, 1, 0), 0.95))


@pytest.mark.parametrize(
    ("kind", "value_type", "aligner"),
    [
        (CUMULATIVE, DOUBLE, Aligner.ALIGN_SUM),
        (CUMULATIVE, DOUBLE, Aligner.ALIGN_MEAN),
        (GAUGE, DOUBLE, Aligner.ALIGN_DELTA),
        (GAUGE, DOUBLE, Aligner.ALIGN_RATE),
        (CUMULATIVE, DOUBLE, Aligner.ALIGN_PERCENTILE_95),
        (CUMULATIVE, DISTRIBUTION, Aligner.ALIGN_RATE),
        (GAUGE, DOUBLE, Aligner.ALIGN_INTERPOLATE),
    ],
)
def test_aligners_the_api_refuses_are_invalid(kind: int, value_type: int, aligner: int) -> None:
    """Aligners that do not apply to a metric's kind and type are INVALID_ARGUMENT naming the aligner."""
    header = Header("m", {}, "global", {}, kind, value_type)
    with pytest.raises(ApiError, match=Aligner(aligner).name):
        align(Series(header, [Point(0, 1, 1.0)]), [1], 1, aligner)


@pytest.mark.parametrize(
    ("aligner", "expected", "value_type"),
    [
        (Aligner.ALIGN_MEAN, 2.0, DOUBLE),
        (Aligner.ALIGN_MAX, 3.0, DOUBLE),
        (Aligner.ALIGN_MIN, 1.0, DOUBLE),
        (Aligner.ALIGN_SUM, 6.0, DOUBLE),
        (Aligner.ALIGN_COUNT, 3, INT64),
        (Aligner.ALIGN_NEXT_OLDER, 2.0, DOUBLE),
    ],
)
def test_gauge_aligners(aligner: int, expected: float, value_type: int) -> None:
    """Gauge aligners summarise the points inside each period."""
    header = Header("custom.googleapis.com/g", {}, "global", {}, GAUGE, DOUBLE)
    series = Series(header, [Point(t, t, v) for t, v in ((1, 1.0), (2, 3.0), (3, 2.0))])
    out = align(series, [3], 3, aligner)
    assert out.points[0].value == expected
    assert out.header.value_type == value_type


def aligned(color: str, pod: str, value: float, end: float = 10) -> Series:
    header = Header(
        "m/counter", {"color": color, "pod": pod}, "prometheus_target", {"namespace": "ns"}, DELTA, DOUBLE
    )
    return Series(header, [Point(end - 10, end, value)])


@pytest.mark.parametrize(
    ("reducer", "group_by", "expected"),
    [
        (
            Reducer.REDUCE_SUM,
            ["metric.label.color"],
            {(("color", "blue"),): 30.0, (("color", "green"),): 5.0},
        ),
        (Reducer.REDUCE_SUM, [], {(): 35.0}),
        (
            Reducer.REDUCE_MEAN,
            ["metric.labels.color"],
            {(("color", "blue"),): 15.0, (("color", "green"),): 5.0},
        ),
        (Reducer.REDUCE_COUNT, ["metric.label.color"], {(("color", "blue"),): 2, (("color", "green"),): 1}),
        (Reducer.REDUCE_MAX, [], {(): 20.0}),
        (Reducer.REDUCE_SUM, ["resource.label.namespace"], {(("namespace", "ns"),): 35.0}),
    ],
)
def test_reducers_combine_series_per_group(
    reducer: int, group_by: list[str], expected: dict[tuple[tuple[str, str], ...], float]
) -> None:
    """Cross-series reducers combine the aligned points of each group of label values."""
    series = [aligned("blue", "b0", 10.0), aligned("blue", "b1", 20.0), aligned("green", "g0", 5.0)]
    out = reduce_series(series, reducer, group_by)
    got = {
        tuple(sorted({**s.header.metric_labels, **s.header.resource_labels}.items())): s.points[0].value
        for s in out
    }
    assert got == expected


def test_reduce_keeps_only_grouped_labels() -> None:
    """A reduced series carries only the group_by labels, metric and resource apart."""
    (out,) = reduce_series(
        [aligned("blue", "b0", 1.0)], Reducer.REDUCE_SUM, ["metric.label.color", "resource.label.namespace"]
    )
    assert (out.header.metric_labels, out.header.resource_labels) == ({"color": "blue"}, {"namespace": "ns"})


def test_percentile_reducer_merges_distributions() -> None:
    """REDUCE_PERCENTILE_95 over distributions merges their buckets before taking the percentile."""
    header = Header("m/histogram", {"pod": "a"}, "prometheus_target", {}, DELTA, DISTRIBUTION)
    a = Series(header, [Point(0, 10, dist(10, 0, 0, 0))])
    b = Series(
        Header("m/histogram", {"pod": "b"}, "prometheus_target", {}, DELTA, DISTRIBUTION),
        [Point(0, 10, dist(0, 0, 10, 0))],
    )
    (out,) = reduce_series([a, b], Reducer.REDUCE_PERCENTILE_95, [])
    assert out.points[0].value == pytest.approx(dist_percentile(dist(10, 0, 10, 0), 0.95))
    assert (out.header.kind, out.header.value_type) == (GAUGE, DOUBLE)


@pytest.mark.parametrize("field", ["metric.colour", "color", "resource.labels", "metadata.system_labels.x"])
def test_unknown_group_by_fields_are_invalid(field: str) -> None:
    """group_by fields other than metric/resource label references are INVALID_ARGUMENT naming them."""
    with pytest.raises(ApiError, match=field):
        parse_group_by([field])


# -- the scrape model and the recorder --------------------------------------------------------------


def recorder_with(requests: list[tuple[float, int, float]], now: float = 1000.0) -> RequestRecorder:
    rec = RequestRecorder(clock=lambda: now)
    for at, code, latency in requests:
        rec.record({"namespace": "ns", "pod": "p"}, code, latency, at=at)
    return rec


def test_points_run_from_the_second_scrape_after_traffic_to_the_scrape_after_it_stopped() -> None:
    """Requests in seconds 100..102: the scrape at 101 is the reset point (not exported); points at
    102 and 103 count what came after it, and start at 101; none before, none after."""
    rec = recorder_with([(100.2, 200, 0.01), (101.5, 200, 0.01), (102.9, 200, 0.01)])
    (snap,) = rec.snapshot()
    points = prometheus_points(snap, 200, rec.bounds, 0, 200, now=1000, model=MODEL)
    assert [(p.end, p.value) for p in points] == [(102.0, 1.0), (103.0, 2.0)]
    assert {p.start for p in points} == {101.0}


def test_a_series_scraped_once_has_no_points() -> None:
    """A label set whose every request falls before its first scrape never shows (its only sample is the reset)."""
    rec = recorder_with([(100.2, 200, 0.01), (100.7, 200, 0.02)])
    (snap,) = rec.snapshot()
    assert prometheus_points(snap, 200, rec.bounds, 0, 200, now=1000, model=MODEL) == []
    assert prometheus_points(snap, None, rec.bounds, 0, 200, now=1000, model=MODEL) == []


def test_no_points_in_the_future() -> None:
    """A request in the current second is not visible until the scrape after it."""
    rec = recorder_with([(999.4, 200, 0.01)], now=999.5)
    (snap,) = rec.snapshot()
    assert prometheus_points(snap, 200, rec.bounds, 990, 1010, now=999.5, model=MODEL) == []


# requests at 100.5 .. 103.5: scrapes at 101 (the reset), 102, 103, 104
STEADY = [(100.5 + k, 200, 0.01) for k in range(4)]


@pytest.mark.parametrize(
    ("delay", "now", "ends"),
    [
        (0.0, 101.99, []),
        (0.0, 102.0, [102.0]),
        (1.0, 102.5, []),
        (1.0, 102.999, []),
        (1.0, 103.0, [102.0]),
        (1.0, 104.999, [102.0, 103.0]),
        (1.0, 105.0, [102.0, 103.0, 104.0]),
        (2.5, 105.499, [102.0]),
        (2.5, 105.5, [102.0, 103.0]),
        (2.5, 1000.0, [102.0, 103.0, 104.0]),
    ],
)
def test_a_point_is_readable_only_the_ingestion_delay_after_its_scrape(
    delay: float, now: float, ends: list[float]
) -> None:
    """A point scraped at t is returned once now >= t + ingestion_delay_s, not a moment before."""
    rec = recorder_with(STEADY)
    (snap,) = rec.snapshot()
    model = ScrapeModel("p", "l", interval_s=1.0, stale_after_s=0.0, ingestion_delay_s=delay)
    for code in (200, None):
        points = prometheus_points(snap, code, rec.bounds, 0, 2000, now=now, model=model)
        assert [p.end for p in points] == ends


@pytest.mark.parametrize(
    ("interval", "first_at", "reset"),
    [
        (1.0, 100.0, 101.0),
        (1.0, 100.999, 101.0),
        (2.5, 100.2, 102.5),  # the second ending at 101 is first seen by the scrape at 102.5
        (2.5, 101.7, 102.5),
        (2.5, 102.7, 105.0),
        (5.0, 104.5, 105.0),
        (5.0, 105.0, 110.0),
    ],
)
def test_the_reset_point_is_the_first_scrape_after_the_first_request(
    interval: float, first_at: float, reset: float
) -> None:
    """With any scrape interval, a series starts at its first scrape; its points come one interval later."""
    rec = recorder_with([(first_at, 200, 0.01), (first_at + 3 * interval, 200, 0.01)])
    (snap,) = rec.snapshot()
    model = ScrapeModel("p", "l", interval_s=interval, stale_after_s=0.0, ingestion_delay_s=0.0)
    assert first_scrape(first_at, model) == reset
    points = prometheus_points(snap, 200, rec.bounds, 0, 2000, now=5000, model=model)
    assert points and points[0].end == pytest.approx(reset + interval)
    assert {p.start for p in points} == {reset}
    assert points[-1].value == 1.0  # the first request is the reset's; only the later one counts


def test_a_status_code_that_appears_later_has_its_own_reset_point() -> None:
    """A label set's first 500 (at 103.2) starts a counter series reset at 104: that 500 is never seen."""
    rec = recorder_with(
        [(100.5, 200, 0.01), (101.5, 200, 0.01), (103.2, 500, 0.3), (104.5, 500, 0.3), (105.5, 500, 0.3)]
    )
    (snap,) = rec.snapshot()
    ok = prometheus_points(snap, 200, rec.bounds, 0, 200, now=1000, model=MODEL)
    errors = prometheus_points(snap, 500, rec.bounds, 0, 200, now=1000, model=MODEL)
    assert [(p.start, p.end, p.value) for p in ok] == [
        (101.0, t, 1.0) for t in (102.0, 103.0, 104.0, 105.0, 106.0)
    ]
    assert [(p.start, p.end, p.value) for p in errors] == [(104.0, 105.0, 1.0), (104.0, 106.0, 2.0)]


def test_the_histogram_counts_from_its_reset_point() -> None:
    """The latency histogram subtracts its first scrape: buckets, count, sum and sum of squares."""
    rec = RequestRecorder(bounds=BOUNDS, clock=lambda: 1000.0)
    for at, latency in ((100.1, 0.05), (100.2, 0.3), (101.4, 0.15), (101.6, 0.15), (102.3, 0.6)):
        rec.record({"pod": "p"}, 200, latency, at=at)
    (snap,) = rec.snapshot()
    points = prometheus_points(snap, None, rec.bounds, 0, 200, now=1000, model=MODEL)
    assert [p.end for p in points] == [102.0, 103.0]
    assert {p.start for p in points} == {101.0}
    newest = points[-1].value
    assert isinstance(newest, Dist)
    assert newest.counts == (0, 2, 0, 1)
    assert newest.total == pytest.approx(0.9)
    assert newest.sumsq == pytest.approx(0.15**2 * 2 + 0.6**2)
    assert newest.mean == pytest.approx(0.3)


def test_stale_after_keeps_scraping_an_idle_series() -> None:
    """With stale_after_s, an idle label set keeps its (unchanged) cumulative points for a while."""
    rec = recorder_with([(100.5, 200, 0.01), (101.5, 200, 0.01)])
    (snap,) = rec.snapshot()
    model = ScrapeModel("p", "l", interval_s=1.0, stale_after_s=3.0)
    points = prometheus_points(snap, 200, rec.bounds, 0, 200, now=1000, model=model)
    assert [(p.end, p.value) for p in points] == [(t, 1.0) for t in (102.0, 103.0, 104.0, 105.0)]


def test_window_points_include_the_prior_scrape() -> None:
    """Points asked for (lo, hi] come with the scrape at or before lo, so deltas can subtract it."""
    rec = recorder_with([(t, 200, 0.01) for t in range(100, 110)])
    (snap,) = rec.snapshot(since=104 - 1 - 1, first_s=MODEL.interval_s + 1)
    points = prometheus_points(snap, 200, rec.bounds, 104.5, 106, now=1000, model=MODEL)
    # the reset at 101 counted the request of second 100
    assert [(p.end, p.value) for p in points] == [(104.0, 3.0), (105.0, 4.0), (106.0, 5.0)]
    assert {p.start for p in points} == {101.0}


def test_reset_points_stay_exact_far_behind_the_window_and_past_retention() -> None:
    """A window long after a series began still counts from its reset point: the recorder keeps the
    seconds after each code's first request past its retention, and snapshots carry them."""
    now = [0.0]
    rec = RequestRecorder(retention_s=100, clock=lambda: now[0])
    for t in range(100, 1000):
        now[0] = t + 0.9
        rec.record({"pod": "p"}, 200, 0.01, at=t + 0.5)
        if t >= 600:
            rec.record({"pod": "p"}, 500, 0.01, at=t + 0.25)
    now[0] = 1100.0
    rec.prune()  # everything before 1000 goes, but the first keep_first_s (60 s) after each code appeared
    (snap,) = rec.snapshot(since=990, first_s=MODEL.interval_s + 1)
    assert snap.horizon == 1000 and snap.seconds == []
    assert [b.second for b in snap.early] == [100, 101, 600, 601]
    assert snap.firsts == {200: 100.5, 500: 600.25}
    ok = prometheus_points(snap, 200, rec.bounds, 995, 1000, now=1100, model=MODEL)
    errors = prometheus_points(snap, 500, rec.bounds, 995, 1000, now=1100, model=MODEL)
    # 900 requests of 200 (seconds 100..999), the reset at 101 counted one; 400 of 500, reset at 601
    assert [(p.start, p.end, p.value) for p in ok] == [(101.0, 1000.0, 899.0)]
    assert [(p.start, p.end, p.value) for p in errors] == [(601.0, 1000.0, 399.0)]
    (wide,) = rec.snapshot(first_s=600)
    kept = {b.second for b in wide.early}
    assert kept == {*range(100, 160), *range(600, 660)}


@pytest.mark.parametrize(
    ("latency", "bucket"),
    [(0.0, 0), (0.005, 0), (0.0051, 1), (0.1, 4), (0.2, 5), (10.0, 10), (10.5, 11)],
)
def test_recorder_buckets_follow_prometheus_le(latency: float, bucket: int) -> None:
    """A latency falls in the first bucket whose bound is >= it; above the last bound, the overflow."""
    rec = recorder_with([(100.0, 200, latency)])
    (snap,) = rec.snapshot()
    counts = [0] * (len(DEFAULT_BOUNDS) + 1)
    counts[bucket] = 1
    assert snap.seconds[0].buckets == counts


def test_snapshot_since_folds_older_seconds_into_the_base() -> None:
    """snapshot(since) copies only the seconds from ``since``; earlier ones are summed in the base."""
    rec = recorder_with([(100.0, 200, 0.01), (101.0, 500, 0.01), (105.0, 200, 0.01)])
    (snap,) = rec.snapshot(since=104.0)
    assert [b.second for b in snap.seconds] == [105]
    assert snap.base.codes == {200: 1, 500: 1}
    assert snap.horizon == 104


def test_pruning_drops_detail_but_keeps_totals() -> None:
    """Past the retention window per-second detail goes, cumulative totals stay right."""
    now = [1000.0]
    rec = RequestRecorder(retention_s=100, clock=lambda: now[0])
    for t in (800.0, 950.0, 990.0):
        rec.record({"pod": "p"}, 200, 0.01, at=t)
    now[0] = 1060.0
    rec.prune()
    (snap,) = rec.snapshot()
    assert [b.second for b in snap.seconds] == [990]
    assert snap.base.codes == {200: 2}
    assert snap.horizon == 960


def test_recorder_is_thread_safe() -> None:
    """Eight threads recording at once lose no request."""
    rec = RequestRecorder()

    def work(i: int) -> None:
        for n in range(2000):
            rec.record({"pod": f"p{i % 2}"}, 200 if n % 10 else 500, 0.01)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    snaps = rec.snapshot()
    assert sum(b.count for s in snaps for b in [s.base, *s.seconds]) == 16_000
    assert sum(b.codes.get(500, 0) for s in snaps for b in [s.base, *s.seconds]) == 1_600


def test_recording_is_cheap() -> None:
    """Recording costs well under 50 µs per request (about 8 here), so pods can call it thousands of times a second."""
    import time

    rec = RequestRecorder()
    labels = {
        "namespace": "ns",
        "pod": "p",
        "container": "c",
        "top_level_controller_name": "d",
        "color": "blue",
        "job": "j",
        "instance": "p:8080",
        "cluster": "lab-primary",
    }
    started = time.perf_counter()
    for n in range(20_000):
        rec.record(labels, 200, 0.003 * (n % 50))
    assert (time.perf_counter() - started) / 20_000 < 50e-6


@pytest.mark.parametrize("status_label", ["code", "status"])
def test_status_label_name_is_configurable(status_label: str) -> None:
    """The counter carries the status under the configured label name, as promhttp or others export it."""
    rec = recorder_with([(100.0, 503, 0.01)])
    (snap,) = rec.snapshot()
    model = ScrapeModel("p", "l", interval_s=1.0, stale_after_s=0.0, status_label=status_label)
    counters = [h for h, code in prometheus_headers(snap, model) if code is not None]
    assert [h.metric_labels[status_label] for h in counters] == ["503"]


# -- the whole query path: aligners over reset series, with and without the boundaries shortcut ----


def steady_traffic() -> list[tuple[float, int, float]]:
    """One pod: a 200 every 0.25 s over 100..160 s, a 500 every 1.1 s from 130.3 s (its own reset)."""
    out = [(100.1 + 0.25 * k, 200, 0.004 + 0.03 * (k % 7)) for k in range(240)]
    out += [(130.3 + 1.1 * k, 500, 0.2 + 0.1 * (k % 3)) for k in range(27)]
    return out


def lab_server(
    requests: list[tuple[float, int, float]], now: float, interval: float = 1.0, delay: float = 1.0
) -> MonitoringServer:
    rec = RequestRecorder(clock=lambda: now)
    for at, code, latency in requests:
        rec.record({"namespace": "ns", "pod": "p", "color": "blue"}, code, latency, at=at)
    return MonitoringServer(
        rec, FaultRegistry(), scrape_interval_s=interval, ingestion_delay_s=delay, clock=lambda: now
    )


REQUESTS_NODE = parse_filter('metric.type = "prometheus.googleapis.com/http_requests_total/counter"')
LATENCY_NODE = parse_filter(
    'metric.type = "prometheus.googleapis.com/http_request_duration_seconds/histogram"'
)


@pytest.mark.parametrize("interval", [1.0, 2.5])
@pytest.mark.parametrize(
    ("start", "end", "period", "aligner", "node"),
    [
        (90, 170, 80, Aligner.ALIGN_DELTA, REQUESTS_NODE),
        (90, 170, 10, Aligner.ALIGN_DELTA, REQUESTS_NODE),
        (100.5, 140.7, 3.3, Aligner.ALIGN_DELTA, REQUESTS_NODE),
        (125, 135, 1, Aligner.ALIGN_DELTA, REQUESTS_NODE),
        (90, 170, 7, Aligner.ALIGN_RATE, REQUESTS_NODE),
        (120, 160, 40, Aligner.ALIGN_NEXT_OLDER, REQUESTS_NODE),
        (90, 170, 80, Aligner.ALIGN_DELTA, LATENCY_NODE),
        (100, 150, 5, Aligner.ALIGN_DELTA, LATENCY_NODE),
        (90, 170, 80, Aligner.ALIGN_PERCENTILE_95, LATENCY_NODE),
        (101, 133, 4, Aligner.ALIGN_PERCENTILE_50, LATENCY_NODE),
    ],
)
def test_aligned_queries_match_aligning_every_point(
    interval: float, start: float, end: float, period: float, aligner: int, node: Any
) -> None:
    """Building only the points at period boundaries gives what aligning every exported point gives."""
    srv = lab_server(steady_traffic(), now=200.0, interval=interval)
    got = srv.query(node, start, end, Aggregation(period, aligner))
    ends = period_ends(start, end, period)
    full = srv._raw_series(node, ends[-1] - period, end)  # every point, no boundaries
    want = [a for a in (align(s, ends, period, aligner) for s in full) if a.points]
    assert [(s.header, s.points) for s in got] == [(s.header, s.points) for s in want]
    assert got


@pytest.mark.parametrize(
    ("start", "end", "now", "code"),
    [
        (90, 170, 300, 200),  # everything but the first second's
        (
            90,
            170,
            300,
            500,
        ),  # everything but the first 500 (130.3), counted by the 500 counter's reset at 131
        (90, 131, 300, 500),  # the 500 series has no point yet: no series
        (90, 132, 300, 500),
        (101, 102, 300, 200),  # the first exported point alone: what came after the reset
        (100, 101, 300, 200),  # only the reset point: no series
        (120, 140, 300, 200),
        (120.5, 140.5, 300, 200),
        (120, 140, 140.9, 200),  # the scrape at 140 is not readable yet: the delta ends at 139
        (120, 140, 141.0, 200),
    ],
)
def test_align_delta_counts_the_requests_after_each_series_reset(
    start: float, end: float, now: float, code: int
) -> None:
    """ALIGN_DELTA over one period counts the requests served after the series' first scrape, up to
    the newest readable scrape in the period."""
    traffic = steady_traffic()
    srv = lab_server(traffic, now=now)
    node = parse_filter(
        f'metric.type = "prometheus.googleapis.com/http_requests_total/counter" metric.labels.code = "{code}"'
    )
    got = srv.query(node, start, end, Aggregation(end - start, Aligner.ALIGN_DELTA))
    reset = math.floor(min(at for at, c, _ in traffic if c == code)) + 1
    last = min(math.floor(end), math.floor(now - 1.0))
    truth = [at for at, c, _ in traffic if c == code and max(reset, math.floor(start)) <= at < last]
    if last <= reset:
        assert got == []
    else:
        (series,) = got
        assert [p.value for p in series.points] == [float(len(truth))]
