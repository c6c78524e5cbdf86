"""Kubernetes RBAC for the lab API server, as pure functions over plain objects (no I/O).

What the kube-apiserver does between authentication and the handler, after its sources
(staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go,
plugin/pkg/auth/authorizer/rbac/rbac.go, pkg/apis/rbac/v1/evaluation_helpers.go,
staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go):

- ``request_attributes(method, path, query)``: the attributes of a request (verb incl. list,
  watch and deletecollection; API group; namespace; resource; subresource; name, also from a
  ``metadata.name=`` field selector on list/watch) or a non-resource path.
- ``authorize(user, attrs, policy)``: members of ``system:masters`` may do everything (the
  privileged-group authorizer, reason ""); everyone else is allowed when a rule of a role bound
  to them allows it: ClusterRoleBindings first, then the RoleBindings of the request's
  namespace (a RoleBinding to a ClusterRole grants in the binding's namespace only). A denied
  request carries a reason only when a binding named a role that does not exist, as the real
  authorizer does (``RBAC: role.rbac.authorization.k8s.io "x" not found``).
- ``rule_allows``: verbs and apiGroups (``*`` matches all), resources (``*``, exact
  ``resource/subresource``, ``*/subresource``), resourceNames (empty = all), nonResourceURLs
  (``*``, exact, or a prefix ending ``*``).
- ``forbidden(user, attrs, reason)``: the 403 Status message and details, word for word.
- ``validate_role`` / ``validate_binding``: the field errors the API server gives for bad
  Roles, ClusterRoles, RoleBindings and ClusterRoleBindings.
- ``BOOTSTRAP_CLUSTER_ROLES`` / ``BOOTSTRAP_CLUSTER_ROLE_BINDINGS``: the default policy a new
  cluster starts with (cluster-admin, admin, edit, view, system:discovery, system:basic-user,
  system:public-info-viewer), trimmed to the resources the lab serves.

Not modelled: aggregated ClusterRoles (aggregationRule is stored but its rules are not
gathered), and the escalation check on writes of roles and bindings (a service account that
may create Roles may create any Role).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]
GROUP = "rbac.authorization.k8s.io"
SA_PREFIX = "system:serviceaccount:"
MASTERS = "system:masters"


# --- identities -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """Who a request acts as: a user name and its groups (uid for service accounts)."""

    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def privileged(self) -> bool:
        """Members of system:masters pass every authorization check."""
        return MASTERS in self.groups

    def to_user_info(self) -> Obj:
        """The authentication.k8s.io UserInfo object (as SelfSubjectReview answers it)."""
        out: Obj = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = {k: list(v) for k, v in self.extra.items()}
        return out


ADMIN = UserInfo("system:admin", (MASTERS, "system:authenticated"))


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    """The identity a ServiceAccount's token authenticates as."""
    return UserInfo(
        f"{SA_PREFIX}{namespace}:{name}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        uid,
    )


# --- request attributes -----------------------------------------------------------------------


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do: a resource request, or a non-resource ``path``."""

    verb: str
    resource_request: bool = True
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""

    @property
    def combined_resource(self) -> str:
        """``deployments/scale``, or just the resource."""
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})


def _exact_name(field_selector: str) -> str:
    """The name a field selector requires exactly (``metadata.name=x``), else ""."""
    names = []
    for part in field_selector.split(","):
        key, sep, value = part.partition("==") if "==" in part else part.partition("=")
        if sep and not key.endswith("!") and key.strip() == "metadata.name":
            names.append(value.strip())
    if len(names) == 1 and names[0] and "/" not in names[0] and names[0] not in (".", ".."):
        return names[0]
    return ""


def request_attributes(method: str, path: str, query: Mapping[str, str]) -> Attributes:
    """The authorization attributes of an HTTP request, as the API server's RequestInfo parses them."""
    method = method.upper()
    parts = [p for p in path.split("/") if p]
    nonresource = Attributes(verb=method.lower(), resource_request=False, path=path or "/")
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return nonresource
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return nonresource
        group, rest = rest[0], rest[1:]
    version, rest = rest[0], rest[1:]
    if rest[0] in _SPECIAL_VERBS and len(rest) >= 2:
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) >= 2 else ""
    subresource = rest[2] if len(rest) >= 3 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if query.get("watch") in ("1", "true", "True") else "list"
    if not name and verb in ("list", "watch"):
        name = _exact_name(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(verb, True, group, version, namespace, resource, subresource, name, path)


def attributes_from_review(spec: Obj) -> Attributes:
    """The attributes a (Self)SubjectAccessReview's spec asks about."""
    if spec.get("resourceAttributes") is not None:
        ra = spec["resourceAttributes"] or {}
        return Attributes(
            verb=str(ra.get("verb") or ""),
            api_group=str(ra.get("group") or ""),
            api_version=str(ra.get("version") or ""),
            namespace=str(ra.get("namespace") or ""),
            resource=str(ra.get("resource") or ""),
            subresource=str(ra.get("subresource") or ""),
            name=str(ra.get("name") or ""),
        )
    nra = spec.get("nonResourceAttributes") or {}
    return Attributes(
        verb=str(nra.get("verb") or ""), resource_request=False, path=str(nra.get("path") or "")
    )


# --- rules ------------------------------------------------------------------------------------


def _has(values: Iterable[str] | None, wanted: str) -> bool:
    values = list(values or ())
    return "*" in values or wanted in values


def resource_matches(rule: Obj, combined: str, subresource: str) -> bool:
    """A rule's resources hold ``*``, the exact ``resource[/subresource]``, or ``*/subresource``."""
    for r in rule.get("resources") or ():
        if r in ("*", combined):
            return True
        if subresource and r == f"*/{subresource}":
            return True
    return False


def non_resource_url_matches(rule: Obj, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or ():
        if url in ("*", path) or (url.endswith("*") and path.startswith(url[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Obj) -> bool:
    """Whether one PolicyRule allows the request."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return non_resource_url_matches(rule, attrs.path)
    names = rule.get("resourceNames") or ()
    return (
        _has(rule.get("apiGroups"), attrs.api_group)
        and resource_matches(rule, attrs.combined_resource, attrs.subresource)
        and (not names or attrs.name in names)
    )


def applies_to_user(user: UserInfo, subject: Obj, namespace: str) -> bool:
    """Whether a binding subject is this user; a ServiceAccount subject without a namespace is
    in the binding's namespace (none for a ClusterRoleBinding: then it matches nobody)."""
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_ns = subject.get("namespace") or namespace
        return bool(sa_ns) and user.name == f"{SA_PREFIX}{sa_ns}:{name}"
    return False


def describe_subject(subject: Obj, binding_namespace: str) -> str:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f'{kind} "{name}/{subject.get("namespace") or binding_namespace}"'
    return f'{kind} "{name}"'


# --- the authorizer ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """A snapshot of a cluster's RBAC objects: ClusterRoles by name, Roles by (namespace, name),
    every ClusterRoleBinding and the RoleBindings of the namespace being asked about."""

    cluster_roles: Mapping[str, Obj] = field(default_factory=dict)
    roles: Mapping[tuple[str, str], Obj] = field(default_factory=dict)
    cluster_role_bindings: Sequence[Obj] = ()
    role_bindings: Sequence[Obj] = ()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""
    errors: tuple[str, ...] = ()


def _role_rules(policy: Policy, ref: Obj, binding_namespace: str) -> tuple[list[Obj], str | None]:
    """The rules a roleRef points at, or an error when the role does not exist."""
    kind, name = ref.get("kind"), ref.get("name", "")
    if kind == "ClusterRole":
        role = policy.cluster_roles.get(name)
        missing = f'clusterrole.{GROUP} "{name}" not found'
    elif kind == "Role" and binding_namespace:
        role = policy.roles.get((binding_namespace, name))
        missing = f'role.{GROUP} "{name}" not found'
    else:
        return [], f"unsupported role reference kind: {kind!r}"
    if role is None:
        return [], missing
    return list(role.get("rules") or ()), None


def _bindings(policy: Policy, namespace: str) -> Iterable[tuple[Obj, str, str]]:
    """(binding, binding namespace, description prefix), in the order the authorizer visits them."""
    for b in sorted(policy.cluster_role_bindings, key=lambda o: o["metadata"]["name"]):
        yield b, "", f'ClusterRoleBinding "{b["metadata"]["name"]}"'
    if namespace:
        rbs = [b for b in policy.role_bindings if b["metadata"].get("namespace") == namespace]
        for b in sorted(rbs, key=lambda o: o["metadata"]["name"]):
            yield b, namespace, f'RoleBinding "{b["metadata"]["name"]}/{namespace}"'


def authorize(user: UserInfo, attrs: Attributes, policy: Policy) -> Decision:
    """Allow or deny, with the reason the API server reports (see module docstring)."""
    if user.privileged:
        return Decision(True)
    errors: list[str] = []
    for binding, binding_ns, described in _bindings(policy, attrs.namespace):
        subject = next(
            (s for s in binding.get("subjects") or () if applies_to_user(user, s, binding_ns)), None
        )
        if subject is None:
            continue
        ref = binding.get("roleRef") or {}
        rules, error = _role_rules(policy, ref, binding_ns)
        if error is not None:
            errors.append(error)
            continue
        if any(rule_allows(attrs, r) for r in rules):
            reason = (
                f'RBAC: allowed by {described} of {ref.get("kind")} "{ref.get("name")}" '
                f"to {describe_subject(subject, binding_ns)}"
            )
            return Decision(True, reason)
    reason = ""
    if errors:
        joined = errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"
        reason = f"RBAC: {joined}"
    return Decision(False, reason, tuple(errors))


def rules_for(user: UserInfo, namespace: str, policy: Policy) -> tuple[list[Obj], list[str]]:
    """Every rule that applies to ``user`` in ``namespace`` (cluster-wide ones included), and
    the errors met (missing roles): what a SelfSubjectRulesReview answers."""
    if user.privileged:
        return [
            {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
            {"verbs": ["*"], "nonResourceURLs": ["*"]},
        ], []
    rules: list[Obj] = []
    errors: list[str] = []
    for binding, binding_ns, _ in _bindings(policy, namespace):
        if not any(applies_to_user(user, s, binding_ns) for s in binding.get("subjects") or ()):
            continue
        found, error = _role_rules(policy, binding.get("roleRef") or {}, binding_ns)
        if error is not None:
            errors.append(error)
        rules.extend(found)
    return rules, errors


# --- the 403 ----------------------------------------------------------------------------------


def forbidden(user: UserInfo, attrs: Attributes, reason: str = "") -> tuple[str, Obj]:
    """The message and details of the 403 Status the API server answers a denied request with."""
    if not attrs.resource_request:
        msg = f'User "{user.name}" cannot {attrs.verb} path "{attrs.path}"'
        return f"forbidden: {msg}" + (f": {reason}" if reason else ""), {}
    what = f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
    msg = (
        f'User "{user.name}" cannot {attrs.verb} resource "{attrs.combined_resource}" '
        f'in API group "{attrs.api_group}" {what}'
    )
    if reason:
        msg = f"{msg}: {reason}"
    qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
    subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
    details: Obj = {"kind": attrs.resource}
    if attrs.name:
        details["name"] = attrs.name
    if attrs.api_group:
        details["group"] = attrs.api_group
    return f"{subject} is forbidden: {msg}", details


# --- validation -------------------------------------------------------------------------------

Problem = tuple[str, str, str]  # (field, reason, message), as store.invalid takes them


def validate_role(obj: Obj, namespaced: bool) -> list[Problem]:
    """Field errors of a Role (``namespaced``) or ClusterRole."""
    out: list[Problem] = []
    rules = obj.get("rules")
    if rules is None:
        return out
    if not isinstance(rules, list):
        return [("rules", "FieldValueInvalid", "Invalid value: must be a list")]
    for i, rule in enumerate(rules):
        path = f"rules[{i}]"
        if not isinstance(rule, dict):
            out.append((path, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        if not rule.get("verbs"):
            out.append(
                (
                    f"{path}.verbs",
                    "FieldValueRequired",
                    "Required value: verbs must contain at least one value",
                )
            )
        urls = rule.get("nonResourceURLs") or []
        if urls:
            if namespaced:
                out.append(
                    (
                        f"{path}.nonResourceURLs",
                        "FieldValueInvalid",
                        f"Invalid value: {urls!r}: namespaced rules cannot apply to non-resource URLs",
                    )
                )
            if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
                out.append(
                    (
                        f"{path}.nonResourceURLs",
                        "FieldValueInvalid",
                        f"Invalid value: {urls!r}: rules cannot apply to both regular resources and "
                        "non-resource URLs",
                    )
                )
            continue
        if not rule.get("apiGroups"):
            out.append(
                (
                    f"{path}.apiGroups",
                    "FieldValueRequired",
                    "Required value: resource rules must supply at least one api group",
                )
            )
        if not rule.get("resources"):
            out.append(
                (
                    f"{path}.resources",
                    "FieldValueRequired",
                    "Required value: resource rules must supply at least one resource",
                )
            )
    return out


def validate_binding(obj: Obj, namespaced: bool, old: Obj | None = None) -> list[Problem]:
    """Field errors of a RoleBinding (``namespaced``) or ClusterRoleBinding; ``old`` is the
    stored binding on update (its roleRef cannot change)."""
    out: list[Problem] = []
    ref = obj.get("roleRef")
    kinds = ("Role", "ClusterRole") if namespaced else ("ClusterRole",)
    if not isinstance(ref, dict) or not ref:
        out.append(("roleRef", "FieldValueRequired", "Required value"))
    else:
        if ref.get("apiGroup") != GROUP:
            out.append(
                (
                    "roleRef.apiGroup",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{ref.get("apiGroup", "")}": supported values: "{GROUP}"',
                )
            )
        if ref.get("kind") not in kinds:
            supported = ", ".join(f'"{k}"' for k in kinds)
            out.append(
                (
                    "roleRef.kind",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{ref.get("kind", "")}": supported values: {supported}',
                )
            )
        if not ref.get("name"):
            out.append(("roleRef.name", "FieldValueRequired", "Required value"))
        if old is not None and old.get("roleRef") != ref:
            out.append(("roleRef", "FieldValueInvalid", f"Invalid value: {ref!r}: cannot change roleRef"))
    subjects = obj.get("subjects") or []
    if not isinstance(subjects, list):
        return [*out, ("subjects", "FieldValueInvalid", "Invalid value: must be a list")]
    for i, s in enumerate(subjects):
        path = f"subjects[{i}]"
        if not isinstance(s, dict):
            out.append((path, "FieldValueInvalid", "Invalid value: must be an object"))
            continue
        if not s.get("name"):
            out.append((f"{path}.name", "FieldValueRequired", "Required value"))
        kind = s.get("kind")
        if kind == "ServiceAccount":
            if s.get("apiGroup"):
                out.append(
                    (
                        f"{path}.apiGroup",
                        "FieldValueNotSupported",
                        f'Unsupported value: "{s["apiGroup"]}": supported values: ""',
                    )
                )
            if not namespaced and not s.get("namespace"):
                out.append((f"{path}.namespace", "FieldValueRequired", "Required value"))
        elif kind in ("User", "Group"):
            if s.get("apiGroup") != GROUP:
                out.append(
                    (
                        f"{path}.apiGroup",
                        "FieldValueNotSupported",
                        f'Unsupported value: "{s.get("apiGroup", "")}": supported values: "{GROUP}"',
                    )
                )
        else:
            out.append(
                (
                    f"{path}.kind",
                    "FieldValueNotSupported",
                    f'Unsupported value: "{kind or ""}": supported values: "ServiceAccount", "User", "Group"',
                )
            )
    return out


def default_binding(obj: Obj) -> None:
    """Subjects of kind User/Group default their apiGroup, as the API server's defaulting does."""
    for s in obj.get("subjects") or []:
        if isinstance(s, dict) and s.get("kind") in ("User", "Group"):
            s.setdefault("apiGroup", GROUP)


# --- the default policy -----------------------------------------------------------------------

_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_CORE_APP = [
    "pods",
    "pods/log",
    "pods/status",
    "services",
    "services/status",
    "endpoints",
    "configmaps",
    "events",
    "persistentvolumeclaims",
    "persistentvolumeclaims/status",
    "serviceaccounts",
]
_APPS = ["deployments", "deployments/scale", "deployments/status", "replicasets", "replicasets/status"]


def _cluster_role(name: str, rules: list[Obj]) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    }


def _cluster_role_binding(name: str, role: str, groups: list[str]) -> Obj:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": g} for g in groups],
    }


def _view_rules() -> list[Obj]:
    return [
        {"apiGroups": [""], "resources": [*_CORE_APP, "namespaces", "namespaces/status"], "verbs": _READ},
        {"apiGroups": ["apps"], "resources": _APPS, "verbs": _READ},
        {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": _READ},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _READ},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": _READ},
    ]


def _edit_rules() -> list[Obj]:
    return [
        *_view_rules(),
        {"apiGroups": [""], "resources": ["secrets"], "verbs": [*_READ, *_WRITE]},
        {
            "apiGroups": [""],
            "resources": [
                "pods",
                "services",
                "services/proxy",
                "endpoints",
                "configmaps",
                "persistentvolumeclaims",
                "serviceaccounts",
            ],
            "verbs": _WRITE,
        },
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        {
            "apiGroups": ["apps"],
            "resources": ["deployments", "deployments/scale", "replicasets"],
            "verbs": _WRITE,
        },
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": _WRITE},
        {"apiGroups": ["autoscaling"], "resources": ["horizontalpodautoscalers"], "verbs": _WRITE},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": _WRITE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["ingresses"], "verbs": _WRITE},
    ]


def _admin_rules() -> list[Obj]:
    return [
        *_edit_rules(),
        {"apiGroups": [GROUP], "resources": ["roles", "rolebindings"], "verbs": [*_READ, *_WRITE]},
        {
            "apiGroups": ["authorization.k8s.io"],
            "resources": ["localsubjectaccessreviews"],
            "verbs": ["create"],
        },
    ]


BOOTSTRAP_CLUSTER_ROLES: tuple[Obj, ...] = (
    _cluster_role(
        "cluster-admin",
        [
            {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
            {"nonResourceURLs": ["*"], "verbs": ["*"]},
        ],
    ),
    _cluster_role("admin", _admin_rules()),
    _cluster_role("edit", _edit_rules()),
    _cluster_role("view", _view_rules()),
    _cluster_role(
        "system:discovery",
        [
            {
                "nonResourceURLs": [
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
                "verbs": ["get"],
            }
        ],
    ),
    _cluster_role(
        "system:basic-user",
        [
            {
                "apiGroups": ["authorization.k8s.io"],
                "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                "verbs": ["create"],
            },
            {
                "apiGroups": ["authentication.k8s.io"],
                "resources": ["selfsubjectreviews"],
                "verbs": ["create"],
            },
        ],
    ),
    _cluster_role(
        "system:public-info-viewer",
        [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}],
    ),
)

BOOTSTRAP_CLUSTER_ROLE_BINDINGS: tuple[Obj, ...] = (
    _cluster_role_binding("cluster-admin", "cluster-admin", [MASTERS]),
    _cluster_role_binding("system:discovery", "system:discovery", ["system:authenticated"]),
    _cluster_role_binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
    _cluster_role_binding(
        "system:public-info-viewer",
        "system:public-info-viewer",
        ["system:authenticated", "system:unauthenticated"],
    ),
)
