"""Helpers of the release tests: profiles of their own, image pushes, load, paused runs."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.settings import REPO_ROOT, Profile, load_profile
from greenlight_lab import supervisor
from greenlight_lab.load import BackgroundLoad
from greenlight_lab.runs import paused_run as paused_run  # the tests import it from here
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

NAMESPACES = {"staging": "rel-staging", "production": "rel-production"}
#: a pre-deploy Job manifest (``release.pre_deploy_job``): IMAGE is replaced by a test's image
JOB = """apiVersion: batch/v1
kind: Job
metadata: {name: $name}
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
        - {name: migrate, image: IMAGE}
"""


def write_profiles(directory: Path, **changes: Any) -> None:
    """Copies of the lab's staging and production profiles in their own namespaces, short gates and bakes."""
    for env, ns in NAMESPACES.items():
        doc = yaml.safe_load((LAB_ENVIRONMENTS / f"{env}.yaml").read_text())
        doc["namespace"] = ns
        # shorter than the lab profiles, to keep the suite fast: one interval of 1 s at 40 rps for
        # the gate, a 1 s bake (the bake's sliding windows still judge it)
        doc["release"]["bake_s"] = 1
        doc["gate"].update({"interval_s": 1, "intervals": 1, "synthetic_rps": 40})
        # the lab's Monitoring makes a point readable 1 s after its scrape (greenlight lab up
        # --ingestion-delay-s); a window is read just after that, shorter than the profiles' 1.5 s
        doc["monitoring"]["ingestion_delay_s"] = 1.1
        for dotted, value in changes.get(env, {}).items():
            node = doc
            *path, last = dotted.split(".")
            for key in path:
                node = node[key]
            node[last] = value
        (directory / f"{env}.yaml").write_text(yaml.safe_dump(doc))


def push_commit(
    lab: LabState, commit: str, apps: tuple[str, ...] = ("backend", "frontend"), **behaviour: Any
) -> dict[str, str]:
    """Push the images of ``apps`` (backend and frontend) tagged with ``commit``; returns app -> digest."""
    out = {}
    for app in apps:
        body = {"ref": f"ghcr.io/sma-platform/{app}:{commit}", "version": f"{app}-{commit}", **behaviour}
        out[app] = supervisor.control(lab, "POST", "/images", body)["digest"]
    return out


def live(kube: Kube, profile: Profile) -> dict[str, dict[str, Any]]:
    from greenlight.tasks.kube import read_live

    return read_live.fn(profile)


def profile(env: str) -> Profile:
    return load_profile(env)


class Load(BackgroundLoad):
    """The lab's load generator against a live Service, in the background."""

    def __init__(
        self,
        lab: LabState,
        namespace: str,
        service: str,
        rps: float = 150,
        seconds: float = 60,
        concurrency: int = 32,
    ) -> None:
        key = f"lab-primary/{namespace}/{service}"
        url = supervisor.control(lab, "GET", "/urls")[key] + "/"
        wait_data_plane_settled(lab, key)
        super().__init__(url, rps, seconds, concurrency=concurrency)


def wait_data_plane_settled(lab: LabState, key: str, timeout_s: float = 20) -> None:
    """Wait until Service ``key``'s data plane routes new connections to the endpoints the
    Service has now. kube-proxy learns of a change 1-2 s late: a load started right after an
    earlier test's switch would pin its kept-alive connections to the colour that was live before
    (CI: a cleanup test's old colour was never the one holding the load's connections)."""
    deadline = time.monotonic() + timeout_s
    while True:
        service = supervisor.control(lab, "GET", "/status")["data_plane"]["services"].get(key, {})
        pushed, known = set(service.get("endpoints", ())), set(service.get("known_endpoints", ()))
        if pushed and pushed == known:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{key}: data plane routes to {sorted(known)}, Service has {sorted(pushed)}")
        time.sleep(0.2)


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Run ``fn`` in a thread; the dict gets 'result' or 'error'."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def set_up_environments(lab: LabState, directory: Path, names: Sequence[str]) -> None:
    """Each of ``names``, a profile in ``directory``, set up (its locks and blocks, as ``greenlight
    setup`` makes them) and its namespace bootstrapped in lab-primary (idempotent: apps already
    there are left as earlier tests left them). The caller selects ``directory`` through
    GREENLIGHT_ENVIRONMENTS."""
    from greenlight.commands.setup import ensure_setup
    from greenlight_lab.bootstrap import bootstrap_environment

    ensure_setup(list(names))
    kube = Kube.connect(context="lab-primary", kubeconfig=lab.env["KUBECONFIG"])
    try:
        pushed: dict[str, str] = {}
        for name in names:
            bootstrap_environment(kube, name, directory, pushed, lab.env)
    finally:
        kube.close()


@contextlib.contextmanager
def release_environments(lab: LabState, directory: Path, **changes: Any) -> Iterator[Path]:
    """Profile copies (rel-staging / rel-production, with dotted ``changes``) selected through
    GREENLIGHT_ENVIRONMENTS, set up and bootstrapped (:func:`set_up_environments`)."""
    write_profiles(directory, **changes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
        set_up_environments(lab, directory, list(NAMESPACES))
        yield directory


def copy_environment(
    lab: LabState, directory: Path, name: str, namespace: str, extra_apps: tuple[str, ...] = ()
) -> None:
    """A copy of ``directory``'s staging profile as environment ``name`` in ``namespace`` (with
    ``extra_apps`` shaped like its first app), set up and bootstrapped."""
    doc = yaml.safe_load((directory / "staging.yaml").read_text())
    doc.update(name=name, namespace=namespace)
    for app in extra_apps:
        doc["apps"].append(
            {**doc["apps"][0], "name": app, "service": app, "preview_service": f"{app}-preview",
             "container": app, "image_repository": f"ghcr.io/sma-platform/{app}"}
        )  # fmt: skip
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    set_up_environments(lab, directory, [name])


def read_events(name: str, rid: str, timeout_s: float = 20) -> list[Any]:
    """Events called ``name`` whose payload names release ``rid`` (waits for the server to store them)."""
    deadline = time.monotonic() + timeout_s
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(EventFilter(event=EventNameFilter(name=[name])), limit=50)
            found = [e for e in page.events if e.payload.get("release_id") == rid]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def release_report(rid: str, env: str = "staging") -> str:
    """The newest version of the ``release-<env>`` markdown artifact that mentions ``rid``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"release-{env}"]))
        )
    texts = [str(a.data) for a in sorted(arts, key=lambda a: str(a.created), reverse=True)]
    return next((t for t in texts if f"Release {rid} " in t), "")


@contextlib.contextmanager
def job_environments(lab: LabState, directory: Path) -> Iterator[Path]:
    """Release environments whose staging runs a pre-deploy Job (its image set by
    ``set_job_image``) and scales down without delay."""
    changes = {"release.pre_deploy_job": str(directory / "job.yaml"), "release.scale_down_delay_s": 0}
    with release_environments(lab, directory, staging=changes) as envs:
        yield envs


def set_job_image(envdir: Path, image: str) -> None:
    """The pre-deploy Job of ``job_environments`` runs ``image`` from now on."""
    (envdir / "job.yaml").write_text(JOB.replace("IMAGE", image))


def job_release_id(error: str) -> str:
    """The release id in a pre-deploy Job's error (its Job is ``greenlight-pre-<release id>``)."""
    found = re.search(r"pre-deploy job [a-z0-9-]+/greenlight-pre-(\S+) failed", error)
    assert found, error
    return found.group(1)


@dataclass(frozen=True)
class JobFailure:
    """What a release stopped by its pre-deploy Job said, wherever a person would read it."""

    error: str
    release_id: str
    slack: list[str]
    events: list[str]
    report: str


def fail_on_a_job_logging(lab: LabState, envdir: Path, text: str) -> JobFailure:
    """Release a new commit to staging with a crashing pre-deploy Job whose pod logs ``text`` (the
    lab's pods log their image reference, tagged with it here); what the stopped release said."""
    from greenlight.errors import GateFailed
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest

    sha = uuid4().hex[:10]
    push_commit(lab, sha)
    image = f"ghcr.io/sma-platform/migrate:{text}"
    supervisor.control(lab, "POST", "/images", {"ref": image, "version": "migrate", "crash": True})
    set_job_image(envdir, image)
    sent_before = len(supervisor.control(lab, "GET", "/slack"))
    with pytest.raises(GateFailed, match="pre-deploy job") as err:
        build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    error = str(err.value)
    rid = job_release_id(error)
    return JobFailure(
        error,
        rid,
        [m.get("text") or "" for m in supervisor.control(lab, "GET", "/slack")[sent_before:]],
        [str(e.payload) for e in read_events("greenlight.release.pre-deploy-failed", rid)],
        release_report(rid),
    )


#: the lab production profile's people, by their Slack user IDs (lab/greenlight_lab/environments/production.yaml)
SLACK_IDS = {"alice": "U0LABALICE", "bob": "U0LABBOB01", "carol": "U0LABCAROL", "dave": "U0LABDAVE1"}


def click(
    lab: LabState, who: str, action: str = "approve", reason: str = "", run: UUID | None = None, **kw: Any
) -> dict[str, Any]:
    """A click on the pending approval's button in the lab's Slack, as ``who`` (a person of the lab's
    production profile, or a Slack user ID), signed by the lab's Slack and sent to the lab's
    receiver; returns what the Slack stand-in reports (the receiver's status and answer, the request)."""
    body = {
        "user": SLACK_IDS.get(who, who),
        "action": action,
        "reason": reason,
        "run": str(run) if run else None,
        **kw,
    }
    return supervisor.control(lab, "POST", "/slack/click", body)  # type: ignore[no-any-return]


def judgement(run: UUID, n: int, timeout_s: float = 30) -> dict[str, Any]:
    """How the paused run judged its ``n``-th answer (written by the flow as a run input)."""
    from prefect.input import read_flow_run_input

    from greenlight.tasks.approval import ANSWER_KEY

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = read_flow_run_input(ANSWER_KEY.format(pause=f"approval-{n}"), flow_run_id=run)
        if value is not None:
            return value  # type: ignore[no-any-return]
        time.sleep(0.3)
    raise AssertionError(f"run {run} did not judge answer {n} within {timeout_s} s")


def wait_paused(run: UUID, timeout_s: float = 30) -> None:
    """Wait until the run is paused again (it refused an answer and waits for the next)."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            state = client.read_flow_run(run).state
            if state is not None and state.is_paused():
                return
            time.sleep(0.3)
    raise AssertionError(f"run {run} is not paused again within {timeout_s} s")


def progress_of(commit: str, env: str) -> list[tuple[float, str]]:
    """The progress artifacts (percent, text) of the build-promote run of ``commit`` to ``env``,
    as the run's page in the Prefect UI shows them."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterType,
        FlowRunFilter,
    )

    with get_client(sync_client=True) as client:
        runs = [
            r for r in client.read_flow_runs(flow_run_filter=FlowRunFilter(), limit=200)
            if (r.parameters.get("request") or {}).get("commit") == commit
            and (r.parameters.get("request") or {}).get("environment") == env
        ]  # fmt: skip
        assert runs, f"no build-promote run of {commit} to {env}"
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs]),
                type=ArtifactFilterType(any_=["progress"]),
            )
        )
    return [(float(a.data), str(a.description)) for a in arts]  # type: ignore[arg-type]


def wait_release_lock_free(env: str, timeout_s: float = 90) -> None:
    """Wait until nothing holds ``env``'s release lock. A release process killed by an earlier test
    (the fault suite kills some on purpose) leaves its lease held until it expires (60 s, then the
    lab server's 2 s sweep); a test of cleanup must not take that for a release that runs."""
    from prefect.client.orchestration import get_client

    from greenlight.flows.concurrency import lock_name

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            held = client.read_global_concurrency_limit_by_name(lock_name(env)).active_slots
            if held == 0:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{lock_name(env)} still held ({held} slot(s)) after {timeout_s:g} s")
            time.sleep(0.5)


def greenlight_cli(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """``greenlight ARGS`` in a process of its own, with this process's environment (the lab's,
    and the profiles the module selected); stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", *args], cwd=REPO_ROOT, env=dict(os.environ),
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
