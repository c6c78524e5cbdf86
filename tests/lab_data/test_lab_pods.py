"""Lab pods: real local HTTP servers that behave as their image's catalogue entry says."""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time

import aiohttp
import pytest

from greenlight_lab import pods as pods_module
from greenlight_lab.catalogue import BEHAVIOUR_LABEL, Behaviour, Catalogue, build_manifest
from greenlight_lab.metrics import RequestRecorder
from greenlight_lab.pods import PodRuntime, PodState, sleep_seconds

from .helpers import LoopThread, fetch_many, pod_labels, recorded, start_pod, wait_for

NOISY = "ghcr.io/acme/app:noisy"


async def raw_exchange(port: int, payload: bytes) -> bytes:
    """Send raw bytes to a pod and return everything it answers until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def test_pod_answers_version_pod_and_color_as_json(loop: LoopThread, runtime: PodRuntime) -> None:
    """A ready pod answers "/" with 200 and JSON naming its version, pod and colour, plus X-Pod."""
    port = start_pod(loop, runtime, "web-blue-1", color="blue")
    [(status, headers, body)] = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 1))
    assert status == 200
    assert headers["X-Pod"] == "web-blue-1"
    assert json.loads(body) == {"version": "v1", "pod": "web-blue-1", "color": "blue"}


def test_error_rate_is_honoured_over_many_requests(loop: LoopThread, runtime: PodRuntime) -> None:
    """An image with error_rate 0.3 answers about 30 % of 2000 requests with 500 (5 sigma tolerance)."""
    port = start_pod(loop, runtime, "flaky-1", image="ghcr.io/acme/app:flaky")
    answers = loop.run(fetch_many(f"http://127.0.0.1:{port}/orders", 2000, concurrency=8))
    errors = sum(1 for status, _, _ in answers if status == 500)
    assert {status for status, _, _ in answers} == {200, 500}
    assert abs(errors - 600) < 5 * (2000 * 0.3 * 0.7) ** 0.5, errors


def test_latency_is_added_to_each_answer(loop: LoopThread, runtime: PodRuntime) -> None:
    """An image with latency_ms 100 takes about 100 ms per answer."""
    port = start_pod(loop, runtime, "slow-1", image="ghcr.io/acme/app:slow")

    async def timed() -> list[float]:
        out = []
        async with aiohttp.ClientSession() as session:
            for _ in range(8):
                began = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                out.append(time.perf_counter() - began)
        return out

    median = statistics.median(loop.run(timed()))
    assert 0.085 <= median <= 0.2, median


def test_added_latency_is_lognormal_with_a_sigma_and_within_ten_percent_without():
    """added_latency_s: median latency_ms and p90/p50 = exp(1.2816 sigma) with a sigma, +-10 % without."""
    random.seed(7)
    noisy = sorted(pods_module.added_latency_s(20.0, 0.5) * 1000 for _ in range(4000))
    p50, p90 = noisy[2000], noisy[3600]
    assert 18.0 <= p50 <= 22.0, p50
    assert 1.75 <= p90 / p50 <= 2.05, p90 / p50  # exp(1.2816 x 0.5) = 1.90
    quiet = [pods_module.added_latency_s(20.0) * 1000 for _ in range(1000)]
    assert min(quiet) >= 18.0 and max(quiet) <= 22.0


def test_latency_sigma_spreads_the_measured_latencies(
    loop: LoopThread, runtime: PodRuntime, catalogue: Catalogue
) -> None:
    """An image with latency_ms 20 and latency_sigma 0.5 answers with a long right tail: the
    measured p90 is well above 1.2 x the median (lognormal: 1.9 x; +-10 % jitter gives 1.08 x)."""
    catalogue.push(NOISY, Behaviour(version="noisy", latency_ms=20, latency_sigma=0.5))
    port = start_pod(loop, runtime, "noisy-1", image=NOISY)

    async def timed(n: int, concurrency: int = 8) -> list[float]:
        out: list[float] = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:

            async def one() -> None:
                began = time.perf_counter()
                async with session.get(f"http://127.0.0.1:{port}/") as resp:
                    await resp.read()
                out.append(time.perf_counter() - began)

            await asyncio.gather(*(one() for _ in range(n)))
        return out

    deciles = statistics.quantiles(loop.run(timed(200)), n=10)
    p50, p90 = deciles[4], deciles[8]
    assert p90 / p50 > 1.2, (p50, p90)


def test_readiness_path_stays_green_while_the_app_fails(loop: LoopThread, runtime: PodRuntime) -> None:
    """A pod of a failing, slow image turns ready: its health path answers 200 "ok" at once."""
    port = start_pod(loop, runtime, "broken-1", image="ghcr.io/acme/app:broken")
    began = time.perf_counter()
    [(status, _, body)] = loop.run(fetch_many(f"http://127.0.0.1:{port}/healthz", 1))
    assert (status, body) == (200, b"ok")
    assert time.perf_counter() - began < 0.2
    [(status, _, _)] = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 1))
    assert status == 500


def test_startup_delay_holds_readiness_back(loop: LoopThread, runtime: PodRuntime) -> None:
    """A pod whose image starts in 0.8 s is Running but not ready, with no port, until then."""
    key = "lab-primary/ns/late-1"
    began = time.monotonic()
    loop.run(runtime.start(key, "ghcr.io/acme/app:late", pod_labels("late-1"), "/healthz", 8080, 0.1))
    running = wait_for(lambda: (s := runtime.status(key)) and s.phase == "Running" and s, what="Running")
    assert (running.ready, running.port, running.waiting_reason) == (False, None, None)
    assert running.started_at is not None
    wait_for(lambda: runtime.status(key).ready, what="ready")  # type: ignore[union-attr]
    assert time.monotonic() - began >= 0.8


def test_readiness_without_a_path_follows_listening(loop: LoopThread, runtime: PodRuntime) -> None:
    """Without a readiness path a pod is ready as soon as its server listens."""
    port = start_pod(loop, runtime, "noprobe-1", readiness_path=None)
    [(status, _, _)] = loop.run(fetch_many(f"http://127.0.0.1:{port}/", 1))
    assert status == 200


def test_unknown_image_waits_in_image_pull_backoff(loop: LoopThread, runtime: PodRuntime) -> None:
    """An image the catalogue does not know leaves the pod Pending in ImagePullBackOff, naming it."""
    key = "lab-primary/ns/ghost-1"
    loop.run(runtime.start(key, "ghcr.io/acme/app:nope", pod_labels("ghost-1"), "/healthz", 8080))
    state = wait_for(lambda: (s := runtime.status(key)) and s.waiting_reason and s, what="waiting reason")
    time.sleep(0.3)
    assert runtime.status(key) == state
    assert (state.phase, state.waiting_reason, state.ready, state.port) == (
        "Pending",
        "ImagePullBackOff",
        False,
        None,
    )
    assert "ghcr.io/acme/app:nope" in state.message


def test_image_pushed_later_is_pulled_on_retry(
    loop: LoopThread, runtime: PodRuntime, catalogue: Catalogue
) -> None:
    """A pod in ImagePullBackOff starts once its image appears in the catalogue."""
    key = "lab-primary/ns/later-1"
    loop.run(runtime.start(key, "ghcr.io/acme/app:later", pod_labels("later-1"), "/healthz", 8080, 0.1))
    wait_for(lambda: (s := runtime.status(key)) and s.waiting_reason == "ImagePullBackOff", what="backoff")
    catalogue.push("ghcr.io/acme/app:later", Behaviour(version="later"))
    state = wait_for(lambda: (s := runtime.status(key)) and s.ready and s, timeout=4, what="ready")
    assert (state.phase, state.waiting_reason) == ("Running", None)


def test_crashing_image_loops_with_growing_restart_count(loop: LoopThread, runtime: PodRuntime) -> None:
    """A crash image goes to CrashLoopBackOff, restarts with a growing count and is never ready."""
    key = "lab-primary/ns/crash-1"
    seen: list[PodState] = []

    def collect(changed: str) -> None:
        state = runtime.status(changed)
        if changed == key and state is not None:
            seen.append(state)

    runtime.on_change(collect)
    loop.run(runtime.start(key, "ghcr.io/acme/app:crash", pod_labels("crash-1"), "/healthz", 8080, 0.05))
    state = wait_for(
        lambda: (s := runtime.status(key)) and s.restart_count >= 2 and s, timeout=6, what="2 restarts"
    )
    assert (state.phase, state.ready) == ("Running", False)
    assert any(s.waiting_reason == "CrashLoopBackOff" for s in seen)
    assert any(s.port is not None for s in seen), "the container listened between crashes"
    assert not any(s.ready for s in seen)
    assert [s.restart_count for s in seen] == sorted(s.restart_count for s in seen)


def test_state_changes_are_reported_in_kubelet_order(loop: LoopThread, runtime: PodRuntime) -> None:
    """on_change reports ContainerCreating, then Running not ready, then ready, then removal."""
    key = "lab-primary/ns/order-1"
    seen: list[PodState | None] = []
    runtime.on_change(lambda changed: seen.append(runtime.status(changed)) if changed == key else None)
    start_pod(loop, runtime, "order-1")
    loop.run(runtime.stop(key))
    loop.run(asyncio.sleep(0.05))  # let call_soon callbacks run
    reasons = [(s.phase, s.waiting_reason, s.ready) if s else None for s in seen]
    assert reasons[0] == ("Pending", "ContainerCreating", False)
    assert ("Running", None, False) in reasons
    assert reasons.index(("Running", None, True)) > reasons.index(("Running", None, False))
    assert reasons[-1] is None
    assert runtime.status(key) is None


def test_requests_are_recorded_with_the_instance_label(
    loop: LoopThread, runtime: PodRuntime, recorder: RequestRecorder
) -> None:
    """Served requests are recorded under the pod's labels plus instance; the runtime's probes are not."""
    port = start_pod(loop, runtime, "rec-blue-1", color="blue")
    time.sleep(0.5)  # several readiness probes (period 0.1 s) pass meanwhile
    loop.run(fetch_many(f"http://127.0.0.1:{port}/", 25))
    loop.run(fetch_many(f"http://127.0.0.1:{port}/healthz", 3))
    expected = pod_labels("rec-blue-1", "blue") | {"instance": f"rec-blue-1:{port}"}
    assert recorded(recorder) == {tuple(sorted(expected.items())): {200: 28}}


def test_stop_lets_in_flight_requests_finish_and_refuses_new_ones(
    loop: LoopThread, runtime: PodRuntime
) -> None:
    """Stopping a pod completes the request in flight, then the port refuses connections."""
    port = start_pod(loop, runtime, "slow-stop-1", image="ghcr.io/acme/app:slow")

    async def scenario() -> tuple[list[tuple[int, dict[str, str], bytes]], bool]:
        in_flight = asyncio.ensure_future(fetch_many(f"http://127.0.0.1:{port}/", 4, concurrency=4))
        await asyncio.sleep(0.03)
        await runtime.stop("lab-primary/ns/slow-stop-1", grace_s=1.0)
        try:
            await asyncio.open_connection("127.0.0.1", port)
            refused = False
        except ConnectionRefusedError:
            refused = True
        return await in_flight, refused

    answers, refused = loop.run(scenario())
    assert [status for status, _, _ in answers] == [200] * 4
    assert refused


def test_idle_keepalive_connections_are_closed_on_stop(loop: LoopThread, runtime: PodRuntime) -> None:
    """An idle keep-alive connection is closed by the pod as soon as it stops."""
    port = start_pod(loop, runtime, "idle-1")

    async def scenario() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await reader.readuntil(b"\r\n\r\n")
        await runtime.stop("lab-primary/ns/idle-1")
        rest = await asyncio.wait_for(reader.read(), 2)  # body of the answer, then EOF
        writer.close()
        return rest

    assert loop.run(scenario()).endswith(b'"color":""}')


@pytest.mark.parametrize(
    ("payload", "expected_status"),
    [
        (
            b"POST /x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"200",
        ),
        (b"POST /x HTTP/1.1\r\nHost: p\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc", b"200"),
        (b"POST /x HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: gzip\r\n\r\n", b"501"),
        (b"POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", b"400"),
        (b"POST /x HTTP/1.1\r\nContent-Length: x\r\n\r\n", b"400"),
        (b"GARBAGE\r\n\r\n", b"400"),
    ],
)
def test_request_framing_is_read_or_rejected_cleanly(
    loop: LoopThread, catalogue: Catalogue, payload: bytes, expected_status: bytes
) -> None:
    """Bodies by length or chunks are read; malformed or unsupported framing gets a clean 4xx/5xx."""
    runtime = PodRuntime(catalogue, RequestRecorder())
    try:
        port = start_pod(loop, runtime, "framing-1")
        answer = loop.run(raw_exchange(port, payload))
        assert answer.split(b" ", 2)[1] == expected_status, answer
    finally:
        loop.run(runtime.close())


# --- termination (the kubelet's part: preStop, SIGTERM, SIGKILL) ----------------------------

GRACEFUL = "ghcr.io/acme/app:graceful"


@pytest.fixture()
def graceful_image(catalogue: Catalogue) -> str:
    """An image that drains on SIGTERM and answers after 300 ms."""
    catalogue.push(GRACEFUL, Behaviour(version="graceful", latency_ms=300, shutdown="graceful"))
    return GRACEFUL


async def _in_flight(port: int, path: str = "/") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _read_all(reader: asyncio.StreamReader) -> tuple[bytes, BaseException | None]:
    data = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), 10):
            data += chunk
    except OSError as e:
        return data, e
    return data, None


@pytest.mark.parametrize(
    ("command", "seconds"),
    [
        (["sleep", "5"], 5.0),
        (["/bin/sleep", "0.5"], 0.5),
        (["/bin/sh", "-c", "sleep 5"], 5.0),
        (["sh", "-c", "sleep .25;"], 0.25),
        (["bash", "-c", "sleep 1m"], 60.0),
        (["nginx", "-s", "quit"], None),
        (["/bin/sh", "-c", "sleep 5 && nginx -s quit"], None),
        (["sleep"], None),
    ],
)
def test_pre_stop_exec_sleeps_are_understood(command: list[str], seconds: float | None) -> None:
    """A preStop exec that only sleeps is a wait of that many seconds; any other command is not runnable."""
    assert sleep_seconds(command) == seconds


def test_terminate_keeps_serving_through_a_pre_stop_sleep(loop: LoopThread, runtime: PodRuntime) -> None:
    """During a preStop sleep the pod stays ready and answers; then it is gone and its port refuses."""
    port = start_pod(loop, runtime, "pre-1")
    key = "lab-primary/ns/pre-1"

    async def scenario() -> tuple[list[int], bool, float]:
        began = time.monotonic()
        done = asyncio.ensure_future(runtime.terminate(key, 30, {"exec": {"command": ["sleep", "0.5"]}}))
        await asyncio.sleep(0.2)
        answers = [status for status, _, _ in await fetch_many(f"http://127.0.0.1:{port}/", 3)]
        ready = bool(runtime.status(key) and runtime.status(key).ready)  # type: ignore[union-attr]
        await done
        return answers, ready, time.monotonic() - began

    answers, ready, took = loop.run(scenario())
    assert answers == [200] * 3 and ready
    assert 0.5 <= took < 1.5, took
    assert runtime.status(key) is None
    with pytest.raises(OSError):
        loop.run(asyncio.open_connection("127.0.0.1", port))


def test_pre_stop_http_get_is_sent_to_the_pod(
    loop: LoopThread, runtime: PodRuntime, recorder: RequestRecorder
) -> None:
    """A preStop httpGet naming the container port by name reaches the pod's real port before SIGTERM."""
    port = start_pod(loop, runtime, "hook-1")
    hook = {"httpGet": {"path": "/drain", "port": "http"}}
    loop.run(runtime.terminate("lab-primary/ns/hook-1", 30, hook))
    expected = pod_labels("hook-1") | {"instance": f"hook-1:{port}"}
    assert recorded(recorder) == {tuple(sorted(expected.items())): {200: 1}}


def test_abrupt_image_resets_in_flight_requests_at_sigterm(loop: LoopThread, runtime: PodRuntime) -> None:
    """The default (abrupt) image exits at SIGTERM: the request in flight gets no answer, only a reset."""
    port = start_pod(loop, runtime, "abrupt-1", image="ghcr.io/acme/app:slow")

    async def scenario() -> tuple[bytes, BaseException | None, float]:
        reader, writer = await _in_flight(port)
        await asyncio.sleep(0.03)
        began = time.monotonic()
        await runtime.terminate("lab-primary/ns/abrupt-1", 30)
        took = time.monotonic() - began
        data, error = await _read_all(reader)
        writer.close()
        return data, error, took

    data, error, took = loop.run(scenario())
    assert data == b"" and isinstance(error, ConnectionResetError)
    assert took < 0.05


def test_graceful_image_answers_in_flight_with_connection_close(
    loop: LoopThread, runtime: PodRuntime, graceful_image: str
) -> None:
    """A graceful image finishes the request in flight, says Connection: close, closes it, and refuses new ones."""
    port = start_pod(loop, runtime, "graceful-1", image=graceful_image)

    async def scenario() -> tuple[bytes, BaseException | None, bool]:
        reader, writer = await _in_flight(port)
        await asyncio.sleep(0.05)
        done = asyncio.ensure_future(runtime.terminate("lab-primary/ns/graceful-1", 30))
        await asyncio.sleep(0.05)
        try:
            await asyncio.open_connection("127.0.0.1", port)
            refused = False
        except OSError:
            refused = True
        data, error = await _read_all(reader)
        writer.close()
        await done
        return data, error, refused

    data, error, refused = loop.run(scenario())
    head, _, body = data.partition(b"\r\n\r\n")
    assert error is None and head.startswith(b"HTTP/1.1 200") and b"connection: close" in head.lower()
    assert b'"version":"graceful"' in body
    assert refused


def test_grace_period_cuts_pre_stop_and_kills_what_is_left(
    loop: LoopThread, runtime: PodRuntime, graceful_image: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A preStop longer than the grace period is cut; after SIGTERM's minimum window SIGKILL resets the rest."""
    monkeypatch.setattr(pods_module, "MIN_TERM_WINDOW_S", 0.1)
    port = start_pod(loop, runtime, "bounded-1", image=graceful_image)
    hook = {"exec": {"command": ["sleep", "30"]}}

    async def scenario() -> tuple[bytes, BaseException | None, float]:
        began = time.monotonic()
        done = asyncio.ensure_future(runtime.terminate("lab-primary/ns/bounded-1", 0.25, hook))
        await asyncio.sleep(0.2)
        reader, writer = await _in_flight(port)  # 300 ms answer: SIGKILL comes first
        await done
        took = time.monotonic() - began
        data, error = await _read_all(reader)
        writer.close()
        return data, error, took

    data, error, took = loop.run(scenario())
    assert data == b"" and isinstance(error, ConnectionResetError)
    assert 0.3 <= took < 0.6, took


def test_stop_cuts_a_termination_short(loop: LoopThread, runtime: PodRuntime) -> None:
    """The lab's own stop ends a pod in a long preStop at once (greenlight lab down stays quick)."""
    start_pod(loop, runtime, "hurry-1")
    key = "lab-primary/ns/hurry-1"

    async def scenario() -> float:
        terminating = asyncio.ensure_future(
            runtime.terminate(key, 60, {"exec": {"command": ["sleep", "60"]}})
        )
        await asyncio.sleep(0.1)
        began = time.monotonic()
        await runtime.stop(key, grace_s=0.1)
        await terminating
        return time.monotonic() - began

    assert loop.run(scenario()) < 0.5
    assert runtime.status(key) is None


def test_shutdown_behaviour_is_validated_and_part_of_the_digest() -> None:
    """shutdown is graceful or abrupt (default); graceful changes the digest, the default keeps old digests."""
    with pytest.raises(ValueError, match="shutdown"):
        Behaviour(version="v1", shutdown="polite")
    assert Behaviour(version="v1").shutdown == "abrupt"
    abrupt, _, config = build_manifest("acme/app", Behaviour(version="v1"))
    graceful, _, graceful_config = build_manifest("acme/app", Behaviour(version="v1", shutdown="graceful"))
    assert abrupt != graceful
    label = json.loads(json.loads(config)["config"]["Labels"][BEHAVIOUR_LABEL])
    assert "shutdown" not in label  # images pushed before the field existed keep their digest
    assert (
        json.loads(json.loads(graceful_config)["config"]["Labels"][BEHAVIOUR_LABEL])["shutdown"] == "graceful"
    )
    back = Behaviour.from_dict(Behaviour(version="v1", shutdown="graceful").to_dict())
    assert back.shutdown == "graceful"
