"""RBAC, ServiceAccount tokens and access reviews on the lab API server, driven with the official
Python client (kubernetes 37) over a real connection, as the admin and as ServiceAccounts."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from greenlight_lab.kube.tokens import service_account_kubeconfig

from .conftest import KubeLab, deployment_body

GROUP = "rbac.authorization.k8s.io"


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _token(core: client.CoreV1Api, ns: str, sa: str, **spec: Any) -> str:
    """A token for the ServiceAccount, asked for as the admin (TokenRequest)."""
    answer = core.create_namespaced_service_account_token(sa, ns, {"spec": spec})
    return str(answer.status.token)


def _as(kube: KubeLab, token: str) -> client.ApiClient:
    """An ApiClient that sends ``Authorization: Bearer <token>``."""
    cfg = client.Configuration()
    cfg.host = kube.url
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(cfg)


def _role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "Role", "metadata": {"name": name}, "rules": list(rules)}


def _binding(
    name: str, kind: str, role: str, *subjects: dict[str, Any], cluster: bool = False
) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRoleBinding" if cluster else "RoleBinding",
        "metadata": {"name": name},
        "roleRef": {"apiGroup": GROUP, "kind": kind, "name": role},
        "subjects": list(subjects),
    }


@pytest.fixture
def rbac_api(api: client.ApiClient) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(api)


@pytest.fixture
def sa(core: client.CoreV1Api, ns: str) -> str:
    """A ServiceAccount "deployer" in the test's namespace, with no permissions of its own."""
    core.create_namespaced_service_account(ns, {"metadata": {"name": "deployer"}})
    return "deployer"


@pytest.fixture
def sa_api(kube: KubeLab, core: client.CoreV1Api, ns: str, sa: str) -> Iterator[client.ApiClient]:
    with _as(kube, _token(core, ns, sa)) as api_client:
        yield api_client


@pytest.fixture
def cluster_scoped(rbac_api: client.RbacAuthorizationV1Api) -> Iterator[list[tuple[str, str]]]:
    """Cluster-scoped objects a test made ((plural, name)), deleted afterwards."""
    made: list[tuple[str, str]] = []
    yield made
    for plural, name in made:
        if plural == "clusterroles":
            rbac_api.delete_cluster_role(name)
        else:
            rbac_api.delete_cluster_role_binding(name)


def test_discovery_serves_rbac_authorization_and_pvcs(api: client.ApiClient) -> None:
    """The rbac, authorization and authentication groups are discovered with their scopes and verbs,
    core v1 has persistentvolumeclaims (with status) and the serviceaccounts/token subresource."""
    rbac_resources = {r.name: r for r in client.RbacAuthorizationV1Api(api).get_api_resources().resources}
    assert {n: r.namespaced for n, r in rbac_resources.items()} == {
        "roles": True,
        "rolebindings": True,
        "clusterroles": False,
        "clusterrolebindings": False,
    }
    assert "escalate" not in rbac_resources["roles"].verbs and "watch" in rbac_resources["roles"].verbs
    authz = {r.name: r for r in client.AuthorizationV1Api(api).get_api_resources().resources}
    assert authz["selfsubjectaccessreviews"].verbs == ["create"]
    assert not authz["selfsubjectaccessreviews"].namespaced and authz["localsubjectaccessreviews"].namespaced
    core = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert core["persistentvolumeclaims"].short_names == ["pvc"] and core["persistentvolumeclaims"].namespaced
    assert "persistentvolumeclaims/status" in core
    token = core["serviceaccounts/token"]
    assert (token.group, token.version, token.kind, token.verbs) == (
        "authentication.k8s.io",
        "v1",
        "TokenRequest",
        ["create"],
    )


def test_pvc_is_bound_at_once_and_validated(core: client.CoreV1Api, ns: str) -> None:
    """A PersistentVolumeClaim is Bound on creation with the capacity it asked for; a claim without
    access modes or a storage request is refused 422 naming the fields."""
    body = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    pvc = core.create_namespaced_persistent_volume_claim(ns, body)
    assert pvc.status.phase == "Bound" and pvc.status.capacity == {"storage": "1Gi"}
    assert pvc.spec.volume_name == f"pvc-{pvc.metadata.uid}" and pvc.spec.volume_mode == "Filesystem"
    assert [p.metadata.name for p in core.list_namespaced_persistent_volume_claim(ns).items] == ["data"]
    pvc.metadata.labels = {"tier": "db"}
    assert core.replace_namespaced_persistent_volume_claim("data", ns, pvc).status.phase == "Bound"
    with pytest.raises(ApiException) as info:
        core.create_namespaced_persistent_volume_claim(ns, {"metadata": {"name": "bad"}, "spec": {}})
    status = _status(info.value)
    assert info.value.status == 422
    assert [c["field"] for c in status["details"]["causes"]] == [
        "spec.accessModes",
        "spec.resources[storage]",
    ]
    core.delete_namespaced_persistent_volume_claim("data", ns)
    assert core.list_namespaced_persistent_volume_claim(ns).items == []


def test_service_account_acts_under_its_role(
    kube: KubeLab, rbac_api: client.RbacAuthorizationV1Api, ns: str, sa: str, sa_api: client.ApiClient
) -> None:
    """A token from TokenRequest acts as system:serviceaccount:<ns>:<sa>: it may do exactly what its
    Role grants (resourceNames included), and is refused 403 with the API server's message otherwise."""
    sa_core = client.CoreV1Api(sa_api)
    user = f"system:serviceaccount:{ns}:{sa}"
    with pytest.raises(ApiException) as info:
        sa_core.list_namespaced_pod(ns)
    assert info.value.status == 403
    assert _status(info.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'pods is forbidden: User "{user}" cannot list resource "pods" in API group "" '
        f'in the namespace "{ns}"',
        "reason": "Forbidden",
        "details": {"kind": "pods"},
        "code": 403,
    }
    rbac_api.create_namespaced_role(
        ns,
        _role(
            "reader",
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "update"],
                "resourceNames": ["cfg"],
            },
        ),
    )
    rbac_api.create_namespaced_role_binding(
        ns, _binding("deployer-reads", "Role", "reader", {"kind": "ServiceAccount", "name": sa})
    )
    client.CoreV1Api(kube.api_client()).create_namespaced_config_map(ns, {"metadata": {"name": "cfg"}})
    client.CoreV1Api(kube.api_client()).create_namespaced_config_map(ns, {"metadata": {"name": "other"}})
    assert sa_core.list_namespaced_pod(ns).items == []
    cfg = sa_core.read_namespaced_config_map("cfg", ns)
    cfg.data = {"written": "by the service account"}
    assert sa_core.replace_namespaced_config_map("cfg", ns, cfg).data == {"written": "by the service account"}
    with pytest.raises(ApiException) as info:
        sa_core.read_namespaced_config_map("other", ns)
    assert info.value.status == 403
    assert _status(info.value)["message"] == (
        f'configmaps "other" is forbidden: User "{user}" cannot get resource "configmaps" in API group "" '
        f'in the namespace "{ns}"'
    )
    assert _status(info.value)["details"] == {"name": "other", "kind": "configmaps"}
    with pytest.raises(ApiException) as info:
        sa_core.list_namespaced_config_map(ns)  # resourceNames never grant a list
    assert info.value.status == 403
    with pytest.raises(ApiException) as info:
        sa_core.create_namespaced_pod(ns, {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert info.value.status == 403 and "cannot create resource" in _status(info.value)["message"]
    with pytest.raises(ApiException) as info:
        sa_core.list_pod_for_all_namespaces()
    assert info.value.status == 403
    assert _status(info.value)["message"].endswith(
        'cannot list resource "pods" in API group "" at the cluster scope'
    )
    # the binding removed, the grant is gone at once
    rbac_api.delete_namespaced_role_binding("deployer-reads", ns)
    with pytest.raises(ApiException) as info:
        sa_core.list_namespaced_pod(ns)
    assert info.value.status == 403


def test_cluster_role_granted_per_namespace_or_everywhere(
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    rbac_api: client.RbacAuthorizationV1Api,
    ns: str,
    sa: str,
    sa_api: client.ApiClient,
    cluster_scoped: list[tuple[str, str]],
) -> None:
    """A RoleBinding to a ClusterRole grants it in the binding's namespace only; a ClusterRoleBinding
    grants it in every namespace. Subresource rules (deployments/scale) grant the subresource only."""
    other = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": other}})
    try:
        for where in (ns, other):
            apps.create_namespaced_deployment(where, deployment_body("web", replicas=1))
        role = f"scaler-{ns}"
        rbac_api.create_cluster_role(
            {
                "metadata": {"name": role},
                "rules": [
                    {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["get", "patch"]}
                ],
            }
        )
        cluster_scoped.append(("clusterroles", role))
        rbac_api.create_namespaced_role_binding(
            ns, _binding("scale", "ClusterRole", role, {"kind": "ServiceAccount", "name": sa})
        )
        sa_apps = client.AppsV1Api(sa_api)
        scaled = sa_apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
        assert scaled.spec.replicas == 3 and apps.read_namespaced_deployment("web", ns).spec.replicas == 3
        with pytest.raises(ApiException) as info:
            sa_apps.read_namespaced_deployment("web", ns)  # the scale subresource, not the deployment
        assert info.value.status == 403
        with pytest.raises(ApiException) as info:
            sa_apps.patch_namespaced_deployment_scale("web", other, {"spec": {"replicas": 2}})
        assert _status(info.value)["message"] == (
            f'deployments.apps "web" is forbidden: User "system:serviceaccount:{ns}:{sa}" cannot patch '
            f'resource "deployments/scale" in API group "apps" in the namespace "{other}"'
        )
        binding = f"scale-everywhere-{ns}"
        rbac_api.create_cluster_role_binding(
            _binding(
                binding,
                "ClusterRole",
                role,
                {"kind": "ServiceAccount", "name": sa, "namespace": ns},
                cluster=True,
            )
        )
        cluster_scoped.append(("clusterrolebindings", binding))
        assert (
            sa_apps.patch_namespaced_deployment_scale("web", other, {"spec": {"replicas": 2}}).spec.replicas
            == 2
        )
    finally:
        core.delete_namespace(other)


def test_tokens_that_prove_nothing_are_unauthorized(
    kube: KubeLab, core: client.CoreV1Api, ns: str, sa: str
) -> None:
    """A garbage token, a token for another audience and the token of a deleted ServiceAccount get
    401 Unauthorized; no token, or the lab kubeconfig's token, is the lab admin."""
    unauthorized = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    for header in ("Bearer not-a-token", "Bearer a.b.c", "Basic YWRtaW46YWRtaW4="):
        answer = httpx.get(f"{kube.url}/api/v1/namespaces", headers={"Authorization": header})
        assert (answer.status_code, answer.json()) == (401, unauthorized), header
    for header in ({}, {"Authorization": "Bearer lab"}):
        assert httpx.get(f"{kube.url}/api/v1/namespaces", headers=header).status_code == 200
    elsewhere = _token(core, ns, sa, audiences=["vault"])
    with _as(kube, elsewhere) as api_client, pytest.raises(ApiException) as info:
        client.CoreV1Api(api_client).list_namespaced_pod(ns)
    assert info.value.status == 401
    token = _token(core, ns, sa)
    with _as(kube, token) as api_client:
        review = client.AuthenticationV1Api(api_client).create_self_subject_review({})
        assert review.status.user_info.username == f"system:serviceaccount:{ns}:{sa}"
        assert review.status.user_info.groups == [
            "system:serviceaccounts",
            f"system:serviceaccounts:{ns}",
            "system:authenticated",
        ]
        core.delete_namespaced_service_account(sa, ns)
        with pytest.raises(ApiException) as info:
            client.AuthenticationV1Api(api_client).create_self_subject_review({})
        assert info.value.status == 401
        core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})  # same name, new uid
        with pytest.raises(ApiException) as info:
            client.AuthenticationV1Api(api_client).create_self_subject_review({})
        assert info.value.status == 401


def test_token_request_is_validated(core: client.CoreV1Api, ns: str, sa: str) -> None:
    """TokenRequest needs an existing ServiceAccount and at least ten minutes; it answers the
    spec it used (default audience, one hour)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    answer = core.create_namespaced_service_account_token(sa, ns, request)
    assert answer.spec.expiration_seconds == 3600
    assert answer.spec.audiences == ["https://kubernetes.default.svc.cluster.local"]
    assert answer.status.token.count(".") == 2 and answer.status.expiration_timestamp
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service_account_token("nobody", ns, request)
    assert info.value.status == 404
    assert _status(info.value)["message"] == 'serviceaccounts "nobody" not found'
    short = {"spec": {"expirationSeconds": 60}}
    with pytest.raises(ApiException) as info:
        core.create_namespaced_service_account_token(sa, ns, short)
    assert info.value.status == 422
    assert "may not specify a duration less than 10 minutes" in _status(info.value)["message"]


def _ssar(api_client: client.ApiClient, **attrs: str) -> Any:
    body = {"spec": {"resourceAttributes": attrs}}
    return client.AuthorizationV1Api(api_client).create_self_subject_access_review(body).status


def test_self_subject_access_review(
    api: client.ApiClient, rbac_api: client.RbacAuthorizationV1Api, ns: str, sa: str, sa_api: client.ApiClient
) -> None:
    """SelfSubjectAccessReview answers for the caller with the rules requests are checked by:
    allowed with the binding that allowed it, denied without a reason; the admin may do anything;
    a binding to a missing role shows in the reason."""
    denied = _ssar(sa_api, verb="get", resource="services", subresource="proxy", namespace=ns, name="web")
    assert (denied.allowed, denied.reason, denied.denied) == (False, None, None)
    rbac_api.create_namespaced_role(
        ns,
        _role(
            "proxy",
            {"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get"], "resourceNames": ["web"]},
        ),
    )
    rbac_api.create_namespaced_role_binding(
        ns, _binding("proxy", "Role", "proxy", {"kind": "ServiceAccount", "name": sa, "namespace": ns})
    )
    allowed = _ssar(sa_api, verb="get", resource="services", subresource="proxy", namespace=ns, name="web")
    assert allowed.allowed
    assert allowed.reason == (
        f'RBAC: allowed by RoleBinding "proxy/{ns}" of Role "proxy" to ServiceAccount "{sa}/{ns}"'
    )
    assert not _ssar(
        sa_api, verb="get", resource="services", subresource="proxy", namespace=ns, name="db"
    ).allowed
    assert not _ssar(sa_api, verb="get", resource="services", namespace=ns, name="web").allowed
    assert not _ssar(
        sa_api, verb="get", resource="services", subresource="proxy", namespace="default", name="web"
    ).allowed
    assert _ssar(api, verb="delete", resource="namespaces", name=ns).allowed
    rbac_api.create_namespaced_role_binding(
        ns, _binding("dangling", "Role", "missing", {"kind": "ServiceAccount", "name": sa})
    )
    dangling = _ssar(sa_api, verb="list", resource="pods", namespace=ns)
    assert not dangling.allowed
    assert dangling.reason == 'RBAC: role.rbac.authorization.k8s.io "missing" not found'
    nonresource = client.AuthorizationV1Api(sa_api).create_self_subject_access_review(
        {"spec": {"nonResourceAttributes": {"verb": "get", "path": "/apis"}}}
    )
    assert nonresource.status.allowed and "system:discovery" in nonresource.status.reason
    with pytest.raises(ApiException) as info:
        client.AuthorizationV1Api(sa_api).create_self_subject_access_review({"spec": {}})
    assert info.value.status == 422


def test_subject_access_review_and_rules_review(
    api: client.ApiClient, rbac_api: client.RbacAuthorizationV1Api, ns: str, sa: str, sa_api: client.ApiClient
) -> None:
    """The admin asks about someone else (SubjectAccessReview, LocalSubjectAccessReview), which a
    ServiceAccount may not; a SelfSubjectRulesReview lists the caller's rules in a namespace."""
    rbac_api.create_namespaced_role_binding(
        ns, _binding("view", "ClusterRole", "view", {"kind": "ServiceAccount", "name": sa})
    )
    user = f"system:serviceaccount:{ns}:{sa}"
    groups = ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"]
    authz = client.AuthorizationV1Api(api)
    body = {
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {"verb": "list", "resource": "pods", "namespace": ns},
        }
    }
    review = authz.create_subject_access_review(body)
    assert review.status.allowed and 'ClusterRole "view"' in review.status.reason
    local = authz.create_namespaced_local_subject_access_review(
        ns,
        {
            "metadata": {"namespace": ns},
            **{
                "spec": {
                    **body["spec"],
                    "resourceAttributes": {"verb": "delete", "resource": "pods", "namespace": ns},
                }
            },
        },
    )
    assert not local.status.allowed
    with pytest.raises(ApiException) as info:
        client.AuthorizationV1Api(sa_api).create_subject_access_review(body)
    assert info.value.status == 403
    rules = (
        client.AuthorizationV1Api(sa_api).create_self_subject_rules_review({"spec": {"namespace": ns}}).status
    )
    assert not rules.incomplete
    assert any(r.resources and "pods" in r.resources and "list" in r.verbs for r in rules.resource_rules)
    assert any("/apis" in r.non_resource_urls for r in rules.non_resource_rules)


def test_rbac_objects_are_validated_and_go_with_their_namespace(
    core: client.CoreV1Api, rbac_api: client.RbacAuthorizationV1Api, ns: str
) -> None:
    """Bad rules and bindings are refused 422 naming the fields; roleRef cannot change; RBAC names may
    hold colons; deleting a namespace deletes its Roles and RoleBindings."""
    with pytest.raises(ApiException) as info:
        rbac_api.create_namespaced_role(ns, _role("bad", {"resources": ["pods"], "verbs": []}))
    assert info.value.status == 422
    assert [c["field"] for c in _status(info.value)["details"]["causes"]] == [
        "rules[0].verbs",
        "rules[0].apiGroups",
    ]
    with pytest.raises(ApiException) as info:
        rbac_api.create_namespaced_role_binding(ns, _binding("bad", "Secret", "x"))
    assert _status(info.value)["message"] == (
        f'RoleBinding.{GROUP} "bad" is invalid: roleRef.kind: Unsupported value: "Secret": '
        'supported values: "Role", "ClusterRole"'
    )
    rbac_api.create_namespaced_role(
        ns, _role("team:reader", {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    )
    made = rbac_api.create_namespaced_role_binding(
        ns, _binding("b", "Role", "team:reader", {"kind": "User", "name": "u"})
    )
    assert made.subjects[0].api_group == GROUP  # defaulted
    made.role_ref.name = "other"
    with pytest.raises(ApiException) as info:
        rbac_api.replace_namespaced_role_binding("b", ns, made)
    assert info.value.status == 422 and "cannot change roleRef" in _status(info.value)["message"]
    gone = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": gone}})
    rbac_api.create_namespaced_role(
        gone, _role("r", {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]})
    )
    rbac_api.create_namespaced_role_binding(gone, _binding("b", "Role", "r", {"kind": "User", "name": "u"}))
    core.delete_namespace(gone)
    assert [
        r.metadata.name for r in rbac_api.list_role_for_all_namespaces().items if r.metadata.namespace == gone
    ] == []
    assert not [
        b for b in rbac_api.list_role_binding_for_all_namespaces().items if b.metadata.namespace == gone
    ]


def test_default_policy_is_there(rbac_api: client.RbacAuthorizationV1Api) -> None:
    """A new cluster has the default ClusterRoles and the bindings that let anyone authenticated
    discover the API and review their own access."""
    roles = {r.metadata.name for r in rbac_api.list_cluster_role().items}
    assert {"cluster-admin", "admin", "edit", "view", "system:discovery", "system:basic-user"} <= roles
    bindings = {b.metadata.name: b for b in rbac_api.list_cluster_role_binding().items}
    assert [s.name for s in bindings["cluster-admin"].subjects] == ["system:masters"]
    assert [s.name for s in bindings["system:discovery"].subjects] == ["system:authenticated"]


def test_service_account_kubeconfig_acts_as_the_account(
    kube: KubeLab, rbac_api: client.RbacAuthorizationV1Api, ns: str, sa: str
) -> None:
    """greenlight_lab.kube.tokens.service_account_kubeconfig gives a kubeconfig the official client
    loads; every call through it is the ServiceAccount's (bound to view here)."""
    rbac_api.create_namespaced_role_binding(
        ns, _binding("view", "ClusterRole", "view", {"kind": "ServiceAccount", "name": sa})
    )
    kubeconfig = service_account_kubeconfig(kube.url, ns, sa)
    assert kubeconfig["current-context"] == "lab-primary"
    assert kubeconfig["contexts"][0]["context"]["namespace"] == ns
    cfg = client.Configuration()
    config.load_kube_config_from_dict(kubeconfig, client_configuration=cfg)
    with client.ApiClient(cfg) as api_client:
        core = client.CoreV1Api(api_client)
        assert core.list_namespaced_service_account(ns).items[0].metadata.name == sa
        with pytest.raises(ApiException) as info:
            core.create_namespaced_config_map(ns, {"metadata": {"name": "x"}})
        assert info.value.status == 403
        with pytest.raises(ApiException) as info:
            core.list_namespaced_secret(ns)  # view does not read secrets
        assert info.value.status == 403
    with pytest.raises(RuntimeError, match="404"):
        service_account_kubeconfig(kube.url, ns, "nobody")
