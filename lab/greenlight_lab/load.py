"""An open-loop HTTP load generator for the lab (``greenlight lab load``), behaving like a
standard HTTP/1.1 client (Go's ``net/http``, urllib3) so that what it reports is what real
callers of a Service would see: no kinder, no harsher.

Pacing: requests are issued on a fixed schedule at the target rate, whether or not earlier
ones have answered (open loop: a slow server does not slow the generator down, so it
cannot hide its own latency). A request's latency includes any wait for a connection.

Connections: a pool of ``connections`` keep-alive connections (opened before the schedule
starts). A request takes the most recently returned idle connection (LIFO, as Go's and
urllib3's pools do); when every pooled connection is busy it opens another one, up to
``concurrency`` connections open at once (Go's ``MaxConnsPerHost``); beyond that it waits
for one. A connection coming back when ``connections`` are already idle is closed (Go's
``MaxIdleConnsPerHost``, urllib3's non-blocking pool ``maxsize``): extras live only as long
as the burst that needed them. A connection the server closed, or answered with
``Connection: close`` (or a body delimited by closing), is dropped from the pool.

Retries: exactly the one standard clients make. A GET on a *reused* connection (it served
at least one earlier response) that is closed or reset before any byte of the response
arrived is retried once on a freshly opened connection: the server may have closed the
idle connection just as the request was sent. Nothing else is retried: not a failure of a
fresh connection, not a refused connect, not a 5xx, not a timeout, not a failure after
response bytes arrived.

Outcomes: each request is bounded by ``timeout_s`` (waiting for a connection, connecting,
the retry and reading the whole body included). It succeeds on a 2xx/3xx answer; otherwise
it fails, counted in ``failed_by`` as ``refused`` (the connect failed: refused,
unreachable), ``reset`` (connection reset or closed before a complete response, after the
retry rule; also an unparsable response), ``timeout``, ``5xx`` or ``4xx``. ``errors``
names the transport errors by type; the report also counts statuses, the backends that
answered (``X-Pod``, else ``X-Backend``), ``retried`` requests, ``connections_opened`` and
gives latency percentiles of the requests that got an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import signal
import ssl
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from greenlight_lab.proxy import (
    STREAM_LIMIT,
    HttpError,
    ResponseHead,
    body_framing,
    close_quietly,
    discard_body,
    encode_head,
    read_response_head,
)

FAILURE_KINDS = ("refused", "reset", "timeout", "5xx", "4xx")  # the keys of LoadReport.failed_by
WARM_UP_TIMEOUT_S = 2.0  # longest wait for the pool's first connections before sending starts
USER_AGENT = "greenlight-lab-load"


@dataclass
class LoadReport:
    """What a load run sent, what came back and how fast."""

    url: str
    rps: float
    seconds: float
    sent: int = 0
    succeeded: int = 0
    failed: int = 0
    failed_by: dict[str, int] = field(default_factory=dict)  # keys among FAILURE_KINDS
    status_counts: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)  # transport errors by type, and "timeout"
    retried: int = 0  # requests that used the one retry (reused connection closed before any byte)
    connections_opened: int = 0
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
            "  failed by: " + (", ".join(f"{k}={v}" for k, v in self.failed_by.items()) or "none"),
            f"  latency ms: p50 {self.p50_ms:.1f}  p95 {self.p95_ms:.1f}  p99 {self.p99_ms:.1f}  max {self.max_ms:.1f}",
            "  status: " + (", ".join(f"{k}={v}" for k, v in sorted(self.status_counts.items())) or "none"),
            f"  connections opened {self.connections_opened}, requests retried {self.retried}",
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


# --------------------------------------------------------------------------------------------
# Client side of HTTP/1.1
# --------------------------------------------------------------------------------------------


class _ConnectFailed(Exception):
    """Opening a connection failed (refused, unreachable, name not resolved)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class _NoResponse(Exception):
    """The connection was closed or reset before any byte of the response arrived."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _error_name(e: BaseException) -> str:
    return "EOF" if isinstance(e, asyncio.IncompleteReadError) else type(e).__name__


class _Conn:
    """One client connection and how many responses it has served."""

    __slots__ = ("reader", "served", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.served = reader, writer, 0

    def usable(self) -> bool:
        """False once the server closed or reset it (seen by the loop) or we are closing it."""
        return not (self.writer.is_closing() or self.reader.at_eof() or self.reader.exception() is not None)


class _Pool:
    """Keep-alive connections to one origin: an idle LIFO stack of at most ``idle_max`` and at
    most ``cap`` connections open (idle, busy or being opened) at once.

    A request holds a *slot* from ``acquire`` until ``release`` or ``discard``; a request
    finding the pool at its cap waits, and is handed the next returned connection (or the
    next freed slot) first come, first served.
    """

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, idle_max: int, cap: int) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.idle_max, self.cap = idle_max, cap
        self.idle: list[_Conn] = []
        self.open = 0  # slots taken
        self.opened = 0  # connections successfully opened, ever
        self.waiters: deque[asyncio.Future[_Conn | None]] = deque()

    async def _dial(self) -> _Conn:
        """Open a connection in a slot already taken; the slot is freed when this fails."""
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=self.tls, limit=STREAM_LIMIT
            )
        except BaseException as e:
            self._free_slot()
            if isinstance(e, OSError) and not isinstance(e, TimeoutError):
                raise _ConnectFailed(e) from e
            raise
        self.opened += 1
        return _Conn(reader, writer)

    def _hand_off(self, item: _Conn | None) -> bool:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return True
        return False

    def _free_slot(self) -> None:
        self.open -= 1
        if self.waiters:
            self.open += 1  # the slot goes straight to the first waiter
            if not self._hand_off(None):
                self.open -= 1

    async def acquire(self) -> _Conn:
        """The most recently idle live connection, else a new one, else wait for either."""
        while self.idle:
            conn = self.idle.pop()
            if conn.usable():
                return conn
            close_quietly(conn.writer)
            self._free_slot()
        if self.open < self.cap:
            self.open += 1
            return await self._dial()
        waiter: asyncio.Future[_Conn | None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            got = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # handed something just as we were cancelled
                handed = waiter.result()
                if handed is None:
                    self._free_slot()
                else:
                    self.release(handed, reusable=True)
            raise
        if got is not None and got.usable():
            return got
        if got is not None:
            close_quietly(got.writer)
        return await self._dial()

    async def replace(self, conn: _Conn) -> _Conn:
        """Close ``conn`` and open a fresh connection in its slot (for the one retry)."""
        close_quietly(conn.writer)
        return await self._dial()

    def release(self, conn: _Conn, *, reusable: bool) -> None:
        """Give ``conn`` back: to a waiter, else onto the idle stack if it has room, else close it."""
        if reusable and conn.usable():
            if self._hand_off(conn):
                return
            if len(self.idle) < self.idle_max:
                self.idle.append(conn)
                return
        self.discard(conn)

    def discard(self, conn: _Conn) -> None:
        """Close ``conn`` and free its slot."""
        close_quietly(conn.writer)
        self._free_slot()

    async def warm_up(self, count: int, timeout_s: float) -> None:
        """Open up to ``count`` idle connections at once; failures are left to the requests."""

        async def one() -> _Conn | None:
            self.open += 1
            with contextlib.suppress(_ConnectFailed, TimeoutError):
                async with asyncio.timeout(timeout_s):
                    return await self._dial()
            return None

        for conn in await asyncio.gather(*(one() for _ in range(min(count, self.cap)))):
            if conn is not None:
                self.release(conn, reusable=True)

    def close(self) -> None:
        """Close the idle connections."""
        while self.idle:
            self.discard(self.idle.pop())


async def _read_first_head(reader: asyncio.StreamReader) -> ResponseHead:
    """The next response head; ``_NoResponse`` when the connection ended before any byte."""
    try:
        first = await reader.read(1)
    except OSError as e:  # reset (ConnectionError); TimeoutError cannot come from a read
        raise _NoResponse(e) from e
    if not first:
        raise _NoResponse(asyncio.IncompleteReadError(b"", None))
    try:
        rest = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError as e:
        raise HttpError(502, f"response head larger than {STREAM_LIMIT} bytes") from e
    head = asyncio.StreamReader()  # parse with the shared toolkit, first byte put back
    head.feed_data(first + rest)
    head.feed_eof()
    return await read_response_head(head)


async def _exchange(conn: _Conn, request: bytes) -> tuple[ResponseHead, bool]:
    """Send ``request`` on ``conn`` and read the whole answer; the flag: the connection may be reused.

    ``_NoResponse`` when it was closed or reset before any response byte; anything else
    (``OSError``, ``IncompleteReadError``, ``HttpError``) happened after bytes arrived.
    """
    try:
        conn.writer.write(request)
        await conn.writer.drain()
    except OSError as e:  # ConnectionResetError / BrokenPipeError: nothing came back yet
        raise _NoResponse(e) from e
    head = await _read_first_head(conn.reader)
    while 100 <= head.status < 200:  # interim answers (100 Continue, 103 Early Hints)
        head = await read_response_head(conn.reader)
    framing = body_framing(head, request_method="GET")
    await discard_body(conn.reader, framing)
    return head, head.keep_alive and framing[0] != "close"


class _Target:
    """Where requests go and the request bytes, built once from the URL."""

    def __init__(self, url: str, host: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [
            ("Host", host or parts.netloc.rpartition("@")[2]),
            ("User-Agent", USER_AGENT),
            ("Accept", "*/*"),
        ]
        self.request = encode_head(f"GET {target} HTTP/1.1", headers)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


class _Tally:
    """Outcomes gathered while requests complete."""

    def __init__(self) -> None:
        self.status: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.failed_by: Counter[str] = Counter()
        self.backends: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.succeeded = 0
        self.failed = 0
        self.retried = 0
        self.first_failed_at: float | None = None
        self.last_failed_at: float | None = None

    def fail(self, kind: str, error: str | None = None) -> None:
        self.failed += 1
        self.failed_by[kind] += 1
        if error:
            self.errors[error] += 1
        now = time.time()
        self.first_failed_at = self.first_failed_at or now
        self.last_failed_at = now


async def _one(pool: _Pool, target: _Target, tally: _Tally, timeout_s: float) -> None:
    began = time.perf_counter()
    conn: _Conn | None = None
    try:
        async with asyncio.timeout(timeout_s):
            conn = await pool.acquire()
            try:
                head, reusable = await _exchange(conn, target.request)
            except _NoResponse:
                if conn.served == 0:  # a fresh connection's failure is the server's answer
                    raise
                tally.retried += 1
                old, conn = conn, None
                conn = await pool.replace(old)
                head, reusable = await _exchange(conn, target.request)
            conn.served += 1
            done, conn = conn, None
            pool.release(done, reusable=reusable)
    except TimeoutError:
        tally.fail("timeout", "timeout")
        return
    except _ConnectFailed as e:
        tally.fail("refused", _error_name(e.cause))
        return
    except _NoResponse as e:
        tally.fail("reset", _error_name(e.cause))
        return
    except Exception as e:  # after response bytes: reset, truncated body, unparsable answer
        tally.fail("reset", _error_name(e))
        return
    finally:
        if conn is not None:  # broken mid-exchange (or timed out): never reused
            pool.discard(conn)
    tally.latencies_ms.append((time.perf_counter() - began) * 1000.0)
    code = head.status
    tally.status[str(code)] += 1
    backend = head.get("x-pod") or head.get("x-backend")
    if backend:
        tally.backends[backend] += 1
    if 200 <= code < 400:
        tally.succeeded += 1
    else:
        tally.fail("5xx" if code >= 500 else "4xx")


async def run_load(
    url: str,
    rps: float,
    seconds: float,
    concurrency: int = 32,
    stop: asyncio.Event | None = None,
    timeout_s: float = 5.0,
    connections: int = 8,
    host: str | None = None,
) -> LoadReport:
    """Send GET ``url`` at ``rps`` for ``seconds`` (or until ``stop`` is set); report.

    ``host`` replaces the URL's host in the ``Host`` header (a Gateway routes by it; see
    greenlight_lab.gateway.load_target); connections still go to the URL's host and port.

    ``connections`` keep-alive connections are opened first and kept idle between requests;
    ``concurrency`` caps the connections open at once, pool and extras (at least
    ``connections``). Requests still in flight when sending ends are awaited (each bounded
    by ``timeout_s``).
    """
    if rps <= 0 or seconds < 0 or connections < 1:
        raise ValueError(
            f"rps must be > 0, seconds >= 0 and connections >= 1, not rps={rps}, "
            f"seconds={seconds}, connections={connections}"
        )
    target = _Target(url, host)
    pool = _Pool(
        target.host, target.port, target.tls, idle_max=connections, cap=max(concurrency, connections)
    )
    stop = stop or asyncio.Event()
    tally = _Tally()
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    sent = 0
    try:
        await pool.warm_up(connections, min(timeout_s, WARM_UP_TIMEOUT_S))
        began = loop.time()
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
            task = loop.create_task(_one(pool, target, tally, timeout_s))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        if tasks:
            await asyncio.wait(set(tasks))
        elapsed = loop.time() - began
    finally:
        pool.close()
    latencies = sorted(tally.latencies_ms)
    return LoadReport(
        url=url,
        rps=rps,
        seconds=seconds,
        sent=sent,
        succeeded=tally.succeeded,
        failed=tally.failed,
        failed_by={k: tally.failed_by[k] for k in FAILURE_KINDS if tally.failed_by[k]},
        status_counts=dict(tally.status),
        errors=dict(tally.errors),
        retried=tally.retried,
        connections_opened=pool.opened,
        p50_ms=round(percentile(latencies, 0.50), 2),
        p95_ms=round(percentile(latencies, 0.95), 2),
        p99_ms=round(percentile(latencies, 0.99), 2),
        max_ms=round(latencies[-1], 2) if latencies else 0.0,
        elapsed_s=round(elapsed, 3),
        backends=dict(tally.backends),
        first_failed_at=tally.first_failed_at,
        last_failed_at=tally.last_failed_at,
    )


class BackgroundLoad:
    """``run_load`` in a thread of its own while a ``with`` block runs (at most ``seconds``);
    ``report`` is set once the block has ended."""

    def __init__(
        self,
        url: str,
        rps: float,
        seconds: float = 60,
        concurrency: int = 32,
        settle_s: float = 0.5,
        connections: int = 8,
        host: str | None = None,
    ) -> None:
        self.url, self.rps, self.seconds, self.host = url, rps, seconds, host
        self.concurrency, self.settle_s, self.connections = concurrency, settle_s, connections
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
                self.url,
                self.rps,
                self.seconds,
                concurrency=self.concurrency,
                stop=self._stop,
                connections=self.connections,
                host=self.host,
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


async def _run_until_signalled(
    url: str, rps: float, seconds: float, connections: int, host: str | None = None
) -> LoadReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"load: sending {rps:g} rps to {url} for {seconds:g} s over {connections} keep-alive "
        "connection(s) (Ctrl-C stops early)",
        file=sys.stderr,
        flush=True,
    )
    try:
        return await run_load(url, rps, seconds, stop=stop, connections=connections, host=host)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def main_load(
    url: str, rps: float, seconds: float, as_json: bool, connections: int = 8, host: str | None = None
) -> int:
    """Run a load, stop early on SIGINT/SIGTERM, print the report; 0 when nothing failed.

    A start line goes to stderr once the signal handlers are installed; the report to stdout.
    """
    report = asyncio.run(_run_until_signalled(url, rps, seconds, connections, host))
    print(json.dumps(report.to_dict(), indent=2) if as_json else report.render(), flush=True)
    return 0 if report.failed == 0 else 1
