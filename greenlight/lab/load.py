"""An open-loop HTTP load generator for the lab (``greenlight lab load``).

Requests are issued on a fixed schedule at the target rate, whether or not earlier ones
have answered (open loop: a slow server does not slow the generator down, so it cannot
hide its own latency). Connections are kept alive and capped at ``concurrency``; a
request waiting for a free connection counts that wait in its latency. A request fails on
any status outside 2xx/3xx, a connection error or a timeout. The report counts statuses,
errors and the backends that answered (``X-Pod``, else ``X-Backend``), and gives latency
percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import aiohttp


@dataclass
class LoadReport:
    """What a load run sent, what came back and how fast."""

    url: str
    rps: float
    seconds: float
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    elapsed_s: float = 0.0
    backends: dict[str, int] = field(default_factory=dict)
    first_failed_at: float | None = None  # wall-clock time (epoch s) of the first / last failed request
    last_failed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-ready data."""
        return asdict(self)

    def render(self) -> str:
        """Human-readable lines."""
        achieved = self.sent / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            f"load: {self.url} at {self.rps:g} rps for {self.seconds:g} s (ran {self.elapsed_s:.1f} s, {achieved:.0f} rps sent)",
            f"  sent {self.sent}, succeeded {self.succeeded}, failed {self.failed}",
            f"  latency ms: p50 {self.p50_ms:.1f}  p95 {self.p95_ms:.1f}  p99 {self.p99_ms:.1f}  max {self.max_ms:.1f}",
            "  status: " + (", ".join(f"{k}={v}" for k, v in sorted(self.status_counts.items())) or "none"),
        ]
        if self.errors:
            lines.append("  errors: " + ", ".join(f"{k}={v}" for k, v in sorted(self.errors.items())))
        if self.backends:
            lines.append("  backends: " + ", ".join(f"{k}={v}" for k, v in sorted(self.backends.items())))
        return "\n".join(lines)


def percentile(sorted_values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values by nearest rank; 0 when empty."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


class _Tally:
    """Outcomes gathered while requests complete."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.backends: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.succeeded = 0
        self.failed = 0
        self.first_failed_at: float | None = None
        self.last_failed_at: float | None = None

    def fail(self) -> None:
        self.failed += 1
        now = time.time()
        self.first_failed_at = self.first_failed_at or now
        self.last_failed_at = now


async def _one(
    session: aiohttp.ClientSession, url: str, tally: _Tally, timeout: aiohttp.ClientTimeout
) -> None:
    began = time.perf_counter()
    try:
        async with session.get(url, timeout=timeout) as resp:
            await resp.read()
            code = resp.status
            backend = resp.headers.get("X-Pod") or resp.headers.get("X-Backend")
    except TimeoutError:
        tally.errors["timeout"] += 1
        tally.fail()
        return
    except aiohttp.ClientError as e:
        tally.errors[type(e).__name__] += 1
        tally.fail()
        return
    tally.latencies_ms.append((time.perf_counter() - began) * 1000.0)
    tally.status[str(code)] += 1
    if backend:
        tally.backends[backend] += 1
    if 200 <= code < 400:
        tally.succeeded += 1
    else:
        tally.fail()


async def run_load(
    url: str,
    rps: float,
    seconds: float,
    concurrency: int = 32,
    stop: asyncio.Event | None = None,
    timeout_s: float = 5.0,
) -> LoadReport:
    """Send GET ``url`` at ``rps`` for ``seconds`` (or until ``stop`` is set); report.

    Requests still in flight when sending ends are awaited (each bounded by ``timeout_s``).
    """
    if rps <= 0 or seconds < 0:
        raise ValueError(f"rps must be > 0 and seconds >= 0, not rps={rps}, seconds={seconds}")
    stop = stop or asyncio.Event()
    tally = _Tally()
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    began = loop.time()
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = began + seconds
        interval = 1.0 / rps
        while not stop.is_set():
            now = loop.time()
            due = began + sent * interval
            if due >= deadline:
                break
            if due > now:
                await asyncio.sleep(min(due - now, 0.05))  # short naps: a stop is seen quickly
                continue
            task = loop.create_task(_one(session, url, tally, timeout))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(set(tasks))
    latencies = sorted(tally.latencies_ms)
    return LoadReport(
        url=url,
        rps=rps,
        seconds=seconds,
        sent=sent,
        succeeded=tally.succeeded,
        failed=tally.failed,
        status_counts=dict(tally.status),
        errors=dict(tally.errors),
        p50_ms=round(percentile(latencies, 0.50), 2),
        p95_ms=round(percentile(latencies, 0.95), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(latencies[-1], 2) if latencies else 0.0,
        elapsed_s=round(loop.time() - began, 3),
        backends=dict(tally.backends),
        first_failed_at=tally.first_failed_at,
        last_failed_at=tally.last_failed_at,
    )


class BackgroundLoad:
    """``run_load`` in a thread of its own while a ``with`` block runs (at most ``seconds``);
    ``report`` is set once the block has ended."""

    def __init__(
        self, url: str, rps: float, seconds: float = 60, concurrency: int = 32, settle_s: float = 0.5
    ) -> None:
        self.url, self.rps, self.seconds, self.concurrency, self.settle_s = (
            url,
            rps,
            seconds,
            concurrency,
            settle_s,
        )
        self.report: LoadReport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def go() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            self._started.set()
            self.report = await run_load(
                self.url, self.rps, self.seconds, concurrency=self.concurrency, stop=self._stop
            )

        asyncio.run(go())

    def __enter__(self) -> BackgroundLoad:
        self._thread.start()
        self._started.wait(10)
        time.sleep(self.settle_s)  # requests already flowing when the block starts
        return self

    def __exit__(self, *exc: object) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():  # closed: it ran its full time
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(60)


async def _run_until_signalled(url: str, rps: float, seconds: float) -> LoadReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"load: sending {rps:g} rps to {url} for {seconds:g} s (Ctrl-C stops early)",
        file=sys.stderr,
        flush=True,
    )
    try:
        return await run_load(url, rps, seconds, stop=stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main_load(url: str, rps: float, seconds: float, as_json: bool) -> int:
    """Run a load, stop early on SIGINT/SIGTERM, print the report; 0 when nothing failed.

    A start line goes to stderr once the signal handlers are installed; the report to stdout.
    """
    report = asyncio.run(_run_until_signalled(url, rps, seconds))
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.render(), flush=True)
    return 0 if report.failed == 0 else 1
