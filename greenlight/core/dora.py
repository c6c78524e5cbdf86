"""DORA deployment metrics from release records: pure computation, no I/O.

The input is an environment's release records (ConfigMap ``greenlight-releases``, see
:mod:`greenlight.tasks.records`) and the key that signs them; the output is a
:class:`DoraReport` over a window of ``days`` days ending at ``now``. Only records whose
signature verifies are used; the others are counted and named (``untrusted``).

Definitions (each figure is None, "no data", when nothing measures it; never a 0 passed off as a
measurement):

- **Deployment**: one switch of production traffic to a release: a record with outcome
  ``released`` or ``rolled-back`` (a rolled-back release did reach the live Services). Its time is
  ``switched_at`` (when the last app's selector moved); records written before that field existed
  use ``at`` (when they were recorded, after the bake). A deployment is in the window when
  ``now - days < time <= now``.
- **Deployment frequency**: deployments in the window / ``days`` (per day), with the count.
  None when the environment has no trusted record at all (nothing shows whether anything was
  released); 0 when it has records but none in the window.
- **Lead time for changes**: ``switched_at - commit_at`` over the window's deployments that have
  both and whose commit time the GitHub receiver vouched for (``commit_at_from`` ``receiver``, or
  for a promotion ``receiver, record <id>``: taken from the required environment's record of the
  same digests, see :mod:`greenlight.core.commit_proof`); the median, and the 90th percentile by
  nearest rank (the value at rank ceil(0.9 n) of the n sorted lead times). A typed commit time,
  and one recorded before the receiver vouched for commit times, is left out and counted by
  reason (``lead_time_left_out``).
- **Change failure rate**: failed deployments / deployments in the window. A deployment failed
  when it was rolled back after a breach in its bake (its ``rolled-back`` record), or when a
  manual rollback (``rollback`` record) undid it: the rollback's ``undid`` names its release id
  and the deployment is that release's latest switch before the rollback restored traffic. A
  deployment rolled back both ways counts once. None without deployments.
- **Time to restore**: for each failed deployment, ``restored - failure start``, where the failure
  starts at the deployment's switch (the failing change serves users from then on: for an
  automatic rollback the breach was detected later, and the switch is the earliest moment users
  could meet the failure, so the figure never understates the exposure) and ``restored`` is when
  traffic went back (the earliest restore when rolled back both ways). The median; None without
  a failed deployment that has both times.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.core.commit_proof import left_out_reason
from greenlight.core.release import verify_record
from greenlight.errors import InputInvalid

MAX_DAYS = 366
DEPLOYED = ("released", "rolled-back")
MANUAL = "rollback"

#: metric name (under ``<custom prefix>/dora/``) -> the DoraReport figure it publishes
METRICS = {
    "deployment_frequency": "deployment_frequency",
    "deployments": "deployments",
    "lead_time_median_seconds": "lead_time_median_s",
    "lead_time_p90_seconds": "lead_time_p90_s",
    "change_failure_rate": "change_failure_rate",
    "time_to_restore_median_seconds": "time_to_restore_median_s",
}


@dataclass(frozen=True)
class Deployment:
    """One switch of traffic to a release, as the window counts it.

    ``time_from`` says which field gave ``switched_at`` (``switched_at``, or ``at`` for records
    written before switched_at existed); ``failed_by`` why it counts as failed (None: it did
    not); ``restored_at`` when traffic went back after it failed."""

    release_id: str
    outcome: str
    switched_at: datetime
    time_from: str
    commit_at: datetime | None = None
    failed_by: tuple[str, ...] = ()
    restored_at: datetime | None = None
    commit_at_from: str | None = None

    @property
    def lead_time_left_out(self) -> str | None:
        """Why this deployment has no lead time (None: it has one)."""
        if self.time_from != "switched_at":
            return "no switched_at (recorded before it existed, or resumed after a crash)"
        return left_out_reason(self.commit_at, self.commit_at_from)

    @property
    def failed(self) -> bool:
        return bool(self.failed_by)

    @property
    def lead_time_s(self) -> float | None:
        if self.commit_at is None or self.lead_time_left_out is not None:
            return None
        return (self.switched_at - self.commit_at).total_seconds()

    @property
    def restore_s(self) -> float | None:
        if not self.failed or self.restored_at is None:
            return None
        return (self.restored_at - self.switched_at).total_seconds()


@dataclass(frozen=True)
class DoraReport:
    """The four figures over ``(start, end]`` for ``environment``, with what they were computed from."""

    environment: str
    days: int
    start: datetime
    end: datetime
    deployments: tuple[Deployment, ...]
    deployment_frequency: float | None
    lead_time_median_s: float | None
    lead_time_p90_s: float | None
    change_failure_rate: float | None
    time_to_restore_median_s: float | None
    trusted_records: int
    untrusted: tuple[str, ...] = ()  # "<release id> (<outcome>, at <at>): why"
    unreadable: tuple[str, ...] = ()  # trusted records with a time that does not parse
    unmatched_rollbacks: tuple[str, ...] = ()  # manual rollbacks of no deployment in the window

    @property
    def deployment_count(self) -> int:
        return len(self.deployments)

    @property
    def deployments_figure(self) -> int | None:
        """The count, None when there is no trusted record at all (as the frequency)."""
        return None if self.deployment_frequency is None else self.deployment_count

    @property
    def failed(self) -> tuple[Deployment, ...]:
        return tuple(d for d in self.deployments if d.failed)

    @property
    def lead_times_s(self) -> tuple[float, ...]:
        return tuple(v for d in self.deployments if (v := d.lead_time_s) is not None)

    @property
    def lead_time_left_out(self) -> dict[str, int]:
        """Why deployments of the window have no lead time: reason -> how many."""
        out: dict[str, int] = {}
        for d in self.deployments:
            if (why := d.lead_time_left_out) is not None:
                out[why] = out.get(why, 0) + 1
        return out

    @property
    def restore_times_s(self) -> tuple[float, ...]:
        return tuple(v for d in self.failed if (v := d.restore_s) is not None)

    def figures(self) -> dict[str, float | None]:
        """metric name -> value (None: no data), as published (see :data:`METRICS`)."""
        values: dict[str, float | None] = {
            "deployment_frequency": self.deployment_frequency,
            "deployments": None if self.deployments_figure is None else float(self.deployments_figure),
            "lead_time_median_s": self.lead_time_median_s,
            "lead_time_p90_s": self.lead_time_p90_s,
            "change_failure_rate": self.change_failure_rate,
            "time_to_restore_median_s": self.time_to_restore_median_s,
        }
        return {metric: values[attr] for metric, attr in METRICS.items()}


@dataclass
class _Parsed:
    deployments: list[Deployment] = field(default_factory=list)
    rollbacks: list[tuple[str, datetime, tuple[str, ...]]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def check_days(days: Any) -> int:
    """``days`` as a whole number of days in 1..MAX_DAYS; InputInvalid naming it otherwise."""
    if isinstance(days, bool) or not isinstance(days, int):
        raise InputInvalid(f"--days must be a whole number of days, not {days!r}")
    if not 1 <= days <= MAX_DAYS:
        raise InputInvalid(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    return days


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time with its offset as an aware UTC datetime; None when absent or not one."""
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at.astimezone(UTC) if at.tzinfo is not None else None


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0 < q <= 1) by nearest rank: the value at rank ceil(q * n) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def compute(
    records: Iterable[Mapping[str, Any]], key: bytes, environment: str, days: int, now: datetime
) -> DoraReport:
    """The DORA figures of ``environment`` over the ``days`` days ending at ``now`` (aware)."""
    check_days(days)
    if now.tzinfo is None:
        raise InputInvalid("now has no time zone; pass an aware datetime (UTC)")
    end = now.astimezone(UTC)
    start = end - timedelta(days=days)
    trusted, untrusted = [], []
    for r in records:
        if r.get("environment") not in (None, environment):
            continue
        why = verify_record(r, key)
        if why is None:
            trusted.append(r)
        else:
            untrusted.append(
                f"{r.get('release_id', '?')} ({r.get('outcome', '?')}, at {r.get('at', '?')}): {why}"
            )
    parsed = _parse(trusted)
    every = sorted(parsed.deployments, key=lambda d: d.switched_at)
    marked = _mark_rollbacks(every, parsed.rollbacks)
    in_window = tuple(d for d in marked if start < d.switched_at <= end)
    matched = {name for d in in_window for name in d.failed_by}
    unmatched = tuple(
        f"{rkey} (undid {', '.join(undid) or 'nothing recorded'})"
        for rkey, at, undid in parsed.rollbacks
        if start < at <= end and f"undone by {rkey}" not in matched
    )
    lead = [v for d in in_window if (v := d.lead_time_s) is not None]
    restore = [v for d in in_window if (v := d.restore_s) is not None]
    failed = sum(1 for d in in_window if d.failed)
    return DoraReport(
        environment=environment,
        days=days,
        start=start,
        end=end,
        deployments=in_window,
        deployment_frequency=(len(in_window) / days) if trusted else None,
        lead_time_median_s=statistics.median(lead) if lead else None,
        lead_time_p90_s=nearest_rank(lead, 0.9),
        change_failure_rate=(failed / len(in_window)) if in_window else None,
        time_to_restore_median_s=statistics.median(restore) if restore else None,
        trusted_records=len(trusted),
        untrusted=tuple(untrusted),
        unreadable=tuple(parsed.unreadable),
        unmatched_rollbacks=unmatched,
    )


def _parse(records: Iterable[Mapping[str, Any]]) -> _Parsed:
    out = _Parsed()
    for r in records:
        outcome, rid = str(r.get("outcome", "")), str(r.get("release_id", "?"))
        if outcome in DEPLOYED:
            switched, time_from = parse_time(r.get("switched_at")), "switched_at"
            if switched is None:
                switched, time_from = parse_time(r.get("at")), "at"
            if switched is None:
                out.unreadable.append(f"{rid} ({outcome}): no readable switched_at or at")
                continue
            restored = parse_time(r.get("restored_at")) if outcome == "rolled-back" else None
            failed_by = ("rolled back after a breach",) if outcome == "rolled-back" else ()
            source = r.get("commit_at_from")
            out.deployments.append(
                Deployment(
                    rid, outcome, switched, time_from, parse_time(r.get("commit_at")), failed_by, restored,
                    source if isinstance(source, str) else None,
                )
            )  # fmt: skip
        elif outcome == MANUAL:
            restored = parse_time(r.get("restored_at")) or parse_time(r.get("at"))
            if restored is None:
                out.unreadable.append(f"{rid} (rollback): no readable restored_at or at")
                continue
            undid = r.get("undid")
            names = tuple(str(u) for u in undid) if isinstance(undid, list) else ()
            out.rollbacks.append((rid, restored, names))
    return out


def _mark_rollbacks(
    deployments: list[Deployment], rollbacks: list[tuple[str, datetime, tuple[str, ...]]]
) -> list[Deployment]:
    """Each manual rollback marks, for each release it undid, that release's latest deployment
    switched before the rollback restored traffic; restored_at is the earliest restore."""
    marked = list(deployments)
    for rkey, restored, undid in sorted(rollbacks, key=lambda x: x[1]):
        for rid in undid:
            index = next(
                (
                    i
                    for i in range(len(marked) - 1, -1, -1)
                    if marked[i].release_id == rid and marked[i].switched_at < restored
                ),
                None,
            )
            if index is None:
                continue
            d = marked[index]
            earliest = restored if d.restored_at is None else min(d.restored_at, restored)
            marked[index] = Deployment(
                d.release_id, d.outcome, d.switched_at, d.time_from, d.commit_at,
                (*d.failed_by, f"undone by {rkey}"), earliest, d.commit_at_from,
            )  # fmt: skip
    return marked


def report_dict(report: DoraReport) -> dict[str, Any]:
    """The report as JSON-ready data (what ``greenlight metrics --json`` prints)."""

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {
        "environment": report.environment,
        "window_days": report.days,
        "window": {"start": iso(report.start), "end": iso(report.end)},
        "figures": report.figures(),
        "deployments": report.deployment_count,
        "failed": len(report.failed),
        "lead_times_s": list(report.lead_times_s),
        "lead_time_left_out": report.lead_time_left_out,
        "restore_times_s": list(report.restore_times_s),
        "releases": [
            {
                "release_id": d.release_id,
                "outcome": d.outcome,
                "switched_at": iso(d.switched_at),
                "time_from": d.time_from,
                "commit_at": iso(d.commit_at),
                "commit_at_from": d.commit_at_from,
                "lead_time_s": d.lead_time_s,
                "lead_time_left_out": d.lead_time_left_out,
                "failed_by": list(d.failed_by),
                "restored_at": iso(d.restored_at),
                "restore_s": d.restore_s,
            }
            for d in report.deployments
        ],
        "trusted_records": report.trusted_records,
        "untrusted_skipped": list(report.untrusted),
        "unreadable_skipped": list(report.unreadable),
        "unmatched_rollbacks": list(report.unmatched_rollbacks),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "no data"
    if abs(seconds) < 120:
        return f"{seconds:.1f} s"
    if abs(seconds) < 7200:
        return f"{seconds / 60:.1f} min ({seconds:.0f} s)"
    return f"{seconds / 3600:.1f} h ({seconds:.0f} s)"


def report_lines(report: DoraReport) -> list[str]:
    """The report as lines for a person: each figure with the values behind it."""
    n, failed = report.deployment_count, len(report.failed)
    freq = report.deployment_frequency
    lines = [
        f"DORA metrics of {report.environment}: {report.days} day(s), "
        f"{report.start:%Y-%m-%d %H:%M:%S} to {report.end:%Y-%m-%d %H:%M:%S} UTC",
        "deployment frequency: "
        + ("no data (no trusted release record)" if freq is None else f"{freq:.3g}/day ({n} deployment(s) in {report.days} day(s))"),
        f"lead time: median {_duration(report.lead_time_median_s)}, p90 {_duration(report.lead_time_p90_s)} "
        f"({len(report.lead_times_s)} of {n} deployment(s) with a commit time the receiver vouched for)",
        "change failure rate: "
        + ("no data (no deployment)" if report.change_failure_rate is None else f"{report.change_failure_rate:.3g} ({failed} of {n} failed)"),
        f"time to restore: median {_duration(report.time_to_restore_median_s)} "
        f"({len(report.restore_times_s)} of {failed} failed deployment(s) with a restore time)",
    ]  # fmt: skip
    for d in report.deployments:
        lead = f", lead {_duration(d.lead_time_s)}" if d.lead_time_s is not None else ""
        if d.lead_time_left_out and d.commit_at is not None:
            lead = f", no lead time: {d.lead_time_left_out}"
        fail = (
            f", FAILED: {'; '.join(d.failed_by)}, restored after {_duration(d.restore_s)}" if d.failed else ""
        )
        src = "" if d.time_from == "switched_at" else " (time: record's at)"
        lines.append(f"  {d.switched_at:%Y-%m-%d %H:%M:%S} {d.release_id} {d.outcome}{src}{lead}{fail}")
    for why, count in sorted(report.lead_time_left_out.items()):
        lines.append(f"  left out of the lead time: {count} deployment(s): {why}")
    for text in report.untrusted:
        lines.append(f"  skipped, untrusted: {text}")
    for text in report.unreadable:
        lines.append(f"  skipped, unreadable: {text}")
    for text in report.unmatched_rollbacks:
        lines.append(f"  rollback of no deployment in the window: {text}")
    lines.append(f"{report.trusted_records} trusted record(s), {len(report.untrusted)} untrusted skipped")
    return lines
