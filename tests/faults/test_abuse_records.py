"""Abuse of the release record: whoever can write ConfigMaps in staging must not be able to let a
commit into production. Each case leaves one line in the fault-injection report."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from greenlight.clients.kube import Kube
from greenlight.errors import ReleaseRefused
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight.tasks.records import RECORD
from greenlight_lab.state import LabState
from tests.flows_release.support import live, profile, push_commit, release_environments

from .conftest import Fault

pytestmark = pytest.mark.lab
STAGING_NS = "rel-staging"


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with release_environments(lab, tmp_path_factory.mktemp("abuse-records")) as directory:
        yield directory


def write_entry(kube: Kube, entry: dict[str, Any]) -> None:
    """Add ``entry`` to staging's record as a ConfigMap writer would: no key, just kubectl edit."""
    cm = kube.find("configmaps", RECORD, STAGING_NS)
    data = {entry["release_id"]: json.dumps(entry, sort_keys=True)}
    if cm is None:
        body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": RECORD}, "data": data}
        kube.create("configmaps", body, STAGING_NS)
        return
    cm["data"] = {**(cm.get("data") or {}), **data}
    kube.replace("configmaps", RECORD, cm, STAGING_NS)


def colours(kube: Kube) -> dict[str, Any]:
    return {a: (s["live_colour"], s["digests"]) for a, s in live(kube, profile("production")).items()}


def test_forged_and_edited_staging_records_do_not_let_a_commit_into_production(
    fault: Fault, lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A 'released' staging entry written by hand, and a genuine signed entry edited to carry other
    digests, are both refused by production's promotion, naming the record; production is unchanged."""
    before = colours(kube)
    sha = uuid.uuid4().hex[:10]
    digests = push_commit(lab, sha)
    forged = {
        "release_id": f"staging-{sha}",
        "environment": "staging",
        "commit": sha,
        "author": "mallory",
        "digests": digests,
        "outcome": "released",
        "bake": {"watched": True, "windows": 8, "judged": 8, "unjudged": []},
        "at": datetime.now(UTC).isoformat(),
    }
    write_entry(kube, forged)
    fault.injected_by_hand(label="release record: a 'released' staging entry added by a ConfigMap writer")
    with pytest.raises(ReleaseRefused, match=rf"record staging-{sha} it has no signature"):
        build_promote(PromoteRequest(environment="production", commit=sha, actor="mallory"))

    # a genuine staging release, then its signed entry edited to name the unreleased digests
    good = uuid.uuid4().hex[:10]
    push_commit(lab, good)
    released = build_promote(PromoteRequest(environment="staging", commit=good, actor="dave"))
    assert released["outcome"] == "released"
    bad = uuid.uuid4().hex[:10]
    bad_digests = push_commit(lab, bad)
    cm = kube.get("configmaps", RECORD, STAGING_NS)
    entry = json.loads(cm["data"][released["release_id"]])
    assert entry["signature"].startswith("hmac-sha256:")
    write_entry(kube, {**entry, "release_id": f"staging-{bad}", "commit": bad, "digests": bad_digests})
    fault.injected_by_hand(label="release record: a signed staging entry edited to carry other digests")
    with pytest.raises(ReleaseRefused, match="does not match its content"):
        build_promote(PromoteRequest(environment="production", commit=bad, actor="mallory"))
    assert colours(kube) == before
