"""Histograms, Fisher's exact test, and the relative judgement on samples a small noisy window gives."""

from __future__ import annotations

import math
import random

import pytest

from greenlight.core.gate import GateConfig, Sample, evaluate_interval, pool
from greenlight.core.stats import (
    Histogram,
    fisher_greater,
    histogram_from_buckets,
    mann_whitney_greater,
    pooled,
    slower_share,
)

#: Prometheus client default buckets, in ms (what GMP exports for most apps)
PROM_MS = (5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0)


def bucketed(latencies_ms: list[float], bounds: tuple[float, ...] = PROM_MS) -> Histogram:
    counts = [0] * (len(bounds) + 1)
    for ms in latencies_ms:
        i = next((k for k, b in enumerate(bounds) if ms <= b), len(bounds))
        counts[i] += 1
    return Histogram(bounds, tuple(counts))


FISHER = [
    # id, (bad_a, total_a, bad_b, total_b), expected p (hand-computed hypergeometric tails)
    ("lady-tasting-tea", (3, 4, 1, 4), 17 / 70),
    ("five-errors-against-none", (5, 50, 0, 50), math.comb(50, 5) / math.comb(100, 5)),
    ("all-bad-side", (4, 4, 0, 4), 1 / 70),
    ("fewer-bad-than-baseline", (0, 50, 5, 50), 1.0),
    ("no-bad-at-all", (0, 10, 0, 10), 1.0),
    ("no-requests", (0, 0, 0, 0), 1.0),
    ("equal-shares", (1, 2, 1, 2), 5 / 6),
]


@pytest.mark.parametrize(("counts", "expected"), [c[1:] for c in FISHER], ids=[c[0] for c in FISHER])
def test_fisher_greater_is_the_hypergeometric_tail(
    counts: tuple[int, int, int, int], expected: float
) -> None:
    """The one-sided p-value is the chance of A getting at least its bad requests were both alike."""
    assert fisher_greater(*counts) == pytest.approx(expected, rel=1e-9)


def test_fisher_greater_stays_exact_for_large_counts() -> None:
    """Large windows (a busy production colour) neither overflow nor lose the answer."""
    p = fisher_greater(600, 100_000, 500, 100_000)
    assert 0.0005 < p < 0.005
    assert fisher_greater(500, 100_000, 500, 100_000) > 0.4


QUANTILES = [
    # id, counts over bounds (10, 20, 40), q, expected ms
    ("interpolated-in-bucket", (0, 10, 0, 0), 0.5, 15.0),
    ("first-bucket-from-zero", (10, 0, 0, 0), 0.5, 5.0),
    ("overflow-answers-last-bound", (0, 0, 0, 10), 0.99, 40.0),
    ("across-buckets", (5, 5, 0, 0), 0.75, 15.0),
    ("empty", (0, 0, 0, 0), 0.95, None),
]


@pytest.mark.parametrize(
    ("counts", "q", "expected"), [c[1:] for c in QUANTILES], ids=[c[0] for c in QUANTILES]
)
def test_histogram_quantile_as_histogram_quantile(
    counts: tuple[int, ...], q: float, expected: float | None
) -> None:
    """Quantiles interpolate within the bucket holding the rank, as Prometheus and Monitoring do."""
    got = Histogram((10.0, 20.0, 40.0), counts).quantile(q)
    assert got == (pytest.approx(expected) if expected is not None else None)


def test_histograms_from_the_wire_and_pooled() -> None:
    """Trailing empty buckets left out on the wire are filled in; pooling adds counts; mixed bounds refuse."""
    h = histogram_from_buckets([10, 20, 40], [1, 2])
    assert h.counts == (1, 2, 0, 0)
    assert pooled([h, None, h]) == Histogram((10.0, 20.0, 40.0), (2, 4, 0, 0))
    assert pooled([None]) is None
    with pytest.raises(ValueError, match="different bucket bounds"):
        h.plus(Histogram((10.0, 30.0, 40.0), (0, 0, 0, 0)))
    with pytest.raises(ValueError, match="needs 4 counts"):
        Histogram((10.0, 20.0, 40.0), (1, 2))


def test_slower_share_counts_the_requests_at_or_above_the_pooled_percentile_bucket() -> None:
    """A candidate slower at p95 puts more requests in and above the pooled p95 bucket than the baseline."""
    cand = Histogram(PROM_MS, (0, 0, 0, 80, 20, 0, 0, 0, 0, 0, 0, 0))
    base = Histogram(PROM_MS, (0, 0, 0, 98, 2, 0, 0, 0, 0, 0, 0, 0))
    share = slower_share(cand, base, 0.95)
    assert (share.threshold_ms, share.candidate, share.baseline) == (50.0, 20, 2)
    assert share.p_value < 0.001


# --- a small noisy sample must not fool the judgement, in either direction -----------------------


def window(rng: random.Random, n: int, median_ms: float, sigma: float, error_rate: float) -> Sample:
    """``n`` requests of a lognormal latency (a tail as real services have), bucketed as GMP does."""
    latencies = [rng.lognormvariate(math.log(median_ms), sigma) for _ in range(n)]
    errors = sum(rng.random() < error_rate for _ in range(n))
    return Sample(float(n), float(errors), histogram=bucketed(latencies))


def gate(rng: random.Random, candidate: tuple[float, float], error_rate: float) -> str:
    """One gate as ``analyse`` runs it: intervals of 40-70 requests (a quiet staging, synthetic
    traffic only) pooled for the relative checks; fail at the first failed interval, pass after 3
    passed, inconclusive after more than 2 inconclusive ones."""
    cfg = GateConfig(
        latency_limits=((95, 500.0),), min_requests=30, max_error_rate=0.5, intervals=3, max_looks=5
    )
    seen: list[tuple[Sample, Sample]] = []
    verdicts: list[str] = []
    while True:
        n = rng.randint(40, 70)
        seen.append(
            (window(rng, n, candidate[0], candidate[1], error_rate), window(rng, n, 40.0, 0.6, 0.005))
        )
        pooled_with = (pool([c for c, _ in seen]), pool([b for _, b in seen]))
        verdict = evaluate_interval(*seen[-1], cfg, pooled_with).verdict
        verdicts.append(verdict)
        if verdict == "fail":
            return "fail"
        if verdicts.count("pass") >= 3:
            return "pass"
        if verdicts.count("inconclusive") > 2:
            return "inconclusive"


def shares(
    rng: random.Random, runs: int, candidate: tuple[float, float], error_rate: float = 0.0
) -> dict[str, float]:
    """Verdict shares of gates of the candidate against a baseline of median 40 ms, 0.5% errors."""
    seen = {"pass": 0, "fail": 0, "inconclusive": 0}
    for _ in range(runs):
        seen[gate(rng, candidate, error_rate)] += 1
    return {k: v / runs for k, v in seen.items()}


def test_a_good_release_passes_despite_noise() -> None:
    """Same behaviour, new version: of 300 gates at most 2% fail (the stated confidence) and at least 97% pass."""
    got = shares(random.Random(11), 300, (40.0, 0.6), error_rate=0.005)
    assert got["fail"] <= 0.02 and got["pass"] >= 0.97, got


def test_a_clearly_slower_release_never_passes() -> None:
    """Latency tripled but far under the absolute limit: none of 200 gates passes."""
    got = shares(random.Random(12), 200, (120.0, 0.6))
    assert got["pass"] == 0 and got["fail"] >= 0.95, got


def test_a_clearly_more_failing_release_never_passes() -> None:
    """A 20% error rate against the baseline's 0.5%, under the absolute limit: none of 200 gates passes."""
    got = shares(random.Random(13), 200, (40.0, 0.6), error_rate=0.20)
    assert got["pass"] == 0 and got["fail"] >= 0.95, got


MANN_WHITNEY = [
    # id, candidate counts, baseline counts over PROM_MS, p-value range
    ("same-histograms", (0, 0, 40, 40, 20) + (0,) * 7, (0, 0, 40, 40, 20) + (0,) * 7, (0.4, 0.6)),
    ("candidate-one-bucket-up", (0, 0, 0, 40, 40, 20) + (0,) * 6, (0, 0, 40, 40, 20) + (0,) * 7, (0, 1e-6)),
    ("candidate-faster", (0, 40, 40, 20) + (0,) * 8, (0, 0, 40, 40, 20) + (0,) * 7, (0.999, 1.0)),
    ("all-ties-is-no-evidence", (0, 0, 50) + (0,) * 9, (0, 0, 50) + (0,) * 9, (1.0, 1.0)),
    ("empty-side", (0,) * 12, (0, 0, 50) + (0,) * 9, (1.0, 1.0)),
]


@pytest.mark.parametrize(
    ("cand", "base", "expected"), [c[1:] for c in MANN_WHITNEY], ids=[c[0] for c in MANN_WHITNEY]
)
def test_mann_whitney_on_buckets(
    cand: tuple[int, ...], base: tuple[int, ...], expected: tuple[float, float]
) -> None:
    """Kayenta's rank test on bucketed latencies: a shift up is evidence, the same or a faster candidate is not."""
    p = mann_whitney_greater(Histogram(PROM_MS, cand), Histogram(PROM_MS, base))
    assert expected[0] <= p <= expected[1]
