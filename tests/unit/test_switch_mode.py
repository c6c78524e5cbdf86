"""Which way traffic moves: the profile's switch mode, auto's reading of the live Service, and the
HTTPRoute router's direct or progressive moves."""

from __future__ import annotations

from typing import Any

import pytest

from greenlight.core.httproute import RouteSnapshot
from greenlight.core.switch import snapshot_service
from greenlight.settings import load_profile
from greenlight.tasks.routers import GatewayHTTPRoute, ServiceSelector
from greenlight_lab.state import LAB_ENVIRONMENTS

NEG = {"cloud.google.com/neg": '{"ingress": true}'}
MODES: list[tuple[str, str, dict[str, str], str]] = [
    # id, profile's switch_mode, live Service annotations, mode used
    ("auto-plain-service", "auto", {}, "direct"),
    ("auto-behind-neg", "auto", NEG, "overlap"),
    ("direct-even-behind-neg", "direct", NEG, "direct"),
    ("overlap-everywhere", "overlap", {}, "overlap"),
]


@pytest.mark.parametrize(("mode", "annotations", "used"), [c[1:] for c in MODES], ids=[c[0] for c in MODES])
def test_switch_mode_follows_the_profile_and_auto_reads_the_neg_annotation(
    mode: str, annotations: dict[str, str], used: str
) -> None:
    """auto overlaps only behind container-native load balancing; an explicit mode is kept."""
    base = load_profile("staging", LAB_ENVIRONMENTS)
    profile = base.model_copy(update={"release": base.release.model_copy(update={"switch_mode": mode})})
    svc: dict[str, Any] = {"metadata": {"name": "backend", "annotations": annotations}}
    assert ServiceSelector().mode(profile, snapshot_service(svc)) == used


@pytest.mark.parametrize(("progressive", "used"), [([], "direct"), ([10, 50], "progressive")])
def test_the_httproute_router_moves_directly_unless_the_profile_names_steps(
    progressive: list[int], used: str
) -> None:
    """A gateway balances each request anew: no overlap; progressive only with steps."""
    base = load_profile("staging", LAB_ENVIRONMENTS)
    traffic = base.traffic.model_copy(update={"router": "gateway-httproute", "progressive": progressive})
    profile = base.model_copy(update={"traffic": traffic})
    snap = RouteSnapshot("backend", "1", (), {"blue": "backend-blue", "green": "backend-green"})
    assert GatewayHTTPRoute().mode(profile, snap) == used
