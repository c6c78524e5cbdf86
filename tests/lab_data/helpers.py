"""Helpers for the data-plane tests: the loop thread, test images, polling and request helpers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import aiohttp

from greenlight_lab.catalogue import Behaviour
from greenlight_lab.metrics import RequestRecorder
from greenlight_lab.pods import PodRuntime
from tests.loop_thread import LoopThread

IMAGES: dict[str, Behaviour] = {
    "ghcr.io/acme/app:v1": Behaviour(version="v1"),
    "ghcr.io/acme/app:v2": Behaviour(version="v2"),
    "ghcr.io/acme/app:flaky": Behaviour(version="flaky", error_rate=0.3),
    "ghcr.io/acme/app:broken": Behaviour(version="broken", error_rate=1.0, latency_ms=300),
    "ghcr.io/acme/app:slow": Behaviour(version="slow", latency_ms=100),
    "ghcr.io/acme/app:late": Behaviour(version="late", startup_s=0.8),
    "ghcr.io/acme/app:crash": Behaviour(version="crash", crash=True),
}


def pod_labels(pod: str, color: str = "", app: str = "app") -> dict[str, str]:
    """The recorder labels the lab controller gives a pod."""
    return {
        "namespace": "ns",
        "pod": pod,
        "container": app,
        "top_level_controller_name": f"{app}-{color}" if color else app,
        "color": color,
        "job": app,
        "cluster": "lab-primary",
    }


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_pod(
    loop: LoopThread,
    runtime: PodRuntime,
    name: str,
    image: str = "ghcr.io/acme/app:v1",
    color: str = "",
    readiness_path: str | None = "/healthz",
    probe_period_s: float = 0.1,
) -> int:
    """Start pod ``ns/<name>`` and wait until it is ready; return its port."""
    key = f"lab-primary/ns/{name}"
    loop.run(runtime.start(key, image, pod_labels(name, color), readiness_path, 8080, probe_period_s))
    state = wait_for(lambda: (s := runtime.status(key)) is not None and s.ready and s, what=f"{key} ready")
    return int(state.port)


async def fetch_many(
    url: str, count: int, concurrency: int = 16, method: str = "GET"
) -> list[tuple[int, dict[str, str], bytes]]:
    """``count`` requests to ``url`` over at most ``concurrency`` keep-alive connections."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> tuple[int, dict[str, str], bytes]:
            async with session.request(method, url) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        return await asyncio.gather(*(one() for _ in range(count)))


def recorded(recorder: RequestRecorder) -> dict[tuple[tuple[str, str], ...], Counter[int]]:
    """Status-code counts per recorded label set."""
    out: dict[tuple[tuple[str, str], ...], Counter[int]] = {}
    for series in recorder.snapshot():
        codes: Counter[int] = Counter(series.base.codes)
        for second in series.seconds:
            codes.update(second.codes)
        out[tuple(sorted(series.labels.items()))] = codes
    return out
