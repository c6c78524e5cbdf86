"""The deployment artifacts users apply: prefect.kubernetes.yaml in step with prefect.yaml, manifests well formed."""

from __future__ import annotations

import yaml

from greenlight.commands.deployments import K8S_POOL, render
from greenlight.settings import REPO_ROOT

MANIFESTS = REPO_ROOT / "deployments" / "kubernetes"


def test_kubernetes_variant_is_what_prefect_yaml_renders() -> None:
    """The committed prefect.kubernetes.yaml is exactly what `greenlight render-kubernetes` writes."""
    assert (REPO_ROOT / "prefect.kubernetes.yaml").read_text() == render()


def test_kubernetes_variant_runs_every_deployment_on_the_kubernetes_pool_with_the_flows_image() -> None:
    """Every deployment of prefect.yaml is in the variant, on the kubernetes pool, with the image variable."""
    local = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    k8s = yaml.safe_load(render())["deployments"]
    assert [(d["name"], d["entrypoint"]) for d in k8s] == [(d["name"], d["entrypoint"]) for d in local]
    for d in k8s:
        assert d["work_pool"]["name"] == K8S_POOL
        assert d["work_pool"]["job_variables"]["image"] == "{{ $GREENLIGHT_IMAGE }}"
        assert d["work_pool"]["job_variables"]["service_account_name"] == "greenlight-flows"


def test_manifests_parse_and_grant_no_wildcards() -> None:
    """Every manifest parses; no RBAC rule grants '*' verbs, resources or API groups."""
    kinds = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            kinds.append(doc["kind"])
            for rule in doc.get("rules") or []:
                for key in ("verbs", "resources", "apiGroups"):
                    assert "*" not in rule[key], f"{path.name}: wildcard in {key}"
    assert {"Role", "RoleBinding", "ServiceAccount", "Deployment", "Service", "ClusterRole"} <= set(kinds)


def test_release_role_lets_flows_switch_scale_and_probe_but_not_delete_deployments() -> None:
    """The app-namespace Role has what a release needs and nothing to delete Deployments or read Secret values by name."""
    docs = list(yaml.safe_load_all((MANIFESTS / "flows-rbac.yaml").read_text()))
    role = next(d for d in docs if d["kind"] == "Role" and d["metadata"]["namespace"] == "sma-production")
    grants = {
        (g, r, v)
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }
    for needed in [("", "services", "patch"), ("apps", "deployments/scale", "patch"), ("", "services/proxy", "get"),
                   ("apps", "deployments", "update"), ("batch", "jobs", "create")]:  # fmt: skip
        assert needed in grants, needed
    assert ("apps", "deployments", "delete") not in grants
    assert ("", "secrets", "get") not in grants
