"""The lab's pods: each one a real local HTTP server behaving as its image says.

``PodRuntime`` plays container runtime and kubelet for the lab's Kubernetes controller.
``start`` looks the image up in the catalogue and runs the pod's life as an asyncio task:

- unknown image: ``Pending`` / ``ImagePullBackOff``; the lookup is retried with back-off,
  so an image pushed later still starts (as a real pull would);
- known image: ``Pending`` / ``ContainerCreating`` for a moment, then ``Running`` and not
  ready while the app starts (``behaviour.startup_s``); then the server listens on a free
  loopback port and the runtime probes ``readiness_path`` every ``probe_period_s``
  (ready after one success, not ready after three failures, as the kubelet's defaults);
  without a readiness path the pod is ready once it listens;
- crash images listen for ``CRASH_AFTER_S`` then exit: ``Running`` /
  ``CrashLoopBackOff``, ``restart_count`` grows, restarts after a doubling back-off
  capped at ``CRASH_BACKOFF_CAP_S``; never ready.

The pod server answers the readiness path with 200 "ok" (no injected errors or latency:
a real health endpoint stays green while the app fails; an ``unhealthy`` image's answers 500,
so it never turns ready), and every other path with the
behaviour: 500 with probability ``error_rate``, else 200 and JSON
``{"version", "pod", "color"}``, after ``latency_ms`` (+-10 %, or lognormal of median
``latency_ms`` and shape ``latency_sigma`` when that is > 0). Every answer carries
``X-Pod: <pod>``. Every request except the runtime's own probes and the NEG load balancer's
health checks (User-Agent ``GoogleHC/1.0``) is recorded with
``recorder.record(labels | {"instance": "<pod>:<port>"}, code, latency_s)``.

Termination, as the kubelet does it (``terminate``): the container's ``preStop`` hook runs
first while the pod keeps serving (an ``exec`` sleep, ``sleep`` action or ``httpGet`` to the
pod; other commands cannot run in the lab and are skipped with a warning), then SIGTERM: the
app shuts down as its image's ``behaviour.shutdown`` says ("abrupt": every connection reset
at once; "graceful": listener closed, in-flight requests answered with ``Connection: close``,
idle connections closed). The preStop hook is bounded by the grace period; after SIGTERM the
app gets what is left of it, at least ``MIN_TERM_WINDOW_S`` (the kubelet's minimum), then
SIGKILL resets whatever is left. ``stop`` is the lab's own quick shutdown (no hook).

What a kubelet reports besides the state (``on_event``, ``logs``): the Events of the pod's life
(Pulling, Pulled, Failed/BackOff on an unknown image, Created, Started, Unhealthy for each failed
readiness probe with the probe's answer, BackOff "Back-off restarting failed container" for a
crash image, Killing), and each container run's log: the app's start, an ERROR line for every
500 it answers, and a crash image's last words before it exits (a database URL with its password,
``LEAKED_SECRET``, as a real app's stack trace may print). The last ``LOG_LINES`` lines of the
current and the previous run are kept, also after the pod is gone (until ``LOGS_KEPT`` pods later).

Many pods share one event loop: a pod is an ``asyncio.Server``, not a thread or process.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import os
import random
import re
import secrets
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from greenlight_lab.proxy import (
    NEG_HEALTH_USER_AGENT,
    STREAM_LIMIT,
    HttpError,
    RequestHead,
    body_framing,
    close_quietly,
    discard_body,
    json_bytes,
    read_request_head,
    read_response_head,
    send_error,
    simple_response,
)

log = logging.getLogger(__name__)

CREATE_DELAY_S = 0.05  # "ContainerCreating": image present, container being set up
CRASH_AFTER_S = 0.3  # how long a crashing container listens before it exits
PULL_BACKOFF_START_S = 1.0  # an unknown image is looked up again after this, doubling
PULL_BACKOFF_CAP_S = 5.0
CRASH_BACKOFF_START_S = 0.5
CRASH_BACKOFF_CAP_S = 4.0
PROBE_TIMEOUT_S = 1.0
PROBE_FAILURE_THRESHOLD = 3
PROBE_USER_AGENT = "kube-probe/1.32"
LIFECYCLE_USER_AGENT = "kube-lifecycle/1.32"
MIN_TERM_WINDOW_S = 2.0  # the kubelet always leaves a container this long between SIGTERM and SIGKILL
LATENCY_JITTER = 0.1  # +-10 % around behaviour.latency_ms (when behaviour.latency_sigma is 0)
LOG_LINES = 200  # per container run, as a log tail
LOGS_KEPT = 2000  # pods whose logs are kept after they are gone
#: the password a crash image prints in its last log line (redaction tests look for it)
LEAKED_SECRET = "lab-db-pw-7f3c9e21d4"


class BehaviourLike(Protocol):
    """What the runtime reads from a catalogue behaviour."""

    version: str
    error_rate: float
    latency_ms: float
    latency_sigma: float  # > 0: lognormal latency, median latency_ms, shape sigma
    startup_s: float
    crash: bool
    shutdown: str  # "graceful" | "abrupt"
    unhealthy: bool  # the health endpoint answers 500


class CatalogueLike(Protocol):
    """The catalogue: image reference -> (digest, behaviour), None for an unknown image."""

    def lookup(self, image: str) -> tuple[str, Any] | None: ...


class RecorderLike(Protocol):
    """Where pods record every request they serve."""

    def record(
        self, labels: dict[str, str], code: int, latency_s: float, at: float | None = None
    ) -> None: ...


@dataclass(frozen=True)
class PodState:
    """What the kubelet would report about a pod's single container."""

    phase: str  # "Pending" | "Running" | "Failed"
    waiting_reason: str | None  # None | "ContainerCreating" | "ImagePullBackOff" | "CrashLoopBackOff"
    ready: bool
    port: int | None
    restart_count: int
    started_at: float | None  # time.time()
    message: str = ""


class PodLogs:
    """The log of a pod's container: the current (or last exited) run and the one before."""

    def __init__(self) -> None:
        self.runs: list[collections.deque[tuple[float, str]]] = []

    def new_run(self) -> None:
        self.runs = [*self.runs[-1:], collections.deque(maxlen=LOG_LINES)]

    def write(self, line: str) -> None:
        if not self.runs:
            self.new_run()
        self.runs[-1].append((time.time(), line))


class _Conn:
    """One accepted connection: its handler task and whether a request is in flight."""

    __slots__ = ("busy", "task", "writer")

    def __init__(self, writer: asyncio.StreamWriter, task: asyncio.Task[Any] | None) -> None:
        self.writer = writer
        self.task = task
        self.busy = False


class _Pod:
    """Everything the runtime holds about one pod."""

    def __init__(
        self,
        key: str,
        image: str,
        labels: dict[str, str],
        readiness_path: str | None,
        probe_period_s: float,
    ) -> None:
        self.key = key
        self.name = key.rsplit("/", 1)[-1]
        self.image = image
        self.labels = dict(labels)
        self.readiness_path = readiness_path
        self.probe_period_s = probe_period_s
        self.behaviour: Any = None
        self.state = PodState("Pending", None, False, None, 0, None)
        self.server: asyncio.Server | None = None
        self.serving = False  # the container's server is up (not crashed, not stopping)
        self.stopping = False
        self.conns: set[_Conn] = set()
        self.record_labels: dict[str, str] = {}
        self.life: asyncio.Task[None] | None = None
        self.prober: asyncio.Task[None] | None = None
        self.termination: asyncio.Task[None] | None = None
        self.kill_at = math.inf  # loop time of the SIGKILL once terminating
        self.deadline_moved = asyncio.Event()
        self.hurry = False  # stop() during a termination: no hook, no minimum window
        self.container = labels.get("container") or "app"
        self.logs = PodLogs()
        self.answered: collections.deque[float] = collections.deque()  # monotonic times, last second


class PodRuntime:
    """Runs lab pods as local HTTP servers and reports their state like a kubelet."""

    def __init__(self, catalogue: CatalogueLike, recorder: RecorderLike, host: str = "127.0.0.1") -> None:
        self._catalogue = catalogue
        self._recorder = recorder
        self._host = host
        self._pods: dict[str, _Pod] = {}
        self._callbacks: list[Callable[[str], None]] = []
        self._event_callbacks: list[Callable[[str, str, str, str, str], None]] = []
        self._logs: collections.OrderedDict[str, PodLogs] = collections.OrderedDict()
        self._probe_token = secrets.token_hex(8)

    # -- public API ---------------------------------------------------------------------------

    async def start(
        self,
        key: str,
        image: str,
        labels: dict[str, str],
        readiness_path: str | None,
        container_port: int,
        probe_period_s: float = 0.5,
    ) -> None:
        """Begin the life of pod ``key`` ("<cluster>/<namespace>/<pod>") and return at once.

        ``container_port`` is the port the manifest declares; the pod really listens on a
        free loopback port, reported as ``status(key).port``. Starting a key that already
        runs the same image is a no-op; another image is a ValueError (pods are immutable).
        """
        existing = self._pods.get(key)
        if existing is not None:
            if existing.image == image and not existing.stopping:
                return
            raise ValueError(f"pod {key} already exists with image {existing.image!r}; stop it first")
        pod = _Pod(key, image, labels, readiness_path, probe_period_s)
        self._pods[key] = pod
        self._logs.pop(key, None)
        self._logs[key] = pod.logs
        while len(self._logs) > LOGS_KEPT:
            self._logs.popitem(last=False)
        pod.life = asyncio.get_running_loop().create_task(self._live(pod), name=f"pod {key}")

    def status(self, key: str) -> PodState | None:
        """The current state of pod ``key``, None when the runtime does not know it."""
        pod = self._pods.get(key)
        return None if pod is None else pod.state

    async def stop(self, key: str, grace_s: float = 1.0) -> None:
        """Stop pod ``key``: refuse new connections now, let in-flight requests finish.

        Idle keep-alive connections are closed at once; connections with a request in
        flight are closed after their answer, or cut after ``grace_s``. The pod is then
        forgotten (``status`` returns None). Unknown keys are ignored.
        """
        pod = self._pods.get(key)
        if pod is None:
            return
        if pod.termination is not None:
            pod.hurry = True
            self._move_deadline(pod, asyncio.get_running_loop().time() + max(0.0, grace_s))
            await asyncio.shield(pod.termination)
            return
        if pod.stopping:
            return
        pod.stopping = True
        for task in (pod.life, pod.prober):
            if task is not None:
                task.cancel()
        self._set(pod, ready=False, message="terminating")
        await self._shut_server(pod, grace_s)
        if self._pods.get(key) is pod:
            del self._pods[key]
            self._notify(key)

    async def terminate(self, key: str, grace_s: float, pre_stop: dict[str, Any] | None = None) -> None:
        """Terminate pod ``key`` as the kubelet does and return once it is gone (forgotten).

        ``pre_stop`` is the container's ``lifecycle.preStop`` as in the pod spec. The hook
        runs while the pod keeps serving, bounded by ``grace_s``; then SIGTERM (the image's
        ``shutdown`` behaviour), at least ``MIN_TERM_WINDOW_S`` later SIGKILL. Calling again
        while it terminates can only bring the SIGKILL closer (a shorter grace period, or 0
        for a forced deletion). Unknown keys are ignored.
        """
        pod = self._pods.get(key)
        if pod is None or (pod.stopping and pod.termination is None):
            return
        loop = asyncio.get_running_loop()
        self._move_deadline(pod, loop.time() + max(0.0, float(grace_s)))
        if pod.termination is None:
            pod.termination = loop.create_task(self._terminate(pod, pre_stop), name=f"terminate {key}")
        await asyncio.shield(pod.termination)

    def on_change(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(key)`` (via loop.call_soon) after every change of a pod's state."""
        self._callbacks.append(callback)

    def on_event(self, callback: Callable[[str, str, str, str, str], None]) -> None:
        """Call ``callback(key, type, reason, message, container)`` (via loop.call_soon) for every
        Event the kubelet would record about the pod (``type`` Normal or Warning)."""
        self._event_callbacks.append(callback)

    def logs(self, key: str, previous: bool = False) -> list[tuple[float, str]]:
        """(time.time(), line) of pod ``key``'s container log: the current (or last exited) run,
        or with ``previous`` the run before it. KeyError for a pod the runtime never ran;
        LookupError with the API server's message when there is no such log (the container is
        waiting to start; no previous terminated container)."""
        logs = self._logs[key]
        name = key.rsplit("/", 1)[-1]
        pod = self._pods.get(key)
        container = pod.container if pod is not None else "app"
        if previous:
            if len(logs.runs) < 2:
                raise LookupError(f'previous terminated container "{container}" in pod "{name}" not found')
            return list(logs.runs[-2])
        if not logs.runs:
            reason = (pod.state.waiting_reason if pod is not None else None) or "ContainerCreating"
            raise LookupError(f'container "{container}" in pod "{name}" is waiting to start: {reason}')
        return list(logs.runs[-1])

    async def close(self) -> None:
        """Stop every pod."""
        await asyncio.gather(*(self.stop(key, grace_s=0.5) for key in list(self._pods)))

    # -- life cycle ---------------------------------------------------------------------------

    def _set(self, pod: _Pod, **changes: Any) -> None:
        new = replace(pod.state, **changes)
        if new != pod.state:
            pod.state = new
            self._notify(pod.key)

    def _notify(self, key: str) -> None:
        loop = asyncio.get_running_loop()
        for callback in self._callbacks:
            loop.call_soon(callback, key)

    def _event(self, pod: _Pod, type_: str, reason: str, message: str) -> None:
        loop = asyncio.get_running_loop()
        for callback in self._event_callbacks:
            loop.call_soon(callback, pod.key, type_, reason, message, pod.container)

    async def _live(self, pod: _Pod) -> None:
        try:
            _digest, pod.behaviour = await self._pull(pod)
            self._set(pod, phase="Pending", waiting_reason="ContainerCreating", message="")
            await asyncio.sleep(CREATE_DELAY_S)
            backoff = CRASH_BACKOFF_START_S
            while True:
                if pod.logs.runs:
                    self._event(
                        pod, "Normal", "Pulled", f'Container image "{pod.image}" already present on machine'
                    )
                self._event(pod, "Normal", "Created", f"Created container: {pod.container}")
                self._event(pod, "Normal", "Started", f"Started container {pod.container}")
                await self._run_container(pod)
                # only crash images get here: the container exited
                self._set(
                    pod,
                    phase="Running",
                    waiting_reason="CrashLoopBackOff",
                    ready=False,
                    port=None,
                    restart_count=pod.state.restart_count + 1,
                    message=f"back-off {backoff:g}s restarting failed container of pod {pod.name}",
                )
                namespace = pod.key.split("/")[1] if pod.key.count("/") >= 2 else ""
                self._event(
                    pod,
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {pod.container} in pod {pod.name}_{namespace}",
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, CRASH_BACKOFF_CAP_S)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("pod %s failed", pod.key)
            self._set(
                pod, phase="Failed", waiting_reason=None, ready=False, message=f"lab runtime error: {e}"
            )

    async def _pull(self, pod: _Pod) -> tuple[str, Any]:
        """Look the image up, retrying with back-off (as the kubelet does) while it is unknown."""
        backoff = PULL_BACKOFF_START_S
        self._event(pod, "Normal", "Pulling", f'Pulling image "{pod.image}"')
        while (found := self._catalogue.lookup(pod.image)) is None:
            message = f'Back-off pulling image "{pod.image}": not found in the lab image catalogue'
            self._event(
                pod,
                "Warning",
                "Failed",
                f'Failed to pull image "{pod.image}": not found in the lab image catalogue',
            )
            self._event(pod, "Normal", "BackOff", f'Back-off pulling image "{pod.image}"')
            self._set(pod, phase="Pending", waiting_reason="ImagePullBackOff", message=message)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, PULL_BACKOFF_CAP_S)
            self._event(pod, "Normal", "Pulling", f'Pulling image "{pod.image}"')
        self._event(pod, "Normal", "Pulled", f'Successfully pulled image "{pod.image}"')
        return found

    async def _run_container(self, pod: _Pod) -> None:
        """Start the app, serve; return only when a crash image's container exits."""
        behaviour = pod.behaviour
        pod.logs.new_run()
        self._set(pod, phase="Running", waiting_reason=None, ready=False, started_at=time.time(), message="")
        pod.logs.write(f"starting {behaviour.version} image={pod.image}")
        await asyncio.sleep(max(0.0, float(behaviour.startup_s)))
        server = await asyncio.start_server(
            lambda r, w: self._serve(pod, r, w), self._host, 0, limit=STREAM_LIMIT
        )
        port = server.sockets[0].getsockname()[1]
        pod.server, pod.serving = server, True
        pod.record_labels = {**pod.labels, "instance": f"{pod.name}:{port}"}
        self._set(pod, port=port)
        pod.logs.write(f"listening on 127.0.0.1:{port}")
        if pod.readiness_path:
            pod.prober = asyncio.get_running_loop().create_task(self._probe_loop(pod, port))
        elif not behaviour.crash:
            self._set(pod, ready=True)
        if not behaviour.crash:
            await asyncio.Event().wait()  # serve until cancelled by stop()
        await asyncio.sleep(CRASH_AFTER_S)
        pod.logs.write(f"connecting to postgresql://app:{LEAKED_SECRET}@db.internal:5432/app")
        pod.logs.write('FATAL: password authentication failed for user "app"')
        pod.logs.write("exiting with code 1")
        if pod.prober is not None:
            pod.prober.cancel()
            pod.prober = None
        await self._shut_server(pod, grace_s=0.0)

    async def _shut_server(self, pod: _Pod, grace_s: float) -> None:
        """Stop listening, close idle connections, wait up to ``grace_s`` for busy ones."""
        pod.serving = False
        server, pod.server = pod.server, None
        if server is not None:
            server.close()
        busy = []
        for conn in list(pod.conns):
            if conn.busy and conn.task is not None:
                busy.append(conn.task)
            else:
                close_quietly(conn.writer)
        if busy and grace_s > 0:
            await asyncio.wait(busy, timeout=grace_s)
        for conn in list(pod.conns):
            conn.writer.transport.abort()
        pod.conns.clear()

    # -- termination --------------------------------------------------------------------------

    @staticmethod
    def _move_deadline(pod: _Pod, kill_at: float) -> None:
        if kill_at < pod.kill_at:
            pod.kill_at = kill_at
            pod.deadline_moved.set()

    async def _bounded(self, pod: _Pod, work: Awaitable[Any]) -> bool:
        """Run ``work`` until the pod's SIGKILL deadline (which may move closer); True if it ended."""
        task = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        try:
            while not task.done():
                remaining = pod.kill_at - loop.time()
                if remaining <= 0:
                    break
                pod.deadline_moved.clear()
                moved = loop.create_task(pod.deadline_moved.wait())
                try:
                    await asyncio.wait({task, moved}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    moved.cancel()
            return task.done()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _terminate(self, pod: _Pod, pre_stop: dict[str, Any] | None) -> None:
        loop = asyncio.get_running_loop()
        try:
            hook = pre_stop if pre_stop and not pod.hurry and pod.kill_at > loop.time() else None
            if hook is not None and not await self._bounded(pod, self._pre_stop(pod, hook)):
                log.info("pod %s: preStop hook cut off by the grace period", pod.key)
            # SIGTERM
            self._event(pod, "Normal", "Killing", f"Stopping container {pod.container}")
            pod.logs.write("received SIGTERM, shutting down")
            pod.stopping = True
            for task in (pod.life, pod.prober):
                if task is not None:
                    task.cancel()
            self._set(pod, ready=False, message="terminating")
            if not pod.hurry:
                pod.kill_at = max(pod.kill_at, loop.time() + MIN_TERM_WINDOW_S)
            graceful = pod.behaviour is not None and pod.behaviour.shutdown == "graceful"
            if graceful and not await self._bounded(pod, self._drain(pod)):
                log.info("pod %s: killed at the end of its grace period", pod.key)
            self._kill(pod)  # SIGKILL (or the abrupt app's own exit)
        except Exception:
            log.exception("pod %s: termination failed", pod.key)
            self._kill(pod)
        finally:
            if self._pods.get(pod.key) is pod:
                del self._pods[pod.key]
                self._notify(pod.key)

    async def _pre_stop(self, pod: _Pod, hook: dict[str, Any]) -> None:
        """Run a preStop hook the way the lab can: sleeps, and HTTP GETs to the pod itself."""
        if isinstance(hook.get("sleep"), dict):
            await asyncio.sleep(max(0.0, float(hook["sleep"].get("seconds") or 0)))
            return
        if isinstance(hook.get("exec"), dict):
            command = [str(c) for c in hook["exec"].get("command") or []]
            seconds = sleep_seconds(command)
            if seconds is None:
                log.warning("pod %s: the lab cannot run preStop exec %r; skipped", pod.key, command)
                return
            await asyncio.sleep(seconds)
            return
        if isinstance(hook.get("httpGet"), dict):
            await self._pre_stop_get(pod, hook["httpGet"])
            return
        log.warning("pod %s: unsupported preStop hook %r; skipped", pod.key, hook)

    async def _pre_stop_get(self, pod: _Pod, get: dict[str, Any]) -> None:
        """GET the hook's path from the pod (whatever port it names: the pod has one) and
        wait for the answer."""
        port = pod.state.port
        if port is None or pod.server is None:
            log.warning("pod %s: preStop httpGet: the container is not listening; skipped", pod.key)
            return
        path = str(get.get("path") or "/")
        headers = "".join(
            f"{h['name']}: {h['value']}\r\n" for h in get.get("httpHeaders") or [] if "name" in h
        )
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self._host}:{port}\r\nUser-Agent: {LIFECYCLE_USER_AGENT}\r\n"
            f"{headers}Connection: close\r\n\r\n"
        ).encode()
        writer = None
        try:
            reader, writer = await asyncio.open_connection(self._host, port)
            writer.write(request)
            response = await read_response_head(reader)
            await reader.read()  # the body, until the pod closes (Connection: close)
            log.info("pod %s: preStop GET %s answered %s", pod.key, path, response.status)
        except (OSError, EOFError, HttpError) as e:
            log.warning("pod %s: preStop GET %s failed: %s", pod.key, path, e)
        finally:
            if writer is not None:
                close_quietly(writer)

    async def _drain(self, pod: _Pod) -> None:
        """A graceful app's SIGTERM: close the listener and idle connections, finish the rest."""
        pod.serving = False
        server, pod.server = pod.server, None
        if server is not None:
            server.close()
        for conn in list(pod.conns):
            if not conn.busy:
                close_quietly(conn.writer)
        while pod.conns:
            tasks = [c.task for c in pod.conns if c.task is not None and not c.task.done()]
            if not tasks:
                break
            await asyncio.wait(tasks)

    def _kill(self, pod: _Pod) -> None:
        """The process is gone: the listener closes and every connection is reset, unanswered."""
        pod.serving = False
        server, pod.server = pod.server, None
        if server is not None:
            server.close()
        for conn in list(pod.conns):
            if conn.task is not None and conn.task is not asyncio.current_task():
                conn.task.cancel()
            reset(conn.writer)
        pod.conns.clear()

    # -- readiness ----------------------------------------------------------------------------

    async def _probe_loop(self, pod: _Pod, port: int) -> None:
        failures = 0
        while True:
            failure = await self._probe(pod, port)
            ok = failure is None
            if failure is not None:
                self._event(pod, "Warning", "Unhealthy", f"Readiness probe failed: {failure}")
            if ok:
                failures = 0
                if not pod.behaviour.crash:
                    self._set(pod, ready=True)
            else:
                failures += 1
                if failures >= PROBE_FAILURE_THRESHOLD:
                    self._set(pod, ready=False)
            await asyncio.sleep(pod.probe_period_s)

    async def _probe(self, pod: _Pod, port: int) -> str | None:
        """One HTTP readiness probe, as the kubelet makes it: success (None) is 200-399; else
        the failure as the kubelet words it."""
        request = (
            f"GET {pod.readiness_path} HTTP/1.1\r\nHost: {self._host}:{port}\r\n"
            f"User-Agent: {PROBE_USER_AGENT}\r\nX-Lab-Probe: {self._probe_token}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        writer = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(self._host, port)
                writer.write(request)
                response = await read_response_head(reader)
                if 200 <= response.status < 400:
                    return None
                return f"HTTP probe failed with statuscode: {response.status}"
        except TimeoutError:
            url = f"http://{self._host}:{port}{pod.readiness_path}"
            return f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
        except (OSError, EOFError, HttpError) as e:
            url = f"http://{self._host}:{port}{pod.readiness_path}"
            refused = isinstance(e, ConnectionRefusedError)
            return f'Get "{url}": ' + (
                f"dial tcp {self._host}:{port}: connect: connection refused"
                if refused
                else str(e) or type(e).__name__
            )
        finally:
            if writer is not None:
                close_quietly(writer)

    # -- serving ------------------------------------------------------------------------------

    async def _serve(self, pod: _Pod, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer, asyncio.current_task())
        if not pod.serving:
            close_quietly(writer)
            return
        pod.conns.add(conn)
        try:
            while pod.serving:
                head = await read_request_head(reader)
                if head is None:
                    return
                conn.busy = True
                began = time.perf_counter()
                framing = body_framing(head)
                if "100-continue" in (head.get("expect") or "").lower():
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                await discard_body(reader, framing)
                status, body = await self._answer(pod, head)
                keep_alive = head.keep_alive and pod.serving
                writer.write(
                    simple_response(
                        status,
                        body,
                        content_type="text/plain" if status == 200 and body == b"ok" else "application/json",
                        keep_alive=keep_alive,
                        extra=[("X-Pod", pod.name)],
                        head_only=head.method == "HEAD",
                    )
                )
                await writer.drain()
                if not self._is_own_probe(pod, head) and not self._is_lb_health_check(pod, head):
                    self._recorder.record(dict(pod.record_labels), status, time.perf_counter() - began)
                conn.busy = False
                if not keep_alive:
                    return
        except HttpError as e:
            await send_error(writer, e.status, str(e))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            log.exception("pod %s: unexpected error while serving", pod.key)
        finally:
            conn.busy = False
            pod.conns.discard(conn)
            close_quietly(writer)

    def _is_own_probe(self, pod: _Pod, head: RequestHead) -> bool:
        return head.path == pod.readiness_path and head.get("x-lab-probe") == self._probe_token

    @staticmethod
    def _is_lb_health_check(pod: _Pod, head: RequestHead) -> bool:
        """A load balancer's health check of a NEG (``GoogleHC/1.0``): not counted as traffic, as
        an app's metrics middleware skips its health endpoint; else a colour that gets no requests
        would still show two a second per pod in Monitoring."""
        return head.get("user-agent") == NEG_HEALTH_USER_AGENT and head.method == "GET"

    async def _answer(self, pod: _Pod, head: RequestHead) -> tuple[int, bytes]:
        """Status and body for one request, following the image's behaviour."""
        behaviour = pod.behaviour
        if pod.readiness_path and head.path == pod.readiness_path:
            if behaviour.crash:
                return 503, json_bytes({"error": "starting", "pod": pod.name})
            if getattr(behaviour, "unhealthy", False):
                pod.logs.write(
                    f"ERROR health check failed: database db.internal:5432 unreachable (version {behaviour.version})"
                )
                return 500, json_bytes({"error": "database unreachable", "pod": pod.name})
            return 200, b"ok"
        capacity = float(getattr(behaviour, "capacity_rps", 0.0) or 0.0)
        if capacity > 0:  # more than the pod can take in the last second: it sheds the rest
            now = time.monotonic()
            while pod.answered and pod.answered[0] < now - 1.0:
                pod.answered.popleft()
            if len(pod.answered) >= capacity:
                pod.logs.write(
                    f"ERROR {head.method} {head.path}: 503 overloaded (version {behaviour.version})"
                )
                return 503, json_bytes({"error": "overloaded", "version": behaviour.version, "pod": pod.name})
            pod.answered.append(now)
        if behaviour.latency_ms > 0:
            await asyncio.sleep(added_latency_s(behaviour.latency_ms, behaviour.latency_sigma))
        rate = behaviour.error_rate
        started = pod.state.started_at
        if (
            behaviour.degrade_after_s > 0
            and started is not None
            and time.time() - started >= behaviour.degrade_after_s
        ):
            rate = behaviour.degraded_error_rate
        if rate > 0 and random.random() < rate:
            pod.logs.write(
                f"ERROR {head.method} {head.path}: 500 internal error (version {behaviour.version})"
            )
            return 500, json_bytes({"error": "internal error", "version": behaviour.version, "pod": pod.name})
        color = pod.labels.get("color", "")
        return 200, json_bytes({"version": behaviour.version, "pod": pod.name, "color": color})


def added_latency_s(latency_ms: float, sigma: float = 0.0) -> float:
    """The latency (seconds) an answer gets: lognormal of median ``latency_ms`` and shape
    ``sigma`` when ``sigma`` > 0, else ``latency_ms`` within +-LATENCY_JITTER."""
    if sigma > 0:
        return random.lognormvariate(math.log(latency_ms), sigma) / 1000.0
    return latency_ms * random.uniform(1 - LATENCY_JITTER, 1 + LATENCY_JITTER) / 1000.0


_SLEEP_ARG = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)(s|m|h)?$")
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh"})


def sleep_seconds(command: list[str]) -> float | None:
    """How long a preStop exec command sleeps, when all it does is sleep; else None.

    ``["sleep", "5"]``, ``["/bin/sleep", "0.5"]``, ``["/bin/sh", "-c", "sleep 5"]``.
    """
    if len(command) == 3 and os.path.basename(command[0]) in _SHELLS and command[1] == "-c":
        command = command[2].strip().rstrip(";").split()
    if len(command) != 2 or os.path.basename(command[0]) != "sleep":
        return None
    m = _SLEEP_ARG.match(command[1])
    if m is None:
        return None
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2) or "s"]


def reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset (SO_LINGER 0), as a killed process's socket may."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
