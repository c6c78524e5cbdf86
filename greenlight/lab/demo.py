"""``make demo``: the main job in the lab, start to finish, with a summary.

1. starts the lab (its own Prefect server on SQLite) and runs ``greenlight setup``;
2. releases a good commit to staging (GitHub's webhook will start this once issue 5 lands;
   until then the demo runs the same flow by hand);
3. promotes it to production and approves the paused run, under load;
4. pushes a bad image (20% errors) for the next commit: stopped at the gate, under load;
5. verifies the newest nightly backup by restoring it;
6. prints each step's outcome and time, the failed requests under load, the Prefect UI links;
   stops the lab unless KEEP=1 (then prints the UI address).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from greenlight.lab import supervisor
from greenlight.lab.state import LabState, lab_dir

STEPS: list[tuple[str, str, float, str]] = []


def gl(env: dict[str, str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def step(name: str, fn: Any, expect_ok: bool = True) -> Any:
    t0 = time.monotonic()
    print(f"==> {name}", flush=True)
    try:
        out = fn()
        ok = (out.returncode == 0) if isinstance(out, subprocess.CompletedProcess) else True
        detail = _last_lines(out.stdout) if isinstance(out, subprocess.CompletedProcess) else str(out)
    except Exception as e:
        ok, detail, out = False, f"{type(e).__name__}: {e}", None
    as_expected = ok == expect_ok
    STEPS.append((name, "as expected" if as_expected else "UNEXPECTED", time.monotonic() - t0, detail))
    print(
        f"    {'ok' if as_expected else 'UNEXPECTED'} ({time.monotonic() - t0:.1f} s): {detail}", flush=True
    )
    return out


def _last_lines(text: str, n: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:])[:400]


class Load:
    """`greenlight lab load` against production's live backend, for the whole story."""

    def __init__(self, env: dict[str, str], url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "greenlight.cli", "lab", "load", url, "--rps", "100", "--seconds", "3600", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )  # fmt: skip

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        return dict(json.loads(out))


def approve_when_paused(env: dict[str, str], proc: subprocess.Popen[str], lines: list[str]) -> None:
    """Read the promotion's stdout; when it prints the approve command, approve as 'alice'."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"approve: greenlight approve ([0-9a-f-]{36})", line)
        if m:
            out = gl(env, "approve", m.group(1), "--approver", "alice", "--reason", "demo: staging is green")
            lines.append(out.stdout)


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    directory = lab_dir(
        os.environ.get("GREENLIGHT_LAB_DIR") or Path(tempfile.gettempdir()) / "greenlight-demo"
    )
    t_start = time.monotonic()
    state: LabState = step("start the lab", lambda: supervisor.up(directory, echo=lambda _: None))
    if not isinstance(state, LabState):
        return _summary(t_start, None, keep)
    env = {**os.environ, **state.env}
    load: Load | None = None
    try:
        step("greenlight setup", lambda: gl(env, "setup"))
        good, bad = uuid.uuid4().hex[:7], uuid.uuid4().hex[:7]
        for app in ("backend", "frontend"):
            gl(env, "lab", "image", "push", f"ghcr.io/sma-platform/{app}:{good}")
            gl(env, "lab", "image", "push", f"ghcr.io/sma-platform/{app}:{bad}", "--error-rate", "0.2")
        url = supervisor.control(state, "GET", "/urls")["lab-primary/sma-production/backend"] + "/"
        load = Load(env, url)
        step(
            f"release {good} to staging",
            lambda: gl(env, "promote", "staging", "--commit", good, "--actor", "dave"),
        )

        def production() -> subprocess.CompletedProcess[str]:
            proc = subprocess.Popen(
                [sys.executable, "-m", "greenlight.cli", "promote", "production", "--commit", good, "--actor", "dave"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            )  # fmt: skip
            lines: list[str] = []
            reader = threading.Thread(target=approve_when_paused, args=(env, proc, lines), daemon=True)
            reader.start()
            rc = proc.wait(timeout=600)
            reader.join(10)
            return subprocess.CompletedProcess(proc.args, rc, "".join(lines), "")

        step(f"promote {good} to production, approved by alice", production)
        step(f"release bad image {bad} to staging (20% errors): stopped at the gate",
             lambda: gl(env, "promote", "staging", "--commit", bad), expect_ok=False)  # fmt: skip
        step(
            "verify the newest production backup by restoring it",
            lambda: gl(env, "verify-backups", "production"),
        )
        step("status of production", lambda: gl(env, "status", "production"))
    finally:
        report = load.stop() if load else None
    return _summary(t_start, report, keep, state, directory)


def _summary(
    t_start: float,
    load: dict[str, Any] | None,
    keep: bool,
    state: LabState | None = None,
    directory: Path | None = None,
) -> int:
    print("\n" + "=" * 100)
    print(f"{'step':<62} {'outcome':<12} {'seconds':>8}")
    for name, outcome, secs, _ in STEPS:
        print(f"{name:<62} {outcome:<12} {secs:>8.1f}")
    if load:
        print(f"\nload on production backend during the story: sent {load['sent']}, failed {load['failed']}")
    if state:
        ui = state.env["PREFECT_API_URL"].removesuffix("/api")
        print(f"Prefect UI: {ui}/runs  (release reports: {ui}/artifacts)")
    print(f"total {time.monotonic() - t_start:.0f} s")
    bad = [s for s in STEPS if s[1] != "as expected"] or (
        [("load", "", 0, "")] if load and load["failed"] else []
    )
    if state and directory and not keep:
        supervisor.down(directory, echo=print)
    elif state:
        print(f"KEEP=1: the lab keeps running; stop it with: greenlight lab --dir {directory} down")
    print("demo: " + ("FAILED: " + ", ".join(s[0] for s in bad) if bad else "every step as expected"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
