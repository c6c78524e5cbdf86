"""The one judgement of a restored dump's probes (core.backups.judge_probes) and the one check of a
profile's backups section (tasks.backups.backups_of), which the verification and the drill share."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from greenlight.core.backups import DumpObject, StoredObject, TableProbe, judge_probes
from greenlight.errors import InputInvalid
from greenlight.settings import load_profile
from greenlight.tasks.backups import backups_of
from greenlight_lab.state import LAB_ENVIRONMENTS

DUMPED = datetime(2026, 12, 1, 3, 0, tzinfo=UTC)
DUMP = DumpObject(
    "db/app-20261201T0300Z.dump", DUMPED, "name", (StoredObject("db/app-20261201T0300Z.dump", 10),)
)
MIN_ROWS = {"orders": 10, "users": 1}
EXPECT = {"no_orphans": True, "no_negatives": True}
OLD = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
NEW = datetime(2026, 12, 1, 2, 55, tzinfo=UTC)

CASES = [
    # (tables, sql results, failed check names, newest row, dump lag in seconds)
    (
        [TableProbe("orders", True, 12, NEW, "created_at"), TableProbe("users", True, 3, OLD, "created_at")],
        [("no_orphans", True, None), ("no_negatives", True, None)],
        [],
        NEW,
        300.0,
    ),
    (
        [TableProbe("orders", True, 9, NEW, "created_at"), TableProbe("users", False)],
        [("no_orphans", True, None), ("no_negatives", True, None)],
        ["probe orders", "probe users"],
        NEW,
        300.0,
    ),
    (
        [TableProbe("orders", True, 12), TableProbe("users", True, 3)],
        [("no_orphans", False, None), ("no_negatives", None, "division by zero")],
        ["sql no_orphans", "sql no_negatives"],
        None,
        None,
    ),
    (
        [
            TableProbe("orders", True, error="permission denied"),
            TableProbe("users", True, 1, OLD, "created_at"),
        ],
        [],
        ["probe orders"],
        OLD,
        3600.0,
    ),
]


@pytest.mark.parametrize(("tables", "sql", "failed", "newest", "lag"), CASES)
def test_judge_probes_names_each_failed_probe_and_dates_the_newest_row(
    tables: list[TableProbe],
    sql: list[tuple[str, object, str | None]],
    failed: list[str],
    newest: datetime | None,
    lag: float | None,
) -> None:
    """One check per table then per SQL probe, in order; the failures name the dump; the newest row
    among the tables and the dump's own lag (dump time minus that row) come with them."""
    found = judge_probes(DUMP, tables, MIN_ROWS, sql, EXPECT)
    assert [c.name for c in found.checks] == [f"probe {t.table}" for t in tables] + [
        f"sql {s[0]}" for s in sql
    ]
    assert [c.name for c in found.checks if not c.ok] == failed
    assert len(found.failures) == len(failed)
    assert all(DUMP.name in reason for reason in found.failures)
    assert found.newest_row == newest
    assert found.dump_lag_s == lag
    assert found.rows == sum(t.rows for t in tables)


def test_backups_of_names_the_environment_and_what_needs_the_section() -> None:
    """A profile without a backups section is refused with the environment and the caller's purpose named."""
    staging = load_profile("staging", LAB_ENVIRONMENTS)
    bare = staging.model_copy(update={"backups": None})
    with pytest.raises(
        InputInvalid, match=r"environment 'staging' has no 'backups' section.*no dump to verify"
    ):
        backups_of(bare, "there is no dump to verify")
    production = load_profile("production", LAB_ENVIRONMENTS)
    assert production.backups is not None
    assert backups_of(production, "unused") is production.backups
