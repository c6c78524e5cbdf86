"""End to end through the lab's Prefect server: a signed GitHub webhook becomes an event, the event a
deployment run (prefect.yaml's trigger), the run a release that a worker carries out in the lab."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import get_client

from greenlight.clients.kube import Kube
from greenlight.settings import REPO_ROOT
from greenlight_lab.github import run_id_for, signed, workflow_run
from greenlight_lab.state import LabState, listening_socket, stop_pid

from .support import live, profile, push_commit

pytestmark = pytest.mark.lab
SECRET = "e2e-webhook-secret"


@pytest.fixture(scope="module")
def stack(lab: LabState, envdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """prefect.yaml deployed, a worker on the local pool and the webhook receiver, all on the release profiles."""
    state = tmp_path_factory.mktemp("e2e")
    env = {
        **os.environ, "GREENLIGHT_HOME": str(REPO_ROOT), "GREENLIGHT_ENVIRONMENTS": str(envdir),
        "GREENLIGHT_GITHUB_WEBHOOK_SECRET": SECRET, "PREFECT_WORKER_QUERY_SECONDS": "1",
        "GREENLIGHT_WEBHOOK_STATE": str(state / "webhook.sqlite"),
    }  # fmt: skip
    deployed = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--name", "staging-from-github"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
    sock = listening_socket()  # the receiver serves it: its port is never free for another process
    fd = sock.fileno()
    procs = []
    for name, argv, fds in (
        ("worker", [sys.executable, "-m", "prefect", "worker", "start", "--pool", "greenlight-local"], ()),
        ("webhook", [sys.executable, "-m", "greenlight.cli", "webhook", "serve", "--fd", str(fd)], (fd,)),
    ):
        with open(state / f"{name}.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    pass_fds=fds,
                )
            )
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, (state / "webhook.log").read_text()[-2000:]
        time.sleep(0.3)
    try:
        yield {"url": url, "logs": state}
    finally:
        for p in procs:
            stop_pid(p.pid)
        sock.close()


def runs_for(sha: str) -> list[Any]:
    """The staging-from-github runs whose parameters carry ``sha`` (filtered on the server: the lab's
    Prefect holds every run of the session)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name("build-promote/staging-from-github")
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])), limit=200
        )
    return [r for r in runs if (r.parameters.get("request") or {}).get("commit") == sha]


def test_signed_webhook_releases_the_commit_to_staging(
    lab: LabState, envdir: Path, stack: dict[str, Any], kube: Kube
) -> None:
    """A signed develop-branch workflow_run is answered at once, and the worker releases that commit to staging."""
    sha = uuid.uuid4().hex
    digests = push_commit(lab, sha)
    committed = datetime(2026, 11, 30, 9, 15, 42, tzinfo=UTC)
    body, headers = signed(workflow_run(sha, "develop", actor="dana", committed_at=committed), SECRET)
    t0 = time.monotonic()
    r = httpx.post(stack["url"] + "/github", content=body, headers=headers, timeout=10)
    assert r.status_code == 202 and r.json()["emitted"] is True
    assert time.monotonic() - t0 < 1.0
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        done = [x for x in runs_for(sha) if x.state and x.state.is_final()]
        if done:
            break
        time.sleep(1)
    else:
        raise AssertionError(
            f"no finished run for {sha}; worker log: {(stack['logs'] / 'worker.log').read_text()[-3000:]}"
        )
    assert done[0].state.is_completed(), done[0].state
    state = live(kube, profile("staging"))
    assert {app: s["digests"][app] for app, s in state.items()} == digests
    # the author recorded with the staging release is the GitHub actor: they may not approve production
    from greenlight.tasks.records import read_records

    newest = read_records.fn(profile("staging"))[-1]
    assert newest["author"] == "dana"
    # the commit time came from the signed body, through the event and prefect.yaml's trigger, with
    # the receiver's proof (commit_proof), which the flow verified: it counts in the lead time
    assert (newest["commit_at"], newest["commit_at_from"]) == (committed.isoformat(), "receiver")
    [run] = runs_for(sha)
    assert str(run.parameters["request"]["commit_proof"]).startswith(f"{run_id_for(sha, 'develop')}:ed25519:")
    # a replay of the same delivery starts nothing more
    r = httpx.post(stack["url"] + "/github", content=body, headers=headers, timeout=10)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    time.sleep(3)
    assert len(runs_for(sha)) == 1


@pytest.mark.parametrize(
    ("secret", "forge"),
    [(SECRET, True), ("not-the-secret", False)],
    ids=["forged-signature", "other-secret"],
)
def test_forged_webhook_triggers_nothing(
    lab: LabState, envdir: Path, stack: dict[str, Any], secret: str, forge: bool
) -> None:
    """A delivery whose signature does not verify is refused with 401 and no run is created."""
    sha = uuid.uuid4().hex
    body, headers = signed(workflow_run(sha, "develop"), secret)
    if forge:
        headers["X-Hub-Signature-256"] = "sha256=" + "0" * 64
    r = httpx.post(stack["url"] + "/github", content=body, headers=headers, timeout=10)
    assert r.status_code == 401
    time.sleep(3)
    assert runs_for(sha) == []
