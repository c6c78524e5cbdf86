"""Statistics for comparing two colours' windows: histograms as Monitoring returns them, and an
exact test that a small sample cannot fool. Pure.

Cloud Monitoring returns a latency metric as a bucketed distribution (Managed Service for
Prometheus: the ``le`` buckets of the app's histogram), not as samples, so every figure here is
computed from bucket counts:

- :meth:`Histogram.quantile` interpolates inside the bucket that holds the rank, as
  Prometheus' ``histogram_quantile`` (and Monitoring's percentile reducers) do;
- :func:`fisher_greater` is Fisher's exact test, one-sided: is the share of "bad" requests
  (5xx answers, or answers slower than a threshold) larger in the candidate than in the
  baseline? Exact for any sample size, so a dozen requests give a large p-value (no evidence)
  instead of a false alarm, and a handful of errors against none in a few hundred requests is
  evidence;
- :func:`slower_share` picks the threshold for a latency percentile: the lower edge of the bucket
  that holds the pooled windows' percentile, chosen from both colours together so that it does
  not favour either;
- :func:`mann_whitney_greater` is Kayenta's Mann-Whitney U test on the buckets (ties within a
  bucket), which sees a shift of the whole distribution that a tail test needs more data for;
  :func:`latency_p_value` takes the stronger of the two, paying for the second look.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Histogram:
    """Request latencies in buckets: ``counts[i]`` lie in ``(bounds[i-1], bounds[i]]`` (ms).

    ``counts`` has ``len(bounds) + 1`` entries; the last is the overflow above ``bounds[-1]``,
    the first starts at 0. ``mean`` (ms) is kept when Monitoring sent it.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    mean: float | None = None

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError(
                f"a histogram with {len(self.bounds)} bounds needs {len(self.bounds) + 1} counts"
            )
        if list(self.bounds) != sorted(set(self.bounds)):
            raise ValueError("histogram bounds must be strictly ascending")

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float | None:
        """The ``q`` (0..1) quantile in ms, interpolated within its bucket; None when empty.

        As ``histogram_quantile``: the first bucket starts at 0, a rank in the overflow bucket
        answers the last finite bound.
        """
        total = self.count
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                if i == len(self.bounds):
                    return self.bounds[-1]
                upper = self.bounds[i]
                lower = self.bounds[i - 1] if i > 0 else min(0.0, upper)
                return lower + (upper - lower) * (rank - seen) / n
            seen += n
        return self.bounds[-1]

    def bucket_of(self, q: float) -> int:
        """The index of the bucket that holds the ``q`` quantile (0 when empty)."""
        total = self.count
        rank, seen = q * total, 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                return i
            seen += n
        return 0

    def at_or_above(self, index: int) -> int:
        """Requests in bucket ``index`` or above it."""
        return sum(self.counts[index:])

    def lower_edge(self, index: int) -> float:
        """The lower edge (ms) of bucket ``index``."""
        return self.bounds[index - 1] if index > 0 else 0.0

    def plus(self, other: Histogram) -> Histogram:
        """Both histograms' requests together (same bounds); ValueError otherwise."""
        if other.bounds != self.bounds:
            raise ValueError("cannot add histograms with different bucket bounds")
        counts = tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        mean = None
        if self.mean is not None and other.mean is not None and (self.count + other.count):
            mean = (self.mean * self.count + other.mean * other.count) / (self.count + other.count)
        return Histogram(self.bounds, counts, mean)


def pooled(histograms: Iterable[Histogram | None]) -> Histogram | None:
    """The sum of the histograms that exist (None when none does); ValueError on mixed bounds."""
    out: Histogram | None = None
    for h in histograms:
        if h is not None:
            out = h if out is None else out.plus(h)
    return out


def _log_choose(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def fisher_greater(bad_a: int, total_a: int, bad_b: int, total_b: int) -> float:
    """One-sided Fisher exact p-value that the bad share of A exceeds B's.

    The probability, when A and B share one bad rate, that A gets ``bad_a`` or more of the
    ``bad_a + bad_b`` bad requests among its ``total_a`` (hypergeometric tail). 1.0 without
    any request or any bad one. Counts are clamped into range.
    """
    total_a, total_b = max(0, int(total_a)), max(0, int(total_b))
    bad_a = min(max(0, int(bad_a)), total_a)
    bad_b = min(max(0, int(bad_b)), total_b)
    bad, total = bad_a + bad_b, total_a + total_b
    if total == 0 or bad == 0 or total_a == 0:
        return 1.0
    denominator = _log_choose(total, total_a)
    top = min(bad, total_a)
    terms = [
        _log_choose(bad, k) + _log_choose(total - bad, total_a - k) - denominator
        for k in range(bad_a, top + 1)
        if total_a - k <= total - bad
    ]
    if not terms:
        return 0.0
    peak = max(terms)
    return min(1.0, math.exp(peak) * sum(math.exp(t - peak) for t in terms))


@dataclass(frozen=True)
class SlowerShare:
    """How many requests of each side were at least as slow as the pooled percentile's bucket."""

    threshold_ms: float  # the lower edge of that bucket
    candidate: int
    baseline: int
    p_value: float


def slower_share(candidate: Histogram, baseline: Histogram, q: float) -> SlowerShare:
    """Fisher's test on the requests at or above the bucket of the pooled ``q`` quantile.

    Under "same behaviour" both colours put the same share there; a candidate that is slower
    at that percentile puts more. ValueError when the bounds differ.
    """
    both = candidate.plus(baseline)
    index = both.bucket_of(q)
    a, b = candidate.at_or_above(index), baseline.at_or_above(index)
    p = fisher_greater(a, candidate.count, b, baseline.count)
    return SlowerShare(both.lower_edge(index), a, b, p)


def mann_whitney_greater(candidate: Histogram, baseline: Histogram) -> float:
    """One-sided Mann-Whitney U p-value that the candidate's latencies are stochastically larger.

    Kayenta's classifier, on bucketed data: requests in one bucket are ties (mid-ranks, tie
    correction of the variance), normal approximation with continuity correction. 1.0 without
    requests or when every request falls in one bucket (no evidence either way).
    """
    if candidate.bounds != baseline.bounds:
        raise ValueError("cannot compare histograms with different bucket bounds")
    n1, n2 = candidate.count, baseline.count
    total = n1 + n2
    if n1 == 0 or n2 == 0:
        return 1.0
    below = 0
    rank_sum = 0.0
    ties = 0
    for a, b in zip(candidate.counts, baseline.counts, strict=True):
        t = a + b
        if t:
            rank_sum += a * (below + (t + 1) / 2.0)
            ties += t**3 - t
            below += t
    u = rank_sum - n1 * (n1 + 1) / 2.0
    variance = n1 * n2 / 12.0 * ((total + 1) - ties / (total * (total - 1)))
    if variance <= 0:
        return 1.0
    z = (u - n1 * n2 / 2.0 - 0.5) / math.sqrt(variance)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def latency_p_value(candidate: Histogram, baseline: Histogram, q: float) -> float:
    """Evidence that the candidate is slower: the smaller of Mann-Whitney's p (a shift of the
    whole distribution) and the slower-share test at the ``q`` quantile (a slower tail), doubled
    for having looked twice (Bonferroni)."""
    shift = mann_whitney_greater(candidate, baseline)
    tail = slower_share(candidate, baseline, q).p_value
    return min(1.0, 2.0 * min(shift, tail))


def histogram_from_buckets(
    bounds: Sequence[float], counts: Sequence[int], mean: float | None = None
) -> Histogram:
    """A Histogram from Monitoring's bucket counts, which may stop before the last buckets
    (trailing zero buckets are left out on the wire)."""
    full = list(int(c) for c in counts[: len(bounds) + 1])
    full += [0] * (len(bounds) + 1 - len(full))
    return Histogram(tuple(float(b) for b in bounds), tuple(full), mean)
