"""Pre-deploy Jobs run to completion before a colour is deployed; HPAs and PDBs live and go with their colour."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from greenlight.clients.kube import Kube
from greenlight.errors import GateFailed
from greenlight.flows.maintenance import cleanup
from greenlight.flows.release import build_promote
from greenlight.flows.requests import PromoteRequest
from greenlight_lab import supervisor
from greenlight_lab.state import LabState

from .support import (
    fail_on_a_job_logging,
    job_environments,
    live,
    profile,
    push_commit,
    set_job_image,
    wait_release_lock_free,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Staging with a pre-deploy Job whose image the test chooses, and no scale-down delay."""
    with job_environments(lab, tmp_path_factory.mktemp("release-jobs")) as envs:
        yield envs


def test_failed_pre_deploy_job_stops_the_release_with_its_logs(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A migration Job that fails stops the release before any colour is deployed, quoting its pods' logs."""
    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha)
    bad = f"ghcr.io/sma-platform/migrate:{sha}"
    supervisor.control(lab, "POST", "/images", {"ref": bad, "version": "migrate", "crash": True})
    set_job_image(envdir, bad)
    before = live(kube, profile("staging"))
    with pytest.raises(GateFailed, match="pre-deploy job") as err:
        build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    assert "logs:" in str(err.value) and "greenlight-pre-staging-" in str(err.value)
    assert live(kube, profile("staging")) == before  # no colour was touched


def test_secrets_in_a_failed_pre_deploy_jobs_logs_are_masked_everywhere(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A failing Job whose pod logs carry a Slack token (here: in its image reference, which the
    lab's pods log) stops the release; the error, the Slack thread, the event and the report quote
    the logs with the token masked."""
    token = f"xoxb-{uuid.uuid4().int % 10**10:010d}-{uuid.uuid4().int % 10**10:010d}-{uuid.uuid4().hex[:10]}LeakedSlackTok"
    said = fail_on_a_job_logging(lab, envdir, token)
    error, rid, slack, events, report = said.error, said.release_id, said.slack, said.events, said.report
    leaks = {
        "error": error.count(token),
        "slack": sum(t.count(token) for t in slack),
        "events": sum(e.count(token) for e in events),
        "report": report.count(token),
    }
    assert leaks == dict.fromkeys(leaks, 0)
    assert "logs:" in error and "migrate:xoxb-***" in error, error  # the logs are quoted, masked
    assert [t for t in slack if rid in t and "pre-deploy job" in t], slack
    assert events and "pre-deploy job" in report


def test_pre_deploy_job_completes_then_the_release_goes_on(lab: LabState, envdir: Path, kube: Kube) -> None:
    """A Job that completes lets the release deploy, gate and switch."""
    sha = uuid.uuid4().hex[:10]
    digests = push_commit(lab, sha)
    set_job_image(envdir, f"ghcr.io/sma-platform/backend:{sha}")
    result = build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    assert result["outcome"] == "released"
    job = kube.get("jobs", f"greenlight-pre-{result['release_id']}", "rel-staging")
    assert any(c["type"] == "Complete" and c["status"] == "True" for c in job["status"]["conditions"])
    assert live(kube, profile("staging"))["backend"]["digests"] == {"backend": digests["backend"]}


def test_hpa_is_cloned_with_the_colour_and_deleted_when_it_is_scaled_down(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """The live colour's HPA is cloned onto the new colour; cleanup scales the old colour to 0 and deletes its HPA."""
    prof = profile("staging")
    ns = "rel-staging"
    old = live(kube, prof)["backend"]["live_colour"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"backend-{old}"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"backend-{old}"},
            "minReplicas": 2,
            "maxReplicas": 5,
        },
    }
    if kube.find("horizontalpodautoscalers", f"backend-{old}", ns) is None:
        kube.create("horizontalpodautoscalers", hpa, ns)
    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha)
    set_job_image(envdir, f"ghcr.io/sma-platform/backend:{sha}")
    build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    new = live(kube, prof)["backend"]["live_colour"]
    assert new != old
    clone = kube.get("horizontalpodautoscalers", f"backend-{new}", ns)
    assert clone["spec"]["scaleTargetRef"]["name"] == f"backend-{new}"
    wait_release_lock_free("staging")
    result = cleanup("staging")
    assert any(f"backend-{old}" in line for line in result["scaled_down"])
    assert kube.find("horizontalpodautoscalers", f"backend-{old}", ns) is None
    assert kube.get("deployments", f"backend-{old}", ns)["spec"]["replicas"] == 0
    assert kube.get("deployments", f"backend-{new}", ns)["spec"]["replicas"] == 2


def test_rollback_to_a_scaled_down_colour_scales_it_up_and_waits_first(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """After cleanup scaled the old colour to 0, a rollback scales it up (its HPA cloned back), waits until
    every pod is ready, then switches; no request fails."""
    from greenlight.flows.rollback import rollback

    from .support import Load

    prof = profile("staging")
    ns = "rel-staging"
    state = live(kube, prof)["backend"]
    old, current = state["previous_colour"], state["live_colour"]
    assert kube.get("deployments", f"backend-{old}", ns)["spec"]["replicas"] == 0  # left so by the test above
    with Load(lab, ns, "backend", rps=100) as load:
        result = rollback("staging", reason="scaled-down rollback test")
        time.sleep(1)
    assert result["apps"]["backend"]["action"] == "switch"
    after = live(kube, prof)["backend"]
    assert after["live_colour"] == old
    assert after["colours"][old]["ready"] == after["colours"][old]["replicas"] == 2
    assert (
        kube.get("horizontalpodautoscalers", f"backend-{old}", ns)["spec"]["scaleTargetRef"]["name"]
        == f"backend-{old}"
    )
    assert load.report is not None and load.report.failed == 0, load.report.render()
    assert current != old
