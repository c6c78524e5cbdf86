"""The bench's arithmetic of figure 6: verdict counts, false-pass / false-fail rates, wall times."""

from __future__ import annotations

import pytest

from bench.gate import KINDS, Kind, goal_text, summarise
from bench.run import _figure6_rows

GOOD = Kind("good", "same as live", {"latency_ms": 20.0}, True)
WORSE = Kind("slower", "latency x2", {"latency_ms": 40.0}, False)


def runs(*verdicts: str, wall: float = 6.0) -> list[dict[str, object]]:
    return [{"verdict": v, "wall_s": wall + i} for i, v in enumerate(verdicts)]


@pytest.mark.parametrize(
    ("kind", "verdicts", "expected"),
    [
        # a good image: every run not passed is a false fail, an inconclusive one too (fail closed)
        (GOOD, ("pass", "pass", "pass", "pass"), {"passed": 4, "failed": 0, "inconclusive": 0, "wrong": 0,
                                                  "rate": 0.0, "met": True, "rate_name": "false-fail"}),
        (GOOD, ("pass", "fail", "inconclusive", "pass"), {"passed": 2, "failed": 1, "inconclusive": 1,
                                                          "wrong": 2, "rate": 0.5, "met": False}),
        # a worse image: only a pass is a false pass; inconclusive blocks the release as a fail does
        (WORSE, ("fail", "inconclusive", "fail", "fail"), {"passed": 0, "failed": 3, "inconclusive": 1,
                                                           "wrong": 0, "rate": 0.0, "met": True,
                                                           "rate_name": "false-pass"}),
        (WORSE, ("fail", "pass", "fail", "fail"), {"wrong": 1, "rate": 0.25, "met": False}),
    ],
)  # fmt: skip
def test_summarise_counts_verdicts_and_the_rate_that_matters(kind, verdicts, expected):
    """Counts add up to the runs; the rate is not-passed / N for a good image, passed / N for a worse one."""
    s = summarise(kind, runs(*verdicts))
    assert s["runs"] == len(verdicts) == s["passed"] + s["failed"] + s["inconclusive"]
    assert {k: s[k] for k in expected} == expected


def test_summarise_reports_median_and_max_wall_time_and_no_rate_without_runs():
    """Wall times: median and max of the gate's calls; no runs: no rate, no goal verdict."""
    s = summarise(GOOD, runs("pass", "pass", "pass", wall=4.0))  # 4, 5, 6 s
    assert (s["wall_median_s"], s["wall_max_s"]) == (5.0, 6.0)
    empty = summarise(WORSE, [])
    assert (empty["rate"], empty["met"], empty["wall_median_s"]) == (None, None, None)


def test_goal_text_and_table_rows():
    """The goal names N for both sides; the table has a row per kind with its rate and met/MISSED."""
    kinds = {"good": summarise(GOOD, runs("pass", "pass")), "slower": summarise(WORSE, runs("fail", "pass"))}
    assert goal_text(kinds) == "good: false-fail 0 of 2; worse: false-pass 0 of 2"
    rows = _figure6_rows({"kinds": kinds})
    assert [(r[2], r[3]) for r in rows] == [("false-fail 0 of 2", "met"), ("false-pass 0 of 2", "MISSED")]
    assert (
        "2 runs: 1 passed, 1 failed, 0 inconclusive; false-pass 1/2; gate 6.5 s median, 7.0 s max"
        in rows[1][1]
    )


def test_the_kinds_are_the_live_behaviour_and_three_worse_ones():
    """good is the live colour's behaviour; the worse kinds differ in latency or errors only."""
    by_name = {k.name: k for k in KINDS}
    assert by_name["good"].should_pass and not any(k.should_pass for k in KINDS if k.name != "good")
    live = by_name["good"].behaviour
    assert by_name["slower"].behaviour == {**live, "latency_ms": 2 * live["latency_ms"]}
    assert by_name["much-slower"].behaviour == {**live, "latency_ms": 5 * live["latency_ms"]}
    assert by_name["errors"].behaviour["error_rate"] == pytest.approx(live["error_rate"] + 0.08)
    assert by_name["errors"].gate == {"max_error_rate": 0.25}
