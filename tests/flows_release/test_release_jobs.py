"""Pre-deploy Jobs run to completion before a colour is deployed; HPAs and PDBs live and go with their colour."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.maintenance import cleanup
from flows.release import PromoteRequest, build_promote
from greenlight.clients.kube import Kube
from greenlight.errors import GateFailed
from greenlight.lab import supervisor
from greenlight.lab.state import LabState

from .support import JOB, live, profile, push_commit, read_events, release_environments

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def envdir(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Staging with a pre-deploy Job whose image the test chooses, and no scale-down delay."""
    directory = tmp_path_factory.mktemp("release-jobs")
    changes = {"release.pre_deploy_job": str(directory / "job.yaml"), "release.scale_down_delay_s": 0}
    with release_environments(lab, directory, staging=changes) as envs:
        yield envs


def set_job_image(envdir: Path, image: str) -> None:
    (envdir / "job.yaml").write_text(JOB.replace("IMAGE", image))


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


def job_release_id(error: str) -> str:
    """The release id in a pre-deploy Job's error (its Job is ``greenlight-pre-<release id>``)."""
    found = re.search(r"pre-deploy job [a-z0-9-]+/greenlight-pre-(\S+) failed", error)
    assert found, error
    return found.group(1)


def release_report(rid: str, env: str = "staging") -> str:
    """The newest version of the ``release-<env>`` markdown artifact that mentions ``rid``."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"release-{env}"]))
        )
    texts = [str(a.data) for a in sorted(arts, key=lambda a: str(a.created), reverse=True)]
    return next((t for t in texts if f"Release {rid} " in t), "")


def test_secrets_in_a_failed_pre_deploy_jobs_logs_are_masked_everywhere(
    lab: LabState, envdir: Path, kube: Kube
) -> None:
    """A failing Job whose pod logs carry a Slack token (here: in its image reference, which the
    lab's pods log) stops the release; the error, the Slack thread, the event and the report quote
    the logs with the token masked."""
    sha = uuid.uuid4().hex[:10]
    push_commit(lab, sha)
    token = f"xoxb-{uuid.uuid4().int % 10**10:010d}-{uuid.uuid4().int % 10**10:010d}-{sha}LeakedSlackTok"
    leaky = f"ghcr.io/sma-platform/migrate:{token}"
    supervisor.control(lab, "POST", "/images", {"ref": leaky, "version": "migrate", "crash": True})
    set_job_image(envdir, leaky)
    sent_before = len(supervisor.control(lab, "GET", "/slack"))
    with pytest.raises(GateFailed, match="pre-deploy job") as err:
        build_promote(PromoteRequest(environment="staging", commit=sha, actor="dave"))
    error = str(err.value)
    rid = job_release_id(error)
    slack = [m.get("text") or "" for m in supervisor.control(lab, "GET", "/slack")[sent_before:]]
    events = [str(e.payload) for e in read_events("greenlight.release.pre-deploy-failed", rid)]
    report = release_report(rid)
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
    from flows.rollback import rollback

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
