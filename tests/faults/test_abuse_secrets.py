"""Abuse cases around secrets: a registry that names a token realm on another host, and a
pre-deploy Job whose logs carry a Slack token.

Both are faults by hand (the lab's rules cannot express them). ``data lost`` is what leaked: the
requests that brought the registry's credentials to the other host, and the copies of the token
found in the release's error, its Slack thread, its event and its report.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from greenlight.clients.registry import RegistryClient
from greenlight.core.images import parse_image_ref
from greenlight_lab.catalogue import Behaviour, Catalogue
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.registry import RegistryStandIn
from greenlight_lab.state import LabState
from tests.flows_release.support import fail_on_a_job_logging, job_environments
from tests.registry.realm_spy import RealmSpy

if TYPE_CHECKING:
    from .conftest import Fault

PAT = "ghp_" + "AbusedPersonalAccessToken0123456789"  # fake, of a real PAT's shape


@contextmanager
def registry_stand_in(directory: Path) -> Iterator[RegistryStandIn]:
    """The lab's registry stand-in on 127.0.0.1, served from an event loop of its own."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="abuse-registry", daemon=True)
    thread.start()
    registry = RegistryStandIn(Catalogue(directory / "images.json"), FaultRegistry())
    asyncio.run_coroutine_threadsafe(registry.start(), loop).result(10)
    try:
        yield registry
    finally:
        asyncio.run_coroutine_threadsafe(registry.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_registry_token_realm_on_another_host_gets_no_credentials(fault: Fault, tmp_path: Path) -> None:
    """The registry's challenge names a token realm on 127.0.0.2: the client asks it anonymously
    (a public image still resolves) and that host never sees the credentials."""
    fault.describe("registry: a token realm on another host (credentials withheld)")
    with registry_stand_in(tmp_path) as registry, RealmSpy(upstream=registry.base_url) as spy:
        images = [f"ghcr.io/abuse/app-{i}:v1" for i in range(3)]  # a scope each: each asks the realm
        digests = [registry.catalogue.push(image, Behaviour("v1")) for image in images]
        registry.realm = f"{spy.url}/token"
        client = RegistryClient(mirrors={"ghcr.io": registry.base_url}, credentials={"ghcr.io": ("bot", PAT)})
        with client:
            for image, digest in zip(images, digests, strict=True):
                fault.injected_by_hand()
                assert client.resolve(parse_image_ref(image)) == digest
    assert len(spy.seen) == 3
    leaked = sum(1 for a in spy.authorizations() if a is not None)
    assert fault.measured_loss("requests carrying credentials to the other host", leaked) == 0


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Staging with a pre-deploy Job whose image the case chooses."""
    with job_environments(lab, tmp_path_factory.mktemp("abuse-envs")) as envs:
        yield envs


@pytest.mark.lab
def test_pre_deploy_job_logging_a_slack_token_is_masked_in_slack_and_the_report(
    fault: Fault, lab: LabState, envdir: Path
) -> None:
    """A failing migration Job's pods log a Slack token (the lab's pods log their image reference,
    here tagged with it): the release stops, and its error, Slack thread, event and report quote
    the logs with the token masked."""
    fault.describe("pre-deploy Job logs a Slack token (redacted in Slack and the report)")
    token = f"xoxb-{uuid.uuid4().int % 10**10:010d}-{uuid.uuid4().int % 10**10:010d}-{uuid.uuid4().hex[:10]}AbusedSlackTok"
    fault.injected_by_hand()
    said = fail_on_a_job_logging(lab, envdir, token)
    rid, slack, events, report = said.release_id, said.slack, said.events, said.report
    copies = sum(text.count(token) for text in [said.error, *slack, *events, report])
    assert fault.measured_loss("copies of the token in the error, Slack, events and report", copies) == 0
    assert "migrate:xoxb-***" in said.error  # the logs are quoted, masked
    assert any(rid in t and "pre-deploy job" in t for t in slack) and events and "pre-deploy job" in report
