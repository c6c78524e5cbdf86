"""Abuse of the production approval: nobody may approve as someone else. A click must be one the
lab's Slack signed just now, once, by a person on the allow-list who is not the author; a typed
answer, or a resume through the Prefect API with any run input, is refused under
``release.approval.require_verified`` and the run keeps waiting. Each case leaves one line in the
fault-injection report; production is unchanged through all of them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from greenlight.clients.kube import Kube
from greenlight.core.approval import Answer, attest, new_signing_key
from greenlight.core.release import release_id
from greenlight.errors import ReleaseRefused
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight_lab.state import LAB_APPROVAL_SIGNING_KEY, LabState
from tests.flows_release.support import (
    click,
    greenlight_cli,
    in_thread,
    judgement,
    live,
    paused_run,
    profile,
    push_commit,
    release_environments,
    release_report,
    wait_paused,
)

from .conftest import Fault

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with release_environments(lab, tmp_path_factory.mktemp("abuse-approval")) as directory:
        yield directory


def promote(env: str, sha: str) -> dict[str, object]:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor="carol"))


def test_forged_stale_replayed_unallowed_and_typed_answers_do_not_approve(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """While carol's commit waits for production approval: a click signed with another secret and
    one signed 400 s ago are refused by the receiver (401); a person not on the allow-list, a Slack
    user who is no person of the profile and carol herself are passed on, attested, and refused by
    the run; the very same signed click sent again is refused (409); `greenlight approve`, a resume
    through the Prefect API, and one carrying a proof signed with a key of the caller's own are
    refused by the run, which still waits. Then bob rejects: nothing was switched, and the report
    lists every refused answer."""
    fault.describe("production approval: forged, stale, replayed, unallowed and typed answers")
    sha = uuid.uuid4().hex[:10]
    digests = push_commit(lab, sha)
    promote("staging", sha)
    before = live(kube, profile("production"))
    t, out = in_thread(lambda: promote("production", sha))
    run = paused_run(sha)

    forged = click(lab, "alice", "approve", "ok", run=run, secret="not-the-signing-secret")
    fault.injected_by_hand(label="approval: a Slack click signed with another secret")
    assert forged["status"] == 401 and "does not verify" in forged["answer"]["error"], forged
    stale = click(lab, "alice", "approve", "ok", run=run, age_s=400)
    fault.injected_by_hand(label="approval: a Slack click signed 400 s ago (stale)")
    assert stale["status"] == 401 and "stale request" in stale["answer"]["error"], stale

    cases = {
        "dave": ("approval: a click by a person not on the allow-list", "dave (Slack U0LABDAVE1), verified is not an allowed approver"),
        "U0MALLORY9": ("approval: a click by a Slack user who is no person of the profile", "Slack user U0MALLORY9 is not a person of the profile"),
        "carol": ("approval: a click by the commit's author", "carol (Slack U0LABCAROL), verified is the release's author (carol)"),
    }  # fmt: skip
    for n, (who, (label, refusal)) in enumerate(cases.items(), start=1):
        sent = click(lab, who, "approve", "looks fine", run=run)
        fault.injected_by_hand(label=label)
        assert sent["status"] == 200, sent  # Slack's click, attested: the run judges the person
        judged = judgement(run, n)
        assert (judged["final"], judged["approved"], judged["verified"]) == (False, False, True), judged
        assert refusal in judged["text"], judged
        wait_paused(run)
        if n == 1:
            request = sent["request"]
            replay = httpx.post(
                request["url"], content=request["body"], headers=request["headers"], timeout=5
            )
            fault.injected_by_hand(label="approval: the same signed Slack click sent again (replay)")
            assert replay.status_code == 409 and "replayed" in replay.json()["error"], replay.text

    typed = greenlight_cli("approve", str(run), "--approver", "alice", "--reason", "typed")
    fault.injected_by_hand(label="approval: `greenlight approve --approver alice` under require_verified")
    said = typed.stdout + typed.stderr
    assert typed.returncode == 10, said  # AnswerRefused: the answer did not count, the run still waits
    assert (
        "FAILED: answer refused, the run still waits" in said
        and "unverified approval (typed as 'alice'" in said
    )
    wait_paused(run)
    resume_flow_run(run, run_input={"approve": True, "approver": "alice", "reason": "straight to the API"})
    fault.injected_by_hand(label="approval: a resume through the Prefect API naming alice")
    assert "unverified approval (typed as 'alice'" in judgement(run, 5)["text"]
    wait_paused(run)

    # a Prefect API user can read every Secret block (Prefect OSS has no users): the receiver's
    # private key is in none of them, and a proof signed with a key of their own does not verify
    with get_client(sync_client=True) as client:
        values = [
            str(v) for d in client.read_block_documents(include_secrets=True) for v in (d.data or {}).values()
        ]
    assert values and not any(LAB_APPROVAL_SIGNING_KEY in v for v in values)
    own, _ = new_signing_key()
    forged = Answer(True, "alice", "forged", slack_user="U0LABALICE", at=time.time(), nonce="forged-1")
    forged = replace(forged, proof=attest(own, str(run), release_id("production", digests, sha), forged))
    resume_flow_run(run, run_input=asdict(forged))
    fault.injected_by_hand(label="approval: a resume carrying a proof signed with another key")
    assert "its proof does not verify with the receiver's keys" in judgement(run, 6)["text"]
    wait_paused(run)
    assert t.is_alive(), "the run must still wait after refused answers"

    assert click(lab, "bob", "reject", "tested the refusals", run=run)["status"] == 200
    t.join(60)
    assert isinstance(out.get("error"), ReleaseRefused), out
    assert "rejected by bob (Slack U0LABBOB01), verified: tested the refusals" in str(out["error"])
    switched = live(kube, profile("production")) != before
    assert fault.measured_loss("production switched by a refused answer", int(switched)) == 0
    report = release_report(str(out["error"]).split()[1], "production")
    for _, refusal in cases.values():
        assert refusal in report, report
    assert "## Approval answers" in report
    assert report.count("unverified approval (typed as 'alice'") >= 2, report
