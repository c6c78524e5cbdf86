"""Helpers of the release fault cases: a watch that counts live switches, a release in a process
that can be killed, and the invariants every case ends with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greenlight.clients.kube import Kube
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, RELEASE_ID
from greenlight.settings import REPO_ROOT, Profile
from greenlight.tasks.records import RECORD
from tests.flows_release.support import live, profile

LIVE = ("backend", "frontend")  # the live Services of the release profiles


class SwitchCounter:
    """Counts every change of a live Service's selector colour, from a watch of the namespace,
    while the block runs: the ground truth for 'never switches twice'."""

    def __init__(self, namespace: str, label: str = "color") -> None:
        self.namespace, self.label = namespace, label
        self.switches: dict[str, list[str]] = {name: [] for name in LIVE}
        self._last: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        kube = Kube.connect(context="lab-primary")
        try:
            listed = kube.list("services", self.namespace)
            for svc in listed["items"]:
                self._last[svc["metadata"]["name"]] = (svc["spec"].get("selector") or {}).get(self.label)
            rv = listed["metadata"]["resourceVersion"]
            self._ready.set()
            while not self._stop.is_set():
                for kind, svc in kube.watch("services", self.namespace, timeout_s=1, resource_version=rv):
                    rv = svc["metadata"]["resourceVersion"]
                    name = svc["metadata"]["name"]
                    colour = (svc["spec"].get("selector") or {}).get(self.label)
                    if kind == "MODIFIED" and name in self.switches and colour != self._last.get(name):
                        self.switches[name].append(str(colour))
                    self._last[name] = colour
        finally:
            kube.close()

    def __enter__(self) -> SwitchCounter:
        self._thread.start()
        assert self._ready.wait(10), "the switch watch did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.5)  # let the last events arrive
        self._stop.set()
        self._thread.join(10)

    def count(self, name: str) -> int:
        return len(self.switches[name])


def promote_process(
    env: str, sha: str, envdir: Path, lab_env: dict[str, str], *args: str
) -> subprocess.Popen[bytes]:
    """``greenlight promote`` in its own process (its own process group), so it can be killed hard."""
    env_vars = {**os.environ, **lab_env, "GREENLIGHT_ENVIRONMENTS": str(envdir)}
    return subprocess.Popen(
        [sys.executable, "-m", "greenlight.cli", "promote", env, "--commit", sha, "--actor", "dave", *args],
        cwd=REPO_ROOT,
        env=env_vars,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def kill_when(proc: subprocess.Popen[bytes], condition: Callable[[], bool], timeout_s: float = 90) -> None:
    """SIGKILL the process group as soon as ``condition`` holds (polled every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            raise AssertionError(
                f"the release ended (exit {proc.returncode}) before the kill point:\n{out[-3000:]}"
            )
        if condition():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            return
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the kill point was never reached")


def deployed(kube: Kube, namespace: str, app: str, colour: str, digest: str) -> bool:
    dep = kube.find("deployments", f"{app}-{colour}", namespace)
    return bool(dep) and digest in dep["spec"]["template"]["spec"]["containers"][0]["image"]


def selects(kube: Kube, namespace: str, app: str, colour: str) -> bool:
    svc = kube.get("services", app, namespace)
    return (svc["spec"].get("selector") or {}).get("color") == colour


def truth_problems(kube: Kube, profile: Profile, rid: str, digests: dict[str, str]) -> list[str]:
    """What the live Services' annotations and the release record say that is not so, for a
    release ``rid`` that should be live and recorded: empty when everything tells the truth."""
    problems = []
    for app in LIVE:
        svc = kube.get("services", app, profile.namespace)
        ann = svc["metadata"].get("annotations") or {}
        colour = (svc["spec"].get("selector") or {}).get("color")
        if ann.get(ACTIVE_COLOUR) != colour:
            problems.append(
                f"{app}: annotation says {ann.get(ACTIVE_COLOUR)} is active, selector says {colour}"
            )
        if ann.get(RELEASE_ID) != rid:
            problems.append(f"{app}: annotation names release {ann.get(RELEASE_ID)}, not {rid}")
        if json.loads(ann.get(DIGESTS) or "{}").get(app) != digests[app]:
            problems.append(f"{app}: annotation digests {ann.get(DIGESTS)} are not {digests[app]}")
        dep = kube.find("deployments", f"{app}-{colour}", profile.namespace)
        image = dep["spec"]["template"]["spec"]["containers"][0]["image"] if dep else ""
        if digests[app] not in image:
            problems.append(f"{app}: live colour {colour} runs {image}, not {digests[app]}")
    cm = kube.find("configmaps", RECORD, profile.namespace) or {}
    entry: dict[str, Any] = json.loads(((cm.get("data") or {}).get(rid)) or "{}")
    if entry.get("outcome") != "released":
        problems.append(f"record {RECORD} has {entry.get('outcome')!r} for {rid}, not 'released'")
    return problems


def unchanged_problems(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Apps whose live colour or digests moved although the case says nothing may change."""
    return [
        f"{app}: {before[app]['live_colour']}/{before[app]['digests']} -> {after[app]['live_colour']}/{after[app]['digests']}"
        for app in before
        if (before[app]["live_colour"], before[app]["digests"])
        != (after[app]["live_colour"], after[app]["digests"])
    ]


def targets(kube: Kube, env: str = "staging") -> dict[str, str]:
    """app -> the colour a release of ``env`` deploys to (the one not taking traffic)."""
    return {
        app: "green" if s["live_colour"] == "blue" else "blue" for app, s in live(kube, profile(env)).items()
    }
