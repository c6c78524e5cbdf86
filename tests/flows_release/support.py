"""Helpers of the release tests: profiles of their own, image pushes, load, paused runs."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.lab import supervisor
from greenlight.lab.load import BackgroundLoad
from greenlight.lab.state import LAB_ENVIRONMENTS, LabState
from greenlight.settings import Profile, load_profile

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
    from tasks.kube import read_live

    return read_live.fn(profile)


def profile(env: str) -> Profile:
    return load_profile(env)


class Load(BackgroundLoad):
    """The lab's load generator against a live Service, in the background."""

    def __init__(
        self, lab: LabState, namespace: str, service: str, rps: float = 150, seconds: float = 60
    ) -> None:
        url = supervisor.control(lab, "GET", "/urls")[f"lab-primary/{namespace}/{service}"] + "/"
        super().__init__(url, rps, seconds)


def paused_run(commit: str, timeout_s: float = 60) -> UUID:
    """The id of the paused build-promote run for ``commit`` (waits for it to pause)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for r in runs:
                if (r.parameters.get("request") or {}).get("commit") == commit:
                    return r.id
            time.sleep(0.3)
    raise AssertionError(f"no paused run for {commit} within {timeout_s} s")


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


@contextlib.contextmanager
def release_environments(lab: LabState, directory: Path, **changes: Any) -> Iterator[Path]:
    """Profile copies (rel-staging / rel-production, with dotted ``changes``) selected through
    GREENLIGHT_ENVIRONMENTS, their release locks created and their namespaces bootstrapped
    (idempotent: apps already there are left as earlier tests left them)."""
    from greenlight.commands.setup import ensure_setup
    from greenlight.lab.bootstrap import bootstrap_environment

    write_profiles(directory, **changes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
        ensure_setup(list(NAMESPACES))
        kube = Kube.connect(context="lab-primary")
        try:
            pushed: dict[str, str] = {}
            for env in NAMESPACES:
                bootstrap_environment(kube, env, directory, pushed, lab.env)
        finally:
            kube.close()
        yield directory


def copy_environment(
    lab: LabState, directory: Path, name: str, namespace: str, extra_apps: tuple[str, ...] = ()
) -> None:
    """A copy of ``directory``'s staging profile as environment ``name`` in ``namespace`` (with
    ``extra_apps`` shaped like its first app), its locks created and its namespace bootstrapped."""
    from greenlight.commands.setup import ensure_setup
    from greenlight.lab.bootstrap import bootstrap_environment

    doc = yaml.safe_load((directory / "staging.yaml").read_text())
    doc.update(name=name, namespace=namespace)
    for app in extra_apps:
        doc["apps"].append(
            {**doc["apps"][0], "name": app, "service": app, "preview_service": f"{app}-preview",
             "container": app, "image_repository": f"ghcr.io/sma-platform/{app}"}
        )  # fmt: skip
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    ensure_setup([name])
    kube = Kube.connect(context="lab-primary")
    try:
        bootstrap_environment(kube, name, directory, {}, lab.env)
    finally:
        kube.close()


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
