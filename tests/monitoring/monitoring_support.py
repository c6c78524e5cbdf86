"""Shared by the Monitoring tests: names, pod labels and the synthetic traffic with its truth."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from greenlight_lab.metrics import RequestRecorder

PROJECT = "lab-project"
NAMESPACE = "sma-staging"
REQUESTS = "prometheus.googleapis.com/http_requests_total/counter"
LATENCY = "prometheus.googleapis.com/http_request_duration_seconds/histogram"


def pod_labels(colour: str, index: int, namespace: str = NAMESPACE) -> dict[str, str]:
    """The labels a lab pod of ``colour`` reports, as greenlight_lab.pods does."""
    pod = f"backend-{colour}-{index}"
    return {
        "namespace": namespace,
        "pod": pod,
        "container": "backend",
        "top_level_controller_name": f"backend-{colour}",
        "color": colour,
        "job": "backend",
        "instance": f"{pod}:8080",
        "cluster": "lab-primary",
    }


@dataclass(frozen=True)
class Request:
    """One recorded request."""

    colour: str
    pod: str
    namespace: str
    code: int
    latency: float
    at: float


def first_scrapes(requests: list[Request], histogram: bool = False) -> dict[tuple[object, ...], int]:
    """Each series' first scrape on a 1 s grid: the end of the second of its first request.

    A counter series is a pod's status code (``(namespace, pod, code)``); with ``histogram`` a
    series is a pod's latency histogram (``(namespace, pod)``).
    """
    out: dict[tuple[object, ...], int] = {}
    for r in requests:
        key = series_key(r, histogram)
        reset = math.floor(r.at) + 1
        out[key] = min(out.get(key, reset), reset)
    return out


def series_key(r: Request, histogram: bool = False) -> tuple[object, ...]:
    return (r.namespace, r.pod) if histogram else (r.namespace, r.pod, r.code)


def counted(
    requests: list[Request],
    start: float,
    end: float,
    keep: Callable[[Request], bool] = lambda r: True,
    histogram: bool = False,
) -> list[Request]:
    """The requests a GMP-shaped ALIGN_DELTA over ``(start, end]`` (whole seconds, 1 s scrapes,
    every point readable) counts, among those ``keep`` selects.

    A series' first scrape is its reset point: only requests served at or after it count, and
    the delta over the window is what the scrapes at ``start`` (or the reset point, if later)
    and ``end`` saw in between: requests served in ``[max(reset, start), end)``.
    """
    resets = first_scrapes(requests, histogram)
    return [r for r in requests if keep(r) and max(resets[series_key(r, histogram)], start) <= r.at < end]


@dataclass
class Traffic:
    """What the synthetic traffic was: the truth tests compare against."""

    start: datetime
    end: datetime
    first_second: int
    totals: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def visible(
        self,
        start: float | None = None,
        end: float | None = None,
        keep: Callable[[Request], bool] = lambda r: True,
        histogram: bool = False,
    ) -> list[Request]:
        """:func:`counted` over the traffic's window (default: all of it)."""
        lo = self.start.timestamp() if start is None else start
        hi = self.end.timestamp() if end is None else end
        return counted(self.requests, lo, hi, keep, histogram)

    def visible_count(
        self, colour: str, errors_only: bool = False, start: float | None = None, end: float | None = None
    ) -> float:
        """Staging requests of ``colour`` (5xx only with ``errors_only``) Monitoring counts."""

        def keep(r: Request) -> bool:
            return r.colour == colour and r.namespace == NAMESPACE and (r.code >= 500 or not errors_only)

        return float(len(self.visible(start, end, keep)))


def record_traffic(recorder: RequestRecorder, first_second: int) -> Traffic:
    """Blue: 1000 requests, 1% 5xx, latency U(0, 0.1); green: 1000, 20% 5xx, U(0, 0.4).

    Each colour is served by two pods over 50 s from ``first_second``; a few 404s (not errors)
    and some production-namespace traffic (not counted in staging) are mixed in.
    """
    rng = random.Random(20261126)
    traffic = Traffic(
        start=datetime.fromtimestamp(first_second - 5, UTC),
        end=datetime.fromtimestamp(first_second + 60, UTC),
        first_second=first_second,
    )
    for colour, every, slowest in (("blue", 100, 0.1), ("green", 5, 0.4)):
        traffic.latencies[colour] = []
        errors = 0
        for i in range(1000):
            code = (500 if i % 2 else 503) if i % every == every - 1 else (404 if i % 97 == 0 else 200)
            errors += code >= 500
            latency = rng.uniform(0.0, slowest)
            traffic.latencies[colour].append(latency)
            at = first_second + i * 0.05
            recorder.record(pod_labels(colour, i % 2), code, latency, at=at)
            traffic.requests.append(
                Request(colour, f"backend-{colour}-{i % 2}", NAMESPACE, code, latency, at)
            )
        traffic.totals[colour], traffic.errors[colour] = 1000, errors
    for i in range(300):
        at = first_second + i * 0.1
        recorder.record(pod_labels("blue", 0, "sma-production"), 500, 0.01, at=at)
        traffic.requests.append(Request("blue", "backend-blue-0", "sma-production", 500, 0.01, at))
    return traffic
