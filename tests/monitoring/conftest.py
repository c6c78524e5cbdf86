"""Fixtures: one lab Monitoring server per test module, fed with known synthetic traffic."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from greenlight.clients.monitoring import MonitoringClient, make_metric_client
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.metrics import RequestRecorder
from greenlight_lab.monitoring import MonitoringServer

from .monitoring_support import PROJECT, Traffic, record_traffic


@pytest.fixture(scope="module")
def recorder() -> RequestRecorder:
    return RequestRecorder()


@pytest.fixture(scope="module")
def faults() -> FaultRegistry:
    return FaultRegistry()


@pytest.fixture(scope="module")
def server(recorder: RequestRecorder, faults: FaultRegistry) -> Iterator[MonitoringServer]:
    srv = MonitoringServer(recorder, faults, project_id=PROJECT)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def traffic(recorder: RequestRecorder) -> Traffic:
    return record_traffic(recorder, int(time.time()) - 600)


@pytest.fixture(scope="module")
def metric_client(server: MonitoringServer):  # type: ignore[no-untyped-def]
    return make_metric_client(f"127.0.0.1:{server.port}", insecure=True)


@pytest.fixture(scope="module")
def monitoring(metric_client) -> MonitoringClient:  # type: ignore[no-untyped-def]
    return MonitoringClient(PROJECT, metric_client, timeout_s=2.0)


@pytest.fixture(autouse=True)
def _no_faults_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "faults" in request.fixturenames:
        request.getfixturevalue("faults").clear()
