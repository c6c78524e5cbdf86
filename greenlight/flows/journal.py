"""The journal of a run that moves traffic: report, Slack thread, events, diagnoses."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from greenlight.core.gate import SmokeResult
from greenlight.core.report import RunReport
from greenlight.flows.approval_wait import current_run_link
from greenlight.settings import Profile
from greenlight.tasks.diagnostics import report_failure
from greenlight.tasks.evidence import emit, publish_report
from greenlight.tasks.notify import notify
from greenlight.tasks.policy import logger


class Journal:
    """What a run says and keeps while it runs: its report (published as the artifact
    ``artifact``), its Slack thread (the first message starts it) and its log."""

    def __init__(self, profile: Profile, rid: str, report: RunReport, artifact: str, what: str) -> None:
        self.profile = profile
        self.id = rid
        self.report = report
        self.artifact, self.what = artifact, what
        self.thread: str | None = None
        self.log = logger()

    def say(self, text: str) -> None:
        """Log, record and post to the run's Slack thread (starting it)."""
        self.log.info(text)
        ts = notify(self.profile, text, thread_ts=self.thread)
        if self.thread is None:
            self.thread = ts

    def step(self, name: str, outcome: str, detail: str) -> None:
        self.report.step(name, outcome, detail)
        self.log.info("%s: %s: %s", name, outcome, detail)

    def publish(self, outcome: str) -> None:
        self.report.outcome = outcome
        try:
            publish_report(self.artifact, self.report.render(), f"{self.what} {self.id}: {outcome}")
        except Exception as e:  # the record must not hide the outcome
            self.log.warning("%s report not published: %s", self.what.lower(), e)


class RunJournal(Journal):
    """What one run that moves traffic says and keeps while it runs: its report (published as an
    artifact), its Slack thread, its events, and the facts the release record needs. A release, a
    rollback, a switch by hand and the monitor each keep one."""

    # what the DORA figures need on the record (greenlight.core.dora): when the switch moved
    # traffic, when the commit was made and where that time came from
    switched_at: str | None = None
    #: a switch of this run has sent any traffic anywhere (a progressive step counts)
    moved_traffic: bool = False
    commit_at: str | None = None
    commit_at_from: str | None = None

    def __init__(
        self, profile: Profile, rid: str, digests: dict[str, str], commit: str | None, author: str | None
    ) -> None:
        super().__init__(
            profile, rid, RunReport(f"Release {rid} to {profile.name}"), f"release-{profile.name}", "Release"
        )
        self.digests = digests
        self.commit = commit
        self.author = author
        self.report.facts.update(
            {"environment": profile.name, "namespace": profile.namespace, "release id": rid,
             "commit": commit or "-", "author": author or "-", "run": current_run_link()}
        )  # fmt: skip
        for app, d in sorted(digests.items()):
            self.report.facts[f"digest {app}"] = d
        #: app -> the signature verdict ("signed by <key>") when the profile requires signatures
        self.signatures: dict[str, str] = {}

    def event(self, name: str, **payload: Any) -> None:
        emit(
            f"greenlight.release.{name}",
            f"greenlight.environment.{self.profile.name}",
            {
                "release_id": self.id,
                "environment": self.profile.name,
                "digests": self.digests,
                "commit": self.commit,
                **payload,
            },
            related=[
                {"prefect.resource.id": f"greenlight.release.{self.id}", "prefect.resource.role": "release"}
            ],
        )

    def diagnose(
        self, app: str, colour: str, context: str, probes: Iterable[SmokeResult] = (), every_log: bool = False
    ) -> None:
        """The failing colour's pods, Events, logs and probe answers into the report and the thread
        (best-effort: greenlight.tasks.diagnostics.report_failure never raises)."""
        report_failure(self.profile, self.report, self.say, app, colour, context, probes, every_log)
