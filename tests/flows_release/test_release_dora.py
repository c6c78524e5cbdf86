"""DORA figures of a history of real releases in the lab, checked against figures computed by hand.

An environment of its own (``dora``, namespace rel-dora: a copy of the release tests' staging)
gets two releases of commits whose times come from signed GitHub payloads (the receiver's
decision on the lab GitHub's delivery, vouched for with the lab receiver's key as the receiver
does), a manual rollback of the second, then a release of an image that degrades after the switch
and is rolled back by its bake, and last a release started by hand with a typed commit_at and no
proof (a deployment, but not in the lead time). The expected figures are
computed here, from the records' own timestamps read back from the ConfigMap; then
``greenlight metrics dora --json --publish`` must print them and the lab's Monitoring must hold
them."""

from __future__ import annotations

import json
import math
import statistics
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight.clients.monitoring import MonitoringClient
from greenlight.core.commit_proof import vouch
from greenlight.errors import GateFailed
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.flows.rollback import rollback
from greenlight.settings import load_profile
from greenlight.tasks.records import RECORD
from greenlight.webhook.verify import build_routes, decide
from greenlight_lab.github import workflow_run
from greenlight_lab.state import LAB_APPROVAL_SIGNING_KEY, LabState

from .support import copy_environment, greenlight_cli, push_commit

pytestmark = pytest.mark.lab
ENV, NAMESPACE = "dora", "rel-dora"


def t(text: str) -> datetime:
    return datetime.fromisoformat(text)


def release(sha: str, committed: datetime, **kw: Any) -> dict[str, Any]:
    """Promote ``sha`` to ENV as the trigger of a signed develop run does: commit_at is what the
    receiver's decision put in the event's payload from the signed body."""
    profile = load_profile(ENV)
    routes = build_routes([(ENV, profile.github)])
    assert profile.github is not None
    decision = decide(
        "workflow_run",
        str(uuid.uuid4()),
        workflow_run(sha, profile.github.branch, committed_at=committed),
        routes,
    )
    assert decision.action == "emit" and decision.payload is not None, decision.reason
    p = decision.payload
    # what the receiver adds with its key ($GREENLIGHT_APPROVAL_SIGNING_KEY; the lab's)
    proof = vouch(LAB_APPROVAL_SIGNING_KEY, p["repository"], p["sha"], p["commit_at"], p["run_id"])
    return build_promote(
        PromoteRequest(
            environment=ENV, commit=sha, actor="dave", commit_at=p["commit_at"], commit_proof=proof, **kw
        )
    )


def records(kube: Kube) -> dict[str, dict[str, Any]]:
    return {k: json.loads(v) for k, v in kube.get("configmaps", RECORD, NAMESPACE)["data"].items()}


@pytest.fixture(scope="module")
def history(lab: LabState, envdir: Path) -> Iterator[dict[str, Any]]:
    """Released A, released B, B rolled back by hand, C released and rolled back on breach."""
    kube = Kube.connect(context="lab-primary")
    try:
        yield _make_history(lab, envdir, kube)
    finally:
        kube.close()


def _make_history(lab: LabState, envdir: Path, kube: Kube) -> dict[str, Any]:
    copy_environment(lab, envdir, ENV, NAMESPACE)
    now = datetime.now(UTC).replace(microsecond=0)
    shas = {name: uuid.uuid4().hex[:10] for name in "ABCD"}
    committed = {
        "A": now - timedelta(hours=3),
        "B": now - timedelta(minutes=90),
        "C": now - timedelta(minutes=20),
        "D": now - timedelta(hours=20),  # typed: would dominate the lead time if it counted
    }
    rids = {}
    for name in "AB":
        push_commit(lab, shas[name])
        out = release(shas[name], committed[name])
        assert out["outcome"] == "released", out
        rids[name] = out["release_id"]
    undone = rollback(ENV, reason="dora test: B undone by hand", actor="erin")
    assert {s["action"] for s in undone["apps"].values()} == {"switch"}, undone
    push_commit(lab, shas["C"], degrade_after_s=9, degraded_error_rate=0.5)
    with pytest.raises(GateFailed, match="rolled back"):
        release(shas["C"], committed["C"], bake_s=30)
    # started by hand (the Prefect API) with a typed commit time and no receiver proof
    push_commit(lab, shas["D"])
    typed = build_promote(
        PromoteRequest(environment=ENV, commit=shas["D"], actor="erin", commit_at=committed["D"])
    )
    assert typed["outcome"] == "released", typed
    rids["D"] = typed["release_id"]
    # someone with ConfigMap rights adds a release that never happened: unsigned, it must not count
    forged = {"release_id": "dora-forged", "outcome": "released", "environment": ENV,
              "switched_at": datetime.now(UTC).isoformat(), "commit_at": now.isoformat()}  # fmt: skip
    kube.patch("configmaps", RECORD, {"data": {"dora-forged": json.dumps(forged)}}, NAMESPACE)
    return {"shas": shas, "committed": committed, "rids": rids, "records": records(kube)}


def by_hand(history: dict[str, Any]) -> dict[str, Any]:
    """The figures over one day, computed from the records' own timestamps."""
    recs = history["records"]
    rid_a, rid_b = history["rids"]["A"], history["rids"]["B"]
    a, b, d = recs[rid_a], recs[rid_b], recs[history["rids"]["D"]]
    assert d["commit_at_from"] == "typed"  # not in the lead time
    [c] = [r for r in recs.values() if r["outcome"] == "rolled-back"]
    [rb] = [r for r in recs.values() if r["outcome"] == "rollback"]
    lead = sorted((t(r["switched_at"]) - t(r["commit_at"])).total_seconds() for r in (a, b, c))
    restore = [
        (t(c["restored_at"]) - t(c["switched_at"])).total_seconds(),  # C: from its switch to the rollback
        (t(rb["restored_at"]) - t(b["switched_at"])).total_seconds(),  # B: from its switch to the manual one
    ]
    return {
        "deployment_frequency": 4 / 1,
        "deployments": 4.0,
        "lead_time_median_seconds": lead[1],  # A, B, C: D's typed commit time is left out
        "lead_time_p90_seconds": lead[math.ceil(0.9 * 3) - 1],  # nearest rank: the 3rd of 3
        "change_failure_rate": 2 / 4,  # B (undone by hand) and C (rolled back on breach)
        "time_to_restore_median_seconds": (restore[0] + restore[1]) / 2,
        "failed": {rid_b, c["release_id"]},
        "rollback": rb,
    }


def test_records_carry_what_the_figures_need(history: dict[str, Any]) -> None:
    """Each release record has its switch and commit time (the signed payload's, vouched for by the
    receiver's proof); the typed one says so; the rollback on breach and the manual rollback are
    recorded, the latter naming the release it undid."""
    recs, committed, rids = history["records"], history["committed"], history["rids"]
    for name in "AB":
        r = recs[rids[name]]
        assert r["outcome"] == "released" and t(r["commit_at"]) == committed[name]
        assert r["commit_at_from"] == "receiver" and t(r["switched_at"]) <= t(r["at"])
    d = recs[rids["D"]]
    assert (t(d["commit_at"]), d["commit_at_from"]) == (committed["D"], "typed")
    [c] = [r for r in recs.values() if r["outcome"] == "rolled-back"]
    assert (t(c["commit_at"]), c["commit_at_from"]) == (committed["C"], "receiver")
    assert t(c["switched_at"]) < t(c["decided_at"]) <= t(c["restored_at"])
    [rb] = [r for r in recs.values() if r["outcome"] == "rollback"]
    assert rb["undid"] == [rids["B"]] and rb["actor"] == "erin"
    assert t(recs[rids["B"]]["switched_at"]) < t(rb["restored_at"]) < t(c["switched_at"])


def test_metrics_command_prints_the_hand_computed_figures_and_publishes_them(history: dict[str, Any]) -> None:
    """`greenlight metrics dora --days 1 --json --publish` gives the figures computed by hand, skips and
    names the forged record, and the lab's Monitoring holds each figure under dora/ with its labels;
    publishing again at once waits out the 5 s sampling period rather than being refused."""
    want = by_hand(history)
    out = greenlight_cli("metrics", ENV, "--days", "1", "--json", "--publish")
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    figures = {k: v for k, v in want.items() if k not in ("failed", "rollback")}
    assert doc["figures"] == pytest.approx(figures, abs=1e-3)
    assert {r["release_id"] for r in doc["releases"] if r["failed_by"]} == want["failed"]
    assert [s for s in doc["untrusted_skipped"] if s.startswith("dora-forged")], doc["untrusted_skipped"]
    assert len(doc["untrusted_skipped"]) == 1 and doc["window_days"] == 1
    prefix = "custom.googleapis.com/greenlight/dora"
    assert doc["published"] == pytest.approx({f"{prefix}/{k}": v for k, v in figures.items()}, abs=1e-3)
    now = datetime.now(UTC)
    points = MonitoringClient("lab-project").read_latest(
        f'metric.type = starts_with("{prefix}/") metric.labels.environment = "{ENV}"',
        now - timedelta(minutes=5),
        now + timedelta(seconds=1),
    )
    assert {labels["window_days"] for labels, _, _ in points} == {"1"}
    assert len(points) == len(figures)
    again = greenlight_cli("metrics", ENV, "--days", "1", "--publish")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "change failure rate: 0.5 (2 of 4 failed)" in again.stdout
    assert "(3 of 4 deployment(s) with a commit time the receiver vouched for)" in again.stdout
    assert "left out of the lead time: 1 deployment(s): commit time typed" in again.stdout
    assert doc["lead_time_left_out"] == {"commit time typed, not vouched for by the GitHub receiver": 1}
    assert "skipped, untrusted: dora-forged" in again.stdout


def test_points_read_back_equal_the_figures(history: dict[str, Any]) -> None:
    """Each published point, read back from the lab's Monitoring, is the figure computed by hand."""
    want = by_hand(history)
    now = datetime.now(UTC)
    prefix = "custom.googleapis.com/greenlight/dora"
    for name in ("deployment_frequency", "lead_time_median_seconds", "change_failure_rate",
                 "time_to_restore_median_seconds"):  # fmt: skip
        rows = MonitoringClient("lab-project").read_latest(
            f'metric.type = "{prefix}/{name}" metric.labels.environment = "{ENV}" metric.labels.window_days = "1"',
            now - timedelta(minutes=5),
            now + timedelta(seconds=1),
        )
        assert [v for _, v, _ in rows] == [pytest.approx(want[name], abs=1e-3)], (name, rows)


@pytest.mark.parametrize(("args", "code", "says"), [(["--days", "0"], 2, "--days must be between 1"),
                                                    (["--days", "400"], 2, "--days must be between 1")])  # fmt: skip
def test_bad_days_exit_2_naming_the_option(
    history: dict[str, Any], args: list[str], code: int, says: str
) -> None:
    """A window outside 1..366 days is refused before anything is read."""
    out = greenlight_cli("metrics", ENV, *args)
    assert out.returncode == code and f"FAILED: {says}" in out.stderr, out.stderr


def test_an_unknown_environment_exits_2_naming_it(envdir: Path) -> None:
    """An environment without a profile is bad input (exit 2), as for every command."""
    out = greenlight_cli("metrics", "qa")
    assert out.returncode == 2 and "FAILED: unknown environment 'qa'" in out.stderr, out.stderr


def test_lead_times_are_the_records_own(history: dict[str, Any]) -> None:
    """The lead times printed per release are switched_at - commit_at of their records; the typed
    one has none."""
    out = greenlight_cli("metrics", ENV, "--days", "1", "--json")
    doc = json.loads(out.stdout)
    recs = history["records"]
    for r in doc["releases"]:
        src = next(
            x for x in recs.values() if x["release_id"] == r["release_id"] and x["outcome"] == r["outcome"]
        )
        if r["release_id"] == history["rids"]["D"]:
            assert (r["lead_time_s"], r["commit_at_from"]) == (None, "typed")
            continue
        assert r["lead_time_s"] == pytest.approx(
            (t(src["switched_at"]) - t(src["commit_at"])).total_seconds()
        )
    assert statistics.median(doc["lead_times_s"]) == pytest.approx(doc["figures"]["lead_time_median_seconds"])
