"""``greenlight webhook serve`` as a real process: it prints its address, answers a signed ping and
/healthz over HTTP, and stops on SIGTERM. It serves on a socket handed over with ``--fd``, as the
lab starts it (the port is the test's from the start: no other process can take it meanwhile);
a descriptor that is not a listening TCP socket is refused, naming it."""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from greenlight.webhook.app import SECRET_BLOCK_ENV, SECRET_ENV
from greenlight_lab.state import LAB_ENVIRONMENTS, listening_socket

from .support import SECRET, delivery

REPO_ROOT = Path(__file__).resolve().parents[2]


def serve_command() -> list[str]:
    """``greenlight webhook serve`` through the CLI once it mounts the command, else the module's own entry point."""
    from greenlight.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "webhook" in subcommands.choices:
        return [sys.executable, "-m", "greenlight.cli", "webhook", "serve"]
    return [sys.executable, "-m", "greenlight.commands.webhook", "serve"]


def receiver_env(tmp: Path) -> dict[str, str]:
    env = {
        **os.environ,
        SECRET_ENV: SECRET,
        "GREENLIGHT_WEBHOOK_STATE": str(tmp / "state.sqlite"),
        "GREENLIGHT_ENVIRONMENTS": str(LAB_ENVIRONMENTS),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # a ping and /healthz never reach Prefect
    }
    env.pop(SECRET_BLOCK_ENV, None)
    return env


@contextlib.contextmanager
def running_receiver(tmp: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A receiver process serving on a socket listened on here; yields its base URL and the process."""
    with listening_socket() as sock:
        port = int(sock.getsockname()[1])
        proc = subprocess.Popen(
            [*serve_command(), "--fd", str(sock.fileno())],
            cwd=REPO_ROOT,
            env=receiver_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            pass_fds=(sock.fileno(),),
        )
    base = f"http://127.0.0.1:{port}"
    try:
        # the socket listens already: the request waits in its backlog until the receiver serves it
        try:
            httpx.get(base + "/healthz", timeout=30)
        except httpx.TransportError as e:
            proc.terminate()
            out = proc.communicate(timeout=10)[0]
            pytest.fail(f"receiver did not start ({e!r}; exit {proc.returncode}):\n{out}")
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The receiver process for the module's tests; yields its base URL and the process."""
    with running_receiver(tmp_path_factory.mktemp("serve")) as served:
        yield served


def test_serve_answers_a_signed_ping_and_healthz_then_stops(
    receiver: tuple[str, subprocess.Popen[str]],
) -> None:
    """The served receiver answers a signed ping 200, /healthz 200, prints its address and exits 0 on SIGTERM."""
    base, proc = receiver
    body, headers = delivery({"zen": "Mind your words, they are important."}, event="ping")
    response = httpx.post(base + "/github", content=body, headers=headers, timeout=5)
    assert (response.status_code, response.json()["zen"]) == (200, "Mind your words, they are important.")
    assert httpx.get(base + "/healthz", timeout=5).json() == {"ok": True}
    forged = httpx.post(
        base + "/github", content=body, headers={**headers, "X-Hub-Signature-256": "sha256=00"}
    )
    assert forged.status_code == 401
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"listening on {base}/github" in out
    assert "sma-platform/sma workflow 'build-images' on develop -> staging" in out
    assert "greenlight webhook: stopped" in out
    assert "decision=ping status=200" in out and "decision=rejected status=401" in out
    assert SECRET not in out and headers["X-Hub-Signature-256"] not in out


@pytest.mark.parametrize(
    "handed, error",
    [
        ("nothing", "not an open socket (Bad file descriptor)"),
        ("file", "not an open socket (Socket operation on non-socket)"),
        ("bound", "not a listening TCP socket"),
        ("udp", "not a listening TCP socket"),
    ],
)
def test_fd_that_is_not_a_listening_tcp_socket_is_refused_naming_it(
    handed: str, error: str, tmp_path: Path
) -> None:
    """``--fd`` naming no descriptor, a file, a socket that does not listen or a UDP socket: exit 2, FAILED naming the fd."""
    with contextlib.ExitStack() as stack:
        if handed == "nothing":
            fd = 1000
        elif handed == "file":
            fd = stack.enter_context(open(tmp_path / "f", "w")).fileno()
        else:
            kind = socket.SOCK_DGRAM if handed == "udp" else socket.SOCK_STREAM
            sock = stack.enter_context(socket.socket(socket.AF_INET, kind))
            sock.bind(("127.0.0.1", 0))
            fd = sock.fileno()
        out = subprocess.run(
            [*serve_command(), "--fd", str(fd)],
            cwd=REPO_ROOT,
            env=receiver_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
            pass_fds=() if handed == "nothing" else (fd,),
        )
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"FAILED: --fd {fd}: {error}" in out.stderr


def test_a_client_that_hangs_up_before_the_answer_does_not_stop_the_receiver(tmp_path: Path) -> None:
    """GitHub gives up on a delivery after 10 s and closes the connection; answering a closed
    connection is a failed write (EPIPE), never the end of the receiver (SIGPIPE)."""
    with running_receiver(tmp_path) as (base, proc):
        port = int(base.rsplit(":", 1)[1])
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: receiver\r\n\r\n")
            # closed before the answer: the answer's first write draws a reset, the next one EPIPE
        time.sleep(0.5)
        assert proc.poll() is None, f"the receiver ended with {proc.returncode}"
        assert httpx.get(base + "/healthz", timeout=5).json() == {"ok": True}
