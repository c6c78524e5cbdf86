"""DNS failover and the drill's DNS record, decided over snapshots of records. Pure.

A :class:`Record` is what the provider's API says of one DNS record. :func:`plan_failover` decides
what a failover (or failback) of the production record does: change it to the target, nothing
(it already points there), or refuse (it points at neither the primary nor the DR target, unless
forced; it is missing; it has another type). :func:`readback_problem` says whether the record read
back after the change is what was planned. The drill's record names come from a pattern with
``{drill_id}``; :func:`is_drill_record` finds the ones an earlier, crashed drill left behind.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

RECORD_TYPES = ("A", "CNAME")
#: Cloudflare's "automatic" TTL
TTL_AUTO = 1
DRILL_ID_FIELD = "{drill_id}"
#: what the drill writes into its record's comment, so a sweep never takes someone else's record
DRILL_COMMENT = "greenlight dr-drill"
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")

Direction = Literal["failover", "failback"]
Action = Literal["change", "noop", "refuse"]


@dataclass(frozen=True)
class Record:
    """One DNS record as the provider's API returns it."""

    id: str
    name: str
    type: str
    content: str
    ttl: int
    comment: str = ""


@dataclass(frozen=True)
class FailoverPlan:
    """What a failover or failback of one record does, and why."""

    direction: Direction
    record: str
    type: str
    action: Action
    current: str | None  # the record's content now (None: no such record)
    new: str  # the content it gets (the target)
    ttl: int
    current_ttl: int | None
    reason: str
    forced: bool = False

    def lines(self) -> list[str]:
        """The plan as ``--dry-run`` prints it."""
        return [
            f"{self.direction} of {self.record} ({self.type}): {self.action}",
            f"  current content: {self.current if self.current is not None else '(no record)'}"
            + (f" (TTL {self.current_ttl})" if self.current_ttl is not None else ""),
            f"  new content:     {self.new} (TTL {self.ttl})",
            f"  reason: {self.reason}",
        ]


def normalise(name: str) -> str:
    """A DNS name compared as DNS compares it: lower case, no trailing dot."""
    return name.strip().rstrip(".").lower()


def name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid DNS name (None: it is one)."""
    n = normalise(name)
    if not n:
        return "is empty"
    if len(n) > 253:
        return f"is {len(n)} characters long (at most 253)"
    bad = [label for label in n.split(".") if not _LABEL.match(label)]
    if bad:
        return f"has an invalid label {bad[0]!r} (letters, digits, '-', '_'; at most 63 characters)"
    return None


def in_zone(name: str, zone: str) -> bool:
    """Whether ``name`` is ``zone`` itself or a name under it."""
    n, z = normalise(name), normalise(zone)
    return n == z or n.endswith("." + z)


def target_problem(record_type: str, content: str) -> str | None:
    """Why ``content`` cannot be the content of a ``record_type`` record (None: it can)."""
    if record_type == "A":
        try:
            ipaddress.IPv4Address(content.strip())
        except ValueError:
            return f"{content!r} is not an IPv4 address (an A record's content)"
        return None
    if record_type == "CNAME":
        problem = name_problem(content)
        return (
            None if problem is None else f"{content!r} is not a host name (a CNAME's content): it {problem}"
        )
    return f"record type {record_type!r} is not one of {', '.join(RECORD_TYPES)}"


def ttl_problem(ttl: int) -> str | None:
    """Why ``ttl`` is not a TTL Cloudflare takes: 1 (automatic) or 30..86400 seconds."""
    if ttl == TTL_AUTO or 30 <= ttl <= 86400:
        return None
    return f"TTL {ttl} is neither 1 (automatic) nor between 30 and 86400 seconds"


def drill_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` cannot name drill records: it must hold ``{drill_id}`` once and make a valid name."""
    if pattern.count(DRILL_ID_FIELD) != 1:
        return f"must contain {DRILL_ID_FIELD} exactly once"
    problem = name_problem(pattern.replace(DRILL_ID_FIELD, "x"))
    return None if problem is None else f"does not make a valid name: it {problem}"


def drill_label(drill_id: str) -> str:
    """``drill_id`` made a DNS label's part: lower case letters, digits and '-'."""
    text = "".join(c if c.isalnum() and c.isascii() else "-" for c in drill_id.lower())
    return re.sub("-+", "-", text).strip("-") or "drill"


def drill_record_name(pattern: str, drill_id: str, zone: str) -> str:
    """The drill's record: ``pattern`` (relative to ``zone``) with the drill's id, each label at most 63."""
    relative = pattern.replace(DRILL_ID_FIELD, drill_label(drill_id))
    labels = [label[:63].strip("-") for label in relative.split(".")]
    return ".".join([*labels, normalise(zone)])


def is_drill_record(name: str, pattern: str, zone: str) -> bool:
    """Whether ``name`` is a record ``pattern`` names in ``zone`` (any drill's)."""
    before, _, after = pattern.partition(DRILL_ID_FIELD)
    rx = (
        re.escape(before.lower())
        + r"[a-z0-9-]+"
        + re.escape(after.lower())
        + r"\."
        + re.escape(normalise(zone))
    )
    return re.fullmatch(rx, normalise(name)) is not None


def _same(record_type: str, a: str, b: str) -> bool:
    if record_type == "CNAME":
        return normalise(a) == normalise(b)
    return a.strip() == b.strip()


def plan_failover(
    direction: Direction,
    record_name: str,
    record_type: str,
    current: Record | None,
    primary: str,
    dr: str,
    ttl: int,
    force: bool = False,
) -> FailoverPlan:
    """Failover points ``record_name`` at ``dr``, failback at ``primary``.

    - no record, or one of another type: refuse (force does not help: nothing to change safely);
    - it already holds the target: noop;
    - it holds the other target: change;
    - it holds anything else: refuse, naming it, unless ``force``.
    """
    target, other = (dr, primary) if direction == "failover" else (primary, dr)
    where = "DR" if direction == "failover" else "primary"

    def plan(action: Action, reason: str, forced: bool = False) -> FailoverPlan:
        return FailoverPlan(
            direction, record_name, record_type, action,
            current.content if current else None, target, ttl,
            current.ttl if current else None, reason, forced,
        )  # fmt: skip

    if current is None:
        return plan("refuse", f"there is no {record_type} record {record_name}: nothing to {direction}")
    if current.type != record_type:
        return plan(
            "refuse",
            f"{record_name} is a {current.type} record, the profile says {record_type}: not changed",
        )
    if _same(record_type, current.content, target):
        return plan("noop", f"{record_name} already points at the {where} target {target}")
    if _same(record_type, current.content, other):
        return plan(
            "change",
            f"{record_name} points at {current.content}: it will point at the {where} target {target}",
        )
    if force:
        return plan(
            "change",
            f"{record_name} points at {current.content}, neither the primary ({primary}) nor the DR "
            f"target ({dr}); --force: it will point at {target}",
            forced=True,
        )
    return plan(
        "refuse",
        f"{record_name} points at {current.content}, neither the primary ({primary}) nor the DR target "
        f"({dr}): someone changed it by hand; not changed (--force points it at {target} anyway)",
    )


def readback_problem(plan: FailoverPlan, read: Record | None) -> str | None:
    """Why the record read back after the change is not what ``plan`` made (None: it is)."""
    if read is None:
        return f"{plan.record} is gone after the change"
    if not _same(plan.type, read.content, plan.new):
        return f"{plan.record} reads back {read.content}, not {plan.new}"
    if read.ttl != plan.ttl:
        return f"{plan.record} reads back TTL {read.ttl}, not {plan.ttl}"
    return None


def drill_record_problem(name: str, record_type: str, content: str, read: list[Record]) -> str | None:
    """Why the drill's record, read back through the API, does not resolve to ``content`` (None: it does)."""
    mine = [r for r in read if normalise(r.name) == normalise(name) and r.type == record_type]
    if not mine:
        return f"{name} ({record_type}) is not in the zone after it was created"
    wrong = [r.content for r in mine if not _same(record_type, r.content, content)]
    if wrong:
        return f"{name} resolves to {', '.join(wrong)}, not {content}"
    return None
