"""Traffic moves never race: cleanup leaves alone what a running release holds, a rollback never
returns traffic to a colour a release has deployed onto, and one API error does not leave a
rollback undone."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from greenlight.clients.kube import Kube
from greenlight.errors import ReleaseRefused
from greenlight.flows.maintenance import cleanup
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.flows.rollback import rollback
from greenlight.tasks.kube import deploy_colour
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

from .support import click, in_thread, live, paused_run, profile, push_commit

pytestmark = pytest.mark.lab


def released(lab: LabState, env: str = "staging", actor: str = "dave") -> str:
    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha)
    assert build_promote(PromoteRequest(environment=env, commit=sha, actor=actor))["outcome"] == "released"
    return sha


def test_cleanup_skips_while_a_release_holds_the_environment(lab: LabState, envdir: Path, kube: Kube) -> None:
    """While a production promotion waits for approval (it holds production's release lock),
    cleanup --now scales nothing down and says why; the release then goes on as if nothing happened."""
    sha = released(lab)
    before = live(kube, profile("production"))
    t, out = in_thread(
        lambda: build_promote(PromoteRequest(environment="production", commit=sha, actor="erin"))
    )
    run = paused_run(sha)
    swept = cleanup("production", now=True)
    assert swept["skipped"] and "is running" in swept["skipped"], swept
    assert swept["scaled_down"] == []
    assert live(kube, profile("production")) == before  # nothing scaled, nothing switched
    assert click(lab, "alice", "reject", "test over", run=run)["status"] == 200
    t.join(60)
    assert isinstance(out.get("error"), ReleaseRefused), out


def test_rollback_refuses_a_previous_colour_a_release_has_deployed_onto(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Once a release has put a new build on the previous colour (it deploys onto the idle one), a
    rollback refuses to send traffic there and leaves the live colour as it is."""
    released(lab)
    state = live(kube, profile("staging"))["backend"]
    previous = state["previous_colour"]
    candidate = uuid.uuid4().hex[:10]
    digests = push_commit(lab, candidate)
    # what a release does first: the new digest onto the idle (previous) colour
    deploy_colour.fn(
        profile("staging"), "backend", previous, state["live_colour"], digests["backend"], "rel-x"
    )
    with pytest.raises(ReleaseRefused, match="a release has deployed onto it"):
        rollback("staging", app="backend", reason="test: stale previous colour")
    after = live(kube, profile("staging"))["backend"]
    assert after["live_colour"] == state["live_colour"]
    assert after["release_id"] == state["release_id"]


def test_rollback_survives_a_kubernetes_5xx_on_its_switch(lab: LabState, envdir: Path, kube: Kube) -> None:
    """Two 500s on the rollback's patch of the live Services are retried: every app is back on
    its previous colour."""
    released(lab)
    before = live(kube, profile("staging"))
    rule = supervisor.control(
        lab, "POST", "/faults",
        {"target": "kube-primary", "verb": "patch", "resource": "services", "status": 500, "count": 2},
    )  # fmt: skip
    try:
        result = rollback("staging", reason="test: 5xx on the way back")
    finally:
        supervisor.control(lab, "DELETE", "/faults?target=kube-primary")
    assert supervisor.control(lab, "GET", f"/faults/{rule['id']}")["fired"] == 2
    assert {a: s["action"] for a, s in result["apps"].items()} == {"backend": "switch", "frontend": "switch"}
    after = live(kube, profile("staging"))
    for app in ("backend", "frontend"):
        assert after[app]["live_colour"] == before[app]["previous_colour"]
