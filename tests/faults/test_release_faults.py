"""Faults during releases: Kubernetes errors and stalls at each step, a conflict on the switch, the
process killed before and right after the switch, Monitoring down during the gate and the bake,
Slack down or rate-limited, two promotions at once, an approval nobody answers.

Every case ends in a known state, checked against the cluster: either the release is live and
recorded with annotations that tell the truth, or nothing changed. Load runs through the live
Services where traffic moves, and a watch counts every switch."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight.core.release import release_id
from greenlight.errors import Conflict, GateFailed, ReleaseRefused
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.tasks.records import RECORD
from greenlight_lab import supervisor
from greenlight_lab.state import LabState
from tests.flows_release.support import (
    Load,
    copy_environment,
    in_thread,
    live,
    paused_run,
    profile,
    push_commit,
    read_events,
    release_environments,
    write_profiles,
)

from .conftest import Fault
from .release_support import (
    LIVE,
    SwitchCounter,
    deployed,
    kill_when,
    promote_process,
    selects,
    targets,
    truth_problems,
    unchanged_problems,
)

pytestmark = pytest.mark.lab
NS = "rel-staging"
# a client timeout shorter than the stalls below, so a stalled call times out and is retried
FAULT_PROFILE = {"cluster.request_timeout_s": 2}
CANARY_NS = "rel-canary"


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release profiles, and 'canary': staging's copy in a namespace of its own."""
    with release_environments(
        lab, tmp_path_factory.mktemp("fault-envs"), staging=FAULT_PROFILE, production=FAULT_PROFILE
    ) as directory:
        copy_environment(lab, directory, "canary", CANARY_NS)
        yield directory


def commit() -> str:
    return uuid.uuid4().hex[:10]


def promote(env: str, sha: str, actor: str = "dave", **kw: Any) -> dict[str, Any]:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor=actor, **kw))


def assert_released(
    fault: Fault, kube: Kube, sha: str, digests: dict[str, str], switches: SwitchCounter, env: str = "staging"
) -> None:
    """The release is live and recorded, the annotations tell the truth, each app switched once."""
    problems = truth_problems(kube, profile(env), release_id(env, digests, sha), digests)
    fault.measured_loss("untrue annotations or records", len(problems))
    extra = sum(max(0, switches.count(app) - 1) for app in LIVE)
    fault.measured_loss("extra switches", extra)
    assert problems == []
    assert {app: switches.count(app) for app in LIVE} == dict.fromkeys(LIVE, 1), switches.switches


def assert_no_failed_requests(fault: Fault, load: Load) -> None:
    assert load.report is not None
    fault.measured_loss("failed requests", load.report.failed)
    assert load.report.failed == 0, load.report.render()


# --- Kubernetes API ---------------------------------------------------------------------------


# (verb, resource) of every kind of call a release makes, in the order it makes them; the new
# colour's Deployment is created when it does not exist and replaced when it does
def release_calls(kube: Kube, deploy_verb: str) -> list[tuple[str, str, str]]:
    record_verb = "update" if kube.find("configmaps", RECORD, NS) else "create"
    return [
        ("get", "services", "plan: read the live Services"),
        ("get", "deployments", "deploy: read the colours"),
        (
            deploy_verb,
            "deployments",
            f"deploy: {'create' if deploy_verb == 'create' else 'replace'} the new colour",
        ),
        ("list", "pods", "rollout: read the pods"),
        ("patch", "services", "preview and switch: patch a Service"),
        ("get", "endpoints", "switch: read the preview's endpoints"),
        ("get", "configmaps", "record: read the release record"),
        (record_verb, "configmaps", "record: write the release record"),
    ]


def test_kubernetes_5xx_at_each_step_and_slack_down_the_release_lands(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Two 500s on each kind of call a release makes, and Slack rate-limited then down throughout:
    each call is retried, and the release is live and recorded."""
    sha = commit()
    digests = push_commit(lab, sha)
    for app, colour in targets(kube).items():  # so that the release creates the new colour
        kube.delete("deployments", f"{app}-{colour}", NS)
    for verb, resource, step in release_calls(kube, "create"):
        fault.inject(
            "kube-primary", label=f"Kubernetes 500 x2 at {step} ({verb} {resource})",
            verb=verb, resource=resource, status=500, count=2,
        )  # fmt: skip
    # and Slack failing all along: its news is best effort, the release must not wait on it
    sent_before = len(supervisor.control(lab, "GET", "/slack"))
    fault.inject(
        "slack", label="Slack rate-limited (429, Retry-After 1 s) x3", status=429, retry_after=1, count=3
    )
    fault.inject("slack", label="Slack down (500) for the rest of the release", status=500, count=-1)
    with SwitchCounter(NS) as switches, Load(lab, NS, "frontend", rps=100) as load:
        result = promote("staging", sha)
    fault.clear()
    assert result["outcome"] == "released"
    assert_released(fault, kube, sha, digests, switches)
    assert_no_failed_requests(fault, load)
    recorded = supervisor.control(lab, "GET", "/slack")[sent_before:]
    assert not [m for m in recorded if release_id("staging", digests, sha) in (m["text"] or "")]


def test_kubernetes_stalls_at_each_step_time_out_and_are_retried(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A call held past the client's timeout at each step (the server applies it late): retried,
    the late write is recognised as the release's own, and the release lands once."""
    sha = commit()
    digests = push_commit(lab, sha)
    for verb, resource, step in release_calls(kube, "update"):
        fault.inject(
            "kube-primary", label=f"Kubernetes stall 3 s (> 2 s timeout) at {step} ({verb} {resource})",
            verb=verb, resource=resource, mode="stall", stall_s=3, count=1,
        )  # fmt: skip
    with SwitchCounter(NS) as switches:
        result = promote("staging", sha)
    fault.clear()
    assert result["outcome"] == "released"
    assert_released(fault, kube, sha, digests, switches)


def test_stalled_switch_whose_write_lands_is_not_taken_for_a_conflict(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """The live Service's patch is held past the timeout and applied late: the retry sees its own
    switch (not someone else's change) and the release completes, switching each app once."""
    sha = commit()
    digests = push_commit(lab, sha)
    for app, colour in targets(kube).items():  # previews already on the candidates: the only
        kube.patch("services", f"{app}-preview", {"spec": {"selector": {"app": app, "color": colour}}}, NS)
    fault.describe("Kubernetes stall 3 s on the live switch, applied after the client gave up")
    fault.inject("kube-primary", verb="patch", resource="services", mode="stall", stall_s=3, count=1)
    with SwitchCounter(NS) as switches, Load(lab, NS, "frontend", rps=100) as load:
        result = promote("staging", sha)
    assert result["outcome"] == "released"
    assert_released(fault, kube, sha, digests, switches)
    assert_no_failed_requests(fault, load)


def test_conflict_on_the_switch_stops_the_release_without_switching(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A 409 on the live Service's patch stops the release: no app switched, the reason says why."""
    sha = commit()
    push_commit(lab, sha)
    before = live(kube, profile("staging"))
    # point the previews at the candidate colours first, so that the release's only Service
    # patches are the live switches: the 409 then hits the first of them
    for app, colour in targets(kube).items():
        kube.patch("services", f"{app}-preview", {"spec": {"selector": {"app": app, "color": colour}}}, NS)
    fault.describe("Kubernetes 409 on every patch of the live Services")
    fault.inject("kube-primary", verb="patch", resource="services", status=409, count=-1)
    with SwitchCounter(NS) as switches, pytest.raises(Conflict, match="not switching"):
        promote("staging", sha)
    fault.clear()
    moved = unchanged_problems(before, live(kube, profile("staging")))
    fault.measured_loss("apps left half-switched", len(moved))
    assert moved == []
    assert sum(switches.count(app) for app in LIVE) == 0, switches.switches


# --- the process killed -----------------------------------------------------------------------


def test_killed_release_processes_rerun_to_a_known_state(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """SIGKILL one release between deploy and switch (staging) and another right after its switch
    (canary, a copy of staging in its own namespace; both at once, so that the reruns wait out
    the dead runs' lock leases together). The reruns converge: the first resumes without
    redeploying, the second finishes the bake and records without switching again; each app is
    switched exactly once and the annotations and records tell the truth."""
    sha = commit()
    digests = push_commit(lab, sha)
    t_stg, t_can = targets(kube, "staging"), targets(kube, "canary")
    with (
        SwitchCounter(NS) as sw_stg,
        SwitchCounter(CANARY_NS) as sw_can,
        Load(lab, NS, "frontend", rps=100, seconds=300) as load,
    ):
        before_switch = promote_process("staging", sha, envdir, lab.env)
        after_switch = promote_process("canary", sha, envdir, lab.env, "--bake-s", "120")
        kill_when(before_switch, lambda: all(deployed(kube, NS, a, t_stg[a], digests[a]) for a in LIVE))
        fault.injected_by_hand(label="release process killed (SIGKILL) between deploy and switch, rerun")
        assert sum(sw_stg.count(a) for a in LIVE) == 0, "the kill came after a switch"
        kill_when(after_switch, lambda: all(selects(kube, CANARY_NS, a, t_can[a]) for a in LIVE))
        fault.injected_by_hand(label="release process killed (SIGKILL) right after the switch, rerun")
        # the reruns wait for the dead runs' locks: Prefect frees a lease once it expires (>= 60 s)
        rerun_stg, out_stg = in_thread(lambda: promote("staging", sha))
        rerun_can, out_can = in_thread(lambda: promote("canary", sha))
        rerun_stg.join(150)
        rerun_can.join(150)
    assert out_stg.get("result", {}).get("outcome") == "released", out_stg
    assert out_can.get("result", {}).get("outcome") == "released", out_can
    redeployed = [s["step"] for s in out_stg["result"]["timeline"] if s["step"].endswith(": deploy")]
    assert redeployed == [], redeployed  # resumed: the dead run's deployments were reused
    assert "resume" in [s["step"] for s in out_can["result"]["timeline"]]  # baked, not skipped
    assert_released(fault, kube, sha, digests, sw_stg)
    assert_released(fault, kube, sha, digests, sw_can, "canary")
    assert_no_failed_requests(fault, load)
    assert promote("canary", sha)["outcome"] == "nothing-to-release"  # recorded: nothing left to do


# --- Monitoring -------------------------------------------------------------------------------


def test_monitoring_down_during_the_gate_fails_closed(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Every Monitoring query failing during the gate: the gate is inconclusive, nothing is switched,
    the candidate colour is scaled away."""
    sha = commit()
    push_commit(lab, sha)
    before = live(kube, profile("staging"))
    target = targets(kube)
    fault.describe("Monitoring unavailable for the whole gate")
    fault.inject("monitoring", count=-1)
    with SwitchCounter(NS) as switches, pytest.raises(GateFailed, match="nothing switched"):
        promote("staging", sha)
    fault.clear()
    moved = unchanged_problems(before, live(kube, profile("staging")))
    fault.measured_loss("apps switched on no data", len(moved) + sum(switches.count(a) for a in LIVE))
    assert moved == [] and sum(switches.count(a) for a in LIVE) == 0
    for app in LIVE:
        assert kube.get("deployments", f"{app}-{target[app]}", NS)["spec"]["replicas"] == 0


def test_monitoring_down_during_the_bake_alerts_and_keeps_traffic(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Monitoring failing once the apps are switched: with the default profile (keep-and-alert) the
    release keeps the new colour, posts an alert to its Slack thread and is recorded."""
    sha = commit()
    digests = push_commit(lab, sha)
    target = targets(kube)
    fault.describe("Monitoring unavailable for the whole bake (profile: keep traffic and alert)")
    with SwitchCounter(NS) as switches:
        t, out = in_thread(lambda: promote("staging", sha, bake_s=3))
        deadline = time.monotonic() + 90
        while not all(selects(kube, NS, app, target[app]) for app in LIVE) and time.monotonic() < deadline:
            time.sleep(0.05)
        fault.inject("monitoring", count=-1)
        t.join(120)
    fault.clear()
    assert out.get("result", {}).get("outcome") == "released", out
    assert_released(fault, kube, sha, digests, switches)
    alerts = [
        m["text"] for m in supervisor.control(lab, "GET", "/slack")
        if "monitoring unavailable" in (m["text"] or "") and "alert" in (m["text"] or "")
    ]  # fmt: skip
    assert alerts, "no alert was posted"
    bake = out["result"]["bake"]
    assert bake["watched"] is False and bake["judged"] < bake["windows"], bake
    assert any("monitoring unavailable" in u for u in bake["unjudged"]), bake
    # a staging bake that was not judged is no proof: production refuses its digests
    with pytest.raises(ReleaseRefused, match="staging bake was not judged throughout"):
        promote("production", sha)


# --- concurrency and approval -----------------------------------------------------------------


def test_two_promotions_of_one_environment_are_serialised(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Two promotions of staging at once both release, one after the other (never interleaved),
    and staging serves the one that finished last."""
    a, b = commit(), commit()
    digests = {a: push_commit(lab, a), b: push_commit(lab, b)}
    fault.describe("two promotions of staging started at the same moment")
    t1, o1 = in_thread(lambda: promote("staging", a))
    t2, o2 = in_thread(lambda: promote("staging", b))
    fault.injected_by_hand()
    t1.join(120)
    t2.join(120)
    assert "error" not in o1 and "error" not in o2, (o1.get("error"), o2.get("error"))
    spans = {}
    for sha in (a, b):
        rid = release_id("staging", digests[sha], sha)
        spans[sha] = (
            read_events("greenlight.release.started", rid)[0].occurred,
            read_events("greenlight.release.finished", rid)[0].occurred,
        )
    first, last = sorted((a, b), key=lambda sha: spans[sha][0])
    overlap = spans[first][1] > spans[last][0]
    fault.measured_loss("interleaved releases", int(overlap))
    assert not overlap, spans  # the second started only after the first finished
    assert (
        truth_problems(kube, profile("staging"), release_id("staging", digests[last], last), digests[last])
        == []
    )


def test_approval_that_times_out_changes_nothing(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A production promotion nobody approves within the timeout is refused; production is untouched."""
    sha = commit()
    push_commit(lab, sha)
    promote("staging", sha)
    write_profiles(
        envdir, staging=FAULT_PROFILE, production={**FAULT_PROFILE, "release.approval.timeout_s": 3}
    )
    try:
        before = live(kube, profile("production"))
        fault.describe("production approval nobody answers (timeout 3 s)")
        t, out = in_thread(lambda: promote("production", sha, actor="erin"))
        paused_run(sha)  # it did wait for an approval
        fault.injected_by_hand()
        t.join(60)
    finally:
        write_profiles(envdir, staging=FAULT_PROFILE, production=FAULT_PROFILE)
    assert isinstance(out.get("error"), ReleaseRefused), out
    assert "timed out" in str(out["error"]) and "nothing changed" in str(out["error"])
    moved = unchanged_problems(before, live(kube, profile("production")))
    fault.measured_loss("production apps changed", len(moved))
    assert moved == []
