"""Shared constants and helpers for the PostgreSQL tests (imported by conftest and the tests)."""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from greenlight_lab.postgres import PgInstance

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
APP_DB = "sma"
TIMINGS: dict[str, float] = {}  # step -> seconds, printed in the terminal summary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_dump(pg: PgInstance, database: str, fmt: str, target: Path, *extra: str) -> Path:
    """Dump ``database`` with the embedded pg_dump in format ``fmt`` (c, d, t, p) to ``target``."""
    subprocess.run(
        [
            str(pg.bin_dir / "pg_dump"),
            f"--format={fmt}",
            "--no-owner",
            "--no-privileges",
            *extra,
            f"--file={target}",
            f"--dbname=host=127.0.0.1 port={pg.port} user={pg.user} dbname={database}",
        ],
        env=dict(os.environ, PGPASSWORD=pg.password),
        check=True,
        timeout=120,
    )
    return target
