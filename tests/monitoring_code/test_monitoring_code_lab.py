"""``greenlight monitoring export|diff|apply`` and the monitoring-drift flow, against the lab's Monitoring.

The project is changed the way a person would change it, through the real SDK clients; what the
commands did is read back the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import monitoring_v3
from google.protobuf import field_mask_pb2

from greenlight.clients.monitoring_config import make_config_clients
from greenlight.errors import GateFailed
from greenlight.settings import REPO_ROOT
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

PARENT = "projects/lab-project"
DEFINITIONS = REPO_ROOT / "deployments" / "monitoring"
POLICIES = {"cpu-high", "database-connections", "error-rate", "memory-high", "service-down"}
CHECKS = {"uptime-backend", "uptime-frontend"}


@pytest.fixture(scope="module")
def sdk(lab: LabState) -> Any:
    return make_config_clients()


def empty(sdk: Any) -> None:
    alerts, uptime = sdk
    for p in list(alerts.list_alert_policies(name=PARENT)):
        alerts.delete_alert_policy(name=p.name)
    for c in list(uptime.list_uptime_check_configs(parent=PARENT)):
        uptime.delete_uptime_check_config(name=c.name)


@pytest.fixture(autouse=True)
def empty_project(sdk: Any, lab: LabState) -> Iterator[None]:
    """Each test starts with a project without alert policies or uptime checks."""
    empty(sdk)
    yield
    supervisor.control(lab, "DELETE", "/faults")
    empty(sdk)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", "monitoring", *args],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def policies(sdk: Any) -> dict[str, Any]:
    """greenlight_id (or display name, unlabelled) -> policy, for staging's and unlabelled ones."""
    return {
        p.user_labels.get("greenlight_id") or p.display_name: p
        for p in sdk[0].list_alert_policies(name=PARENT)
        if p.user_labels.get("greenlight_environment") in (None, "staging")
    }


def copy_definitions(tmp_path: Path) -> Path:
    target = tmp_path / "monitoring"
    shutil.copytree(DEFINITIONS, target)
    return target


def hand_made(sdk: Any, name: str) -> monitoring_v3.AlertPolicy:
    return sdk[0].create_alert_policy(
        name=PARENT,
        alert_policy=monitoring_v3.AlertPolicy(
            display_name=name,
            combiner=monitoring_v3.AlertPolicy.ConditionCombinerType.OR,
            conditions=[
                monitoring_v3.AlertPolicy.Condition(
                    display_name="disk",
                    condition_threshold=monitoring_v3.AlertPolicy.Condition.MetricThreshold(
                        filter='metric.type = "kubernetes.io/node/ephemeral_storage/used_bytes"',
                        comparison=monitoring_v3.ComparisonType.COMPARISON_GT,
                        threshold_value=1e10,
                        duration={"seconds": 60},
                    ),
                )
            ],
        ),
    )


def test_apply_creates_everything_then_a_second_apply_changes_nothing(sdk: Any) -> None:
    """On an empty project apply creates the 5 policies and 2 uptime checks, labelled; again: all unchanged."""
    first = cli("apply", "staging")
    assert first.returncode == 0, first.stderr
    assert "7 created, 0 updated, 0 unchanged" in first.stdout
    made = policies(sdk)
    assert set(made) == POLICIES
    assert made["cpu-high"].display_name == "staging: CPU above 80 %"
    assert made["cpu-high"].notification_channels == [
        "projects/lab-project/notificationChannels/staging-oncall"
    ]
    assert (
        'resource.labels.namespace_name = "sma-staging"'
        in made["cpu-high"].conditions[0].condition_threshold.filter
    )
    checks = {c.user_labels["greenlight_id"]: c for c in sdk[1].list_uptime_check_configs(parent=PARENT)}
    assert set(checks) == CHECKS
    assert checks["uptime-backend"].monitored_resource.labels["host"] == "backend.staging.lab.test"
    second = cli("apply", "staging")
    assert second.returncode == 0, second.stderr
    assert "0 created, 0 updated, 7 unchanged" in second.stdout
    diff = cli("diff", "staging")
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "OK: no drift" in diff.stdout


def test_export_then_diff_is_clean(sdk: Any, tmp_path: Path) -> None:
    """What export writes, diff finds equal to the project; placeholders stand for the profile's values."""
    assert cli("apply", "staging").returncode == 0
    out = tmp_path / "exported"
    export = cli("export", "staging", "--dir", str(out))
    assert export.returncode == 0, export.stderr
    assert {p.stem for p in out.glob("*.yaml")} == POLICIES | CHECKS
    text = (out / "cpu-high.yaml").read_text()
    assert "{environment}: CPU above 80 %" in text and "{namespace}" in text
    assert "{notification_channels}" in text and "greenlight_id" not in text
    diff = cli("diff", "staging", "--dir", str(out))
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "7 unchanged" in diff.stdout


def test_export_adopts_a_hand_made_policy(sdk: Any, tmp_path: Path) -> None:
    """A policy made by hand is exported as a file; apply labels it in place (no duplicate); then no drift."""
    made = hand_made(sdk, "staging: disk nearly full")
    out = tmp_path / "adopted"
    assert cli("export", "staging", "--dir", str(out)).returncode == 0
    assert [p.name for p in out.glob("*.yaml")] == ["disk-nearly-full.yaml"]
    diff = cli("diff", "staging", "--dir", str(out))
    assert diff.returncode == 8
    assert "matched by display name" in diff.stdout
    apply = cli("apply", "staging", "--dir", str(out))
    assert apply.returncode == 0, apply.stderr
    assert "0 created, 1 updated" in apply.stdout
    (only,) = sdk[0].list_alert_policies(name=PARENT)
    assert only.name == made.name
    assert only.user_labels["greenlight_id"] == "disk-nearly-full"
    assert cli("diff", "staging", "--dir", str(out)).returncode == 0


def test_a_change_in_the_console_is_drift_and_apply_puts_it_back(sdk: Any) -> None:
    """A threshold changed through the SDK: diff names the field and exits 8; apply updates only
    that policy, with an update mask that leaves a field the files do not set (documentation)."""
    assert cli("apply", "staging").returncode == 0
    alerts = sdk[0]
    cpu = policies(sdk)["cpu-high"]
    cpu.conditions[0].condition_threshold.threshold_value = 0.95
    cpu.documentation = monitoring_v3.AlertPolicy.Documentation(
        content="runbook: go/cpu", mime_type="text/markdown"
    )
    alerts.update_alert_policy(
        alert_policy=cpu, update_mask=field_mask_pb2.FieldMask(paths=["conditions", "documentation"])
    )
    diff = cli("diff", "staging")
    assert diff.returncode == 8, diff.stdout + diff.stderr
    assert "conditions[0].condition_threshold.threshold_value: 0.95 -> 0.8" in diff.stdout
    assert "1 to update, 6 unchanged" in diff.stdout
    assert "FAILED: staging's monitoring drifts" in diff.stderr
    apply = cli("apply", "staging")
    assert apply.returncode == 0, apply.stderr
    assert "0 created, 1 updated, 6 unchanged" in apply.stdout
    after = policies(sdk)["cpu-high"]
    assert after.conditions[0].condition_threshold.threshold_value == 0.8
    assert after.documentation.content == "runbook: go/cpu"
    assert cli("diff", "staging").returncode == 0


def test_diff_follows_pages_past_the_first(sdk: Any) -> None:
    """Twelve hand-made policies and seven definitions span many of the lab's pages of 3: all are seen."""
    assert cli("apply", "staging").returncode == 0
    for i in range(12):
        hand_made(sdk, f"by hand {i}")
    diff = cli("diff", "staging", "--json")
    assert diff.returncode == 0, diff.stderr
    import json

    report = json.loads(diff.stdout)
    assert report["counts"] == {"create": 0, "update": 0, "unchanged": 7, "orphaned": 0, "unmanaged": 12}
    assert {i["display_name"] for i in report["items"] if i["action"] == "unmanaged"} == {
        f"by hand {i}" for i in range(12)
    }


BAD_FILES = [
    ("unknown placeholder", "spec:\n  display_name: '{colour}'\n", "unknown placeholder {colour}"),
    ("invalid YAML", "kind: AlertPolicy\nid: [unclosed\n", "not valid YAML"),
    ("unknown field", None, "spec is not a valid AlertPolicy"),
    ("condition without filter", None, "condition_threshold.filter: required"),
]


@pytest.mark.parametrize("case, text, fragment", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_file_is_refused_before_anything_is_applied(
    sdk: Any, tmp_path: Path, case: str, text: str | None, fragment: str
) -> None:
    """A bad file (sorted after six good ones) fails apply naming the file; the project stays empty."""
    directory = copy_definitions(tmp_path)
    bad = directory / "zz-bad.yaml"
    base = (directory / "cpu-high.yaml").read_text().replace("id: cpu-high", "id: zz-bad")
    if case == "unknown placeholder":
        bad.write_text(
            base.replace('display_name: "{environment}: CPU above 80 %"', "display_name: '{colour}'")
        )
    elif case == "unknown field":
        bad.write_text(base.replace("  combiner: OR", "  combiner: OR\n  colour: blue"))
    elif case == "condition without filter":
        lines = base.splitlines()
        start = next(i for i, line in enumerate(lines) if "filter: >-" in line)
        bad.write_text("\n".join(lines[:start] + lines[start + 4 :]) + "\n")
    else:
        assert text is not None
        bad.write_text(text)
    result = cli("apply", "staging", "--dir", str(directory))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"FAILED: {bad}" in result.stderr
    assert fragment in result.stderr
    assert list(sdk[0].list_alert_policies(name=PARENT)) == []
    assert list(sdk[1].list_uptime_check_configs(parent=PARENT)) == []


def test_a_filter_only_the_api_refuses_stops_apply_and_says_what_was_done(sdk: Any, tmp_path: Path) -> None:
    """A filter that passes the local checks but that the API refuses: apply stops there, exit 2,
    and prints what it created before; once fixed, a re-run creates the rest and nothing twice."""
    directory = copy_definitions(tmp_path)
    bad = directory / "memory-high.yaml"
    good = bad.read_text()
    bad.write_text(
        good.replace('metric.labels.memory_type = "non-evictable"', 'metric.labelz.memory_type = "x"')
    )
    result = cli("apply", "staging", "--dir", str(directory))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "metric.labelz.memory_type" in result.stderr
    assert "3 created" in result.stdout  # cpu-high, database-connections, error-rate sort first
    assert set(policies(sdk)) == {"cpu-high", "database-connections", "error-rate"}
    bad.write_text(good)
    again = cli("apply", "staging", "--dir", str(directory))
    assert again.returncode == 0, again.stderr
    assert "4 created, 0 updated, 3 unchanged" in again.stdout


def test_prune_deletes_only_what_greenlight_labelled(sdk: Any, tmp_path: Path) -> None:
    """A definition removed from the files: diff says orphaned (exit 8), apply leaves it, --prune
    deletes it; a hand-made policy survives both."""
    directory = copy_definitions(tmp_path)
    assert cli("apply", "staging", "--dir", str(directory)).returncode == 0
    hand = hand_made(sdk, "by hand")
    (directory / "memory-high.yaml").unlink()
    diff = cli("diff", "staging", "--dir", str(directory))
    assert diff.returncode == 8
    assert "orphaned" in diff.stdout and "1 orphaned" in diff.stdout and "1 hand-made" in diff.stdout
    kept = cli("apply", "staging", "--dir", str(directory))
    assert "0 deleted, 2 left alone" in kept.stdout
    assert "memory-high" in policies(sdk)
    pruned = cli("apply", "staging", "--dir", str(directory), "--prune")
    assert pruned.returncode == 0, pruned.stderr
    assert "1 deleted, 1 left alone" in pruned.stdout
    left = policies(sdk)
    assert "memory-high" not in left and left["by hand"].name == hand.name
    assert cli("diff", "staging", "--dir", str(directory)).returncode == 0


def test_environments_sharing_a_project_keep_apart(sdk: Any) -> None:
    """Staging and production in one project: each applies its own seven and drifts from neither's."""
    assert "7 created" in cli("apply", "staging").stdout
    assert "7 created" in cli("apply", "production").stdout
    assert len(list(sdk[0].list_alert_policies(name=PARENT))) == 10
    for env in ("staging", "production"):
        diff = cli("diff", env)
        assert diff.returncode == 0, diff.stdout
        assert "0 orphaned" in diff.stdout and "0 hand-made" in diff.stdout


def test_monitoring_unreachable_exits_transient(lab: LabState) -> None:
    """Monitoring answering UNAVAILABLE: exit 4 with the call named."""
    supervisor.control(
        lab, "POST", "/faults", {"target": "monitoring", "verb": "ListAlertPolicies", "count": 1}
    )
    result = cli("diff", "staging")
    assert result.returncode == 4, result.stdout + result.stderr
    assert "FAILED: Cloud Monitoring ListAlertPolicies failed" in result.stderr


def slack_texts(lab: LabState) -> list[str]:
    base = lab.env["GREENLIGHT_SLACK_BASE_URL"].removesuffix("/api/")
    return [str(m.get("text", "")) for m in httpx.get(f"{base}/lab/messages", timeout=5).json()]


def test_drift_flow_alerts_on_slack_and_fails(sdk: Any, lab: LabState) -> None:
    """The scheduled flow: no drift returns its report; a policy deleted by hand fails the run
    with GateFailed and raises the monitoring-drift alert (P3 in staging: Slack)."""
    from greenlight.flows.monitoring_code import monitoring_drift

    assert cli("apply", "staging").returncode == 0
    clean = monitoring_drift("staging")
    assert clean["drift"] is False and clean["counts"]["unchanged"] == 7
    sdk[0].delete_alert_policy(name=policies(sdk)["error-rate"].name)
    before = len(slack_texts(lab))
    with pytest.raises(GateFailed, match="1 missing"):
        monitoring_drift("staging")
    posted = slack_texts(lab)[before:]
    # raised as the staging profile's monitoring-drift alert: P3, on the route of that level
    assert any("[P3] staging: monitoring-drift: " in t and "1 missing" in t for t in posted), posted
