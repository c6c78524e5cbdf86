"""Fixtures: the Cloudflare stand-in served over real HTTP from an event-loop thread of its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from greenlight_lab.cloudflare import CloudflareStandIn
from greenlight_lab.faults import FaultRegistry
from tests.loop_thread import LoopThread

TOKEN = "conformance-token-dns-edit-0000000000001"
READ_ONLY = "conformance-token-dns-read-0000000000002"


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
    loop = LoopThread("cloudflare-loop")
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
