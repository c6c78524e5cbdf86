"""Figures 2-4 of the benchmark: rollback time, release overhead, scale (figure 1: bench/switching.py).

Each runs real flows against the lab, in environments of the bench's own (namespaces bench-*),
with the lab's load generator sending real HTTP through the live Services."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from greenlight.clients.kube import Kube
from greenlight.core.release import release_id
from greenlight_lab import supervisor
from greenlight_lab.load import BackgroundLoad
from greenlight_lab.runs import paused_run
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

Echo = Callable[[str], None]
INTERVAL_S = 2.0  # the bench profiles' analysis interval
SCALE_SIZES = (1, 5, 20)
# synthetic traffic per app in the scale releases: the lab generates and serves all N apps'
# traffic on this machine's cores (at 12 rps x 20 apps both saturate 2 cores, and the figure
# measures the machine rather than the orchestration)
SCALE_RPS, SCALE_MIN_REQUESTS = 5, 5
DEGRADE_AFTER_S = 14.0  # figure 2: the release's pods fail half their requests this long after they start


# --- environments -------------------------------------------------------------------------------


def _profile_doc(base: str, name: str, namespace: str, apps: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((LAB_ENVIRONMENTS / f"{base}.yaml").read_text())
    doc.update(name=name, namespace=namespace)
    doc["release"]["bake_s"] = 4
    if base == "production":
        doc["release"]["requires"] = "staging"
    doc["gate"].update({"interval_s": INTERVAL_S, "intervals": 2, "synthetic_rps": 20})
    if apps is not None:
        template = doc["apps"][0]
        doc["apps"] = [
            {**template, "name": f"app{i:02d}", "service": f"app{i:02d}", "preview_service": f"app{i:02d}-preview",
             "container": f"app{i:02d}", "image_repository": f"ghcr.io/sma-platform/app{i:02d}"}
            for i in range(1, apps + 1)
        ]  # fmt: skip
        doc["gate"].update({"synthetic_rps": SCALE_RPS, "min_requests": SCALE_MIN_REQUESTS})
        doc.pop("github", None)
        doc["release"].pop("requires", None)
        doc["release"]["approval"] = {"required": False}
    return doc


def prepare(lab: LabState, directory: Path, echo: Echo, figures: tuple[str, ...] = ()) -> list[str]:
    """Write the bench profiles into ``directory`` (GREENLIGHT_ENVIRONMENTS must point there),
    create their locks and bootstrap the namespaces the ``figures`` use (every figure's when
    empty); figure 1's are made from its own manifests (bench/switching.py). Returns the
    environment names."""
    from bench import switching
    from greenlight.commands.setup import ensure_setup
    from greenlight_lab.bootstrap import bootstrap_environment

    docs = {
        "staging": _profile_doc("staging", "staging", "bench-staging"),
        "production": _profile_doc("production", "production", "bench-production"),
        **{f"scale{n}": _profile_doc("staging", f"scale{n}", f"bench-scale{n}", apps=n) for n in SCALE_SIZES},
    }
    own = switching.profile_docs()
    for name, doc in {**docs, **own}.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    ensure_setup([*docs, *own])
    wanted = set(figures or ("switch", "rollback", "overhead", "scale"))
    needed = {
        "staging": bool(wanted & {"rollback", "overhead"}),
        "production": "overhead" in wanted,
        **{f"scale{n}": "scale" in wanted for n in SCALE_SIZES},
    }
    kube = Kube.connect(context="lab-primary")
    try:
        pushed: dict[str, str] = {}
        for name in docs:
            if not needed[name]:
                continue
            t0 = time.monotonic()
            bootstrap_environment(kube, name, directory, pushed, lab.env, timeout_s=120)
            echo(f"  bootstrapped {name} ({len(docs[name]['apps'])} apps) in {time.monotonic() - t0:.1f} s")
    finally:
        kube.close()
    if "switch" in wanted:
        switching.prepare(lab, echo)
    return [*docs, *own]


def push(lab: LabState, apps: list[str], commit: str, **behaviour: Any) -> dict[str, str]:
    out = {}
    for app in apps:
        body = {"ref": f"ghcr.io/sma-platform/{app}:{commit}", "version": f"{app}-{commit}", **behaviour}
        out[app] = supervisor.control(lab, "POST", "/images", body)["digest"]
    return out


def new_commit() -> str:
    return uuid.uuid4().hex[:10]


def load_on(url: str, rps: float, seconds: float = 600) -> BackgroundLoad:
    """The lab's load generator against ``url`` for the length of a ``with`` block."""
    return BackgroundLoad(url, rps, seconds, concurrency=64, settle_s=0.3)


def live_url(lab: LabState, namespace: str, service: str) -> str:
    return str(supervisor.control(lab, "GET", "/urls")[f"lab-primary/{namespace}/{service}"]) + "/"


def median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


# --- 2. rollback on breach --------------------------------------------------------------------------


def rollback_on_breach(lab: LabState, echo: Echo, repeats: int) -> dict[str, Any]:
    """A release whose image starts failing half its requests a few seconds after the switch: from
    the breach's onset to the selector restored and to the last failed request the load saw; and
    from the rollback decision to the selector restored (the flow's own timestamps).

    The onset is when the release's first pod starts failing: its container's start (the pod
    status, ``state.running.startedAt``) plus the image's ``degrade_after_s``. Not the load's first
    failed request: through kube-proxy the load's kept-alive connections stay on the old colour
    after the switch, so it may see the new colour's errors late or never (it is recorded beside)."""
    from greenlight.errors import GateFailed
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest
    from greenlight.settings import load_profile

    profile = load_profile("staging")
    apps = [a.name for a in profile.apps]
    url = live_url(lab, profile.namespace, "frontend")
    samples = []
    for i in range(repeats):
        sha = new_commit()
        # degrade once the pod has run past the gate (rollout + 2 intervals + ingestion) and the switch
        digests = push(lab, apps, sha, degrade_after_s=DEGRADE_AFTER_S, degraded_error_rate=0.5)
        with load_on(url, 150) as load:
            try:
                build_promote(PromoteRequest(environment="staging", commit=sha, actor="bench", bake_s=60))
                raise RuntimeError(f"release {sha} was not rolled back: the breach never showed")
            except GateFailed as e:
                if "rolled back" not in str(e):
                    raise
            time.sleep(1.0)
        report = load.report
        assert report is not None
        onset = _degrade_onset(profile.namespace, set(digests.values()))
        event = _rolled_back_event(release_id("staging", digests, sha))
        restored = datetime.fromisoformat(event["restored_at"]).timestamp()
        decided = datetime.fromisoformat(event["decided_at"]).timestamp()
        sample: dict[str, Any] = {
            "onset_to_selector_restored_s": round(restored - onset, 3),
            "onset_to_decision_s": round(decided - onset, 3),
            "decision_to_selector_restored_s": round(restored - decided, 3),
            "onset_to_last_failure_s": (
                round(report.last_failed_at - onset, 3) if report.last_failed_at is not None else None
            ),
            "load_first_failure_after_onset_s": (
                round(report.first_failed_at - onset, 3) if report.first_failed_at is not None else None
            ),
            "failed_requests": report.failed,
            "failed_by": report.failed_by,
            "sent": report.sent,
        }
        samples.append(sample)
        echo(f"  breach {i + 1}/{repeats}: {sample}")
    onset_s = median([s["onset_to_selector_restored_s"] for s in samples])
    seen = [s["onset_to_last_failure_s"] for s in samples if s["onset_to_last_failure_s"] is not None]
    return {
        "interval_s": INTERVAL_S,
        "ingestion_delay_s": profile.monitoring.ingestion_delay_s,
        "onset": "pod start (status, whole seconds) + degrade_after_s",
        "onset_to_selector_restored_s": onset_s,
        "onset_to_selector_restored_intervals": round(onset_s / INTERVAL_S, 2),
        "onset_to_last_failure_s": median(seen) if seen else None,
        "load_saw_failures": f"{len(seen)}/{len(samples)}",
        "decision_to_selector_restored_s": median([s["decision_to_selector_restored_s"] for s in samples]),
        "samples": samples,
    }


def _degrade_onset(namespace: str, digests: set[str]) -> float:
    """When the first pod running one of ``digests`` started failing: its container's start (as
    the pod status gives it, in whole seconds, so this is up to 1 s early) + DEGRADE_AFTER_S."""
    kube = Kube.connect(context="lab-primary")
    try:
        starts = []
        for pod in kube.items("pods", namespace):
            for c in (pod.get("status") or {}).get("containerStatuses") or []:
                image = str(c.get("image") or "")
                started = ((c.get("state") or {}).get("running") or {}).get("startedAt")
                if started and image.rpartition("@")[2] in digests:
                    starts.append(datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp())
    finally:
        kube.close()
    if not starts:
        raise RuntimeError(f"no running pod of {sorted(digests)} in {namespace}: cannot date the onset")
    return min(starts) + DEGRADE_AFTER_S


def _rolled_back_event(rid: str, timeout_s: float = 30) -> dict[str, Any]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            page = client.read_events(
                EventFilter(event=EventNameFilter(name=["greenlight.release.rolled-back"])), limit=50
            )
            for e in page.events:
                if e.payload.get("release_id") == rid:
                    return dict(e.payload)
            time.sleep(0.5)
    raise RuntimeError(f"no rolled-back event for {rid}")


# --- 3. overhead ------------------------------------------------------------------------------------


def _at(timeline: list[dict[str, Any]], step: str) -> float | None:
    for s in timeline:
        if s["step"] == step:
            return datetime.fromisoformat(s["at"]).timestamp()
    return None


def imposed_waits(result: dict[str, Any], profile: Any, bake_s: float) -> dict[str, float]:
    """The waits the lab imposes on one release, from its timeline and profile: readiness (deploy
    to rollout complete, the slowest app), the gate's windows, the data plane's delay after the
    switch, the bake's windows, the approval."""
    tl = result["timeline"]
    readiness = 0.0
    for app in result["digests"]:
        deployed, ready = _at(tl, f"{app}: deploy"), _at(tl, f"{app}: rollout")
        if deployed and ready:
            readiness = max(readiness, ready - deployed)
    delay = profile.monitoring.ingestion_delay_s
    gate = profile.gate.intervals * profile.gate.interval_s + delay
    bake = max(bake_s, profile.gate.interval_s) + delay  # the last sliding window ends at the bake's end
    approval = 0.0
    approved = _at(tl, "approval")
    if approved is not None:
        before = [
            datetime.fromisoformat(s["at"]).timestamp() for s in tl if s["step"] in ("lock", "preflight")
        ]
        approval = approved - max(before)
    # the data plane's delay: from the first app's switch patch to the last app's traffic arriving
    # (the propagation allowance, or requests seen on the new colour; overlap waits included)
    patched = [_at(tl, f"{app}: {action}") for app in result["digests"] for action in ("switch", "widen")]
    arrived = [_at(tl, f"{app}: traffic") for app in result["digests"]]
    starts = [t for t in patched if t is not None]
    ends = [t for t in arrived if t is not None]
    data_plane = max(ends) - min(starts) if starts and ends else 0.0
    return {
        "readiness_s": readiness,
        "gate_windows_s": gate,
        "bake_windows_s": bake,
        "approval_s": approval,
        "data_plane_s": data_plane,
    }


def release_overhead(lab: LabState, echo: Echo, repeats: int) -> dict[str, Any]:
    """Per environment: wall time of a release minus the waits the lab imposes."""
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest
    from greenlight.settings import load_profile

    out: dict[str, Any] = {}
    rows: dict[str, list[dict[str, float]]] = {"staging": [], "production": []}
    apps = [a.name for a in load_profile("staging").apps]
    for i in range(repeats):
        sha = new_commit()
        push(lab, apps, sha)
        for env in ("staging", "production"):
            profile = load_profile(env)
            approver: threading.Thread | None = None
            if profile.release.approval.required:
                approver = threading.Thread(target=_approve_when_paused, args=(lab, sha), daemon=True)
                approver.start()
            t0 = time.monotonic()
            result = build_promote(PromoteRequest(environment=env, commit=sha, actor="bench"))
            wall = time.monotonic() - t0
            if approver:
                approver.join(30)
            if result["outcome"] != "released":
                raise RuntimeError(f"{env} release of {sha}: {result['outcome']}")
            waits = imposed_waits(result, profile, profile.release.bake_s)
            row = {"wall_s": round(wall, 3), **{k: round(v, 3) for k, v in waits.items()}}
            row["overhead_s"] = round(wall - sum(waits.values()), 3)
            rows[env].append(row)
            echo(f"  {env} release {i + 1}/{repeats}: {row}")
    for env, samples in rows.items():
        out[env] = {
            "wall_s": median([r["wall_s"] for r in samples]),
            "imposed_waits_s": median([r["wall_s"] - r["overhead_s"] for r in samples]),
            "overhead_s": median([r["overhead_s"] for r in samples]),
            "samples": samples,
        }
    return out


def _approve_when_paused(lab: LabState, sha: str) -> None:
    """Approve the paused promotion of ``sha`` as production's users do: alice clicks Approve in
    the lab's Slack, which signs the click to the lab's receiver (a verified answer)."""
    run = paused_run(sha, timeout_s=120)
    click = {"user": "U0LABALICE", "action": "approve", "reason": "bench", "run": str(run)}
    sent = supervisor.control(lab, "POST", "/slack/click", click)
    if sent.get("status") != 200:
        raise RuntimeError(f"the approval click was not taken: {sent}")


# --- 4. scale ---------------------------------------------------------------------------------------


def scale(lab: LabState, echo: Echo, repeats: int) -> dict[str, Any]:
    """Wall time of one release of N apps, for each N, as a ratio to N = 1 (medians)."""
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest
    from greenlight.settings import load_profile

    walls: dict[int, list[float]] = {n: [] for n in SCALE_SIZES}
    for i in range(repeats):
        for n in SCALE_SIZES:  # interleaved, so that drift hits every size alike
            env = f"scale{n}"
            sha = new_commit()
            push(lab, [a.name for a in load_profile(env).apps], sha)
            t0 = time.monotonic()
            result = build_promote(PromoteRequest(environment=env, commit=sha, actor="bench"))
            walls[n].append(round(time.monotonic() - t0, 3))
            if result["outcome"] != "released":
                raise RuntimeError(f"{env} release: {result['outcome']}")
            echo(f"  {n} app(s), release {i + 1}/{repeats}: {walls[n][-1]:.1f} s")
    base = median(walls[1])
    return {
        str(n): {"wall_s": median(w), "ratio_to_1": round(median(w) / base, 3), "samples": w}
        for n, w in walls.items()
    }
