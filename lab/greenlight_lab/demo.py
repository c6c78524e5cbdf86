"""``make demo``: the main job in the lab, start to finish, with a summary.

The lab lives in ``.lab/demo`` of this checkout (or $GREENLIGHT_LAB_DIR); when a lab still runs
there (a demo kept with KEEP=1) the demo says so and how to stop it, and starts nothing.

1. starts the lab (its own Prefect server on SQLite, and the receiver of GitHub's webhooks and
   Slack's clicks), runs ``greenlight setup``, deploys prefect.yaml, and starts a worker;
2. sends a signed GitHub ``workflow_run`` webhook for a good commit on develop: the receiver
   emits an event, the staging deployment's trigger starts a run, the worker releases it;
3. promotes it to production; alice approves the paused run by clicking Approve in the lab's
   Slack (signed as Slack signs it, attested by the receiver: a verified approval);
4. tries to deploy images to production that carry no valid signature (backend unsigned, frontend
   signed by a key the profile does not name): refused before approval is asked, nothing deployed;
   sends the webhook for a bad commit (its images answer 20% errors): stopped at the gate;
   the lab's load generator runs against production the whole time;
5. verifies the newest nightly backup by restoring it, and runs a DR drill; then puts a corrupted
   dump newest (no cross-region copy, not gzip): the verification fails on purpose and its P1
   alert reaches the lab's PagerDuty (an incident by dedup key) and Slack's #incidents;
6. prints each step's outcome and time, the failed requests under load, the Prefect UI links;
   stops everything it started unless KEEP=1 (then prints the UI address).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from greenlight.settings import REPO_ROOT
from greenlight_lab import supervisor
from greenlight_lab.github import signed, workflow_run
from greenlight_lab.state import LabState, lab_dir, stop_pid

STEPS: list[tuple[str, str, float, str]] = []
RUNS: list[tuple[str, str]] = []  # (what, flow run id) for the summary's links


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
        if isinstance(out, subprocess.CompletedProcess):
            detail = _last_lines(out.stdout + out.stderr)
        elif isinstance(out, LabState):  # never its repr: its env holds the lab's secrets
            detail = (
                f"lab up in {out.ready_s:.1f} s ({out.dir}); Prefect on {supervisor.describe_prefect(out)}"
            )
        else:
            detail = str(out)
    except Exception as e:
        ok, detail, out = False, f"{type(e).__name__}: {e}", None
    as_expected = ok == expect_ok
    STEPS.append((name, "as expected" if as_expected else "UNEXPECTED", time.monotonic() - t0, detail))
    print(
        f"    {'ok' if as_expected else 'UNEXPECTED'} ({time.monotonic() - t0:.1f} s): {detail}", flush=True
    )
    return out


def refused_unsigned(env: dict[str, str], tag: str) -> subprocess.CompletedProcess[str]:
    """`greenlight deploy production` of images without a valid signature: as expected when it
    exits 7 (release refused) naming both problems, before any approval is asked."""
    images = [f"ghcr.io/sma-platform/{app}:{tag}" for app in ("backend", "frontend")]
    out = gl(env, "deploy", "production", *images, "--actor", "erin")
    failed = [line for line in out.stderr.splitlines() if line.startswith("FAILED:")]
    text = failed[-1] if failed else out.stderr[-400:]
    refused = (
        out.returncode == 7
        and "unsigned: no cosign signature" in text
        and "signed by another key" in text
        and "approve:" not in out.stdout
    )
    return subprocess.CompletedProcess(out.args, 0 if refused else 1, text, "")


def _wait_http(url: str, timeout_s: float = 60) -> str:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return f"{url} answers"
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout_s:.0f} s")


def _expect(state: str, wanted: str) -> str:
    if state != wanted:
        raise RuntimeError(f"run ended {state}, expected {wanted}")
    return f"run ended {state}, as expected"


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


def send_webhook(url: str, secret: str, sha: str, branch: str) -> dict[str, Any]:
    """POST a signed workflow_run (completed, success) as GitHub does; the receiver must emit an event."""
    import httpx

    body, headers = signed(workflow_run(sha, branch), secret)
    r = httpx.post(url + "/github", content=body, headers=headers, timeout=10)
    answer = {"status": r.status_code, **r.json()}
    if r.status_code != 202 or not answer.get("emitted"):
        raise RuntimeError(f"the receiver did not emit an event: {answer}")
    return answer


def wait_for_run(env: dict[str, str], deployment: str, sha: str, timeout_s: float = 300) -> str:
    """Wait for the deployment's run whose parameters carry ``sha`` to finish; returns its final state name."""
    code = f"""
import json, sys, time
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
deadline = time.monotonic() + {timeout_s}
with get_client(sync_client=True) as c:
    dep = c.read_deployment_by_name({deployment!r})
    only = DeploymentFilter(id=DeploymentFilterId(any_=[dep.id]))
    while time.monotonic() < deadline:
        runs = [r for r in c.read_flow_runs(deployment_filter=only, limit=200)
                if (r.parameters.get("request") or {{}}).get("commit") == {sha!r}]
        done = [r for r in runs if r.state and r.state.is_final()]
        if done:
            print(json.dumps({{"state": done[0].state.name, "id": str(done[0].id)}})); sys.exit(0)
        time.sleep(1)
print(json.dumps({{"state": "no finished run", "id": ""}}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout_s + 60
    )
    try:
        result = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return f"unreadable: {out.stderr[-300:]}"
    RUNS.append((f"{deployment} {sha}", result["id"]))
    return str(result["state"])


def approve_when_paused(env: dict[str, str], proc: subprocess.Popen[str], lines: list[str]) -> None:
    """Read the promotion's stdout; when it waits for approval, alice clicks Approve in Slack."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"approve: greenlight approve ([0-9a-f-]{36})", line)
        if m:
            RUNS.append(("build-promote production (approved in Slack)", m.group(1)))
            out = gl(
                env, "lab", "slack", "click", "--user", "U0LABALICE", "--action", "approve",
                "--reason", "demo: staging is green", "--run", m.group(1),
            )  # fmt: skip
            lines.append(out.stdout + out.stderr)


def ui_problem(ui: str) -> str:
    """Why the UI's pages could not reach their API ("" when they can): the API address its
    ``/ui-settings`` gives the browser must answer ``/health``."""
    import httpx

    try:
        api = httpx.get(f"{ui}/ui-settings", timeout=5).json()["api_url"]
        if httpx.get(f"{api}/health", timeout=5).status_code == 200:
            return ""
        return f"NOT WORKING: the UI's API {api} does not answer /health"
    except (httpx.HTTPError, ValueError, KeyError) as e:
        return f"NOT WORKING: {ui}/ui-settings or the API it names cannot be read ({type(e).__name__})"


def demo_dir() -> Path:
    """The demo's lab directory: $GREENLIGHT_LAB_DIR, else ``.lab/demo`` in this checkout (one per
    checkout: a demo kept running elsewhere, or by another checkout, is not in this one's way)."""
    return lab_dir(os.environ.get("GREENLIGHT_LAB_DIR") or REPO_ROOT / ".lab" / "demo")


def lab_in_the_way(directory: Path) -> str:
    """Why the demo cannot start its lab in ``directory`` ("" when it can): a lab whose processes
    still run there (a demo kept with KEEP=1, or one still running). The demo does not take it
    over (its runs, releases and load would mix into this story) nor stop it (someone kept it)."""
    state = LabState.load(directory)
    if state is None:
        return ""
    alive = sorted(name for name, up in state.alive().items() if up)
    if not alive:
        return ""
    started = datetime.fromtimestamp(state.started_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    ui = state.env.get("PREFECT_UI_URL", "")
    return (
        f"a lab is already running in {directory} (started {started}{', Prefect UI ' + ui if ui else ''}; "
        f"its {', '.join(alive)} still run: a demo kept with KEEP=1?). Stop it with: "
        f"uv run greenlight lab --dir {shlex.quote(str(directory))} down, then run make demo again "
        "(or give this one another directory: GREENLIGHT_LAB_DIR=...)"
    )


def main() -> int:
    keep = os.environ.get("KEEP") == "1"
    directory = demo_dir()
    in_the_way = lab_in_the_way(directory)
    if in_the_way:
        print(f"FAILED: {in_the_way}", file=sys.stderr)
        print("demo: FAILED: the lab directory is in use")
        return 1
    print(f"demo lab: {directory}", flush=True)
    t_start = time.monotonic()
    state: LabState = step("start the lab", lambda: supervisor.up(directory, echo=lambda _: None))
    if not isinstance(state, LabState):
        return _summary(t_start, None, keep)
    env = {**os.environ, **state.env, "GREENLIGHT_HOME": str(REPO_ROOT), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    hook, secret = state.env["GREENLIGHT_LAB_WEBHOOK_URL"], state.env["GREENLIGHT_GITHUB_WEBHOOK_SECRET"]
    load: Load | None = None
    background: list[subprocess.Popen[bytes]] = []
    report = None
    try:
        step("greenlight setup", lambda: gl(env, "setup"))
        step("deploy prefect.yaml", lambda: supervisor.deploy_prefect_yaml(env, timeout_s=300))
        with open(directory / "logs" / "demo-worker.log", "ab") as out:
            background.append(
                subprocess.Popen(
                    [sys.executable, "-m", "prefect", "worker", "start", "--pool", "greenlight-local"],
                    cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip
        step("start a worker (the lab runs the receiver)", lambda: _wait_http(hook + "/healthz"))
        good, bad, unsigned = uuid.uuid4().hex[:7], uuid.uuid4().hex[:7], uuid.uuid4().hex[:7]
        for app in ("backend", "frontend"):
            gl(env, "lab", "image", "push", f"ghcr.io/sma-platform/{app}:{good}")
            gl(env, "lab", "image", "push", f"ghcr.io/sma-platform/{app}:{bad}", "--error-rate", "0.2")
        gl(env, "lab", "image", "push", f"ghcr.io/sma-platform/backend:{unsigned}", "--unsigned")
        gl(env, "lab", "image", "push", f"ghcr.io/sma-platform/frontend:{unsigned}", "--signed-by", "other")
        url = supervisor.control(state, "GET", "/urls")["lab-primary/sma-production/backend"] + "/"
        load = Load(env, url)
        step(f"GitHub webhook: {good} built on develop", lambda: send_webhook(hook, secret, good, "develop"))
        step(f"staging release of {good} by the worker",
             lambda: _expect(wait_for_run(env, "build-promote/staging-from-github", good), "Completed"))  # fmt: skip

        def production() -> subprocess.CompletedProcess[str]:
            proc = subprocess.Popen(
                [sys.executable, "-m", "greenlight.cli", "promote", "production", "--commit", good, "--actor", "erin"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
            )  # fmt: skip
            lines: list[str] = []
            reader = threading.Thread(target=approve_when_paused, args=(env, proc, lines), daemon=True)
            reader.start()
            rc = proc.wait(timeout=600)
            reader.join(10)
            text = "".join(lines)
            if rc == 0 and "approval: approved by alice (Slack U0LABALICE), verified" not in text:
                rc = 1  # released, but not on a verified approval
            return subprocess.CompletedProcess(proc.args, rc, text, "")

        step(f"promote {good} to production: alice approves in Slack", production)
        step(
            f"unsigned {unsigned} to production: refused before approval",
            lambda: refused_unsigned(env, unsigned),
        )
        step(
            f"GitHub webhook: {bad} (images with 20% errors) built on develop",
            lambda: send_webhook(hook, secret, bad, "develop"),
        )
        step(f"staging release of {bad}: stopped at the gate, nothing switched",
             lambda: _expect(wait_for_run(env, "build-promote/staging-from-github", bad), "Failed"))  # fmt: skip
        step(
            "verify the newest production backup by restoring it",
            lambda: gl(env, "verify-backups", "production"),
        )
        step("DR drill into lab-dr: RTO and RPO against targets", lambda: gl(env, "drill", "dr"))
        step(
            "a corrupted nightly dump: verification fails, a P1 alert pages",
            lambda: failed_backup_alert(env, state),
        )
        step("status of production", lambda: gl(env, "status", "production"))
    finally:
        report = load.stop() if load else None
        for proc in background:
            stop_pid(proc.pid)
    return _summary(t_start, report, keep, state, directory)


def failed_backup_alert(env: dict[str, str], state: LabState) -> str:
    """Upload a corrupted dump newer than the seeded ones, verify (it must fail: BackupInvalid,
    exit 9), and show the P1 alert in the PagerDuty stand-in and in Slack; the dump is removed
    afterwards. Raises when the alert did not arrive."""
    import urllib.parse
    import urllib.request

    name = "sma-db/" + datetime.now(UTC).strftime("%Y-%m-%dT%H%MZ") + ".sql.gz"
    gcs = env["STORAGE_EMULATOR_HOST"].rstrip("/")
    query = urllib.parse.urlencode({"uploadType": "media", "name": name})
    upload = urllib.request.Request(
        f"{gcs}/upload/storage/v1/b/sma-db-backups/o?{query}", data=b"not a gzip dump", method="POST"
    )
    urllib.request.urlopen(upload, timeout=30).close()
    try:
        out = gl(env, "verify-backups", "production")
    finally:
        quoted = urllib.parse.quote(name, safe="")
        delete = urllib.request.Request(f"{gcs}/storage/v1/b/sma-db-backups/o/{quoted}", method="DELETE")
        urllib.request.urlopen(delete, timeout=30).close()
    if out.returncode != 9:
        raise RuntimeError(
            f"verify-backups exited {out.returncode}, not 9: {_last_lines(out.stdout + out.stderr)}"
        )
    key = "greenlight/production/backup-not-verified"
    incidents = [i for i in supervisor.control(state, "GET", "/pagerduty/incidents") if i["dedup_key"] == key]
    slack = [
        m
        for m in supervisor.control(state, "GET", "/slack")
        if "[P1] production: backup-not-verified" in (m.get("text") or "")
    ]
    if not incidents or not slack:
        raise RuntimeError(
            f"the P1 alert did not arrive: {len(incidents)} incident(s), {len(slack)} Slack message(s)"
        )
    inc, msg = incidents[-1], slack[-1]
    return (
        f"exit 9 (backup invalid); PagerDuty incident {inc['id']} {inc['status']}, dedup key {inc['dedup_key']}, "
        f"severity {inc['severity']} (P1); Slack {msg['channel_name']} ts {msg['ts']}"
    )


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
    ui_broken = ""
    if state:
        ui = state.env.get("PREFECT_UI_URL") or state.env["PREFECT_API_URL"].removesuffix("/api")
        ui_broken = ui_problem(ui)
        print(f"Prefect UI: {ui}/runs  (release reports: {ui}/artifacts; deployments: {ui}/deployments)")
        print(
            f"  {ui_broken or 'its pages reach their API (' + ui + '/ui-settings names it, and it answers)'}"
        )
        for what, run_id in RUNS:
            if run_id:
                print(f"  {what}: {ui}/runs/flow-run/{run_id}")
    print(f"total {time.monotonic() - t_start:.0f} s")
    bad = [s for s in STEPS if s[1] != "as expected"] or (
        [("load", "", 0, "")] if load and load["failed"] else []
    )
    if ui_broken:
        bad.append(("the Prefect UI", "", 0, ui_broken))
    if state and directory and not keep:
        supervisor.down(directory, echo=print)
    elif state:
        print(
            f"KEEP=1: the lab keeps running; stop it with: uv run greenlight lab --dir {shlex.quote(str(directory))} down"
        )
    print("demo: " + ("FAILED: " + ", ".join(s[0] for s in bad) if bad else "every step as expected"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
