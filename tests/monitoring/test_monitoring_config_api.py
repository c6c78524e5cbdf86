"""The lab's AlertPolicyService and UptimeCheckService, through the real google-cloud-monitoring clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from google.api_core import exceptions as gexc
from google.cloud import monitoring_v3
from google.protobuf import field_mask_pb2

from greenlight.clients.monitoring_config import make_config_clients
from greenlight_lab.faults import FaultRegistry, FaultRule
from greenlight_lab.monitoring import MonitoringServer
from greenlight_lab.monitoring_config import DEFAULT_PAGE_SIZE

from .monitoring_support import PROJECT

PARENT = f"projects/{PROJECT}"
CPU = 'metric.type = "kubernetes.io/container/cpu/limit_utilization" AND resource.type = "k8s_container"'


@pytest.fixture
def clients(server: MonitoringServer) -> Iterator[Any]:
    server.config.clear()
    yield make_config_clients(f"127.0.0.1:{server.port}", insecure=True)
    server.config.clear()


def policy(name: str = "cpu", **over: Any) -> monitoring_v3.AlertPolicy:
    fields: dict[str, Any] = {
        "display_name": name,
        "combiner": monitoring_v3.AlertPolicy.ConditionCombinerType.OR,
        "conditions": [
            monitoring_v3.AlertPolicy.Condition(
                display_name="cpu above 0.8",
                condition_threshold=monitoring_v3.AlertPolicy.Condition.MetricThreshold(
                    filter=CPU,
                    comparison=monitoring_v3.ComparisonType.COMPARISON_GT,
                    threshold_value=0.8,
                    duration={"seconds": 300},
                ),
            )
        ],
        "documentation": {"content": "by hand", "mime_type": "text/markdown"},
    }
    fields.update(over)
    return monitoring_v3.AlertPolicy(**fields)


def check(name: str = "backend", **over: Any) -> monitoring_v3.UptimeCheckConfig:
    fields: dict[str, Any] = {
        "display_name": name,
        "monitored_resource": {
            "type": "uptime_url",
            "labels": {"project_id": PROJECT, "host": "api.example"},
        },
        "http_check": {"path": "/healthz", "use_ssl": True},
        "period": {"seconds": 60},
        "timeout": {"seconds": 10},
    }
    fields.update(over)
    return monitoring_v3.UptimeCheckConfig(**fields)


def test_create_assigns_names_and_records(clients: Any) -> None:
    """The server names the policy and each condition, stamps both records and enables it."""
    alerts, _ = clients
    made = alerts.create_alert_policy(name=PARENT, alert_policy=policy())
    assert made.name.startswith(f"{PARENT}/alertPolicies/")
    assert made.conditions[0].name.startswith(f"{made.name}/conditions/")
    assert made.creation_record.mutate_time and made.mutation_record.mutate_time
    assert made.enabled is True
    assert alerts.get_alert_policy(name=made.name).display_name == "cpu"


def test_list_pages_small_by_default_and_the_pager_follows(clients: Any) -> None:
    """One raw page holds DEFAULT_PAGE_SIZE with a next token; the SDK's pager fetches them all."""
    alerts, _ = clients
    names = {alerts.create_alert_policy(name=PARENT, alert_policy=policy(f"p{i}")).name for i in range(8)}
    first = alerts.list_alert_policies(request={"name": PARENT})._response
    assert len(first.alert_policies) == DEFAULT_PAGE_SIZE
    assert first.next_page_token
    assert {p.name for p in alerts.list_alert_policies(name=PARENT)} == names
    five = alerts.list_alert_policies(request={"name": PARENT, "page_size": 5})._response
    assert len(five.alert_policies) == 5
    with pytest.raises(gexc.InvalidArgument, match="page_token"):
        list(alerts.list_alert_policies(request={"name": PARENT, "page_token": "nope"}))


def test_list_filters_on_display_name_and_user_labels(clients: Any) -> None:
    alerts, _ = clients
    alerts.create_alert_policy(name=PARENT, alert_policy=policy("a", user_labels={"team": "web"}))
    alerts.create_alert_policy(name=PARENT, alert_policy=policy("b"))
    by_name = alerts.list_alert_policies(request={"name": PARENT, "filter": 'display_name = "b"'})
    assert [p.display_name for p in by_name] == ["b"]
    by_label = alerts.list_alert_policies(request={"name": PARENT, "filter": 'user_labels.team = "web"'})
    assert [p.display_name for p in by_label] == ["a"]
    with pytest.raises(gexc.InvalidArgument, match=r"conditions\.filter"):
        list(alerts.list_alert_policies(request={"name": PARENT, "filter": 'conditions.filter = "x"'}))


def test_update_with_a_mask_leaves_other_fields(clients: Any) -> None:
    """Only the fields in update_mask change; conditions and documentation stay."""
    alerts, _ = clients
    made = alerts.create_alert_policy(name=PARENT, alert_policy=policy())
    update = monitoring_v3.AlertPolicy(name=made.name, display_name="renamed")
    after = alerts.update_alert_policy(
        alert_policy=update, update_mask=field_mask_pb2.FieldMask(paths=["display_name"])
    )
    assert after.display_name == "renamed"
    assert after.conditions[0].condition_threshold.threshold_value == 0.8
    assert after.documentation.content == "by hand"
    assert after.creation_record == made.creation_record


def test_update_without_a_mask_replaces(clients: Any) -> None:
    """No mask: the policy becomes what was sent (documentation gone), name and creation kept."""
    alerts, _ = clients
    made = alerts.create_alert_policy(name=PARENT, alert_policy=policy())
    replacement = policy("replaced", documentation=None)
    replacement.name = made.name
    after = alerts.update_alert_policy(alert_policy=replacement)
    assert (after.name, after.display_name, after.documentation.content) == (made.name, "replaced", "")
    assert after.creation_record == made.creation_record


def test_update_refuses_an_unknown_mask_path(clients: Any) -> None:
    alerts, _ = clients
    made = alerts.create_alert_policy(name=PARENT, alert_policy=policy())
    with pytest.raises(gexc.InvalidArgument, match="colour"):
        alerts.update_alert_policy(
            alert_policy=monitoring_v3.AlertPolicy(name=made.name),
            update_mask=field_mask_pb2.FieldMask(paths=["colour"]),
        )


@pytest.mark.parametrize(
    "over, fragment",
    [
        ({"display_name": ""}, "alert_policy.display_name"),
        ({"conditions": []}, "at least one condition"),
        ({"combiner": 0}, "alert_policy.combiner"),
        (
            {"conditions": [{"display_name": "c", "condition_threshold": {"comparison": 1}}]},
            "conditions[0].condition_threshold.filter had an invalid value: a filter is required",
        ),
        (
            {"conditions": [{"display_name": "c", "condition_threshold": {"filter": 'metric.typo = "x"', "comparison": 1}}]},
            "unknown selector 'metric.typo'",
        ),
        (
            {"conditions": [{"display_name": "c", "condition_threshold": {"filter": 'resource.type = "x"', "comparison": 1}}]},
            "must specify a metric type",
        ),
        ({"notification_channels": ["oncall@example.com"]}, "notification_channels[0]"),
    ],
)  # fmt: skip
def test_create_refuses_what_the_api_refuses(clients: Any, over: dict[str, Any], fragment: str) -> None:
    """INVALID_ARGUMENT naming the field, and nothing is created."""
    alerts, _ = clients
    with pytest.raises(gexc.InvalidArgument) as e:
        alerts.create_alert_policy(name=PARENT, alert_policy=policy(**over))
    assert fragment in e.value.message
    assert list(alerts.list_alert_policies(name=PARENT)) == []


def test_unknown_names_are_not_found(clients: Any) -> None:
    alerts, uptime = clients
    gone = f"{PARENT}/alertPolicies/404"
    with pytest.raises(gexc.NotFound):
        alerts.get_alert_policy(name=gone)
    with pytest.raises(gexc.NotFound):
        alerts.delete_alert_policy(name=gone)
    with pytest.raises(gexc.NotFound):
        alerts.update_alert_policy(alert_policy=monitoring_v3.AlertPolicy(name=gone))
    with pytest.raises(gexc.NotFound):
        uptime.get_uptime_check_config(name=f"{PARENT}/uptimeCheckConfigs/404")
    with pytest.raises(gexc.NotFound, match="other-project"):
        list(alerts.list_alert_policies(name="projects/other-project"))


def test_delete_removes_the_policy(clients: Any) -> None:
    alerts, _ = clients
    made = alerts.create_alert_policy(name=PARENT, alert_policy=policy())
    alerts.delete_alert_policy(name=made.name)
    assert list(alerts.list_alert_policies(name=PARENT)) == []


def test_uptime_check_lifecycle(clients: Any) -> None:
    """Create fills the API's defaults (port 443 with SSL, GET, static checkers); list pages and
    counts; update with a mask; delete."""
    _, uptime = clients
    made = uptime.create_uptime_check_config(parent=PARENT, uptime_check_config=check())
    assert made.name.startswith(f"{PARENT}/uptimeCheckConfigs/")
    assert made.http_check.port == 443
    assert made.http_check.request_method == monitoring_v3.UptimeCheckConfig.HttpCheck.RequestMethod.GET
    assert made.checker_type == monitoring_v3.UptimeCheckConfig.CheckerType.STATIC_IP_CHECKERS
    for i in range(4):
        uptime.create_uptime_check_config(parent=PARENT, uptime_check_config=check(f"c{i}"))
    page = uptime.list_uptime_check_configs(request={"parent": PARENT})._response
    assert (len(page.uptime_check_configs), page.total_size) == (DEFAULT_PAGE_SIZE, 5)
    assert len(list(uptime.list_uptime_check_configs(parent=PARENT))) == 5
    request = monitoring_v3.UpdateUptimeCheckConfigRequest(
        uptime_check_config=monitoring_v3.UptimeCheckConfig(name=made.name, period={"seconds": 300}),
        update_mask=field_mask_pb2.FieldMask(paths=["period"]),
    )
    after = uptime.update_uptime_check_config(request=request)
    assert (after.period.total_seconds(), after.display_name) == (300, "backend")
    uptime.delete_uptime_check_config(name=made.name)
    assert len(list(uptime.list_uptime_check_configs(parent=PARENT))) == 4


@pytest.mark.parametrize(
    "over, fragment",
    [
        ({"display_name": ""}, "display_name"),
        ({"period": {"seconds": 120}}, "uptime_check_config.period"),
        ({"timeout": {"seconds": 90}}, "uptime_check_config.timeout"),
        ({"http_check": None}, "http_check or tcp_check"),
    ],
)
def test_uptime_check_refusals(clients: Any, over: dict[str, Any], fragment: str) -> None:
    _, uptime = clients
    with pytest.raises(gexc.InvalidArgument, match=fragment):
        uptime.create_uptime_check_config(parent=PARENT, uptime_check_config=check(**over))


def test_faults_answer_unavailable(clients: Any, faults: FaultRegistry) -> None:
    """A fault on ListAlertPolicies answers UNAVAILABLE, as the MetricService's faults do."""
    alerts, _ = clients
    faults.add(FaultRule(target="monitoring", verb="ListAlertPolicies"))
    with pytest.raises(gexc.ServiceUnavailable, match="lab fault"):
        list(alerts.list_alert_policies(request={"name": PARENT}, retry=None))


def test_deleting_while_paging_skips_nothing(clients: Any) -> None:
    """The page token is a cursor: delete each policy as the pager yields it, and every one goes."""
    alerts, _ = clients
    for i in range(7):
        alerts.create_alert_policy(name=PARENT, alert_policy=policy(f"p{i}"))
    seen = 0
    for p in alerts.list_alert_policies(name=PARENT):
        alerts.delete_alert_policy(name=p.name)
        seen += 1
    assert seen == 7
    assert list(alerts.list_alert_policies(name=PARENT)) == []
