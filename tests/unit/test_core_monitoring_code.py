"""Monitoring as code, pure logic: placeholders, definitions, field diffs and plans."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from greenlight.core.monitoring_code import (
    ALERT_POLICY,
    ENV_LABEL,
    ID_LABEL,
    UPTIME_CHECK,
    FieldChange,
    Resource,
    check_spec,
    export_document,
    field_diff,
    parse_definition,
    plan,
    render,
    render_string,
    slug,
    unrender,
)
from greenlight.errors import Conflict, InputInvalid

VALUES: dict[str, Any] = {
    "environment": "staging",
    "project": "sma-prod",
    "namespace": "sma-staging",
    "cluster": "primary",
    "backend_host": "api.example.com",
    "frontend_host": None,
    "database_id": "sma-prod:db",
    "status_label": "code",
    "notification_channels": ["projects/sma-prod/notificationChannels/1"],
}


def policy(**over: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "display_name": "{environment}: CPU",
        "combiner": "OR",
        "conditions": [
            {
                "display_name": "cpu",
                "condition_threshold": {
                    "filter": 'metric.type = "kubernetes.io/container/cpu/limit_utilization"',
                    "comparison": "COMPARISON_GT",
                    "threshold_value": 0.8,
                },
            }
        ],
    }
    spec.update(over)
    return spec


def definition(ident: str = "cpu-high", **over: Any):  # type: ignore[no-untyped-def]
    return parse_definition(
        {"kind": ALERT_POLICY, "id": ident, "spec": policy(**over)}, f"{ident}.yaml", VALUES
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("{environment}: CPU", "staging: CPU"),
        ('resource.labels.namespace_name = "{namespace}"', 'resource.labels.namespace_name = "sma-staging"'),
        ("literal {{braces}}", "literal {braces}"),
        ('full_match("5\\\\d{{2}}")', 'full_match("5\\\\d{2}")'),
        ("{notification_channels}", ["projects/sma-prod/notificationChannels/1"]),
        ("no placeholders", "no placeholders"),
    ],
)
def test_render_fills_placeholders(text: str, expected: Any) -> None:
    """A placeholder takes the profile's value; doubled braces are literal; the list is a list."""
    assert render_string(text, VALUES, "f.yaml: spec") == expected


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("{colour}", "unknown placeholder {colour}"),
        ("{frontend_host}", "{frontend_host} has no value"),
        ("a { b", "a lone '{'"),
        ("a } b", "a lone '}'"),
        ("to {notification_channels}", "must be the whole value"),
    ],
)
def test_render_refuses_bad_placeholders(text: str, fragment: str) -> None:
    """An unknown, unset or misplaced placeholder and a lone brace are refused, naming where."""
    with pytest.raises(InputInvalid) as e:
        render_string(text, VALUES, "f.yaml: spec.display_name")
    assert fragment in str(e.value)
    assert "f.yaml: spec.display_name" in str(e.value)


@pytest.mark.parametrize(
    "value, exported",
    [
        ("staging: CPU", "{environment}: CPU"),
        ('namespace_name = "sma-staging"', 'namespace_name = "{namespace}"'),
        ("resource.labels.stagingx", "resource.labels.stagingx"),  # not a whole word
        ("sma-prod:db", "{database_id}"),  # the longest value wins over the project inside it
        ("x {y}", "x {{y}}"),
        (["projects/sma-prod/notificationChannels/1"], "{notification_channels}"),
        (["projects/other/notificationChannels/2"], ["projects/other/notificationChannels/2"]),
        ({"host": "api.example.com", "n": 3}, {"host": "{backend_host}", "n": 3}),
    ],
)
def test_unrender_writes_placeholders_and_round_trips(value: Any, exported: Any) -> None:
    """Export writes the profile's values as placeholders, and rendering gives the value back."""
    assert unrender(value, VALUES) == exported
    assert render(exported, VALUES, "x") == value


def test_definition_is_labelled_with_its_id_and_environment() -> None:
    """A definition carries greenlight_id and greenlight_environment, rendered for the environment."""
    d = definition()
    assert d.spec["display_name"] == "staging: CPU"
    assert d.spec["user_labels"] == {ID_LABEL: "cpu-high", ENV_LABEL: "staging"}


@pytest.mark.parametrize(
    "doc, fragment",
    [
        ([], "expected a mapping"),
        ({"kind": "Dashboard", "id": "x", "spec": {}}, "kind: must be one of"),
        ({"kind": ALERT_POLICY, "id": "Bad_Id", "spec": policy()}, "is not a valid id"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": "no"}, "spec: expected a mapping"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": policy(), "extra": 1}, "unknown top-level field(s) extra"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": policy(name="projects/p/alertPolicies/1")}, "spec.name"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": policy(user_labels={ID_LABEL: "y"})}, "but the id is 'x'"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": policy(display_name="")}, "spec.display_name: required"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": policy(conditions=[])}, "at least one condition"),
        ({"kind": ALERT_POLICY, "id": "x", "spec": policy(combiner=None)}, "spec.combiner: required"),
    ],
)
def test_bad_definitions_are_refused_naming_the_file(doc: Any, fragment: str) -> None:
    """A malformed definition fails with the file's name and what is wrong."""
    with pytest.raises(InputInvalid) as e:
        parse_definition(doc, "deployments/monitoring/x.yaml", VALUES)
    assert str(e.value).startswith("deployments/monitoring/x.yaml: ")
    assert fragment in str(e.value)


def _condition(**threshold: Any) -> dict[str, Any]:
    return {"display_name": "c", "condition_threshold": threshold}


@pytest.mark.parametrize(
    "kind, spec, fragment",
    [
        (ALERT_POLICY, policy(conditions=[{"display_name": "c"}]), "exactly one of"),
        (ALERT_POLICY, policy(conditions=[_condition(comparison="COMPARISON_GT")]), "filter: required"),
        (
            ALERT_POLICY,
            policy(conditions=[_condition(filter='resource.type = "x"', comparison="COMPARISON_GT")]),
            "must name a metric type",
        ),
        (
            ALERT_POLICY,
            policy(conditions=[_condition(filter='metric.type = "x', comparison="COMPARISON_GT")]),
            "unterminated",
        ),
        (
            ALERT_POLICY,
            policy(conditions=[_condition(filter='(metric.type = "x"', comparison="COMPARISON_GT")]),
            "'(' without its ')'",
        ),
        (ALERT_POLICY, policy(conditions=[_condition(filter='metric.type = "x"')]), "comparison: required"),
        (
            ALERT_POLICY,
            policy(conditions=[_condition(filter='metric.type="x"', comparison="COMPARISON_LT")] * 7),
            "at most 6",
        ),
        (UPTIME_CHECK, {"display_name": "u", "http_check": {"path": "/"}}, "monitored_resource"),
        (
            UPTIME_CHECK,
            {"display_name": "u", "monitored_resource": {"type": "uptime_url"}},
            "http_check or tcp_check",
        ),
        (
            UPTIME_CHECK,
            {
                "display_name": "u",
                "monitored_resource": {"type": "uptime_url"},
                "tcp_check": {},
                "period": "120s",
            },
            "spec.period",
        ),
        (
            UPTIME_CHECK,
            {
                "display_name": "u",
                "monitored_resource": {"type": "uptime_url"},
                "tcp_check": {},
                "timeout": "90s",
            },
            "spec.timeout",
        ),
    ],
)
def test_check_spec_finds_what_the_api_refuses(kind: str, spec: dict[str, Any], fragment: str) -> None:
    """What the API would refuse is found before anything is applied."""
    problems = check_spec(kind, spec)
    assert any(fragment in p for p in problems), problems


def test_check_spec_passes_a_valid_policy() -> None:
    """A complete policy has no problems."""
    assert check_spec(ALERT_POLICY, policy()) == []


@pytest.mark.parametrize(
    "before, after, changes",
    [
        ({"a": 1}, {"a": 1}, []),
        ({"a": 1}, {"a": 2}, [FieldChange("a", 1, 2)]),
        ({}, {"a": 2}, [FieldChange("a", None, 2)]),
        ({"a": {"b": [1, {"c": "x"}]}}, {"a": {"b": [1, {"c": "y"}]}}, [FieldChange("a.b[1].c", "x", "y")]),
        ({"l": [1, 2]}, {"l": [1]}, [FieldChange("l", [1, 2], [1])]),
        ({"m": {"k": "v", "o": "1"}}, {"m": {"k": "v"}}, [FieldChange("m.o", "1", None)]),
    ],
)
def test_field_diff_names_each_differing_field(before: Any, after: Any, changes: list[FieldChange]) -> None:
    """Dicts and same-length lists are compared inside; anything else as a whole."""
    assert field_diff(before, after) == changes


def applied(d: Any, name: str = "projects/p/alertPolicies/1", **server: Any) -> Resource:
    """``d`` as the project holds it after an apply: name, records and condition names added."""
    spec = {
        **copy.deepcopy(d.spec),
        "name": name,
        "creation_record": {"mutate_time": "t"},
        "mutation_record": {"mutate_time": "t"},
    }
    spec["conditions"] = [{**c, "name": f"{name}/conditions/9"} for c in spec["conditions"]]
    spec.update(server)
    return Resource(d.kind, name, spec)


def test_plan_creates_what_the_project_lacks() -> None:
    p = plan([definition()], [], "staging")
    assert [(i.action, i.id) for i in p.items] == [("create", "cpu-high")]
    assert p.drift


def test_plan_server_owned_fields_are_not_drift() -> None:
    """Names, records and condition names the server added, and fields the file leaves out, are no change."""
    d = definition()
    p = plan([d], [applied(d, documentation={"content": "added by hand"})], "staging")
    assert [i.action for i in p.items] == ["unchanged"]
    assert not p.drift


def test_plan_update_masks_only_the_changed_fields() -> None:
    """A threshold changed in the console: an update whose mask is conditions, with the field named."""
    d = definition()
    r = applied(d)
    r.spec["conditions"][0]["condition_threshold"]["threshold_value"] = 0.95
    (item,) = plan([d], [r], "staging").items
    assert item.action == "update"
    assert item.mask == ("conditions",)
    assert item.changes == (FieldChange("conditions[0].condition_threshold.threshold_value", 0.95, 0.8),)


def test_plan_rename_in_the_files_updates_the_same_policy() -> None:
    """The label is the identity: a new display name in the file updates the labelled policy."""
    old = definition()
    new = definition(display_name="{environment}: CPU high")
    (item,) = plan([new], [applied(old)], "staging").items
    assert (item.action, item.name, item.mask) == ("update", "projects/p/alertPolicies/1", ("display_name",))


def test_plan_adopts_an_unlabelled_policy_by_display_name() -> None:
    """A hand-made policy with the definition's display name is adopted: the labels are the change."""
    d = definition()
    r = applied(d)
    r.spec.pop("user_labels")
    (item,) = plan([d], [r], "staging").items
    assert (item.action, item.matched_by, item.mask) == ("update", "display_name", ("user_labels",))


def test_plan_refuses_ambiguous_adoption() -> None:
    d = definition()
    a, b = applied(d, "projects/p/alertPolicies/1"), applied(d, "projects/p/alertPolicies/2")
    a.spec.pop("user_labels")
    b.spec.pop("user_labels")
    with pytest.raises(Conflict, match="2 unlabelled AlertPolicys"):
        plan([d], [a, b], "staging")


def test_plan_refuses_two_resources_with_one_id() -> None:
    d = definition()
    with pytest.raises(Conflict, match="both carry greenlight_id=cpu-high"):
        plan(
            [d],
            [applied(d, "projects/p/alertPolicies/1"), applied(d, "projects/p/alertPolicies/2")],
            "staging",
        )


def test_plan_orphaned_unmanaged_and_other_environments() -> None:
    """Labelled without a file: orphaned (drift); hand-made: unmanaged (not drift); another
    environment's: not this environment's at all."""
    d = definition()
    orphan = applied(definition("gone"), "projects/p/alertPolicies/2")
    hand = Resource(ALERT_POLICY, "projects/p/alertPolicies/3", {"display_name": "by hand"})
    other = applied(d, "projects/p/alertPolicies/4")
    other.spec["user_labels"] = {ID_LABEL: "cpu-high", ENV_LABEL: "production"}
    p = plan([d], [applied(d), orphan, hand, other], "staging")
    assert [(i.action, i.name) for i in p.items] == [
        ("unchanged", "projects/p/alertPolicies/1"),
        ("orphaned", "projects/p/alertPolicies/2"),
        ("unmanaged", "projects/p/alertPolicies/3"),
    ]
    assert p.drift
    assert not plan([d], [applied(d), hand], "staging").drift


def test_plan_refuses_one_id_twice() -> None:
    with pytest.raises(InputInvalid, match="is also the id of"):
        plan([definition(), definition()], [], "staging")


def test_export_round_trips_to_an_unchanged_plan() -> None:
    """An exported resource, read back as a definition, plans unchanged."""
    d = definition()
    r = applied(d)
    doc = export_document(r, VALUES, set())
    assert doc["id"] == "cpu-high"
    assert "user_labels" not in doc["spec"]
    assert doc["spec"]["display_name"] == "{environment}: CPU"
    back = parse_definition(doc, "cpu-high.yaml", VALUES)
    assert [i.action for i in plan([back], [r], "staging").items] == ["unchanged"]


@pytest.mark.parametrize(
    "display_name, taken, expected",
    [
        ("{environment}: CPU above 80 %", set(), "cpu-above-80"),
        ("Disk", {"disk"}, "disk-2"),
        ("99 problems", set(), "x-99-problems"),
    ],
)
def test_export_ids_of_hand_made_resources(display_name: str, taken: set[str], expected: str) -> None:
    """A resource without a label gets a slug of its display name, unique among the exported."""
    r = Resource(
        ALERT_POLICY,
        "projects/p/alertPolicies/1",
        {"display_name": display_name.replace("{environment}", "staging")},
    )
    assert export_document(r, VALUES, set(taken))["id"] == expected
    assert slug("") == "x"
