"""Helpers of the DNS tests against the lab: the lab's zone read through Cloudflare's SDK, faults."""

from __future__ import annotations

import os
from typing import Any

import cloudflare

from greenlight_lab import supervisor
from greenlight_lab.cloudflare import LAB_RECORD, LAB_ZONE
from greenlight_lab.state import LabState


def sdk(token: str | None = None) -> cloudflare.Cloudflare:
    """Cloudflare's SDK on the lab's stand-in (the lab's token, or ``token``)."""
    return cloudflare.Cloudflare(
        api_token=token or os.environ["CLOUDFLARE_API_TOKEN"],
        base_url=os.environ["GREENLIGHT_CLOUDFLARE_API_URL"],
        max_retries=0,
    )


def zone_id() -> str:
    (zone,) = list(sdk().zones.list(name=LAB_ZONE))
    return str(zone.id)


def records(name: str | None = None) -> list[Any]:
    """The lab zone's records (``name`` only when given), read through the SDK."""
    params: dict[str, Any] = {"name": {"exact": name}} if name else {}
    return list(sdk().dns.records.list(zone_id=zone_id(), **params))


def production_content() -> str:
    (record,) = records(LAB_RECORD)
    return str(record.content)


def set_production(content: str) -> None:
    (record,) = records(LAB_RECORD)
    sdk().dns.records.edit(record.id, zone_id=zone_id(), name=LAB_RECORD, type="A", content=content, ttl=60)


def drill_records() -> list[str]:
    return sorted(r.name for r in records() if r.name.startswith("drill-"))


def reset(lab: LabState) -> None:
    """The lab's zone as seeded (production at the primary), no Cloudflare faults."""
    supervisor.control(lab, "DELETE", "/faults?target=cloudflare")
    supervisor.control(lab, "POST", "/cloudflare/reset")


def fault(lab: LabState, **rule: Any) -> int:
    """A Cloudflare fault rule (see greenlight_lab.faults); its id."""
    return int(supervisor.control(lab, "POST", "/faults", {"target": "cloudflare", **rule})["id"])


def fired(lab: LabState, rule: int) -> int:
    return int(supervisor.control(lab, "GET", f"/faults/{rule}")["fired"])
