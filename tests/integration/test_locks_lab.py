"""greenlight.tasks.locks.hold against the lab's real Prefect server, directly and through a
forwarder that answers the slot request slowly, as a loaded server does: a bounded wait is a wait
for a holder, so a lock nobody holds is granted however slowly the API answers, and a lock
somebody holds is LockHeld after the wait."""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Iterator

import aiohttp
import pytest
from aiohttp import web
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.settings import PREFECT_API_URL, temporary_settings

from greenlight.errors import LockHeld, NotFound
from greenlight.tasks.locks import held_slots, hold
from greenlight_lab.serving import close, serve
from greenlight_lab.state import LabState
from tests.loop_thread import LoopThread

pytestmark = pytest.mark.lab

STALL_S = 3.0  # longer than the waits below: Prefect counts the API's answer inside its timeout
WAIT_S = 1.0
HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding"}


class SlowPrefect:
    """Forwards every request to the lab's Prefect API; the next ``stalls`` slot requests
    (``…/increment-with-lease``) are held ``STALL_S`` first."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.stalls = 0
        self.stalled = 0
        self.loop = LoopThread("slow-prefect", timeout=30)
        self.runner, port = self.loop.run(self._start())
        self.url = f"http://127.0.0.1:{port}/api"

    async def _start(self) -> tuple[web.AppRunner, int]:
        self.session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._forward)
        return await serve(app, "127.0.0.1", 0)

    async def _forward(self, request: web.Request) -> web.Response:
        if request.path.endswith("/increment-with-lease") and self.stalls > 0:
            self.stalls -= 1
            self.stalled += 1
            await asyncio.sleep(STALL_S)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        target = self.upstream.removesuffix("/api") + request.path_qs
        async with self.session.request(
            request.method, target, data=await request.read(), headers=headers
        ) as r:
            body = await r.read()
            kept = {k: v for k, v in r.headers.items() if k.lower() not in HOP}
            return web.Response(status=r.status, body=body, headers=kept)

    def close(self) -> None:
        async def stop() -> None:
            await close(self.runner)
            await self.session.close()

        self.loop.run(stop())
        self.loop.close()


@pytest.fixture
def lock(lab: LabState) -> Iterator[str]:
    """A global concurrency limit of one slot, its own for the test (Prefect keeps one
    acquisition service per limit name, with the API address it was started with)."""
    name = f"greenlight-test-lock-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    yield name
    with get_client(sync_client=True) as client:
        client.delete_global_concurrency_limit_by_name(name)


@pytest.fixture
def slow_api(lab: LabState) -> Iterator[SlowPrefect]:
    """The lab's Prefect API behind the slow forwarder; Prefect's API URL points at it for the test."""
    proxy = SlowPrefect(os.environ["PREFECT_API_URL"])
    with temporary_settings(updates={PREFECT_API_URL: proxy.url}):
        yield proxy
    proxy.close()


def test_a_free_lock_is_granted_through_an_api_slower_than_the_wait(lock: str, slow_api: SlowPrefect) -> None:
    """Nobody holds the lock; the API takes 3 s to grant it and the caller waits 1 s for a
    holder: the lock is granted (before, Prefect's timeout fired and cleanup said a release ran)."""
    slow_api.stalls = 1
    with hold(lock, lease_duration=60, timeout_seconds=WAIT_S):
        assert held_slots(lock) == 1
    assert slow_api.stalled == 1  # the slot request did go through the stall
    assert held_slots(lock) == 0


def test_a_held_lock_is_lock_held_after_the_wait(lock: str) -> None:
    """While another holder keeps the lock, a bounded wait ends in LockHeld naming the lock, and
    the holder keeps its slot."""
    taken, done = threading.Event(), threading.Event()

    def holder() -> None:
        with hold(lock, lease_duration=60):
            taken.set()
            done.wait(60)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    try:
        assert taken.wait(30)
        with (
            pytest.raises(LockHeld, match=f"{lock} is held: not acquired within 1 s"),
            hold(lock, lease_duration=60, timeout_seconds=WAIT_S),
        ):
            pytest.fail("acquired a lock another holder keeps")
        assert held_slots(lock) == 1
    finally:
        done.set()
        t.join(30)
    assert held_slots(lock) == 0


def test_a_missing_lock_is_not_found_naming_setup(lab: LabState) -> None:
    """A limit that does not exist is NotFound naming it and `greenlight setup`, for a bounded
    wait and for an unbounded one."""
    name = f"greenlight-test-missing-{uuid.uuid4().hex[:8]}"
    for wait in (WAIT_S, None):
        with (
            pytest.raises(NotFound, match=rf"{name}.*greenlight setup"),
            hold(name, lease_duration=60, timeout_seconds=wait),
        ):
            pytest.fail("held a lock that does not exist")
