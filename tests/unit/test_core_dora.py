"""DORA figures from tables of release-record histories, the expected figures computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from greenlight.core.dora import check_days, compute, nearest_rank, report_dict, report_lines
from greenlight.core.release import sign_record
from greenlight.errors import InputInvalid

KEY = b"record-key"
NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
H = 3600.0


def at(hours_ago: float) -> str:
    return (NOW - timedelta(hours=hours_ago)).isoformat()


def rec(key: bytes = KEY, **fields: Any) -> dict[str, Any]:
    """A release record of environment production, signed with ``key``."""
    entry = {"environment": "production", "at": fields.get("switched_at") or at(0), **fields}
    entry["signature"] = sign_record(entry, key)
    return entry


def released(
    rid: str, switched_h: float, commit_h: float | None = None, source: str = "receiver"
) -> dict[str, Any]:
    """A released record; its commit time (if any) vouched for by the receiver unless ``source`` says otherwise."""
    fields: dict[str, Any] = {"release_id": rid, "outcome": "released", "switched_at": at(switched_h)}
    if commit_h is not None:
        fields["commit_at"], fields["commit_at_from"] = at(commit_h), source
    return rec(**fields)


def rolled_back(
    rid: str, switched_h: float, restored_h: float, commit_h: float | None = None
) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "release_id": rid, "outcome": "rolled-back", "switched_at": at(switched_h),
        "decided_at": at(restored_h), "restored_at": at(restored_h),
    }  # fmt: skip
    if commit_h is not None:
        fields["commit_at"], fields["commit_at_from"] = at(commit_h), "receiver"
    return rec(**fields)


def rollback(name: str, restored_h: float, *undid: str) -> dict[str, Any]:
    return rec(release_id=name, outcome="rollback", undid=list(undid), restored_at=at(restored_h))


# each case: records, days, then by hand: deployments, frequency (/day), lead median, lead p90,
# change failure rate, time-to-restore median (seconds; None = no data)
CASES = {
    "no records at all: nothing is measured": ([], 7, 0, None, None, None, None, None),
    "records, none in the window: frequency is a real zero, the rest no data": (
        [released("r0", 24 * 9, 24 * 9 + 1)],
        7, 0, 0.0, None, None, None, None,
    ),
    "two releases with commit times": (
        [released("r1", 48, 49), released("r2", 24, 27)],
        # lead times 1 h and 3 h: median 2 h; p90 rank ceil(1.8) = 2 -> 3 h; 2 in 7 days
        7, 2, 2 / 7, 2 * H, 3 * H, 0.0, None,
    ),
    "an automatic rollback: failed, restored 10 min after its switch": (
        [released("r1", 48, 49), rolled_back("r2", 24, 24 - 1 / 6, 24.5)],
        # leads 1 h, 0.5 h: median 0.75 h, p90 rank 2 of [0.5 h, 1 h] = 1 h; 1 of 2 failed
        7, 2, 2 / 7, 0.75 * H, 1 * H, 0.5, 600.0,
    ),
    "a manual rollback undoes the newest switch of the release it names": (
        [released("r1", 72, 73), released("r2", 48, 50), rollback("rb1", 47, "r2")],
        # r2 undone 1 h after its switch; leads 1 h and 2 h
        7, 2, 2 / 7, 1.5 * H, 2 * H, 0.5, 1 * H,
    ),
    "rolled back automatically and then by hand: counted once, the earliest restore": (
        [rolled_back("r1", 10, 9.5), rollback("rb1", 9, "r1")],
        1, 1, 1.0, None, None, 1.0, 0.5 * H,
    ),
    "a rollback of a release never deployed here marks nothing": (
        [released("r1", 5, 6), rollback("rb1", 4, "elsewhere")],
        1, 1, 1.0, 1 * H, 1 * H, 0.0, None,
    ),
    "untrusted records are skipped (a forged release and a forged rollback)": (
        [
            released("r1", 5, 6),
            rec(key=b"not the key", release_id="forged", outcome="released", switched_at=at(4)),
            rec(key=b"not the key", release_id="rbx", outcome="rollback", undid=["r1"], restored_at=at(3)),
        ],
        1, 1, 1.0, 1 * H, 1 * H, 0.0, None,
    ),
    "an old record without switched_at counts by its time, with no lead time": (
        [rec(release_id="old", outcome="released", at=at(30), commit="abc"), released("r1", 5, 7)],
        2, 2, 1.0, 2 * H, 2 * H, 0.0, None,
    ),
    "another environment's records are not this one's": (
        [released("r1", 5, 6), {**rec(release_id="s1", outcome="released", switched_at=at(3), environment="staging")}],
        1, 1, 1.0, 1 * H, 1 * H, 0.0, None,
    ),
    "a typed commit time is not a lead time (the receiver did not vouch for it)": (
        [released("r1", 5, 6), released("r2", 4, 100, "typed")],
        1, 2, 2.0, 1 * H, 1 * H, 0.0, None,
    ),
    "records from before commit proofs (request, record <id>) have no lead time": (
        [released("old1", 5, 50, "request"), released("old2", 4, 50, "record staging-x")],
        1, 2, 2.0, None, None, 0.0, None,
    ),
    "a production time from staging's vouched record counts; from a typed one it does not": (
        [released("p1", 5, 7, "receiver, record s1"), released("p2", 4, 90, "typed, record s2")],
        1, 2, 2.0, 2 * H, 2 * H, 0.0, None,
    ),
    "five lead times: median the third, p90 the fifth (rank ceil(4.5) = 5)": (
        [released(f"r{i}", 10 + i, 10 + i + lead) for i, lead in enumerate([5, 1, 4, 2, 3])],
        1, 5, 5.0, 3 * H, 5 * H, 0.0, None,
    ),
}  # fmt: skip


@pytest.mark.parametrize(
    ("records", "days", "count", "frequency", "lead_median", "lead_p90", "cfr", "restore"),
    list(CASES.values()),
    ids=list(CASES),
)
def test_figures_match_the_hand_computed_ones(
    records: list[dict[str, Any]],
    days: int,
    count: int,
    frequency: float | None,
    lead_median: float | None,
    lead_p90: float | None,
    cfr: float | None,
    restore: float | None,
) -> None:
    """Each history gives the deployment count, frequency, lead time median/p90, change failure
    rate and time to restore computed by hand."""
    report = compute(records, KEY, "production", days, NOW)
    assert report.deployment_count == count
    assert report.deployment_frequency == (pytest.approx(frequency) if frequency is not None else None)
    assert report.lead_time_median_s == (pytest.approx(lead_median) if lead_median is not None else None)
    assert report.lead_time_p90_s == (pytest.approx(lead_p90) if lead_p90 is not None else None)
    assert report.change_failure_rate == (pytest.approx(cfr) if cfr is not None else None)
    assert report.time_to_restore_median_s == (pytest.approx(restore) if restore is not None else None)


def test_untrusted_records_are_counted_and_named() -> None:
    """Records whose signature does not verify are skipped, each named with why; an edited one too."""
    edited = released("r2", 3, 4)
    edited["commit_at"] = at(400)  # someone lengthened the lead time by hand
    forged = rec(key=b"other", release_id="forged", outcome="released", switched_at=at(2))
    report = compute([released("r1", 5, 6), edited, forged], KEY, "production", 1, NOW)
    assert [d.release_id for d in report.deployments] == ["r1"]
    assert len(report.untrusted) == 2
    assert (
        report.untrusted[0].startswith("r2 (released") and "does not match its content" in report.untrusted[0]
    )
    assert report.untrusted[1].startswith("forged (released")
    assert "2 untrusted skipped" in report_lines(report)[-1]


def test_the_window_excludes_its_start_and_includes_now() -> None:
    """A switch exactly ``days`` ago is outside the window; one exactly at ``now`` is inside."""
    report = compute([released("edge", 24), released("now", 0)], KEY, "production", 1, NOW)
    assert [d.release_id for d in report.deployments] == ["now"]


def test_a_rollback_before_the_release_switched_does_not_undo_it() -> None:
    """A rollback that restored traffic before a release's switch cannot have undone that switch."""
    report = compute([rollback("rb1", 6, "r1"), released("r1", 5)], KEY, "production", 1, NOW)
    assert report.change_failure_rate == 0.0
    assert report.unmatched_rollbacks == ("rb1 (undid r1)",)


def test_a_rerelease_after_a_rollback_is_a_deployment_of_its_own() -> None:
    """The same release switched, undone by hand, switched again: two deployments, the first failed."""
    records = [released("r1", 10, 11), rollback("rb1", 9, "r1"), released("r1", 8, 11)]
    report = compute(records, KEY, "production", 1, NOW)
    assert [(d.release_id, d.failed) for d in report.deployments] == [("r1", True), ("r1", False)]
    assert report.change_failure_rate == 0.5 and report.time_to_restore_median_s == pytest.approx(H)


def test_no_data_is_printed_as_no_data_and_kept_none_in_json() -> None:
    """Without records every figure is None in the JSON and "no data" in the lines, never 0."""
    report = compute([], KEY, "production", 7, NOW)
    doc = report_dict(report)
    assert set(doc["figures"].values()) == {None}
    text = "\n".join(report_lines(report))
    assert "deployment frequency: no data" in text and "change failure rate: no data" in text
    assert "median no data, p90 no data" in text


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [([], 0.9, None), ([7.0], 0.9, 7.0), ([1.0, 2.0], 0.9, 2.0), ([3.0, 1.0, 2.0], 0.5, 2.0),
     ([float(i) for i in range(1, 11)], 0.9, 9.0), ([float(i) for i in range(1, 12)], 0.9, 10.0)],
)  # fmt: skip
def test_nearest_rank(values: list[float], q: float, expected: float | None) -> None:
    """The q quantile is the value at rank ceil(q n) of the sorted values."""
    assert nearest_rank(values, q) == expected


@pytest.mark.parametrize("days", [0, -1, 367, "7", 1.5, True, None])
def test_bad_days_are_refused_naming_the_option(days: Any) -> None:
    """--days must be a whole number of days from 1 to 366."""
    with pytest.raises(InputInvalid, match="--days"):
        check_days(days)


def test_now_without_a_time_zone_is_refused() -> None:
    """The window's end must be an aware time."""
    with pytest.raises(InputInvalid, match="time zone"):
        compute([], KEY, "production", 1, datetime(2026, 12, 1))


def test_releases_left_out_of_the_lead_time_are_counted_by_reason() -> None:
    """The report says how many deployments have no lead time and why, in JSON and in the lines."""
    records = [
        released("vouched", 6, 7),
        released("typed1", 5, 9, "typed"),
        released("typed2", 4, 9, "typed, record s1"),
        released("old", 3, 9, "request"),
        released("none", 2),
    ]
    report = compute(records, KEY, "production", 1, NOW)
    assert report.lead_times_s == (H,)
    doc = report_dict(report)
    assert doc["lead_time_left_out"] == {
        "commit time typed, not vouched for by the GitHub receiver": 2,
        "commit time recorded before the receiver vouched for commit times": 1,
        "no commit time (started without one, or GitHub sent no head commit)": 1,
    }
    by_id = {r["release_id"]: r for r in doc["releases"]}
    assert by_id["typed1"]["commit_at_from"] == "typed" and by_id["typed1"]["lead_time_s"] is None
    assert by_id["vouched"]["lead_time_left_out"] is None
    text = "\n".join(report_lines(report))
    assert "(1 of 5 deployment(s) with a commit time the receiver vouched for)" in text
    assert "left out of the lead time: 2 deployment(s): commit time typed" in text
    assert "typed1 released, no lead time: commit time typed" in text
