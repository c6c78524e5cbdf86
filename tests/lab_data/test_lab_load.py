"""The load generator: open-loop pacing, honest counts, and a report even when stopped by a signal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from greenlight.lab.load import LoadReport, percentile, run_load
from greenlight.lab.pods import PodRuntime

from .helpers import LoopThread, start_pod


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 0.5, 0.0),
        ([7.0], 0.99, 7.0),
        ([1.0, 2.0, 3.0, 4.0], 0.5, 2.0),
        ([float(i) for i in range(1, 101)], 0.95, 95.0),
        ([float(i) for i in range(1, 101)], 0.99, 99.0),
        ([float(i) for i in range(1, 101)], 1.0, 100.0),
    ],
)
def test_percentile_is_nearest_rank(values: list[float], q: float, expected: float) -> None:
    """Percentiles use the nearest-rank definition over sorted values."""
    assert percentile(values, q) == expected


def test_report_counts_every_request_and_backend(loop: LoopThread, runtime: PodRuntime) -> None:
    """At 500 rps for 2 s every request is sent on schedule, succeeds and is credited to its pod."""
    port = start_pod(loop, runtime, "load-1")
    report = loop.run(run_load(f"http://127.0.0.1:{port}/", 500, 2.0))
    assert 990 <= report.sent <= 1000
    assert (report.succeeded, report.failed) == (report.sent, 0)
    assert report.status_counts == {"200": report.sent}
    assert report.backends == {"load-1": report.sent}
    assert report.elapsed_s < 3.0
    assert 0 < report.p50_ms <= report.p95_ms <= report.p99_ms <= report.max_ms


def test_pacing_is_open_loop_with_a_slow_server(loop: LoopThread, runtime: PodRuntime) -> None:
    """A server taking 100 ms per answer does not slow the sending rate below the target."""
    port = start_pod(loop, runtime, "load-slow-1", image="ghcr.io/acme/app:slow")
    report = loop.run(run_load(f"http://127.0.0.1:{port}/", 100, 1.0, concurrency=32))
    assert report.sent >= 98
    assert report.failed == 0
    assert report.p50_ms >= 85


def test_error_statuses_and_connection_errors_count_as_failed(loop: LoopThread, runtime: PodRuntime) -> None:
    """500 answers and refused connections are failures, counted by status and by error type."""
    port = start_pod(loop, runtime, "load-broken-1", image="ghcr.io/acme/app:broken")
    bad = loop.run(run_load(f"http://127.0.0.1:{port}/", 50, 0.4))
    assert bad.failed == bad.sent > 0
    assert bad.status_counts == {"500": bad.sent}
    refused = loop.run(run_load("http://127.0.0.1:1/", 50, 0.2, timeout_s=1))
    assert refused.failed == refused.sent > 0
    assert sum(refused.errors.values()) == refused.sent
    assert "ClientConnectorError" in refused.errors


def test_stop_event_ends_the_run_early_with_a_report(loop: LoopThread, runtime: PodRuntime) -> None:
    """Setting the stop event ends sending at once and still returns the counts so far."""
    port = start_pod(loop, runtime, "load-stop-1")

    async def scenario() -> LoadReport:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.5, stop.set)
        return await run_load(f"http://127.0.0.1:{port}/", 100, 30.0, stop=stop)

    report = loop.run(scenario())
    assert report.elapsed_s < 1.5
    assert 40 <= report.sent <= 60
    assert report.failed == 0
    text = report.render()
    assert f"sent {report.sent}, succeeded {report.sent}, failed 0" in text
    assert "load-stop-1=" in text


def test_main_load_prints_its_report_when_terminated(loop: LoopThread, runtime: PodRuntime) -> None:
    """SIGTERM stops `greenlight lab load` early; it still prints the JSON report and exits 0."""
    port = start_pod(loop, runtime, "load-sig-1")
    code = f"import sys; from greenlight.lab.load import main_load; sys.exit(main_load('http://127.0.0.1:{port}/', 50, 60, True))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy()
    )
    try:
        assert proc.stderr is not None
        assert b"load: sending" in proc.stderr.readline()  # started and signal handlers installed
        time.sleep(1.0)
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert time.monotonic() - began < 5
    assert proc.returncode == 0
    report = json.loads(out)
    assert 30 <= report["sent"] <= 80
    assert report["failed"] == 0
    assert report["backends"] == {"load-sig-1": report["sent"]}
