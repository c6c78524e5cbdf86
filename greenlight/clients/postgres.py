"""PostgreSQL: queries and scratch databases (psycopg 3), and restores with the PostgreSQL client tools.

Everything here raises ``greenlight.errors`` types. A connection URL's password never appears in
a message: messages name the server as ``user@host:port/dbname``, and tool output is redacted.
The client tools get the password through ``PGPASSWORD``, never on their command line.

Restores stream: a gzipped plain dump is decompressed in a thread that feeds ``psql`` in 1 MiB
chunks (memory stays flat in the dump's size); custom, directory and tar archives go to
``pg_restore``, which reads the file itself. The tools must be at least as new as the target
server (an older ``pg_restore`` refuses newer archives), which is checked first.

A dump comes from a bucket, so it is not trusted: ``psql`` runs it in restricted mode under a
key of ours (no meta-command such as ``\\!`` can run, see :class:`_Feeder`), and the tools get
only the environment they need (:func:`tool_environment`), never the process's secrets.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlencode

import psycopg
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from greenlight.core.redact import redact as core_redact
from greenlight.errors import (
    BackupInvalid,
    Conflict,
    Forbidden,
    GreenlightError,
    InputInvalid,
    NotFound,
    PermanentError,
    TransientError,
)

PG_BIN_ENV = "GREENLIGHT_PG_BIN"
DUMP_FORMATS = ("plain", "plain-gzip", "custom", "directory", "tar")
CHUNK_BYTES = 1 << 20
STDERR_TAIL_CHARS = 2000
TOOL_VERSION_TIMEOUT_S = 10.0
# pg_dump ends a plain dump with "-- PostgreSQL database dump complete" (pg_dumpall: "... cluster dump
# complete"), followed at most by an \unrestrict line: a plain dump without it is truncated.
PLAIN_TRAILER = b"dump complete"
TRAILER_WINDOW_BYTES = 4096
# What the client tools may see of the process's environment: where programs and libraries are,
# the locale, and libpq's own settings (a passfile, TLS files, a service file...). Nothing else:
# never SLACK_BOT_TOKEN, GREENLIGHT_WEBHOOK_SECRET, cloud credentials or any other secret.
_LIBPQ_ENV = (
    "HOST", "HOSTADDR", "PORT", "DATABASE", "USER", "PASSWORD", "PASSFILE", "SERVICE", "SERVICEFILE",
    "SYSCONFDIR", "OPTIONS", "SSLMODE", "REQUIRESSL", "SSLNEGOTIATION", "SSLCOMPRESSION", "SSLCERT",
    "SSLKEY", "SSLCERTMODE", "SSLROOTCERT", "SSLCRL", "SSLCRLDIR", "SSLSNI", "SSLMINPROTOCOLVERSION",
    "SSLMAXPROTOCOLVERSION", "MINPROTOCOLVERSION", "MAXPROTOCOLVERSION", "CHANNELBINDING",
    "REQUIREPEER", "REQUIREAUTH", "GSSENCMODE", "GSSDELEGATION", "KRBSRVNAME", "GSSLIB",
    "TARGETSESSIONATTRS", "LOADBALANCEHOSTS", "CLIENTENCODING", "DATESTYLE", "TZ", "GEQO",
)  # fmt: skip
TOOL_ENV_NAMES = frozenset(
    {"PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "LD_LIBRARY_PATH"}
    | {"KRB5CCNAME", "KRB5_CONFIG"}  # GSSAPI authentication, when the server asks for it
    | {"PG" + name for name in _LIBPQ_ENV}
)
TOOL_ENV_PREFIXES = ("LC_",)
# pg_dump 18 starts a plain dump with comment lines, then \restrict and a random alphanumeric key.
_DUMP_RESTRICT = re.compile(rb"\A(?:(?:--[^\n]*)?\r?\n)*\\restrict ([A-Za-z0-9]{1,256})\r?\n")

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TOOL_NAME = re.compile(r"^[a-z_]+$")
_TOOL_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)")
_TRANSIENT_SQLSTATE_CLASSES = ("08", "40", "53", "57")  # connection, rollback, resources, operator


def redact(text: str, password: str | None = None) -> str:
    """``text`` with ``password``, passwords in URLs and ``password=`` pairs of conninfo strings
    (and every other secret of a known shape) replaced by ``***``."""
    return core_redact(text, [password])


# --- tools -------------------------------------------------------------------------------------


def pg_tool(name: str, bin_dir: str | Path | None = None) -> Path:
    """The path of PostgreSQL client tool ``name``: in ``bin_dir``, else in ``$GREENLIGHT_PG_BIN``, else on PATH.

    Raises NotFound naming the tool and where it was looked for.
    """
    if not _TOOL_NAME.match(name):
        raise InputInvalid(f"PostgreSQL tool name {name!r} is not a plain program name")
    directory = bin_dir if bin_dir is not None else os.environ.get(PG_BIN_ENV) or None
    if directory is not None:
        tool = Path(directory) / name
        if tool.is_file() and os.access(tool, os.X_OK):
            return tool
        origin = "" if bin_dir is not None else f" (from {PG_BIN_ENV})"
        raise NotFound(f"PostgreSQL tool {name} not found in {directory}{origin}")
    found = shutil.which(name)
    if found is None:
        raise NotFound(f"PostgreSQL tool {name} not found on PATH; set {PG_BIN_ENV} to its directory")
    return Path(found)


def tool_major_version(tool: Path) -> int:
    """The PostgreSQL major version of a client tool, from ``tool --version`` (e.g. 18 for 18.6)."""
    try:
        done = subprocess.run(
            [str(tool), "--version"],
            capture_output=True,
            text=True,
            timeout=TOOL_VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as e:
        raise NotFound(f"PostgreSQL tool {tool} does not exist") from e
    except subprocess.TimeoutExpired as e:
        raise TransientError(f"{tool} --version did not answer within {TOOL_VERSION_TIMEOUT_S:.0f}s") from e
    except OSError as e:
        raise InputInvalid(f"PostgreSQL tool {tool} cannot be run: {e.strerror}") from e
    match = _TOOL_VERSION.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise InputInvalid(
            f"{tool} --version did not report a PostgreSQL version: {done.stdout.strip()[:200]!r}"
        )
    return int(match.group(1))


# --- queries and scratch databases ---------------------------------------------------------------


class Postgres:
    """A PostgreSQL server reached through one connection URL; each call opens its own short connection."""

    def __init__(self, url: str, connect_timeout_s: float = 10.0) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as e:
            raise InputInvalid(f"PostgreSQL URL is malformed: {redact(str(e), None)}") from None
        self._params: dict[str, Any] = {k: v for k, v in params.items() if v is not None}
        self._password: str | None = self._params.get("password")
        self.connect_timeout_s = connect_timeout_s

    @property
    def where(self) -> str:
        """The server and database for messages, without the password: ``user@host:port/dbname``."""
        return _describe(self._params)

    @property
    def dbname(self) -> str:
        """The database the URL names (PostgreSQL's default: the user's name)."""
        return str(self._params.get("dbname") or self._params.get("user") or "postgres")

    def query(
        self, sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        """Run one statement (autocommit) and return its rows; [] for a statement without a result."""
        with self._connect() as conn:
            try:
                cur = conn.execute(sql, params)
                return list(cur.fetchall()) if cur.description is not None else []
            except psycopg.Error as e:
                raise self._translate(e, "query") from e

    def scalar(self, sql: str, params: tuple[Any, ...] | dict[str, Any] | None = None) -> object:
        """The first column of the first row, None when there is no row."""
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def create_database(self, name: str) -> str:
        """Create database ``name`` and return its URL (same server and credentials). Conflict if it exists."""
        _check_identifier(name)
        with self._connect(self._maintenance_db(name)) as conn:
            try:
                conn.execute(pgsql.SQL("CREATE DATABASE {}").format(pgsql.Identifier(name)))
            except psycopg.Error as e:
                raise self._translate(e, f"create database {name}") from e
        return _url(dict(self._params, dbname=name))

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending its sessions (WITH (FORCE)); nothing happens if it does not exist."""
        _check_identifier(name)
        with self._connect(self._maintenance_db(name)) as conn:
            try:
                conn.execute(
                    pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(pgsql.Identifier(name))
                )
            except psycopg.Error as e:
                raise self._translate(e, f"drop database {name}") from e

    def server_major_version(self) -> int:
        """The server's PostgreSQL major version (e.g. 18)."""
        with self._connect() as conn:
            return int(conn.info.server_version) // 10000

    # --- internals

    def _maintenance_db(self, name: str) -> str | None:
        """The database to connect to for CREATE/DROP DATABASE ``name``: the URL's, unless it is ``name``."""
        return "postgres" if self.dbname == name else None

    def _connect(self, dbname: str | None = None) -> psycopg.Connection[Any]:
        params = dict(self._params)
        if dbname is not None:
            params["dbname"] = dbname
        params["connect_timeout"] = max(1, math.ceil(self.connect_timeout_s))
        try:
            return psycopg.connect(**params, autocommit=True)
        except psycopg.Error as e:
            raise _translate(e, f"connect to {_describe(params)}", self._password) from e

    def _translate(self, e: psycopg.Error, what: str) -> GreenlightError:
        return _translate(e, f"{what} on {self.where}", self._password)


def _check_identifier(name: str) -> None:
    if not _IDENTIFIER.match(name):
        raise InputInvalid(
            f"database name {name!r} is not a plain identifier (lower-case letters, digits, _; at most 63)"
        )


def _describe(params: dict[str, Any]) -> str:
    user = params.get("user") or "?"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{user}@{host}:{port}/{params.get('dbname') or user}"


def _url(params: dict[str, Any]) -> str:
    """A ``postgresql://`` URL for libpq parameters (socket hosts and other options in the query string)."""
    auth = ""
    if params.get("user"):
        auth = quote(str(params["user"]), safe="")
        if params.get("password"):
            auth += ":" + quote(str(params["password"]), safe="")
        auth += "@"
    host = str(params.get("host") or "")
    query = {k: str(v) for k, v in params.items() if k not in ("user", "password", "host", "port", "dbname")}
    netloc = ""
    if host.startswith("/"):
        query["host"] = host
    elif host:
        netloc = f"[{host}]" if ":" in host else host
    if params.get("port"):
        if netloc:
            netloc += f":{params['port']}"
        else:
            query["port"] = str(params["port"])
    tail = f"?{urlencode(query)}" if query else ""
    return f"postgresql://{auth}{netloc}/{quote(str(params.get('dbname') or ''), safe='')}{tail}"


def _translate(e: psycopg.Error, what: str, password: str | None) -> GreenlightError:
    """Map a psycopg error to a Greenlight error by SQLSTATE (or, on connect, by libpq's message);
    the SQLSTATE stays on it (``code``)."""
    message = f"{what}: {redact(str(e).strip(), password)}"
    state = e.sqlstate or ""
    text = str(e)
    code = state or None
    if state.startswith("28") or "password authentication failed" in text or "no pg_hba.conf entry" in text:
        return Forbidden(message, code=code)
    if state == "3D000" or (not state and re.search(r'database "[^"]*" does not exist', text)):
        return NotFound(message, code=code)
    if state in ("42P01", "42883", "42703"):  # undefined table, function, column
        return NotFound(message, code=code)
    if state in ("42P04", "23505"):  # duplicate database, unique violation
        return Conflict(message, code=code)
    if state.startswith(_TRANSIENT_SQLSTATE_CLASSES) or (
        not state and isinstance(e, psycopg.OperationalError)
    ):
        return TransientError(message, code=code)
    if state.startswith(("42", "22")):  # syntax or access rule; data exception
        return InputInvalid(message, code=code)
    return PermanentError(message, code=code)


# --- dump formats --------------------------------------------------------------------------------


def detect_dump_format(path: Path) -> str:
    """The dump's format from its magic bytes: plain, plain-gzip, custom, directory (toc.dat) or tar.

    Raises BackupInvalid when ``path`` is missing, empty or none of these.
    """
    if path.is_dir():
        if (path / "toc.dat").is_file():
            return "directory"
        raise BackupInvalid(f"{path} is a directory without toc.dat: not a directory-format dump")
    try:
        with path.open("rb") as f:
            head = f.read(512)
    except FileNotFoundError:
        raise BackupInvalid(f"dump {path} does not exist") from None
    except OSError as e:
        raise BackupInvalid(f"dump {path} cannot be read: {e.strerror}") from e
    if not head:
        raise BackupInvalid(f"dump {path} is empty")
    if head.startswith(b"PGDMP"):
        return "custom"
    if head.startswith(b"\x1f\x8b"):
        if _gunzip_head(path).startswith(b"PGDMP"):
            raise BackupInvalid(
                f"{path} is a gzip-compressed custom-format archive; pg_restore cannot read it"
            )
        return "plain-gzip"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if b"\x00" not in head and _is_text(head):
        return "plain"
    raise BackupInvalid(f"{path} is not a PostgreSQL dump (unrecognised first bytes {head[:8]!r})")


def _gunzip_head(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read(5)
    except (OSError, EOFError, zlib.error):
        return b""


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start > len(head) - 4  # a multi-byte character cut by the 512-byte window
    return True


def dump_bytes(path: Path) -> int:
    """The size of a dump: the file's, or the sum of a directory dump's files."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# --- restore -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    """A finished restore: wall time, dump format, bytes read from the dump, the tool's stderr tail."""

    seconds: float
    format: str
    bytes_in: int
    stderr_tail: str


def restore(
    path: Path,
    target_url: str,
    fmt: str | None = None,
    jobs: int = 2,
    bin_dir: str | Path | None = None,
    timeout_s: float = 3600,
) -> RestoreResult:
    """Restore the dump at ``path`` into the (empty) database at ``target_url``.

    plain / plain-gzip: ``psql --single-transaction`` fed from a streaming reader; a dump that ends
    early (no pg_dump trailer, truncated gzip) is refused and nothing is committed.
    custom / directory / tar: ``pg_restore --no-owner --no-privileges --exit-on-error`` (``-j jobs``
    except for tar); a failed archive restore may leave part of the data behind, so restore into
    a scratch database and drop it. Raises InputInvalid when the tool is older than the server, BackupInvalid
    when the dump does not restore (with the tool's stderr tail), TransientError on timeout.
    """
    fmt = fmt or detect_dump_format(path)
    if fmt not in DUMP_FORMATS:
        raise InputInvalid(f"dump format {fmt!r} is not one of {', '.join(DUMP_FORMATS)}")
    if jobs < 1:
        raise InputInvalid(f"restore jobs must be at least 1, not {jobs}")
    if not path.exists():
        raise BackupInvalid(f"dump {path} does not exist")
    target = Postgres(target_url)
    tool = pg_tool("psql" if fmt.startswith("plain") else "pg_restore", bin_dir)
    _check_tool_version(tool, target)
    conninfo, env = _tool_connection(target)
    started = time.monotonic()
    if fmt.startswith("plain"):
        bytes_in, tail = _restore_plain(path, fmt == "plain-gzip", tool, conninfo, env, timeout_s, target)
    else:
        bytes_in, tail = _restore_archive(path, fmt, jobs, tool, conninfo, env, timeout_s, target)
    return RestoreResult(seconds=time.monotonic() - started, format=fmt, bytes_in=bytes_in, stderr_tail=tail)


def _check_tool_version(tool: Path, target: Postgres) -> None:
    tool_major = tool_major_version(tool)
    server_major = target.server_major_version()
    if tool_major < server_major:
        raise InputInvalid(
            f"{tool} is PostgreSQL {tool_major} but the target server {target.where} is PostgreSQL "
            f"{server_major}: use client tools at least as new as the server (set {PG_BIN_ENV})"
        )


def _tool_connection(target: Postgres) -> tuple[str, dict[str, str]]:
    """A conninfo without the password for the tool's command line, and its environment with PGPASSWORD."""
    params = {k: str(v) for k, v in target._params.items() if k != "password"}
    return make_conninfo(**params), tool_environment(target)


def tool_environment(target: Postgres) -> dict[str, str]:
    """The environment a client tool runs with: only ``TOOL_ENV_NAMES`` / ``TOOL_ENV_PREFIXES`` of ours,
    with the URL's password as ``PGPASSWORD`` (when it has one), a connect timeout and an application name."""
    env = {k: v for k, v in os.environ.items() if k in TOOL_ENV_NAMES or k.startswith(TOOL_ENV_PREFIXES)}
    env["PGCONNECT_TIMEOUT"] = str(max(1, math.ceil(target.connect_timeout_s)))
    env["PGAPPNAME"] = "greenlight-restore"
    if target._password is not None:
        env["PGPASSWORD"] = target._password
    return env


def _tail(err: IO[bytes], target: Postgres) -> str:
    err.flush()
    err.seek(0, os.SEEK_END)
    size = err.tell()
    err.seek(max(0, size - 4 * STDERR_TAIL_CHARS))
    text = err.read().decode("utf-8", errors="replace")
    return redact(text, target._password)[-STDERR_TAIL_CHARS:].strip()


class _Feeder(threading.Thread):
    """Copies a (gzipped) plain dump into psql's stdin in chunks; on a bad dump, kills psql first.

    Killing psql before its stdin is closed means it never reaches end of input, so its single
    transaction is never committed.

    No psql meta-command in the dump can run. A plain dump is a psql script, and psql runs any
    backslash command in it: ``\\! cmd`` or ``\\o |cmd`` a shell command, ``\\copy ... program``,
    ``\\connect`` elsewhere, ``\\set ON_ERROR_STOP off``. So the first line psql reads is
    ``\\restrict <key>``, with a random key of ours that is never written anywhere else: from there
    psql (18, 17.6, 16.10, 15.14, 14.19, 13.22 and later) refuses every meta-command except
    ``\\unrestrict <that key>``, and with ON_ERROR_STOP the restore stops at the first one.

    This relies on psql itself, not on a filter of ours refusing lines that start with a
    backslash: psql's lexer finds a backslash command anywhere (also after a statement on the
    same line), and only psql knows where COPY data starts and ends (data lines may start with a
    backslash, and psql sends them to the server as data, restricted or not). The dump's own
    ``\\restrict`` (pg_dump 18 writes one after its header comments, and ``\\unrestrict`` with the
    same key at its end) is not trusted: a hostile dump would not contain it, or would unrestrict
    itself with the key it knows. psql refuses a second ``\\restrict``, so the dump's own
    ``\\restrict`` line is left out, and so is every later line that is exactly
    ``\\restrict <its key>`` or ``\\unrestrict <its key>``; no other line is touched (its key is
    random per dump, so no data line of a real dump is one of those). A hostile dump choosing
    these lines can only break its own restore: psql stays restricted whatever it writes. There
    is no ``\\unrestrict`` of ours at the end: nothing needs to run after the dump.
    """

    def __init__(self, path: Path, gzipped: bool, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(name="greenlight-restore-feeder", daemon=True)
        self.path, self.gzipped, self.proc = path, gzipped, proc
        self.error: str | None = None
        self.bytes_in = 0
        self._key = secrets.token_hex(32).encode("ascii")
        self._own: re.Pattern[bytes] | None = None  # the dump's own (un)restrict lines, once known
        self._own_key = b""

    def run(self) -> None:
        stdin = self.proc.stdin
        assert stdin is not None
        try:
            self._copy(stdin)
        except BrokenPipeError:
            pass  # psql stopped reading: its exit status and stderr say why
        except EOFError:
            self._fail("the gzip stream ends early: the dump is truncated")
        except (OSError, zlib.error) as e:
            self._fail(f"the dump cannot be read or decompressed: {e}")
        finally:
            try:
                stdin.close()
            except OSError:
                pass

    def _copy(self, stdin: IO[bytes]) -> None:
        stdin.write(b"\\restrict " + self._key + b"\n")
        tail = b""
        carry = b""  # the last line read so far, not yet ended by a newline
        in_long_line = False  # carry was too long to hold: its start has been sent already
        first = True
        with self.path.open("rb") as raw:
            source: io.BufferedIOBase = gzip.GzipFile(fileobj=raw, mode="rb") if self.gzipped else raw
            while chunk := source.read(CHUNK_BYTES):
                tail = (tail + chunk)[-TRAILER_WINDOW_BYTES:]
                if first:
                    chunk, first = self._own_restrict(chunk), False
                buf = carry + chunk
                cut = buf.rfind(b"\n") + 1
                if cut == 0 and len(buf) <= CHUNK_BYTES:
                    carry = buf
                    continue
                if cut == 0:  # one line longer than a chunk: not one of the dump's (un)restrict lines
                    stdin.write(buf)
                    carry, in_long_line = b"", True
                    continue
                start = buf.index(b"\n") + 1 if in_long_line else 0
                stdin.write(buf[:start] + self._lines(buf[start:cut]))
                carry, in_long_line = buf[cut:], False
            if carry:
                stdin.write(carry if in_long_line else self._lines(carry))
            self.bytes_in = raw.tell()
        if PLAIN_TRAILER not in tail:
            self._fail("it ends without pg_dump's 'dump complete' trailer: the dump is truncated")

    def _own_restrict(self, head: bytes) -> bytes:
        """The dump's first chunk without its own \\restrict line; from then on, its key's lines are left out."""
        match = _DUMP_RESTRICT.match(head)
        if match is None:
            return head
        self._own_key = match.group(1)
        key = re.escape(self._own_key)
        self._own = re.compile(rb"^\\(?:un)?restrict " + key + rb"\r?(?:\n|\Z)", re.MULTILINE)
        return head[: match.start(1) - len(b"\\restrict ")] + head[match.end() :]

    def _lines(self, lines: bytes) -> bytes:
        """Whole lines of the dump as psql is to read them: without the dump's own (un)restrict lines."""
        if self._own is None or self._own_key not in lines:  # the usual chunk: a quick search, no regex
            return lines
        return self._own.sub(b"", lines)

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.proc.kill()


def _restore_plain(
    path: Path,
    gzipped: bool,
    tool: Path,
    conninfo: str,
    env: dict[str, str],
    timeout_s: float,
    target: Postgres,
) -> tuple[int, str]:
    argv = [str(tool), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction", "-d", conninfo]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err, env=env)
        feeder = _Feeder(path, gzipped, proc)
        feeder.start()
        try:
            code = _wait(proc, timeout_s, f"restore of {path.name} into {target.where}")
        finally:
            feeder.join()  # psql has exited, so the feeder's next write fails and it ends
        tail = _tail(err, target)
    if feeder.error is not None:
        raise BackupInvalid(f"{path.name} does not restore into {target.where}: {feeder.error}")
    if code != 0 and "invalid command \\restrict" in tail:
        raise InputInvalid(
            f"{tool} cannot restrict the meta-commands of a dump (\\restrict needs psql 18, 17.6, 16.10, "
            f"15.14, 14.19, 13.22 or newer), so it may not restore {path.name}: {tail}"
        )
    if code != 0 and "backslash commands are restricted" in tail:
        raise BackupInvalid(
            f"{path.name} does not restore into {target.where}: it holds a psql meta-command (a "
            f"backslash command, such as \\! which runs a shell command), refused: psql exit {code}: {tail}"
        )
    if code != 0:
        raise BackupInvalid(f"{path.name} does not restore into {target.where}: psql exit {code}: {tail}")
    return feeder.bytes_in, tail


def _restore_archive(
    path: Path,
    fmt: str,
    jobs: int,
    tool: Path,
    conninfo: str,
    env: dict[str, str],
    timeout_s: float,
    target: Postgres,
) -> tuple[int, str]:
    argv = [str(tool), "--no-owner", "--no-privileges", "--exit-on-error", f"--format={fmt[0]}"]
    if fmt != "tar" and jobs > 1:
        argv.append(f"--jobs={jobs}")
    argv += ["-d", conninfo, str(path)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, env=env
        )
        code = _wait(proc, timeout_s, f"restore of {path.name} into {target.where}")
        tail = _tail(err, target)
    if code != 0:
        if "unsupported version" in tail:
            raise InputInvalid(f"{tool} is too old for {path.name}: {tail}")
        raise BackupInvalid(
            f"{path.name} does not restore into {target.where}: pg_restore exit {code}: {tail}"
        )
    return dump_bytes(path), tail


def _wait(proc: subprocess.Popen[bytes], timeout_s: float, what: str) -> int:
    """Wait for ``proc``; on timeout kill it and raise TransientError."""
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise TransientError(f"{what} did not finish within {timeout_s:.0f}s") from None
