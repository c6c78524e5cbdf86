"""The nightly backup verification's report, as a person reads it in the lab's Prefect UI."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page

from greenlight_lab.state import LabState

from .support import expect_visible, off_loop, read_artifacts

pytestmark = pytest.mark.lab


def test_backup_verification_report_renders(page: Page, lab: LabState) -> None:
    """The flow the nightly deployment runs (verify_backups, the lab's production profile) verifies
    the newest seeded dump; its artifact's page shows the report's title, its verdict and a row per
    check, each ok."""
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from greenlight.flows.backup_verification import verify_backups

    # off the test's thread, as all Prefect work here (tests/ui/support.py off_loop)
    result: dict[str, Any] = off_loop(lambda: verify_backups("production"))
    assert result["verified"] is True, result["reasons"]
    only = ArtifactFilter(key=ArtifactFilterKey(any_=["backup-verification-production"]))
    artifacts = off_loop(lambda: read_artifacts(only))
    assert artifacts, "no backup-verification-production artifact"
    newest = artifacts[0]
    assert result["dump"] in str(newest.data), "the newest report is not this run's"
    page.goto(f"/artifacts/artifact/{newest.id}")
    title = f"Backup verification: {result['database']} in {result['environment']}"
    expect_visible(
        page, page.get_by_role("heading", name=title, exact=True), f'the report\'s title "{title}"'
    )
    expect_visible(page, page.get_by_text("VERIFIED", exact=True), "the verdict VERIFIED")
    for column in ("step", "subject", "value", "limit", "result", "reason"):
        expect_visible(
            page, page.get_by_role("columnheader", name=column, exact=True), f'the checks\' column "{column}"'
        )
    for check in result["checks"]:
        row = page.get_by_role("row").filter(has=page.get_by_role("cell", name=check["name"], exact=True))
        expect_visible(
            page, row.get_by_role("cell", name="ok", exact=True), f'the check "{check["name"]}", ok'
        )
    expect_visible(
        page, page.get_by_role("cell", name=re.compile(r"^restore_seconds$")), 'the value "restore_seconds"'
    )
