"""What a person would type kubectl for when a rollout, a smoke probe or a gate fails, assembled.

From pods, Events and log text as the Kubernetes API serves them (plain dicts and strings),
:func:`diagnose_pod` makes one :class:`PodDiagnosis`: phase, ready, restarts, each container's
state and reason (``CrashLoopBackOff``, last exit code), the pod's last Events (Warning first,
newest first, repeats counted), the last log lines of the current and the previous container run,
redacted with :func:`greenlight.core.redact.redact`, and in ``why`` one line saying what is wrong
("CrashLoopBackOff: back-off restarting failed container (3 restarts, last exit 1 Error)",
"not ready: Readiness probe failed: HTTP probe failed with statuscode: 500"), empty when healthy.
:func:`assemble` puts the pods (unhealthy first), the smoke probes' answers and the notes of what
could not be read into a :class:`Diagnosis`.

Renderings: :func:`render_text` (the CLI), :func:`report_tables` (rows for a run report's
markdown tables), :func:`render_markdown` (a standalone artifact), :func:`render_slack` (a few
lines, at most ``SLACK_LIMIT`` characters), :func:`to_dict` (``--json``). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from greenlight.core.gate import SmokeResult
from greenlight.core.redact import redact
from greenlight.core.report import table_cell

DEFAULT_LINES = 20  # log lines per container run
DEFAULT_EVENTS = 6  # Events per pod
MAX_LINE = 300  # characters of one log line or event message kept
SLACK_LIMIT = 1500  # characters of the Slack rendering
SLACK_PODS = 3  # unhealthy pods shown in Slack
SLACK_LOG_LINES = 3
SLACK_EVENTS = 2

Obj = Mapping[str, Any]
# log lines that say something went wrong (to pick which pod's log Slack quotes)
_ALARMING = re.compile(r"\b(error|fatal|panic|exception|traceback|critical)\b", re.IGNORECASE)


@dataclass(frozen=True)
class EventSummary:
    """One Event (or several alike, counted) about a pod, as ``kubectl describe`` lists it."""

    type: str  # "Normal" | "Warning"
    reason: str
    message: str
    count: int
    last_seen: str  # RFC 3339, "" when unknown
    source: str  # "kubelet", "default-scheduler", ...

    def line(self) -> str:
        times = f" x{self.count}" if self.count > 1 else ""
        return f"{self.type} {self.reason}{times}: {self.message}"


@dataclass(frozen=True)
class ContainerSummary:
    """One container's status: ready, restarts, its state and the one before."""

    name: str
    ready: bool
    restarts: int
    state: str  # "waiting" | "running" | "terminated" | "unknown"
    reason: str  # the state's reason: CrashLoopBackOff, ImagePullBackOff, Error, OOMKilled...
    message: str
    exit_code: int | None
    last_reason: str  # lastState.terminated.reason
    last_exit_code: int | None

    def describe(self) -> str:
        """``waiting CrashLoopBackOff (3 restarts, last exit 1 Error)``, ``running``."""
        head = f"{self.state} {self.reason}".strip()
        extra = []
        if self.exit_code is not None:
            extra.append(f"exit {self.exit_code}")
        if self.restarts:
            extra.append(f"{self.restarts} restart{'s' if self.restarts != 1 else ''}")
        if self.last_exit_code is not None:
            extra.append(f"last exit {self.last_exit_code} {self.last_reason}".strip())
        return head + (f" ({', '.join(extra)})" if extra else "")


@dataclass(frozen=True)
class PodDiagnosis:
    """One pod, as a person debugging it would see it."""

    name: str
    colour: str
    phase: str
    ready: bool
    restarts: int
    containers: tuple[ContainerSummary, ...]
    events: tuple[EventSummary, ...]
    logs: tuple[str, ...]  # the current (or last exited) run, redacted
    previous_logs: tuple[str, ...]  # the run before it, redacted
    why: str  # what is wrong, "" when healthy
    notes: tuple[str, ...] = ()  # what could not be read about it
    terminating: bool = False  # being deleted (an old ReplicaSet's pod, a scale-down): not news

    @property
    def healthy(self) -> bool:
        return not self.why

    def state(self) -> str:
        """The first unhealthy container's state, else the first container's, else the phase."""
        chosen = next((c for c in self.containers if not c.ready), None) or next(iter(self.containers), None)
        return chosen.describe() if chosen is not None else self.phase


@dataclass(frozen=True)
class ProbeAnswer:
    """What one smoke probe got."""

    name: str  # "GET /healthz"
    expected: int
    status: int | None
    ok: bool
    detail: str


@dataclass(frozen=True)
class Diagnosis:
    """An app's (or one colour's) pods, the probes' answers, and what could not be collected."""

    environment: str
    namespace: str
    app: str
    colour: str | None  # None: every colour
    pods: tuple[PodDiagnosis, ...]
    probes: tuple[ProbeAnswer, ...] = ()
    notes: tuple[str, ...] = ()
    context: str = ""  # why it was collected: "rollout failed", "gate failed", ...

    @property
    def unhealthy(self) -> tuple[PodDiagnosis, ...]:
        """Pods with something wrong, except those being deleted."""
        return tuple(p for p in self.pods if not p.healthy and not p.terminating)

    @property
    def terminating(self) -> tuple[PodDiagnosis, ...]:
        return tuple(p for p in self.pods if p.terminating)

    @property
    def target(self) -> str:
        return f"{self.app} {self.colour}" if self.colour else self.app

    def summary(self) -> str:
        """``backend green: 2 of 2 pods unhealthy; smoke 1 of 1 failed``."""
        if not self.pods:
            parts = ["no pods"]
        elif self.unhealthy:
            parts = [f"{len(self.unhealthy)} of {len(self.pods)} pods unhealthy"]
        else:
            healthy = len(self.pods) - len(self.terminating)
            parts = [f"{healthy} pod{'s' if healthy != 1 else ''} healthy"]
        if self.terminating:
            parts.append(f"{len(self.terminating)} terminating")
        bad_probes = [p for p in self.probes if not p.ok]
        if bad_probes:
            parts.append(f"smoke {len(bad_probes)} of {len(self.probes)} failed")
        if self.notes:
            parts.append(f"{len(self.notes)} not collected")
        return f"{self.target}: " + "; ".join(parts)


# --- assembly ----------------------------------------------------------------------------------


def _clip(text: str, limit: int = MAX_LINE) -> str:
    text = text.rstrip("\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def container_summaries(pod: Obj) -> tuple[ContainerSummary, ...]:
    """Each container's status (``status.containerStatuses``), in the pod spec's order; a
    container with no status yet is ``waiting ContainerCreating``."""
    statuses = {c.get("name"): c for c in (pod.get("status") or {}).get("containerStatuses") or []}
    names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []] or list(statuses)
    out = []
    for name in names:
        cs = statuses.get(name) or {}
        states = cs.get("state") or {}
        kind = next((k for k in ("waiting", "terminated", "running") if states.get(k) is not None), None)
        detail = (states.get(kind) or {}) if kind else {}
        if not cs:
            kind, detail = "waiting", {"reason": "ContainerCreating"}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        out.append(
            ContainerSummary(
                name=str(name),
                ready=bool(cs.get("ready")),
                restarts=int(cs.get("restartCount") or 0),
                state=kind or "unknown",
                reason=str(detail.get("reason") or ""),
                message=_clip(str(detail.get("message") or "")),
                exit_code=_int(detail.get("exitCode")) if kind == "terminated" else None,
                last_reason=str(last.get("reason") or ""),
                last_exit_code=_int(last.get("exitCode")),
            )
        )
    return tuple(out)


def _event_time(e: Obj) -> str:
    series = e.get("series") or {}
    return str(e.get("lastTimestamp") or series.get("lastObservedTime") or e.get("eventTime") or "")


def select_events(events: Iterable[Obj], limit: int = DEFAULT_EVENTS) -> tuple[EventSummary, ...]:
    """The ``limit`` Events worth reading: Warning before Normal, newest first; Events alike (type,
    reason, message) are one line with their counts summed (``count``, or ``series.count``)."""
    merged: dict[tuple[str, str, str], EventSummary] = {}
    for e in events:
        type_ = str(e.get("type") or "Normal")
        reason = str(e.get("reason") or "")
        message = _clip(str(e.get("message") or ""))
        count = _int(e.get("count")) or _int((e.get("series") or {}).get("count")) or 1
        when = _event_time(e)
        source = str((e.get("source") or {}).get("component") or e.get("reportingComponent") or "")
        key = (type_, reason, message)
        seen = merged.get(key)
        if seen is not None:
            count += seen.count
            when = max(when, seen.last_seen)
        merged[key] = EventSummary(type_, reason, message, count, when, source)
    ordered = sorted(merged.values(), key=lambda s: s.last_seen, reverse=True)
    ordered.sort(key=lambda s: s.type != "Warning")  # stable: Warning first, each newest first
    return tuple(ordered[: max(0, limit)])


def log_tail(
    text: str | None, lines: int = DEFAULT_LINES, secrets: Iterable[str | None] = ()
) -> tuple[str, ...]:
    """The last ``lines`` lines of ``text``, redacted (the whole text first: a key block spans
    lines), each cut to ``MAX_LINE`` characters."""
    if not text or lines <= 0:
        return ()
    masked = redact(text, secrets).splitlines()
    return tuple(_clip(line) for line in masked[-lines:])


def pod_why(
    phase: str, containers: Sequence[ContainerSummary], events: Sequence[EventSummary], deleting: bool
) -> str:
    """What is wrong with the pod in one line; "" when it is running and ready."""
    if deleting:
        return "terminating"
    for c in containers:
        if c.state == "waiting" and c.reason not in ("", "ContainerCreating", "PodInitializing"):
            return f"{c.reason}: {c.message or c.name}" + _restarts(c)
        if c.state == "terminated" and phase not in ("Succeeded",):
            return f"container {c.name} terminated: {c.reason or 'exit'} {c.exit_code}".strip() + _restarts(c)
    if phase == "Succeeded":
        return ""
    if phase != "Running":
        warning = next((e for e in events if e.type == "Warning"), None)
        return f"{phase}" + (f": {warning.reason}: {warning.message}" if warning else "")
    unready = [c for c in containers if not c.ready]
    if unready:
        probe = next((e for e in events if e.reason == "Unhealthy"), None)
        warning = probe or next((e for e in events if e.type == "Warning"), None)
        why = f"not ready: {warning.message}" if warning else "not ready"
        return why + _restarts(unready[0])
    return ""


def _restarts(c: ContainerSummary) -> str:
    if not c.restarts:
        return ""
    last = f", last exit {c.last_exit_code} {c.last_reason}".rstrip() if c.last_exit_code is not None else ""
    return f" ({c.restarts} restart{'s' if c.restarts != 1 else ''}{last})"


def needs_logs(pod: Obj) -> bool:
    """Whether the pod's logs are worth reading: it is not running and ready, or it restarted."""
    containers = container_summaries(pod)
    phase = str((pod.get("status") or {}).get("phase") or "Pending")
    return phase != "Running" or any(not c.ready or c.restarts for c in containers)


def wants_previous(pod: Obj) -> bool:
    """Whether a previous container run exists to read (the container restarted)."""
    return any(c.restarts for c in container_summaries(pod))


def diagnose_pod(
    pod: Obj,
    colour: str,
    events: Iterable[Obj] = (),
    log: str | None = None,
    previous_log: str | None = None,
    *,
    lines: int = DEFAULT_LINES,
    events_limit: int = DEFAULT_EVENTS,
    secrets: Iterable[str | None] = (),
    notes: Iterable[str] = (),
) -> PodDiagnosis:
    """One pod's diagnosis from its object, its Events and its log text (None: not read)."""
    secrets = list(secrets)
    meta = pod.get("metadata") or {}
    phase = str((pod.get("status") or {}).get("phase") or "Pending")
    containers = container_summaries(pod)
    picked = select_events(events, events_limit)
    why = pod_why(phase, containers, picked, bool(meta.get("deletionTimestamp")))
    return PodDiagnosis(
        name=str(meta.get("name") or "?"),
        colour=colour,
        phase=phase,
        ready=bool(containers) and all(c.ready for c in containers),
        restarts=sum(c.restarts for c in containers),
        containers=containers,
        events=tuple(
            EventSummary(e.type, e.reason, redact(e.message, secrets), e.count, e.last_seen, e.source)
            for e in picked
        ),
        logs=log_tail(log, lines, secrets),
        previous_logs=log_tail(previous_log, lines, secrets),
        why=redact(why, secrets),
        notes=tuple(redact(n, secrets) for n in notes),
        terminating=bool(meta.get("deletionTimestamp")),
    )


def probe_answers(
    results: Iterable[SmokeResult], secrets: Iterable[str | None] = ()
) -> tuple[ProbeAnswer, ...]:
    """The smoke probes' answers, as they go into a diagnosis."""
    secrets = list(secrets)
    return tuple(
        ProbeAnswer(r.name, r.expect_status, r.status, r.ok, redact(_clip(r.reason), secrets))
        for r in results
    )


def assemble(
    environment: str,
    namespace: str,
    app: str,
    colour: str | None,
    pods: Iterable[PodDiagnosis],
    probes: Iterable[ProbeAnswer] = (),
    notes: Iterable[str] = (),
    context: str = "",
) -> Diagnosis:
    """The diagnosis: unhealthy pods first, then terminating ones, then healthy ones (each by colour
    and name)."""
    ordered = sorted(pods, key=lambda p: (p.healthy, p.terminating, p.colour, p.name))
    return Diagnosis(
        environment, namespace, app, colour, tuple(ordered), tuple(probes), tuple(notes), context
    )


# --- renderings ----------------------------------------------------------------------------------


def render_text(d: Diagnosis) -> str:
    """The CLI's rendering: a summary line, then per pod its state, Events and log lines."""
    head = f"{d.environment} ({d.namespace}) {d.summary()}"
    out = [head + (f" [{d.context}]" if d.context else "")]
    for p in d.pods:
        status = "ok  " if p.healthy else "FAIL"
        out.append(
            f"{status} pod {p.name} ({p.colour}): {p.phase}, ready {'yes' if p.ready else 'no'}, "
            f"restarts {p.restarts}" + (f": {p.why}" if p.why else "")
        )
        for c in p.containers:
            out.append(f"       container {c.name}: {c.describe()}" + (f": {c.message}" if c.message else ""))
        for e in p.events:
            out.append(f"       event {e.line()}" + (f" (last {e.last_seen})" if e.last_seen else ""))
        if p.previous_logs:
            out.append(f"       log of the previous run (last {len(p.previous_logs)} lines):")
            out += [f"         | {line}" for line in p.previous_logs]
        if p.logs:
            out.append(f"       log (last {len(p.logs)} lines):")
            out += [f"         | {line}" for line in p.logs]
        out += [f"       not collected: {n}" for n in p.notes]
    for probe in d.probes:
        out.append(f"{'ok  ' if probe.ok else 'FAIL'} smoke {probe.detail}")
    out += [f"note: {n}" for n in d.notes]
    return "\n".join(out)


def report_tables(d: Diagnosis) -> list[tuple[str, list[str], list[list[str]]]]:
    """Two tables for a run report (greenlight.core.report.RunReport.table): the pods, and what
    was seen about them (Events, log lines, probe answers, what could not be read)."""
    title = f"Diagnostics: {d.target}" + (f" ({d.context})" if d.context else "")
    pods = [
        [
            p.name,
            p.colour,
            p.phase,
            "yes" if p.ready else "no",
            str(p.restarts),
            p.state(),
            p.why or "healthy",
        ]
        for p in d.pods
    ]
    seen: list[list[str]] = []
    for p in d.pods:
        seen += [[p.name, "event", e.line()] for e in p.events]
        seen += [[p.name, "log (previous run)", line] for line in p.previous_logs]
        seen += [[p.name, "log", line] for line in p.logs]
        seen += [[p.name, "not collected", n] for n in p.notes]
    seen += [["-", "smoke", probe.detail] for probe in d.probes]
    seen += [["-", "not collected", n] for n in d.notes]
    tables = [(title, ["pod", "colour", "phase", "ready", "restarts", "state", "why"], pods)]
    if seen:
        tables.append((f"{title}: events, logs, probes", ["pod", "kind", "text"], seen))
    return tables


def render_markdown(d: Diagnosis) -> str:
    """A standalone markdown document of :func:`report_tables`."""
    lines = [f"# {d.environment}: {d.summary()}", ""]
    for caption, header, rows in report_tables(d):
        lines += [f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(table_cell(c) for c in r) + " |" for r in rows] + [""]
    return "\n".join(lines)


def render_slack(d: Diagnosis, limit: int = SLACK_LIMIT) -> str:
    """A few lines for a Slack thread: the summary, and per unhealthy pod (at most ``SLACK_PODS``)
    why, its Warning Events and last log lines (with no unhealthy pod, the last log lines of the
    first pod that has some: an app failing its probes while its pods look healthy); never longer
    than ``limit`` characters."""
    out = [f":mag: {d.summary()}" + (f" ({d.context})" if d.context else "")]

    def tail(p: PodDiagnosis) -> None:
        # the current run's tail, unless only the previous run's says what went wrong (a crash
        # loop read just after the restart: the new run has logged its start only)
        alarming = [any(_ALARMING.search(line) for line in run) for run in (p.previous_logs, p.logs)]
        run = p.previous_logs if (alarming == [True, False] or not p.logs) else p.logs
        lines = list(run[-SLACK_LOG_LINES:])
        if lines:
            out.append("   ```" + "\n".join(line.replace("```", "'''") for line in lines) + "```")

    for p in d.unhealthy[:SLACK_PODS]:
        out.append(f"• `{p.name}` restarts {p.restarts}: {p.why}")
        warnings = [e for e in p.events if e.type == "Warning"][:SLACK_EVENTS]
        out += [f"   {e.line()}" for e in warnings]
        tail(p)
    logged = max(
        (p for p in d.pods if (p.logs or p.previous_logs) and not p.terminating),
        key=lambda p: sum(1 for line in (*p.previous_logs, *p.logs) if _ALARMING.search(line)),
        default=None,
    )  # the first pod whose log says the most about errors
    if not d.unhealthy and logged is not None:
        out.append(f"• `{logged.name}` ({'ready' if logged.ready else 'not ready'}), its last log lines:")
        tail(logged)
    if len(d.unhealthy) > SLACK_PODS:
        out.append(f"… and {len(d.unhealthy) - SLACK_PODS} more unhealthy pods (see the report)")
    out += [f"• smoke {p.detail}" for p in d.probes if not p.ok]
    out += [f"• not collected: {n}" for n in d.notes]
    text = "\n".join(out)
    if len(text) <= limit:
        return text
    cut = "\n… (cut; the whole diagnosis is in the report)"
    text = text[: max(0, limit - len(cut))]
    if text.count("```") % 2:  # do not leave a code block open
        text = text[: text.rfind("```")]
    return text.rstrip() + cut


def to_dict(d: Diagnosis) -> dict[str, Any]:
    """A JSON-friendly form (``greenlight diagnose --json``)."""

    def pod(p: PodDiagnosis) -> dict[str, Any]:
        return {
            "name": p.name,
            "colour": p.colour,
            "phase": p.phase,
            "ready": p.ready,
            "restarts": p.restarts,
            "healthy": p.healthy,
            "why": p.why,
            "containers": [asdict(c) for c in p.containers],
            "events": [asdict(e) for e in p.events],
            "logs": list(p.logs),
            "previous_logs": list(p.previous_logs),
            "notes": list(p.notes),
        }

    return {
        "environment": d.environment,
        "namespace": d.namespace,
        "app": d.app,
        "colour": d.colour,
        "context": d.context,
        "summary": d.summary(),
        "healthy": not d.unhealthy and all(p.ok for p in d.probes),
        "pods": [pod(p) for p in d.pods],
        "probes": [asdict(p) for p in d.probes],
        "notes": list(d.notes),
    }
