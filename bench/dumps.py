"""Custom-format dumps of a generated shop database, about N MB each, cached between runs.

The database (``SCHEMA``): ``customers``, ``products``, ``orders`` (foreign key to customers),
``order_items`` (to orders and products) and ``events`` (to customers, a jsonb payload), with
primary keys, a unique index and secondary indexes on the foreign keys and timestamps. Rows are
generated server-side with ``generate_series`` (two connections, one per core), in proportion to
``units``: 1,000 customers, 5,000 orders, 15,000 order lines and 10,000 events per unit, plus
10,000 products. The data compresses like an application's (names and addresses from short lists,
md5 session ids, jsonb): about 4.5x with pg_dump's default gzip. ``created_at`` spans the
``SPAN_DAYS`` before generation, so the newest row is the generation time.

The dump is ``pg_dump --format=custom --no-owner --no-privileges`` (default gzip compression),
made by the lab's own pg_dump (``GREENLIGHT_PG_BIN``). It is cached under
``<cache>/bench/<key>.dump`` with a ``<key>.json`` sidecar (rows, sizes, when and how long it took to
make), keyed by the target size, ``GENERATOR_VERSION`` and pg_dump's major version; a dump is
written to ``.part`` and renamed, so an interrupted run never leaves a half dump in the cache.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from greenlight.clients.postgres import Postgres, pg_tool, tool_major_version

GENERATOR_VERSION = 1
# compressed custom-format bytes per unit, measured with GENERATOR_VERSION 1 and PostgreSQL 18
MB_PER_UNIT = 0.76
PRODUCTS = 10_000
PER_UNIT = {"customers": 1_000, "orders": 5_000, "order_items": 15_000, "events": 10_000}
TABLES = ("customers", "products", "orders", "order_items", "events")
SPAN_DAYS = 90
DUMP_TIMEOUT_S = 3600.0

SCHEMA = """
CREATE TABLE customers (
    id bigint NOT NULL, email text NOT NULL, full_name text NOT NULL, country text NOT NULL,
    created_at timestamptz NOT NULL);
CREATE TABLE products (
    id bigint NOT NULL, sku text NOT NULL, title text NOT NULL, description text NOT NULL,
    price_cents integer NOT NULL);
CREATE TABLE orders (
    id bigint NOT NULL, customer_id bigint NOT NULL, status text NOT NULL, total_cents bigint NOT NULL,
    shipping_address text NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE order_items (
    order_id bigint NOT NULL, line smallint NOT NULL, product_id bigint NOT NULL, quantity integer NOT NULL,
    unit_cents integer NOT NULL);
CREATE TABLE events (
    id bigint NOT NULL, customer_id bigint NOT NULL, kind text NOT NULL, payload jsonb NOT NULL,
    created_at timestamptz NOT NULL);
"""


def _pick(options: list[str], index: str) -> str:
    """SQL choosing one of ``options`` by the integer expression ``index`` (0-based, wrapped)."""
    quoted = ", ".join("'" + o.replace("'", "''") + "'" for o in options)
    return f"(ARRAY[{quoted}])[1 + mod({index}, {len(options)})]"


_RND = "floor(random() * 1000000)::int"


def _ago(i: str, n: int) -> str:
    """Row ``i`` of ``n`` spread evenly over the last SPAN_DAYS, the last one at the generation time."""
    return f"%(now)s - interval '{SPAN_DAYS} days' * (1 - {i}::float8 / {n})"


def insert_statements(units: int) -> dict[str, str]:
    """Per table, the INSERT that fills it for ``units`` (parameter ``now``: the generation time)."""
    if units < 1:
        raise ValueError(f"units must be at least 1, not {units}")
    n = {table: per * units for table, per in PER_UNIT.items()}
    first = ["Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Alan", "Edsger"]
    last = ["Lovelace", "Hopper", "Torvalds", "Hamilton", "Thompson", "Liskov", "Ritchie", "Allen", "Turing"]
    countries = ["DE", "FR", "GB", "US", "JP", "BR", "IN", "NL", "SE", "ES"]
    streets = ["Main St", "High St", "Station Rd", "Church Lane", "Park Ave", "Mill Rd"]
    cities = ["Berlin", "Paris", "London", "Austin", "Osaka", "Recife", "Pune", "Utrecht"]
    statuses = ["paid", "shipped", "delivered", "delivered", "delivered", "refunded", "cancelled"]
    kinds = ["page_view", "page_view", "page_view", "add_to_cart", "search", "checkout", "login"]
    agents = [
        "Mozilla/5.0 (X11; Linux x86_64)",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5)",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)",
    ]
    adjectives = ["Walnut", "Linen", "Copper", "Alpine", "Harbor", "Meadow", "Granite", "Velvet"]
    things = ["desk lamp", "tote bag", "mug", "notebook", "throw blanket", "water bottle", "backpack"]
    care = ["hand wash", "machine wash cold", "wipe clean"]
    return {
        "products": f"""
INSERT INTO products
SELECT i, 'SKU-' || lpad(i::text, 6, '0'), {_pick(adjectives, "i")} || ' ' || {_pick(things, "i / 8")},
       'Made in small batches. ' || md5(i::text) || ' Care: ' || {_pick(care, "i")}, 199 + mod(i * 7919, 20000)
FROM generate_series(1, {PRODUCTS}) AS i""",
        "customers": f"""
INSERT INTO customers
SELECT i, 'customer' || i || '@example.test', {_pick(first, _RND)} || ' ' || {_pick(last, _RND)},
       {_pick(countries, _RND)}, {_ago("i", n["customers"])}
FROM generate_series(1, {n["customers"]}) AS i""",
        "orders": f"""
INSERT INTO orders
SELECT i, 1 + floor(random() * {n["customers"]})::bigint, {_pick(statuses, _RND)},
       floor(random() * 50000)::bigint,
       floor(random() * 9999)::int || ' ' || {_pick(streets, _RND)} || ', '
           || lpad(floor(random() * 99999)::int::text, 5, '0') || ' ' || {_pick(cities, _RND)},
       {_ago("i", n["orders"])}
FROM generate_series(1, {n["orders"]}) AS i""",
        "order_items": f"""
INSERT INTO order_items
SELECT o, l, 1 + floor(random() * {PRODUCTS})::bigint, 1 + floor(random() * 4)::int,
       199 + floor(random() * 20000)::int
FROM generate_series(1, {n["orders"]}) AS o, generate_series(1, {n["order_items"] // n["orders"]}) AS l""",
        "events": f"""
INSERT INTO events
SELECT i, 1 + floor(random() * {n["customers"]})::bigint, {_pick(kinds, _RND)},
       jsonb_build_object(
           'path', '/products/' || (1 + floor(random() * {PRODUCTS})::int),
           'session', md5(random()::text),
           'ip', '10.' || floor(random() * 256)::int || '.' || floor(random() * 256)::int
                 || '.' || floor(random() * 256)::int,
           'ua', {_pick(agents, _RND)},
           'ms', floor(random() * 900)::int),
       {_ago("i", n["events"])}
FROM generate_series(1, {n["events"]}) AS i""",
    }


# Keys and indexes after the load (built in one pass each), per table so two sessions share the work.
CONSTRAINTS = {
    "customers": [
        "ALTER TABLE customers ADD PRIMARY KEY (id)",
        "CREATE UNIQUE INDEX customers_email_key ON customers (email)",
        "CREATE INDEX customers_created_at_idx ON customers (created_at)",
    ],
    "products": ["ALTER TABLE products ADD PRIMARY KEY (id)"],
    "orders": [
        "ALTER TABLE orders ADD PRIMARY KEY (id)",
        "CREATE INDEX orders_customer_id_created_at_idx ON orders (customer_id, created_at)",
        "CREATE INDEX orders_created_at_idx ON orders (created_at)",
    ],
    "order_items": [
        "ALTER TABLE order_items ADD PRIMARY KEY (order_id, line)",
        "CREATE INDEX order_items_product_id_idx ON order_items (product_id)",
    ],
    "events": [
        "ALTER TABLE events ADD PRIMARY KEY (id)",
        "CREATE INDEX events_customer_id_created_at_idx ON events (customer_id, created_at)",
        "CREATE INDEX events_created_at_idx ON events (created_at)",
    ],
}
FOREIGN_KEYS = [
    "ALTER TABLE orders ADD CONSTRAINT orders_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id)",
    "ALTER TABLE order_items ADD CONSTRAINT order_items_order_id_fkey FOREIGN KEY (order_id) REFERENCES orders (id)",
    "ALTER TABLE order_items ADD CONSTRAINT order_items_product_id_fkey "
    "FOREIGN KEY (product_id) REFERENCES products (id)",
    "ALTER TABLE events ADD CONSTRAINT events_customer_id_fkey FOREIGN KEY (customer_id) REFERENCES customers (id)",
]
# what the two generating sessions each do, balanced by rows: (tables to fill, then to index)
LANES = (("events", "products"), ("order_items", "orders", "customers"))

# The SQL probe the verification runs after its restore (one, like the lab's production profile):
# an anti-join over every order, which holds in every generated database.
SQL_PROBES = {
    "every order has its customer": "SELECT NOT EXISTS (SELECT 1 FROM orders o "
    "LEFT JOIN customers c ON c.id = o.customer_id WHERE c.id IS NULL)",
}
TIMESTAMP_COLUMNS = {"customers": "created_at", "orders": "created_at", "events": "created_at"}


def units_for(size_mb: int) -> int:
    """The generator's units for a dump of about ``size_mb`` MB (at least one)."""
    if size_mb < 1:
        raise ValueError(f"dump size must be at least 1 MB, not {size_mb}")
    return max(1, round(size_mb / MB_PER_UNIT))


def expected_rows(units: int) -> dict[str, int]:
    """Rows per table in a database generated with ``units``."""
    rows = {table: per * units for table, per in PER_UNIT.items()}
    rows["products"] = PRODUCTS
    return {t: rows[t] for t in TABLES}


def cache_key(size_mb: int, pg_major: int) -> str:
    """The cache entry's name: generator version, target size and pg_dump's major version."""
    return f"shop-v{GENERATOR_VERSION}-{size_mb}mb-pg{pg_major}"


@dataclass(frozen=True)
class BenchDump:
    """A generated dump on disk and what it holds."""

    path: Path
    target_mb: int
    units: int
    bytes: int
    rows: dict[str, int]
    db_bytes: int  # the generated database's size (pg_database_size), indexes included
    newest_row: str  # ISO time of the newest row (the generation time)
    generate_seconds: float
    dump_seconds: float
    pg_dump_major: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["path"] = str(self.path)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BenchDump:
        return cls(**{**data, "path": Path(data["path"])})


def tool_env(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password (for a tool's command line) and an environment with PGPASSWORD."""
    parts = urlsplit(url)
    env = dict(os.environ)
    if parts.password is not None:
        env["PGPASSWORD"] = unquote(parts.password)
        host = parts.hostname or ""
        netloc = f"{parts.username or ''}@{host}" + (f":{parts.port}" if parts.port else "")
        parts = parts._replace(netloc=netloc)
    return urlunsplit(parts), env


def ensure_dump(
    size_mb: int, server_url: str, cache: Path, echo: Callable[[str], None] = print
) -> tuple[BenchDump, bool]:
    """The cached dump of about ``size_mb`` MB, generated on the server at ``server_url`` if missing.

    Returns (the dump, whether it came from the cache). ``server_url`` is a maintenance URL
    (``.../postgres``); the generating database is created there and always dropped.
    """
    pg_dump = pg_tool("pg_dump")
    major = tool_major_version(pg_dump)
    key = cache_key(size_mb, major)
    path, meta = cache / f"{key}.dump", cache / f"{key}.json"
    if path.is_file() and meta.is_file():
        dump = BenchDump.from_json(json.loads(meta.read_text()))
        if dump.bytes == path.stat().st_size:
            return BenchDump.from_json({**dump.to_json(), "path": str(path)}), True
    cache.mkdir(parents=True, exist_ok=True)
    units = units_for(size_mb)
    server = Postgres(server_url)
    name = f"bench_gen_{secrets.token_hex(4)}"
    url = server.create_database(name)
    try:
        echo(f"  generating {size_mb} MB dump ({units} units, {sum(expected_rows(units).values())} rows)")
        started = time.monotonic()
        newest, db_bytes = generate(url, units)
        generated = time.monotonic() - started
        echo(f"  generated {db_bytes / 1e6:.0f} MB database in {generated:.1f}s; pg_dump -Fc ...")
        started = time.monotonic()
        part = path.with_suffix(".dump.part")
        conninfo, env = tool_env(url)
        done = subprocess.run(
            [str(pg_dump), "--format=custom", "--no-owner", "--no-privileges", f"--file={part}", conninfo],
            env=env,
            capture_output=True,
            text=True,
            timeout=DUMP_TIMEOUT_S,
            check=False,
        )
        if done.returncode != 0:
            part.unlink(missing_ok=True)
            raise RuntimeError(f"pg_dump of {name} failed (exit {done.returncode}): {done.stderr[-2000:]}")
        dumped = time.monotonic() - started
    finally:
        server.drop_database(name)
    dump = BenchDump(
        path=path,
        target_mb=size_mb,
        units=units,
        bytes=part.stat().st_size,
        rows=expected_rows(units),
        db_bytes=db_bytes,
        newest_row=newest,
        generate_seconds=round(generated, 2),
        dump_seconds=round(dumped, 2),
        pg_dump_major=major,
    )
    part.replace(path)
    meta.write_text(json.dumps(dump.to_json(), indent=2))
    echo(f"  dumped {dump.bytes / 1e6:.1f} MB in {dumped:.1f}s -> {path}")
    return dump, False


def generate(url: str, units: int) -> tuple[str, int]:
    """Fill the empty database at ``url``; (the newest row's ISO time, the database's size in bytes)."""
    db = Postgres(url)
    db.query(f"ALTER DATABASE {db.dbname} SET maintenance_work_mem = '256MB'")
    db.query(SCHEMA)
    now = datetime.now(UTC)
    inserts = insert_statements(units)

    def lane(tables: tuple[str, ...]) -> None:
        session = Postgres(url)
        for table in tables:
            session.query(inserts[table], {"now": now})
        for table in tables:
            for statement in CONSTRAINTS[table]:
                session.query(statement)

    with ThreadPoolExecutor(max_workers=len(LANES)) as pool:
        for done in [pool.submit(lane, tables) for tables in LANES]:
            done.result()
    for statement in FOREIGN_KEYS:
        db.query(statement)
    db.query("ANALYZE")
    size = db.scalar("SELECT pg_database_size(current_database())")
    return now.isoformat(), int(size) if isinstance(size, int) else 0
