"""The load generator: open-loop pacing, a standard client's connection pool and its one retry,
honest failure counts, and a report even when stopped by a signal."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from greenlight_lab.load import LoadReport, percentile, run_load
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import read_request_head, simple_response

from .helpers import LoopThread, start_pod

Policy = Callable[[int, int], str]  # (connection number, request number on it) -> action


class ScriptedServer:
    """A tiny HTTP/1.1 server on a real socket doing what ``policy`` says with each request.

    Actions: ``ok`` (200, Content-Length), ``chunked`` (200, chunked body), ``close``
    (close without answering, as a server closing an idle keep-alive connection just as
    the next request arrives), ``reset`` (abort with RST), ``partial`` (half a status line,
    then close), ``stall`` (never answer), ``slow`` (200 after 100 ms), ``conn-close``
    (200 with ``Connection: close``, socket kept open), or a status code such as ``503``.
    """

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.connections = 0
        self.requests: Counter[int] = Counter()  # requests seen per connection
        self.open = 0
        self.max_open = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for writer in self._writers:
            writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = self.connections
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            for number in range(1_000_000):
                head = await read_request_head(reader)
                if head is None:
                    return
                self.requests[conn] += 1
                action = self.policy(conn, number)
                if action == "close":
                    return
                if action == "reset":
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if action == "partial":
                    writer.write(b"HTTP/1.1 200 O")
                    await writer.drain()
                    return
                if action == "stall":
                    await asyncio.sleep(3600)
                if action == "slow":
                    await asyncio.sleep(0.1)
                    action = "ok"
                if action == "chunked":
                    writer.write(
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Pod: scripted\r\n\r\n"
                        b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
                    )
                elif action == "conn-close":
                    writer.write(simple_response(200, b"ok", keep_alive=False, extra=[("X-Pod", "scripted")]))
                else:
                    status = 200 if action == "ok" else int(action)
                    writer.write(simple_response(status, b"{}", extra=[("X-Pod", "scripted")]))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()


@pytest.fixture()
def scripted(loop: LoopThread) -> Iterator[Callable[[Policy], tuple[ScriptedServer, str]]]:
    """Start scripted servers on the shared loop: ``scripted(policy)`` gives the server and its URL."""
    servers: list[ScriptedServer] = []

    def start(policy: Policy) -> tuple[ScriptedServer, str]:
        server = ScriptedServer(policy)
        servers.append(server)
        port = loop.run(server.start())
        return server, f"http://127.0.0.1:{port}/"

    yield start
    for server in servers:
        loop.run(server.close())


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with contextlib.closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
    assert (report.failed_by, report.errors, report.retried) == ({}, {}, 0)
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
    """500 answers fail as 5xx and refused connections as refused, each named in the report."""
    port = start_pod(loop, runtime, "load-broken-1", image="ghcr.io/acme/app:broken")
    bad = loop.run(run_load(f"http://127.0.0.1:{port}/", 50, 0.4))
    assert bad.failed == bad.sent > 0
    assert bad.status_counts == {"500": bad.sent}
    assert bad.failed_by == {"5xx": bad.sent}
    refused = loop.run(run_load("http://127.0.0.1:1/", 50, 0.2, timeout_s=1))
    assert refused.failed == refused.sent > 0
    assert refused.failed_by == {"refused": refused.sent}
    assert refused.errors == {"ConnectionRefusedError": refused.sent}
    assert refused.connections_opened == 0
    assert "failed by: refused=" in refused.render()


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
    code = f"import sys; from greenlight_lab.load import main_load; sys.exit(main_load('http://127.0.0.1:{port}/', 50, 60, True))"
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
    assert (report["failed_by"], report["retried"], report["connections_opened"]) == ({}, 0, 8)
    assert report["backends"] == {"load-sig-1": report["sent"]}


def test_connections_are_kept_alive_and_reused(loop: LoopThread, scripted) -> None:
    """The pool's N keep-alive connections carry every request: none is opened per request.

    ``concurrency`` equals the pool, so a starved machine (a slow answer that would let an extra
    connection open) cannot change the count; extras are the next test's subject.
    """
    server, url = scripted(lambda conn, n: "chunked" if n % 2 else "ok")
    report = loop.run(run_load(url, 200, 1.0, concurrency=4, connections=4))
    assert report.sent >= 195
    assert (report.succeeded, report.failed, report.retried) == (report.sent, 0, 0)
    assert report.connections_opened == server.connections == 4
    assert sum(server.requests.values()) == report.sent
    assert report.backends == {"scripted": report.sent}


def test_extra_connections_open_when_the_pool_is_busy_up_to_concurrency(loop: LoopThread, scripted) -> None:
    """With every pooled connection busy, new ones open as needed but never more than `concurrency` at once."""
    server, url = scripted(lambda conn, n: "slow")
    report = loop.run(run_load(url, 100, 1.0, concurrency=6, connections=2))
    assert (report.sent, report.failed) == (100, 0)
    assert server.max_open == 6
    assert report.connections_opened >= 6
    assert report.p50_ms >= 150  # 100 ms answers, 100 rps over at most 6 connections: requests wait


def test_reused_connection_closed_before_any_byte_is_retried_once(loop: LoopThread, scripted) -> None:
    """A GET on a reused connection that the server closes before answering succeeds on one retry."""
    server, url = scripted(lambda conn, n: "close" if (conn, n) == (0, 1) else "ok")
    report = loop.run(run_load(url, 10, 0.2, connections=1))
    assert report.sent == 2
    assert (report.succeeded, report.failed, report.retried) == (2, 0, 1)
    assert report.connections_opened == 2
    assert dict(server.requests) == {0: 2, 1: 1}


def test_fresh_connection_reset_before_any_byte_is_not_retried(loop: LoopThread, scripted) -> None:
    """A reset on a connection that never served a response fails the request as reset, unretried."""
    server, url = scripted(lambda conn, n: "reset")
    report = loop.run(run_load(url, 10, 0.1, connections=1))
    assert report.sent == 1
    assert (report.failed, report.retried) == (1, 0)
    assert report.failed_by == {"reset": 1}
    assert report.errors == {"ConnectionResetError": 1}
    assert sum(server.requests.values()) == 1


def test_a_failure_of_the_retry_counts_as_failed(loop: LoopThread, scripted) -> None:
    """When the one retry's fresh connection is reset too, the request fails as reset."""
    server, url = scripted(
        lambda conn, n: "ok" if (conn, n) == (0, 0) else ("close" if conn == 0 else "reset")
    )
    report = loop.run(run_load(url, 10, 0.2, connections=1))
    assert report.sent == 2
    assert (report.succeeded, report.failed, report.retried) == (1, 1, 1)
    assert report.failed_by == {"reset": 1}
    assert dict(server.requests) == {0: 2, 1: 1}  # one retry, no second


def test_failure_after_response_bytes_is_not_retried(loop: LoopThread, scripted) -> None:
    """A reused connection closed in the middle of a status line fails as reset without a retry."""
    server, url = scripted(lambda conn, n: "partial" if n == 1 else "ok")
    report = loop.run(run_load(url, 10, 0.2, connections=1))
    assert (report.sent, report.succeeded, report.retried) == (2, 1, 0)
    assert report.failed_by == {"reset": 1}
    assert sum(server.requests.values()) == 2


def test_connection_refused_counts_as_refused(loop: LoopThread) -> None:
    """Connecting to a port nobody listens on fails every request as refused."""
    report = loop.run(run_load(f"http://127.0.0.1:{free_port()}/", 20, 0.25, timeout_s=1))
    assert report.sent == 5
    assert report.failed_by == {"refused": 5}
    assert (report.retried, report.connections_opened) == (0, 0)


@pytest.mark.parametrize(("status", "kind"), [("503", "5xx"), ("404", "4xx")])
def test_error_status_counts_by_class_and_is_not_retried(
    loop: LoopThread, scripted, status: str, kind: str
) -> None:
    """An error status fails the request under its class and is sent to the server only once."""
    server, url = scripted(lambda conn, n: status)
    report = loop.run(run_load(url, 20, 0.25, connections=2))
    assert report.sent == 5
    assert report.failed_by == {kind: 5}
    assert report.status_counts == {status: 5}
    assert report.retried == 0
    assert sum(server.requests.values()) == 5
    assert report.connections_opened == 2  # an error answer keeps the connection alive


def test_stalled_server_counts_as_timeout(loop: LoopThread, scripted) -> None:
    """A server that never answers fails each request as a timeout after `timeout_s`, unretried."""
    server, url = scripted(lambda conn, n: "stall")
    began = time.monotonic()
    report = loop.run(run_load(url, 10, 0.3, timeout_s=0.3, connections=2))
    assert time.monotonic() - began < 1.5
    assert report.sent == 3
    assert report.failed_by == {"timeout": 3}
    assert (report.retried, report.errors) == (0, {"timeout": 3})
    assert sum(server.requests.values()) == 3


def test_connection_close_answers_are_honoured(loop: LoopThread, scripted) -> None:
    """A connection answered with `Connection: close` is not reused, even if the server leaves it open."""
    server, url = scripted(lambda conn, n: "conn-close")
    report = loop.run(run_load(url, 20, 0.25, connections=1))
    assert report.sent == 5
    assert (report.succeeded, report.retried) == (5, 0)
    assert report.connections_opened == server.connections == 5
    assert set(server.requests.values()) == {1}
