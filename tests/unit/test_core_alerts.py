"""Alerts by severity: default severities, routing of each level, dedup keys, what clears what,
and the profile's `alerts` section refusing what cannot be delivered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from greenlight.core.alerts import (
    CLEARED_BY,
    PAGERDUTY_SEVERITY,
    Condition,
    Delivery,
    Kind,
    Route,
    Severity,
    dedup_key,
    default_severity,
    deliveries,
    plan,
    resolutions,
    title,
)
from greenlight.errors import ProfileInvalid
from greenlight.settings import load_profile
from greenlight.tasks.alerts import alert_plan, routes, severities
from greenlight_lab.state import LAB_ENVIRONMENTS

P0, P1, P2, P3 = Severity.P0, Severity.P1, Severity.P2, Severity.P3


@pytest.mark.parametrize(
    ("kind", "production", "expected"),
    [
        (Kind.ROLLBACK, True, P1),
        (Kind.ROLLBACK, False, P3),
        (Kind.GATE_FAILED, True, P2),
        (Kind.GATE_FAILED, False, P3),
        (Kind.RELEASE_FAILED, False, P3),
        (Kind.BACKUP_NOT_VERIFIED, True, P1),
        (Kind.BACKUP_NOT_VERIFIED, False, P1),
        (Kind.CONFIG_BACKUP_FAILED, True, P2),
        (Kind.DRILL_MISSED_TARGET, False, P2),
        (Kind.DRILL_FAILED, False, P1),
        (Kind.DEAD_MANS_SWITCH, True, P1),
    ],
)
def test_default_severity_per_kind_and_environment(kind: Kind, production: bool, expected: Severity) -> None:
    """A production rollback pages as P1; the same in staging is P3; a backup matters everywhere."""
    assert default_severity(kind, production) is expected


def test_every_kind_has_a_default_in_both_tables() -> None:
    """No kind is left without a severity, in production or elsewhere."""
    for kind in Kind:
        for production in (True, False):
            assert default_severity(kind, production) in Severity


@pytest.mark.parametrize(("severity", "pd"), [(P0, "critical"), (P1, "error"), (P2, "warning"), (P3, "info")])
def test_pagerduty_severity_mapping(severity: Severity, pd: str) -> None:
    """P0..P3 map to PagerDuty's critical/error/warning/info."""
    assert PAGERDUTY_SEVERITY[severity] == pd


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (Route(), ()),
        (Route(slack=("#a",)), (Delivery("slack", "#a"),)),
        (Route(slack=("#a", "#b")), (Delivery("slack", "#a"), Delivery("slack", "#b"))),
        (Route(pagerduty=True), (Delivery("pagerduty"),)),
        (Route(email=("a@x.io", "b@x.io")), (Delivery("email", "a@x.io,b@x.io"),)),
        (
            Route(slack=("#i",), pagerduty=True, email=("o@x.io",)),
            (Delivery("slack", "#i"), Delivery("pagerduty"), Delivery("email", "o@x.io")),
        ),
    ],
)
def test_deliveries_of_a_route(route: Route, expected: tuple[Delivery, ...]) -> None:
    """One Slack message per channel, one PagerDuty event, one email to all recipients."""
    assert deliveries(route) == expected
    assert route.empty == (expected == ())


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        (("production", Kind.ROLLBACK, ""), ("production", Kind.ROLLBACK, ""), True),
        (("production", Kind.ROLLBACK, ""), ("staging", Kind.ROLLBACK, ""), False),
        (("production", Kind.ROLLBACK, ""), ("production", Kind.GATE_FAILED, ""), False),
        (("production", Kind.ROLLBACK, "backend"), ("production", Kind.ROLLBACK, "frontend"), False),
        (("production", Kind.ROLLBACK, "backend"), ("production", Kind.ROLLBACK, "backend"), True),
    ],
)
def test_dedup_key_is_stable_per_environment_kind_subject(
    a: tuple[str, Kind, str], b: tuple[str, Kind, str], same: bool
) -> None:
    """The same alert twice has the same key (PagerDuty does not page twice); another one differs."""
    assert (dedup_key(*a) == dedup_key(*b)) is same


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("production", Kind.BACKUP_NOT_VERIFIED, ""), "greenlight/production/backup-not-verified"),
        (("dr", Kind.DRILL_FAILED, "sma db"), "greenlight/dr/drill-failed/sma-db"),
        (("staging", Kind.ROLLBACK, "a/b"), "greenlight/staging/rollback/a-b"),
    ],
)
def test_dedup_key_shape(args: tuple[str, Kind, str], expected: str) -> None:
    """Readable keys; a subject's slashes and spaces cannot forge another key's shape."""
    assert dedup_key(*args) == expected


def test_dedup_key_fits_pagerduty_limit() -> None:
    """A very long subject still gives a key of at most 255 characters, distinct per subject."""
    k1, k2 = (
        dedup_key("production", Kind.ROLLBACK, "x" * 400),
        dedup_key("production", Kind.ROLLBACK, "x" * 401),
    )
    assert len(k1) <= 255 and len(k2) <= 255 and k1 != k2


@pytest.mark.parametrize(
    ("condition", "kinds"),
    [
        (Condition.RELEASE_SUCCEEDED, {Kind.ROLLBACK, Kind.GATE_FAILED, Kind.RELEASE_FAILED}),
        (Condition.BACKUP_VERIFIED, {Kind.BACKUP_NOT_VERIFIED, Kind.DEAD_MANS_SWITCH}),
        (Condition.CONFIG_BACKUP_SUCCEEDED, {Kind.CONFIG_BACKUP_FAILED}),
        (Condition.DRILL_MET_TARGET, {Kind.DRILL_MISSED_TARGET, Kind.DRILL_FAILED}),
    ],
)
def test_what_each_condition_clears(condition: Condition, kinds: set[Kind]) -> None:
    """A passing check resolves exactly the alerts its failure raised."""
    assert set(resolutions(condition)) == kinds


def test_each_kind_but_none_is_cleared_by_exactly_one_condition() -> None:
    """Every kind has one condition that clears it (an alert nothing resolves would page forever)."""
    cleared = [k for kinds in CLEARED_BY.values() for k in kinds]
    assert sorted(cleared) == sorted(Kind)


@pytest.mark.parametrize(
    ("kind", "severity", "expected"),
    [
        (Kind.ROLLBACK, P1, (Delivery("slack", "#incidents"), Delivery("pagerduty"))),
        (Kind.GATE_FAILED, P3, (Delivery("slack", "#releases"),)),
        (Kind.DRILL_MISSED_TARGET, P2, (Delivery("email", "ops@x.io"),)),
        (Kind.DEAD_MANS_SWITCH, P0, ()),  # a level missing from routes sends nothing
    ],
)
def test_plan_routes_the_kind_level(kind: Kind, severity: Severity, expected: tuple[Delivery, ...]) -> None:
    """The kind's severity picks the level; the level's route gives the deliveries."""
    table = {k: P1 for k in Kind} | {kind: severity}
    r = {
        P1: Route(slack=("#incidents",), pagerduty=True),
        P2: Route(email=("ops@x.io",)),
        P3: Route(slack=("#releases",)),
    }
    p = plan("production", kind, table, r)
    assert (p.severity, p.deliveries, p.dedup_key) == (severity, expected, dedup_key("production", kind))


def test_title_names_level_environment_and_kind() -> None:
    assert title("production", P1, Kind.ROLLBACK, "backend rolled back") == (
        "[P1] production: rollback: backend rolled back"
    )


# -- the profile's `alerts` section -------------------------------------------------------------


def _profile_with(tmp_path: Path, alerts: Any, name: str = "production", slack: bool = True) -> Path:
    raw = yaml.safe_load((LAB_ENVIRONMENTS / f"{name}.yaml").read_text())
    raw["alerts"] = alerts
    if not slack:
        raw.pop("slack", None)
        raw["release"]["approval"]["require_verified"] = False
    (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    return tmp_path


PD = {"routing_key_secret_block": "pd-key"}
MAIL = {"host": "smtp.example.com", "sender": "greenlight@example.com"}


@pytest.mark.parametrize(
    ("alerts", "slack", "message"),
    [
        ({"severities": {"rollback": "P5"}}, True, "alerts.severities.rollback: Input should be 'P0'"),
        ({"severities": {"rollbak": "P1"}}, True, "alerts.severities.rollbak.[key]"),
        ({"routes": {"P1": {"slack": []}}}, True, "routes.P1: the level goes nowhere"),
        ({"routes": {"P1": {}}}, False, "alerts.routes.P1: the level goes nowhere"),
        ({"routes": {"P1": {"pagerduty": True}}}, True, "routes.P1.pagerduty: true, but there is no"),
        ({"routes": {"P1": {"email": ["ops@x.io"]}}}, True, "routes.P1.email: recipients given, but"),
        (
            {"email": MAIL, "routes": {"P1": {"email": ["not-an-address"]}}},
            True,
            "not an email address: 'not-an-address'",
        ),
        ({"email": {**MAIL, "sender": "greenlight"}}, True, "alerts.email.sender"),
        ({"routes": {"P7": {"slack": ["#x"]}}}, True, "alerts.routes.P7"),
        ({"retries": 0}, True, "alerts.retries"),
    ],
)
def test_bad_alerts_section_names_the_field(tmp_path: Path, alerts: Any, slack: bool, message: str) -> None:
    """An unknown severity or kind, a level with no route, a channel without its section, an
    email that is not an address: refused, naming the field."""
    d = _profile_with(tmp_path, alerts, slack=slack)
    with pytest.raises(ProfileInvalid) as e:
        load_profile("production", d)
    assert message in str(e.value)


def test_profile_alerts_resolved_with_defaults(tmp_path: Path) -> None:
    """Unlisted levels go to the profile's Slack channel; listed ones where they say; a profile's
    severity overrides the default; `production: false` takes the other defaults."""
    alerts = {
        "production": False,
        "severities": {"gate-failed": "P0"},
        "pagerduty": PD,
        "email": MAIL,
        "routes": {"P0": {"slack": ["#incidents"], "pagerduty": True, "email": ["oncall@example.com"]}},
    }
    profile = load_profile("production", _profile_with(tmp_path, alerts))
    sev = severities(profile)
    assert sev[Kind.GATE_FAILED] is P0 and sev[Kind.ROLLBACK] is P3 and sev[Kind.BACKUP_NOT_VERIFIED] is P1
    r = routes(profile)
    assert r[P0] == Route(slack=("#incidents",), pagerduty=True, email=("oncall@example.com",))
    assert r[P2] == Route(slack=("#releases",))
    assert alert_plan(profile, Kind.GATE_FAILED).deliveries[1] == Delivery("pagerduty")


def test_existing_profiles_load_with_default_alerts() -> None:
    """A profile without `alerts` still loads: production's severities, everything to its Slack channel."""
    profile = load_profile("production", LAB_ENVIRONMENTS)
    assert severities(profile)[Kind.ROLLBACK] is P1
    assert all(isinstance(v, Route) for v in routes(profile).values())
