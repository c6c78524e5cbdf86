"""Browser tests of the lab's Prefect UI: headless Chromium (Debian's ``chromium`` package, which
``make browser`` installs) driven by Playwright's Python package; never Playwright's own browser
download. One browser for the package (tests/ui), a fresh page (browser context) per test, and a
screenshot of each test's last page in ``test-output/ui/<test name>.png``, passed or failed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from greenlight_lab.state import LabState

from .support import TIMEOUT_MS, screenshot_path, ui_address

#: Debian's chromium; the tests never download a browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the browser tests, closed when pytest leaves tests/ui: while Playwright's
    sync API runs, its event loop runs in the test thread, where Prefect's sync calls would misbehave
    (the later tests of a pytest-xdist worker run in-process flows there)."""
    if not Path(CHROMIUM).exists():
        pytest.fail("no chromium on PATH: `make browser` installs Debian's chromium package")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, lab: LabState, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page of its own, its timeouts generous (the UI is a Vue app that loads as it goes); its
    screenshot is saved at the end of the test, passed or failed."""
    # wide enough for the Deployments table to show flow names; cron schedules read in UTC
    context = browser.new_context(
        viewport={"width": 1920, "height": 1100}, base_url=ui_address(lab), timezone_id="UTC"
    )
    context.set_default_timeout(TIMEOUT_MS)
    pg = context.new_page()
    try:
        yield pg
    finally:
        try:
            pg.screenshot(path=str(screenshot_path(request.node.name)), full_page=True)
        finally:
            context.close()
