"""Each greenlight client round-trips against the lab over real connections, configured only by `lab env`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from greenlight.clients.gcs import GcsClient
from greenlight.clients.kube import Kube
from greenlight.clients.monitoring import MonitoringClient, make_metric_client
from greenlight.clients.postgres import Postgres
from greenlight.clients.registry import RegistryClient
from greenlight.clients.slack import Notifier
from greenlight.core.images import parse_image_ref
from greenlight.core.manifests import DIGESTS
from greenlight.errors import NotFound
from greenlight.settings import load_profile
from greenlight_lab import supervisor
from greenlight_lab.load import run_load
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab


def test_gcs_holds_a_week_of_dumps_with_cross_region_copies(lab: LabState, tmp_path) -> None:
    """The primary bucket holds seven nightly dumps, oldest first, each with a same-named, same-hash copy."""
    backups = load_profile("production").backups
    assert backups is not None
    gcs = GcsClient()
    primary = sorted(gcs.list(backups.bucket, backups.prefix), key=lambda o: o.name)
    replica = {o.name: o for o in gcs.list(backups.replica_bucket or "", backups.prefix)}
    assert len(primary) == 7
    for obj in primary:
        assert replica[obj.name].md5_b64 == obj.md5_b64
    newest = primary[-1]
    dump_time = datetime.fromisoformat(newest.metadata["dump_time"])
    assert datetime.now(UTC) - dump_time < timedelta(seconds=backups.rpo_target_s)
    got = gcs.download_to(backups.bucket, newest.name, tmp_path / "newest.sql.gz")
    assert got.size == newest.size and got.md5_b64 == newest.md5_b64
    with pytest.raises(NotFound, match="no-such-bucket"):
        gcs.list("no-such-bucket")


def test_postgres_app_database_is_seeded(lab: LabState) -> None:
    """The application database holds a few hundred thousand rows across the app's tables."""
    pg = Postgres(lab.env["GREENLIGHT_DATABASE_URL"])
    total = sum(
        int(pg.scalar(f"SELECT count(*) FROM {t}"))
        for t in ("users", "posts", "scheduled_posts", "platform_connections")
    )
    assert total >= 200_000
    assert pg.server_major_version() >= 16


def test_registry_resolves_baseline_tag_to_the_deployed_digest(lab: LabState) -> None:
    """The registry client, through the lab's mirror, resolves the baseline tag to the digest the live Service records."""
    kube = Kube.connect(context="lab-primary")
    try:
        live = kube.get("services", "backend", "sma-staging")
    finally:
        kube.close()
    digest = json.loads(live["metadata"]["annotations"][DIGESTS])["backend"]
    with RegistryClient() as reg:
        assert reg.resolve(parse_image_ref("ghcr.io/sma-platform/backend:baseline")) == digest
        with pytest.raises(NotFound, match="no-such-tag"):
            reg.resolve(parse_image_ref("ghcr.io/sma-platform/backend:no-such-tag"))


def test_slack_messages_reach_the_stand_in_in_threads(lab: LabState) -> None:
    """A notifier's message and its thread reply are recorded by the lab's Slack."""
    marker = uuid.uuid4().hex
    n = Notifier(token=None, channel="#releases")
    ts = n.start_thread(f"release {marker} started")
    assert ts
    n.post(f"release {marker} switched", thread_ts=ts)
    msgs = [m for m in supervisor.control(lab, "GET", "/slack") if marker in (m.get("text") or "")]
    assert [m.get("thread_ts") for m in msgs] == [None, ts]


def test_monitoring_sees_the_requests_the_proxy_served(lab: LabState) -> None:
    """Requests served through the live Service show up in Cloud Monitoring as GMP counters of the live colour."""
    url = supervisor.control(lab, "GET", "/urls")["lab-primary/sma-staging/frontend"]
    # a series' first scrape is its reset point (GMP, and the lab's Monitoring): what a pod served
    # before it is never counted. Every pod behind the Service must have a visible series before
    # the requests counted here (a fresh lab's, or a pod an earlier test restarted, may not have
    # one yet). The data plane pins each connection to one random pod, so one short burst can miss
    # a pod: send bursts until Monitoring shows a series for each pod the Service selects.
    kube = Kube.connect(context="lab-primary")
    try:
        selector = kube.get("services", "frontend", "sma-staging")["spec"]["selector"]
        pods = kube.items("pods", "sma-staging", ",".join(f"{k}={v}" for k, v in selector.items()))
    finally:
        kube.close()
    names = {p["metadata"]["name"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    colour = selector["color"]
    assert names, selector
    mon = MonitoringClient("lab-project", make_metric_client())
    flt = (
        'metric.type="prometheus.googleapis.com/http_requests_total/counter" '
        f'resource.labels.namespace="sma-staging" metric.labels.top_level_controller_name="frontend-{colour}"'
    )
    warm_from, deadline = datetime.now(UTC), time.monotonic() + 60
    seen: set[str] = set()
    while not names <= seen:
        assert time.monotonic() < deadline, f"no Monitoring series after 60 s for pods {sorted(names - seen)}"
        assert asyncio.run(run_load(url + "/", rps=50, seconds=1)).failed == 0
        time.sleep(lab.scrape_interval_s + lab.ingestion_delay_s + 0.5)
        groups = mon.sum_delta(flt, warm_from, datetime.now(UTC), ["metric.label.pod"])
        seen = {g.labels.get("pod", "") for g in groups}
    start = datetime.now(UTC)
    report = asyncio.run(run_load(url + "/", rps=100, seconds=2))
    assert report.failed == 0
    # the points arrive one scrape later and are readable after the ingestion delay (as in Cloud
    # Monitoring, how soon varies): read until they are all there, for at most 30 s (a starved lab scrapes late)
    deadline = time.monotonic() + 30
    while True:
        groups = mon.sum_delta(flt, start, datetime.now(UTC), ["metric.label.color"])
        by_colour = {g.labels.get("color"): g.value for g in groups}
        if by_colour.get(colour, 0) >= report.sent * 0.9 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert by_colour.get(colour, 0) >= report.sent * 0.9, (colour, by_colour, report.sent)
