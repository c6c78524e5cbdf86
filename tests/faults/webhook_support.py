"""Helpers of the webhook fault cases: a route of their own, the receiver as a process, deliveries
sent over real HTTP (raw sockets where the client library would correct a lie), and read-backs
of what Prefect holds: ``github.*`` events and flow runs.

The fault repository is routed to an environment (``faults-webhook``) that no deployment of
prefect.yaml reacts to (their triggers match ``greenlight.environment`` staging or production),
so an accepted delivery never starts a release. A *trap* (a deployment on no work pool, and an
automation that runs it for every ``github.workflow_run.completed`` event about a
``greenlight-faults/*`` repository) turns each such event into one flow run that never executes:
the count of trap runs is the count of runs the deliveries triggered.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prefect.automations import Automation
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun
from prefect.events.actions import RunDeployment
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ReceivedEvent

from greenlight.webhook.app import SECRET_BLOCK_ENV, SECRET_ENV
from greenlight.webhook.verify import EVENT_NAME, RunIdentity, sign
from greenlight_lab.github import run_id_for, workflow_run
from greenlight_lab.state import LAB_ENVIRONMENTS, listening_socket, stop_pid

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "fault-suite-webhook-secret"
ENVIRONMENT = "faults-webhook"
REPOSITORY = "greenlight-faults/webhook"
BRANCH = "develop"
WORKFLOW = "build-images"


def write_route_profile(directory: Path) -> Path:
    """``directory/faults-webhook.yaml``: the lab's staging profile, released by REPOSITORY on BRANCH."""
    doc = yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())
    doc["name"] = ENVIRONMENT
    doc["github"] = {"repository": REPOSITORY, "workflow": WORKFLOW, "branch": BRANCH}
    (directory / f"{ENVIRONMENT}.yaml").write_text(yaml.safe_dump(doc))
    return directory


def new_sha() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


def run_payload(sha: str, **kw: Any) -> dict[str, Any]:
    """A completed, successful run of the fault repository's workflow on BRANCH, started by a push
    to it (override any argument of :func:`greenlight_lab.github.workflow_run`); its run id is the
    one GitHub would give that push (:func:`run_of`)."""
    args: dict[str, Any] = {"repository": REPOSITORY, "workflow": WORKFLOW, "branch": BRANCH, **kw}
    return workflow_run(sha, args.pop("branch"), **args)


def run_of(sha: str) -> RunIdentity:
    """The run a push of ``sha`` to BRANCH of REPOSITORY makes (what :func:`run_payload` names)."""
    return RunIdentity(REPOSITORY.lower(), run_id_for(sha, BRANCH, REPOSITORY, WORKFLOW), 1)


@dataclass
class Delivery:
    """One delivery as sent: its id, the sha it names (if any), what came back, and the run its
    body names (unless given, the run of a push of ``sha``: :func:`run_of`)."""

    label: str
    delivery_id: str
    sha: str | None
    status: int | None = None
    body: Any = None
    run: RunIdentity | None = None

    @property
    def event_id(self) -> uuid.UUID:
        """The id the receiver gives the event of this delivery's run (whatever its delivery id:
        so Prefect drops a second copy); for a delivery naming no run, an id no event has."""
        if self.run is not None:
            return self.run.event_id
        if self.sha is not None:
            return run_of(self.sha).event_id
        return uuid.uuid5(uuid.NAMESPACE_URL, f"greenlight-faults:no-run:{self.delivery_id}")


def headers_for(
    body: bytes, *, event: str = "workflow_run", delivery_id: str | None = None, secret: str = SECRET
) -> dict[str, str]:
    """Headers as GitHub sends them, signed with ``secret`` over ``body``."""
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/fault-suite",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery_id or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret.encode(), body),
    }


def raw_post(url: str, head: dict[str, str], body: bytes, timeout_s: float = 10.0) -> int:
    """POST over a plain socket, sending ``head`` exactly as given (a lying Content-Length stays a
    lie) and as much of ``body`` as the server reads; the status of the first answer."""
    parts = httpx.URL(url)
    with socket.create_connection((parts.host, parts.port or 80), timeout=timeout_s) as s:
        lines = [f"POST {parts.raw_path.decode()} HTTP/1.1", f"Host: {parts.host}:{parts.port}"]
        lines += [f"{k}: {v}" for k, v in head.items()]
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            for i in range(0, len(body), 64 * 1024):
                s.sendall(body[i : i + 64 * 1024])
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading it all: its answer is what counts
        answer = b""
        try:
            while b"\r\n" not in answer:
                chunk = s.recv(4096)
                if not chunk:
                    break
                answer += chunk
        except ConnectionResetError:
            pass
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    if not status_line.startswith("HTTP/1.1 "):
        raise AssertionError(f"no HTTP answer from {url}: {answer[:200]!r}")
    return int(status_line.split()[1])


@dataclass
class Receiver:
    """``greenlight webhook serve`` as a process serving ``sock``, a socket listening here: its port
    is never free for another process to take, before the first start or between a stop and a
    restart (requests sent meanwhile wait in its backlog)."""

    url: str
    log: Path
    env: dict[str, str]
    sock: socket.socket
    proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        fd = self.sock.fileno()
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "greenlight.cli", "webhook", "serve", "--fd", str(fd)],
                cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=(fd,),
            )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"receiver did not start:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc.pid)
            self.proc.wait(timeout=5)
            self.proc = None


@contextmanager
def receiver(state: Path, environments: Path) -> Iterator[Receiver]:
    """The receiver on the routes of ``environments``, its dedupe file and log under ``state``,
    sending events to the lab's Prefect (``PREFECT_API_URL`` of the session)."""
    env = {
        **os.environ, SECRET_ENV: SECRET, "GREENLIGHT_ENVIRONMENTS": str(environments),
        "GREENLIGHT_WEBHOOK_STATE": str(state / "webhook.sqlite"),
    }  # fmt: skip
    env.pop(SECRET_BLOCK_ENV, None)
    with listening_socket() as sock:
        r = Receiver(f"http://127.0.0.1:{sock.getsockname()[1]}", state / "webhook.log", env, sock)
        r.start()
        try:
            yield r
        finally:
            r.stop()


@dataclass
class Trap:
    """A deployment nobody runs and an automation that starts it for every event about the fault repositories."""

    deployment_id: uuid.UUID
    flow_id: uuid.UUID
    automation: Automation
    runs_seen: list[uuid.UUID] = field(default_factory=list)

    def runs(self) -> list[FlowRun]:
        with get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id])),
                limit=200,
            )


@contextmanager
def trap() -> Iterator[Trap]:
    """Set the trap; at the end delete its runs, the automation, the deployment and its flow."""
    name = f"webhook-faults-{uuid.uuid4().hex[:8]}"
    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name(f"greenlight-fault-trap-{name}")
        deployment_id = client.create_deployment(
            flow_id,
            name,
            description="fault suite: counts runs that GitHub deliveries trigger; never executed",
            enforce_parameter_schema=False,
        )
    automation = Automation(
        name=name,
        trigger=EventTrigger(
            expect={EVENT_NAME},
            match={"prefect.resource.id": "github.repo.greenlight-faults/*"},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=deployment_id,
                parameters={"sha": "{{ event.payload.sha }}", "delivery": "{{ event.payload.delivery }}"},
            )
        ],
    ).create()
    assert isinstance(automation, Automation)
    t = Trap(deployment_id, flow_id, automation)
    try:
        yield t
    finally:
        automation.delete()
        with get_client(sync_client=True) as client:
            for run in t.runs():
                client.delete_flow_run(run.id)
            client.delete_deployment(deployment_id)
            client.delete_flow(flow_id)


def github_events(since: Any) -> list[ReceivedEvent]:
    """Every event named ``github.*`` or ``greenlight.github*`` that occurred since ``since`` (all pages)."""
    with get_client(sync_client=True) as client:
        page = client.read_events(
            filter=EventFilter(
                event=EventNameFilter(prefix=["github.", "greenlight.github"]),
                occurred=EventOccurredFilter(since=since),
            ),
            limit=50,  # the API's maximum page
        )
        events = list(page.events)
        while page.next_page is not None:
            page = client.read_events_page(str(page.next_page))
            events += page.events
    assert len(events) == page.total, f"read {len(events)} of {page.total} events"
    return events


def runs_since(since: Any) -> list[FlowRun]:
    """Every flow run (of any deployment) expected to start since ``since`` (all pages)."""
    runs: list[FlowRun] = []
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
                ),
                limit=200,
                offset=len(runs),
            )
            runs += page
            if len(page) < 200:
                return runs


def naming(
    events: list[ReceivedEvent], runs: list[FlowRun], marks: set[str], ids: set[uuid.UUID] | None = None
) -> int:
    """How many events (by id, or a delivery id or sha in ``marks`` in their payload) and flow runs
    (a mark in their parameters) name what was sent."""
    hit_events = [
        e
        for e in events
        if e.id in (ids or set()) or e.payload.get("delivery") in marks or e.payload.get("sha") in marks
    ]
    hit_runs = [r for r in runs if any(m in json.dumps(r.parameters) for m in marks)]
    return len(hit_events) + len(hit_runs)


def triggered_by(deliveries: list[Delivery], events: list[ReceivedEvent], runs: list[FlowRun]) -> int:
    """How many events and flow runs name one of ``deliveries`` (by event id, delivery id or sha)."""
    marks = {d.delivery_id for d in deliveries} | {d.sha for d in deliveries if d.sha}
    return naming(events, runs, marks, {d.event_id for d in deliveries})


SEEN_WITHIN_S = 20.0  # the server persists events every 5 s; a trigger starts a run in well under 1 s


def wait_for(what: str, check: Callable[[], bool], within_s: float = SEEN_WITHIN_S) -> None:
    """Poll ``check`` every 0.5 s until it holds; AssertionError naming ``what`` after ``within_s``."""
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {within_s:.0f} s")
        time.sleep(0.5)


@dataclass
class Sent:
    """Every delivery of a module by case, and what Prefect held once the last valid one was seen."""

    by_case: dict[str, list[Delivery]]
    events: list[ReceivedEvent]
    runs: list[FlowRun]
    trap_runs: list[FlowRun]

    def triggered(self, case: str) -> int:
        return triggered_by(self.by_case[case], self.events, self.runs)
