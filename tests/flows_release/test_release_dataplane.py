"""Releases, rollbacks and cleanups on the lab's kube-proxy data plane (L4, endpoint changes seen
1-2 s late, kept-alive connections pinned to their pod) lose no request of a caller that keeps
its connections alive."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from greenlight.clients.kube import Kube
from greenlight.flows.maintenance import cleanup
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.flows.rollback import rollback
from greenlight_lab.state import LabState

from .support import Load, live, profile, push_commit, wait_release_lock_free

pytestmark = pytest.mark.lab
NS = "rel-staging"


def other(colour: str) -> str:
    return "green" if colour == "blue" else "blue"


def replicas(kube: Kube, app: str, colour: str) -> int:
    return int(kube.get("deployments", f"{app}-{colour}", NS)["spec"]["replicas"])


def test_promote_cleanup_promote_rollback_cleanup_under_kept_alive_load_loses_nothing(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """Under load on kept-alive connections through the live backend: promote, cleanup --now (the
    old colour drains while it still holds those connections), promote again, roll back, cleanup
    --now: no request fails, the live colour is the expected one after each step and the idle
    colour has 0 replicas after each cleanup."""
    start = live(kube, profile("staging"))["backend"]["live_colour"]
    # at most the pool's 8 connections, all opened before the first release: a burst on a loaded
    # machine would otherwise open extra ones to the colour live by then, and the LIFO pool would
    # keep using those while the old colour's pinned ones sat idle (CI: the old colour went quiet)
    with Load(lab, NS, "backend", rps=100, seconds=300, concurrency=8) as load:
        first = uuid.uuid4().hex[:10]
        push_commit(lab, first)
        assert (
            build_promote(PromoteRequest(environment="staging", commit=first, actor="dave"))["outcome"]
            == "released"
        )
        assert live(kube, profile("staging"))["backend"]["live_colour"] == other(start)

        # cleanup rightly skips while anything holds the release lock; seen held for 2 s past the
        # release's return on a loaded machine
        wait_release_lock_free("staging")
        swept = cleanup("staging", now=True)
        backend_lines = [line for line in swept["scaled_down"] if line.startswith(f"backend-{start}")]
        assert len(backend_lines) == 1, swept
        backend_line = backend_lines[0]
        # the caller's connections stay on the old colour's pods: it never goes quiet, and the
        # drain says it scaled down after the maximum wait
        assert "scaling down anyway" in backend_line, swept
        assert replicas(kube, "backend", start) == 0 and replicas(kube, "frontend", start) == 0

        second = uuid.uuid4().hex[:10]
        push_commit(lab, second)
        assert (
            build_promote(PromoteRequest(environment="staging", commit=second, actor="dave"))["outcome"]
            == "released"
        )
        assert live(kube, profile("staging"))["backend"]["live_colour"] == start

        result = rollback("staging", reason="test: back to the first release")
        assert {a: s["action"] for a, s in result["apps"].items()} == {
            "backend": "switch",
            "frontend": "switch",
        }
        assert live(kube, profile("staging"))["backend"]["live_colour"] == other(start)

        wait_release_lock_free("staging")
        cleanup("staging", now=True)
        assert replicas(kube, "backend", start) == 0 and replicas(kube, "frontend", start) == 0
    report = load.report
    assert report is not None
    assert report.sent > 3000
    assert report.failed == 0, report.render()
