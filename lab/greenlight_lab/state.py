"""Where the lab keeps its state: ``DIR/lab.json`` (PIDs, ports, the environment it exports)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LAB_ENVIRONMENTS = Path(__file__).resolve().parent / "environments"
BUCKETS = ["sma-db-backups", "sma-db-backups-dr", "sma-config-backups"]
APP_DATABASE = "sma"
PROJECT = "lab-project"
# the lab receiver's private approval key (its public half is release.approval.receiver_keys of
# the lab's production profile): a lab-only key, not a secret of any real platform
LAB_APPROVAL_SIGNING_KEY = "Y157LlYB2GPp5JiIsYX3Qz2sG/hHxCP7hrVjdpGhrIY="
#: the Monitoring stand-in's defaults (``greenlight lab up --scrape-interval-s / --ingestion-delay-s``);
#: the delay stays below the lab profiles' monitoring.ingestion_delay_s (1.5 s), so that the
#: windows they read are complete
DEFAULT_SCRAPE_INTERVAL_S = 1.0
DEFAULT_INGESTION_DELAY_S = 1.0
#: how long the lab's Gateway controller takes to program a change (``greenlight lab up
#: --gateway-program-s``; greenlight_lab.gateway), jitter a third of it
DEFAULT_GATEWAY_PROGRAM_S = 2.0


def lab_dir(explicit: str | Path | None = None) -> Path:
    return Path(explicit or os.environ.get("GREENLIGHT_LAB_DIR") or ".lab").resolve()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket listening on a free port of ``host``: the port stays reserved while it is open."""
    s = socket.socket()
    s.bind((host, 0))
    s.listen(128)
    return s


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def stop_pid(pid: int, timeout_s: float = 10.0) -> bool:
    """SIGTERM the process group (or the process), then SIGKILL after ``timeout_s``. True when it is gone."""
    if not pid_alive(pid):
        return True
    for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 3.0)):
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return True
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return True
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)
    return not pid_alive(pid)


@dataclass
class LabState:
    dir: str
    pids: dict[str, int] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    started_at: float = 0.0
    ready_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    # the Services' default data plane and kube-proxy's endpoint delay the daemon runs with;
    # None in a state file from before they were selectable (such a lab ran the mesh)
    data_plane: str | None = None
    endpoint_delay_s: float | None = None
    # the Monitoring stand-in's scrape interval and ingestion delay; None in a state file from
    # before they were selectable (such a lab ran 1 s scrapes, readable at once)
    scrape_interval_s: float | None = None
    ingestion_delay_s: float | None = None
    # where the Prefect server keeps its database: "sqlite" or "postgres" (None in a state file
    # from before it was selectable: SQLite); the lab's workers are the pids named worker-N, each
    # running at most worker_limit flow runs at once (None: no limit)
    prefect_db: str | None = None
    worker_limit: int | None = None
    # the Gateway controller's programming delay (None in a state file from before Gateways)
    gateway_program_s: float | None = None

    @property
    def path(self) -> Path:
        return Path(self.dir) / "lab.json"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path)

    @classmethod
    def load(cls, directory: Path) -> LabState | None:
        p = directory / "lab.json"
        if not p.is_file():
            return None
        data: dict[str, Any] = json.loads(p.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def gateway_url(self, namespace: str, name: str, cluster: str = "lab-primary") -> str:
        """The base URL of a lab Gateway's listener (``http://127.0.0.1:<port>``), from the
        daemon's control API (``GET /gateways``); KeyError when the lab has no such Gateway."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['control']}/gateways", timeout=10) as r:
            urls: dict[str, str] = json.loads(r.read())
        key = f"{cluster}/{namespace}/{name}"
        if key not in urls:
            raise KeyError(f"no Gateway {key} in the lab (it has: {', '.join(sorted(urls)) or 'none'})")
        return urls[key]

    def alive(self) -> dict[str, bool]:
        return {name: pid_alive(pid) for name, pid in self.pids.items()}
