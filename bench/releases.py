"""Figures 1-4 of the benchmark: zero-failure switching, rollback time, release overhead, scale.

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
from greenlight.lab import supervisor
from greenlight.lab.load import BackgroundLoad, LoadReport
from greenlight.lab.state import LAB_ENVIRONMENTS, LabState

Echo = Callable[[str], None]
INTERVAL_S = 2.0  # the bench profiles' analysis interval
SCALE_SIZES = (1, 5, 20)
# synthetic traffic per app in the scale releases: the lab generates and serves all N apps'
# traffic on this machine's cores (at 12 rps x 20 apps both saturate 2 cores, and the figure
# measures the machine rather than the orchestration)
SCALE_RPS, SCALE_MIN_REQUESTS = 5, 5


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


def prepare(lab: LabState, directory: Path, echo: Echo) -> list[str]:
    """Write the bench profiles into ``directory`` (GREENLIGHT_ENVIRONMENTS must point there),
    create their locks and bootstrap their namespaces. Returns the environment names."""
    from greenlight.commands.setup import ensure_setup
    from greenlight.lab.bootstrap import bootstrap_environment

    docs = {
        "staging": _profile_doc("staging", "staging", "bench-staging"),
        "production": _profile_doc("production", "production", "bench-production"),
        **{f"scale{n}": _profile_doc("staging", f"scale{n}", f"bench-scale{n}", apps=n) for n in SCALE_SIZES},
    }
    for name, doc in docs.items():
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    ensure_setup(list(docs))
    kube = Kube.connect(context="lab-primary")
    try:
        pushed: dict[str, str] = {}
        for name in docs:
            t0 = time.monotonic()
            bootstrap_environment(kube, name, directory, pushed, lab.env, timeout_s=120)
            echo(f"  bootstrapped {name} ({len(docs[name]['apps'])} apps) in {time.monotonic() - t0:.1f} s")
    finally:
        kube.close()
    return list(docs)


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


# --- 1. switch and rollback under load ------------------------------------------------------------


def switch_under_load(lab: LabState, echo: Echo, rps: float = 250, seconds: float = 24) -> dict[str, Any]:
    """Requests sent and failed through staging's live frontend while its colour is switched back
    and forth (traffic-switch flow), then while it is rolled back (rollback flow, re-armed by a switch)."""
    from flows.rollback import rollback
    from flows.traffic_switch import switch
    from greenlight.settings import load_profile
    from tasks.kube import read_live

    profile = load_profile("staging")
    url = live_url(lab, profile.namespace, "frontend")
    _warm_up(lab, "staging")  # both colours deployed: a switch has somewhere to go

    def colours() -> tuple[str, str]:
        state = read_live.fn(profile)["frontend"]
        live_c = state["live_colour"]
        return live_c, ("green" if live_c == "blue" else "blue")

    out: dict[str, Any] = {}
    # phase 1: switches
    switches = 0
    with load_on(url, rps) as load:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            _, other = colours()
            switch("staging", other, app="frontend", actor="bench")
            switches += 1
            time.sleep(1.0)
    assert load.report is not None
    out["switch"] = {"actions": switches, **_load_figures(load.report)}
    echo(f"  switching: {switches} switches, {load.report.sent} requests, {load.report.failed} failed")
    # phase 2: rollbacks (each re-armed by a switch: a rollback returns to the previous colour once)
    rollbacks = 0
    with load_on(url, rps) as load:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            _, other = colours()
            switch("staging", other, app="frontend", actor="bench")
            time.sleep(0.5)
            result = rollback("staging", reason="bench", app="frontend")
            if result["apps"]["frontend"]["action"] == "switch":
                rollbacks += 1
            time.sleep(0.5)
    assert load.report is not None
    out["rollback"] = {"actions": rollbacks, **_load_figures(load.report)}
    echo(f"  rolling back: {rollbacks} rollbacks, {load.report.sent} requests, {load.report.failed} failed")
    return out


def _warm_up(lab: LabState, env: str) -> None:
    """One release of ``env`` (not measured), so that both colours exist and run."""
    from flows.release import PromoteRequest, build_promote
    from greenlight.settings import load_profile

    sha = new_commit()
    push(lab, [a.name for a in load_profile(env).apps], sha)
    build_promote(PromoteRequest(environment=env, commit=sha, actor="bench"))


def _load_figures(r: LoadReport) -> dict[str, Any]:
    return {"sent": r.sent, "failed": r.failed, "p99_ms": r.p99_ms, "backends": len(r.backends)}


# --- 2. rollback on breach --------------------------------------------------------------------------


def rollback_on_breach(lab: LabState, echo: Echo, repeats: int) -> dict[str, Any]:
    """A release whose image starts failing half its requests a few seconds after the switch: from
    the first failed request (onset) to the selector restored and to the last failed request;
    and from the rollback decision to the selector restored (the flow's own timestamps)."""
    from flows.release import PromoteRequest, build_promote
    from greenlight.errors import GateFailed
    from greenlight.settings import load_profile

    profile = load_profile("staging")
    apps = [a.name for a in profile.apps]
    url = live_url(lab, profile.namespace, "frontend")
    samples = []
    for i in range(repeats):
        sha = new_commit()
        # degrade once the pod has run past the gate (rollout + 2 intervals + ingestion) and the switch
        push(lab, apps, sha, degrade_after_s=14, degraded_error_rate=0.5)
        with load_on(url, 150) as load:
            try:
                build_promote(PromoteRequest(environment="staging", commit=sha, actor="bench", bake_s=60))
                raise RuntimeError(f"release {sha} was not rolled back: the breach never showed")
            except GateFailed as e:
                if "rolled back" not in str(e):
                    raise
            time.sleep(1.0)
        report = load.report
        assert report is not None and report.first_failed_at and report.last_failed_at
        event = _rolled_back_event(f"staging-{sha}")
        restored = datetime.fromisoformat(event["restored_at"]).timestamp()
        decided = datetime.fromisoformat(event["decided_at"]).timestamp()
        sample = {
            "onset_to_selector_restored_s": round(restored - report.first_failed_at, 3),
            "onset_to_last_failure_s": round(report.last_failed_at - report.first_failed_at, 3),
            "onset_to_decision_s": round(decided - report.first_failed_at, 3),
            "decision_to_selector_restored_s": round(restored - decided, 3),
            "failed_requests": report.failed,
            "sent": report.sent,
        }
        samples.append(sample)
        echo(f"  breach {i + 1}/{repeats}: {sample}")
    onset = median([s["onset_to_selector_restored_s"] for s in samples])
    return {
        "interval_s": INTERVAL_S,
        "ingestion_delay_s": profile.monitoring.ingestion_delay_s,
        "onset_to_selector_restored_s": onset,
        "onset_to_selector_restored_intervals": round(onset / INTERVAL_S, 2),
        "onset_to_last_failure_s": median([s["onset_to_last_failure_s"] for s in samples]),
        "decision_to_selector_restored_s": median([s["decision_to_selector_restored_s"] for s in samples]),
        "samples": samples,
    }


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
    to rollout complete, the slowest app), the gate's windows, the bake's windows, the approval."""
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
    return {"readiness_s": readiness, "gate_windows_s": gate, "bake_windows_s": bake, "approval_s": approval}


def release_overhead(lab: LabState, echo: Echo, repeats: int) -> dict[str, Any]:
    """Per environment: wall time of a release minus the waits the lab imposes."""
    from prefect.flow_runs import resume_flow_run

    from flows.release import PromoteRequest, build_promote
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
                approver = threading.Thread(
                    target=_approve_when_paused, args=(sha, resume_flow_run), daemon=True
                )
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


def _approve_when_paused(sha: str, resume: Callable[..., Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    deadline = time.monotonic() + 120
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
                )
            )
            for r in runs:
                if (r.parameters.get("request") or {}).get("commit") == sha:
                    resume(r.id, run_input={"approve": True, "approver": "alice", "reason": "bench"})
                    return
            time.sleep(0.1)


# --- 4. scale ---------------------------------------------------------------------------------------


def scale(lab: LabState, echo: Echo, repeats: int) -> dict[str, Any]:
    """Wall time of one release of N apps, for each N, as a ratio to N = 1 (medians)."""
    from flows.release import PromoteRequest, build_promote
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
