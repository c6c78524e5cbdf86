"""Fixtures: the Cloudflare stand-in served over real HTTP from an event-loop thread of its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from greenlight_lab.cloudflare import CloudflareStandIn
from greenlight_lab.faults import FaultRegistry

T = TypeVar("T")
TOKEN = "conformance-token-dns-edit-0000000000001"
READ_ONLY = "conformance-token-dns-read-0000000000002"


class LoopThread:
    """An asyncio loop running forever on a daemon thread; ``run`` executes a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="cloudflare-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@dataclass
class Api:
    standin: CloudflareStandIn
    faults: FaultRegistry

    @property
    def url(self) -> str:
        return self.standin.base_url


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    """A Cloudflare stand-in with an editing and a read-only token, seeded as the lab's."""
    loop = LoopThread()
    faults = FaultRegistry()
    standin = CloudflareStandIn(faults, tokens={TOKEN: True, READ_ONLY: False})
    loop.run(standin.start())
    yield Api(standin, faults)
    loop.run(standin.stop())
    loop.close()


@pytest.fixture(autouse=True)
def fresh(api: Api) -> Iterator[None]:
    """Each test starts from the seed, with no faults."""
    api.standin.seed()
    api.standin.requests.clear()
    api.faults.clear()
    yield
    api.faults.clear()
