"""Production approval by verified people, in the lab: a click in the lab's Slack, signed as Slack
signs it, reaches the lab's receiver (``greenlight webhook serve``), which attests who clicked and
resumes the paused run; the run judges the answer itself. The refusals (forged, stale and replayed
clicks, people not on the allow-list, the author, typed answers) are abuse cases of the fault
suite: tests/faults/test_abuse_approval.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

from .support import (
    click,
    greenlight_cli,
    in_thread,
    live,
    paused_run,
    profile,
    push_commit,
    release_environments,
    release_report,
)

pytestmark = pytest.mark.lab


def commit() -> str:
    return uuid.uuid4().hex[:10]


def promote(env: str, sha: str, actor: str) -> dict[str, Any]:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor=actor))


@pytest.fixture(scope="module")
def carols(lab: LabState, envdir: Path) -> str:
    """A commit that carol (GitHub login carol, Slack U0LABCAROL) released to staging."""
    sha = commit()
    push_commit(lab, sha)
    promote("staging", sha, actor="carol")
    return sha


def approval_messages(lab: LabState, run: uuid.UUID) -> list[dict[str, Any]]:
    """The lab Slack's records of the approval message of ``run`` (posted, then updated)."""
    ts = {
        m["ts"] for m in supervisor.control(lab, "GET", "/slack")
        if any(str(run) in str(b) for b in m.get("blocks") or [])
    }  # fmt: skip
    return [m for m in supervisor.control(lab, "GET", "/slack") if m["ts"] in ts]


def test_slack_approval_by_an_allowed_person_switches_and_is_reported_verified(
    lab: LabState, carols: str, kube: Kube
) -> None:
    """alice clicks Approve with a reason: production moves to the commit's digests, the report says
    "approved by alice (Slack U0LABALICE), verified", and the approval message says who decided,
    when and why, with its buttons gone."""
    t, out = in_thread(lambda: promote("production", carols, actor="carol"))
    run = paused_run(carols)
    sent = click(lab, "alice", "approve", "staging is green", run=run)
    assert sent["status"] == 200, sent
    assert sent["answer"]["as"] == "alice" and sent["answer"]["slack_user"] == "U0LABALICE", sent
    t.join(180)
    assert "result" in out, out
    assert out["result"]["outcome"] == "released"
    rid = out["result"]["release_id"]
    report = release_report(rid, "production")
    assert "approved by alice (Slack U0LABALICE), verified: staging is green" in report
    after = live(kube, profile("production"))
    assert {a: s["release_id"] for a, s in after.items()} == {"backend": rid, "frontend": rid}
    final = approval_messages(lab, run)[-1]
    assert final["kind"] == "update" and "approved by alice (Slack U0LABALICE), verified" in final["text"]
    assert " UTC" in final["text"] and not any(b["type"] == "actions" for b in final["blocks"] or [])


def test_typed_answers_count_as_unverified_without_require_verified(
    lab: LabState, envdir: Path, tmp_path: Path
) -> None:
    """With release.approval.require_verified off, `greenlight approve --approver alice` approves,
    and the report marks the approval typed and unverified."""
    with release_environments(lab, tmp_path, production={"release.approval.require_verified": False}):
        sha = commit()
        push_commit(lab, sha)
        promote("staging", sha, actor="dave")
        t, out = in_thread(lambda: promote("production", sha, actor="dave"))
        run = paused_run(sha)
        typed = greenlight_cli("approve", str(run), "--approver", "alice", "--reason", "typed is fine here")
        assert typed.returncode == 0, typed.stdout + typed.stderr
        assert "the run judged it: approved by alice (typed, unverified): typed is fine here" in typed.stdout
        t.join(180)
        assert out.get("result", {}).get("outcome") == "released", out
        report = release_report(out["result"]["release_id"], "production")
        assert "approved by alice (typed, unverified): typed is fine here" in report
