"""The release as a person sees it in the lab's Prefect UI, in headless Chromium: prefect.yaml
deployed, a worker on the local pool, the release profiles (rel-staging / rel-production).

1. the Deployments page lists every deployment of prefect.yaml, the scheduled ones with their schedule;
2. a production promotion started from the promote deployment's Run form (environment chosen,
   commit typed) pauses for approval, and its run page shows it Paused with the approval's description;
3. approved in the lab's Slack (the verified path production requires), the run completes and its
   release report renders the gate tables and the approver.

The tests run in this order (pytest keeps a module's order): the third answers the run the second started."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml
from playwright.sync_api import Locator, Page

from greenlight.settings import REPO_ROOT, load_profile
from greenlight_lab import supervisor
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState, stop_pid
from tests.flows_release.support import SLACK_IDS, click, push_commit, release_environments

from .support import (
    click_until,
    expect_visible,
    flow_run_ids_of,
    off_loop,
    off_loop_context,
    read_artifacts,
    read_flow_run,
    screenshot_path,
    server_errors,
    wait_final,
)

pytestmark = pytest.mark.lab
#: the deployment whose Run form starts a promotion (flow, deployment)
PROMOTE = ("build-promote", "promote")
APPROVER = "alice"
#: how long a run may take to reach a state the test waits for on its page
RUN_TIMEOUT_MS = 150_000
#: how long the production release may take after its approval (a few minutes under CI's load)
RELEASE_TIMEOUT_S = 300


@dataclass(frozen=True)
class Deployed:
    """A deployment of prefect.yaml (name, entrypoint, cron schedules) and how the server holds it."""

    name: str
    entrypoint: str
    crons: tuple[str, ...]
    flow: str
    id: UUID


@dataclass(frozen=True)
class Stack:
    deployments: list[Deployed]
    worker_log: Path

    def deployment(self, flow: str, name: str) -> Deployed:
        found = [d for d in self.deployments if (d.flow, d.name) == (flow, name)]
        assert found, f"no deployment {flow}/{name} in prefect.yaml"
        return found[0]

    def worker_tail(self) -> str:
        return self.worker_log.read_text(errors="replace")[-3000:]


@dataclass
class Promotion:
    """A commit released to staging; the Run-form test adds the production run and its release id."""

    commit: str
    run: UUID | None = None
    release_id: str = ""


def prefect_yaml_deployments() -> list[dict[str, Any]]:
    return list(yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"])


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The release profiles (rel-staging / rel-production), selected for the module."""
    with off_loop_context(release_environments(lab, tmp_path_factory.mktemp("ui-envs"))) as directory:
        yield directory


@pytest.fixture(scope="module")
def stack(lab: LabState, envdir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Every deployment of prefect.yaml (``prefect deploy --all``) and a worker on the local pool
    running on the release profiles. The deployments are deleted afterwards: their schedules and
    triggers would otherwise start runs under later modules' workers."""
    from prefect.client.orchestration import get_client

    logs = tmp_path_factory.mktemp("ui-stack")
    # prefect.yaml names dr too (the quarterly drill): the forms offer only the environments whose
    # profiles are there when the flows are deployed, and the server refuses a default outside them
    shutil.copyfile(LAB_ENVIRONMENTS / "dr.yaml", envdir / "dr.yaml")
    env = {
        **os.environ, "GREENLIGHT_HOME": str(REPO_ROOT), "GREENLIGHT_ENVIRONMENTS": str(envdir),
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }  # fmt: skip
    out = supervisor.deploy_prefect_yaml(env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with open(logs / "worker.log", "wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "greenlight-local"],
            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    found: list[Deployed] = []

    def read() -> tuple[dict[UUID, str], dict[tuple[str, str | None], Any]]:
        with get_client(sync_client=True) as client:
            flows = {f.id: f.name for f in client.read_flows()}
            return flows, {(d.name, d.entrypoint): d for d in client.read_deployments()}

    def delete() -> None:
        with get_client(sync_client=True) as client:
            for dep in found:
                client.delete_deployment(dep.id)

    try:
        flows, held = off_loop(read)
        for spec in prefect_yaml_deployments():
            d = held.get((spec["name"], spec["entrypoint"]))
            assert d is not None, f"deployment {spec['name']} ({spec['entrypoint']}) was not deployed"
            crons = tuple(str(s["cron"]) for s in spec.get("schedules") or [] if "cron" in s)
            found.append(Deployed(spec["name"], spec["entrypoint"], crons, flows[d.flow_id], d.id))
        yield Stack(found, logs / "worker.log")
    finally:
        stop_pid(worker.pid)
        off_loop(delete)


@pytest.fixture(scope="module")
def promotion(lab: LabState, envdir: Path) -> Iterator[Promotion]:
    """A commit that carol released to staging (in-process): production accepts its digests, and
    alice, not its author, may approve it. A production run left unfinished by a failed test is
    cancelled afterwards: it would hold production's release lock until its approval times out."""
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest

    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha)
    # off the test's thread, as all Prefect work here (tests/ui/support.py off_loop)
    result = off_loop(lambda: build_promote(PromoteRequest(environment="staging", commit=sha, actor="carol")))
    assert result["outcome"] == "released", result
    promotion = Promotion(sha)
    yield promotion
    if promotion.run is not None:
        off_loop(lambda: cancel_unless_final(promotion.run))


def cancel_unless_final(run: UUID | None, timeout_s: float = 30) -> None:
    """Cancel ``run`` unless it finished, and wait for the worker to stop it."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelling

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run).state if run else None
        if run is None or state is None or state.is_final():
            return
        client.set_flow_run_state(run, Cancelling(message="left unfinished by a browser test"), force=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = client.read_flow_run(run).state
            if state is not None and state.is_final():
                print(f"cancelled the unfinished run {run}: {state.name}")
                return
            time.sleep(0.5)
        print(
            f"the unfinished run {run} is still {state.name if state else '?'} {timeout_s:g} s after cancelling"
        )


# --- the Deployments page ------------------------------------------------------------------------


def schedule_words(cron: str) -> str:
    """What the UI's words for ``cron`` start with ("At 03:00 AM every day"); "" when this helper
    does not know them (then any schedule tag counts)."""
    minute, hour, *_ = cron.split()
    if minute.isdigit() and hour.isdigit():
        h = int(hour)
        return f"At {h % 12 or 12:02d}:{int(minute):02d} {'AM' if h < 12 else 'PM'}"
    if minute.isdigit() and hour == "*":
        return f"At {int(minute)} minutes past the hour" if int(minute) else "Every hour"
    return ""


def show_all_rows(page: Page) -> None:
    """Set the table's "Items per page" to its largest choice (the default 10 hides the rest)."""
    pager = expect_visible(page, page.locator(".p-pager__limit-select button"), 'the "Items per page" choice')
    pager.focus()
    page.keyboard.press("Space")  # the menu opens from the keyboard (a click does not reliably)
    expect_visible(page, page.get_by_role("option"), 'the "Items per page" options')
    choices = [t.strip() for t in page.get_by_role("option").all_inner_texts() if t.strip().isdigit()]
    page.get_by_role("option", name=max(choices, key=int), exact=True).click()


def expect_schedule(page: Page, row: Locator, cron: str, what: str) -> None:
    """The row's Schedules cell shows ``cron`` in words: as a tag, or, when the cell folded it into
    "+N", in the tooltip of "+N" (what a person hovers)."""
    words = schedule_words(cron)
    tag = row.locator(".deployment-schedule-tags__tag", has_text=words)
    tag.first.wait_for(state="attached")
    if tag.first.is_visible():
        return
    more = expect_visible(
        page, row.locator(".p-tag-wrapper__tag-overflow:not(.p-tag-wrapper__tag--hidden) .p-tag"),
        f'the schedule "{words or cron}" of {what}, or the "+N" tag it is folded into',
    )  # fmt: skip
    more.hover()
    expect_visible(
        page,
        page.get_by_role("tooltip").filter(has_text=words),
        f'the schedule "{words or cron}" of {what} on hovering "+N"',
    )


def test_deployments_page_lists_every_deployment_with_its_schedule(page: Page, stack: Stack) -> None:
    """Every deployment of prefect.yaml has its row (name, flow) on the Deployments page, and the
    scheduled ones show their schedule; the unscheduled ones show none."""
    page.goto("/deployments")
    # the lab's server may hold deployments of other tests too: the count is not checked
    expect_visible(page, page.get_by_text(re.compile(r"^\d+ Deployments?$")), 'the count "N Deployments"')
    show_all_rows(page)
    for d in stack.deployments:
        what = f"deployment {d.flow}/{d.name}"
        row = page.locator("tr", has=page.locator(f'a[href$="/deployments/deployment/{d.id}"]'))
        expect_visible(page, row.get_by_role("link", name=d.name, exact=True), f"the row of {what}")
        expect_visible(page, row.get_by_text(d.flow, exact=True), f"the flow name in the row of {what}")
        cell = row.locator(".deployment-list__schedules-column")
        for cron in d.crons:
            expect_schedule(page, cell, cron, what)
        if not d.crons:
            assert cell.inner_text().strip() == "", (
                f"{what} has no schedule; its row shows {cell.inner_text()!r}"
            )


# --- a promotion from the Run form, paused, approved, reported ----------------------------------


def form_field(page: Page, label: str) -> Locator:
    """The Run form's field labelled ``label`` (the innermost: ``request`` holds the others)."""
    return page.locator(".schema-form-property__label", has_text=re.compile(f"^{re.escape(label)}$")).locator(
        "xpath=ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' p-label ')][1]"
    )


def type_into(page: Page, field: Locator, label: str, value: str) -> None:
    """Type ``value`` into the text field ``field``."""
    expect_visible(page, field, f'the "{label}" field of the Run form')
    expect_visible(page, field.locator("textarea, input[type=text]"), f'the text box of "{label}"').fill(
        value
    )


def pick(page: Page, field: Locator, label: str, value: str) -> None:
    """Pick ``value`` among the options of the choice ``field`` (a text box there fails the test:
    the environment is a choice among the profiles, not free text)."""
    expect_visible(page, field, f'the "{label}" field of the Run form')
    control = expect_visible(
        page,
        field.locator("[role=combobox], .p-select-button__control"),
        f'the "{label}" choice (not free text)',
    )
    control.focus()
    page.keyboard.press("Space")
    expect_visible(
        page, page.get_by_role("option", name=value, exact=True), f'the option "{value}" of "{label}"'
    ).click()


def run_state(page: Page, state: str) -> Locator:
    """The run page's state badge (in its heading) when it reads ``state``."""
    return page.locator(".page-heading-flow-run__meta .state-badge", has_text=re.compile(rf"^\s*{state}\s*$"))


TEST_FORM = "test_promotion_from_the_run_form_pauses_for_approval"


def test_promotion_from_the_run_form_pauses_for_approval(
    page: Page, stack: Stack, promotion: Promotion
) -> None:
    """The promote deployment's page -> Run -> Custom run; environment production, the commit typed,
    Submit; the "scheduled" toast; the run it made opens, and the worker runs it until it pauses: the page says Paused,
    and its Resume dialog shows the approval's description (which release, where to answer)."""
    promote = stack.deployment(*PROMOTE)
    page.goto(f"/deployments/deployment/{promote.id}")
    run_button = expect_visible(page, page.get_by_role("button", name="Run", exact=True), 'the "Run" button')
    click_until(
        page, run_button, page.get_by_text("Custom run", exact=True), 'the "Custom run" item of the Run menu'
    ).click()
    pick(page, form_field(page, "Environment"), "Environment", "production")
    type_into(page, form_field(page, "Commit"), "Commit", promotion.commit)
    errors = server_errors(page)
    before = off_loop(lambda: flow_run_ids_of(promote.id))
    submit = expect_visible(
        page, page.get_by_role("button", name="Submit", exact=True), 'the "Submit" button'
    )
    submit.click()
    try:
        expect_visible(page, page.get_by_text("scheduled to start"), 'the toast "... scheduled to start now"')
    except AssertionError as e:
        # Prefect's embedded server has answered the run's creation with a 5xx under CI's load (the
        # UI then shows "Oops. Something went wrong."): submit once more, only when no run was made
        created = [x for x in errors if "create_flow_run" in x]
        if not created or off_loop(lambda: flow_run_ids_of(promote.id)) != before:
            raise AssertionError(f"{e}\nthe API's 5xx answers: {errors or 'none'}") from None
        print(f"the run's creation failed ({created[-1]}); submitting once more")
        submit.click()
        expect_visible(page, page.get_by_text("scheduled to start"), 'the toast "... scheduled to start now"')
    # the run the form made, from the API: the UI moves to the deployment's Runs tab after the
    # toast, and under load that navigation can land after a click on the toast's "View run"
    made = off_loop(lambda: flow_run_ids_of(promote.id)) - before
    assert len(made) == 1, made
    (run,) = made
    page.goto(f"/runs/flow-run/{run}")
    parameters = off_loop(lambda: read_flow_run(run).parameters)
    assert parameters["request"]["environment"] == "production", parameters
    assert parameters["request"]["commit"] == promotion.commit, parameters
    promotion.run = run
    try:
        expect_visible(
            page, run_state(page, "Paused"),
            "the run's state badge Paused", timeout_ms=RUN_TIMEOUT_MS,
        )  # fmt: skip
    except AssertionError as e:
        raise AssertionError(f"{e}\nworker log:\n{stack.worker_tail()}") from None
    expect_visible(page, page.get_by_role("button", name="Resume", exact=True), 'the "Resume" button').click()
    dialog = expect_visible(page, page.get_by_role("dialog"), 'the "Resume Flow Run" dialog')
    prefix = f"production-{promotion.commit[:12]}-"
    asks = expect_visible(
        page, dialog.get_by_text(re.compile(rf"Approve release {prefix}[0-9a-f]+ to production")),
        f"the approval description naming release {prefix}... and production",
    )  # fmt: skip
    expect_visible(
        page, dialog.get_by_text("press Approve or Reject in the release's Slack thread"),
        "where to answer (the release's Slack thread) in the approval description",
    )  # fmt: skip
    found = re.search(rf"{prefix}[0-9a-f]+", asks.inner_text())
    assert found, asks.inner_text()
    promotion.release_id = found.group(0)
    page.screenshot(path=str(screenshot_path(f"{TEST_FORM}-dialog")))
    # the form's answers are refused in production (require_verified): leave it unanswered
    dialog.get_by_role("button", name="Close", exact=True).click()
    expect_visible(page, run_state(page, "Paused"), "the state badge Paused after closing")


TEST_REPORT = "test_approved_promotion_completes_and_its_report_renders"


def test_approved_promotion_completes_and_its_report_renders(
    page: Page, lab: LabState, stack: Stack, promotion: Promotion
) -> None:
    """alice approves in the lab's Slack; the run page turns Completed; the run's release-production
    artifact renders its facts (the approver, verified), a gate table per app, the outcome."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    assert promotion.run is not None and promotion.release_id, "the Run-form test left no paused run"
    sent = click(lab, APPROVER, "approve", "staging is green (browser test)", run=promotion.run)
    assert sent["status"] == 200 and sent["answer"]["as"] == APPROVER, sent
    page.goto(f"/runs/flow-run/{promotion.run}")
    # first from the API, so that a run that failed or is still running says so (with the worker's
    # log), apart from a page that does not show the state the run has
    run = promotion.run
    final = off_loop(lambda: wait_final(run, RELEASE_TIMEOUT_S), timeout_s=RELEASE_TIMEOUT_S + 60)
    state = final.state
    assert state is not None and state.is_completed(), (
        f"run {run} is {state.name if state else 'without a state'} "
        f"({state.message if state else ''}) {RELEASE_TIMEOUT_S} s after the approval\n"
        f"worker log:\n{stack.worker_tail()}"
    )
    expect_visible(page, run_state(page, "Completed"), "the run's state badge Completed", timeout_ms=60_000)
    only = ArtifactFilter(
        key=ArtifactFilterKey(any_=["release-production"]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[promotion.run]),
    )
    artifacts = off_loop(lambda: read_artifacts(only))
    assert artifacts, f"run {promotion.run} has no release-production artifact"
    newest = artifacts[0]
    page.goto(f"/artifacts/artifact/{newest.id}")
    rid = promotion.release_id
    expect_visible(
        page,
        page.get_by_role("heading", name=f"Release {rid} to production"),
        f'the heading "Release {rid} to production"',
    )
    expect_visible(page, page.get_by_text("Outcome: released", exact=True), 'the outcome "Outcome: released"')
    verified = f"approved by {APPROVER} (Slack {SLACK_IDS[APPROVER]}), verified"
    approval = page.get_by_role("row").filter(has=page.get_by_role("cell", name="approval", exact=True))
    expect_visible(
        page,
        approval.get_by_role("cell", name=re.compile(rf"^{re.escape(verified)}")),
        f'the approval row "{verified}: ..."',
    )
    page.screenshot(path=str(screenshot_path(f"{TEST_REPORT}-facts")))
    apps = [a.name for a in load_profile("production").apps]
    for app in apps:
        expect_visible(
            page, page.get_by_role("heading", name=f"Gate: {app}", exact=True), f'the heading "Gate: {app}"'
        )
        table = page.locator(f"h2:text-is('Gate: {app}') + div table")
        for column in ("check", "value", "limit", "ok", "reason"):
            expect_visible(
                page,
                table.get_by_role("columnheader", name=column, exact=True),
                f'the column "{column}" of the gate table of {app}',
            )
        rollout = table.get_by_role("row").filter(has=page.get_by_role("cell", name="rollout", exact=True))
        expect_visible(
            page,
            rollout.get_by_role("cell", name="ok", exact=True),
            f"the gate table of {app}: its rollout row, ok",
        )
        interval = table.get_by_role("row").filter(
            has=page.get_by_role("cell", name=re.compile(r"^interval 1 "))
        )
        expect_visible(page, interval, f"the gate table of {app}: a judged interval")
    # the page scrolls inside the app's layout (a full-page screenshot shows the viewport): show a gate
    page.get_by_role("heading", name=f"Gate: {apps[0]}", exact=True).scroll_into_view_if_needed()
