"""The ``mesh`` data plane: per-request round robin over the current endpoints, one retry on
another backend, instant endpoint updates, lossless switches (the kube-proxy and neg data planes
are in test_lab_dataplane.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import aiohttp
import pytest

from greenlight_lab.load import run_load
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import ServiceProxies

from .helpers import LoopThread, fetch_many, start_pod

SERVICE = "lab-primary/ns/web"


@pytest.fixture()
def proxies(loop: LoopThread) -> Iterator[ServiceProxies]:
    """Service proxies whose default data plane is the mesh, closed after the test."""
    sp = loop.call(lambda: ServiceProxies(default_mode="mesh"))
    yield sp
    loop.run(sp.close())


def start_colour(loop: LoopThread, runtime: PodRuntime, colour: str, count: int = 2) -> list[tuple[str, int]]:
    """Start ``count`` ready pods of ``colour`` and return their endpoints."""
    image = "ghcr.io/acme/app:v1" if colour == "blue" else "ghcr.io/acme/app:v2"
    return [("127.0.0.1", start_pod(loop, runtime, f"web-{colour}-{i}", image, colour)) for i in range(count)]


def test_each_request_on_one_connection_is_routed_round_robin(
    loop: LoopThread, runtime: PodRuntime, proxies: ServiceProxies
) -> None:
    """Requests sharing one client keep-alive connection alternate between backends."""
    endpoints = start_colour(loop, runtime, "blue")
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, endpoints))
    answers = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 10, concurrency=1))
    pods = [headers["X-Pod"] for _, headers, _ in answers]
    assert pods == ["web-blue-0", "web-blue-1"] * 5
    assert {headers["X-Backend"] for _, headers, _ in answers} == {f"127.0.0.1:{p}" for _, p in endpoints}


def test_ensure_is_idempotent_and_remove_stops_the_proxy(loop: LoopThread, proxies: ServiceProxies) -> None:
    """ensure returns the same port twice; after remove the Service has no URL and refuses connections."""
    port = loop.run(proxies.ensure(SERVICE))
    assert loop.run(proxies.ensure(SERVICE)) == port
    assert proxies.url(SERVICE) == f"http://127.0.0.1:{port}"
    assert proxies.urls() == {SERVICE: f"http://127.0.0.1:{port}"}
    loop.run(proxies.remove(SERVICE))
    assert proxies.url(SERVICE) is None
    answers = loop.run(run_load(f"http://127.0.0.1:{port}/", 20, 0.1, timeout_s=1))
    assert answers.failed == answers.sent > 0


def test_no_endpoints_answers_503_naming_the_service(loop: LoopThread, proxies: ServiceProxies) -> None:
    """A Service without ready endpoints answers 503 with a JSON body naming it."""
    port = loop.run(proxies.ensure(SERVICE))
    [(status, _, body)] = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 1))
    assert status == 503
    assert json.loads(body) == {"error": f"service {SERVICE} has no ready endpoints"}


def test_refused_backend_is_retried_on_another(
    loop: LoopThread, runtime: PodRuntime, proxies: ServiceProxies
) -> None:
    """A backend that refuses connections costs no request: each is retried on a live backend."""
    [live] = start_colour(loop, runtime, "blue", count=1)
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, [live, ("127.0.0.1", 1)]))
    answers = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 20, method="POST"))
    assert {status for status, _, _ in answers} == {200}


def test_selector_switch_under_load_loses_no_request(
    loop: LoopThread, runtime: PodRuntime, proxies: ServiceProxies
) -> None:
    """Switching the endpoints to the other colour under 300 rps fails no request; both colours answer."""
    blue, green = start_colour(loop, runtime, "blue"), start_colour(loop, runtime, "green")
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, blue))

    async def scenario() -> tuple:
        load = asyncio.ensure_future(run_load(f"http://127.0.0.1:{port}/", 300, 3.0))
        await asyncio.sleep(1.5)
        proxies.set_endpoints(SERVICE, green)
        return await load

    report = loop.run(scenario())
    assert report.failed == 0, report.render()
    assert report.sent >= 850
    assert set(report.backends) == {"web-blue-0", "web-blue-1", "web-green-0", "web-green-1"}


def test_switch_then_stopping_old_pods_loses_no_request(
    loop: LoopThread, runtime: PodRuntime, proxies: ServiceProxies
) -> None:
    """Stopping the old colour's pods right after the switch, as a cleanup does, fails no request."""
    blue, green = start_colour(loop, runtime, "blue"), start_colour(loop, runtime, "green")
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, blue))

    async def scenario() -> tuple:
        load = asyncio.ensure_future(run_load(f"http://127.0.0.1:{port}/", 300, 3.0))
        await asyncio.sleep(1.5)
        proxies.set_endpoints(SERVICE, green)
        await asyncio.gather(*(runtime.stop(f"lab-primary/ns/web-blue-{i}") for i in range(2)))
        switched_at = time.monotonic()
        report = await load
        return report, switched_at

    report, _ = loop.run(scenario())
    assert report.failed == 0, report.render()
    assert report.sent >= 850
    assert report.backends["web-green-0"] + report.backends["web-green-1"] > 300


def test_proxy_throughput_is_well_above_the_load_rates(
    loop: LoopThread, runtime: PodRuntime, proxies: ServiceProxies
) -> None:
    """Proxy, pods and an aiohttp client sharing one loop answer over 500 requests/s (about 1900 when idle)."""
    endpoints = start_colour(loop, runtime, "blue")
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, endpoints))

    async def hammer(seconds: float) -> int:
        done = 0
        deadline = time.monotonic() + seconds
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:

            async def worker() -> None:
                nonlocal done
                while time.monotonic() < deadline:
                    async with session.get(f"http://127.0.0.1:{port}/") as resp:
                        await resp.read()
                        assert resp.status == 200
                    done += 1

            await asyncio.gather(*(worker() for _ in range(16)))
        return done

    began = time.monotonic()
    done = loop.run(hammer(1.5))
    rate = done / (time.monotonic() - began)
    print(f"proxy throughput: {rate:.0f} requests/s")
    assert rate > 500, rate


async def start_raw_backend(answer: bytes) -> tuple[asyncio.Server, int]:
    """A backend that reads one request head per connection and writes ``answer`` raw, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("answer", "body"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=1\r\n world\r\n0\r\n\r\n",
            b"hello world",
        ),
        (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close", b"until close"),
        (b"HTTP/1.1 204 No Content\r\n\r\n", b""),
    ],
)
def test_chunked_and_close_delimited_answers_are_relayed(
    loop: LoopThread, proxies: ServiceProxies, answer: bytes, body: bytes
) -> None:
    """Chunked, read-until-close and empty answers reach the client intact through the proxy."""
    server, backend_port = loop.run(start_raw_backend(answer))
    try:
        port = loop.run(proxies.ensure(SERVICE))
        loop.call(lambda: proxies.set_endpoints(SERVICE, [("127.0.0.1", backend_port)]))
        [(status, headers, received)] = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 1))
        assert status in (200, 204)
        assert received == body
        assert headers["X-Backend"] == f"127.0.0.1:{backend_port}"
    finally:
        server.close()
