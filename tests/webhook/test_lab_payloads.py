"""The lab's GitHub stand-in (greenlight_lab.github, used by the demo, the e2e release test and the
fault suite) sends what GitHub sends: its deliveries pass the receiver's filter and name a run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from greenlight.webhook.app import SecretSource, create_app, load_routes
from greenlight.webhook.dedupe import DeliveryStore
from greenlight.webhook.verify import RunIdentity, decide
from greenlight_lab.github import run_id_for, signed, workflow_run
from greenlight_lab.state import LAB_ENVIRONMENTS

from .support import AppClient, RecordingEmitter

SECRET = "demo-webhook-secret"


def test_the_labs_develop_and_main_runs_release_staging_and_production() -> None:
    """A lab run on develop releases staging and one on main production, each naming its run."""
    routes = load_routes(LAB_ENVIRONMENTS)
    for branch, environment in (("develop", "staging"), ("main", "production")):
        decision = decide("workflow_run", "d-1", workflow_run("abc123", branch), routes)
        assert (decision.action, decision.environment) == ("emit", environment), decision.reason
        assert decision.run == RunIdentity("sma-platform/sma", run_id_for("abc123", branch), 1)


def test_one_push_is_one_run_and_another_commit_another() -> None:
    """The same commit and branch give the same run id (GitHub runs a workflow once per push); a
    new commit, or the commit on another branch, a new one; an explicit id and attempt are kept."""
    assert run_id_for("abc", "develop") == run_id_for("abc", "develop")
    assert len({run_id_for("abc", "develop"), run_id_for("abd", "develop"), run_id_for("abc", "main")}) == 3
    payload = workflow_run("abc", "develop", run_id=7, run_attempt=2)
    assert (payload["workflow_run"]["id"], payload["workflow_run"]["run_attempt"]) == (7, 2)


def test_the_labs_fork_and_pull_request_runs_are_ignored() -> None:
    """The stand-in can also send what must not release: a pull request from a fork, or from a branch."""
    routes = load_routes(LAB_ENVIRONMENTS)
    fork = workflow_run("abc", "develop", event="pull_request", head_repository="evil/sma")
    own = workflow_run("abc", "develop", event="pull_request")
    assert decide("workflow_run", "d", fork, routes).reason == "run from fork evil/sma, not sma-platform/sma"
    assert decide("workflow_run", "d", own, routes).reason == "event pull_request, not push"


def test_the_demos_two_commits_each_emit_once(tmp_path: Path) -> None:
    """As the demo sends them (a good commit, then a bad one; new delivery ids each time), both
    emit, and the good commit sent again is a duplicate."""
    emitter = RecordingEmitter()
    app = create_app(
        routes=load_routes(LAB_ENVIRONMENTS),
        store=DeliveryStore(tmp_path / "w.sqlite"),
        secret=SecretSource(SECRET),
        emitter=emitter,
    )
    client = AppClient(app)
    good, bad = uuid.uuid4().hex, uuid.uuid4().hex
    answers = []
    for sha in (good, bad, good):
        body, headers = signed(workflow_run(sha, "develop"), SECRET)
        response = client.post("/github", content=body, headers=headers)
        answers.append((response.status_code, json.loads(response.content)))
    assert answers == [
        (202, {"emitted": True, "environment": "staging", "sha": good}),
        (202, {"emitted": True, "environment": "staging", "sha": bad}),
        (200, {"duplicate": True}),
    ]
    assert [e["payload"]["sha"] for e in emitter.events] == [good, bad]


def test_the_labs_runs_carry_the_head_commits_time_as_github_does() -> None:
    """The stand-in's run has head_commit with the commit's timestamp (``...Z``), which the receiver
    carries, in UTC, as the event's commit_at."""
    from datetime import UTC, datetime

    made = datetime(2026, 11, 30, 9, 15, 42, tzinfo=UTC)
    payload = workflow_run("abc123", "develop", committed_at=made)
    assert payload["workflow_run"]["head_commit"]["timestamp"] == "2026-11-30T09:15:42Z"
    assert payload["workflow_run"]["head_commit"]["id"] == "abc123"
    decision = decide("workflow_run", "d-1", payload, load_routes(LAB_ENVIRONMENTS))
    assert decision.payload is not None and decision.payload["commit_at"] == "2026-11-30T09:15:42+00:00"
