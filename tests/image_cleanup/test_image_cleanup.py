"""``greenlight cleanup-images`` against the lab: a package of 44 versions over three pages (old,
new, live, previous, recorded, cosign signature versions, a live multi-platform image whose
platform manifests are older than the retention, an old multi-platform image) in two environments
on two clusters. A dry run deletes nothing; a refused read of either environment plans nothing; an
unreadable manifest holds back every untagged delete; a failure on the third DELETE says what went
and what did not; ``--apply`` deletes exactly the planned versions (checked through the Packages
API and the OCI API: the live index and each of its platform manifests still resolve, the kept
digest's signature still verifies); a rerun plans nothing new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.clients.packages import PackagesClient
from greenlight.clients.registry import RegistryClient
from greenlight.core.cleanup import Package, index_children
from greenlight.core.images import parse_image_ref
from greenlight.core.signatures import judge, signature_tag
from greenlight.errors import NotFound
from greenlight.settings import REPO_ROOT
from greenlight_lab import supervisor
from greenlight_lab.catalogue import OCI_INDEX, Behaviour, build_index
from greenlight_lab.signing import public_pem
from greenlight_lab.state import LAB_ENVIRONMENTS, LabState

IMAGE = "ghcr.io/sma-platform/cleanup-web"
PACKAGE = Package(IMAGE, "sma-platform", "cleanup-web")
DAY = 86400.0
ENVS = {"cleanup-a": ("clean-a", "lab-primary"), "cleanup-b": ("clean-b", "lab-dr")}
PLATFORMS = ["linux/amd64", "linux/arm64"]
KEEP, DELETE, TOTAL = 16, 28, 44


@dataclass
class Scenario:
    digests: dict[str, str]  # name in this test -> digest
    keep: set[str]
    delete: set[str]
    env: dict[str, str]


def _profiles(directory: Path) -> None:
    """cleanup-a (cleans, protects cleanup-b too) and cleanup-b, one app each on the same repository."""
    for env, (ns, context) in ENVS.items():
        doc = yaml.safe_load((LAB_ENVIRONMENTS / "staging.yaml").read_text())
        doc.update(name=env, namespace=ns, cluster={"context": context})
        doc["apps"] = [{"name": "web", "service": "web", "container": "web", "image_repository": IMAGE}]
        if env == "cleanup-a":
            production = yaml.safe_load((LAB_ENVIRONMENTS / "production.yaml").read_text())
            doc["registry"]["signatures"] = production["registry"]["signatures"]  # the lab key
            doc["registry"]["cleanup"] = {
                "retention_days": 30,
                "keep_newest": 3,
                "environments": ["cleanup-b"],
            }
        (directory / f"{env}.yaml").write_text(yaml.safe_dump(doc))


def _deployment(colour: str, image: str) -> dict[str, Any]:
    labels = {"app": "web", "color": colour}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": f"web-{colour}", "labels": labels},
        "spec": {"replicas": 0, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "web", "image": image}]}}},
    }  # fmt: skip


def _environment(context: str, ns: str, blue: str, green: str, records: dict[str, Any]) -> None:
    """Namespace, live Service on blue, both colours' Deployments, and release records."""
    kube = Kube.connect(context=context)
    try:
        kube.create("namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kube.create("services", {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                                 "spec": {"selector": {"app": "web", "color": "blue"},
                                          "ports": [{"port": 8080, "targetPort": 8080}]}}, ns)  # fmt: skip
        kube.create("deployments", _deployment("blue", blue), ns)
        kube.create("deployments", _deployment("green", green), ns)
        data = {rid: json.dumps(entry) for rid, entry in records.items()}
        kube.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap",
                                   "metadata": {"name": "greenlight-releases"}, "data": data}, ns)  # fmt: skip
    finally:
        kube.close()


@pytest.fixture(scope="module")
def scenario(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    now = time.time()
    digests: dict[str, str] = {}

    def push(name: str, age_days: float, tag: str, signed: bool = False, multi: bool = False) -> str:
        body = {"ref": f"{IMAGE}:{tag}", "version": f"cleanup-{name}", "pushed_at": now - age_days * DAY,
                "signed_by": "lab" if signed else None, **({"platforms": PLATFORMS} if multi else {})}  # fmt: skip
        digests[name] = supervisor.control(lab, "POST", "/images", body)["digest"]
        if multi:  # the platform manifests: untagged versions of their own, as GHCR lists them
            built, _, children = build_index(IMAGE.split("/", 1)[1], Behaviour(f"cleanup-{name}"), PLATFORMS)
            assert built == digests[name]
            for platform, child, _, _ in children:
                digests[f"{name}/{platform}"] = child
        return digests[name]

    keep: set[str] = set()
    delete: set[str] = set()
    for i, age in enumerate((0.5, 1, 2)):
        push(f"new{i}", age, f"new{i}")
        keep.add(f"new{i}")
    for i, age in enumerate((5, 8, 12, 20, 29)):
        push(f"recent{i}", age, f"recent{i}")
        keep.add(f"recent{i}")
    push("live_a", 200, "live-a", signed=True)  # signed: its signature version stays with it
    push("prev_a", 150, "prev-a")
    push("live_b", 120, "live-b", multi=True)  # an index: its platform manifests are 120 days old
    push("prev_b", 110, "prev-b")
    push("rec_recent", 100, "rec-recent")
    keep |= {"live_a", "prev_a", "live_b", "prev_b", "rec_recent"}
    keep |= {f"live_b/{p}" for p in PLATFORMS}
    push("rec_old", 95, "rec-old")
    delete.add("rec_old")
    for i in range(22):
        push(f"old{i}", 40 + 2 * i, f"old{i}", signed=i == 0)  # old0 signed: its signature goes with it
        delete.add(f"old{i}")
    push("old_multi", 60, "old-multi", multi=True)  # an old index: it and its children go
    delete |= {"old_multi", *(f"old_multi/{p}" for p in PLATFORMS)}
    push("orphan_sig", 70, "sha256-" + "e" * 64 + ".sig")  # a .sig tag whose subject is gone
    delete.add("orphan_sig")
    with PackagesClient(
        os.environ["GREENLIGHT_GITHUB_PACKAGES_TOKEN"], api_url=os.environ["GREENLIGHT_GITHUB_API_URL"]
    ) as c:
        by_tag = {tag: v.digest for v in c.list_versions(PACKAGE) for tag in v.tags}
    digests["sig_live_a"] = by_tag[signature_tag(digests["live_a"])]
    keep.add("sig_live_a")
    digests["sig_old0"] = by_tag[signature_tag(digests["old0"])]
    delete.add("sig_old0")
    assert (len(keep), len(delete), len(digests)) == (KEEP, DELETE, TOTAL)
    at = lambda days: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - days * DAY))  # noqa: E731
    _environment(
        "lab-primary", "clean-a", f"{IMAGE}@{digests['live_a']}", f"{IMAGE}@{digests['prev_a']}",
        {"r-recent": {"release_id": "r-recent", "digests": {"web": digests["rec_recent"]}, "outcome": "released",
                      "at": at(10)},
         "r-old": {"release_id": "r-old", "digests": {"web": digests["rec_old"]}, "outcome": "released",
                   "at": at(60)}},
    )  # fmt: skip
    # cleanup-b's previous colour runs a tag: cleanup learns its digest from the package's tags
    _environment("lab-dr", "clean-b", f"{IMAGE}@{digests['live_b']}", f"{IMAGE}:prev-b", {})
    directory = tmp_path_factory.mktemp("cleanup-envs")
    _profiles(directory)
    env = {**os.environ, "GREENLIGHT_ENVIRONMENTS": str(directory), "GREENLIGHT_GITHUB_PER_PAGE": "15"}
    yield Scenario(digests, keep, delete, env)
    supervisor.control(lab, "DELETE", "/faults")
    # leave the session's lab as the module found it (tests/integration/test_lab_kube.py holds
    # that the DR cluster runs no application Deployments)
    for ns, context in ENVS.values():
        kube = Kube.connect(context=context)
        try:
            for colour in ("blue", "green"):
                kube.delete("deployments", f"web-{colour}", ns)
            kube.delete("namespaces", ns)
        finally:
            kube.close()


def cli(
    scenario: Scenario, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", "cleanup-images", "cleanup-a", *args], cwd=REPO_ROOT,
        env=env or scenario.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def listed() -> set[str]:
    """The digests the Packages API lists now."""
    with PackagesClient(
        os.environ["GREENLIGHT_GITHUB_PACKAGES_TOKEN"], api_url=os.environ["GREENLIGHT_GITHUB_API_URL"]
    ) as c:
        return {v.digest for v in c.list_versions(PACKAGE)}


def pullable(digest: str) -> bool:
    with RegistryClient() as registry:
        try:
            registry.resolve(parse_image_ref(f"{IMAGE}@{digest}"))
        except NotFound:
            return False
    return True


def outcomes(report: dict[str, Any], scenario: Scenario) -> dict[str, str]:
    """name in this test -> the outcome the report gives its version."""
    by_digest = {row["digest"]: row["outcome"] for row in report["packages"][0]["versions"]}
    return {name: by_digest[d] for name, d in scenario.digests.items() if d in by_digest}


def test_1_dry_run_lists_the_plan_and_deletes_nothing(scenario):
    """Every version is listed (three pages) with would delete / kept and why; nothing goes."""
    before = listed()
    assert len(before) == TOTAL
    text = cli(scenario)
    assert text.returncode == 0, text.stderr
    assert "DRY RUN" in text.stdout
    assert f"OK: {TOTAL} versions in 1 package(s): {DELETE} would be deleted, {KEEP} kept" in text.stdout
    assert "WARNING" not in text.stdout
    lines = {line.split()[1]: line for line in text.stdout.splitlines() if line.startswith("  ")}
    short = lambda name: scenario.digests[name][:19]  # noqa: E731
    assert "kept: live in cleanup-a (web-blue)" in lines[short("live_a")]
    assert "previous colour in cleanup-a (web-green)" in lines[short("prev_a")]
    assert "live in cleanup-b (web-blue)" in lines[short("live_b")]
    assert "previous colour in cleanup-b (web-green)" in lines[short("prev_b")]
    assert "recorded in cleanup-a release r-recent" in lines[short("rec_recent")]
    assert "would delete: pushed 95 d ago" in lines[short("rec_old")]
    assert "signature of kept" in lines[short("sig_live_a")]
    assert "would delete: signature of" in lines[short("sig_old0")]
    assert "orphan signature" in lines[short("orphan_sig")]
    for platform in PLATFORMS:
        assert (
            f"kept: platform manifest of {short('live_b')} (kept: live in cleanup-b (web-blue)"
            in lines[short(f"live_b/{platform}")]
        )
        assert "would delete: pushed 60 d ago" in lines[short(f"old_multi/{platform}")]
    # each line's outcome is the first of "kept:" / "would delete:" after its tags (the --json report
    # is read in the later tests)
    got = {
        name: min(("kept", "would delete"), key=lambda o: (lines[short(name)] + f" {o}: ").index(f" {o}: "))
        for name in scenario.digests
    }
    assert len(lines) == TOTAL
    assert {n for n, o in got.items() if o == "would delete"} == scenario.delete
    assert {n for n, o in got.items() if o == "kept"} == scenario.keep
    assert listed() == before
    assert all(pullable(d) for d in scenario.digests.values())


def test_2_an_unreadable_environment_plans_nothing(lab, scenario):
    """cleanup-b's cluster refusing to show its Deployments: FAILED naming it, nothing deleted."""
    before = listed()
    rule = {"target": "kube-dr", "verb": "get", "resource": "deployments", "status": 403, "count": -1}
    supervisor.control(lab, "POST", "/faults", rule)
    try:
        result = cli(scenario, "--apply")
    finally:
        supervisor.control(lab, "DELETE", "/faults?target=kube-dr")
    assert result.returncode == 5, result.stderr
    assert "FAILED: cannot read environment 'cleanup-b'" in result.stderr
    assert "never deletes on partial knowledge" in result.stderr
    assert listed() == before


def test_2b_an_unreadable_manifest_holds_back_every_untagged_delete(lab, scenario):
    """The registry refusing every manifest read: the dry run warns, keeps every untagged version
    (the old index's platform manifests included) and still plans the old tagged ones."""
    rule = {"target": "registry", "verb": "get", "resource": "manifests", "status": 403, "count": -1}
    supervisor.control(lab, "POST", "/faults", rule)
    try:
        result = cli(scenario, "--json")
    finally:
        supervisor.control(lab, "DELETE", "/faults?target=registry")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "could not be read" in report["packages"][0]["refusal"]
    assert "never deletes on partial knowledge" in report["packages"][0]["refusal"]
    got = outcomes(report, scenario)
    for platform in PLATFORMS:
        assert got[f"old_multi/{platform}"] == "kept"
    assert got["old_multi"] == got["old1"] == "would delete"


def test_3_a_failure_on_the_third_delete_reports_what_went(lab, scenario):
    """502 on the third DELETE (every retry): two deleted, one not, the rest not attempted; exit 4."""
    rule = {"target": "packages", "verb": "delete", "status": 502, "count": -1, "skip": 2}
    supervisor.control(lab, "POST", "/faults", rule)
    try:
        result = cli(scenario, "--apply", "--json")
    finally:
        supervisor.control(lab, "DELETE", "/faults?target=packages")
    assert result.returncode == 4, result.stderr
    assert "FAILED: ghcr.io/sma-platform/cleanup-web: version" in result.stderr
    assert f"2 deleted before it, {DELETE - 3} not attempted" in result.stderr
    report = json.loads(result.stdout)
    got = outcomes(report, scenario)
    gone = {n for n, o in got.items() if o == "deleted"}
    assert len(gone) == 2 and gone <= scenario.delete
    assert sum(o == "not deleted" for o in got.values()) == 1
    assert sum(o == "not attempted" for o in got.values()) == DELETE - 3
    assert {n for n, o in got.items() if o == "kept"} == scenario.keep
    now_listed = listed()
    assert {scenario.digests[n] for n in gone}.isdisjoint(now_listed)
    assert len(now_listed) == TOTAL - 2


def test_4_apply_deletes_exactly_the_planned_versions(scenario):
    """--apply deletes the rest of the plan; the Packages API lists only the kept, the OCI API 404s the rest."""
    result = cli(scenario, "--apply")
    assert result.returncode == 0, result.stderr
    assert "APPLY" in result.stdout
    assert f"OK: {TOTAL - 2} versions in 1 package(s): {DELETE - 2} deleted, {KEEP} kept" in result.stdout
    assert listed() == {scenario.digests[n] for n in scenario.keep}
    for name in scenario.keep:
        assert pullable(scenario.digests[name]), name
    for name in scenario.delete:
        assert not pullable(scenario.digests[name]), name


def test_4b_the_live_multi_platform_image_still_pulls(scenario):
    """After --apply the live index resolves by tag and digest, and every platform manifest it
    names answers HEAD through the OCI API."""
    live_b = scenario.digests["live_b"]
    with RegistryClient() as registry:
        assert registry.resolve(parse_image_ref(f"{IMAGE}:live-b")) == live_b
        media_type, body = registry.manifest(parse_image_ref(f"{IMAGE}@{live_b}"))
        assert media_type == OCI_INDEX
        children = index_children(media_type, body)
        assert set(children) == {scenario.digests[f"live_b/{p}"] for p in PLATFORMS}
        for child in children:
            assert registry.resolve(parse_image_ref(f"{IMAGE}@{child}")) == child


def test_4c_the_kept_digest_still_verifies_and_the_deleted_one_has_no_signature(scenario):
    """live_a's signature version stayed: `greenlight deploy cleanup-a IMAGE@live_a --dry-run` says
    signed by lab and exits 0; old0's went with it (its .sig tag answers 404: unsigned)."""
    live_a = scenario.digests["live_a"]
    dry = subprocess.run(
        [sys.executable, "-m", "greenlight.cli", "deploy", "cleanup-a", f"{IMAGE}@{live_a}", "--dry-run"],
        cwd=REPO_ROOT, env=scenario.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "signature web: signed by lab" in dry.stdout, dry.stdout
    old0 = scenario.digests["old0"]
    with RegistryClient() as registry:
        manifest, blobs = registry.signature(parse_image_ref(IMAGE), old0)
    assert manifest is None
    assert (judge(old0, manifest, blobs, {"lab": public_pem("lab")}).problem or "").startswith("unsigned")


def test_5_a_rerun_plans_nothing_new(scenario):
    """After the apply, a dry run keeps all 16 and would delete none (its token from the Secret block
    greenlight setup made: $GREENLIGHT_GITHUB_PACKAGES_TOKEN is not set for it)."""
    env = {k: v for k, v in scenario.env.items() if k != "GREENLIGHT_GITHUB_PACKAGES_TOKEN"}
    result = cli(scenario, env=env)
    assert result.returncode == 0, result.stderr
    assert f"OK: {KEEP} versions in 1 package(s): {KEEP} kept" in result.stdout
    assert "would delete" not in result.stdout


def test_6_without_the_token_and_its_block_fails_naming_both(scenario):
    """Without $GREENLIGHT_GITHUB_PACKAGES_TOKEN and without its Secret block: exit 5 naming both places."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    block = "greenlight-github-packages-token"
    env = {k: v for k, v in scenario.env.items() if k != "GREENLIGHT_GITHUB_PACKAGES_TOKEN"}
    value = Secret.load(block).get()
    with get_client(sync_client=True) as client:
        client.delete_block_document(client.read_block_document_by_name(block, block_type_slug="secret").id)
    try:
        result = cli(scenario, env=env)
    finally:
        Secret(value=value).save(block, overwrite=True)
    assert result.returncode == 5, result.stderr
    assert "GREENLIGHT_GITHUB_PACKAGES_TOKEN" in result.stderr
    assert block in result.stderr
    assert value not in result.stderr + result.stdout


def test_7_the_naive_cleanup_breaks_the_same_live_multi_platform_image(lab, scenario):
    """The lab catches what Greenlight's planner guards against: the usual cleanup script (delete
    every untagged version older than the retention, as ``gh api .../versions | jq 'select(.metadata
    .container.tags == [])'`` does) run on a package like live_b's deletes the platform manifests of
    a live multi-platform image, and its digest no longer pulls on any platform."""
    image, package = (
        "ghcr.io/sma-platform/naive-web",
        Package("ghcr.io/sma-platform/naive-web", "sma-platform", "naive-web"),
    )
    body = {
        "ref": f"{image}:live",
        "version": "naive-live",
        "pushed_at": time.time() - 120 * DAY,
        "platforms": PLATFORMS,
    }
    live = supervisor.control(lab, "POST", "/images", body)["digest"]
    supervisor.control(lab, "POST", "/images", {"ref": f"{image}:new", "version": "naive-new"})
    cutoff = time.time() - 30 * DAY
    with PackagesClient(
        os.environ["GREENLIGHT_GITHUB_PACKAGES_TOKEN"], api_url=os.environ["GREENLIGHT_GITHUB_API_URL"]
    ) as c:
        naive = [v for v in c.list_versions(package) if not v.tags and v.created_at.timestamp() < cutoff]
        for v in naive:
            c.delete_version(package, v.id)
    with RegistryClient() as registry:
        media_type, index = registry.manifest(parse_image_ref(f"{image}@{live}"))
        children = index_children(media_type, index)
        assert len(naive) == len(PLATFORMS) and {v.digest for v in naive} == set(children)
        for child in children:  # what a node pulls for its platform: gone
            with pytest.raises(NotFound):
                registry.resolve(parse_image_ref(f"{image}@{child}"))
