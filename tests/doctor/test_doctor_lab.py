"""``greenlight doctor`` against the lab: a lab just brought up passes, and each check, broken on
purpose in an environment of its own (namespace doctor-broken), fails naming its fix."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from greenlight.clients.kube import Kube
from greenlight.settings import REPO_ROOT
from greenlight_lab.gcs import ensure_buckets
from greenlight_lab.state import LAB_ENVIRONMENTS, PROJECT, LabState

BROKEN = "doctor-broken"
EMPTY_COPY = "doctor-empty-copy"


def doctor(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 180
) -> subprocess.CompletedProcess[str]:
    """``greenlight doctor ARGS`` in a process of its own, with the lab's environment (and ``env``)."""
    return subprocess.run(
        [sys.executable, "-m", "greenlight.cli", "doctor", *args], cwd=REPO_ROOT,
        env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def checks(out: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    doc = json.loads(out.stdout)
    return {c["check"]: c for c in doc["checks"]}


# --- a lab just brought up -------------------------------------------------------------------------


def test_a_lab_just_brought_up_passes_staging(lab: LabState) -> None:
    """Every check of staging passes (backups skipped: staging has none), one line each, and the
    metrics check saw requests on the live colour; progress went to stderr."""
    out = doctor("staging", "--metrics-timeout-s", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    assert lines[-1].startswith("doctor staging: ") and lines[-1].endswith(
        "0 failed, 1 skipped; ready for a release"
    )
    body = lines[:-1]
    assert all(line.startswith(("ok   ", "skip ")) for line in body), body
    names = [line[5:].split(":", 1)[0] for line in body]
    for name in ("cluster", "access", "app backend", "app frontend", "metrics backend", "metrics frontend",
                 "backups", "slack", "prefect work pool", "prefect global concurrency limit",
                 "prefect variable", "prefect secret block"):  # fmt: skip
        assert name in names
    assert "... checking metrics of backend" in out.stderr
    assert "requests seen on color=blue" in next(
        line for line in body if line.startswith("ok   metrics backend")
    )


def test_a_lab_just_brought_up_passes_production_json(lab: LabState) -> None:
    """Production passes too, backups and their copy included; --json holds every check."""
    out = doctor("production", "--json", "--metrics-timeout-s", "30")
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True
    by = {c["check"]: c for c in doc["checks"]}
    assert all(c["status"] == "ok" for c in by.values()), [c for c in by.values() if c["status"] != "ok"]
    assert by["metrics backend"]["values"]["seen"] > 0
    assert by["backups copy"]["what"].endswith("matches the primary")
    assert "patch services" in by["access"]["values"]["allowed"]


# --- broken on purpose -----------------------------------------------------------------------------


def _profile(name: str, apps: list[str] | None = None, **changes: Any) -> dict[str, Any]:
    doc = yaml.safe_load((LAB_ENVIRONMENTS / "production.yaml").read_text())
    doc.update(name=name, namespace=BROKEN)
    doc["release"].pop("requires", None)
    if apps is not None:
        known = {a["name"]: a for a in doc["apps"]}
        doc["apps"] = [copy.deepcopy(known.get(a) or {**known["backend"], "name": a, "service": a,
                                                      "preview_service": f"{a}-preview", "container": a})
                       for a in apps]  # fmt: skip
    for dotted, value in changes.items():
        node = doc
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        node[last] = value
    return doc


@pytest.fixture(scope="module")
def broken(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Environment doctor-broken (its own namespace, profile and Prefect objects), broken five ways:
    backend's preview Service deleted, a plain Deployment ``legacy``, Monitoring read by a colour
    label no series carries, an empty copy bucket, and its release lock deleted. Yields the
    environment for the doctor process; the namespace, bucket and Prefect objects are its own."""
    from prefect.client.orchestration import get_client

    from greenlight.commands.setup import ensure_setup
    from greenlight.flows.concurrency import lock_name
    from greenlight_lab.bootstrap import bootstrap_environment

    directory = tmp_path_factory.mktemp("doctor-envs")
    (directory / "doctor-base.yaml").write_text(
        yaml.safe_dump(_profile("doctor-base", ["backend", "frontend"]))
    )
    (directory / f"{BROKEN}.yaml").write_text(
        yaml.safe_dump(
            _profile(
                BROKEN, ["backend", "frontend", "legacy"],
                **{"monitoring.colour_label": "colour", "backups.replica_bucket": EMPTY_COPY},
            )
        )
    )  # fmt: skip
    ensure_buckets(os.environ["STORAGE_EMULATOR_HOST"], PROJECT, [EMPTY_COPY])
    kube = Kube.connect(context="lab-primary")
    env = {"GREENLIGHT_ENVIRONMENTS": str(directory)}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("GREENLIGHT_ENVIRONMENTS", str(directory))
            bootstrap_environment(kube, "doctor-base", directory, {}, lab.env)
            ensure_setup([BROKEN])
            with get_client(sync_client=True) as client:
                client.delete_global_concurrency_limit_by_name(lock_name(BROKEN))
        kube.delete("services", "backend-preview", BROKEN)
        plain = copy.deepcopy(kube.get("deployments", "backend-blue", BROKEN))
        labels = {"app": "legacy"}
        plain["metadata"] = {"name": "legacy", "namespace": BROKEN, "labels": labels}
        plain["spec"]["selector"] = {"matchLabels": labels}
        plain["spec"]["template"]["metadata"] = {"labels": labels}
        plain["spec"]["template"]["spec"]["containers"][0]["name"] = "legacy"
        plain.pop("status", None)
        kube.create("deployments", plain, BROKEN)
        yield env
    finally:
        kube.delete("namespaces", BROKEN)
        kube.close()


@pytest.fixture(scope="module")
def broken_run(broken: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One doctor run of doctor-broken, with a Slack token the Slack stand-in refuses."""
    return doctor(
        BROKEN, "--json", "--metrics-timeout-s", "6", env={**broken, "SLACK_BOT_TOKEN": "not-a-bot-token"}
    )


def test_a_broken_environment_fails_with_exit_8_and_says_which(
    broken_run: subprocess.CompletedProcess[str],
) -> None:
    assert broken_run.returncode == 8, broken_run.stdout + broken_run.stderr
    failed_line = broken_run.stderr.strip().splitlines()[-1]
    assert failed_line.startswith("FAILED: ") and "doctor checks failed in doctor-broken" in failed_line
    assert json.loads(broken_run.stdout)["ok"] is False


@pytest.mark.parametrize(
    ("check", "what_has", "fix_has"),
    [
        ("app backend", "the preview Service backend-preview is missing", "greenlight adopt doctor-broken backend"),
        ("app legacy", "Deployment legacy is not blue-green", "`greenlight adopt doctor-broken legacy` converts it"),
        ("metrics frontend", "none labelled colour=blue", "targetLabels: {fromPod: [{from: colour}]}"),
        ("backups copy", f"cross-region copy gs://{EMPTY_COPY}/", "gcloud storage rsync"),
        ("slack", "the token from SLACK_BOT_TOKEN was refused", "put a valid bot token"),
        ("prefect global concurrency limit", f"missing greenlight-release-{BROKEN}", f"greenlight setup {BROKEN}"),
    ],
)  # fmt: skip
def test_each_broken_check_names_its_fix(
    broken_run: subprocess.CompletedProcess[str], check: str, what_has: str, fix_has: str
) -> None:
    c = checks(broken_run)[check]
    assert c["status"] == "fail", c
    assert what_has in c["what"], c
    assert fix_has in c["fix"], c


def test_what_was_not_broken_still_passes(broken_run: subprocess.CompletedProcess[str]) -> None:
    """The checks beside the broken ones hold: the failures are the breakages, not noise."""
    by = checks(broken_run)
    for name in ("cluster", "access", "app frontend", "backups", "prefect variable", "prefect work pool"):
        assert by[name]["status"] == "ok", by[name]
    assert by["metrics legacy"]["status"] == "skip"


# --- run as a ServiceAccount that lacks a verb -----------------------------------------------------


@pytest.fixture(scope="module")
def without_patch_services(
    broken: dict[str, str], lab: LabState, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A ServiceAccount of doctor-broken granted every verb the flows need there but
    ``patch services``; the environment of a doctor process that runs as it (its kubeconfig)."""
    from kubernetes import client

    from greenlight.core import doctor as dr
    from greenlight_lab.kube.tokens import service_account_kubeconfig

    rows = dr.required_access(probe_via_apiserver=True, pre_deploy_job=False, dr=False)
    rules = dr.role_rules(r for r in rows if (r.resource, r.verb) != ("services", "patch"))
    kube = Kube.connect(context="lab-primary")
    try:
        core, rbac = client.CoreV1Api(kube.api_client), client.RbacAuthorizationV1Api(kube.api_client)
        meta = {"name": "doctor-flows", "namespace": BROKEN}
        core.create_namespaced_service_account(BROKEN, {"metadata": meta})
        rbac.create_namespaced_role(BROKEN, {"metadata": meta, "rules": rules})
        rbac.create_namespaced_role_binding(
            BROKEN,
            {
                "metadata": meta,
                "subjects": [{"kind": "ServiceAccount", "name": "doctor-flows", "namespace": BROKEN}],
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "doctor-flows"},
            },
        )
    finally:
        kube.close()
    config = service_account_kubeconfig(
        f"http://127.0.0.1:{lab.ports['kube-primary']}", BROKEN, "doctor-flows"
    )
    path = tmp_path_factory.mktemp("doctor-sa") / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return {**broken, "KUBECONFIG": str(path)}


def test_a_verb_the_flows_need_denied_is_named_with_the_rule_that_grants_it(
    without_patch_services: dict[str, str],
) -> None:
    """Run as a ServiceAccount without ``patch services``: the cluster answers, the access check
    fails naming that verb (and why the flows need it) and the Role rule that grants it; nothing
    else it was granted is reported."""
    out = doctor(BROKEN, "--json", "--metrics-timeout-s", "1", env=without_patch_services)
    by = checks(out)
    assert by["cluster"]["status"] == "ok", by["cluster"]
    access = by["access"]
    assert access["status"] == "fail", access
    assert [d["verb"] for d in access["values"]["denied"]] == ["patch services"]
    assert "patch services (move traffic" in access["what"]
    assert (
        f'a Role in {BROKEN} with rules [{{"apiGroups":[""],"resources":["services"],"verbs":["patch"]}}]'
        in access["fix"]
    )
    assert by["app frontend"]["status"] == "ok"  # what it may read, it reads as that ServiceAccount
