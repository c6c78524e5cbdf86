"""DNS failover's pure decisions (greenlight.core.dns) and the profile's dns section, by tables of cases."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from greenlight.core.dns import (
    FailoverPlan,
    Record,
    drill_label,
    drill_pattern_problem,
    drill_record_name,
    drill_record_problem,
    in_zone,
    is_drill_record,
    name_problem,
    plan_failover,
    readback_problem,
    target_problem,
    ttl_problem,
)
from greenlight.errors import ProfileInvalid
from greenlight.settings import load_profile
from greenlight_lab.state import LAB_ENVIRONMENTS

PRIMARY, DR, OTHER = "203.0.113.10", "198.51.100.20", "192.0.2.99"
NAME = "app.example.com"


def rec(content: str, rtype: str = "A", ttl: int = 300, name: str = NAME) -> Record:
    return Record("id1", name, rtype, content, ttl)


@pytest.mark.parametrize(
    ("direction", "current", "force", "action", "new", "forced", "says"),
    [
        ("failover", rec(PRIMARY), False, "change", DR, False, "will point at the DR target"),
        ("failover", rec(DR), False, "noop", DR, False, "already points at the DR target"),
        ("failback", rec(DR), False, "change", PRIMARY, False, "will point at the primary target"),
        ("failback", rec(PRIMARY), False, "noop", PRIMARY, False, "already points at the primary"),
        ("failover", rec(OTHER), False, "refuse", DR, False, f"points at {OTHER}, neither"),
        ("failover", rec(OTHER), True, "change", DR, True, "--force"),
        ("failback", rec(OTHER), False, "refuse", PRIMARY, False, "--force points it at 203.0.113.10"),
        ("failover", None, False, "refuse", DR, False, "there is no A record"),
        ("failover", None, True, "refuse", DR, False, "nothing to failover"),
        ("failover", rec("lb.example.com", "CNAME"), True, "refuse", DR, False, "is a CNAME record"),
    ],
)
def test_plan_failover(
    direction: Any, current: Record | None, force: bool, action: str, new: str, forced: bool, says: str
) -> None:
    """Failover points at DR, failback at the primary; a record already there is a noop; one at
    neither target is refused unless forced; a missing record or another type is always refused."""
    plan = plan_failover(direction, NAME, "A", current, PRIMARY, DR, 60, force)
    assert (plan.action, plan.new, plan.forced) == (action, new, forced)
    assert says in plan.reason
    assert plan.current == (current.content if current else None)


def test_cname_targets_compare_as_dns_names() -> None:
    """A CNAME holding the DR host with a trailing dot or in capitals already points there."""
    plan = plan_failover(
        "failover",
        NAME,
        "CNAME",
        rec("DR-LB.example.net.", "CNAME"),
        "lb.example.com",
        "dr-lb.example.net",
        60,
    )
    assert plan.action == "noop"


def test_plan_lines_name_record_contents_and_ttl() -> None:
    """The dry run's lines say the record, its current and new content and both TTLs."""
    text = "\n".join(plan_failover("failover", NAME, "A", rec(PRIMARY, ttl=300), PRIMARY, DR, 60).lines())
    assert f"failover of {NAME} (A): change" in text
    assert f"current content: {PRIMARY} (TTL 300)" in text and f"new content:     {DR} (TTL 60)" in text


def _plan(new: str = DR, ttl: int = 60) -> FailoverPlan:
    return plan_failover("failover", NAME, "A", rec(PRIMARY), PRIMARY, new, ttl)


@pytest.mark.parametrize(
    ("read", "problem"),
    [
        (rec(DR, ttl=60), None),
        (rec(PRIMARY, ttl=60), f"reads back {PRIMARY}, not {DR}"),
        (rec(DR, ttl=300), "reads back TTL 300, not 60"),
        (None, "is gone after the change"),
    ],
)
def test_readback_problem(read: Record | None, problem: str | None) -> None:
    """The change is confirmed only when the record reads back with the new content and TTL."""
    found = readback_problem(_plan(), read)
    assert found == problem if problem is None else problem in (found or "")


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("app.example.com", True),
        ("APP.Example.com.", True),
        ("_acme-challenge.example.com", True),
        ("", False),
        ("a..example.com", False),
        ("-bad.example.com", False),
        ("x" * 64 + ".example.com", False),
        ("bad name.example.com", False),
    ],
)
def test_name_problem(name: str, ok: bool) -> None:
    """Valid DNS names pass; empty labels, leading '-', labels over 63 and blanks do not."""
    assert (name_problem(name) is None) == ok


@pytest.mark.parametrize(
    ("rtype", "content", "ok"),
    [
        ("A", "198.51.100.20", True),
        ("A", "198.51.100.256", False),
        ("A", "lb.example.com", False),
        ("A", "2001:db8::1", False),
        ("CNAME", "lb.example.com", True),
        ("CNAME", "not a host", False),
        ("MX", "mail.example.com", False),
    ],
)
def test_target_problem(rtype: str, content: str, ok: bool) -> None:
    """An A record holds an IPv4 address, a CNAME a host name; no other type is moved."""
    assert (target_problem(rtype, content) is None) == ok


@pytest.mark.parametrize(
    ("ttl", "ok"), [(1, True), (30, True), (60, True), (86400, True), (0, False), (29, False), (86401, False)]
)
def test_ttl_problem(ttl: int, ok: bool) -> None:
    """1 (automatic) or 30..86400 seconds."""
    assert (ttl_problem(ttl) is None) == ok


@pytest.mark.parametrize(
    ("name", "zone", "inside"),
    [("app.example.com", "example.com", True), ("example.com", "example.com", True),
     ("app.example.org", "example.com", False), ("badexample.com", "example.com", False)],
)  # fmt: skip
def test_in_zone(name: str, zone: str, inside: bool) -> None:
    """A name is in a zone when it is the zone or ends with '.<zone>' (not merely with its letters)."""
    assert in_zone(name, zone) == inside


@pytest.mark.parametrize(
    ("pattern", "drill", "zone", "name"),
    [
        (
            "drill-{drill_id}",
            "dr-20261201t101500-ab12cd",
            "example.com",
            "drill-dr-20261201t101500-ab12cd.example.com",
        ),
        ("{drill_id}.drills", "DR_x.y", "Example.com.", "dr-x-y.drills.example.com"),
        ("drill-{drill_id}", "d" * 80, "example.com", "drill-" + "d" * 57 + ".example.com"),
    ],
)
def test_drill_record_name(pattern: str, drill: str, zone: str, name: str) -> None:
    """The drill's record: the pattern with a label-safe drill id, in the zone, each label at most 63."""
    made = drill_record_name(pattern, drill, zone)
    assert made == name and name_problem(made) is None


@pytest.mark.parametrize(
    ("name", "drill_record"),
    [
        ("drill-dr-20261201t101500-ab12cd.example.com", True),
        ("DRILL-old.example.com.", True),
        ("drill-.example.com", False),
        ("app.example.com", False),
        ("drill-x.other.example.com", False),
        ("drill-x.example.org", False),
    ],
)
def test_is_drill_record(name: str, drill_record: bool) -> None:
    """A sweep finds any drill's record in the zone, and nothing else."""
    assert is_drill_record(name, "drill-{drill_id}", "example.com") == drill_record


@pytest.mark.parametrize(
    ("pattern", "ok"),
    [("drill-{drill_id}", True), ("{drill_id}.dr", True), ("drill", False), ("{drill_id}-{drill_id}", False),
     ("drill {drill_id}", False)],
)  # fmt: skip
def test_drill_pattern_problem(pattern: str, ok: bool) -> None:
    """A pattern holds {drill_id} exactly once and makes a valid name."""
    assert (drill_pattern_problem(pattern) is None) == ok


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        ([rec(DR, name="drill-x.example.com")], None),
        ([], "is not in the zone"),
        ([rec(PRIMARY, name="drill-x.example.com")], f"resolves to {PRIMARY}, not {DR}"),
        ([rec(DR, name="other.example.com")], "is not in the zone"),
    ],
)
def test_drill_record_problem(records: list[Record], problem: str | None) -> None:
    """The drill's record read back through the API must exist and hold the DR target."""
    found = drill_record_problem("drill-x.example.com", "A", DR, records)
    assert found == problem if problem is None else problem in (found or "")


def test_drill_label_is_label_safe() -> None:
    """Underscores, dots and capitals become '-' runs, never at the ends."""
    assert drill_label("_DR.x__y_") == "dr-x-y"


# --- the profile's dns section -------------------------------------------------------------------


def _production(**dns: Any) -> dict[str, Any]:
    doc = yaml.safe_load((LAB_ENVIRONMENTS / "production.yaml").read_text())
    doc["dns"] = {**doc["dns"], **dns}
    return doc  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"record": "app.elsewhere.example"}, "is not in zone"),
        ({"primary_target": "lb.example.com"}, "is not an IPv4 address"),
        ({"dr_target": "203.0.113.10"}, "are the same"),
        ({"ttl": 5}, "TTL 5"),
        ({"drill_record": "drill"}, "drill_record: must contain {drill_id}"),
        ({"type": "AAAA"}, "dns.type"),
        ({"provider": "route53"}, "dns.provider"),
        ({"zone": "bad zone"}, "zone: 'bad zone'"),
    ],
)
def test_invalid_dns_sections_are_refused_naming_the_field(
    tmp_path: Any, change: dict[str, Any], says: str
) -> None:
    """A dns section that cannot work fails the profile, naming what is wrong."""
    (tmp_path / "production.yaml").write_text(yaml.safe_dump(_production(**change)))
    with pytest.raises(ProfileInvalid) as e:
        load_profile("production", tmp_path)
    assert says in str(e.value)


def test_lab_profiles_fill_the_dns_section_and_the_shipped_ones_leave_it_out() -> None:
    """The lab's production and DR profiles point at the lab's zone; a profile without dns loads."""
    prod = load_profile("production", LAB_ENVIRONMENTS)
    assert prod.dns is not None and prod.dns.record == "app.sma-platform.example"
    assert load_profile("staging", LAB_ENVIRONMENTS).dns is None
