"""Signed images only, in the lab: the lab's production profile requires every digest to carry a
cosign signature by the lab key (staging requires none). The lab's registry signs every push
with that key unless told otherwise; an unsigned image, one signed by another key and one whose
``.sig`` holds another image's signature are refused before approval is asked and before
anything is deployed, naming each image and its problem."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight.errors import ReleaseRefused
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.tasks.records import read_records
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

from .support import (
    NAMESPACES,
    click,
    greenlight_cli,
    in_thread,
    live,
    paused_run,
    profile,
    release_report,
)

pytestmark = pytest.mark.lab
PROD = NAMESPACES["production"]


def commit() -> str:
    return uuid.uuid4().hex[:10]


def promote(env: str, sha: str, actor: str = "carol") -> dict[str, Any]:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor=actor))


def released_to_staging(lab: LabState, **signed_by: str | None) -> tuple[str, dict[str, str]]:
    """A new commit whose apps are signed as ``signed_by`` says (app -> signer, None: unsigned;
    default the lab key), released to staging (which requires no signature)."""
    sha = commit()
    digests = {}
    for app in ("backend", "frontend"):
        body = {
            "ref": f"ghcr.io/sma-platform/{app}:{sha}",
            "version": f"{app}-{sha}",
            "signed_by": signed_by.get(app, "lab"),
        }
        digests[app] = supervisor.control(lab, "POST", "/images", body)["digest"]
    assert promote("staging", sha)["outcome"] == "released"
    return sha, digests


def deployments(kube: Kube) -> dict[str, tuple[str, Any]]:
    """resourceVersion and pod template of every Deployment of rel-production."""
    return {
        obj["metadata"]["name"]: (obj["metadata"]["resourceVersion"], obj["spec"]["template"])
        for obj in kube.items("deployments", PROD)
    }


def runs_of(sha: str) -> list[Any]:
    """The production flow runs of commit ``sha`` with every state each went through."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter

    with get_client(sync_client=True) as client:
        runs = [
            r
            for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(), limit=200)
            if (r.parameters.get("request") or {}).get("commit") == sha
            and (r.parameters.get("request") or {}).get("environment") == "production"
        ]
        return [(r, [s.type.value for s in client.read_flow_run_states(r.id)]) for r in runs]


def approval_messages_since(lab: LabState, mark: int) -> list[dict[str, Any]]:
    """Slack messages since ``mark`` that ask for an approval (they carry buttons)."""
    return [
        m
        for m in supervisor.control(lab, "GET", "/slack")[mark:]
        if any(b.get("type") == "actions" for b in m.get("blocks") or [])
    ]


def test_a_signed_release_reaches_production_and_records_the_key(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Images the lab signed pass the check, the approval is asked, and the report, the result
    and the release record say which key signed each digest."""
    sha, digests = released_to_staging(lab)
    t, out = in_thread(lambda: promote("production", sha))
    run = paused_run(sha)
    assert click(lab, "alice", "approve", "signed and green", run=run)["status"] == 200
    t.join(180)
    assert out.get("result", {}).get("outcome") == "released", out
    result = out["result"]
    assert result["signatures"] == {"backend": "signed by lab", "frontend": "signed by lab"}
    report = release_report(result["release_id"], "production")
    assert "signed by lab" in report and "signature backend" in report, report
    record = next(r for r in read_records(profile("production")) if r["release_id"] == result["release_id"])
    assert record["signatures"] == {"backend": "signed by lab", "frontend": "signed by lab"}
    assert {app: s["digests"][app] for app, s in live(kube, profile("production")).items()} == digests


def test_unsigned_and_other_key_images_are_refused_by_the_cli_before_approval(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """backend unsigned, frontend signed by a key the profile does not name: both passed staging,
    `greenlight promote production` exits 7 with FAILED naming each image and its problem; no
    approval asked, the run never paused, production's Deployments untouched."""
    sha, digests = released_to_staging(lab, backend=None, frontend="other")
    before, slack_mark = deployments(kube), len(supervisor.control(lab, "GET", "/slack"))
    dry = greenlight_cli("promote", "production", "--commit", sha, "--dry-run")
    assert dry.returncode == 7, dry.stdout + dry.stderr
    assert "signature backend: unsigned: no cosign signature" in dry.stdout, dry.stdout
    assert "signature frontend: signed by another key (not lab)" in dry.stdout, dry.stdout
    proc = greenlight_cli("promote", "production", "--commit", sha, "--actor", "carol")
    assert proc.returncode == 7, proc.stdout + proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("FAILED:")]
    assert failed, proc.stderr
    assert (
        f"image ghcr.io/sma-platform/backend@{digests['backend']}: unsigned: no cosign signature"
        in failed[-1]
    )
    assert (
        f"image ghcr.io/sma-platform/frontend@{digests['frontend']}: signed by another key (not lab)"
        in failed[-1]
    )
    assert approval_messages_since(lab, slack_mark) == []
    said = [m.get("text") or "" for m in supervisor.control(lab, "GET", "/slack")[slack_mark:]]
    assert any("refused, nothing deployed" in t and digests["backend"] in t for t in said), said
    runs = runs_of(sha)
    assert runs and all("PAUSED" not in states for _, states in runs), runs
    assert deployments(kube) == before


def test_a_signature_over_another_digest_is_refused_before_approval(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """backend's .sig holds frontend's valid signature (by the lab key, over frontend's digest):
    refused as a signature over another digest, reported, nothing deployed, no approval asked."""
    sha, digests = released_to_staging(lab, backend=None)
    placed = supervisor.control(
        lab,
        "POST",
        "/images/signature",
        {"ref": f"ghcr.io/sma-platform/backend:{sha}", "from": f"ghcr.io/sma-platform/frontend:{sha}"},
    )
    assert placed["signature"] == f"copied from {digests['frontend']}"
    before, slack_mark = deployments(kube), len(supervisor.control(lab, "GET", "/slack"))
    with pytest.raises(ReleaseRefused) as err:
        promote("production", sha)
    expected = f"image ghcr.io/sma-platform/backend@{digests['backend']}: signature over another digest ({digests['frontend']})"
    assert str(err.value) == expected
    assert approval_messages_since(lab, slack_mark) == []
    assert deployments(kube) == before
    runs = runs_of(sha)
    assert runs and all("PAUSED" not in states for _, states in runs), runs
    from greenlight.core.release import release_id

    report = release_report(release_id("production", digests, sha), "production")
    assert "signatures" in report and "signature over another digest" in report, report
