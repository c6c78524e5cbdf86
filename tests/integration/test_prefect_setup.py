"""`greenlight setup` and prefect.yaml against the lab's real Prefect server."""

from __future__ import annotations

import os

import pytest
from prefect.client.orchestration import get_client

from greenlight.commands.setup import WORK_POOL, ensure_setup
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

pytestmark = pytest.mark.lab


def test_setup_twice_changes_nothing_the_second_time(lab: LabState) -> None:
    """The first setup creates the work pool, locks and variables (or finds them); the second only finds them."""
    ensure_setup()
    second = ensure_setup()
    assert second and all(line.startswith(("exists", "skipped")) for line in second), second
    with get_client(sync_client=True) as client:
        assert client.read_work_pool(WORK_POOL).type == "process"
        for env in ("staging", "production", "dr"):
            assert client.read_global_concurrency_limit_by_name(f"greenlight-release-{env}").limit == 1
            assert client.read_variable_by_name(f"greenlight_release_freeze_{env}").value == "off"


def test_prefect_yaml_deploys_every_flow_with_schedules_and_triggers(lab: LabState) -> None:
    """`prefect --no-prompt deploy --all` succeeds against a fresh server after setup; schedules keep their
    time zones and the GitHub and dead-man's-switch automations exist."""
    ensure_setup()
    out = supervisor.deploy_prefect_yaml(dict(os.environ), timeout_s=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with get_client(sync_client=True) as client:
        deployments = {f"{d.entrypoint.rsplit('.', 1)[1]}/{d.name}": d for d in client.read_deployments()}
        automations = client.read_automations()
    expected = {
        "build_promote/staging-from-github", "build_promote/production-from-github", "build_promote/promote",
        "rollback/roll-back-now", "switch/point-traffic-at-a-colour", "monitor/watch-and-roll-back-on-breach", "verify_backups/nightly", "backup_config/daily", "dr_drill/quarterly",
        "cleanup/hourly", "alert/by-hand", "monitoring_drift/production-drift",
    }  # fmt: skip
    assert expected <= set(deployments)
    nightly = deployments["verify_backups/nightly"].schedules[0].schedule
    assert (nightly.cron, nightly.timezone) == ("0 3 * * *", "UTC")
    assert deployments["dr_drill/quarterly"].schedules[0].schedule.cron == "0 6 1 1,4,7,10 *"
    names = {a.name for a in automations}
    assert any(n.startswith("staging-from-github") for n in names)
    switch = next(a for a in automations if a.name == "greenlight-dead-mans-switch-production")
    assert switch.trigger.posture.value == "Proactive"
    assert switch.trigger.within.total_seconds() == 26 * 3600
    # the server notifies itself (no flow run, so no worker): PagerDuty and Slack blocks
    assert {a.type for a in switch.actions} == {"send-notification"} and len(switch.actions) >= 2
    assert [a.type for a in switch.actions_on_resolve] == ["send-notification"]
