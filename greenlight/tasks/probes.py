"""HTTP probes of an app's live or preview Service: smoke probes and synthetic traffic.

Probes reach a Service the way the profile says (``gate.probe_via``):

- ``apiserver``: through the Kubernetes API server's service proxy (works from anywhere with
  cluster credentials: a laptop, CI, a worker outside the cluster);
- ``cluster-dns``: ``http://<service>.<namespace>.svc.cluster.local:<port>`` with httpx (flows
  running inside the cluster), the port read from the Service.

Every request carries the probe's timeout; an answer with an unexpected status is a result,
not an exception.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal

import httpx
from prefect import task

from greenlight.clients.kube import Kube
from greenlight.core.gate import SmokeResult
from greenlight.core.httproute import colour_service
from greenlight.errors import GreenlightError, InputInvalid, NotFound, TransientError
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster, connect
from greenlight.tasks.policy import FRESH, RETRIES, logger
from greenlight.tasks.routers import router_for

Target = Literal["live", "preview"]
ERROR_BODY_MAX = 200
DEFAULT_TIMEOUT_S = 5.0
MAX_WORKERS = 32
SENT_KEPT = 100_000  # answer times kept per SyntheticTraffic (hours at gate rates)


def service_for(
    profile: Profile, app: str, target: Literal["live", "preview"], colour: str | None = None
) -> str:
    """The name of ``app``'s live Service or preview Service; with an HTTPRoute router and a
    ``colour``, ``live`` is that colour's own Service (the route's backend; the gateway's address
    is outside the cluster's API)."""
    a = profile.app(app)
    if target == "live":
        if colour and profile.traffic.router == "gateway-httproute":
            return colour_service(a.service, colour)
        return a.service
    if target == "preview":
        return a.preview
    raise InputInvalid(f"target must be 'live' or 'preview', not {target!r}")


def _live_colour(profile: Profile, app: str) -> str | None:
    """The colour ``app``'s router sends its live traffic to now (during an overlap, the one it
    moves from)."""
    kube = connect(profile)
    try:
        snap = router_for(profile).read(kube, profile, profile.app(app))
    finally:
        kube.close()
    return snap.colour() if snap else None


@dataclass(frozen=True)
class Answer:
    """What one GET got: a status (None: no answer), the time it took, and an error note."""

    status: int | None
    elapsed_ms: float
    error: str | None = None
    transient: bool = False  # no answer because the path to the Service failed (retry may help)


class Prober:
    """GETs of one Service's paths, through the API server or cluster DNS (one open client)."""

    def __init__(self, profile: Profile, app: str, target: Target, colour: str | None = None) -> None:
        self.profile = profile
        self.namespace = profile.namespace
        if target == "live" and colour is None and profile.traffic.router == "gateway-httproute":
            colour = _live_colour(profile, app)
        self.service = service_for(profile, app, target, colour)
        self.via = profile.gate.probe_via
        self._kube: Kube | None = None
        self._http: httpx.Client | None = None
        self._base_url = ""
        if self.via == "apiserver":
            self._kube = connect(profile)
        else:
            with cluster(profile) as kube:
                port = service_port(kube, self.namespace, self.service)
            self._base_url = f"http://{self.service}.{self.namespace}.svc.cluster.local:{port}"
            limits = httpx.Limits(max_connections=MAX_WORKERS)
            self._http = httpx.Client(base_url=self._base_url, limits=limits)

    @property
    def concurrency(self) -> int:
        """How many GETs this prober can have in flight without growing its connection pool."""
        if self._kube is not None:
            config = getattr(self._kube.api_client, "configuration", None)
            return int(getattr(config, "connection_pool_maxsize", 10) or 10)
        return MAX_WORKERS

    def get(self, path: str, timeout_s: float) -> Answer:
        """GET ``path``; a status is an answer whatever it is, a transport failure is not."""
        started = time.monotonic()

        def took() -> float:
            return (time.monotonic() - started) * 1000.0

        if self._kube is not None:
            try:
                status, body = self._kube.service_proxy_get(
                    self.service, self.namespace, path, timeout_s=timeout_s
                )
            except TransientError as e:
                return Answer(None, took(), str(e), transient=True)
            error = None if status < 400 else _excerpt(body)
            return Answer(status, took(), error)
        assert self._http is not None
        try:
            response = self._http.get(path, timeout=timeout_s)
        except httpx.HTTPError as e:
            return Answer(None, took(), f"{self._base_url}{path}: {type(e).__name__}: {e}", transient=True)
        error = None if response.status_code < 400 else _excerpt(response.content)
        return Answer(response.status_code, took(), error)

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()
        if self._http is not None:
            self._http.close()


def service_port(kube: Kube, namespace: str, service: str) -> int:
    """The Service's port named ``http``, else its first port; NotFound without one."""
    svc = kube.get("services", service, namespace)
    ports = (svc.get("spec") or {}).get("ports") or []
    if not ports:
        raise NotFound(f"service {namespace}/{service} has no ports to probe")
    named = [p for p in ports if p.get("name") == "http"]
    return int((named or ports)[0]["port"])


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    return text if len(text) <= ERROR_BODY_MAX else text[: ERROR_BODY_MAX - 3] + "..."


@task(name="smoke", **FRESH, **RETRIES)
def smoke(profile: Profile, app: str, target: Literal["live", "preview"] = "preview") -> list[SmokeResult]:
    """Run each of ``profile.gate.smoke``'s probes against ``app``'s ``target`` Service.

    Each result records the status (None: no answer), the time taken and the error. When no
    probe got any answer because the way to the Service failed (API server unreachable,
    timeouts), raises TransientError so the task retries; a wrong status is a result.
    """
    prober = Prober(profile, app, target)
    try:
        answers = [(probe, prober.get(probe.path, probe.timeout_s)) for probe in profile.gate.smoke]
    finally:
        prober.close()
    if answers and all(a.transient for _, a in answers):
        first = answers[0][1].error
        raise TransientError(f"smoke probes of {profile.namespace}/{prober.service}: no answer: {first}")
    results = [
        SmokeResult(f"GET {probe.path}", probe.expect_status, a.status, round(a.elapsed_ms, 1), a.error)
        for probe, a in answers
    ]
    for r in results:
        logger().info("smoke %s/%s %s", profile.namespace, prober.service, r.reason)
    return results


class SyntheticTraffic:
    """Background GETs of ``/`` at ``profile.gate.synthetic_rps`` to ``app``'s ``target`` Service.

    A context manager: traffic starts on enter and stops on exit, waiting for the requests in
    flight (each bounded by its timeout). Requests go the way smoke probes do, each with the
    first smoke probe's timeout, at most ``rps * timeout`` (capped at 32) in flight at once; a
    tick that finds them all busy is skipped and counted (``skipped``) rather than queued, so
    a slow target never builds a backlog. ``sent`` counts requests sent, ``failed`` those
    without an answer or answered 5xx. An rps of 0 does nothing.
    """

    def __init__(
        self, profile: Profile, app: str, target: str = "preview", colour: str | None = None
    ) -> None:
        if target not in ("live", "preview"):
            raise InputInvalid(f"target must be 'live' or 'preview', not {target!r}")
        self.profile = profile
        self.app = app
        self.target: Target = "live" if target == "live" else "preview"
        self.colour = colour  # the live colour meant (an HTTPRoute's backend Service is per colour)
        self.rps = float(profile.gate.synthetic_rps)
        self.timeout_s = profile.gate.smoke[0].timeout_s if profile.gate.smoke else DEFAULT_TIMEOUT_S
        self.sent = 0
        self.failed = 0
        self.skipped = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._slots: threading.Semaphore | None = None
        self._probers: list[Prober] = []
        self._next = 0
        self._answered: deque[float] = deque(maxlen=SENT_KEPT)  # epoch seconds, oldest first

    def __enter__(self) -> SyntheticTraffic:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start sending in the background (nothing at 0 rps or when already started)."""
        if self.rps <= 0 or self._ticker is not None:
            return
        first = Prober(self.profile, self.app, self.target, self.colour)
        workers = max(1, min(math.ceil(self.rps * self.timeout_s), MAX_WORKERS))
        # enough clients that no connection pool is asked for more than it keeps
        self._probers = [first] + [
            Prober(self.profile, self.app, self.target, self.colour)
            for _ in range(math.ceil(workers / first.concurrency) - 1)
        ]
        self._slots = threading.Semaphore(workers)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"synthetic-{self.app}")
        self._ticker = threading.Thread(target=self._tick, name=f"synthetic-{self.app}", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        self._stop.set()
        if self._ticker is None:
            return
        self._ticker.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for prober in self._probers:
            prober.close()
        self._probers = []
        self._ticker = self._pool = None
        logger().info(
            "synthetic traffic to %s %s: %d sent, %d failed, %d skipped",
            self.app,
            self.target,
            self.sent,
            self.failed,
            self.skipped,
        )

    def _tick(self) -> None:
        assert self._slots is not None and self._pool is not None
        period = 1.0 / self.rps
        next_at = time.monotonic()
        while not self._stop.is_set():
            if self._slots.acquire(blocking=False):
                self._next += 1
                self._pool.submit(self._send, self._probers[self._next % len(self._probers)])
            else:
                with self._lock:
                    self.skipped += 1
            next_at += period
            delay = next_at - time.monotonic()
            if delay < -1.0:  # fell far behind (a stalled machine): do not burst to catch up
                next_at = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _send(self, prober: Prober) -> None:
        assert self._slots is not None
        bad = True
        try:
            answer = prober.get("/", self.timeout_s)
            bad = answer.status is None or answer.status >= 500
        except GreenlightError:
            pass  # counted as failed
        finally:
            self._slots.release()
            with self._lock:
                self.sent += 1
                self.failed += int(bad)
                self._answered.append(time.time())

    def sent_between(self, start: datetime, end: datetime) -> int:
        """Requests sent that were answered (or gave up) in ``[start, end)``: the share of a
        Monitoring window that came from this traffic (a server counts a request when it
        answers it)."""
        t0, t1 = start.timestamp(), end.timestamp()
        with self._lock:
            times = list(self._answered)
        return bisect.bisect_left(times, t1) - bisect.bisect_left(times, t0)
