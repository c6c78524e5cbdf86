"""The DNS provider's records (Cloudflare): the production record a failover moves, the drill's record.

Each task opens the provider with the profile's ``dns`` section: the API token is
``$CLOUDFLARE_API_TOKEN``, else the Prefect Secret block ``dns.token_secret_block`` (never logged).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from prefect import task

from greenlight.clients.dns import TOKEN_ENV, CloudflareDns
from greenlight.core.dns import (
    DRILL_COMMENT,
    Record,
    drill_record_name,
    drill_record_problem,
    is_drill_record,
    normalise,
)
from greenlight.errors import Conflict, Forbidden, GateFailed
from greenlight.settings import Dns
from greenlight.tasks.blocks import read_secret_block
from greenlight.tasks.policy import FRESH, RETRIES


def api_token(dns: Dns) -> str:
    """``$CLOUDFLARE_API_TOKEN``, else the profile's Secret block; Forbidden naming both when neither."""
    value = os.environ.get(TOKEN_ENV)
    if value:
        return value
    if dns.token_secret_block:
        block = read_secret_block(dns.token_secret_block)
        if block:
            return str(block)
    raise Forbidden(
        f"no Cloudflare API token for zone {dns.zone}: set ${TOKEN_ENV}, or put it in the Prefect Secret "
        f"block {dns.token_secret_block or '(dns.token_secret_block is not set)'}"
    )


@contextmanager
def zone(dns: Dns) -> Iterator[tuple[CloudflareDns, str]]:
    """The provider's client and the id of the profile's zone."""
    with CloudflareDns(api_token(dns)) as client:
        yield client, client.zone_id(dns.zone)


@task(name="dns-read-record", **FRESH, **RETRIES)
def read_record(dns: Dns, name: str | None = None) -> list[Record]:
    """Every record named ``name`` (default: the production record), of any type."""
    wanted = name or dns.record
    with zone(dns) as (client, zid):
        return client.records(zid, dns.zone, name=normalise(wanted))


@task(name="dns-point-record", **FRESH, **RETRIES)
def point_record(dns: Dns, record: Record, content: str, ttl: int) -> Record:
    """Point ``record`` at ``content`` with ``ttl`` (an idempotent edit); what the API answered."""
    with zone(dns) as (client, zid):
        return client.point(zid, dns.zone, record, content, ttl)


@task(name="dns-read-back", **FRESH, **RETRIES)
def read_back(dns: Dns, record: Record) -> Record | None:
    """``record`` read again by its id (None: it is gone)."""
    with zone(dns) as (client, zid):
        return client.get(zid, dns.zone, record.id, record.name)


@task(name="dns-drill-record", **FRESH, **RETRIES)
def create_drill_record(dns: Dns, drill_id: str) -> str:
    """Create the drill's record (``dns.drill_record`` in the zone) at the DR target, then read it
    back through the API and check that it holds the DR target; the step's detail.

    A create whose answer was lost and is retried finds its own record (the comment names the drill)."""
    name = drill_record_name(dns.drill_record, drill_id, dns.zone)
    comment = f"{DRILL_COMMENT} {drill_id}"
    with zone(dns) as (client, zid):
        try:
            client.create(zid, dns.zone, name, dns.type, dns.dr_target, dns.ttl, comment)
        except Conflict:
            mine = [r for r in client.records(zid, dns.zone, name=name) if r.comment == comment]
            if not mine:
                raise
        read = client.records(zid, dns.zone, name=name)
    problem = drill_record_problem(name, dns.type, dns.dr_target, read)
    if problem:
        raise GateFailed(f"the drill's DNS record does not resolve to DR: {problem}")
    return f"{name} {dns.type} {dns.dr_target} (TTL {dns.ttl}) created in {dns.zone}; read back through the API: it resolves to the DR target"


def _drill_records(client: CloudflareDns, zid: str, dns: Dns) -> list[Record]:
    return [
        r
        for r in client.records(zid, dns.zone)
        if is_drill_record(r.name, dns.drill_record, dns.zone) and r.comment.startswith(DRILL_COMMENT)
    ]


@task(name="dns-drill-records-remove", **FRESH, **RETRIES)
def remove_drill_records(dns: Dns) -> list[str]:
    """Delete every drill record in the zone: this drill's and any an earlier, crashed drill left
    (a name ``dns.drill_record`` makes, whose comment says a drill made it); the names deleted."""
    with zone(dns) as (client, zid):
        return [
            f"{r.name} ({r.comment})"
            for r in _drill_records(client, zid, dns)
            if client.delete(zid, dns.zone, r)
        ]


@task(name="dns-drill-records-left", **FRESH, **RETRIES)
def drill_records_left(dns: Dns) -> list[str]:
    """The drill records still in the zone."""
    with zone(dns) as (client, zid):
        return [f"DNS record {r.name}" for r in _drill_records(client, zid, dns)]
