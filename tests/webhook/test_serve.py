"""``greenlight webhook serve`` as a real process on a free port: it prints its address, answers a
signed ping and /healthz over HTTP, and stops on SIGTERM."""

from __future__ import annotations

import argparse
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
from greenlight_lab.state import LAB_ENVIRONMENTS

from .support import SECRET, delivery

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command() -> list[str]:
    """``greenlight webhook serve`` through the CLI once it mounts the command, else the module's own entry point."""
    from greenlight.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "webhook" in subcommands.choices:
        return [sys.executable, "-m", "greenlight.cli", "webhook", "serve"]
    return [sys.executable, "-m", "greenlight.commands.webhook", "serve"]


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """The receiver process; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        SECRET_ENV: SECRET,
        "GREENLIGHT_WEBHOOK_STATE": str(tmp_path_factory.mktemp("serve") / "state.sqlite"),
        "GREENLIGHT_ENVIRONMENTS": str(LAB_ENVIRONMENTS),
        "PREFECT_API_URL": "http://127.0.0.1:9/api",  # a ping and /healthz never reach Prefect
    }
    env.pop(SECRET_BLOCK_ENV, None)
    proc = subprocess.Popen(
        [*serve_command(), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(base + "/healthz", timeout=0.5)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ""
                    pytest.fail(f"receiver did not start (exit {proc.poll()}):\n{out}")
                time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
