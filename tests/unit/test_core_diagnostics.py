"""greenlight.core.diagnostics over pods, Events and logs as the Kubernetes API serves them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from greenlight.core import diagnostics as dg
from greenlight.core.gate import SmokeResult

SECRET = "s3cr3t-db-password"


def pod(
    name: str = "backend-green-abc",
    phase: str = "Running",
    ready: bool = True,
    restarts: int = 0,
    state: dict[str, Any] | None = None,
    last: dict[str, Any] | None = None,
    deleting: bool = False,
    statuses: bool = True,
) -> dict[str, Any]:
    cs: dict[str, Any] = {
        "name": "app",
        "ready": ready,
        "restartCount": restarts,
        "state": state or {"running": {"startedAt": "2026-12-01T10:00:00Z"}},
    }
    if last is not None:
        cs["lastState"] = {"terminated": last}
    meta: dict[str, Any] = {"name": name, "namespace": "ns"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-01T10:05:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "image": "img"}]},
        "status": {"phase": phase, "containerStatuses": [cs] if statuses else []},
    }


def event(
    reason: str, message: str, type_: str = "Warning", count: int = 1, last: str = "2026-12-01T10:00:00Z"
) -> dict[str, Any]:
    return {
        "type": type_,
        "reason": reason,
        "message": message,
        "count": count,
        "lastTimestamp": last,
        "source": {"component": "kubelet"},
    }


CRASH = {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container"}}
ERROR_EXIT = {"exitCode": 1, "reason": "Error"}
UNHEALTHY = event("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 500", count=7)


@pytest.mark.parametrize(
    ("obj", "events", "why"),
    [
        (pod(), [], ""),
        (
            pod(ready=False, restarts=3, state=CRASH, last=ERROR_EXIT),
            [],
            "CrashLoopBackOff: back-off 40s restarting failed container (3 restarts, last exit 1 Error)",
        ),
        (
            pod(
                phase="Pending",
                ready=False,
                state={"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "x"'}},
            ),
            [],
            'ImagePullBackOff: Back-off pulling image "x"',
        ),
        (
            pod(ready=False),
            [UNHEALTHY],
            "not ready: Readiness probe failed: HTTP probe failed with statuscode: 500",
        ),
        (pod(ready=False), [], "not ready"),
        (
            pod(ready=False, restarts=1, last={"exitCode": 137, "reason": "OOMKilled"}),
            [event("BackOff", "Back-off restarting failed container")],
            "not ready: Back-off restarting failed container (1 restart, last exit 137 OOMKilled)",
        ),
        (
            pod(phase="Pending", ready=False, statuses=False),
            [event("FailedScheduling", "0/3 nodes are available: 3 Insufficient cpu.")],
            "Pending: FailedScheduling: 0/3 nodes are available: 3 Insufficient cpu.",
        ),
        (pod(phase="Pending", ready=False, statuses=False), [], "Pending"),
        (pod(deleting=True), [], "terminating"),
        (
            pod(phase="Failed", ready=False, state={"terminated": {"exitCode": 2, "reason": "Error"}}),
            [],
            "container app terminated: Error 2",
        ),
        (
            pod(phase="Succeeded", ready=False, state={"terminated": {"exitCode": 0, "reason": "Completed"}}),
            [],
            "",
        ),
    ],
    ids=[
        "healthy",
        "crash-loop",
        "image-pull",
        "unready-probe",
        "unready-no-event",
        "oom-restarted",
        "unschedulable",
        "pending-nothing-known",
        "terminating",
        "terminated",
        "completed",
    ],
)
def test_why_a_pod_is_unhealthy(obj: dict[str, Any], events: list[dict[str, Any]], why: str) -> None:
    """One line says what is wrong with a pod, from its container states and Events."""
    d = dg.diagnose_pod(obj, "green", events)
    assert d.why == why
    assert d.healthy is (why == "")


@pytest.mark.parametrize(
    ("events", "limit", "lines"),
    [
        ([], 5, []),
        (
            [
                event("Pulled", "pulled", "Normal", last="2026-12-01T10:00:03Z"),
                event("BackOff", "Back-off restarting", count=4, last="2026-12-01T10:00:01Z"),
                event("Unhealthy", "probe 500", count=2, last="2026-12-01T10:00:02Z"),
                event("Started", "started", "Normal", last="2026-12-01T10:00:04Z"),
            ],
            5,
            ["Warning Unhealthy x2: probe 500", "Warning BackOff x4: Back-off restarting",
             "Normal Started: started", "Normal Pulled: pulled"],
        ),
        (
            [event("BackOff", "b", count=2), event("BackOff", "b", count=3, last="2026-12-01T10:09:00Z")],
            5,
            ["Warning BackOff x5: b"],
        ),
        ([event("A", "a"), event("B", "b", last="2026-12-01T11:00:00Z"), event("C", "c", "Normal")], 2,
         ["Warning B: b", "Warning A: a"]),
        (
            [{"type": "Warning", "reason": "Unhealthy", "message": "m", "count": None,
              "series": {"count": 9, "lastObservedTime": "2026-12-01T10:00:00Z"}, "eventTime": "2026-12-01T09:00:00Z"}],
            5,
            ["Warning Unhealthy x9: m"],
        ),
    ],
    ids=["none", "warning-first-newest-first", "alike-merged", "limit", "series-count"],
)  # fmt: skip
def test_events_are_warning_first_newest_first_and_counted(
    events: list[dict[str, Any]], limit: int, lines: list[str]
) -> None:
    """Warnings lead, newest first; Events alike are one line with counts summed; at most limit."""
    assert [e.line() for e in dg.select_events(events, limit)] == lines


@pytest.mark.parametrize(
    ("text", "n", "want"),
    [
        (None, 5, ()),
        ("", 5, ()),
        ("a\nb\nc\n", 2, ("b", "c")),
        ("a\nb\n", 0, ()),
        (f"connecting to postgresql://app:{SECRET}@db:5432/app\nFATAL", 5,
         ("connecting to postgresql://app:***@db:5432/app", "FATAL")),
        (f"using token {SECRET}", 5, ("using token ***",)),
        ("password=hunter2hunter2 ok", 5, ("password=*** ok",)),
        ("x" * 500, 1, ("x" * (dg.MAX_LINE - 1) + "…",)),
    ],
    ids=["none", "empty", "tail", "zero", "url-password", "known-value", "pair", "long-line"],
)  # fmt: skip
def test_log_tail_is_the_last_lines_redacted(text: str | None, n: int, want: tuple[str, ...]) -> None:
    """The last n lines, secrets masked (by shape and by the known values), long lines cut."""
    assert dg.log_tail(text, n, [SECRET]) == want


def crash_diagnosis() -> dg.Diagnosis:
    crashing = dg.diagnose_pod(
        pod("backend-green-1", ready=False, restarts=3, state=CRASH, last=ERROR_EXIT),
        "green",
        [event("BackOff", "Back-off restarting failed container app", count=4), UNHEALTHY,
         event("Started", "Started container app", "Normal")],
        log="starting v2\nexiting with code 1\n",
        previous_log=f"starting v2\nconnecting to postgresql://app:{SECRET}@db/app\nFATAL: password authentication failed\n",
        secrets=[SECRET],
    )  # fmt: skip
    healthy = dg.diagnose_pod(pod("backend-blue-1"), "blue", [], log="starting v1\n")
    probes = dg.probe_answers(
        [SmokeResult("GET /", 200, 500, 3.0), SmokeResult("GET /healthz", 200, 200, 1.0)]
    )
    return dg.assemble(
        "staging", "sma-staging", "backend", "green", [healthy, crashing], probes,
        ["events of backend-green-2: 403 forbidden"], context="rollout failed",
    )  # fmt: skip


def test_assembly_orders_unhealthy_first_and_summarises() -> None:
    """Unhealthy pods lead; the summary counts them, the failed probes and what was not collected."""
    d = crash_diagnosis()
    assert [p.name for p in d.pods] == ["backend-green-1", "backend-blue-1"]
    assert d.summary() == "backend green: 1 of 2 pods unhealthy; smoke 1 of 2 failed; 1 not collected"
    assert d.pods[0].restarts == 3 and d.pods[0].state().startswith("waiting CrashLoopBackOff (3 restarts")
    bare = dg.assemble("staging", "ns", "backend", None, [])
    assert bare.summary() == "backend: no pods"


def test_no_rendering_carries_the_secret_and_each_names_the_reason() -> None:
    """Text, markdown, Slack and JSON all name CrashLoopBackOff, the restarts, the probe's 500 and the
    FATAL line, and none holds the secret."""
    d = crash_diagnosis()
    text = dg.render_text(d)
    md = dg.render_markdown(d)
    slack = dg.render_slack(d)
    doc = json.dumps(dg.to_dict(d))
    for out in (text, md, slack, doc):
        assert SECRET not in out
        assert "CrashLoopBackOff" in out and "FATAL: password authentication failed" in out
        assert "statuscode: 500" in out
        assert "expected 200, got 500" in out
    assert "FAIL pod backend-green-1 (green): Running, ready no, restarts 3" in text
    assert "ok   pod backend-blue-1 (blue)" in text
    assert json.loads(doc)["pods"][0]["containers"][0]["restarts"] == 3
    assert json.loads(doc)["healthy"] is False
    assert "backend-blue-1" not in slack  # a healthy pod is not news in Slack


def test_report_tables_fit_a_run_report() -> None:
    """Two tables: one row per pod, then one per Event, log line, probe and note."""
    (cap1, head1, rows1), (cap2, head2, rows2) = dg.report_tables(crash_diagnosis())
    assert cap1 == "Diagnostics: backend green (rollout failed)"
    assert cap2 == cap1 + ": events, logs, probes"
    assert head1 == ["pod", "colour", "phase", "ready", "restarts", "state", "why"]
    assert [r[0] for r in rows1] == ["backend-green-1", "backend-blue-1"]
    kinds = [r[1] for r in rows2]
    assert kinds.count("event") == 3 and "log (previous run)" in kinds and "smoke" in kinds
    assert all(len(r) == len(head2) for r in rows2)


@pytest.mark.parametrize("limit", [200, 400, 1500])
def test_slack_rendering_is_bounded_and_closes_its_code_blocks(limit: int) -> None:
    """However many pods fail, the Slack text stays within the limit and leaves no code block open."""
    many = [
        dg.diagnose_pod(
            pod(f"backend-green-{i}", ready=False, restarts=i, state=CRASH, last=ERROR_EXIT),
            "green",
            [UNHEALTHY],
            log="line one\n" + "y" * 280 + "\n",
        )
        for i in range(8)
    ]
    text = dg.render_slack(dg.assemble("staging", "ns", "backend", "green", many), limit)
    assert len(text) <= limit
    assert text.count("```") % 2 == 0
    assert text.startswith(":mag: backend green: 8 of 8 pods unhealthy")


@pytest.mark.parametrize(
    ("obj", "logs", "previous"),
    [
        (pod(), False, False),
        (pod(ready=False), True, False),
        (pod(restarts=2), True, True),
        (pod(phase="Pending", ready=False, statuses=False), True, False),
    ],
    ids=["healthy", "unready", "restarted", "pending"],
)
def test_which_logs_are_worth_reading(obj: dict[str, Any], logs: bool, previous: bool) -> None:
    """Logs of pods that are not running and ready or restarted; the previous run only after a restart."""
    assert dg.needs_logs(obj) is logs
    assert dg.wants_previous(obj) is previous


def test_terminating_pods_are_counted_apart_and_left_out_of_slack() -> None:
    """A pod being deleted (an old ReplicaSet's crash pod) is not one of the unhealthy pods: the
    summary counts it apart, Slack names the failing ones only."""
    old = dg.diagnose_pod(
        pod("backend-green-old", ready=False, restarts=5, state=CRASH, deleting=True), "green"
    )
    new = dg.diagnose_pod(pod("backend-green-new", ready=False), "green", [UNHEALTHY])
    d = dg.assemble("staging", "ns", "backend", "green", [old, new])
    assert [p.name for p in d.pods] == ["backend-green-new", "backend-green-old"]
    assert d.summary() == "backend green: 1 of 2 pods unhealthy; 1 terminating"
    slack = dg.render_slack(d)
    assert "backend-green-new" in slack and "backend-green-old" not in slack


def test_slack_shows_a_healthy_pods_log_when_only_the_probes_failed() -> None:
    """An app answering 500 has ready pods: Slack shows the probe's answer and the last log lines of
    the pod whose log speaks of errors."""
    quiet = dg.diagnose_pod(pod("backend-green-0"), "green", [], log="starting\nlistening\n")
    ok = dg.diagnose_pod(
        pod("backend-green-1"), "green", [], log="starting\nERROR GET /: 500 internal error\n"
    )
    probes = dg.probe_answers([SmokeResult("GET /", 200, 500, 3.0)])
    slack = dg.render_slack(dg.assemble("staging", "ns", "backend", "green", [quiet, ok], probes))
    assert slack.startswith(":mag: backend green: 2 pods healthy; smoke 1 of 1 failed")
    assert "backend-green-0" not in slack  # the pod whose log says something went wrong is quoted
    assert "`backend-green-1` (ready), its last log lines:" in slack
    assert "ERROR GET /: 500 internal error" in slack and "expected 200, got 500" in slack


@pytest.mark.parametrize(
    ("previous", "current", "quoted"),
    [
        ("a\nFATAL: no db\nexiting\n", "starting\nlistening\n", ["a", "FATAL: no db", "exiting"]),
        ("starting\nexiting\n", "x\nERROR boom\n", ["x", "ERROR boom"]),
        ("", "starting\nlistening\n", ["starting", "listening"]),
        ("FATAL: no db\n", "", ["FATAL: no db"]),
    ],
    ids=["crash-just-restarted", "current-alarming", "no-previous", "no-current"],
)
def test_slack_quotes_the_run_that_says_what_went_wrong(
    previous: str, current: str, quoted: list[str]
) -> None:
    """A crash loop read just after a restart: Slack quotes the crashed run's last words, not the new start."""
    p = dg.diagnose_pod(
        pod("backend-green-1", ready=False, restarts=2, last=ERROR_EXIT),
        "green",
        log=current,
        previous_log=previous,
    )
    slack = dg.render_slack(dg.assemble("staging", "ns", "backend", "green", [p]))
    assert slack.split("```")[1].splitlines() == quoted
