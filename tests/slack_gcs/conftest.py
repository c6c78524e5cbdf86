"""Fixtures: the Slack stand-in on a background event loop, and the real fake-gcs-server binary.

Both are started once per session on free 127.0.0.1 ports; tests talk to them through the
official SDK clients over real sockets.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from greenlight.clients.gcs import GcsClient
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.gcs import ensure_buckets, start_fake_gcs, stop_fake_gcs
from greenlight_lab.slack import SlackStandIn
from tests.loop_thread import LoopThread

SLACK_TOKEN = "xoxb-lab-0123456789-secretsecret"
CHANNEL = "#releases"
BUCKETS = ["lab-backups", "lab-backups-dr"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    lt = LoopThread("slack-gcs-test-loop")
    yield lt
    lt.close()


@dataclass
class SlackLab:
    standin: SlackStandIn
    faults: FaultRegistry
    base_url: str
    token: str = SLACK_TOKEN
    channel: str = CHANNEL

    @property
    def url(self) -> str:
        return self.base_url.removesuffix("api/")


@pytest.fixture(scope="session")
def slack_lab(loop_thread: LoopThread) -> Iterator[SlackLab]:
    faults = FaultRegistry()
    standin = SlackStandIn(faults, known_channels=["releases", "lab-alerts"])
    port = loop_thread.run(standin.start())
    yield SlackLab(standin, faults, f"http://127.0.0.1:{port}/api/")
    loop_thread.run(standin.stop())


@pytest.fixture
def slack(slack_lab: SlackLab) -> Iterator[SlackLab]:
    """The session's Slack stand-in with no faults left over from another test."""
    slack_lab.faults.clear()
    yield slack_lab
    slack_lab.faults.clear()


@dataclass
class GcsLab:
    endpoint: str
    proc: Any

    def storage_client(self) -> storage.Client:
        return storage.Client(
            project="lab", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.endpoint}
        )


@pytest.fixture(scope="session")
def gcs_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsLab]:
    port = free_port()
    log = tmp_path_factory.mktemp("fake-gcs") / "fake-gcs.log"
    proc = start_fake_gcs(port, f"127.0.0.1:{port}", log)
    endpoint = f"http://127.0.0.1:{port}"
    ensure_buckets(endpoint, "lab", BUCKETS)
    yield GcsLab(endpoint, proc)
    stop_fake_gcs(proc)


@pytest.fixture(scope="session")
def gcs(gcs_lab: GcsLab) -> GcsClient:
    return GcsClient(client=gcs_lab.storage_client(), timeout_s=20)


class FaultyFront:
    """A forwarding HTTP front to fake-gcs-server that can fail, stall or corrupt what it relays.

    Faults come from ``faults`` (target "gcs", verb the lower-case HTTP method). With
    ``corrupt`` set it flips the first byte of every object download. It keeps the ``Host``
    header, as the lab's fault front does, so resumable-upload URLs point back through it.
    """

    def __init__(self, upstream: str, faults: FaultRegistry) -> None:
        self.upstream = upstream
        self.faults = faults
        self.corrupt = False
        self.corrupted = 0
        self._runner: web.AppRunner | None = None

    async def start(self, port: int) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        rule = self.faults.take("gcs", request.method.lower(), request.path)
        if rule is not None and rule.mode == "stall":
            await asyncio.sleep(rule.stall_s)
        elif rule is not None:
            return web.json_response(
                {"error": {"code": rule.status, "message": "test fault"}}, status=rule.status
            )
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding")
        }
        async with (
            ClientSession(auto_decompress=False) as session,
            session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=await request.read()
            ) as resp,
        ):
            body = bytearray(await resp.read())
            out_headers = {
                k: v
                for k, v in resp.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "connection")
            }
        first_range = resp.headers.get("Content-Range", "bytes 0-").startswith("bytes 0-")
        is_download = request.path.startswith("/download/") and resp.status in (200, 206)
        if self.corrupt and is_download and body and first_range:
            body[0] ^= 0xFF
            self.corrupted += 1
        return web.Response(status=resp.status, headers=out_headers, body=bytes(body))


@dataclass
class FrontedGcs:
    client: GcsClient
    front: FaultyFront
    front_url: str


@pytest.fixture(scope="module")
def fronted_gcs_server(
    loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FrontedGcs]:
    """A second fake-gcs-server whose public host is a FaultyFront; the client talks to the front."""
    gcs_port, front_port = free_port(), free_port()
    front_url = f"http://127.0.0.1:{front_port}"
    front = FaultyFront(f"http://127.0.0.1:{gcs_port}", FaultRegistry())
    loop_thread.run(front.start(front_port))
    log = tmp_path_factory.mktemp("fake-gcs-fronted") / "fake-gcs.log"
    proc = start_fake_gcs(gcs_port, f"127.0.0.1:{front_port}", log)
    ensure_buckets(front_url, "lab", ["lab-fronted"])
    client = storage.Client(
        project="lab", credentials=AnonymousCredentials(), client_options={"api_endpoint": front_url}
    )
    yield FrontedGcs(GcsClient(client=client, timeout_s=3), front, front_url)
    stop_fake_gcs(proc)
    loop_thread.run(front.stop())


@pytest.fixture
def fronted_gcs(fronted_gcs_server: FrontedGcs) -> Iterator[FrontedGcs]:
    """The fronted server with no faults and no corruption left over from another test."""
    fronted_gcs_server.front.faults.clear()
    fronted_gcs_server.front.corrupt = False
    yield fronted_gcs_server
    fronted_gcs_server.front.faults.clear()
    fronted_gcs_server.front.corrupt = False


@pytest.fixture(scope="session")
def write_random() -> Callable[[Path, int], Path]:
    """A function filling a path with pseudo-random bytes, written in 1 MiB pieces."""
    return _write_random


def _write_random(path: Path, size: int) -> Path:
    rng = random.Random(size)
    with path.open("wb") as fh:
        left = size
        while left:
            n = min(left, 1 << 20)
            fh.write(rng.randbytes(n))
            left -= n
    return path
