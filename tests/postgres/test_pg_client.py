"""Greenlight's PostgreSQL client: tools, queries, scratch databases, format detection and restores."""

from __future__ import annotations

import gzip
import io
import os
import re
import shutil
import tarfile
from pathlib import Path
from typing import Any

import psycopg
import pytest

from greenlight.clients.postgres import (
    CHUNK_BYTES,
    Postgres,
    _Feeder,
    _tool_connection,
    detect_dump_format,
    pg_tool,
    redact,
    restore,
    tool_major_version,
)
from greenlight.errors import BackupInvalid, Conflict, Forbidden, InputInvalid, NotFound, TransientError
from greenlight_lab import postgres as labpg

from .conftest import AppDb, Nightly, Scratch
from .pg_support import free_port, pg_dump

TABLES = ("users", "platform_connections", "posts", "scheduled_posts")
OLD_PG_RESTORE = Path("/usr/bin/pg_restore")


def counts(url: str, before: object = None) -> dict[str, int]:
    """Rows per app table (created before ``before`` when given); 0 for a table that does not exist."""
    db = Postgres(url)
    out = {}
    for t in TABLES:
        if db.scalar("SELECT to_regclass(%s)", (f"public.{t}",)) is None:
            out[t] = 0
        elif before is None:
            out[t] = int(db.scalar(f"SELECT count(*) FROM {t}"))  # type: ignore[arg-type]
        else:
            out[t] = int(db.scalar(f"SELECT count(*) FROM {t} WHERE created_at < %s", (before,)))  # type: ignore[arg-type]
    return out


def table_count(url: str) -> int:
    return int(Postgres(url).scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))  # type: ignore[arg-type]


# --- tools -------------------------------------------------------------------------------------


def test_pg_tool_looks_in_bin_dir_then_env_then_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit bin_dir wins, then GREENLIGHT_PG_BIN, then PATH."""
    bin_dir = labpg.pg_bin_dir()
    monkeypatch.setenv("GREENLIGHT_PG_BIN", str(bin_dir))
    assert pg_tool("pg_restore") == bin_dir / "pg_restore"
    assert pg_tool("psql", bin_dir) == bin_dir / "psql"
    monkeypatch.delenv("GREENLIGHT_PG_BIN")
    monkeypatch.setenv("PATH", str(bin_dir))
    assert pg_tool("pg_dump") == bin_dir / "pg_dump"


def test_pg_tool_not_found_names_the_tool_and_where(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A missing tool is NotFound naming the tool and the directory or PATH; a path-like name is refused."""
    monkeypatch.setenv("GREENLIGHT_PG_BIN", str(tmp_path))
    with pytest.raises(NotFound, match=rf"pg_restore not found in {tmp_path} \(from GREENLIGHT_PG_BIN\)"):
        pg_tool("pg_restore")
    monkeypatch.delenv("GREENLIGHT_PG_BIN")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NotFound, match="psql not found on PATH"):
        pg_tool("psql")
    with pytest.raises(InputInvalid):
        pg_tool("../bin/psql")


def test_tool_major_version_reads_the_embedded_tools() -> None:
    """The embedded client tools report PostgreSQL 18."""
    assert tool_major_version(labpg.pg_bin_dir() / "pg_restore") == 18
    assert tool_major_version(labpg.pg_bin_dir() / "psql") == 18


@pytest.mark.parametrize(
    ("text", "password", "expected"),
    [
        ("postgresql://u:s3cret@h:5432/db failed", None, "postgresql://u:***@h:5432/db failed"),
        ("postgres://u:p%40ss@h/db", None, "postgres://u:***@h/db"),
        ("host=h password=s3cret dbname=x", None, "host=h password=*** dbname=x"),
        ("host=h password='a b' dbname=x", None, "host=h password='***' dbname=x"),
        ("it said s3cretpw twice: s3cretpw", "s3cretpw", "it said *** twice: ***"),
        ("postgresql://u@h/db", None, "postgresql://u@h/db"),
        ("a short pw ab stays", "ab", "a short pw ab stays"),
    ],
)
def test_redact_hides_passwords(text: str, password: str | None, expected: str) -> None:
    """redact removes passwords from URLs, conninfo strings and the known password itself."""
    assert redact(text, password) == expected


# --- queries and scratch databases -----------------------------------------------------------------


def test_query_and_scalar_return_rows(admin: Postgres) -> None:
    """query returns tuples ([] for statements without rows); scalar the first value or None."""
    assert admin.query("SELECT 1, 'a' UNION ALL SELECT 2, 'b' ORDER BY 1") == [(1, "a"), (2, "b")]
    assert admin.query("SET application_name = 'greenlight-test'") == []
    assert admin.scalar("SELECT %s::int + 1", (41,)) == 42
    assert admin.scalar("SELECT 1 WHERE false") is None
    assert admin.server_major_version() == 18


def test_create_database_returns_a_working_url(admin: Postgres) -> None:
    """create_database returns the new database's URL; creating it again is a Conflict."""
    url = admin.create_database("gl_test_create")
    try:
        assert Postgres(url).scalar("SELECT current_database()") == "gl_test_create"
        with pytest.raises(Conflict, match="already exists"):
            admin.create_database("gl_test_create")
    finally:
        admin.drop_database("gl_test_create")


@pytest.mark.parametrize("name", ["", "Bad", "1abc", "a-b", "a;drop database sma", "x" * 64, "café"])
def test_create_database_refuses_names_that_are_not_identifiers(admin: Postgres, name: str) -> None:
    """Only lower-case identifiers of at most 63 characters are accepted."""
    with pytest.raises(InputInvalid, match="not a plain identifier"):
        admin.create_database(name)
    with pytest.raises(InputInvalid):
        admin.drop_database(name)


def test_drop_database_ends_sessions_removes_it_and_is_idempotent(admin: Postgres) -> None:
    """drop_database drops a database with open sessions (FORCE) and does nothing the second time."""
    url = admin.create_database("gl_test_drop")
    with psycopg.connect(url):
        admin.drop_database("gl_test_drop")
    assert admin.scalar("SELECT count(*) FROM pg_database WHERE datname = 'gl_test_drop'") == 0
    admin.drop_database("gl_test_drop")


def test_connection_errors_are_classified_and_never_show_the_password(pg: labpg.PgInstance) -> None:
    """Wrong password → Forbidden, missing database → NotFound, nothing listening → TransientError; no password."""
    wrong = Postgres(pg.url().replace(pg.password, "wrong-password-123"))
    missing = Postgres(pg.url("no_such_db"))
    closed = Postgres(
        f"postgresql://greenlight:{pg.password}@127.0.0.1:{free_port()}/postgres", connect_timeout_s=2
    )
    errors = []
    for db, error in ((wrong, Forbidden), (missing, NotFound), (closed, TransientError)):
        with pytest.raises(error) as caught:
            db.scalar("SELECT 1")
        errors.append(str(caught.value))
    for message in errors:
        assert pg.password not in message and "wrong-password-123" not in message
        assert "greenlight@127.0.0.1:" in message
    with pytest.raises(InputInvalid, match="malformed"):
        Postgres("postgresql://u:pw@h:notaport/db/x?bad=%")


def test_sql_errors_map_to_greenlight_errors(admin: Postgres) -> None:
    """An unknown table is NotFound, a syntax error InputInvalid."""
    with pytest.raises(NotFound, match="no_such_table"):
        admin.query("SELECT * FROM no_such_table")
    with pytest.raises(InputInvalid, match="syntax"):
        admin.query("SELEC 1")


# --- dump formats ----------------------------------------------------------------------------------


def _tar_bytes() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"toc"
        info = tarfile.TarInfo("toc.dat")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"PGDMP\x01\x10\x00\x04\x08\x01rest", "custom"),
        (gzip.compress(b"--\n-- PostgreSQL database dump\n", mtime=0), "plain-gzip"),
        (b"--\n-- PostgreSQL database dump\n--\nSET statement_timeout = 0;\n", "plain"),
        ("-- données\n".encode(), "plain"),
        (_tar_bytes(), "tar"),
    ],
)
def test_detect_dump_format_by_magic_bytes(tmp_path: Path, content: bytes, expected: str) -> None:
    """The format comes from the first bytes: PGDMP, gzip, ustar at 257, or text."""
    path = tmp_path / "dump"
    path.write_bytes(content)
    assert detect_dump_format(path) == expected


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not a PostgreSQL dump"),
        (gzip.compress(b"PGDMP\x01\x10rest", mtime=0), "gzip-compressed custom-format"),
    ],
)
def test_detect_dump_format_refuses_what_is_not_a_dump(tmp_path: Path, content: bytes, reason: str) -> None:
    """Empty files, other binaries and gzipped custom archives are BackupInvalid with a reason."""
    path = tmp_path / "dump"
    path.write_bytes(content)
    with pytest.raises(BackupInvalid, match=reason):
        detect_dump_format(path)


def test_detect_dump_format_directories_and_missing_files(tmp_path: Path) -> None:
    """A directory with toc.dat is a directory dump; without it, or a missing path, BackupInvalid."""
    (tmp_path / "d").mkdir()
    with pytest.raises(BackupInvalid, match=r"without toc\.dat"):
        detect_dump_format(tmp_path / "d")
    (tmp_path / "d" / "toc.dat").write_bytes(b"PGDMP")
    assert detect_dump_format(tmp_path / "d") == "directory"
    with pytest.raises(BackupInvalid, match="does not exist"):
        detect_dump_format(tmp_path / "missing.sql.gz")


# --- restores ------------------------------------------------------------------------------------


def test_restore_newest_nightly_plain_gzip_dump(nightly: Nightly, app_db: AppDb, scratch: Scratch) -> None:
    """The newest nightly dump restores fully: the scratch DB holds the rows created before its night."""
    path, _, dump_time = nightly.dumps[-1]
    result = restore(path, scratch.url, bin_dir=labpg.pg_bin_dir())
    assert result.format == "plain-gzip"
    assert result.bytes_in == path.stat().st_size
    assert result.seconds > 0
    assert counts(scratch.url) == counts(app_db.url, before=dump_time)


@pytest.mark.parametrize("fmt", ["custom", "directory"])
def test_restore_archives_with_pg_restore(
    fmt: str, archives: dict[str, Path], app_db: AppDb, scratch: Scratch
) -> None:
    """Custom and directory archives restore with pg_restore -j2 and hold every row of the source."""
    result = restore(archives[fmt], scratch.url, jobs=2, bin_dir=labpg.pg_bin_dir())
    assert result.format == fmt
    assert counts(scratch.url) == app_db.counts


def test_truncated_gzip_dump_is_invalid_and_commits_nothing(
    nightly: Nightly, scratch: Scratch, tmp_path: Path
) -> None:
    """A gzip dump cut short is BackupInvalid ('truncated') and leaves the scratch database empty."""
    data = nightly.dumps[-1][0].read_bytes()
    truncated = tmp_path / "truncated.sql.gz"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BackupInvalid, match="truncated"):
        restore(truncated, scratch.url, bin_dir=labpg.pg_bin_dir())
    assert table_count(scratch.url) == 0


def test_plain_dump_without_its_trailer_is_invalid_and_commits_nothing(
    nightly: Nightly, scratch: Scratch, tmp_path: Path
) -> None:
    """A plain dump that stops at a line boundary (no 'dump complete' trailer) is refused, not half-restored."""
    with gzip.open(nightly.dumps[0][0], "rb") as f:
        head = f.read(4 << 20)
    cut = tmp_path / "cut.sql"
    cut.write_bytes(head[: head.rindex(b"\n") + 1])
    with pytest.raises(BackupInvalid, match="dump complete"):
        restore(cut, scratch.url, bin_dir=labpg.pg_bin_dir())
    assert table_count(scratch.url) == 0


def test_corrupted_custom_archive_is_invalid(
    archives: dict[str, Path], scratch: Scratch, tmp_path: Path
) -> None:
    """A custom archive with garbage in its data is BackupInvalid with pg_restore's reason."""
    data = bytearray(archives["custom"].read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = b"\xa5" * 4096
    corrupted = tmp_path / "corrupted.dump"
    corrupted.write_bytes(bytes(data))
    with pytest.raises(BackupInvalid, match=r"could not uncompress|corrupt|invalid") as caught:
        restore(corrupted, scratch.url, bin_dir=labpg.pg_bin_dir())
    assert "pg_restore exit" in str(caught.value)


def test_truncated_custom_archive_is_invalid(
    archives: dict[str, Path], scratch: Scratch, tmp_path: Path
) -> None:
    """A custom archive cut short fails the full restore (pg_restore --list would not notice)."""
    data = archives["custom"].read_bytes()
    truncated = tmp_path / "truncated.dump"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(BackupInvalid, match="pg_restore exit"):
        restore(truncated, scratch.url, bin_dir=labpg.pg_bin_dir())


def test_restore_errors_never_show_the_password(
    pg: labpg.PgInstance, nightly: Nightly, scratch: Scratch, tmp_path: Path
) -> None:
    """Neither a bad dump's error nor a refused login carries the password."""
    bad = tmp_path / "bad.sql"
    bad.write_text(f"SELECT 'postgresql://greenlight:{pg.password}@h/db';\nSELECT * FROM missing;\n")
    with pytest.raises(BackupInvalid) as bad_dump:
        restore(bad, scratch.url, bin_dir=labpg.pg_bin_dir())
    wrong_url = scratch.url.replace(pg.password, "x" * 12)
    with pytest.raises(Forbidden) as refused:
        restore(nightly.dumps[0][0], wrong_url, bin_dir=labpg.pg_bin_dir())
    for error in (bad_dump.value, refused.value):
        assert pg.password not in str(error)
        assert "x" * 12 not in str(error)


def test_restore_times_out_and_commits_nothing(nightly: Nightly, scratch: Scratch) -> None:
    """A restore past its timeout is killed (TransientError) and its transaction never commits."""
    with pytest.raises(TransientError, match="did not finish within"):
        restore(nightly.dumps[-1][0], scratch.url, bin_dir=labpg.pg_bin_dir(), timeout_s=0.3)
    assert table_count(scratch.url) == 0


def test_client_tools_older_than_the_server_are_refused(archives: dict[str, Path], scratch: Scratch) -> None:
    """Debian's pg_restore 15 against the PostgreSQL 18 server is InputInvalid naming both versions."""
    if not OLD_PG_RESTORE.exists() or shutil.which(str(OLD_PG_RESTORE)) is None:
        pytest.skip(f"{OLD_PG_RESTORE} is not installed: no older client tool to try")
    old = tool_major_version(OLD_PG_RESTORE)
    if old >= 18:
        pytest.skip(f"{OLD_PG_RESTORE} is PostgreSQL {old}, not older than the server")
    with pytest.raises(InputInvalid, match=rf"PostgreSQL {old} but the target server .* is PostgreSQL 18"):
        restore(archives["custom"], scratch.url, bin_dir="/usr/bin")
    assert table_count(scratch.url) == 0


def test_restore_tar_archive_runs_pg_restore_without_jobs(
    pg: labpg.PgInstance, admin: Postgres, scratch: Scratch, tmp_path: Path
) -> None:
    """A tar archive restores (pg_restore refuses -j for tar, so jobs is ignored)."""
    source = Postgres(admin.create_database("gl_tar_source"))
    try:
        source.query("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g")
        archive = pg_dump(pg, "gl_tar_source", "t", tmp_path / "small.tar")
    finally:
        admin.drop_database("gl_tar_source")
    assert detect_dump_format(archive) == "tar"
    result = restore(archive, scratch.url, jobs=4, bin_dir=labpg.pg_bin_dir())
    assert result.format == "tar"
    assert Postgres(scratch.url).scalar("SELECT count(*) FROM t") == 1000


# --- what a dump may make the tools do ---------------------------------------------------------------

SECRETS = {
    "SLACK_BOT_TOKEN": "xoxb-not-for-psql",
    "GREENLIGHT_WEBHOOK_SECRET": "webhook-not-for-psql",
    "AWS_SECRET_ACCESS_KEY": "aws-not-for-psql",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/sa.json",
}


def test_client_tools_get_only_the_environment_they_need(monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH, HOME, the locale and libpq's settings reach the tools, with the URL's password; no secret of ours."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    monkeypatch.setenv("PGSSLMODE", "verify-full")
    monkeypatch.setenv("PGPASSFILE", "/run/pgpass")
    monkeypatch.setenv("HOME", "/home/greenlight")
    _, env = _tool_connection(Postgres("postgresql://restorer:pw-from-url@db.internal:5432/scratch"))
    leaked = sorted(set(SECRETS) & set(env))
    assert leaked == [], f"the client tools would see {leaked}"
    assert not any(v in env.values() for v in SECRETS.values())
    assert env["PATH"] == os.environ["PATH"] and env["HOME"] == "/home/greenlight"
    assert (
        env["LC_ALL"] == "C.UTF-8"
        and env["PGSSLMODE"] == "verify-full"
        and env["PGPASSFILE"] == "/run/pgpass"
    )
    assert env["PGPASSWORD"] == "pw-from-url"
    assert set(env) <= {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "LD_LIBRARY_PATH",
    } | {k for k in env if k.startswith(("PG", "LC_"))}


class _Stdin(io.BytesIO):
    def close(self) -> None:
        self.written = self.getvalue()
        super().close()


class _Proc:
    """What _Feeder needs of a psql process: its stdin, and kill."""

    def __init__(self) -> None:
        self.stdin = _Stdin()
        self.killed = False

    def kill(self) -> None:
        self.killed = True


def fed(tmp_path: Path, content: bytes, gzipped: bool = False) -> bytes:
    """What psql would read from the feeder for a plain dump holding ``content``."""
    path = tmp_path / ("d.sql.gz" if gzipped else "d.sql")
    path.write_bytes(gzip.compress(content) if gzipped else content)
    proc = _Proc()
    feeder = _Feeder(path, gzipped, proc)  # type: ignore[arg-type]
    feeder.run()
    assert feeder.error is None and not proc.killed
    return proc.stdin.written


PG18_DUMP = b"""--
-- PostgreSQL database dump
--

\\restrict Kdumpkey123

SET client_encoding = 'UTF8';
CREATE TABLE public.t (v text);
COPY public.t (v) FROM stdin;
\\restrict abc
\\unrestrict Kother
\\\\! touch /tmp/x
\\.
\\unrestrict Kdumpkey123
\\connect -reuse-previous=on "dbname='x'"
\\restrict Kdumpkey123
SELECT 1;
--
-- PostgreSQL database dump complete
--

\\unrestrict Kdumpkey123

"""


@pytest.mark.parametrize("gzipped", [False, True])
def test_feeder_restricts_psql_with_its_own_key_and_drops_the_dumps_restrict_lines(
    tmp_path: Path, gzipped: bool
) -> None:
    """psql first reads \\restrict with a random key; the lines with the dump's own key go, nothing else."""
    out = fed(tmp_path, PG18_DUMP, gzipped)
    first, rest = out.split(b"\n", 1)
    assert re.fullmatch(rb"\\restrict [0-9a-f]{64}", first), first
    assert rest == PG18_DUMP.replace(b"\\restrict Kdumpkey123\n", b"").replace(
        b"\\unrestrict Kdumpkey123\n", b""
    )
    assert b"\\connect" in rest  # left for psql to refuse
    assert fed(tmp_path, PG18_DUMP, gzipped).split(b"\n", 1)[0] != first  # a new key each time


def test_feeder_leaves_a_dump_without_its_own_restrict_as_it_is(tmp_path: Path) -> None:
    """A dump of an older pg_dump (or a hostile one) has no \\restrict of its own: every line goes to psql."""
    content = b"--\nSELECT 1;\n\\restrict Kx\n\\! true\n\\unrestrict Kx\n-- dump complete\n"
    assert fed(tmp_path, content).split(b"\n", 1)[1] == content


def test_feeder_keeps_lines_longer_than_a_chunk_and_a_last_line_without_newline(tmp_path: Path) -> None:
    """The middle of a line longer than a chunk is never taken for a line start; the last line needs no newline."""
    head = b"--\n\\restrict Kk1\n"
    long_line = b"INSERT INTO t VALUES ('" + b"y" * (2 * CHUNK_BYTES - len(head) - 23)
    assert len(head + long_line) == 2 * CHUNK_BYTES  # the third chunk starts in the middle of the line:
    middle = b"\\unrestrict Kk1\n');\n"  # there, this is no line of its own
    end = b"-- PostgreSQL database dump complete\n\\unrestrict Kk1"
    out = fed(tmp_path, head + long_line + middle + end).split(b"\n", 1)[1]
    assert out == b"--\n" + long_line + middle + end.removesuffix(b"\\unrestrict Kk1")


# (the dump's own \restrict key or None, what it holds between its first and last statements)
SHELL_COMMANDS = {
    "a \\! line": (None, "\\! touch {marker}\n"),
    "\\! after a statement on the same line": (None, "SELECT 1; \\! touch {marker}\n"),
    "\\o to a pipe": (None, "\\o |touch {marker}\nSELECT 1;\n"),
    "\\copy to a program": (None, "\\copy (SELECT 1) TO PROGRAM 'touch {marker}'\n"),
    "\\set ON_ERROR_STOP off first": (None, "\\set ON_ERROR_STOP off\n\\! touch {marker}\n"),
    "a \\! line inside the dump's own \\restrict": ("K1", "\\! touch {marker}\n"),
    "after unrestricting with the dump's own key": (
        "K1",
        "\\unrestrict K1\n\\! touch {marker}\n\\restrict K1\n",
    ),
}


@pytest.mark.parametrize("gzipped", [False, True], ids=["plain", "plain-gzip"])
@pytest.mark.parametrize("where", list(SHELL_COMMANDS))
def test_a_plain_dump_cannot_run_a_shell_command(
    scratch: Scratch, tmp_path: Path, where: str, gzipped: bool
) -> None:
    """No psql meta-command of a dump runs, whether or not the dump restricts itself: the restore is
    refused naming it, nothing is committed."""
    marker = tmp_path / "pwned"
    key, body = SHELL_COMMANDS[where]
    sql = (
        "--\n-- PostgreSQL database dump\n--\n"
        + (f"\\restrict {key}\n" if key else "")
        + "CREATE TABLE t (id int);\nINSERT INTO t VALUES (1);\n"
        + body.format(marker=marker)
        + "CREATE TABLE u (id int);\n--\n-- PostgreSQL database dump complete\n--\n\n"
        + (f"\\unrestrict {key}\n" if key else "")
    ).encode()
    path = tmp_path / ("hostile.sql.gz" if gzipped else "hostile.sql")
    path.write_bytes(gzip.compress(sql) if gzipped else sql)
    error: BackupInvalid | None = None
    try:
        restore(path, scratch.url, bin_dir=labpg.pg_bin_dir())
    except BackupInvalid as e:
        error = e
    assert not marker.exists(), f"the dump ran a shell command ({where}): {marker} exists"
    assert error is not None, "a dump holding a psql meta-command restored"
    assert "meta-command" in str(error) and "backslash commands are restricted" in str(error)
    assert table_count(scratch.url) == 0


def test_a_pg18_plain_dump_whose_data_looks_like_meta_commands_restores_exactly(
    pg: labpg.PgInstance, admin: Postgres, scratch: Scratch, tmp_path: Path
) -> None:
    """pg_dump 18's own \\restrict pair is replaced by ours; COPY data lines starting with a backslash
    (\\r, \\\\, \\N) and a value ending like \\. come back byte for byte."""
    # "\r..." is a carriage return, which COPY writes as \r: a data line starting "\restrict abc"
    values = ["\restrict abc", "\\! touch /tmp/nope", "\\unrestrict x", "\\.", "plain", None, "a\nb\\.\n"]
    source = Postgres(admin.create_database("gl_meta_source"))
    try:
        source.query("CREATE TABLE t (v text, id int PRIMARY KEY)")  # v first: it starts each data line
        for i, v in enumerate(values):
            source.query("INSERT INTO t VALUES (%s, %s)", (v, i))
        dump = pg_dump(pg, "gl_meta_source", "p", tmp_path / "meta.sql")
    finally:
        admin.drop_database("gl_meta_source")
    text = dump.read_bytes()
    assert re.search(rb"^\\restrict \S+$", text, re.M) and re.search(rb"^\\unrestrict \S+$", text, re.M)
    assert re.search(rb"^\\r", text.split(b"FROM stdin;", 1)[1], re.M)  # a data line starting with \r
    restore(dump, scratch.url, bin_dir=labpg.pg_bin_dir())
    rows = Postgres(scratch.url).query("SELECT v FROM t ORDER BY id")
    assert [v for (v,) in rows] == values


FAKE_TOOL = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "{name} (PostgreSQL) 18.6"; exit 0; fi
env > {out}
cat > /dev/null
exit 0
"""


@pytest.mark.parametrize(
    ("tool", "content"), [("psql", b"SELECT 1;\n-- dump complete\n"), ("pg_restore", b"PGDMP")]
)
def test_the_tools_run_without_the_process_secrets(
    scratch: Scratch, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str, content: bytes
) -> None:
    """The environment psql and pg_restore actually run with holds no SLACK_BOT_TOKEN (or other secret) of ours."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    out = tmp_path / "env.txt"
    fake = bin_dir / tool
    fake.write_text(FAKE_TOOL.format(name=tool, out=out))
    fake.chmod(0o755)
    dump = tmp_path / "dump"
    dump.write_bytes(content)
    restore(dump, scratch.url, bin_dir=bin_dir)
    seen: dict[str, Any] = dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)
    assert sorted(set(SECRETS) & set(seen)) == []
    assert "PGPASSWORD" in seen and "PATH" in seen
