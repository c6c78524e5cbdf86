"""Helpers of the browser tests: where screenshots go, and waiting for what a person would look for."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page

from greenlight.settings import REPO_ROOT
from greenlight_lab.state import LabState

if TYPE_CHECKING:
    from prefect.client.schemas.filters import ArtifactFilter
    from prefect.client.schemas.objects import Artifact, FlowRun

T = TypeVar("T")
#: how long an element may take to appear: the UI loads its data after the page (20 s)
TIMEOUT_MS = 20_000
#: screenshots of the browser tests, one per test: ``<test name>.png``
OUTPUT = REPO_ROOT / "test-output" / "ui"


def ui_address(lab: LabState) -> str:
    """The lab's Prefect UI (the address Greenlight's links use)."""
    return lab.env["PREFECT_UI_URL"]


def screenshot_path(test_name: str) -> Path:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    return OUTPUT / (re.sub(r"[^A-Za-z0-9_.-]+", "-", test_name).strip("-") + ".png")


def expect_visible(page: Page, locator: Locator, what: str, timeout_ms: float = TIMEOUT_MS) -> Locator:
    """Wait until ``locator`` (its first match) is visible; else save the page's screenshot and fail
    saying what was not found, on which page."""
    first = locator.first
    try:
        first.wait_for(state="visible", timeout=timeout_ms)
    except PlaywrightError as e:
        shot = screenshot_path(_current_test())
        try:
            page.screenshot(path=str(shot), full_page=True)
        except PlaywrightError:
            pass
        raise AssertionError(
            f"the UI page {page.url} did not show {what} within {timeout_ms / 1000:g} s "
            f"(screenshot: {shot}): {str(e).splitlines()[0]}"
        ) from None
    return first


def _current_test() -> str:
    # "tests/ui/test_x.py::test_y (call)"
    current = os.environ.get("PYTEST_CURRENT_TEST", "ui")
    return current.split("::")[-1].split(" ")[0]


def off_loop(fn: Callable[[], T], timeout_s: float = 300) -> T:
    """``fn()`` in a thread of its own, its result or its exception. Playwright's sync API keeps its
    event loop running in the test's thread, where Prefect's sync-or-async calls (``Block.load``,
    the flow engine, ``drain_all``) would return coroutines instead of running; Prefect work of a
    browser test goes through here."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as e:  # handed to the caller
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    if t.is_alive():
        raise AssertionError(f"{getattr(fn, '__name__', fn)} did not return within {timeout_s:g} s")
    if "error" in out:
        raise out["error"]
    return out["result"]  # type: ignore[no-any-return]


@contextlib.contextmanager
def off_loop_context(cm: AbstractContextManager[T]) -> Iterator[T]:
    """Enter and leave ``cm`` off the test's thread (see :func:`off_loop`)."""
    value = off_loop(cm.__enter__)
    try:
        yield value
    finally:
        off_loop(lambda: cm.__exit__(None, None, None))


def click_until(page: Page, trigger: Locator, shows: Locator, what: str, attempts: int = 3) -> Locator:
    """Click ``trigger`` until ``shows`` is visible: a menu of the Vue app may miss a click that
    comes before its handlers are attached (the page has rendered the button by then)."""
    for _ in range(attempts - 1):
        trigger.click()
        try:
            shows.first.wait_for(state="visible", timeout=TIMEOUT_MS / attempts)
            return shows.first
        except PlaywrightError:
            continue
    trigger.click()
    return expect_visible(page, shows, what)


def read_flow_run(run: UUID) -> FlowRun:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run)


def wait_final(run: UUID, timeout_s: float) -> FlowRun:
    """The flow run ``run`` once its state is final, or as it is after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        flow_run = read_flow_run(run)
        if (flow_run.state is not None and flow_run.state.is_final()) or time.monotonic() > deadline:
            return flow_run
        time.sleep(1)


def flow_run_ids_of(deployment: UUID) -> set[UUID]:
    """The ids of every flow run of ``deployment``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment]))
        )
    return {r.id for r in runs}


def server_errors(page: Page) -> list[str]:
    """A list that collects, as they come, the page's API answers with a 5xx (method, URL, status):
    what made Prefect's UI show its "Oops. Something went wrong." toast."""
    seen: list[str] = []
    page.on(
        "response",
        lambda r: seen.append(f"{r.request.method} {r.url} -> {r.status}") if r.status >= 500 else None,
    )
    return seen


def read_artifacts(only: ArtifactFilter) -> list[Artifact]:
    """The artifacts ``only`` selects, newest first."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=only)
    return sorted(found, key=lambda a: str(a.created), reverse=True)
