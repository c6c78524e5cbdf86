"""The backups benchmark's pure parts: repeats, ratios, the split of the extra time, dump sizing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.backups import (
    DOWNLOAD_STEP,
    ENGINE,
    RESTORE_STEP,
    SCRATCH_STEP,
    PeakRss,
    engine_split,
    extra_text,
    group_steps,
    median_steps,
    own_peak_rss_mb,
    ratios,
    repeats_for,
)
from bench.dumps import (
    MB_PER_UNIT,
    PRODUCTS,
    cache_key,
    expected_rows,
    insert_statements,
    tool_env,
    units_for,
)


@pytest.mark.parametrize(
    ("size", "repeats", "expected"), [(10, 3, 3), (50, 5, 5), (200, 3, 1), (200, 6, 2), (1000, 1, 1)]
)
def test_large_dumps_get_a_third_of_the_repeats_but_at_least_one(
    size: int, repeats: int, expected: int
) -> None:
    """Up to 50 MB every repeat runs; above, a third of them (never none)."""
    assert repeats_for(size, repeats) == expected


def test_zero_repeats_is_refused() -> None:
    """A figure without a sample is an error, not an empty result."""
    with pytest.raises(ValueError, match="at least 1"):
        repeats_for(10, 0)


def test_ratio_is_median_over_median_and_per_pair() -> None:
    """The headline ratio divides the medians; each interleaved pair keeps its own ratio."""
    got = ratios([4.0, 2.0, 3.0], [1.0, 2.0, 1.5])
    assert got == {"median": 2.0, "pairs": [4.0, 1.0, 2.0]}


def test_steps_are_grouped_and_the_rest_is_engine_time() -> None:
    """Task runs fold into named steps; whatever the tasks do not cover is the engine's."""
    tasks = {
        "restore-dump": 5.0,
        "download-dump": 1.0,
        "create-scratch-database": 0.25,
        "drop-scratch-database": 0.5,
        "find-dumps": 0.1,
        "stat-replica": 0.1,
        "something-new": 0.05,
    }
    got = group_steps(tasks, flow_seconds=8.0)
    assert got[RESTORE_STEP] == 5.0
    assert got[SCRATCH_STEP] == 0.75
    assert got["list bucket + replica stat"] == 0.2
    assert got["something-new"] == 0.05
    assert got[ENGINE] == 8.0 - 7.0


def test_median_steps_counts_a_missing_step_as_zero() -> None:
    """A step seen in one repeat only has a median over every repeat."""
    assert median_steps([{"a": 1.0, "b": 3.0}, {"a": 3.0}, {"a": 2.0}]) == {"a": 2.0, "b": 0.0}


def test_engine_split_accounts_for_the_whole_flow() -> None:
    """Before the first task, between tasks and after the last add up with the tasks to the wall time."""
    runs = [("b", 102.0, 103.0), ("a", 100.5, 101.5)]
    got = engine_split(runs, wall_start=100.0, wall_end=104.0)
    assert got == {"before_first_task": 0.5, "between_tasks": 0.5, "after_last_task": 1.0}
    assert sum(got.values()) + 2.0 == pytest.approx(4.0)


def test_extra_text_names_every_step_with_the_download_rate() -> None:
    """The explanation names the flow's own restore, the baseline, and each other step's seconds."""
    entry = {
        "pg_restore": {"median_s": 10.0, "drop_after_median_s": 0.4},
        "dump": {"bytes": 200_000_000},
        "verification": {
            "median_s": 13.0,
            "restore_inside_median_s": 9.9,
            "steps_median_s": {RESTORE_STEP: 10.0, DOWNLOAD_STEP: 2.0, SCRATCH_STEP: 1.0},
            "engine_median_s": {"before_first_task": 0.1, "between_tasks": 0.2, "after_last_task": 0.3},
        },
    }
    text = extra_text(200, entry)
    assert "own pg_restore 9.90s (plain pg_restore: 10.00s)" in text
    assert f"{DOWNLOAD_STEP} 2.00s (100 MB/s)" in text
    assert "version checks before pg_restore 0.10s" in text
    assert "after plain pg_restore: 0.40s" in text


@pytest.mark.parametrize(
    ("size", "units"), [(1, 1), (10, round(10 / MB_PER_UNIT)), (200, round(200 / MB_PER_UNIT))]
)
def test_units_grow_with_the_target_size(size: int, units: int) -> None:
    """The generator's units are proportional to the target size, at least one."""
    assert units_for(size) == units


def test_rows_follow_the_units() -> None:
    """Every table but products grows with the units; products stay a fixed catalogue."""
    rows = expected_rows(2)
    assert rows == {
        "customers": 2000,
        "products": PRODUCTS,
        "orders": 10_000,
        "order_items": 30_000,
        "events": 20_000,
    }


def test_insert_statements_fill_every_table_and_escape_nothing_but_now() -> None:
    """One INSERT per table; the only placeholder is the generation time (no stray % for psycopg)."""
    statements = insert_statements(3)
    assert set(statements) == set(expected_rows(3))
    for sql in statements.values():
        assert sql.replace("%(now)s", "").count("%") == 0


def test_cache_key_changes_with_size_and_pg_version() -> None:
    """A different size or pg_dump major version is a different cache entry."""
    keys = {cache_key(10, 18), cache_key(200, 18), cache_key(10, 17)}
    assert len(keys) == 3


def test_tool_env_moves_the_password_out_of_the_command_line() -> None:
    """The URL handed to pg_dump/pg_restore has no password; PGPASSWORD carries it."""
    url, env = tool_env("postgresql://greenlight:s%40cret@127.0.0.1:5432/postgres")
    assert url == "postgresql://greenlight@127.0.0.1:5432/postgres"
    assert env["PGPASSWORD"] == "s@cret"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_child_rss_is_its_own_not_the_parents() -> None:
    """A small program forked from this (larger) process reports its own peak, not ours."""
    ballast = bytearray(200 << 20)
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    assert own_peak_rss_mb() > 200
    proc = subprocess.Popen(["sleep", "0.3"])
    with PeakRss(proc.pid, include_root=True) as peak:
        proc.wait()
    assert 0 < peak.peak_of("sleep") < 20
    del ballast


def test_the_child_entry_point_is_reachable_as_a_module() -> None:
    """``python -m bench.backups --help`` works from the repository root (how the child is started)."""
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.backups", "--help"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--sizes" in done.stdout
