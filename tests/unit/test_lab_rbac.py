"""The lab's Kubernetes RBAC evaluation (greenlight_lab.kube.rbac), as tables of cases."""

from __future__ import annotations

from typing import Any

import pytest

from greenlight_lab.kube import rbac
from greenlight_lab.kube.rbac import ADMIN, Attributes, Policy, UserInfo, service_account_user

SA = service_account_user("apps", "deployer")
OTHER_SA = service_account_user("other", "deployer")
ALICE = UserInfo("alice", ("devs", "system:authenticated"))
G = rbac.GROUP


def res(
    verb: str, resource: str, ns: str = "apps", group: str = "", name: str = "", sub: str = ""
) -> Attributes:
    return Attributes(verb, True, group, "v1", ns, resource, sub, name)


def path(verb: str, p: str) -> Attributes:
    return Attributes(verb, resource_request=False, path=p)


# --- request attributes -----------------------------------------------------------------------

ATTRIBUTE_CASES = [
    ("GET", "/api/v1/namespaces/apps/pods", {}, res("list", "pods")),
    ("GET", "/api/v1/namespaces/apps/pods", {"watch": "true"}, res("watch", "pods")),
    ("GET", "/api/v1/namespaces/apps/pods/p1", {}, res("get", "pods", name="p1")),
    ("GET", "/api/v1/pods", {}, res("list", "pods", ns="")),
    (
        "GET",
        "/api/v1/namespaces/apps/pods",
        {"fieldSelector": "metadata.name=p1", "watch": "1"},
        res("watch", "pods", name="p1"),
    ),
    ("GET", "/api/v1/namespaces/apps/pods", {"fieldSelector": "metadata.name!=p1"}, res("list", "pods")),
    ("POST", "/api/v1/namespaces/apps/configmaps", {}, res("create", "configmaps")),
    (
        "PUT",
        "/apis/apps/v1/namespaces/apps/deployments/web",
        {},
        res("update", "deployments", group="apps", name="web"),
    ),
    (
        "PATCH",
        "/apis/apps/v1/namespaces/apps/deployments/web/scale",
        {},
        res("patch", "deployments", group="apps", name="web", sub="scale"),
    ),
    ("DELETE", "/api/v1/namespaces/apps/pods/p1", {}, res("delete", "pods", name="p1")),
    ("DELETE", "/api/v1/namespaces/apps/pods", {}, res("deletecollection", "pods")),
    (
        "GET",
        "/api/v1/namespaces/apps/services/web/proxy/healthz",
        {},
        res("get", "services", name="web", sub="proxy"),
    ),
    ("GET", "/api/v1/namespaces/apps/pods/p1/log", {}, res("get", "pods", name="p1", sub="log")),
    (
        "POST",
        "/api/v1/namespaces/apps/serviceaccounts/deployer/token",
        {},
        res("create", "serviceaccounts", name="deployer", sub="token"),
    ),
    # a namespace is in itself: a RoleBinding in "apps" may grant get on namespace "apps"
    ("GET", "/api/v1/namespaces/apps", {}, res("get", "namespaces", name="apps")),
    ("PUT", "/api/v1/namespaces/apps/status", {}, res("update", "namespaces", name="apps", sub="status")),
    ("GET", "/api/v1/namespaces", {}, res("list", "namespaces", ns="")),
    (
        "GET",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles/view",
        {},
        res("get", "clusterroles", ns="", group=G, name="view"),
    ),
    (
        "POST",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        {},
        res("create", "selfsubjectaccessreviews", ns="", group="authorization.k8s.io"),
    ),
    ("GET", "/api", {}, path("get", "/api")),
    ("GET", "/api/v1", {}, path("get", "/api/v1")),
    ("GET", "/apis/apps/v1", {}, path("get", "/apis/apps/v1")),
    ("GET", "/version", {}, path("get", "/version")),
    ("POST", "/healthz", {}, path("post", "/healthz")),
]


@pytest.mark.parametrize(("method", "url", "query", "expected"), ATTRIBUTE_CASES)
def test_request_attributes_follow_the_api_servers_request_info(
    method: str, url: str, query: dict[str, str], expected: Attributes
) -> None:
    """Verb, group, namespace, resource, subresource and name come out of a request as the
    kube-apiserver's RequestInfo resolver has them."""
    got = rbac.request_attributes(method, url, query)
    if expected.resource_request:
        expected = Attributes(**{**expected.__dict__, "path": url})
    assert got == expected


# --- one rule ---------------------------------------------------------------------------------


def rule(
    verbs: list[str], resources: list[str], groups: list[str] | None = None, **more: Any
) -> dict[str, Any]:
    return {"verbs": verbs, "apiGroups": [""] if groups is None else groups, "resources": resources, **more}


RULE_CASES = [
    ("exact", rule(["get"], ["pods"]), res("get", "pods"), True),
    ("other verb", rule(["get"], ["pods"]), res("list", "pods"), False),
    ("verb star", rule(["*"], ["pods"]), res("deletecollection", "pods"), True),
    ("other group", rule(["get"], ["deployments"]), res("get", "deployments", group="apps"), False),
    ("group star", rule(["get"], ["deployments"], ["*"]), res("get", "deployments", group="apps"), True),
    ("resource star", rule(["get"], ["*"], ["apps"]), res("get", "replicasets", group="apps"), True),
    (
        "resource does not grant its subresource",
        rule(["get"], ["services"]),
        res("get", "services", name="w", sub="proxy"),
        False,
    ),
    (
        "subresource exact",
        rule(["get"], ["services/proxy"]),
        res("get", "services", name="w", sub="proxy"),
        True,
    ),
    (
        "subresource does not grant the resource",
        rule(["get"], ["services/proxy"]),
        res("get", "services", name="w"),
        False,
    ),
    (
        "star slash subresource",
        rule(["patch"], ["*/scale"], ["apps"]),
        res("patch", "deployments", group="apps", name="w", sub="scale"),
        True,
    ),
    (
        "star slash other subresource",
        rule(["patch"], ["*/scale"], ["apps"]),
        res("patch", "deployments", group="apps", name="w", sub="status"),
        False,
    ),
    (
        "resource star covers subresources",
        rule(["get"], ["*"]),
        res("get", "pods", name="p", sub="log"),
        True,
    ),
    (
        "resourceNames hit",
        rule(["get"], ["configmaps"], resourceNames=["cfg"]),
        res("get", "configmaps", name="cfg"),
        True,
    ),
    (
        "resourceNames miss",
        rule(["get"], ["configmaps"], resourceNames=["cfg"]),
        res("get", "configmaps", name="x"),
        False,
    ),
    (
        "resourceNames never grant list",
        rule(["list"], ["configmaps"], resourceNames=["cfg"]),
        res("list", "configmaps"),
        False,
    ),
    (
        "resourceNames grant a watch of one name",
        rule(["watch"], ["configmaps"], resourceNames=["cfg"]),
        res("watch", "configmaps", name="cfg"),
        True,
    ),
    (
        "resourceNames never grant create",
        rule(["create"], ["configmaps"], resourceNames=["cfg"]),
        res("create", "configmaps"),
        False,
    ),
    ("resource rule never grants a path", rule(["get"], ["*"], ["*"]), path("get", "/api"), False),
    ("url exact", {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, path("get", "/healthz"), True),
    (
        "url prefix star",
        {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
        path("get", "/apis/apps/v1"),
        True,
    ),
    (
        "url prefix star is not the bare prefix",
        {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]},
        path("get", "/apis"),
        False,
    ),
    ("url star", {"verbs": ["*"], "nonResourceURLs": ["*"]}, path("post", "/anything"), True),
    (
        "url rule never grants a resource",
        {"verbs": ["*"], "nonResourceURLs": ["*"]},
        res("get", "pods"),
        False,
    ),
]


@pytest.mark.parametrize(
    ("case", "policy_rule", "attrs", "allowed"), RULE_CASES, ids=[c[0] for c in RULE_CASES]
)
def test_rule_allows(case: str, policy_rule: dict[str, Any], attrs: Attributes, allowed: bool) -> None:
    """One PolicyRule matches verbs, groups, resources (with subresources), names and URLs as RBAC does."""
    assert rbac.rule_allows(attrs, policy_rule) is allowed


# --- subjects ---------------------------------------------------------------------------------

SUBJECT_CASES = [
    ({"kind": "ServiceAccount", "name": "deployer", "namespace": "apps"}, "", SA, True),
    ({"kind": "ServiceAccount", "name": "deployer"}, "apps", SA, True),  # defaults to the binding's namespace
    ({"kind": "ServiceAccount", "name": "deployer"}, "", SA, False),  # ClusterRoleBinding: no namespace
    ({"kind": "ServiceAccount", "name": "deployer"}, "apps", OTHER_SA, False),
    ({"kind": "ServiceAccount", "name": "other", "namespace": "apps"}, "", SA, False),
    ({"kind": "User", "name": "system:serviceaccount:apps:deployer", "apiGroup": G}, "", SA, True),
    ({"kind": "Group", "name": "system:serviceaccounts:apps", "apiGroup": G}, "", SA, True),
    ({"kind": "Group", "name": "system:serviceaccounts", "apiGroup": G}, "", OTHER_SA, True),
    ({"kind": "Group", "name": "system:serviceaccounts:apps", "apiGroup": G}, "", OTHER_SA, False),
    ({"kind": "User", "name": "alice", "apiGroup": G}, "", ALICE, True),
    ({"kind": "Group", "name": "devs", "apiGroup": G}, "", ALICE, True),
    ({"kind": "User", "name": "devs", "apiGroup": G}, "", ALICE, False),
    ({"kind": "Robot", "name": "alice"}, "", ALICE, False),
]


@pytest.mark.parametrize(("subject", "binding_ns", "user", "applies"), SUBJECT_CASES)
def test_applies_to_user(subject: dict[str, str], binding_ns: str, user: UserInfo, applies: bool) -> None:
    """A binding subject names a user, a group or a ServiceAccount (defaulting to the binding's namespace)."""
    assert rbac.applies_to_user(user, subject, binding_ns) is applies


def test_service_account_identity() -> None:
    """A ServiceAccount acts as system:serviceaccount:<ns>:<name> in the three groups a token gives."""
    assert SA.name == "system:serviceaccount:apps:deployer"
    assert SA.groups == ("system:serviceaccounts", "system:serviceaccounts:apps", "system:authenticated")
    assert not SA.privileged and ADMIN.privileged


# --- the authorizer over bindings -------------------------------------------------------------


def role(name: str, ns: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "rules": list(rules)}


def cluster_role(name: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "rules": list(rules)}


def binding(
    name: str, ns: str | None, kind: str, role_name: str, *subjects: dict[str, str]
) -> dict[str, Any]:
    meta = {"name": name} if ns is None else {"name": name, "namespace": ns}
    return {
        "metadata": meta,
        "roleRef": {"apiGroup": G, "kind": kind, "name": role_name},
        "subjects": list(subjects),
    }


SA_SUBJECT = {"kind": "ServiceAccount", "name": "deployer", "namespace": "apps"}
POLICY = Policy(
    cluster_roles={
        "scaler": cluster_role(
            "scaler", rule(["get", "patch"], ["deployments/scale", "deployments"], ["apps"])
        ),
        "pod-reader": cluster_role("pod-reader", rule(["get", "list", "watch"], ["pods"])),
        "ns-lister": cluster_role("ns-lister", rule(["list"], ["namespaces"])),
    },
    roles={
        ("apps", "proxy"): role("proxy", "apps", rule(["get"], ["services/proxy"], resourceNames=["web"])),
        ("apps", "cm"): role("cm", "apps", rule(["*"], ["configmaps"])),
        ("other", "cm"): role("cm", "other", rule(["*"], ["configmaps"])),
    },
    cluster_role_bindings=[
        binding("deployer-ns-lister", None, "ClusterRole", "ns-lister", SA_SUBJECT),
        binding(
            "dangling",
            None,
            "ClusterRole",
            "gone",
            {"kind": "Group", "name": "system:serviceaccounts", "apiGroup": G},
        ),
    ],
    role_bindings=[
        binding("scale", "apps", "ClusterRole", "scaler", {"kind": "ServiceAccount", "name": "deployer"}),
        binding("proxy", "apps", "Role", "proxy", SA_SUBJECT),
        binding("cm", "apps", "Role", "cm", {"kind": "User", "name": "alice", "apiGroup": G}),
        binding("reader", "other", "ClusterRole", "pod-reader", SA_SUBJECT),
        binding("cm-in-other", "other", "Role", "cm", SA_SUBJECT),
    ],
)


def _policy_for(namespace: str) -> Policy:
    """What the API server hands the authorizer: the RoleBindings of the request's namespace only."""
    return Policy(
        POLICY.cluster_roles,
        {k: v for k, v in POLICY.roles.items() if k[0] == namespace},
        POLICY.cluster_role_bindings,
        [b for b in POLICY.role_bindings if b["metadata"]["namespace"] == namespace],
    )


MISSING = 'RBAC: clusterrole.rbac.authorization.k8s.io "gone" not found'
AUTHORIZE_CASES = [
    (
        "RoleBinding to a ClusterRole grants in its namespace",
        SA,
        res("patch", "deployments", group="apps", name="web", sub="scale"),
        True,
        'RBAC: allowed by RoleBinding "scale/apps" of ClusterRole "scaler" to ServiceAccount "deployer/apps"',
    ),
    (
        "... and not in another",
        SA,
        res("patch", "deployments", ns="other", group="apps", name="web", sub="scale"),
        False,
        MISSING,
    ),
    ("... nor cluster-wide", SA, res("get", "deployments", ns="", group="apps", name="web"), False, MISSING),
    ("RoleBinding to a ClusterRole elsewhere", SA, res("list", "pods", ns="other"), True, None),
    ("pods in apps are not granted by the binding in other", SA, res("list", "pods"), False, MISSING),
    (
        "ClusterRoleBinding grants everywhere",
        SA,
        res("list", "namespaces", ns=""),
        True,
        'RBAC: allowed by ClusterRoleBinding "deployer-ns-lister" of ClusterRole "ns-lister" to ServiceAccount "deployer/apps"',
    ),
    (
        "Role with resourceNames: the named service",
        SA,
        res("get", "services", name="web", sub="proxy"),
        True,
        None,
    ),
    (
        "Role with resourceNames: another service",
        SA,
        res("get", "services", name="db", sub="proxy"),
        False,
        MISSING,
    ),
    ("a User subject", ALICE, res("delete", "configmaps", name="cfg"), True, None),
    (
        "a User subject, other namespace",
        ALICE,
        res("delete", "configmaps", ns="other", name="cfg"),
        False,
        "",
    ),
    ("same-named Role in another namespace", SA, res("create", "configmaps", ns="other"), True, None),
    ("same-named Role, this namespace, not bound to SA", SA, res("create", "configmaps"), False, MISSING),
    ("another SA of the same name", OTHER_SA, res("list", "pods", ns="other"), False, MISSING),
    ("system:masters may do anything", ADMIN, res("delete", "namespaces", ns="", name="apps"), True, ""),
    ("system:masters may reach any path", ADMIN, path("post", "/anything"), True, ""),
]


@pytest.mark.parametrize(
    ("case", "user", "attrs", "allowed", "reason"), AUTHORIZE_CASES, ids=[c[0] for c in AUTHORIZE_CASES]
)
def test_authorize(case: str, user: UserInfo, attrs: Attributes, allowed: bool, reason: str | None) -> None:
    """RBAC over bindings: RoleBindings grant in their namespace, ClusterRoleBindings everywhere,
    the reason names the binding that allowed, and a denial names the roles that were missing."""
    decision = rbac.authorize(user, attrs, _policy_for(attrs.namespace))
    assert decision.allowed is allowed
    if reason is not None:
        assert decision.reason == reason


def test_authorize_reports_every_missing_role() -> None:
    """Two bindings to missing roles: the reason lists both, as an aggregate error does."""
    policy = Policy(
        role_bindings=[
            binding("a", "apps", "Role", "nope", SA_SUBJECT),
            binding("b", "apps", "ClusterRole", "gone", SA_SUBJECT),
        ]
    )
    decision = rbac.authorize(SA, res("get", "pods", name="p"), policy)
    assert not decision.allowed
    assert decision.reason == (
        'RBAC: [role.rbac.authorization.k8s.io "nope" not found, '
        'clusterrole.rbac.authorization.k8s.io "gone" not found]'
    )


def test_bootstrap_policy_lets_any_authenticated_user_discover_and_ask() -> None:
    """The default bindings: discovery paths and SelfSubjectAccessReview for system:authenticated,
    nothing else; cluster-admin for system:masters."""
    policy = Policy(
        cluster_roles={r["metadata"]["name"]: r for r in rbac.BOOTSTRAP_CLUSTER_ROLES},
        cluster_role_bindings=list(rbac.BOOTSTRAP_CLUSTER_ROLE_BINDINGS),
    )
    for p in ("/api", "/api/v1", "/apis", "/apis/apps/v1", "/version"):
        assert rbac.authorize(SA, path("get", p), policy).allowed, p
    ssar = res("create", "selfsubjectaccessreviews", ns="", group="authorization.k8s.io")
    assert rbac.authorize(SA, ssar, policy).reason == (
        'RBAC: allowed by ClusterRoleBinding "system:basic-user" of ClusterRole "system:basic-user" '
        'to Group "system:authenticated"'
    )
    assert not rbac.authorize(SA, res("list", "pods"), policy).allowed
    assert not rbac.authorize(SA, path("get", "/metrics"), policy).allowed
    masters = UserInfo("root", ("system:masters",))
    assert rbac.rules_for(masters, "apps", policy)[0][0] == {
        "verbs": ["*"],
        "apiGroups": ["*"],
        "resources": ["*"],
    }


def test_rules_for_gathers_cluster_and_namespace_rules() -> None:
    """A rules review lists the rules of every binding that applies, and the roles it could not find."""
    rules, errors = rbac.rules_for(SA, "apps", _policy_for("apps"))
    assert rules == [
        rule(["list"], ["namespaces"]),
        rule(["get"], ["services/proxy"], resourceNames=["web"]),
        rule(["get", "patch"], ["deployments/scale", "deployments"], ["apps"]),
    ]
    assert errors == ['clusterrole.rbac.authorization.k8s.io "gone" not found']


# --- the 403 ----------------------------------------------------------------------------------

FORBIDDEN_CASES = [
    (
        res("get", "pods", name="p1"),
        "",
        'pods "p1" is forbidden: User "system:serviceaccount:apps:deployer" cannot get resource "pods" '
        'in API group "" in the namespace "apps"',
        {"kind": "pods", "name": "p1"},
    ),
    (
        res("list", "deployments", ns="", group="apps"),
        "",
        'deployments.apps is forbidden: User "system:serviceaccount:apps:deployer" cannot list resource '
        '"deployments" in API group "apps" at the cluster scope',
        {"kind": "deployments", "group": "apps"},
    ),
    (
        res("patch", "deployments", group="apps", name="web", sub="scale"),
        MISSING,
        'deployments.apps "web" is forbidden: User "system:serviceaccount:apps:deployer" cannot patch '
        f'resource "deployments/scale" in API group "apps" in the namespace "apps": {MISSING}',
        {"kind": "deployments", "name": "web", "group": "apps"},
    ),
    (
        path("get", "/metrics"),
        "",
        'forbidden: User "system:serviceaccount:apps:deployer" cannot get path "/metrics"',
        {},
    ),
]


@pytest.mark.parametrize(("attrs", "reason", "message", "details"), FORBIDDEN_CASES)
def test_forbidden_message_is_the_api_servers(
    attrs: Attributes, reason: str, message: str, details: dict[str, str]
) -> None:
    """A denied request's Status message and details read as the kube-apiserver's."""
    assert rbac.forbidden(SA, attrs, reason) == (message, details)


# --- validation -------------------------------------------------------------------------------

ROLE_CASES = [
    ("fine", rule(["get"], ["pods"]), True, []),
    ("no verbs", rule([], ["pods"]), True, ["rules[0].verbs"]),
    ("no groups", {"verbs": ["get"], "resources": ["pods"]}, True, ["rules[0].apiGroups"]),
    ("no resources", {"verbs": ["get"], "apiGroups": [""]}, True, ["rules[0].resources"]),
    (
        "urls in a Role",
        {"verbs": ["get"], "nonResourceURLs": ["/healthz"]},
        True,
        ["rules[0].nonResourceURLs"],
    ),
    ("urls in a ClusterRole", {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, False, []),
    (
        "urls and resources",
        {"verbs": ["get"], "nonResourceURLs": ["/healthz"], "apiGroups": [""], "resources": ["pods"]},
        False,
        ["rules[0].nonResourceURLs"],
    ),
]


@pytest.mark.parametrize(
    ("case", "one_rule", "namespaced", "fields"), ROLE_CASES, ids=[c[0] for c in ROLE_CASES]
)
def test_validate_role(case: str, one_rule: dict[str, Any], namespaced: bool, fields: list[str]) -> None:
    """Bad rules are refused field by field, as the API server's validation does."""
    assert [f for f, _, _ in rbac.validate_role({"rules": [one_rule]}, namespaced)] == fields


REF = {"apiGroup": G, "kind": "Role", "name": "r"}
CLUSTER_REF = {"apiGroup": G, "kind": "ClusterRole", "name": "r"}
SA_NO_NS = {"kind": "ServiceAccount", "name": "sa"}
BINDING_CASES = [
    ("fine", {"roleRef": REF, "subjects": [SA_NO_NS]}, True, None, []),
    ("no roleRef", {"subjects": [SA_NO_NS]}, True, None, ["roleRef"]),
    ("ClusterRoleBinding to a Role", {"roleRef": REF}, False, None, ["roleRef.kind"]),
    ("wrong apiGroup", {"roleRef": {**REF, "apiGroup": "rbac"}}, True, None, ["roleRef.apiGroup"]),
    ("no role name", {"roleRef": {**REF, "name": ""}}, True, None, ["roleRef.name"]),
    (
        "SA without namespace in a ClusterRoleBinding",
        {"roleRef": CLUSTER_REF, "subjects": [SA_NO_NS]},
        False,
        None,
        ["subjects[0].namespace"],
    ),
    (
        "user without apiGroup",
        {"roleRef": REF, "subjects": [{"kind": "User", "name": "u"}]},
        True,
        None,
        ["subjects[0].apiGroup"],
    ),
    (
        "unknown subject kind",
        {"roleRef": REF, "subjects": [{"kind": "Robot", "name": "r"}]},
        True,
        None,
        ["subjects[0].kind"],
    ),
    (
        "subject without a name",
        {"roleRef": REF, "subjects": [{"kind": "ServiceAccount"}]},
        True,
        None,
        ["subjects[0].name"],
    ),
    ("roleRef changed", {"roleRef": CLUSTER_REF}, True, {"roleRef": REF}, ["roleRef"]),
    ("roleRef kept", {"roleRef": REF, "subjects": []}, True, {"roleRef": REF}, []),
]


@pytest.mark.parametrize(
    ("case", "obj", "namespaced", "old", "fields"), BINDING_CASES, ids=[c[0] for c in BINDING_CASES]
)
def test_validate_binding(
    case: str, obj: dict[str, Any], namespaced: bool, old: dict[str, Any] | None, fields: list[str]
) -> None:
    """Bad bindings are refused field by field; a binding's roleRef cannot change."""
    assert [f for f, _, _ in rbac.validate_binding(obj, namespaced, old)] == fields
