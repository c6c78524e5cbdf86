"""The bench's arithmetic of release overhead: which waits the lab imposes, read off a timeline."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench.releases import imposed_waits


def profile(interval: float = 2.0, intervals: int = 2, delay: float = 1.5) -> Any:
    return SimpleNamespace(
        gate=SimpleNamespace(interval_s=interval, intervals=intervals),
        monitoring=SimpleNamespace(ingestion_delay_s=delay),
    )


def step(name: str, second: float) -> dict[str, str]:
    return {"step": name, "outcome": "ok", "at": f"2026-11-26T12:00:{second:06.3f}+00:00"}


@pytest.mark.parametrize(
    ("timeline", "bake_s", "expected"),
    [
        # one app: readiness is deploy -> rollout; gate 2 x 2 s + 1.5; bake 4 s + 1.5
        (
            [step("lock", 0), step("backend: deploy", 1), step("backend: rollout", 1.5)],
            4,
            {"readiness_s": 0.5, "gate_windows_s": 5.5, "bake_windows_s": 5.5, "approval_s": 0.0, "data_plane_s": 0.0},
        ),
        # apps in parallel: the slowest readiness counts, not the sum
        (
            [step("backend: deploy", 1), step("frontend: deploy", 1.2), step("backend: rollout", 2),
             step("frontend: rollout", 4.2)],
            4,
            {"readiness_s": 3.0, "gate_windows_s": 5.5, "bake_windows_s": 5.5, "approval_s": 0.0, "data_plane_s": 0.0},
        ),
        # the bake's sliding windows end with the bake (a bake shorter than one interval: one window)
        (
            [step("backend: deploy", 1), step("backend: rollout", 1)],
            5,
            {"readiness_s": 0.0, "gate_windows_s": 5.5, "bake_windows_s": 6.5, "approval_s": 0.0, "data_plane_s": 0.0},
        ),
        (
            [step("backend: deploy", 1), step("backend: rollout", 1)],
            1,
            {"readiness_s": 0.0, "gate_windows_s": 5.5, "bake_windows_s": 3.5, "approval_s": 0.0, "data_plane_s": 0.0},
        ),
        # production: the wait from the lock (or preflight) to the approval is the approver's
        (
            [step("lock", 0), step("preflight", 0.5), step("approval", 3.5), step("backend: deploy", 4),
             step("backend: rollout", 4.5)],
            4,
            {"readiness_s": 0.5, "gate_windows_s": 5.5, "bake_windows_s": 5.5, "approval_s": 3.0, "data_plane_s": 0.0},
        ),
        # a resumed release has no deploy step: no readiness wait of its own
        (
            [step("lock", 0), step("backend: rollout", 1)],
            4,
            {"readiness_s": 0.0, "gate_windows_s": 5.5, "bake_windows_s": 5.5, "approval_s": 0.0, "data_plane_s": 0.0},
        ),
        # the data plane's delay: first app's switch patch to the last app's traffic arriving
        (
            [step("backend: deploy", 1), step("backend: rollout", 1), step("backend: switch", 6),
             step("frontend: switch", 6.1), step("backend: traffic", 9.1), step("frontend: traffic", 9.2)],
            4,
            {"readiness_s": 0.0, "gate_windows_s": 5.5, "bake_windows_s": 5.5, "approval_s": 0.0, "data_plane_s": 3.2},
        ),
    ],
    ids=["one-app", "parallel-apps", "bake-5s", "bake-under-an-interval", "approval", "resumed", "data-plane"],
)  # fmt: skip
def test_imposed_waits(timeline: list[dict[str, str]], bake_s: float, expected: dict[str, float]) -> None:
    result = {"timeline": timeline, "digests": {"backend": "d1", "frontend": "d2"}}
    waits = imposed_waits(result, profile(), bake_s)
    assert waits == pytest.approx(expected)
