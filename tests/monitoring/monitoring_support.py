"""Shared by the Monitoring tests: names, pod labels and the synthetic traffic with its truth."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from greenlight.lab.metrics import RequestRecorder

PROJECT = "lab-project"
NAMESPACE = "sma-staging"
REQUESTS = "prometheus.googleapis.com/http_requests_total/counter"
LATENCY = "prometheus.googleapis.com/http_request_duration_seconds/histogram"


def pod_labels(colour: str, index: int, namespace: str = NAMESPACE) -> dict[str, str]:
    """The labels a lab pod of ``colour`` reports, as greenlight.lab.pods does."""
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


@dataclass
class Traffic:
    """What the synthetic traffic was: the truth tests compare against."""

    start: datetime
    end: datetime
    first_second: int
    totals: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)


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
            recorder.record(pod_labels(colour, i % 2), code, latency, at=first_second + i * 0.05)
        traffic.totals[colour], traffic.errors[colour] = 1000, errors
    for i in range(300):
        recorder.record(pod_labels("blue", 0, "sma-production"), 500, 0.01, at=first_second + i * 0.1)
    return traffic
