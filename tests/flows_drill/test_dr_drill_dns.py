"""The DR drill's DNS record in the lab: created at the DR target, read back through Cloudflare's
API inside the measured RTO, deleted at teardown (also when the drill fails, and any record an
earlier crashed drill left); a DNS API outage fails the drill with a clear reason and still tears down."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from greenlight.errors import DrillFailed
from greenlight.flows.dr_drill import dr_drill
from greenlight.settings import Profile
from greenlight_lab.cloudflare import LAB_DR, LAB_ZONE
from greenlight_lab.state import LabState
from tests.dns.support import drill_records, fault, fired, reset, sdk, zone_id

pytestmark = pytest.mark.lab


@pytest.fixture
def zone(lab: LabState) -> Iterator[None]:
    reset(lab)
    yield
    reset(lab)


def test_drill_record_is_created_verified_inside_rto_and_removed(
    zone: None, dr: Profile, source: Profile, secrets_ready: list[str]
) -> None:
    """The drill's dns-record step creates drill-<id>.<zone> at the DR target and reads it back
    through the API before validation (so inside RTO); teardown deletes it and sweeps a record an
    earlier, crashed drill left; nothing of either is in the zone afterwards."""
    sdk().dns.records.create(
        zone_id=zone_id(), name=f"drill-crashed-earlier.{LAB_ZONE}", type="A", content=LAB_DR, ttl=60,
        comment="greenlight dr-drill crashed-earlier",
    )  # fmt: skip
    result = dr_drill(dr.name, profile=dr, source_profile=source)
    assert result["passed"] is True, result["reasons"]
    steps = {s["name"]: s for s in result["steps"]}
    dns = steps["dns-record"]
    name = f"drill-{result['drill_id']}.{LAB_ZONE}"
    assert dns["outcome"] == "ok" and name in dns["detail"] and LAB_DR in dns["detail"]
    assert "read back through the API" in dns["detail"]
    # inside RTO: the step started after smoke and ended before validation (RTO is start -> validated)
    assert steps["smoke"]["offset_s"] <= dns["offset_s"]
    assert dns["offset_s"] + dns["seconds"] <= result["rto_seconds"] + 0.05
    teardown = steps["teardown"]
    assert teardown["outcome"] == "ok" and "deleted 2 DNS record(s)" in teardown["detail"]
    assert "drill-crashed-earlier" in teardown["detail"] and name in teardown["detail"]
    assert drill_records() == []


def test_dns_api_outage_fails_the_drill_naming_it_and_still_tears_down(
    lab: LabState, zone: None, dr: Profile, source: Profile, secrets_ready: list[str]
) -> None:
    """Cloudflare answering 503 to every create: the drill fails at dns-record with a reason naming
    the API, the record and the zone; no RTO is claimed; teardown still runs and nothing is left."""
    rule = fault(lab, verb="post", resource="dns_records", count=-1, status=503)
    with pytest.raises(DrillFailed) as info:
        dr_drill(dr.name, profile=dr, source_profile=source)
    assert fired(lab, rule) >= 1
    result = info.value.result
    steps = {s["name"]: s for s in result["steps"]}
    assert steps["dns-record"]["outcome"] == "failed"
    detail = steps["dns-record"]["detail"]
    assert "Cloudflare API 503" in detail and LAB_ZONE in detail and "drill-" in detail
    assert result["rto_seconds"] is None and "dns-record" in str(info.value)
    assert steps["teardown"]["outcome"] == "ok", steps["teardown"]
    reset(lab)
    assert drill_records() == []


def test_a_drill_failing_after_its_record_was_made_still_removes_it(
    lab: LabState, zone: None, dr: Profile, source: Profile, secrets_ready: list[str]
) -> None:
    """With an RTO target no drill can meet, the drill fails after making its record; teardown
    deletes the record all the same."""
    strict = dr.model_copy(update={"dr": dr.dr.model_copy(update={"rto_target_s": 0.001})})  # type: ignore[union-attr]
    with pytest.raises(DrillFailed) as info:
        dr_drill(strict.name, profile=strict, source_profile=source)
    steps = {s["name"]: s for s in info.value.result["steps"]}
    assert steps["dns-record"]["outcome"] == "ok" and "missed target" in str(info.value)
    assert "deleted 1 DNS record(s)" in steps["teardown"]["detail"]
    assert drill_records() == []
