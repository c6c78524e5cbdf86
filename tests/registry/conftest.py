"""Fixtures: the registry stand-in served over real HTTP from its own event-loop thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.registry import RegistryClient
from greenlight_lab.catalogue import Catalogue
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.registry import RegistryStandIn
from tests.loop_thread import LoopThread


@dataclass
class Lab:
    """A running stand-in with its catalogue, faults and URL."""

    catalogue: Catalogue
    faults: FaultRegistry
    registry: RegistryStandIn
    url: str

    def client(self, **kwargs: Any) -> RegistryClient:
        """A client whose ghcr.io and docker.io are mirrored to this stand-in."""
        kwargs.setdefault("mirrors", {"ghcr.io": self.url, "docker.io": self.url})
        kwargs.setdefault("credentials", {})
        return RegistryClient(**kwargs)

    def requests_since(self, mark: int) -> list[Any]:
        return list(self.registry.requests[mark:])


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread("registry-loop")
    yield thread
    thread.close()


@pytest.fixture(scope="session")
def start_lab(
    loop_thread: LoopThread, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Lab]]:
    """Factory: start a stand-in (own catalogue file, own faults) with the given options."""
    started: list[RegistryStandIn] = []

    def start(**options: Any) -> Lab:
        path: Path = tmp_path_factory.mktemp("catalogue") / "images.json"
        catalogue, faults = Catalogue(path), FaultRegistry()
        registry = RegistryStandIn(catalogue, faults, **options)
        port = loop_thread.run(registry.start())
        started.append(registry)
        return Lab(catalogue, faults, registry, f"http://127.0.0.1:{port}")

    yield start
    for registry in started:
        loop_thread.run(registry.stop())


@pytest.fixture(scope="session")
def lab(start_lab: Callable[..., Lab]) -> Lab:
    """The shared stand-in (auth required, anonymous pull allowed)."""
    return start_lab()


@pytest.fixture(autouse=True)
def _clear_faults(lab: Lab) -> Iterator[None]:
    yield
    lab.faults.clear()
    lab.registry.send_digest_header = True
    lab.registry.realm = None
