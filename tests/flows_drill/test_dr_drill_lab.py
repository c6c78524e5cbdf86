"""The DR drill against the lab: restore the cross-region dump, apply production's bundle to lab-dr,
deploy production's live digests, validate, measure RTO/RPO against targets, tear down."""

from __future__ import annotations

import argparse
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.clients.monitoring import MonitoringClient
from greenlight.clients.postgres import Postgres
from greenlight.commands.drill import run as run_drill_command
from greenlight.core.drill import DRILL_LABEL
from greenlight.errors import DrillFailed, GateFailed
from greenlight.flows.dr_drill import dr_drill
from greenlight.settings import Profile, environments_dir
from greenlight_lab.state import LabState

from .conftest import DR_VALUE, NAMESPACE, PRODUCTION_VALUE

pytestmark = pytest.mark.lab

DR_DATABASE = "sma_dr"
APPS = ("backend", "frontend")


def database_exists(server: Postgres, name: str = DR_DATABASE) -> bool:
    return bool(server.scalar("SELECT count(*) > 0 FROM pg_database WHERE datname = %s", (name,)))


def live_digests(primary: Kube) -> dict[str, str]:
    """The digests production's live Services say are live."""
    out = {}
    for app in APPS:
        annotations = primary.get("services", app, NAMESPACE)["metadata"]["annotations"]
        out[app] = json.loads(annotations["greenlight.dev/digests"])[app]
    return out


def latest_metric(name: str, environment: str) -> float | None:
    rows = MonitoringClient("lab-project").read_latest(
        f'metric.type="custom.googleapis.com/greenlight/{name}" metric.labels.environment="{environment}"',
        datetime.now(UTC) - timedelta(minutes=10),
        datetime.now(UTC) + timedelta(seconds=5),
    )
    return rows[0][1] if rows else None


def slack_texts(lab: LabState) -> list[str]:
    base = lab.env["GREENLIGHT_SLACK_BASE_URL"].removesuffix("/api/")
    return [m["text"] or "" for m in httpx.get(f"{base}/lab/messages", timeout=5).json()]


def artifact(lab: LabState, key: str) -> str:
    """The newest markdown of the Prefect artifact ``key``."""
    found = httpx.post(
        f"{lab.env['PREFECT_API_URL']}/artifacts/latest/filter",
        json={"artifacts": {"key": {"any_": [key]}}},
        timeout=10,
    ).json()
    assert found, f"no artifact {key}"
    return str(found[0]["data"])


def nothing_of_the_drill_left(kube: Kube, namespace: str = NAMESPACE) -> None:
    if kube.find("namespaces", namespace) is None:
        return
    for plural in ("deployments", "services", "configmaps", "horizontalpodautoscalers", "ingresses"):
        assert kube.items(plural, namespace) == [], plural
    assert kube.items("pods", namespace, label_selector=DRILL_LABEL) == []


def test_drill_restores_applies_deploys_validates_reports_and_tears_down(
    lab: LabState,
    dr: Profile,
    source: Profile,
    primary: Kube,
    dr_kube: Kube,
    server: Postgres,
    secrets_ready: list[str],
) -> None:
    """With no bundle yet, the drill exports one, restores, deploys production's live digests to lab-dr,
    passes its smoke probes within both targets, publishes the record and leaves nothing behind."""
    result = dr_drill(dr.name, profile=dr, source_profile=source)
    assert result["passed"] is True, result["reasons"]
    steps = {s["name"]: s for s in result["steps"]}
    assert set(steps) == {
        "find-dump", "download-dump", "restore-database", "probe-database", "config-bundle", "plan",
        "check-secrets", "apply-config", "wait-healthy", "smoke", "dns-record", "teardown",
    }  # fmt: skip
    assert all(s["outcome"] == "ok" for s in steps.values()), steps
    assert "exported now from production" in steps["config-bundle"]["detail"]
    assert all(name in steps["check-secrets"]["detail"] for name in secrets_ready)
    assert result["digests"] == live_digests(primary)
    assert 0 < result["rto_seconds"] <= 300 and result["rto"].endswith("within target 300 s")
    assert re.fullmatch(r"RPO \d+ s within target 86400 s", result["rpo"])
    assert result["dump"].startswith("gs://sma-db-backups-dr/sma-db/")
    # torn down: nothing of the drill in lab-dr, the DR side's own Secrets untouched, the database gone
    nothing_of_the_drill_left(dr_kube)
    assert all(dr_kube.find("secrets", name, NAMESPACE) for name in secrets_ready)
    assert not database_exists(server)
    assert result["leftovers"] == []
    text = json.dumps(result)
    assert PRODUCTION_VALUE not in text and DR_VALUE not in text
    # the record
    assert latest_metric("drill_passed", "dr") == 1.0
    assert latest_metric("drill_rto_seconds", "dr") == pytest.approx(result["rto_seconds"])
    assert latest_metric("drill_rpo_seconds", "dr") == pytest.approx(result["rpo_seconds"])
    assert any(result["drill_id"] in t and "passed" in t for t in slack_texts(lab))
    report = artifact(lab, "dr-drill-dr")
    assert result["drill_id"] in report and "RTO" in report and "restore-database" in report


def test_missing_secret_fails_naming_it_and_still_tears_down(
    dr: Profile, source: Profile, dr_kube: Kube, server: Postgres, secrets_ready: list[str]
) -> None:
    """A DR namespace without the bundle's Secret fails the drill naming it; the database is dropped anyway."""
    namespace = f"drill-nosecret-{uuid.uuid4().hex[:6]}"
    profile = dr.model_copy(update={"namespace": namespace})
    with pytest.raises(DrillFailed) as info:
        dr_drill(profile.name, profile=profile, source_profile=source)
    assert isinstance(info.value, GateFailed)
    assert f"Secret {secrets_ready[0]} is missing" in str(info.value)
    steps = {s["name"]: s for s in info.value.result["steps"]}
    assert steps["check-secrets"]["outcome"] == "failed"
    assert "apply-config" not in steps and steps["smoke"]["outcome"] == "skipped"
    assert steps["restore-database"]["outcome"] == "ok" and steps["teardown"]["outcome"] == "ok"
    assert dr_kube.find("namespaces", namespace) is None
    assert not database_exists(server)
    assert latest_metric("drill_passed", "dr") == 0.0


@pytest.fixture
def strict_envdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The lab's profiles, with the dr profile's RTO target set to 1 s."""
    for name in ("production", "dr"):
        raw = yaml.safe_load((environments_dir() / f"{name}.yaml").read_text())
        if name == "dr":
            raw["dr"]["rto_target_s"] = 1
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("GREENLIGHT_ENVIRONMENTS", str(tmp_path))
    return tmp_path


def test_cli_fails_a_drill_that_misses_its_rto_saying_by_how_much(
    strict_envdir: Path,
    dr_kube: Kube,
    server: Postgres,
    secrets_ready: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`greenlight drill dr` with an RTO target of 1 s prints every step, exits 8 with "missed target 1 s
    by N s" on stderr, and still tears down."""
    code = run_drill_command(argparse.Namespace(command="drill", env="dr", keep=False, dry_run=False))
    captured = capsys.readouterr()
    out = captured.out
    assert code == 8
    missed = re.search(r"FAILED: .*RTO ([\d.]+) s missed target 1 s by ([\d.]+) s", captured.err)
    assert missed, out
    assert float(missed.group(2)) == pytest.approx(float(missed.group(1)) - 1, abs=1)
    for step in ("restore-database", "apply-config", "wait-healthy", "smoke", "teardown"):
        assert re.search(rf"^\+\s*[\d.]+ s\s+{step}\s+ok\s+[\d.]+ s", out, re.M), step
    assert re.search(r"^RPO\s+RPO \d+ s within target 86400 s", out, re.M)
    nothing_of_the_drill_left(dr_kube)
    assert not database_exists(server)


@pytest.fixture
def kept(dr_kube: Kube, server: Postgres) -> Iterator[list[str]]:
    """Drill ids whose kept objects (and the DR database) are removed after the test."""
    ids: list[str] = []
    yield ids
    for drill in ids:
        for plural in ("ingresses", "horizontalpodautoscalers", "deployments", "services", "configmaps"):
            for obj in dr_kube.items(plural, NAMESPACE, label_selector=f"{DRILL_LABEL}={drill}"):
                dr_kube.delete(plural, obj["metadata"]["name"], NAMESPACE)
        # their pods terminate as a kubelet stops them (preStop, grace period): wait until gone
        deadline = time.monotonic() + 60
        while dr_kube.items("pods", NAMESPACE, label_selector=f"{DRILL_LABEL}={drill}"):
            assert time.monotonic() < deadline, "the kept drill's pods did not terminate"
            time.sleep(0.2)
    server.drop_database(DR_DATABASE)


def test_keep_leaves_the_dr_workloads_running_on_production_digests(
    dr: Profile, source: Profile, primary: Kube, dr_kube: Kube, server: Postgres, kept: list[str]
) -> None:
    """With keep, the drill passes and leaves lab-dr running production's live digests, and the DR database."""
    result = dr_drill(dr.name, keep=True, profile=dr, source_profile=source)
    kept.append(result["drill_id"])
    assert result["passed"] is True, result["reasons"]
    assert result["steps"][-1]["name"] == "teardown" and result["steps"][-1]["outcome"] == "skipped"
    assert "exported now" not in next(s for s in result["steps"] if s["name"] == "config-bundle")["detail"]
    digests = live_digests(primary)
    running = dr_kube.items("deployments", NAMESPACE, label_selector=f"{DRILL_LABEL}={result['drill_id']}")
    assert len(running) == len(APPS)
    for dep in running:
        app = dep["metadata"]["labels"]["app"]
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
        assert image == f"ghcr.io/sma-platform/{app}@{digests[app]}"
        assert dep["status"]["availableReplicas"] == dep["spec"]["replicas"] > 0
    assert {s["metadata"]["name"] for s in dr_kube.items("services", NAMESPACE)} >= set(APPS)
    assert database_exists(server)


def test_dry_run_prints_the_plan_and_changes_nothing(
    lab: LabState, dr_kube: Kube, server: Postgres, capsys: pytest.CaptureFixture[str]
) -> None:
    """`greenlight drill dr --dry-run` names the dump, the digests and the targets, and creates nothing."""
    code = run_drill_command(argparse.Namespace(command="drill", env="dr", keep=False, dry_run=True))
    out = capsys.readouterr().out
    assert code == 0
    assert "would restore gs://sma-db-backups-dr/sma-db/" in out and "into database sma_dr" in out
    assert re.search(r"would deploy backend @ sha256:[0-9a-f]{64}", out)
    assert "targets: RTO 300 s, RPO 86400 s" in out and "DRY RUN" in out
    nothing_of_the_drill_left(dr_kube)
    assert not database_exists(server)


def test_cli_json_of_a_failed_drill_is_one_document_with_the_timeline(
    strict_envdir: Path,
    dr_kube: Kube,
    server: Postgres,
    secrets_ready: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`greenlight drill dr --json` that misses its RTO prints one JSON document on stdout (passed
    false, the reason, every step, RTO and RPO), FAILED on stderr, exits 8, and still tears down."""
    args = argparse.Namespace(command="drill", env="dr", keep=False, dry_run=False, json=True)
    code = run_drill_command(args)
    captured = capsys.readouterr()
    assert code == 8, captured.err[-3000:]
    doc = json.loads(captured.out)
    assert doc["environment"] == "dr" and doc["passed"] is False
    assert "missed target 1 s" in doc["rto"] and doc["rto_target_s"] == 1
    assert "missed target 1 s" in next(
        line for line in captured.err.splitlines() if line.startswith("FAILED:")
    )
    steps = {s["name"]: s for s in doc["steps"]}
    for step in ("restore-database", "apply-config", "wait-healthy", "smoke", "teardown"):
        assert steps[step]["outcome"] == "ok", steps[step]
    assert "progress: drill dr: started" in captured.err
    nothing_of_the_drill_left(dr_kube)
    assert not database_exists(server)


def test_dry_run_json_lists_the_plan(
    lab: LabState, dr_kube: Kube, capsys: pytest.CaptureFixture[str]
) -> None:
    """`greenlight drill dr --dry-run --json` prints the plan's lines as a JSON list, changing nothing."""
    code = run_drill_command(
        argparse.Namespace(command="drill", env="dr", keep=False, dry_run=True, json=True)
    )
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["dry_run"] is True and doc["environment"] == "dr"
    assert any(line.startswith("would restore gs://sma-db-backups-dr/sma-db/") for line in doc["plan"])
    assert any("targets: RTO 300 s, RPO 86400 s" in line for line in doc["plan"])
    nothing_of_the_drill_left(dr_kube)
