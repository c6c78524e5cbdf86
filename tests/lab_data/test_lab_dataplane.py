"""The kube-proxy and neg data planes fail a naive switch the way real Kubernetes does
(the mesh, with its retry, is in test_lab_proxy.py). Real sockets throughout."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest

from greenlight_lab import supervisor
from greenlight_lab.load import run_load
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import ServiceProxies
from greenlight_lab.state import LabState

from .helpers import LoopThread, fetch_many, start_pod, wait_for

SERVICE = "lab-primary/ns/web"


def start_colour(loop: LoopThread, runtime: PodRuntime, colour: str, count: int = 1) -> list[tuple[str, int]]:
    """Start ``count`` ready pods of ``colour`` and return their endpoints."""
    image = "ghcr.io/acme/app:v1" if colour == "blue" else "ghcr.io/acme/app:v2"
    return [("127.0.0.1", start_pod(loop, runtime, f"web-{colour}-{i}", image, colour)) for i in range(count)]


@pytest.fixture()
def make_proxies(loop: LoopThread) -> Iterator[Callable[..., ServiceProxies]]:
    """Build ServiceProxies with the given settings on the loop; all are closed after the test."""
    made: list[ServiceProxies] = []

    def make(**settings: object) -> ServiceProxies:
        proxies = loop.call(lambda: ServiceProxies(seed=7, **settings))  # type: ignore[arg-type]
        made.append(proxies)
        return proxies

    yield make
    for proxies in made:
        loop.run(proxies.close())


def serve(loop: LoopThread, proxies: ServiceProxies, endpoints: list[tuple[str, int]]) -> int:
    """Start the Service's proxy, push ``endpoints`` and wait until its data plane routes to them."""
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, endpoints))
    wait_for(lambda: set(proxies.known_endpoints(SERVICE)) == set(endpoints), 10, "endpoints known")
    return port


def one_request(port: int, payload: bytes | None = None) -> bytes:
    """Send one request (or raw ``payload``) on a new connection; everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload or b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def pod_of(answer: bytes) -> str:
    """The X-Pod header of a raw HTTP answer."""
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"x-pod":
            return value.strip().decode()
    raise AssertionError(f"no X-Pod in {answer[:200]!r}")


def dead_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_raw_backend(handle: Callable[..., object]) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)  # type: ignore[arg-type]
    return server, server.sockets[0].getsockname()[1]


# -- kube-proxy ---------------------------------------------------------------------------------


def test_kube_proxy_keep_alive_connection_stays_on_its_backend_after_the_switch(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """A keep-alive connection opened on blue keeps answering from the same blue pod after the Service moves to green."""
    blue, green = start_colour(loop, runtime, "blue", 2), start_colour(loop, runtime, "green", 2)
    proxies = make_proxies(default_mode="kube-proxy", endpoint_delay_s=0)
    port = serve(loop, proxies, blue)

    async def scenario() -> tuple[list[str], list[str]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:

            async def pod() -> str:
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                    assert "X-Backend" not in resp.headers
                    return resp.headers["X-Pod"]

            before = [await pod() for _ in range(3)]
            proxies.set_endpoints(SERVICE, green)
            return before, [await pod() for _ in range(10)]

    before, after = loop.run(scenario())
    assert proxies.known_endpoints(SERVICE) == green
    assert len(set(before + after)) == 1 and before[0].startswith("web-blue-")
    assert pod_of(one_request(port)).startswith("web-green-")


def test_kube_proxy_new_connections_follow_a_change_only_after_the_delay(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """A connection opened before the propagation delay has passed still goes to the old set, one opened after it to the new."""
    [blue], [green] = start_colour(loop, runtime, "blue"), start_colour(loop, runtime, "green")
    proxies = make_proxies(endpoint_delay_s=0.8, endpoint_jitter_s=0)
    assert proxies.mode(SERVICE) == "kube-proxy"
    port = serve(loop, proxies, [blue])
    loop.call(lambda: proxies.set_endpoints(SERVICE, [green]))
    switched = time.monotonic()
    early = [pod_of(one_request(port)) for _ in range(5)]
    assert time.monotonic() - switched < 0.6
    assert early == ["web-blue-0"] * 5 and proxies.known_endpoints(SERVICE) == [blue]
    wait_for(lambda: proxies.known_endpoints(SERVICE) == [green], 3, "green known")
    assert time.monotonic() - switched >= 0.75
    assert {pod_of(one_request(port)) for _ in range(5)} == {"web-green-0"}


def test_kube_proxy_applies_changes_in_order_never_at_once(
    loop: LoopThread, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """Quick successive endpoint changes reach the known set in the order pushed, none before delay minus jitter."""
    proxies = make_proxies(endpoint_delay_s=0.3, endpoint_jitter_s=0.2)
    loop.run(proxies.ensure(SERVICE))
    sets = [[("127.0.0.1", 1000 + i)] for i in range(6)]

    async def scenario() -> list[tuple[float, list[tuple[str, int]]]]:
        began = asyncio.get_running_loop().time()
        for endpoints in sets:
            proxies.set_endpoints(SERVICE, endpoints)
            await asyncio.sleep(0.02)
        seen: list[tuple[float, list[tuple[str, int]]]] = []
        while asyncio.get_running_loop().time() - began < 1.2:
            known = proxies.known_endpoints(SERVICE)
            if known and (not seen or seen[-1][1] != known):
                seen.append((asyncio.get_running_loop().time() - began, known))
            await asyncio.sleep(0.002)
        return seen

    seen = loop.run(scenario())
    order = [sets.index(known) for _, known in seen]
    assert order == sorted(order) and order[-1] == len(sets) - 1
    assert seen[0][0] >= 0.1


def test_kube_proxy_backend_that_stopped_listening_resets_the_client(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """A connection sent to a known backend that no longer listens is reset (no 502, no retry on the live one)."""
    [live] = start_colour(loop, runtime, "blue")
    proxies = make_proxies(endpoint_delay_s=0)
    port = serve(loop, proxies, [live, ("127.0.0.1", dead_port())])
    outcomes = []
    for _ in range(30):
        try:
            answer = one_request(port)
            outcomes.append("ok" if answer.startswith(b"HTTP/1.1 200") else answer[:12].decode())
        except ConnectionResetError:
            outcomes.append("reset")
    assert set(outcomes) == {"ok", "reset"}, outcomes


def test_kube_proxy_without_known_endpoints_resets_the_client(
    loop: LoopThread, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """With no known endpoint the client's connection is reset before any byte (real iptables refuses it)."""
    proxies = make_proxies(endpoint_delay_s=0)
    port = loop.run(proxies.ensure(SERVICE))
    with pytest.raises(ConnectionResetError):
        one_request(port)


@pytest.mark.parametrize("ending", ["close", "reset"])
def test_kube_proxy_passes_a_backend_close_or_reset_mid_stream_to_the_client(
    loop: LoopThread, make_proxies: Callable[..., ServiceProxies], ending: str
) -> None:
    """A backend that closes (or resets) halfway through an answer closes (or resets) the client's connection."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await writer.drain()
        await asyncio.sleep(0.2)
        if ending == "reset":
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()
        else:
            writer.close()

    server, backend_port = loop.run(start_raw_backend(handle))
    try:
        proxies = make_proxies(endpoint_delay_s=0)
        port = serve(loop, proxies, [("127.0.0.1", backend_port)])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
            received = b""
            while not received.endswith(b"partial"):
                received += sock.recv(65536)
            if ending == "reset":
                with pytest.raises(ConnectionResetError):
                    sock.recv(65536)
            else:
                assert sock.recv(65536) == b""
    finally:
        server.close()


def test_kube_proxy_pipes_any_bytes_and_passes_a_half_close_on(
    loop: LoopThread, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """Non-HTTP bytes reach the backend unparsed, and the client's half-close reaches it as an end of stream."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's half-close
        writer.write(b"got:" + data)
        await writer.drain()
        writer.close()

    server, backend_port = loop.run(start_raw_backend(handle))
    try:
        proxies = make_proxies(endpoint_delay_s=0)
        port = serve(loop, proxies, [("127.0.0.1", backend_port)])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"\x00not http\r\n")
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
        assert received == b"got:\x00not http\r\n"
    finally:
        server.close()


def test_kube_proxy_remove_closes_open_connections(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """Removing the Service closes the connections piped through it and stops its listener."""
    [blue] = start_colour(loop, runtime, "blue")
    proxies = make_proxies(endpoint_delay_s=0)
    port = serve(loop, proxies, [blue])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        loop.run(proxies.remove(SERVICE))
        assert sock.recv(65536) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


# -- neg ----------------------------------------------------------------------------------------

NEG_SETTINGS = {
    "default_mode": "neg",
    "neg_detach_s": 0.1,
    "neg_attach_s": 0.8,
    "neg_health_interval_s": 0.1,
}


async def sample(port: int, seconds: float, during: Callable[[], None]) -> list[tuple[float, int, str]]:
    """Requests one after another for ``seconds`` after calling ``during``: (time, status, X-Pod or error)."""
    out: list[tuple[float, int, str]] = []
    async with aiohttp.ClientSession() as session:
        began = time.monotonic()
        during()
        while time.monotonic() - began < seconds:
            async with session.get(f"http://127.0.0.1:{port}/") as resp:
                body = await resp.read()
                who = resp.headers.get("X-Pod") or json.loads(body)["error"]
                out.append((time.monotonic() - began, resp.status, who))
            await asyncio.sleep(0.01)
    return out


def test_neg_direct_switch_answers_502_for_about_the_attach_lag(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """Switching straight to a disjoint set leaves the load balancer without a backend: 502s for about attach minus detach."""
    blue, green = start_colour(loop, runtime, "blue"), start_colour(loop, runtime, "green")
    proxies = make_proxies(**NEG_SETTINGS)
    port = serve(loop, proxies, blue)
    samples = loop.run(sample(port, 1.8, lambda: proxies.set_endpoints(SERVICE, green)))
    failed = [(t, who) for t, status, who in samples if status == 502]
    assert failed and all(who.startswith("failed_to_pick_backend") for _, who in failed)
    window = failed[-1][0] - failed[0][0]
    assert 0.4 <= window <= 1.3, window
    assert failed[0][0] >= 0.05  # blue kept answering until it was detached
    assert all(who == "web-blue-0" for t, status, who in samples if status == 200 and t < failed[0][0])
    assert all(who == "web-green-0" for t, status, who in samples if status == 200 and t > failed[-1][0])
    assert samples[-1][1:] == (200, "web-green-0")


def test_neg_overlap_then_narrow_loses_nothing(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """Selecting both colours, waiting for green to join, then removing blue fails no request under load."""
    blue, green = start_colour(loop, runtime, "blue"), start_colour(loop, runtime, "green")
    proxies = make_proxies(**NEG_SETTINGS)
    port = serve(loop, proxies, blue)

    async def scenario() -> object:
        load = asyncio.ensure_future(run_load(f"http://127.0.0.1:{port}/", 200, 3.0))
        await asyncio.sleep(0.3)
        proxies.set_endpoints(SERVICE, blue + green)
        while set(proxies.known_endpoints(SERVICE)) != set(blue + green):
            await asyncio.sleep(0.02)
        proxies.set_endpoints(SERVICE, green)
        return await load

    report = loop.run(scenario())
    assert report.failed == 0, report.render()  # type: ignore[attr-defined]
    assert set(report.backends) == {"web-blue-0", "web-green-0"}  # type: ignore[attr-defined]


def test_neg_endpoint_failing_the_health_check_never_joins(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """An endpoint whose health path does not answer 200 is never sent a request by the load balancer."""
    [good] = start_colour(loop, runtime, "blue")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        status = b"503 Service Unavailable" if head.startswith(b"GET /healthz ") else b"200 OK"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nX-Pod: unhealthy\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        writer.close()

    server, bad_port = loop.run(start_raw_backend(handle))
    try:
        proxies = make_proxies(**NEG_SETTINGS)
        port = serve(loop, proxies, [good])
        loop.call(lambda: proxies.set_endpoints(SERVICE, [good, ("127.0.0.1", bad_port)]))
        time.sleep(1.5)  # attach lag and many health checks
        assert proxies.known_endpoints(SERVICE) == [good]
        answers = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 20))
        assert {headers["X-Pod"] for _, headers, _ in answers} == {"web-blue-0"}
    finally:
        server.close()


def test_neg_does_not_retry_a_failed_backend(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """A backend of the load balancer's set that stops listening costs its requests a 502 (no retry elsewhere)."""
    [blue] = start_colour(loop, runtime, "blue")
    [green] = start_colour(loop, runtime, "green")
    proxies = make_proxies(**{**NEG_SETTINGS, "neg_health_interval_s": 5.0})  # slow to notice
    port = serve(loop, proxies, [blue, green])
    loop.run(runtime.stop("lab-primary/ns/web-green-0"))
    answers = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 20, concurrency=1))
    statuses = {status for status, _, _ in answers}
    assert statuses == {200, 502}, statuses


# -- choosing the data plane ----------------------------------------------------------------------


def test_configure_chooses_the_mode_and_falls_back_to_the_default(
    loop: LoopThread, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """configure sets a Service's mode; None or an unknown mode means the lab's default."""
    proxies = make_proxies(default_mode="kube-proxy")
    assert proxies.mode(SERVICE) == "kube-proxy"
    assert loop.call(lambda: proxies.configure(SERVICE, "neg")) == "neg"
    loop.run(proxies.ensure(SERVICE))
    assert proxies.mode(SERVICE) == "neg" and proxies.describe()[SERVICE]["mode"] == "neg"
    assert loop.call(lambda: proxies.configure(SERVICE, "istio")) == "kube-proxy"
    assert loop.call(lambda: proxies.configure(SERVICE, "mesh")) == "mesh"
    assert loop.call(lambda: proxies.configure(SERVICE, None)) == "kube-proxy"
    with pytest.raises(ValueError):
        ServiceProxies(default_mode="istio")


def test_mode_change_on_a_running_proxy_reprograms_it_from_the_current_endpoints(
    loop: LoopThread, runtime: PodRuntime, make_proxies: Callable[..., ServiceProxies]
) -> None:
    """Moving a running Service from kube-proxy to mesh routes to its current endpoints at once, per request."""
    blue = start_colour(loop, runtime, "blue", 2)
    proxies = make_proxies(endpoint_delay_s=5)
    port = loop.run(proxies.ensure(SERVICE))
    loop.call(lambda: proxies.set_endpoints(SERVICE, blue))
    assert proxies.known_endpoints(SERVICE) == []
    loop.call(lambda: proxies.configure(SERVICE, "mesh"))
    assert proxies.known_endpoints(SERVICE) == blue
    answers = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 4, concurrency=1))
    assert [h["X-Pod"] for _, h, _ in answers] == ["web-blue-0", "web-blue-1"] * 2


# -- configuration plumbing -----------------------------------------------------------------------


def test_lab_settings_precedence_is_flags_then_env_then_lab_yaml_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lab up` takes the data plane and endpoint delay from its flags, else the environment, else DIR/lab.yaml, else kube-proxy and 1.5 s."""
    monkeypatch.delenv(supervisor.DATA_PLANE_ENV, raising=False)
    monkeypatch.delenv(supervisor.ENDPOINT_DELAY_ENV, raising=False)
    assert supervisor.data_plane_settings(tmp_path) == ("kube-proxy", 1.5)
    (tmp_path / "lab.yaml").write_text("data_plane: neg\nendpoint_delay_s: 0.5\n")
    assert supervisor.data_plane_settings(tmp_path) == ("neg", 0.5)
    monkeypatch.setenv(supervisor.DATA_PLANE_ENV, "mesh")
    monkeypatch.setenv(supervisor.ENDPOINT_DELAY_ENV, "0")
    assert supervisor.data_plane_settings(tmp_path) == ("mesh", 0.0)
    assert supervisor.data_plane_settings(tmp_path, "kube-proxy", 2.0) == ("kube-proxy", 2.0)
    monkeypatch.setenv(supervisor.DATA_PLANE_ENV, "istio")
    with pytest.raises(supervisor.LabError, match="GREENLIGHT_LAB_DATA_PLANE"):
        supervisor.data_plane_settings(tmp_path)
    with pytest.raises(supervisor.LabError, match="endpoint delay"):
        supervisor.data_plane_settings(tmp_path, "mesh", -1.0)


def test_old_lab_state_files_still_load(tmp_path: Path) -> None:
    """A lab.json written before the data plane was recorded loads, reading as the mesh it ran."""
    (tmp_path / "lab.json").write_text(
        json.dumps({"dir": str(tmp_path), "pids": {"daemon": 1}, "ready_s": 3.0})
    )
    state = LabState.load(tmp_path)
    assert state is not None and state.data_plane is None and state.pids == {"daemon": 1}
    assert supervisor.describe_data_plane(state) == "mesh"
    state.data_plane, state.endpoint_delay_s = "kube-proxy", 1.5
    state.save()
    again = LabState.load(tmp_path)
    assert again is not None and supervisor.describe_data_plane(again) == "kube-proxy (endpoint delay 1.5 s)"
