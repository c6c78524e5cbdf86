"""Releases through the ``gateway-httproute`` router: a Gateway API HTTPRoute whose backendRef
weights move traffic between the colours' Services, in the lab's Gateway (which programs a route
change seconds late, as GKE's does, and answers 502 for a pick on a backend with no healthy
endpoint). Load goes through the Gateway with the route's Host header.

Environments: ``gw-staging`` (direct: 0/100) and ``gw-canary`` (progressive: 10 -> 50 -> 100 %),
copies of the lab's staging profile in namespaces of their own."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.core.httproute import PLURAL as ROUTES
from greenlight.core.manifests import ACTIVE_COLOUR, PREVIOUS_COLOUR, RELEASE_ID
from greenlight.core.release import release_id
from greenlight.errors import GateFailed
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.flows.rollback import rollback
from greenlight.settings import load_profile
from greenlight_lab.gateway import ensure_gateway_route, load_target
from greenlight_lab.load import BackgroundLoad
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

from .support import live, push_commit, set_up_environments

pytestmark = pytest.mark.lab
GATEWAY = "lab-gateway"
#: namespace, progressive shares, and the gate's settings over the lab's staging (1 s intervals,
#: synthetic traffic that 2 replicas of a colour share); and the load through the Gateway
ENVIRONMENTS: dict[str, tuple[str, list[int], dict[str, Any]]] = {
    "gw-staging": ("gw-staging", [], {"interval_s": 1, "synthetic_rps": 40}),
    # the progressive test's image sheds above a capacity that a 10 % share must stay well under
    # and a 50 % share well above (see it): there the synthetic share is kept small beside the
    # load's, in 2 s intervals so that each still holds min_requests
    "gw-canary": ("gw-canary", [10, 50], {"interval_s": 2, "synthetic_rps": 20}),
}
LOAD_RPS = {"gw-staging": 120, "gw-canary": 160}


def hostname(app: str, namespace: str) -> str:
    return f"{app}.{namespace}.example"


@pytest.fixture(scope="module")
def gwdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The two environments' profiles (the lab's staging, short gates and bakes, the HTTPRoute
    router), selected for the module, set up and bootstrapped: each app's Deployments and preview
    Service (the lab's bootstrap), then its colours' Services, the Gateway and the HTTPRoute with
    all of the traffic on blue."""
    directory = tmp_path_factory.mktemp("gw-envs")
    for name, (namespace, progressive, gate) in ENVIRONMENTS.items():
        doc = yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())
        doc.update(name=name, namespace=namespace)
        doc["release"]["bake_s"] = 1
        doc["gate"].update({"intervals": 1, **gate})
        doc["monitoring"]["ingestion_delay_s"] = 1.1
        doc["traffic"] = {"router": "gateway-httproute", "progressive": progressive}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
        set_up_environments(lab, directory, list(ENVIRONMENTS))
        kube = Kube.connect(context="lab-primary")
        try:
            for name in ENVIRONMENTS:
                profile = load_profile(name)
                blue, _ = profile.release.colours
                for app in profile.apps:
                    ensure_gateway_route(
                        kube, profile.namespace, app.route_name, GATEWAY, hostname(app.name, profile.namespace),
                        {c: f"{app.service}-{c}" for c in profile.release.colours}, app.port, blue,
                        {"app": app.name}, profile.release.colour_label,
                    )  # fmt: skip
        finally:
            kube.close()
        yield directory


def commit() -> str:
    return uuid.uuid4().hex[:10]


def promote(env: str, sha: str, **kw: Any) -> dict[str, Any]:
    return build_promote(PromoteRequest(environment=env, commit=sha, actor="dave", **kw))


def through_gateway(lab: LabState, env: str, app: str = "frontend", seconds: float = 120) -> BackgroundLoad:
    """Load on ``app`` of ``env`` through the lab's Gateway, as callers of a GKE Gateway send it."""
    namespace = ENVIRONMENTS[env][0]
    url, host = load_target(lab, namespace, GATEWAY, hostname(app, namespace))
    return BackgroundLoad(url, LOAD_RPS[env], seconds, concurrency=16, host=host)


def weights(kube: Kube, env: str, app: str) -> dict[str, int]:
    """The HTTPRoute's weight of each colour's Service (its first rule)."""
    namespace = ENVIRONMENTS[env][0]
    route = kube.get(ROUTES, app, namespace)
    return {
        ref["name"].rsplit("-", 1)[1]: ref.get("weight", 1)
        for ref in route["spec"]["rules"][0]["backendRefs"]
    }


def gateway_failures(report: Any) -> dict[str, int]:
    """What the Gateway or the network failed (not the app's own answers): transport failures,
    and the 502/503/504 a gateway gives when it has no healthy backend."""
    out = {k: v for k, v in report.failed_by.items() if k in ("refused", "reset", "timeout") and v}
    out |= {code: n for code, n in report.status_counts.items() if code in ("502", "503", "504") and n}
    return out


def test_httproute_release_under_load_loses_nothing(lab: LabState, gwdir: Path, kube: Kube) -> None:
    """A release moves each app's HTTPRoute weights to the new colour (0/100), verified by the
    route's status and the traffic arriving there; the load through the Gateway loses nothing; the
    route records the release and what it replaced."""
    sha = commit()
    digests = push_commit(lab, sha)
    before = live(kube, load_profile("gw-staging"))
    with through_gateway(lab, "gw-staging") as load:
        result = promote("gw-staging", sha)
        time.sleep(2)
    assert load.report is not None
    assert load.report.failed == 0, load.report.render()
    assert result["outcome"] == "released"
    rid = release_id("gw-staging", digests, sha)
    for app in ("backend", "frontend"):
        old = before[app]["live_colour"]
        new = next(c for c in ("blue", "green") if c != old)
        assert weights(kube, "gw-staging", app) == {old: 0, new: 100}
        annotations = kube.get(ROUTES, app, "gw-staging")["metadata"]["annotations"]
        assert (annotations[ACTIVE_COLOUR], annotations[PREVIOUS_COLOUR], annotations[RELEASE_ID]) == (
            new,
            old,
            rid,
        )
    served = {k.split(":")[0] for k in load.report.backends}
    assert served, load.report.render()  # answers came from pods (X-Backend) through the Gateway
    steps = {step["step"]: step for step in result["timeline"]}
    assert "frontend: traffic" in steps


def test_httproute_manual_rollback_under_load_loses_nothing(lab: LabState, gwdir: Path, kube: Kube) -> None:
    """Rolling back by hand gives the previous colour all the weight again, with nothing lost
    through the Gateway; a second rollback does nothing."""
    sha = commit()
    push_commit(lab, sha)
    promote("gw-staging", sha)
    released = live(kube, load_profile("gw-staging"))
    with through_gateway(lab, "gw-staging") as load:
        result = rollback("gw-staging", reason="httproute test")
        time.sleep(2)
    assert load.report is not None and load.report.failed == 0, load.report.render()
    for app in ("backend", "frontend"):
        assert result["apps"][app]["action"] == "switch", result
        previous = released[app]["previous_colour"]
        assert weights(kube, "gw-staging", app)[previous] == 100
    again = rollback("gw-staging", reason="twice")
    assert {s["action"] for s in again["apps"].values()} == {"noop"}


def test_httproute_breach_after_the_switch_rolls_back_under_load(
    lab: LabState, gwdir: Path, kube: Kube
) -> None:
    """An image that degrades after the switch is rolled back during the bake: the route gives the
    previous colour everything again. Through the Gateway, the only failures are the bad image's
    own 500s while it served: no refused or reset connection, no 502/503 from the Gateway."""
    sha = commit()
    digests = push_commit(lab, sha, degrade_after_s=9, degraded_error_rate=0.5)
    before = live(kube, load_profile("gw-staging"))
    with through_gateway(lab, "gw-staging") as load:
        with pytest.raises(GateFailed, match="rolled back"):
            promote("gw-staging", sha, bake_s=30)
        time.sleep(2)
    assert load.report is not None
    assert gateway_failures(load.report) == {}, load.report.render()
    after = live(kube, load_profile("gw-staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] == before[app]["live_colour"]
        assert weights(kube, "gw-staging", app)[before[app]["live_colour"]] == 100
        assert after[app]["rolled_back_release"] == release_id("gw-staging", digests, sha)


def test_httproute_progressive_release_stopped_at_its_second_step_by_a_bad_image(
    lab: LabState, gwdir: Path, kube: Kube
) -> None:
    """gw-canary releases 10 % -> 50 % -> 100 %, judging the new colour at each step. An image that
    cannot take more than a small share (each pod sheds requests above its capacity, 503) passes
    the gate and the 10 % step, and is stopped at the 50 % step: the route gives the old colour
    everything back, the new colour is scaled away, and the release is recorded as rolled back."""
    sha = commit()
    # 2 pods of the new frontend (the load goes to the frontend): at 10 % each takes about
    # (20 synthetic + 16 of the load) / 2 = 18 rps, 64 % of its capacity of 28 (a share of 160 rps
    # picked at random varies by about 3 rps a pod a second); at 50 %, (20 + 80) / 2 = 50 rps, well
    # above 28, and above it still if a loaded machine sends only half the load: (20 + 40) / 2 = 30.
    # (At 40 synthetic, 120 of load and a capacity of 30, the 10 % step shed 7 % of one window on
    # a CI machine: 26 of 30 left no room for a random share's variation.)
    digests = push_commit(lab, sha, capacity_rps=28)
    before = live(kube, load_profile("gw-canary"))
    with through_gateway(lab, "gw-canary") as load:
        with pytest.raises(GateFailed, match=r"progressive release stopped at step 2 of 2 \(50%"):
            promote("gw-canary", sha)
        time.sleep(1)
    assert load.report is not None
    rid = release_id("gw-canary", digests, sha)
    after = live(kube, load_profile("gw-canary"))
    for app in ("backend", "frontend"):
        old = before[app]["live_colour"]
        assert after[app]["live_colour"] == old
        new = next(c for c in ("blue", "green") if c != old)
        assert weights(kube, "gw-canary", app) == {old: 100, new: 0}
        assert after[app]["colours"][new]["replicas"] == 0
        assert not after[app]["overlap"]
    from greenlight.tasks.records import read_records

    records = [r for r in read_records.fn(load_profile("gw-canary")) if r.get("release_id") == rid]
    assert [r["outcome"] for r in records] == ["rolled-back"], records
    assert "progressive release stopped at step 2 of 2" in records[0]["reason"]
    # the bad image shed load at 50 %
    assert load.report.status_counts.get("503", 0) > 0, load.report.render()
    # the image's own 503s aside, nothing was lost to the moves: no refused or reset connection,
    # no 502 (a pick on a backend the Gateway had no healthy endpoint for)
    assert {k: v for k, v in gateway_failures(load.report).items() if k != "503"} == {}, load.report.render()
