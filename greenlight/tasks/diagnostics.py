"""Read what a diagnosis needs from the cluster: an app's pods per colour, their Events and logs.

:func:`collect` reads, for each colour asked (every colour of the profile when none is), the
colour's Deployment and the pods its selector matches (at most ``MAX_PODS`` per colour), each
pod's Events (``fieldSelector involvedObject.name=<pod>``, as ``kubectl describe`` does), and the
app container's log tail of the pods that are not running and ready (and of the previous run
after a restart), within ``BUDGET_S`` in all. What cannot be read becomes a note in the
diagnosis, never an error, except
that no Deployment of the asked colours at all is NotFound. Logs, Events and notes are redacted
(greenlight.core.redact) with every secret value this process knows.

:func:`report_failure` is what a release calls where a rollout, a smoke probe, a gate or the
bake failed: it collects, adds the tables to the run report, the summary as a step and the short
form to the Slack thread, and never raises (a diagnosis must not change how a release fails).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from prefect import task

from greenlight.clients.kube import Kube
from greenlight.core import diagnostics as dg
from greenlight.core.gate import SmokeResult
from greenlight.core.redact import redact
from greenlight.core.report import RunReport
from greenlight.errors import GreenlightError, InputInvalid, NotFound, TransientError
from greenlight.settings import App, Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.kube import _known_secrets, deployment_name
from greenlight.tasks.policy import FRESH, logger

MAX_PODS = 10  # pods per colour read in detail
BUDGET_S = 20.0  # the most one diagnosis may take: a stalled API server must not hold a failing release


class _Budget:
    """Time left for one diagnosis; each call gets a timeout that, with the client's retries of a
    timed-out read (Kube.ATTEMPTS), fits in what is left."""

    def __init__(self, kube: Kube, seconds: float) -> None:
        self.kube = kube
        self.seconds = seconds
        self.timeout_s = kube.timeout_s
        self.until = time.monotonic() + seconds

    def take(self) -> bool:
        """True (with the client's timeout cut to fit what is left) while time is left."""
        left = self.until - time.monotonic()
        if left <= 0.2:
            return False
        self.kube.timeout_s = min(self.timeout_s, left / Kube.ATTEMPTS)
        return True


def _selector(dep: dict[str, Any]) -> str:
    labels = ((dep.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def _container(pod: dict[str, Any], app: App) -> str | None:
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
    return app.container if app.container in names else None


def _read_pod(
    kube: Kube,
    budget: _Budget,
    namespace: str,
    pod: dict[str, Any],
    app: App,
    colour: str,
    lines: int,
    secrets: list[str],
    every_log: bool,
) -> dg.PodDiagnosis:
    name = str(pod["metadata"]["name"])
    notes: list[str] = []
    events: list[dict[str, Any]] = []
    spent = f"not read: the diagnostics' time budget ({budget.seconds:g} s) is spent"
    if not budget.take():
        notes.append(spent)
        return dg.diagnose_pod(pod, colour, notes=notes, secrets=secrets)
    try:
        events = list(
            kube.list("events", namespace, field_selector=f"involvedObject.name={name}").get("items") or []
        )
    except GreenlightError as e:
        notes.append(f"events: {e}")
    log = previous = None
    if (every_log or dg.needs_logs(pod)) and lines > 0:
        container = _container(pod, app)
        try:
            if not budget.take():
                raise TransientError(spent)
            log = kube.pod_log(name, namespace, tail_lines=lines, container=container)
        except GreenlightError as e:
            notes.append(f"log: {e}")
        if dg.wants_previous(pod) and budget.take():
            try:
                previous = kube.pod_log(name, namespace, tail_lines=lines, previous=True, container=container)
            except InputInvalid:
                pass  # 400: no previous terminated container (it has not restarted since it crashed)
            except GreenlightError as e:
                notes.append(f"log of the previous run: {e}")
    return dg.diagnose_pod(pod, colour, events, log, previous, lines=lines, secrets=secrets, notes=notes)


def collect(
    profile: Profile,
    app_name: str,
    colour: str | None = None,
    lines: int = dg.DEFAULT_LINES,
    probes: Iterable[SmokeResult] = (),
    context: str = "",
    every_log: bool = False,
    budget_s: float = BUDGET_S,
) -> dg.Diagnosis:
    """The diagnosis of ``app_name`` (its ``colour``, or every colour) in ``profile``'s namespace
    now. Logs are read of the pods that are not running and ready, or with ``every_log`` of every
    pod (after a failed probe or a breach: the app fails while its pods look healthy). It takes at
    most about ``budget_s``: what is left unread then is a note. NotFound for an unknown app, or
    when no Deployment of the colours exists; InputInvalid
    for a colour the profile does not have; the first error when no Deployment could be read;
    anything else unreadable is a note."""
    known = [a.name for a in profile.apps]
    if app_name not in known:
        raise NotFound(
            f"unknown app '{app_name}' in environment '{profile.name}' (known: {', '.join(known)})"
        )
    app = profile.app(app_name)
    colours = list(profile.release.colours)
    if colour is not None and colour not in colours:
        raise InputInvalid(
            f"unknown colour '{colour}' for environment '{profile.name}' (colours: {', '.join(colours)})"
        )
    wanted = [colour] if colour else colours
    ns = profile.namespace
    secrets = _known_secrets(profile)
    pods: list[dg.PodDiagnosis] = []
    notes: list[str] = []
    found = 0
    first_error: GreenlightError | None = None
    with cluster(profile) as kube:
        budget = _Budget(kube, budget_s)
        for c in wanted:
            name = deployment_name(app, c)
            try:
                budget.take()
                dep = kube.find("deployments", name, ns)
            except GreenlightError as e:
                notes.append(f"deployment {name}: {e}")
                first_error = first_error or e
                continue
            if dep is None:
                if colour is None:
                    continue  # a colour not deployed yet (or scaled away and deleted) is no news
                break
            found += 1
            try:
                budget.take()
                items = kube.items("pods", ns, label_selector=_selector(dep))
            except GreenlightError as e:
                notes.append(f"pods of {name}: {e}")
                continue
            items.sort(key=lambda p: (not dg.needs_logs(p), p["metadata"]["name"]))
            if len(items) > MAX_PODS:
                notes.append(f"{name}: {len(items) - MAX_PODS} more pods not read")
            pods += [
                _read_pod(kube, budget, ns, p, app, c, lines, secrets, every_log) for p in items[:MAX_PODS]
            ]
    if not found and first_error is not None:
        raise first_error
    if not found:
        which = f"{app.name}-{colour}" if colour else " or ".join(deployment_name(app, c) for c in wanted)
        raise NotFound(f"no Deployment {which} in {profile.name} (namespace {ns})")
    return dg.assemble(
        profile.name,
        ns,
        app.name,
        colour,
        pods,
        dg.probe_answers(probes, secrets),
        [redact(n, secrets) for n in notes],
        context,
    )


@task(name="collect-diagnostics", **FRESH)
def collect_diagnostics(
    profile: Profile,
    app_name: str,
    colour: str | None = None,
    lines: int = dg.DEFAULT_LINES,
    probes: tuple[SmokeResult, ...] = (),
    context: str = "",
    every_log: bool = False,
) -> dg.Diagnosis:
    """:func:`collect` as a task (the flows' record shows when and what it read)."""
    return collect(profile, app_name, colour, lines, probes, context, every_log)


def report_failure(
    profile: Profile,
    report: RunReport,
    say: Callable[[str], None],
    app_name: str,
    colour: str,
    context: str,
    probes: Iterable[SmokeResult] = (),
    every_log: bool = False,
) -> dg.Diagnosis | None:
    """Collect the diagnosis of a failing colour; put it in ``report`` and ``say`` its short form.
    Best-effort: a failure to collect is a step of the report and a log line, never raised."""
    log = logger()
    try:
        d = collect_diagnostics(
            profile, app_name, colour, probes=tuple(probes), context=context, every_log=every_log
        )
    except Exception as e:  # the release's own error is what matters; this is evidence
        reason = redact(f"{type(e).__name__}: {e}", _known_secrets(profile))
        report.step(f"{app_name}: diagnostics", "skipped", f"not collected: {reason}")
        log.warning("diagnostics of %s %s not collected: %s", app_name, colour, reason)
        return None
    try:
        for caption, header, rows in dg.report_tables(d):
            report.table(caption, header, rows)
        report.step(f"{app_name}: diagnostics", "info", d.summary())
        say(dg.render_slack(d))
    except Exception as e:
        log.warning("diagnostics of %s %s not reported: %s", app_name, colour, e)
    return d
