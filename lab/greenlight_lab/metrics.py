"""Per-second request aggregates that the lab's Monitoring stand-in turns into time series.

Lab pods call :meth:`RequestRecorder.record` for every request they serve (thousands a
second), so recording is one lock, one dict lookup and a few integer additions. What is kept
is bounded: for each label set, running totals plus one :class:`SecondBucket` per second that
saw traffic (count per status code, a Prometheus-style latency histogram, sum and sum of
squares) for the last ``retention_s`` seconds; older detail is dropped while the totals keep
counting it, so cumulative values stay right after pruning.

Each label set also remembers when each status code first appeared (``firsts``), and the
detail of the first ``keep_first_s`` seconds after each of those instants is never pruned:
the Monitoring stand-in needs it for every series' reset point (the cumulative values at a
series' first scrape, which Managed Service for Prometheus does not export but subtracts from
every later point), however long ago that was.

The Monitoring stand-in reads consistent copies with :meth:`RequestRecorder.snapshot`.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

#: Prometheus client default buckets (seconds); values above the last fall in the overflow bucket.
DEFAULT_BOUNDS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

LabelKey = tuple[tuple[str, str], ...]


@dataclass
class SecondBucket:
    """Requests seen in one second ``[second, second + 1)`` (or, for a base, many seconds).

    ``buckets`` has ``len(bounds) + 1`` counts: bucket ``i`` holds latencies ``<= bounds[i]``
    and above ``bounds[i - 1]`` (Prometheus ``le`` semantics); the last is the overflow.
    """

    second: int
    codes: dict[int, int]
    buckets: list[int]
    latency_sum: float = 0.0
    latency_sumsq: float = 0.0

    @classmethod
    def empty(cls, second: int, n_bounds: int) -> SecondBucket:
        return cls(second=second, codes={}, buckets=[0] * (n_bounds + 1))

    @property
    def count(self) -> int:
        return sum(self.buckets)

    def add(self, other: SecondBucket) -> None:
        """Fold ``other``'s counts into this one."""
        for code, n in other.codes.items():
            self.codes[code] = self.codes.get(code, 0) + n
        for i, n in enumerate(other.buckets):
            self.buckets[i] += n
        self.latency_sum += other.latency_sum
        self.latency_sumsq += other.latency_sumsq

    def subtract(self, other: SecondBucket) -> None:
        """Take ``other``'s counts out of this one (``other`` must have been added before)."""
        for code, n in other.codes.items():
            left = self.codes.get(code, 0) - n
            if left:
                self.codes[code] = left
            else:
                self.codes.pop(code, None)
        for i, n in enumerate(other.buckets):
            self.buckets[i] -= n
        self.latency_sum -= other.latency_sum
        self.latency_sumsq -= other.latency_sumsq

    def copy(self) -> SecondBucket:
        return SecondBucket(
            self.second, dict(self.codes), list(self.buckets), self.latency_sum, self.latency_sumsq
        )


@dataclass
class SeriesSnapshot:
    """A copy of one label set's history.

    ``base`` sums every second before ``horizon`` (pruned or not asked for); ``seconds`` holds
    the seconds from ``horizon`` on, ascending. Cumulative values are exact at times ``>= horizon``.
    ``firsts`` maps each status code to the time of its first request; ``early`` holds copies of
    the retained seconds before ``horizon`` that lie within ``first_s`` (the snapshot's argument)
    of a code's first second, ascending: enough to total any instant shortly after a code appeared.
    """

    labels: dict[str, str]
    first_at: float
    last_at: float
    horizon: int
    base: SecondBucket
    seconds: list[SecondBucket] = field(default_factory=list)
    firsts: dict[int, float] = field(default_factory=dict)
    early: list[SecondBucket] = field(default_factory=list)


@dataclass
class _Series:
    labels: dict[str, str]
    first_at: float
    last_at: float
    total: SecondBucket
    pruned_before: int = -(2**62)
    order: list[int] = field(default_factory=list)  # the seconds of ``seconds`` not yet pruned
    # every retained second, including the pinned ones (within keep_first_s of a code's first
    # second) that pruning took out of ``order`` but kept
    seconds: dict[int, SecondBucket] = field(default_factory=dict)
    firsts: dict[int, float] = field(default_factory=dict)  # status code -> first request time

    def bucket_for(self, second: int, n_bounds: int) -> SecondBucket:
        bucket = self.seconds.get(second)
        if bucket is None:
            bucket = self.seconds[second] = SecondBucket.empty(second, n_bounds)
            if not self.order or second > self.order[-1]:
                self.order.append(second)
            else:
                bisect.insort(self.order, second)
        return bucket


class RequestRecorder:
    """Thread-safe, bounded record of the requests lab pods served.

    Args:
        bounds: latency histogram bucket upper bounds in seconds, ascending.
        retention_s: seconds of per-second detail kept; older detail only counts in totals.
        keep_first_s: seconds of detail after each status code's first request of a label set
            that are kept past the retention window (the Monitoring stand-in's reset points need
            them; it requires at least its scrape interval plus one second).
        clock: wall clock (seconds since the epoch), injectable for tests.
    """

    def __init__(
        self,
        bounds: tuple[float, ...] = DEFAULT_BOUNDS,
        retention_s: float = 7200.0,
        clock: Callable[[], float] = time.time,
        keep_first_s: float = 60.0,
    ) -> None:
        if not bounds or list(bounds) != sorted(set(bounds)):
            raise ValueError(f"bucket bounds must be strictly ascending and non-empty, not {bounds!r}")
        if not keep_first_s >= 0:
            raise ValueError(f"keep_first_s must be >= 0, not {keep_first_s!r}")
        self.bounds = tuple(float(b) for b in bounds)
        self.retention_s = retention_s
        self.keep_first_s = float(keep_first_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._series: dict[LabelKey, _Series] = {}
        self._next_prune = 0.0

    def record(self, labels: Mapping[str, str], code: int, latency_s: float, at: float | None = None) -> None:
        """Count one request with status ``code`` that took ``latency_s`` seconds, served at ``at``.

        Requests older than the retention window (or pruned already) only count in the totals.
        """
        now = self._clock()
        when = now if at is None else at
        key = tuple(sorted(labels.items()))
        second = int(when // 1)
        index = bisect.bisect_left(self.bounds, latency_s)
        n = len(self.bounds)
        with self._lock:
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series(dict(labels), when, when, SecondBucket.empty(0, n))
            series.first_at = min(series.first_at, when)
            series.last_at = max(series.last_at, when)
            first = series.firsts.get(code)
            if first is None or when < first:
                series.firsts[code] = when
            targets = [series.total]
            if second >= series.pruned_before:
                targets.append(series.bucket_for(second, n))
            for bucket in targets:
                bucket.codes[code] = bucket.codes.get(code, 0) + 1
                bucket.buckets[index] += 1
                bucket.latency_sum += latency_s
                bucket.latency_sumsq += latency_s * latency_s
            if now >= self._next_prune:
                self._prune_locked(now)

    def prune(self) -> None:
        """Drop per-second detail older than the retention window (totals keep counting it)."""
        with self._lock:
            self._prune_locked(self._clock())

    def _prune_locked(self, now: float) -> None:
        self._next_prune = now + 10.0
        cutoff = int((now - self.retention_s) // 1)
        keep = math.ceil(self.keep_first_s)
        for series in self._series.values():
            cut = bisect.bisect_left(series.order, cutoff)
            if cut:
                pins = [int(f // 1) for f in series.firsts.values()]
                for second in series.order[:cut]:
                    if not any(0 <= second - p < keep for p in pins):
                        del series.seconds[second]
                del series.order[:cut]
            series.pruned_before = max(series.pruned_before, cutoff)

    def snapshot(self, since: float | None = None, first_s: float = 0.0) -> list[SeriesSnapshot]:
        """Copies of every series, with per-second detail from ``since`` (default: all retained).

        With ``first_s``, each also carries (``early``) the retained seconds before its horizon
        within ``first_s`` of a status code's first second. Cost is proportional to the seconds
        copied, so callers pass the oldest time they need.
        """
        want = -(2**62) if since is None else int(since // 1)
        span = math.ceil(first_s)
        with self._lock:
            all_series = list(self._series.values())
        out = []
        for series in all_series:  # one series per lock hold: recording never waits long
            with self._lock:
                horizon = max(want, series.pruned_before)
                cut = bisect.bisect_left(series.order, horizon)
                tail = [series.seconds[s].copy() for s in series.order[cut:]]
                wanted = {
                    s
                    for f in series.firsts.values()
                    for s in range(int(f // 1), min(int(f // 1) + span, horizon))
                }
                early = [series.seconds[s].copy() for s in sorted(wanted) if s in series.seconds]
                base = series.total.copy()
                labels, first_at, last_at = dict(series.labels), series.first_at, series.last_at
                firsts = dict(series.firsts)
            for bucket in tail:
                base.subtract(bucket)
            out.append(SeriesSnapshot(labels, first_at, last_at, horizon, base, tail, firsts, early))
        return out

    def clear(self) -> None:
        """Forget everything recorded (snapshots already taken are unaffected)."""
        with self._lock:
            self._series.clear()
