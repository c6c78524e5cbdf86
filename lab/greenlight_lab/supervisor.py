"""``greenlight lab up | down | status | env``: start and stop the lab's processes by PID."""

from __future__ import annotations

import concurrent.futures
import importlib.metadata
import json
import math
import os
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from greenlight_lab import postgres as labpg
from greenlight_lab.cloudflare import READONLY_TOKEN_ENV as CLOUDFLARE_READONLY_TOKEN_ENV
from greenlight_lab.cloudflare import TOKEN_ENV as CLOUDFLARE_TOKEN_ENV
from greenlight_lab.gcs import ensure_buckets, start_fake_gcs
from greenlight_lab.packages import PACKAGES_TOKEN_ENV
from greenlight_lab.proxy import DATA_PLANES, DEFAULT_DATA_PLANE, DEFAULT_ENDPOINT_DELAY_S
from greenlight_lab.registry import REGISTRY_PASSWORD_ENV, REGISTRY_USERNAME_ENV
from greenlight_lab.state import (
    APP_DATABASE,
    BUCKETS,
    DEFAULT_GATEWAY_PROGRAM_S,
    DEFAULT_INGESTION_DELAY_S,
    DEFAULT_SCRAPE_INTERVAL_S,
    LAB_APPROVAL_SIGNING_KEY,
    LAB_ENVIRONMENTS,
    PROJECT,
    REPO_ROOT,
    LabState,
    free_port,
    listening_socket,
    pid_alive,
    stop_pid,
)

SLACK_TOKEN = "xoxb-lab-token"  # the lab's stand-in accepts any xoxb- token; not a real secret
BASELINE_TAG = "baseline"
APP_NAMESPACES = ("sma-staging", "sma-production")
DATA_PLANE_ENV = "GREENLIGHT_LAB_DATA_PLANE"
ENDPOINT_DELAY_ENV = "GREENLIGHT_LAB_ENDPOINT_DELAY_S"
SCRAPE_INTERVAL_ENV = "GREENLIGHT_LAB_SCRAPE_INTERVAL_S"
INGESTION_DELAY_ENV = "GREENLIGHT_LAB_INGESTION_DELAY_S"
GATEWAY_PROGRAM_ENV = "GREENLIGHT_LAB_GATEWAY_PROGRAM_S"
# in the lab directory: keys data_plane, endpoint_delay_s, scrape_interval_s, ingestion_delay_s
LAB_CONFIG = "lab.yaml"
#: where the Prefect server keeps its database (``greenlight lab up --prefect-db``, env
#: GREENLIGHT_LAB_PREFECT_DB, lab.yaml prefect_db): SQLite in the lab directory (the default: its
#: migrated empty database is cached, so it starts fastest), or a database of its own on the lab's
#: PostgreSQL, as a server that several workers share runs
PREFECT_DB_ENV = "GREENLIGHT_LAB_PREFECT_DB"
PREFECT_DBS = ("sqlite", "postgres")
DEFAULT_PREFECT_DB = "sqlite"
PREFECT_DATABASE = "prefect"
#: the work pool of prefect.yaml's deployments (made by ``greenlight setup``); the lab's workers poll it
WORK_POOL = "greenlight-local"


class LabError(RuntimeError):
    """The lab could not start or stop; the message says which part and why."""


def cache_dir() -> Path:
    """Kept between labs (generated dumps): $GREENLIGHT_CACHE or ~/.cache/greenlight."""
    base = os.environ.get("GREENLIGHT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "greenlight"
    )
    return Path(base)


def _prefect_db_template() -> Path:
    return cache_dir() / f"prefect-{importlib.metadata.version('prefect')}.db"


def _save_prefect_template(db: Path, template: Path) -> None:
    """Keep a consistent copy of a freshly migrated, still empty Prefect database."""
    template.parent.mkdir(parents=True, exist_ok=True)
    tmp = template.with_suffix(f".tmp{os.getpid()}")
    with sqlite3.connect(db) as src, sqlite3.connect(tmp) as dst:
        src.backup(dst)
    tmp.replace(template)


def _log_tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait(what: str, check: Callable[[], bool], timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.1)
    tail = f"\n--- {log} ---\n{_log_tail(log)}" if log else ""
    raise LabError(f"{what} not ready within {timeout_s:.0f} s{tail}")


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as r:
        return 200 <= r.status < 300


def control(state: LabState, method: str, path: str, body: Any = None) -> Any:
    """Call the lab daemon's control API."""
    url = state.env["GREENLIGHT_LAB_CONTROL"] + path
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        detail = e.read().decode(errors="replace")
        raise LabError(f"lab control {method} {path}: HTTP {e.code}: {detail}") from e


def _spawn(
    name: str,
    argv: list[str],
    log: Path,
    env: dict[str, str] | None = None,
    pass_fds: tuple[int, ...] = (),
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **(env or {})},
            pass_fds=pass_fds,
        )


def _kubeconfig(path: Path, ports: dict[str, int]) -> None:
    clusters, contexts = [], []
    for ctx, key in (("lab-primary", "kube-primary"), ("lab-dr", "kube-dr")):
        clusters.append({"name": ctx, "cluster": {"server": f"http://127.0.0.1:{ports[key]}"}})
        contexts.append({"name": ctx, "context": {"cluster": ctx, "user": "lab", "namespace": "default"}})
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": clusters,
                "contexts": contexts,
                "users": [{"name": "lab", "user": {"token": "lab"}}],
                "current-context": "lab-primary",
            }
        )
    )


def _environment(
    directory: Path, ports: dict[str, int], pg: labpg.PgInstance, lab_secrets: dict[str, str]
) -> dict[str, str]:
    return {
        **lab_secrets,
        "GREENLIGHT_LAB_WEBHOOK_URL": f"http://127.0.0.1:{ports['webhook']}",
        "GREENLIGHT_WEBHOOK_STATE": str(directory / "webhook.sqlite"),
        "GREENLIGHT_LAB_DIR": str(directory),
        "GREENLIGHT_LAB_CONTROL": f"http://127.0.0.1:{ports['control']}",
        "GREENLIGHT_ENVIRONMENTS": str(LAB_ENVIRONMENTS),
        "KUBECONFIG": str(directory / "kubeconfig"),
        "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{ports['gcs-front']}",
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "GREENLIGHT_MONITORING_ENDPOINT": f"127.0.0.1:{ports['monitoring']}",
        "GREENLIGHT_MONITORING_INSECURE": "1",
        "GREENLIGHT_SLACK_BASE_URL": f"http://127.0.0.1:{ports['slack']}/api/",
        "SLACK_BOT_TOKEN": SLACK_TOKEN,
        # alerts: PagerDuty's Events API and the SMTP relay at the lab's stand-ins
        "GREENLIGHT_PAGERDUTY_EVENTS_URL": f"http://127.0.0.1:{ports['pagerduty']}",
        "GREENLIGHT_SMTP_SERVER": f"127.0.0.1:{ports['smtp']}",
        "GREENLIGHT_REGISTRY_MIRRORS": f"ghcr.io=http://127.0.0.1:{ports['registry']}",
        # GitHub's Packages API (image cleanup) at the lab's stand-in
        "GREENLIGHT_GITHUB_API_URL": f"http://127.0.0.1:{ports['packages']}",
        # Cloudflare's API (DNS failover, the drill's record) at the lab's stand-in
        "GREENLIGHT_CLOUDFLARE_API_URL": f"http://127.0.0.1:{ports['cloudflare']}/client/v4",
        "GREENLIGHT_DATABASE_URL": pg.url(APP_DATABASE),
        "GREENLIGHT_SCRATCH_DATABASE_URL": pg.url("postgres"),
        "GREENLIGHT_PG_BIN": str(pg.bin_dir),
        "PREFECT_API_URL": f"http://127.0.0.1:{ports['prefect']}/api",
        # the links Greenlight prints into the Prefect UI (flows/release.py ui_url)
        "PREFECT_UI_URL": f"http://127.0.0.1:{ports['prefect']}",
    }


def _import_before_threads() -> None:
    """Import, on this thread, what the seeding and bootstrap threads import first. Two threads
    importing ``requests`` at once (google-cloud-storage on one, kubernetes' auth on the other) can
    meet in Python's import deadlock avoidance, and one is handed the half-initialised module:
    ``ImportError: cannot import name 'parse_dict_header' from partially initialized module
    'requests.utils'`` (seen once in CI from ``lab up``)."""
    import google.cloud.storage  # noqa: F401
    import kubernetes.client  # noqa: F401
    import requests  # noqa: F401

    import greenlight.clients.kube
    import greenlight.clients.postgres  # noqa: F401
    import greenlight_lab.bootstrap
    import greenlight_lab.seed  # noqa: F401


def _seed_database_and_dumps(directory: Path, pg: labpg.PgInstance, env: dict[str, str]) -> dict[str, Any]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from greenlight.clients.postgres import Postgres
    from greenlight_lab.seed import make_nightly_dumps, seed_app_database, upload_dumps

    ensure_buckets(env["STORAGE_EMULATOR_HOST"], PROJECT, BUCKETS)
    Postgres(pg.url("postgres")).create_database(APP_DATABASE)
    now = datetime.now(UTC)
    counts = seed_app_database(pg.url(APP_DATABASE), now=now)
    dumps = make_nightly_dumps(
        pg, APP_DATABASE, directory / "dumps", now=now, cache_dir=cache_dir() / "dumps"
    )
    # the storage client finds the emulator in the environment: this lab's, for this upload only
    # (a process may hold another lab, as the test session does: its clients must keep theirs)
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = env["STORAGE_EMULATOR_HOST"]
    try:
        client = storage.Client(project=PROJECT, credentials=AnonymousCredentials())
        upload_dumps(dumps, BUCKETS[0], BUCKETS[1], client)
    finally:
        if before is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = before
    return {"rows": counts, "dumps": [name for _, name, _ in dumps]}


def _bootstrap_apps(env: dict[str, str], data_plane: str = DEFAULT_DATA_PLANE) -> dict[str, Any]:
    """Push the baseline images and deploy every app of staging and production as blue (their
    Services annotated for container-native load balancing when the lab's data plane is neg, as
    GKE's are, so that Greenlight sees what it runs behind)."""
    from greenlight.clients.kube import Kube
    from greenlight_lab.bootstrap import bootstrap_environment

    state_env = env
    pushed: dict[str, str] = {}
    kube = Kube.connect(context="lab-primary", kubeconfig=env["KUBECONFIG"])
    try:
        out = {}
        for name in ("staging", "production"):
            out[name] = bootstrap_environment(
                kube, name, Path(state_env["GREENLIGHT_ENVIRONMENTS"]), pushed, env, neg=data_plane == "neg"
            )
        return out
    finally:
        kube.close()


def _lab_config(directory: Path) -> tuple[Path, dict[str, Any]]:
    path = directory / LAB_CONFIG
    if not path.is_file():
        return path, {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise LabError(f"{path}: not valid YAML: {e}") from e
    if loaded is not None and not isinstance(loaded, dict):
        raise LabError(
            f"{path}: expected a mapping with keys data_plane, endpoint_delay_s, scrape_interval_s, "
            "ingestion_delay_s"
        )
    return path, loaded or {}


def _setting(directory: Path, flag: Any, env: str, key: str, default: Any) -> tuple[Any, str]:
    """A lab setting from the first that sets it: flag, environment, ``DIR/lab.yaml``, default; and where from."""
    path, config = _lab_config(directory)
    if flag is not None:
        return flag, "the command line"
    if os.environ.get(env):
        return os.environ[env], env
    if config.get(key) is not None:
        return config[key], f"{path} ({key})"
    return default, "the default"


def _seconds(raw: Any, what: str, source: str, positive: bool = False) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = math.nan
    ok = 0 < value < math.inf if positive else 0 <= value < math.inf  # also refuses NaN
    if not ok:
        raise LabError(
            f"{what} {raw!r} from {source} is not a number of seconds {'> 0' if positive else '>= 0'}"
        )
    return value


def data_plane_settings(
    directory: Path, data_plane: str | None = None, endpoint_delay_s: float | None = None
) -> tuple[str, float]:
    """The Services' default data plane and kube-proxy's endpoint delay for a lab in ``directory``.

    Each comes from the first that sets it: the arguments (the CLI's flags), the environment
    (GREENLIGHT_LAB_DATA_PLANE, GREENLIGHT_LAB_ENDPOINT_DELAY_S), ``DIR/lab.yaml`` (keys
    ``data_plane``, ``endpoint_delay_s``), the defaults (kube-proxy, 1.5 s).
    """
    mode, source = _setting(directory, data_plane, DATA_PLANE_ENV, "data_plane", DEFAULT_DATA_PLANE)
    if mode not in DATA_PLANES:
        raise LabError(f"unknown data plane {mode!r} from {source}: use one of {', '.join(DATA_PLANES)}")
    raw_delay, source = _setting(
        directory, endpoint_delay_s, ENDPOINT_DELAY_ENV, "endpoint_delay_s", DEFAULT_ENDPOINT_DELAY_S
    )
    return str(mode), _seconds(raw_delay, "endpoint delay", source)


def monitoring_settings(
    directory: Path, scrape_interval_s: float | None = None, ingestion_delay_s: float | None = None
) -> tuple[float, float]:
    """The Monitoring stand-in's scrape interval and ingestion delay for a lab in ``directory``.

    Each comes from the first that sets it: the arguments (the CLI's flags), the environment
    (GREENLIGHT_LAB_SCRAPE_INTERVAL_S, GREENLIGHT_LAB_INGESTION_DELAY_S), ``DIR/lab.yaml`` (keys
    ``scrape_interval_s``, ``ingestion_delay_s``), the defaults (1 s, 1 s).
    """
    raw, source = _setting(
        directory, scrape_interval_s, SCRAPE_INTERVAL_ENV, "scrape_interval_s", DEFAULT_SCRAPE_INTERVAL_S
    )
    interval = _seconds(raw, "scrape interval", source, positive=True)
    raw, source = _setting(
        directory, ingestion_delay_s, INGESTION_DELAY_ENV, "ingestion_delay_s", DEFAULT_INGESTION_DELAY_S
    )
    return interval, _seconds(raw, "ingestion delay", source)


def gateway_program_setting(directory: Path, gateway_program_s: float | None = None) -> float:
    """How long the lab's Gateway controller takes to program a change (greenlight_lab.gateway),
    from the first that sets it: the argument (``--gateway-program-s``),
    GREENLIGHT_LAB_GATEWAY_PROGRAM_S, ``DIR/lab.yaml`` (``gateway_program_s``), the default (2 s)."""
    raw, source = _setting(
        directory, gateway_program_s, GATEWAY_PROGRAM_ENV, "gateway_program_s", DEFAULT_GATEWAY_PROGRAM_S
    )
    return _seconds(raw, "gateway programming delay", source)


def prefect_db_setting(directory: Path, prefect_db: str | None = None) -> str:
    """Where the lab's Prefect server keeps its database: "sqlite" or "postgres", from the first that
    sets it: the argument (``--prefect-db``), GREENLIGHT_LAB_PREFECT_DB, ``DIR/lab.yaml``
    (``prefect_db``), the default (sqlite)."""
    value, source = _setting(directory, prefect_db, PREFECT_DB_ENV, "prefect_db", DEFAULT_PREFECT_DB)
    if value not in PREFECT_DBS:
        raise LabError(
            f"unknown Prefect database {value!r} from {source}: use one of {', '.join(PREFECT_DBS)}"
        )
    return str(value)


def profile_ingestion_delays() -> dict[str, float]:
    """The lab profiles' ``monitoring.ingestion_delay_s`` by environment (unreadable ones left out)."""
    out: dict[str, float] = {}
    for path in sorted(LAB_ENVIRONMENTS.glob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text()) or {}
            out[path.stem] = float(doc["monitoring"]["ingestion_delay_s"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
            continue
    return out


def _monitoring_notes(ingestion_delay_s: float) -> list[str]:
    late = {env: d for env, d in profile_ingestion_delays().items() if d <= ingestion_delay_s}
    if not late:
        return []
    names = ", ".join(f"{env} {d:g} s" for env, d in sorted(late.items()))
    return [
        f"note: Monitoring's ingestion delay {ingestion_delay_s:g} s is not below the lab profiles' "
        f"monitoring.ingestion_delay_s ({names}): their gates and bakes will read windows before "
        "all of the windows' points are readable"
    ]


def up(
    directory: Path,
    echo: Callable[[str], None] = print,
    data_plane: str | None = None,
    endpoint_delay_s: float | None = None,
    scrape_interval_s: float | None = None,
    ingestion_delay_s: float | None = None,
    prefect_db: str | None = None,
    workers: int = 0,
    worker_limit: int | None = None,
    gateway_program_s: float | None = None,
) -> LabState:
    """Start the lab (or report the one running there) and return its state.

    ``data_plane`` and ``endpoint_delay_s`` override the environment and ``DIR/lab.yaml``
    (see ``data_plane_settings``), as ``scrape_interval_s`` and ``ingestion_delay_s`` do for
    the Monitoring stand-in (see ``monitoring_settings``) and ``prefect_db`` for the Prefect
    server's database (see ``prefect_db_setting``). ``workers`` Prefect process workers poll the
    pool greenlight-local once the lab is up (each running at most ``worker_limit`` flow runs at
    once, when given); they run the deployments of prefect.yaml from this checkout.
    """
    if workers < 0 or (worker_limit is not None and worker_limit < 1):
        raise LabError(f"workers must be >= 0 (got {workers}) and a worker limit >= 1 (got {worker_limit})")
    directory.mkdir(parents=True, exist_ok=True)
    prefect_db = prefect_db_setting(directory, prefect_db)
    gateway_program_s = gateway_program_setting(directory, gateway_program_s)
    data_plane, endpoint_delay_s = data_plane_settings(directory, data_plane, endpoint_delay_s)
    scrape_interval_s, ingestion_delay_s = monitoring_settings(
        directory, scrape_interval_s, ingestion_delay_s
    )
    existing = LabState.load(directory)
    if existing and existing.pids and all(existing.alive().values()):
        echo(f"lab already running in {directory}")
        running = (existing.data_plane or "mesh", existing.endpoint_delay_s)
        if running[0] != data_plane or (data_plane == "kube-proxy" and running[1] != endpoint_delay_s):
            echo(
                f"note: it runs data plane {running[0]}; for {data_plane} stop it first (greenlight lab down)"
            )
        if (existing.scrape_interval_s, existing.ingestion_delay_s) != (scrape_interval_s, ingestion_delay_s):
            echo(
                f"note: its Monitoring has {describe_monitoring(existing)}; for scrape interval "
                f"{scrape_interval_s:g} s, ingestion delay {ingestion_delay_s:g} s stop it first "
                "(greenlight lab down)"
            )
        if (existing.prefect_db or DEFAULT_PREFECT_DB) != prefect_db:
            echo(
                f"note: its Prefect server keeps its database in {describe_prefect(existing)}; for "
                f"{prefect_db} stop it first (greenlight lab down)"
            )
        running_workers = len(worker_names(existing))
        if workers and (running_workers, existing.worker_limit) != (workers, worker_limit):
            echo(
                f"note: it runs {running_workers} worker(s) (limit {existing.worker_limit or 'none'}); for "
                f"{workers} (limit {worker_limit or 'none'}) stop it first (greenlight lab down)"
            )
        return existing
    if existing:
        down(directory, echo=lambda _: None)
    for note in _monitoring_notes(ingestion_delay_s):
        echo(note)
    t0 = time.monotonic()
    state = LabState(
        dir=str(directory),
        started_at=time.time(),
        data_plane=data_plane,
        endpoint_delay_s=endpoint_delay_s,
        scrape_interval_s=scrape_interval_s,
        ingestion_delay_s=ingestion_delay_s,
        prefect_db=prefect_db,
        worker_limit=worker_limit,
        gateway_program_s=gateway_program_s,
    )
    logs = directory / "logs"
    logs.mkdir(exist_ok=True)
    # a lab always starts fresh: nothing of a previous run's cluster, database or catalogue survives
    for stale in ("daemon.json", "images.json", "kubeconfig"):
        (directory / stale).unlink(missing_ok=True)
    labpg.remove(directory / "pgdata")  # a link to the lab's run directory when root
    for stale_dir in ("prefect", "dumps"):
        shutil.rmtree(directory / stale_dir, ignore_errors=True)
    receiver_socket: socket.socket | None = None
    try:
        state.ports["gcs"] = free_port()
        state.ports["prefect"] = free_port()
        state.ports["postgres"] = free_port()
        # the receiver starts last, a minute and thousands of connections later: a port only chosen
        # now could be taken by then (an outgoing connection's ephemeral port, another lab's
        # listener), so the lab listens on it from now on and hands the socket over (--fd)
        receiver_socket = listening_socket()
        state.ports["webhook"] = int(receiver_socket.getsockname()[1])
        # made per lab, as a real platform's are: the GitHub webhook's secret, and the signing
        # secret with which the lab's Slack signs a click to the receiver (greenlight setup puts
        # both in Prefect Secret blocks, where the receiver reads them); and the receiver's key,
        # whose public half the lab's production profile names
        # and the registry's login (its one user; greenlight setup puts it in a Secret block too)
        lab_secrets = {
            "GREENLIGHT_GITHUB_WEBHOOK_SECRET": secrets.token_hex(20),
            "GREENLIGHT_SLACK_SIGNING_SECRET": secrets.token_hex(16),
            "GREENLIGHT_APPROVAL_SIGNING_KEY": LAB_APPROVAL_SIGNING_KEY,
            "GREENLIGHT_REGISTRY_USERNAME": "greenlight-lab",
            "GREENLIGHT_REGISTRY_PASSWORD": secrets.token_hex(16),
            # the token image cleanup deletes package versions with (read:packages, delete:packages)
            "GREENLIGHT_GITHUB_PACKAGES_TOKEN": "ghp_" + secrets.token_hex(18),
            # the routing key of the lab PagerDuty's one service (greenlight setup puts it in a block)
            "GREENLIGHT_PAGERDUTY_ROUTING_KEY": secrets.token_hex(16),
            # Cloudflare API tokens: one that edits the lab zone's DNS, one that only reads it
            "CLOUDFLARE_API_TOKEN": secrets.token_urlsafe(30),
            CLOUDFLARE_READONLY_TOKEN_ENV: secrets.token_urlsafe(30),
        }
        if prefect_db == "sqlite":  # started first: it is the slowest to be ready
            prefect = _start_prefect(state, directory, logs, database_url=None)
        daemon = _spawn(
            "daemon",
            [sys.executable, "-m", "greenlight_lab.daemon", str(directory),
             "--gcs-upstream", f"http://127.0.0.1:{state.ports['gcs']}", "--project", PROJECT,
             "--data-plane", data_plane, "--endpoint-delay-s", repr(endpoint_delay_s),
             "--scrape-interval-s", repr(scrape_interval_s), "--ingestion-delay-s", repr(ingestion_delay_s),
             "--gateway-program-s", repr(gateway_program_s),
             "--slack-request-url", f"http://127.0.0.1:{state.ports['webhook']}/slack/interactions"],
            logs / "daemon.log",
            env={
                "GREENLIGHT_LAB_SLACK_SIGNING_SECRET": lab_secrets["GREENLIGHT_SLACK_SIGNING_SECRET"],
                REGISTRY_USERNAME_ENV: lab_secrets["GREENLIGHT_REGISTRY_USERNAME"],
                REGISTRY_PASSWORD_ENV: lab_secrets["GREENLIGHT_REGISTRY_PASSWORD"],
                PACKAGES_TOKEN_ENV: lab_secrets["GREENLIGHT_GITHUB_PACKAGES_TOKEN"],
                "GREENLIGHT_PAGERDUTY_ROUTING_KEY": lab_secrets["GREENLIGHT_PAGERDUTY_ROUTING_KEY"],
                CLOUDFLARE_TOKEN_ENV: lab_secrets["CLOUDFLARE_API_TOKEN"],
                CLOUDFLARE_READONLY_TOKEN_ENV: lab_secrets[CLOUDFLARE_READONLY_TOKEN_ENV],
            },
        )  # fmt: skip
        state.pids["daemon"] = daemon.pid
        state.save()
        pg = labpg.init_and_start(directory / "pgdata", state.ports["postgres"], logs / "postgres.log")
        state.pids["postgres"] = _postmaster_pid(directory / "pgdata")
        state.timings["postgres"] = time.monotonic() - t0
        if prefect_db == "postgres":  # its own database on the lab's server, made before it starts
            from greenlight.clients.postgres import Postgres

            url = Postgres(pg.url("postgres")).create_database(PREFECT_DATABASE)
            prefect = _start_prefect(
                state, directory, logs, database_url=url.replace("postgresql://", "postgresql+asyncpg://", 1)
            )
        daemon_json = directory / "daemon.json"
        _wait("lab daemon", lambda: daemon.poll() is None and daemon_json.is_file(), 30, logs / "daemon.log")
        state.ports.update(json.loads(daemon_json.read_text())["ports"])
        state.timings["daemon"] = time.monotonic() - t0
        gcs = start_fake_gcs(state.ports["gcs"], f"127.0.0.1:{state.ports['gcs-front']}", logs / "gcs.log")
        state.pids["gcs"] = gcs.pid
        _kubeconfig(directory / "kubeconfig", state.ports)
        state.env = _environment(directory, state.ports, pg, lab_secrets)
        state.save()
        _import_before_threads()
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            seeded = pool.submit(_seed_database_and_dumps, directory, pg, state.env)
            apps = pool.submit(_bootstrap_apps, state.env, data_plane)
            seeded.result()
            state.timings["seed"] = time.monotonic() - t0
            apps.result()
            state.timings["apps"] = time.monotonic() - t0
        _wait(
            "Prefect server",
            lambda: prefect.poll() is None and _http_ok(state.env["PREFECT_API_URL"] + "/health"),
            90 if prefect_db == "sqlite" else 180,  # migrations on a new PostgreSQL database
            logs / "prefect.log",
        )
        state.timings["prefect"] = time.monotonic() - t0
        template = _prefect_db_template()
        if prefect_db == "sqlite" and not template.is_file():
            _save_prefect_template(directory / "prefect" / "prefect.db", template)
        _start_receiver(state, logs, receiver_socket)
        state.timings["receiver"] = time.monotonic() - t0
        if workers:
            _start_workers(state, logs, workers, worker_limit)
            state.timings["workers"] = time.monotonic() - t0
    except BaseException:
        if receiver_socket is not None:
            receiver_socket.close()
        state.save()
        down(directory, echo=lambda _: None)
        raise
    state.ready_s = round(time.monotonic() - t0, 2)
    state.save()
    echo(
        f"lab up in {state.ready_s:.1f} s ({directory}); data plane {describe_data_plane(state)}; "
        f"monitoring {describe_monitoring(state)}; Prefect on {describe_prefect(state)}"
    )
    return state


def _start_prefect(
    state: LabState, directory: Path, logs: Path, database_url: str | None
) -> subprocess.Popen[bytes]:
    """``prefect server start`` on the lab's port: on SQLite in ``DIR/prefect`` (from the cached
    migrated empty database when there is one), or on ``database_url`` (postgresql+asyncpg://...,
    handed to the server only: it carries the password)."""
    prefect_home = directory / "prefect"
    prefect_home.mkdir(exist_ok=True)
    env = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # sweep expired concurrency leases every 2 s (default 15): a release lock left by
        # a killed run frees soon after its lease ends
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
        # the address the UI's pages call (served as /ui-settings' api_url): this server's,
        # else they call 127.0.0.1:4200 (or an inherited PREFECT_API_URL) and show
        # "Can't connect to Server API"
        "PREFECT_SERVER_UI_API_URL": f"http://127.0.0.1:{state.ports['prefect']}/api",
    }
    if database_url is None:
        template = _prefect_db_template()
        if template.is_file():  # a migrated empty database: saves the server ~10 s of migrations
            shutil.copyfile(template, prefect_home / "prefect.db")
    else:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    prefect = _spawn(
        "prefect",
        [
            sys.executable, "-m", "prefect", "server", "start",
            "--host", "127.0.0.1", "--port", str(state.ports["prefect"]), "--analytics-off",
        ],
        logs / "prefect.log",
        env=env,
    )  # fmt: skip
    state.pids["prefect"] = prefect.pid
    state.save()
    return prefect


def worker_names(state: LabState) -> list[str]:
    """The lab's Prefect workers (``worker-1``, ...), as named in its state and on the server."""
    return sorted((n for n in state.pids if n.startswith("worker-")), key=lambda n: int(n.split("-")[1]))


def deploy_prefect_yaml(env: dict[str, str], timeout_s: float = 240) -> subprocess.CompletedProcess[str]:
    """``prefect --no-prompt deploy --all`` of the checkout's prefect.yaml, with ``env`` (the lab's,
    and the profiles the forms should offer), GREENLIGHT_HOME the checkout; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"], cwd=REPO_ROOT,
        env={**env, "GREENLIGHT_HOME": str(REPO_ROOT)}, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def _start_workers(state: LabState, logs: Path, count: int, limit: int | None) -> None:
    """``count`` Prefect process workers on the pool greenlight-local, named ``worker-1`` ...; they
    run flow runs from this checkout (GREENLIGHT_HOME, prefect.yaml's pull step) with the lab's
    environment. Returns when the server lists every one of them online."""
    env = {**state.env, "GREENLIGHT_HOME": str(REPO_ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    for i in range(1, count + 1):
        name = f"worker-{i}"
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--name", name]
        if limit is not None:
            argv += ["--limit", str(limit)]
        with open(logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen(
                argv, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env={**os.environ, **env},
            )  # fmt: skip
        state.pids[name] = proc.pid
    state.save()
    wanted = set(worker_names(state))

    def online() -> bool:
        dead = [n for n in wanted if not pid_alive(state.pids[n])]
        if dead:
            raise LabError(f"Prefect worker {', '.join(dead)} exited:\n{_log_tail(logs / f'{dead[0]}.log')}")
        return wanted <= {w["name"] for w in pool_workers(state) if w.get("status") == "ONLINE"}

    deadline = time.monotonic() + 120
    while not online():
        if time.monotonic() > deadline:
            raise LabError(f"Prefect workers not online within 120 s\n{_log_tail(logs / 'worker-1.log')}")
        time.sleep(0.5)


def pool_workers(state: LabState) -> list[dict[str, Any]]:
    """The workers the Prefect server knows on greenlight-local (name, status, last heartbeat)."""
    req = urllib.request.Request(
        f"{state.env['PREFECT_API_URL']}/work_pools/{WORK_POOL}/workers/filter",
        data=b"{}",
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return list(json.loads(r.read()))


def describe_prefect(state: LabState) -> str:
    """Where the Prefect server keeps its database and who works its pool, in words."""
    db = state.prefect_db or DEFAULT_PREFECT_DB
    where = f"PostgreSQL (database {PREFECT_DATABASE} on the lab's server)" if db == "postgres" else "SQLite"
    names = worker_names(state)
    if not names:
        return where
    limit = f", at most {state.worker_limit} flow runs each" if state.worker_limit else ""
    return f"{where}; {len(names)} worker(s) on {WORK_POOL} ({', '.join(names)}{limit})"


def _start_receiver(state: LabState, logs: Path, sock: socket.socket) -> None:
    """The receiver of GitHub's webhooks and Slack's clicks (``greenlight webhook serve``), and
    ``greenlight setup`` meanwhile: the Prefect objects and the Secret blocks that the flows and the
    receiver read (the receiver reads its secrets there, as on a real platform, at its first request).
    The lab is a fresh place: setup must create every object it manages, its Secret blocks filled with
    the lab's values (the scratch database URL, the registry login, the Slack token, ...); one it
    skips fails the start."""
    with sock:  # the receiver has its own copy: this one closes once it is handed over
        receiver = _spawn(
            "webhook",
            [sys.executable, "-m", "greenlight.cli", "webhook", "serve", "--fd", str(sock.fileno())],
            logs / "webhook.log",
            env={
                **state.env,
                "GREENLIGHT_GITHUB_WEBHOOK_SECRET": "",
                "GREENLIGHT_GITHUB_WEBHOOK_SECRET_BLOCK": "greenlight-github-webhook-secret",
                "GREENLIGHT_SLACK_SIGNING_SECRET": "",
            },
            pass_fds=(sock.fileno(),),
        )
    state.pids["webhook"] = receiver.pid
    state.save()
    setup = subprocess.run(
        [sys.executable, "-m", "greenlight.cli", "setup"],
        env={**os.environ, **state.env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    (logs / "setup.log").write_text(setup.stdout + setup.stderr)
    if setup.returncode != 0:
        raise LabError(f"greenlight setup failed: {(setup.stdout + setup.stderr)[-800:]}")
    skipped = [line for line in setup.stdout.splitlines() if not line.startswith(("created", "exists"))]
    if skipped:
        raise LabError("greenlight setup left objects out: " + "; ".join(skipped))
    url = state.env["GREENLIGHT_LAB_WEBHOOK_URL"] + "/healthz"
    _wait("webhook receiver", lambda: receiver.poll() is None and _http_ok(url), 60, logs / "webhook.log")


def describe_data_plane(state: LabState) -> str:
    """The lab's default data plane in words, e.g. "kube-proxy (endpoint delay 1.5 s)"."""
    mode = state.data_plane or "mesh"
    if mode == "kube-proxy" and state.endpoint_delay_s is not None:
        return f"{mode} (endpoint delay {state.endpoint_delay_s:g} s)"
    return mode


def describe_monitoring(state: LabState) -> str:
    """The Monitoring stand-in's timings in words, e.g. "scrape interval 1 s, ingestion delay 1 s"."""
    if state.scrape_interval_s is None or state.ingestion_delay_s is None:
        return "scrape interval 1 s, readable at once"  # a lab from before they were selectable
    return f"scrape interval {state.scrape_interval_s:g} s, ingestion delay {state.ingestion_delay_s:g} s"


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def down(directory: Path, echo: Callable[[str], None] = print) -> dict[str, bool]:
    """Stop every process the lab started (by PID). Returns name -> stopped."""
    state = LabState.load(directory)
    if state is None:
        echo(f"no lab in {directory}")
        return {}
    result: dict[str, bool] = {}
    # PostgreSQL last: the Prefect server may keep its database there, and its workers' runs use it
    for name in (*worker_names(state), "webhook", "daemon", "gcs", "prefect", "postgres"):
        if name == "postgres" and (directory / "pgdata" / "postmaster.pid").exists():
            try:
                labpg.stop(directory / "pgdata")
            except Exception as e:
                echo(f"postgres: pg_ctl stop failed ({e}); killing by PID")
        pid = state.pids.get(name)
        if pid:
            result[name] = stop_pid(pid)
    still = [n for n, ok in result.items() if not ok]
    if still:
        raise LabError(f"could not stop: {', '.join(still)} (PIDs {[state.pids[n] for n in still]})")
    # the next up starts afresh anyway; as root the data lives outside the lab directory
    labpg.remove(directory / "pgdata")
    state.path.unlink(missing_ok=True)
    (directory / "daemon.json").unlink(missing_ok=True)
    echo(f"lab down: stopped {', '.join(result) or 'nothing'}")
    return result


def status(directory: Path) -> dict[str, Any]:
    state = LabState.load(directory)
    if state is None:
        return {"running": False, "dir": str(directory)}
    alive = state.alive()
    out: dict[str, Any] = {
        "running": bool(alive) and all(alive.values()),
        "dir": str(directory),
        "processes": {n: {"pid": state.pids[n], "alive": a} for n, a in alive.items()},
        "ports": state.ports,
        "ready_s": state.ready_s,
        "data_plane": state.data_plane,
        "endpoint_delay_s": state.endpoint_delay_s,
        "data_plane_text": describe_data_plane(state),
        "scrape_interval_s": state.scrape_interval_s,
        "ingestion_delay_s": state.ingestion_delay_s,
        "monitoring_text": describe_monitoring(state),
        "prefect_db": state.prefect_db or DEFAULT_PREFECT_DB,
        "workers": worker_names(state),
        "worker_limit": state.worker_limit,
        "prefect_text": describe_prefect(state),
    }
    if alive.get("daemon"):
        try:
            out["daemon"] = control(state, "GET", "/status")
        except Exception as e:
            out["daemon"] = {"error": str(e)}
    return out


def require_running(directory: Path) -> LabState:
    state = LabState.load(directory)
    if state is None or not state.pids.get("daemon") or not pid_alive(state.pids["daemon"]):
        raise LabError(f"no lab running in {directory}: start it with `greenlight lab up`")
    return state
