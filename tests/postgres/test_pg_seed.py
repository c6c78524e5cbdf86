"""The app database's seed, its week of nightly dumps, their cache and their upload to GCS."""

from __future__ import annotations

import filecmp
import gzip
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from greenlight.clients.postgres import Postgres, detect_dump_format
from greenlight_lab import postgres as labpg
from greenlight_lab.gcs import ensure_buckets, start_fake_gcs, stop_fake_gcs
from greenlight_lab.seed import (
    _cache_keys,
    dump_times,
    last_cut,
    make_nightly_dumps,
    seed_app_database,
    upload_dumps,
)

from .conftest import AppDb, Nightly
from .pg_support import APP_DB, NOW, TIMINGS, free_port

TIMESTAMP_COLUMNS = {"created_at", "updated_at", "published_at"}


@dataclass
class DumpContents:
    """What a plain dump's COPY blocks hold: rows per table, newest timestamp of any row."""

    rows: dict[str, int] = field(default_factory=dict)
    newest: str = ""


def read_plain_dump(path: Path) -> DumpContents:
    """Stream a gzipped plain dump and summarise its COPY data."""
    contents = DumpContents()
    table, ts_columns, newest = None, [], b""
    with gzip.open(path, "rb") as f:
        for line in f:
            if table is None:
                if line.startswith(b"COPY public."):
                    head, columns = line[len(b"COPY public.") :].decode().split(" (", 1)
                    names = columns.split(")", 1)[0].split(", ")
                    table, ts_columns = head, [i for i, n in enumerate(names) if n in TIMESTAMP_COLUMNS]
                    contents.rows[table] = 0
            elif line == b"\\.\n":
                table = None
            else:
                contents.rows[table] += 1
                values = line.rstrip(b"\n").split(b"\t")
                newest = max([newest, *(values[i] for i in ts_columns if values[i] != b"\\N")])
    contents.newest = newest.decode()
    return contents


def as_of(app: Postgres, cut: datetime) -> dict[str, int]:
    """Rows created before ``cut`` per table in the live app database."""
    return {
        t: int(app.scalar(f"SELECT count(*) FROM {t} WHERE created_at < %s", (cut,)))  # type: ignore[arg-type]
        for t in ("users", "platform_connections", "posts", "scheduled_posts")
    }


def test_seed_makes_a_few_hundred_thousand_rows_quickly(app_db: AppDb) -> None:
    """At scale 1 the seed holds about 20k users, 30k connections, 200k posts, 100k schedules, in seconds."""
    counts = app_db.counts
    assert 20_000 <= counts["users"] < 21_000
    assert 29_000 <= counts["platform_connections"] < 32_000
    assert 200_000 <= counts["posts"] < 210_000
    assert 99_000 <= counts["scheduled_posts"] < 105_000
    assert counts == {t: Postgres(app_db.url).scalar(f"SELECT count(*) FROM {t}") for t in counts}
    assert TIMINGS["seed"] < 15.0, f"seed took {TIMINGS['seed']:.1f}s"


def test_seed_schema_has_keys_foreign_keys_and_indexes(app_db: AppDb) -> None:
    """Every table has a primary key; the four foreign keys and the secondary indexes exist."""
    app = Postgres(app_db.url)
    constraints = app.query(
        "SELECT conrelid::regclass::text, contype, count(*) FROM pg_constraint"
        " WHERE connamespace = 'public'::regnamespace AND contype IN ('p', 'f') GROUP BY 1, 2 ORDER BY 1, 2"
    )
    assert constraints == [
        ("platform_connections", "f", 1),
        ("platform_connections", "p", 1),
        ("posts", "f", 1),
        ("posts", "p", 1),
        ("scheduled_posts", "f", 2),
        ("scheduled_posts", "p", 1),
        ("users", "p", 1),
    ]
    indexes = {r[0] for r in app.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"users_email_key", "posts_user_id_created_at_idx", "scheduled_posts_due_idx"} <= indexes


def test_seed_rows_are_consistent_in_time_and_ownership(app_db: AppDb) -> None:
    """Nothing is newer than now, children are never older than parents, a schedule uses its author's account."""
    app = Postgres(app_db.url)
    checks = {
        "future rows": "SELECT count(*) FROM posts WHERE created_at >= %(now)s OR published_at > %(now)s",
        "post before its author": "SELECT count(*) FROM posts p JOIN users u ON u.id = p.user_id"
        " WHERE p.created_at < u.created_at",
        "schedule before its post": "SELECT count(*) FROM scheduled_posts s JOIN posts p ON p.id = s.post_id"
        " WHERE s.created_at < p.created_at",
        "someone else's account": "SELECT count(*) FROM scheduled_posts s JOIN posts p ON p.id = s.post_id"
        " JOIN platform_connections c ON c.id = s.platform_connection_id WHERE c.user_id <> p.user_id",
        "published in the future": "SELECT count(*) FROM scheduled_posts"
        " WHERE status = 'published' AND scheduled_for > %(now)s",
        "token values": "SELECT count(*) FROM platform_connections WHERE token_ref !~ '^projects/[^/]+/secrets/'",
    }
    assert {name: app.scalar(q, {"now": NOW}) for name, q in checks.items()} == dict.fromkeys(checks, 0)


def test_dump_times_end_at_the_last_0300_utc_before_now() -> None:
    """The newest nightly dump is the last 03:00 UTC at or before now, so it is within a 24 h RPO."""
    cases = [
        (datetime(2026, 11, 26, 9, 30, tzinfo=UTC), datetime(2026, 11, 26, 3, tzinfo=UTC)),
        (datetime(2026, 11, 26, 3, 0, tzinfo=UTC), datetime(2026, 11, 26, 3, tzinfo=UTC)),
        (datetime(2026, 11, 26, 2, 59, tzinfo=UTC), datetime(2026, 11, 25, 3, tzinfo=UTC)),
        (
            datetime(2026, 11, 26, 1, 0, tzinfo=UTC) + timedelta(hours=-5),
            datetime(2026, 11, 25, 3, tzinfo=UTC),
        ),
    ]
    for now, expected in cases:
        assert last_cut(now) == expected, now
        times = dump_times(now, days=7)
        assert times[-1] == expected and len(times) == 7
        assert [b - a for a, b in itertools.pairwise(times)] == [timedelta(days=1)] * 6
        assert timedelta(0) <= now - times[-1] < timedelta(hours=24)


def test_a_week_of_dumps_is_made_quickly_and_named_by_night(nightly: Nightly) -> None:
    """Seven plain-gzip dumps, oldest first, one per night at 03:00 UTC, named sma-db/<date>T0300Z.sql.gz."""
    assert TIMINGS["7 dumps"] < 30.0, f"7 dumps took {TIMINGS['7 dumps']:.1f}s"
    names = [name for _, name, _ in nightly.dumps]
    assert names == [f"sma-db/2026-11-{d}T0300Z.sql.gz" for d in range(20, 27)]
    assert [t for _, _, t in nightly.dumps] == dump_times(NOW, 7)
    for path, name, _ in nightly.dumps:
        assert path.name == Path(name).name and path.is_file()
        assert detect_dump_format(path) == "plain-gzip"
    assert {d.database for d in nightly.dumps} == {APP_DB}


def test_dumps_grow_night_by_night_and_each_holds_the_data_of_its_night(
    nightly: Nightly, app_db: AppDb
) -> None:
    """Each dump holds exactly the rows created before its 03:00, the newest minutes before it; sizes rise."""
    sizes = [path.stat().st_size for path, _, _ in nightly.dumps]
    assert sizes == sorted(sizes) and len(set(sizes)) == 7
    app = Postgres(app_db.url)
    for path, _, dump_time in (
        nightly.dumps[0],
        nightly.dumps[3],
        nightly.dumps[-1],
    ):  # parsing costs ~1 s each
        contents = read_plain_dump(path)
        assert contents.rows == as_of(app, dump_time), path.name
        newest = datetime.fromisoformat(contents.newest)
        assert dump_time - timedelta(minutes=10) < newest < dump_time, path.name


def test_second_run_reuses_cached_dumps(pg: labpg.PgInstance, nightly: Nightly, tmp_path: Path) -> None:
    """With the same cache dir and data, make_nightly_dumps copies the cached files instead of dumping."""
    started = time.monotonic()
    again = make_nightly_dumps(pg, APP_DB, tmp_path / "out", now=NOW, cache_dir=nightly.cache_dir)
    elapsed = time.monotonic() - started
    assert [(n, t) for _, n, t in again] == [(n, t) for _, n, t in nightly.dumps]
    for (a, _, _), (b, _, _) in zip(again, nightly.dumps, strict=True):
        assert filecmp.cmp(a, b, shallow=False)
    assert elapsed < min(3.0, TIMINGS["7 dumps"] / 2), f"cached run took {elapsed:.1f}s"
    databases = Postgres(pg.url()).query("SELECT datname FROM pg_database WHERE datname LIKE 'sma_%'")
    assert databases == []  # the scratch copy used for cutting is gone


@pytest.fixture(scope="module")
def gcs_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """fake-gcs-server (the real binary, memory backend) with two buckets."""
    port = free_port()
    proc = start_fake_gcs(port, f"127.0.0.1:{port}", tmp_path_factory.mktemp("gcs") / "gcs.log")
    endpoint = f"http://127.0.0.1:{port}"
    ensure_buckets(endpoint, "lab", ["backups", "backups-dr"])
    yield endpoint
    stop_fake_gcs(proc)


def test_upload_puts_each_dump_in_both_buckets_with_metadata(nightly: Nightly, gcs_endpoint: str) -> None:
    """Every dump lands under its name in the primary and the replica bucket, with dump_time/format/database."""
    client = storage.Client(
        project="lab", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs_endpoint}
    )
    upload_dumps(nightly.dumps, "backups", "backups-dr", client)
    for bucket in ("backups", "backups-dr"):
        blobs = {b.name: b for b in client.list_blobs(bucket, prefix="sma-db/")}
        assert sorted(blobs) == [name for _, name, _ in nightly.dumps]
        for path, name, dump_time in nightly.dumps:
            blob = blobs[name]
            assert blob.size == path.stat().st_size
            assert blob.metadata == {
                "dump_time": dump_time.isoformat(),
                "format": "plain-gzip",
                "database": APP_DB,
            }


def test_the_same_day_seeds_the_same_rows_whatever_the_hour(
    pg: labpg.PgInstance, admin: Postgres, app_db: AppDb
) -> None:
    """Seeding again later the same day yields the same rows before each night's cut (so the cache hits)."""
    url = admin.create_database("sma_later")
    try:
        seed_app_database(url, now=NOW + timedelta(hours=5))
        cuts = dump_times(NOW, 7)
        assert _cache_keys(pg, "sma_later", cuts) == _cache_keys(pg, APP_DB, cuts)
        assert Postgres(url).scalar("SELECT count(*) FROM posts") > app_db.counts["posts"]
    finally:
        admin.drop_database("sma_later")
