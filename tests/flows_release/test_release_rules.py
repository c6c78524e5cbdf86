"""Release rules in the lab: freeze, Slack outage and thread,
evidence (artifact and events), cleanup after the delay, manual switch (the HPA clone and its cleanup: test_release_jobs)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.variables import Variable

from greenlight.clients.kube import Kube
from greenlight.core.release import release_id
from greenlight.errors import InputInvalid, ReleaseRefused
from greenlight.flows.maintenance import cleanup
from greenlight.flows.promotion import FREEZE_VARIABLE
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.flows.traffic_switch import switch
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

from .support import (
    NAMESPACES,
    click,
    in_thread,
    live,
    paused_run,
    profile,
    push_commit,
    read_events,
    release_report,
    write_profiles,
)

pytestmark = pytest.mark.lab

NS = NAMESPACES["staging"]
FREEZE = FREEZE_VARIABLE.format(env="production")


def commit() -> str:
    return uuid.uuid4().hex[:10]


def promote(env: str, sha: str, actor: str = "dave", **kw: Any) -> dict[str, Any]:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor=actor, **kw))


def use_profiles(mp: pytest.MonkeyPatch, directory: Path, **changes: dict[str, Any]) -> Path:
    """Write profile copies (same namespaces) with ``changes`` into ``directory`` and select them."""
    directory.mkdir(parents=True, exist_ok=True)
    write_profiles(directory, **changes)
    mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
    return directory


@pytest.fixture
def overrides(envdir: Path, tmp_path: Path) -> Iterator[Any]:
    """Call with dotted profile overrides to switch this test to profile copies that carry them."""
    with pytest.MonkeyPatch.context() as mp:
        yield lambda **changes: use_profiles(mp, tmp_path / uuid.uuid4().hex[:6], **changes)


@pytest.fixture(scope="module")
def staged(lab: LabState, envdir: Path) -> dict[str, Any]:
    """One staging release (author dave)."""
    kube = Kube.connect(context="lab-primary")
    try:
        sha = commit()
        digests = push_commit(lab, sha)
        before = live(kube, profile("staging"))
        result = promote("staging", sha)
        after = live(kube, profile("staging"))
    finally:
        kube.close()
    return {"sha": sha, "digests": digests, "result": result, "before": before, "after": after}  # fmt: skip


# --- freeze -------------------------------------------------------------------------------------


@pytest.fixture
def freeze() -> Iterator[str]:
    """A release freeze declared for production for the duration of the test.

    Teardown puts back what was there (``greenlight setup`` created it "off"): unsetting it
    would leave the lab short of a variable that ``doctor`` checks, for the next test on
    this worker's lab.
    """
    reason = "black friday code freeze"
    before = Variable.get(FREEZE, default=None)
    Variable.set(FREEZE, reason, overwrite=True)
    try:
        yield reason
    finally:
        if before is None:
            Variable.unset(FREEZE)
        else:
            Variable.set(FREEZE, before, overwrite=True)


def test_freeze_refuses_production_unless_forced_with_a_reason_on_the_record(
    lab: LabState, staged: dict[str, Any], freeze: str, kube: Kube
) -> None:
    """A declared freeze stops a production promotion at preflight; forced with a reason it goes through approval and the reason is in the report."""
    sha = staged["sha"]
    before = live(kube, profile("production"))
    with pytest.raises(ReleaseRefused, match="preflight") as err:
        promote("production", sha, actor="erin")
    assert freeze in str(err.value)
    assert live(kube, profile("production")) == before

    t, out = in_thread(lambda: promote("production", sha, actor="erin", force_reason="hotfix"))
    assert click(lab, "bob", "approve", "hotfix ok", run=paused_run(sha))["status"] == 200
    t.join(120)
    assert "error" not in out, out.get("error")
    assert out["result"]["outcome"] == "released"
    state = live(kube, profile("production"))
    assert {app: s["digests"][app] for app, s in state.items()} == staged["digests"]
    report = release_report(out["result"]["release_id"], "production")
    assert "hotfix" in report and freeze in report


# --- Slack --------------------------------------------------------------------------------------


def test_release_messages_form_one_slack_thread(lab: LabState, staged: dict[str, Any]) -> None:
    """A staging release posts one top-level message and its started, gate, switched and finished news as replies in its thread."""
    rid = release_id("staging", staged["digests"], staged["sha"])
    messages = [m for m in supervisor.control(lab, "GET", "/slack") if m["kind"] == "postMessage"]
    roots = [m for m in messages if m["thread_ts"] is None and rid in (m["text"] or "")]
    assert len(roots) == 1, roots
    root = roots[0]
    assert "started" in root["text"] and root["channel_name"] == "releases-staging"
    replies = [m["text"] for m in messages if m["thread_ts"] == root["ts"]]
    joined = "\n".join(replies)
    gate = next(t for t in replies if "gate passed" in t)
    assert any(ch.isdigit() for ch in gate.split(":", 1)[1])  # the gate's values, not only a verdict
    assert "switched backend to" in joined and "switched" in joined
    assert f"release {rid} finished" in joined
    stray = [
        m for m in messages if rid in (m["text"] or "") and m is not root and m["thread_ts"] != root["ts"]
    ]
    assert not stray


# --- evidence -----------------------------------------------------------------------------------


def test_release_report_artifact_holds_id_digests_and_gate_table(staged: dict[str, Any]) -> None:
    """The markdown artifact release-staging carries the release id, each digest and the gate table."""
    rid = release_id("staging", staged["digests"], staged["sha"])
    report = release_report(rid)
    assert report, f"no release-staging artifact mentions {rid}"
    for digest in staged["digests"].values():
        assert digest in report
    assert "**Outcome: released**" in report
    for app in ("backend", "frontend"):
        assert f"## Gate: {app}" in report
        assert "| app | check | value | limit | ok | reason |" in report
        rows = [line for line in report.splitlines() if line.startswith(f"| {app} | ")]
        assert any("error_rate" in row and "| ok |" in row for row in rows), rows


def test_release_emits_switched_event(staged: dict[str, Any]) -> None:
    """A release emits greenlight.release.switched about its environment with the colours and digests."""
    rid = release_id("staging", staged["digests"], staged["sha"])
    events = read_events("greenlight.release.switched", rid)
    assert len(events) == 1, events
    ev = events[0]
    assert ev.resource.id == "greenlight.environment.staging"
    assert ev.payload["digests"] == staged["digests"]
    assert ev.payload["colours"] == staged["result"]["colours"]
    assert read_events("greenlight.release.finished", rid)


# --- cleanup ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cleaned(lab: LabState, envdir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A staging release, then cleanup with the default delay, then with delay 0."""
    kube = Kube.connect(context="lab-primary")
    mp = pytest.MonkeyPatch()
    try:
        sha = commit()
        push_commit(lab, sha)
        promote("staging", sha)
        released = live(kube, profile("staging"))
        default = cleanup("staging")
        after_default = live(kube, profile("staging"))
        use_profiles(mp, tmp_path_factory.mktemp("no-delay"), staging={"release.scale_down_delay_s": 0})
        immediate = cleanup("staging")
        after_immediate = live(kube, profile("staging"))
    finally:
        mp.undo()
        kube.close()
    return {"released": released, "default": default, "after_default": after_default,
            "immediate": immediate, "after_immediate": after_immediate}  # fmt: skip


def test_cleanup_respects_the_delay_then_scales_the_idle_colour(cleaned: dict[str, Any]) -> None:
    """Within the scale-down delay cleanup scales nothing; with delay 0 it scales the old colour to 0 and keeps the live one."""
    released = cleaned["released"]
    assert cleaned["default"]["scaled_down"] == []
    assert cleaned["after_default"] == released
    assert len(cleaned["immediate"]["scaled_down"]) == 2
    for app, state in released.items():
        old, new = state["previous_colour"], state["live_colour"]
        assert state["colours"][old]["replicas"] > 0  # kept warm until now
        after = cleaned["after_immediate"][app]
        assert after["colours"][old]["replicas"] == 0
        assert after["colours"][new]["replicas"] == state["colours"][new]["replicas"] > 0
        assert after["live_colour"] == new
        assert f"{app}-{new}" in cleaned["immediate"]["kept"]


# --- manual switch ------------------------------------------------------------------------------


def test_manual_switch_returns_to_the_warm_colour_and_refuses_a_missing_one(
    lab: LabState, envdir: Path, kube: Kube, overrides: Any
) -> None:
    """Switching by hand to the previous (warm) colour points live back at it; a colour without a Deployment is refused."""
    sha = commit()
    push_commit(lab, sha)
    promote("staging", sha)
    released = live(kube, profile("staging"))
    previous = released["backend"]["previous_colour"]
    result = switch("staging", previous)
    assert {o["action"] for o in result["apps"].values()} == {"switch"}
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] == previous
        assert after[app]["digests"][app] == released[app]["colours"][previous]["digest"]

    versions = {app: kube.get("services", app, NS)["metadata"]["resourceVersion"] for app in after}
    overrides(staging={"release.colours": ["blue", "purple"]})  # a colour nothing was ever deployed to
    with pytest.raises(InputInvalid, match="no Deployment backend-purple"):
        switch("staging", "purple")
    assert {app: kube.get("services", app, NS)["metadata"]["resourceVersion"] for app in after} == versions
