"""Greenlight out of one machine: a Prefect server on PostgreSQL, two workers on one pool.

A lab of its own (not the session ``lab``): ``supervisor.up(prefect_db="postgres", workers=2,
worker_limit=3)``, prefect.yaml deployed. Two releases of each of two environments and the nightly
backup verification are started at once through the deployments; each worker takes at most three
flow runs at a time, so five runs need both of them.

The environments are the release tests' copies of the lab's profiles (tests/flows_release/support.py
``release_environments``: staging in rel-staging, production in rel-production) with production's
approval and its staging requirement turned off, so that both release unattended; production keeps
its backups section, which the nightly verification reads. The runs get the profiles' directory
through the deployment's job variables (``env``), as a team passes settings to a pool's runs.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from greenlight.clients.postgres import Postgres
from greenlight_lab import supervisor
from greenlight_lab.session import lab_session
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState
from tests.flows_release.support import push_commit, release_environments

pytestmark = pytest.mark.lab

WORKERS = 2
WORKER_LIMIT = 3  # five runs at once cannot all go to one worker
RUN_TIMEOUT_S = 150
#: production releases unattended here: no approval, no staging record required
PRODUCTION = {"release.approval.required": False, "release.requires": None}


@pytest.fixture(scope="module")
def scale_lab() -> Iterator[LabState]:
    """A lab whose Prefect server keeps its database on the lab's PostgreSQL, with two workers;
    the environment points every client at it for the module."""
    with lab_session(
        "greenlight-scale-", prefect_db="postgres", workers=WORKERS, worker_limit=WORKER_LIMIT
    ) as state:
        yield state


@pytest.fixture(scope="module")
def envdir(scale_lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """staging and production (unattended) in their own namespaces, locks created, apps bootstrapped;
    dr too, which prefect.yaml's drill deployment names."""
    directory = tmp_path_factory.mktemp("scale-envs")
    with release_environments(scale_lab, directory, production=PRODUCTION) as envs:
        shutil.copyfile(LAB_ENVIRONMENTS / "dr.yaml", envs / "dr.yaml")
        yield envs


@pytest.fixture(scope="module")
def deployed(scale_lab: LabState, envdir: Path) -> None:
    """``prefect --no-prompt deploy --all`` from the checkout, onto the PostgreSQL-backed server."""
    out = supervisor.deploy_prefect_yaml({**os.environ, "GREENLIGHT_ENVIRONMENTS": str(envdir)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@dataclass(frozen=True)
class Started:
    what: str  # "staging <sha>", "production <sha>", "nightly"
    environment: str | None
    commit: str | None
    run: UUID


def start_runs(envdir: Path, commits: dict[str, list[str]]) -> list[Started]:
    """Every release and the nightly verification, created at once through their deployments."""
    from prefect.deployments import run_deployment

    job_variables = {"env": {"GREENLIGHT_ENVIRONMENTS": str(envdir)}}
    started = []
    for env, shas in commits.items():
        for sha in shas:
            run = run_deployment(
                "build-promote/promote",
                parameters={"request": {"environment": env, "commit": sha, "actor": "carol"}},
                job_variables=job_variables,
                timeout=0,
            )
            started.append(Started(f"{env} {sha}", env, sha, run.id))
    nightly = run_deployment("backup-verification/nightly", job_variables=job_variables, timeout=0)
    started.append(Started("nightly", None, None, nightly.id))
    return started


def wait_final(runs: list[Started], timeout_s: float) -> dict[UUID, Any]:
    """Each run's flow run once every one is final (or the timeout passed)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            read = {r.run: client.read_flow_run(r.run) for r in runs}
            if all(fr.state is not None and fr.state.is_final() for fr in read.values()):
                return read
            if time.monotonic() > deadline:
                return read
            time.sleep(1)


def submitted_by(runs: list[Started], timeout_s: float = 20) -> dict[UUID, str]:
    """flow run -> the worker that submitted it, from the workers' ``prefect.worker.submitted-flow-run``
    events as the server stored them."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    wanted = {r.run for r in runs}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(
                EventFilter(event=EventNameFilter(name=["prefect.worker.submitted-flow-run"])), limit=50
            )
            found: dict[UUID, str] = {}
            for event in page.events:
                worker = event.resource.get("prefect.resource.name", event.resource.id)
                for related in event.related:
                    rid = related.id
                    if rid.startswith("prefect.flow-run."):
                        found[UUID(rid.removeprefix("prefect.flow-run."))] = worker
            if wanted <= found.keys() or time.monotonic() > deadline:
                return {k: v for k, v in found.items() if k in wanted}
            time.sleep(0.5)


def release_windows(commits: set[str], timeout_s: float = 20) -> dict[str, tuple[datetime, datetime, str]]:
    """commit -> (started, finished, environment) from the releases' greenlight.release.started and
    .finished events (emitted after taking the environment's release lock and before giving it back)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(
                EventFilter(
                    event=EventNameFilter(name=["greenlight.release.started", "greenlight.release.finished"])
                ),
                limit=50,
            )
            marks: dict[tuple[str, str], Any] = {}
            for e in page.events:
                if e.payload.get("commit") in commits:
                    marks[(e.payload["commit"], e.event.rsplit(".", 1)[1])] = e
            if len(marks) == 2 * len(commits) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return {
        c: (
            marks[(c, "started")].occurred,
            marks[(c, "finished")].occurred,
            marks[(c, "started")].payload["environment"],
        )
        for c in commits
        if (c, "started") in marks and (c, "finished") in marks
    }


def test_two_workers_release_two_environments_at_once_beside_the_nightly_verification(
    scale_lab: LabState, envdir: Path, deployed: None
) -> None:
    """Two releases of staging, two of production and the nightly verification, started at once on
    a PostgreSQL-backed server: all complete; both workers ran some; the two environments released
    at the same time while each environment's release lock kept that environment's own releases one
    after the other."""
    from prefect.client.orchestration import get_client

    commits = {env: [uuid.uuid4().hex[:10] for _ in range(2)] for env in ("staging", "production")}
    for shas in commits.values():
        for sha in shas:
            push_commit(scale_lab, sha)
    runs = start_runs(envdir, commits)
    final = wait_final(runs, RUN_TIMEOUT_S)
    states = {r.what: final[r.run].state.name if final[r.run].state else "?" for r in runs}
    assert set(states.values()) == {"Completed"}, (states, _worker_tails(scale_lab))

    # the server that coordinated them keeps its runs in the lab's PostgreSQL
    prefect_db = Postgres(scale_lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"].rsplit("/", 1)[0] + "/prefect")
    stored = prefect_db.scalar(
        "SELECT count(*) FROM flow_run WHERE id = ANY(%s::uuid[])", ([str(r.run) for r in runs],)
    )
    assert stored == len(runs)

    by_worker = submitted_by(runs)
    assert by_worker.keys() == {r.run for r in runs}, by_worker
    assert set(by_worker.values()) == {f"worker-{i}" for i in range(1, WORKERS + 1)}, {
        r.what: by_worker.get(r.run) for r in runs
    }

    windows = release_windows({sha for shas in commits.values() for sha in shas})
    assert len(windows) == 4, windows
    for r in runs:  # shown with -s: who ran what, and when each release held its lock
        held = windows.get(r.commit or "")
        span = f"{held[0]:%H:%M:%S.%f} .. {held[1]:%H:%M:%S.%f}" if held else "-"
        print(f"{r.what:<22} {by_worker[r.run]:<9} {states[r.what]:<10} lock held {span}")
    for env, (first, second) in commits.items():
        assert {windows[first][2], windows[second][2]} == {env}
        a, b = sorted((windows[first], windows[second]))
        assert a[1] <= b[0], f"two {env} releases overlapped: {a[:2]} and {b[:2]}"
    staging = [windows[c][:2] for c in commits["staging"]]
    production = [windows[c][:2] for c in commits["production"]]
    overlapping = [(s, p) for s in staging for p in production if s[0] < p[1] and p[0] < s[1]]
    assert overlapping, f"staging {staging} and production {production} never released at the same time"

    with get_client(sync_client=True) as client:
        for env in commits:
            lock = client.read_global_concurrency_limit_by_name(f"greenlight-release-{env}")
            assert (lock.limit, lock.active_slots) == (1, 0), lock


def _worker_tails(lab: LabState) -> str:
    logs = Path(lab.dir) / "logs"
    return "\n".join(
        f"--- {p.name} ---\n{p.read_text(errors='replace')[-1500:]}"
        for p in sorted(logs.glob("worker-*.log"))
    )
