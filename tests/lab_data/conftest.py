"""Fixtures for the lab's data plane: one event loop on a thread hosting pods, proxies and fronts.

Tests run in the main thread and drive the loop with ``loop.run(coro)``, the way the lab
daemon hosts everything in one asyncio process while clients talk to it over sockets.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenlight_lab.catalogue import Catalogue
from greenlight_lab.metrics import RequestRecorder
from greenlight_lab.pods import PodRuntime
from greenlight_lab.proxy import ServiceProxies

from .helpers import IMAGES, LoopThread


@pytest.fixture(scope="session")
def loop() -> Iterator[LoopThread]:
    """The shared event loop thread."""
    thread = LoopThread("lab-data-loop", timeout=30.0)
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    """An in-memory catalogue holding the test images."""
    cat = Catalogue()
    for ref, behaviour in IMAGES.items():
        cat.push(ref, behaviour)
    return cat


@pytest.fixture()
def recorder() -> RequestRecorder:
    """A fresh request recorder per test."""
    return RequestRecorder()


@pytest.fixture()
def runtime(loop: LoopThread, catalogue: Catalogue, recorder: RequestRecorder) -> Iterator[PodRuntime]:
    """A pod runtime on the shared loop; every pod is stopped after the test."""
    rt = PodRuntime(catalogue, recorder)
    yield rt
    loop.run(rt.close())


@pytest.fixture()
def proxies(loop: LoopThread) -> Iterator[ServiceProxies]:
    """Service proxies on the shared loop, closed after the test."""
    sp = loop.call(ServiceProxies)
    yield sp
    loop.run(sp.close())
