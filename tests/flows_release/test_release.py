"""Blue-green releases end to end in the lab: promote, approve, gate, switch, watch, roll back."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from greenlight.clients.kube import Kube
from greenlight.core.manifests import ACTIVE_COLOUR, DIGESTS, PREVIOUS_COLOUR, RELEASE_ID
from greenlight.core.release import release_id
from greenlight.errors import Conflict, GateFailed, InputInvalid, NotFound, ReleaseRefused
from greenlight.flows.release import build_promote, deploy
from greenlight.flows.requests import DeployRequest, PromoteRequest
from greenlight.flows.rollback import rollback
from greenlight.tasks.records import RECORD
from greenlight_lab.state import LabState

from .support import Load, in_thread, live, profile, progress_of, push_commit

pytestmark = pytest.mark.lab


def commit() -> str:
    return uuid.uuid4().hex[:10]


def promote(env: str, sha: str, actor: str = "dave", **kw: object) -> dict:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor=actor, **kw))


def test_staging_release_moves_every_app_to_the_commits_digests(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A staging promotion deploys both apps to the other colour, gates, switches both and records the release."""
    sha = commit()
    digests = push_commit(lab, sha)
    before = live(kube, profile("staging"))
    result = promote("staging", sha)
    assert result["outcome"] == "released"
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] != before[app]["live_colour"]
        assert after[app]["previous_colour"] == before[app]["live_colour"]
        assert after[app]["digests"] == {app: digests[app]}
        assert after[app]["release_id"] == release_id("staging", digests, sha)
        assert after[app]["colours"][after[app]["live_colour"]]["digest"] == digests[app]
    record = json.loads(
        kube.get("configmaps", RECORD, "rel-staging")["data"][release_id("staging", digests, sha)]
    )
    assert record["digests"] == digests and record["author"] == "dave" and record["outcome"] == "released"
    assert result["gate"]["backend"]["interval 1 requests"] >= 20
    # the run's page showed its progress: each app's gate intervals, then the bake's windows
    shown = progress_of(sha, "staging")
    gates = [text for pct, text in shown if text.startswith("gate ") and pct == 100]
    assert {t.split()[1] for t in gates} == {"backend", "frontend"}, shown
    assert any(pct == 100 and text.startswith("bake: ") for pct, text in shown), shown


def test_three_releases_of_a_good_image_in_a_quiet_staging_all_pass_against_the_live_colour(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Quiet staging (no load): three releases in a row of a good image (same behaviour, new version) all pass their gate, each judged against the live colour under the gate's own synthetic traffic, and their bakes are recorded as watched."""
    for _ in range(3):
        sha = commit()
        digests = push_commit(lab, sha)
        result = promote("staging", sha)
        assert result["outcome"] == "released", result
        for app in ("backend", "frontend"):
            gate = result["gate"][app]
            # the live colour was measured in the interval that passed (an earlier one may have
            # been short of data: a new pod's first scrape is Monitoring's reset point)
            live_requests = [v for k, v in gate.items() if k.endswith(" live_requests")]
            assert live_requests and live_requests[-1] >= 20, gate
            assert [v for k, v in gate.items() if k.endswith(" p95_vs_live") and v is not None], gate
        assert result["bake"]["watched"] is True, result["bake"]
        record = json.loads(
            kube.get("configmaps", RECORD, "rel-staging")["data"][release_id("staging", digests, sha)]
        )
        assert record["bake"]["watched"] is True and record["bake"]["judged"] == record["bake"]["windows"]


def test_production_refuses_digests_that_did_not_pass_staging(lab: LabState, envdir: Path) -> None:
    """A commit never released to staging is refused in production before anything changes."""
    sha = commit()
    push_commit(lab, sha)
    with pytest.raises(ReleaseRefused, match="staging"):
        promote("production", sha)


# the approval itself (verified people, refusals, typed answers): test_release_approval.py


def alerts_about(lab: LabState, text: str) -> list[dict[str, Any]]:
    """The lab Slack's alert messages (channel #incidents) that contain ``text``."""
    messages = httpx.get(lab.env["GREENLIGHT_LAB_CONTROL"] + "/slack", timeout=10).json()
    return [m for m in messages if text in (m.get("text") or "") and "incidents" in m["channel_name"]]


def test_error_rate_image_fails_the_gate_and_nothing_is_switched(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A 20% error-rate image fails the gate, naming the check; live traffic stays where it was.
    (Which check fails first is chance: a smoke probe answered 500, or the error rate over its limit;
    the error-rate check alone is held by tests/flows_gate.)"""
    sha = commit()
    digests = push_commit(lab, sha, error_rate=0.2)
    before = live(kube, profile("staging"))
    with pytest.raises(GateFailed, match=r"error rate|smoke probe GET /: expected 200, got 500") as err:
        promote("staging", sha)
    assert "nothing switched" in str(err.value)
    rid = release_id("staging", digests, sha)  # and the gate's alert, P3 outside production
    assert alerts_about(lab, f"[P3] staging: gate-failed: release {rid} stopped at the gate")
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] == before[app]["live_colour"]
        assert after[app]["digests"] == before[app]["digests"]
        candidate = next(c for c in after[app]["colours"] if c != after[app]["live_colour"])
        assert after[app]["colours"][candidate]["replicas"] == 0  # the failed colour is scaled away


def test_crashing_image_fails_fast(lab: LabState, envdir: Path, kube: Kube) -> None:
    """A crashing image fails the release on CrashLoopBackOff well before the progress deadline."""
    sha = commit()
    push_commit(lab, sha, crash=True)
    before = live(kube, profile("staging"))
    t0 = time.monotonic()
    with pytest.raises(GateFailed, match="CrashLoopBackOff"):
        promote("staging", sha)
    assert time.monotonic() - t0 < profile("staging").release.progress_deadline_s
    assert live(kube, profile("staging"))["backend"]["live_colour"] == before["backend"]["live_colour"]


def test_unknown_image_is_refused_before_anything_changes(lab: LabState, envdir: Path, kube: Kube) -> None:
    """A commit with no images in the registry is refused naming the image; the cluster is untouched."""
    before = live(kube, profile("staging"))
    with pytest.raises(NotFound, match="not found"):
        promote("staging", "no-such-commit-" + commit())
    assert live(kube, profile("staging")) == before


@pytest.mark.parametrize(
    ("images", "what"),
    [
        (["ghcr.io/SMA/backend:1", "ghcr.io/sma-platform/frontend:1"], "malformed"),
        (["docker.io/library/nginx:1", "ghcr.io/sma-platform/frontend:1"], "allow-list|not the repository"),
        (["ghcr.io/sma-platform/backend:1"], "no image for app"),
    ],
)
def test_bad_image_references_are_refused(lab: LabState, envdir: Path, images: list[str], what: str) -> None:
    """Malformed, foreign or incomplete image lists are refused with the reason."""
    with pytest.raises(InputInvalid, match=what):
        deploy(DeployRequest(environment="staging", images=images))


def test_unknown_environment_is_refused(lab: LabState, envdir: Path) -> None:
    """An environment without a profile is refused naming the known ones."""
    with pytest.raises(InputInvalid, match="unknown environment 'qa'"):
        promote("qa", commit())


def test_breach_after_the_switch_rolls_back_automatically(lab: LabState, envdir: Path, kube: Kube) -> None:
    """An image that degrades after the gate is rolled back during the bake, within about one
    interval, and its colour is scaled down (callers kept-alive on its pods would go on failing)."""
    sha = commit()
    digests = push_commit(lab, sha, degrade_after_s=9, degraded_error_rate=0.5)
    before = live(kube, profile("staging"))
    with pytest.raises(GateFailed, match="rolled back"):
        promote("staging", sha, bake_s=30)
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] == before[app]["live_colour"]
        assert after[app]["digests"] == before[app]["digests"]
        assert after[app]["rolled_back_release"] == release_id("staging", digests, sha)
        failing = next(c for c in after[app]["colours"] if c != before[app]["live_colour"])
        assert after[app]["colours"][failing]["replicas"] == 0
    rid = release_id("staging", digests, sha)
    assert alerts_about(lab, f"[P3] staging: rollback: release {rid} rolled back automatically")


def test_manual_rollback_returns_every_app_and_a_second_one_does_nothing(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Rollback points every app back at its previous colour, with zero failed requests; repeating it changes nothing."""
    sha = commit()
    push_commit(lab, sha)
    promote("staging", sha)
    released = live(kube, profile("staging"))
    with Load(lab, "rel-staging", "frontend", rps=150) as load:
        result = rollback("staging", reason="test")
        time.sleep(1)
    assert load.report is not None and load.report.failed == 0, load.report.render()
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert result["apps"][app]["action"] == "switch"
        assert after[app]["live_colour"] == released[app]["previous_colour"]
    assert alerts_about(lab, "[P3] staging: rollback: rolled back by hand (test)")
    again = rollback("staging", reason="twice")
    assert {s["action"] for s in again["apps"].values()} == {"noop"}
    assert not alerts_about(lab, "rolled back by hand (twice)")  # nothing moved: no alert
    assert live(kube, profile("staging")) == after


def test_annotations_tell_the_truth_after_a_release(lab: LabState, envdir: Path, kube: Kube) -> None:
    """The live Service records active and previous colour, release id and digests, readable with kubectl."""
    sha = commit()
    digests = push_commit(lab, sha)
    promote("staging", sha)
    svc = kube.get("services", "backend", "rel-staging")
    ann = svc["metadata"]["annotations"]
    assert ann[ACTIVE_COLOUR] == svc["spec"]["selector"]["color"]
    assert ann[PREVIOUS_COLOUR] != ann[ACTIVE_COLOUR]
    assert ann[RELEASE_ID] == release_id("staging", digests, sha)
    assert json.loads(ann[DIGESTS]) == {"backend": digests["backend"]}


def test_a_change_to_the_live_service_during_the_release_stops_it_and_undoes_switched_apps(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A person (or a rollback) touching frontend's live Service mid-release: frontend is not switched,
    and backend, already switched, is switched back: all or none."""
    sha = commit()
    digests = push_commit(lab, sha)
    before = live(kube, profile("staging"))
    t, out = in_thread(lambda: promote("staging", sha))
    deadline = time.monotonic() + 60
    target = "green" if before["frontend"]["live_colour"] == "blue" else "blue"
    while time.monotonic() < deadline:  # wait until the release has planned and deployed
        dep = kube.find("deployments", f"frontend-{target}", "rel-staging")
        if dep and digests["frontend"] in dep["spec"]["template"]["spec"]["containers"][0]["image"]:
            break
        time.sleep(0.1)
    kube.patch(
        "services",
        "frontend",
        {"metadata": {"annotations": {"example.com/touched-by": "a person"}}},
        "rel-staging",
    )
    t.join(120)
    assert isinstance(out.get("error"), Conflict), out
    assert "changed since the release planned" in str(out["error"])
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] == before[app]["live_colour"]
