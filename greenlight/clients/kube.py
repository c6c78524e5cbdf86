"""The only module that talks to the Kubernetes API (the official client).

Objects go in and come out as plain dicts, exactly as the API serves them (camelCase), so
that ``greenlight.core`` can decide over them without importing the client. Every call
carries a timeout. :func:`translate` maps ``ApiException`` (and connection failures) onto
``greenlight.errors``: 404 NotFound, 409 Conflict, 401/403 Forbidden, 400/422 InputInvalid,
429/5xx/timeouts TransientError with the server's ``Retry-After``; the HTTP status stays on the
error (``status``). The client's own retries (:data:`RETRIES`) cover connection and read
failures only: a 429 or 503 with ``Retry-After`` comes back at once, for the task's retry policy.
"""

from __future__ import annotations

import builtins
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from greenlight.errors import (
    Conflict,
    Forbidden,
    GreenlightError,
    InputInvalid,
    NotFound,
    PermanentError,
    TransientError,
)

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    plural: str
    api: str  # class name in kubernetes.client
    suffix: str  # method suffix: read_<suffix>, list_<suffix>, ...
    namespaced: bool = True
    group: str = ""  # a custom resource's API group (served by CustomObjectsApi), with its version
    version: str = ""


RESOURCES: dict[str, Resource] = {
    r.plural: r
    for r in [
        Resource("namespaces", "CoreV1Api", "namespace", namespaced=False),
        Resource("pods", "CoreV1Api", "namespaced_pod"),
        Resource("services", "CoreV1Api", "namespaced_service"),
        Resource("endpoints", "CoreV1Api", "namespaced_endpoints"),
        Resource("configmaps", "CoreV1Api", "namespaced_config_map"),
        Resource("secrets", "CoreV1Api", "namespaced_secret"),
        Resource("events", "CoreV1Api", "namespaced_event"),
        Resource("deployments", "AppsV1Api", "namespaced_deployment"),
        Resource("jobs", "BatchV1Api", "namespaced_job"),
        Resource("horizontalpodautoscalers", "AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
        Resource("poddisruptionbudgets", "PolicyV1Api", "namespaced_pod_disruption_budget"),
        Resource("ingresses", "NetworkingV1Api", "namespaced_ingress"),
        # Gateway API (a CRD on most clusters, built into GKE's): through CustomObjectsApi
        Resource(
            "httproutes",
            "CustomObjectsApi",
            "namespaced_custom_object",
            True,
            "gateway.networking.k8s.io",
            "v1",
        ),
        Resource(
            "gateways",
            "CustomObjectsApi",
            "namespaced_custom_object",
            True,
            "gateway.networking.k8s.io",
            "v1",
        ),
    ]
}
# CustomObjectsApi's verbs take (group, version, namespace, plural[, name]) where the typed APIs
# take ([name,] namespace): "read" is its "get"
_CUSTOM_VERBS = {"read": "get", "list": "list", "create": "create", "replace": "replace", "patch": "patch",
                 "delete": "delete"}  # fmt: skip

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


def _retry_after(e: ApiException) -> float | None:
    headers = e.headers or {}
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _status_message(e: ApiException) -> str:
    try:
        body = json.loads(e.body or "")
        if isinstance(body, dict) and body.get("message"):
            return str(body["message"])
    except (ValueError, TypeError):
        pass
    return str(e.reason or "no message")


def translate(e: BaseException, what: str) -> GreenlightError:
    """One mapping from client failures to Greenlight errors; ``what`` names the object or call."""
    if isinstance(e, ApiException):
        status = e.status or 0
        msg = f"{what}: {_status_message(e)} (HTTP {status})"
        kept = status or None  # 0: the client got no answer
        if status == 404:
            return NotFound(msg, status=kept)
        if status == 409:
            return Conflict(msg, status=kept)
        if status in (401, 403):
            return Forbidden(msg, status=kept)
        if status in (400, 422):
            return InputInvalid(msg, status=kept)
        if status == 429 or status >= 500 or status == 0:
            return TransientError(msg, retry_after=_retry_after(e), status=kept)
        return PermanentError(msg, status=kept)
    if isinstance(e, urllib3.exceptions.HTTPError | OSError | TimeoutError):
        return TransientError(f"{what}: Kubernetes API unreachable or too slow: {type(e).__name__}: {e}")
    return PermanentError(f"{what}: {type(e).__name__}: {e}")


IN_POD_ENV = "KUBERNETES_SERVICE_HOST"  # the kubelet sets it in every container of a pod


@dataclass(frozen=True)
class ConfigChoice:
    """How to reach a cluster: the pod's service account, or a kubeconfig file and context."""

    in_cluster: bool
    kubeconfig: str | None  # the file to read; None: the client's default (~/.kube/config)
    context: str | None  # None: the kubeconfig's current context
    reason: str

    def describe(self) -> str:
        if self.in_cluster:
            return "in-cluster service account"
        return f"kube context '{self.context or '(current)'}' of {self.kubeconfig or '~/.kube/config'}"


def choose_config(
    context: str | None, kubeconfig: str | None, in_cluster: bool | None, environ: Mapping[str, str]
) -> ConfigChoice:
    """Which configuration a profile's ``cluster`` (context, kubeconfig, in_cluster) means here.

    ``in_cluster`` True: the pod's service account. False: a kubeconfig (``kubeconfig``, else
    ``$KUBECONFIG``, else ~/.kube/config; ``context``, else its current context). None: a kubeconfig
    when ``context`` or ``kubeconfig`` is named, else the service account inside a pod
    (``KUBERNETES_SERVICE_HOST`` set); outside a pod with nothing named, :class:`InputInvalid`:
    a release tool does not guess a cluster from whatever context happens to be current.
    """
    if in_cluster and (context or kubeconfig):
        raise InputInvalid(
            "cluster: in_cluster: true uses the pod's service account: name no context or kubeconfig"
        )
    named = bool(context or kubeconfig)
    if in_cluster:
        return ConfigChoice(True, None, None, "the profile says in_cluster: true")
    if in_cluster is None and not named:
        if environ.get(IN_POD_ENV):
            return ConfigChoice(
                True, None, None, f"in a pod (${IN_POD_ENV} set) and the profile names no kubeconfig"
            )
        raise InputInvalid(
            f"cluster: the profile names no context or kubeconfig and this is not a pod (${IN_POD_ENV} "
            "unset): name cluster.context (and cluster.kubeconfig), or set cluster.in_cluster: false for "
            "the current context of $KUBECONFIG"
        )
    # the client reads $KUBECONFIG once, at import; read it now so a changed environment counts
    file = kubeconfig or environ.get("KUBECONFIG") or None
    if kubeconfig:
        why = "the profile names cluster.kubeconfig"
    elif in_cluster is False:
        why = "the profile says in_cluster: false"
    else:
        why = "the profile names cluster.context"
    return ConfigChoice(False, file, context or None, why)


#: urllib3's default retries (three, of connection and read failures) without its retries of a 429
#: or 503 that carries Retry-After: those it sleeps through on its own, three times, as long as the
#: server asks, inside one call and beyond its timeout. The error goes to the caller instead, whose
#: task retries honour Retry-After up to a cap (greenlight.tasks.policy.retry_transient).
RETRIES = urllib3.Retry(total=3, respect_retry_after_header=False)


def load_api_client(
    context: str | None = None, kubeconfig: str | None = None, in_cluster: bool | None = None
) -> client.ApiClient:
    """An ApiClient for what :func:`choose_config` picks from the profile's ``cluster`` and this process."""
    choice = choose_config(context, kubeconfig, in_cluster, os.environ)
    cfg = client.Configuration()
    try:
        if choice.in_cluster:
            config.load_incluster_config(client_configuration=cfg)
        else:
            if kubeconfig and not os.path.isfile(os.path.expanduser(kubeconfig)):
                raise InputInvalid(
                    f"cannot load {choice.describe()}: kubeconfig file {kubeconfig} does not exist "
                    f"({choice.reason})"
                )
            config.load_kube_config(
                config_file=choice.kubeconfig, context=choice.context, client_configuration=cfg
            )
    except (ConfigException, FileNotFoundError, OSError) as e:
        raise InputInvalid(f"cannot load {choice.describe()} ({choice.reason}): {e}") from e
    cfg.retries = RETRIES
    return client.ApiClient(cfg)


class Kube:
    """Thin, dict-in dict-out access to one cluster."""

    #: how often one call may wait its timeout on a stalled server: the client's pool retries a
    #: timed-out read 3 times (:data:`RETRIES`)
    ATTEMPTS = 4

    def __init__(self, api_client: client.ApiClient, timeout_s: float = 10.0) -> None:
        self.api_client = api_client
        self.timeout_s = timeout_s
        self._apis: dict[str, Any] = {}

    @classmethod
    def connect(
        cls,
        context: str | None = None,
        kubeconfig: str | None = None,
        in_cluster: bool | None = None,
        timeout_s: float = 10.0,
    ) -> Kube:
        return cls(load_api_client(context, kubeconfig, in_cluster), timeout_s)

    def close(self) -> None:
        self.api_client.close()

    # -- plumbing ---------------------------------------------------------------------------
    def _method(self, plural: str, verb: str) -> tuple[Resource, Any]:
        res = RESOURCES.get(plural)
        if res is None:
            raise InputInvalid(f"unknown resource '{plural}' (known: {', '.join(sorted(RESOURCES))})")
        api = self._apis.get(res.api)
        if api is None:
            api = self._apis[res.api] = getattr(client, res.api)(self.api_client)
        if not res.group:
            return res, getattr(api, f"{verb}_{res.suffix}")
        custom = getattr(api, f"{_CUSTOM_VERBS[verb]}_{res.suffix}")
        named = verb in ("read", "replace", "patch", "delete")

        def call(*args: Any, **kwargs: Any) -> Any:
            # ([name,] namespace, [body]) as the typed APIs take them -> CustomObjectsApi's order
            name, rest = (args[0], args[1:]) if named else (None, args)
            namespace, body = rest[0], rest[1:]
            head = (res.group, res.version, namespace, res.plural) + ((name,) if named else ())
            return custom(*head, *body, **kwargs)

        return res, call

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", self.timeout_s)
        kwargs["_preload_content"] = False
        try:
            resp = fn(*args, **kwargs)
            data = resp.data
        except Exception as e:  # translated, never swallowed
            raise translate(e, what) from e
        return json.loads(data) if data else None

    @staticmethod
    def _what(plural: str, namespace: str | None, name: str | None = None) -> str:
        where = f"{namespace}/" if namespace else ""
        return f"{plural} {where}{name}" if name else f"{plural} in {namespace or 'cluster'}"

    def _ns_args(self, res: Resource, namespace: str | None) -> list[str]:
        if res.namespaced:
            if not namespace:
                raise InputInvalid(f"{res.plural} are namespaced: a namespace is required")
            return [namespace]
        return []

    # -- verbs ------------------------------------------------------------------------------
    def get(self, plural: str, name: str, namespace: str | None = None) -> Obj:
        res, fn = self._method(plural, "read")
        return self._call(self._what(plural, namespace, name), fn, name, *self._ns_args(res, namespace))

    def find(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        try:
            return self.get(plural, name, namespace)
        except NotFound:
            return None

    def list(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> Obj:
        res, fn = self._method(plural, "list")
        kwargs: dict[str, Any] = {}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        return self._call(self._what(plural, namespace), fn, *self._ns_args(res, namespace), **kwargs)

    def items(
        self, plural: str, namespace: str | None = None, label_selector: str | None = None
    ) -> builtins.list[Obj]:
        return builtins.list(self.list(plural, namespace, label_selector).get("items") or [])

    def create(self, plural: str, body: Obj, namespace: str | None = None, dry_run: bool = False) -> Obj:
        """Create ``body``; ``dry_run``: the server's answer (defaults, admission) without storing it."""
        res, fn = self._method(plural, "create")
        name = (body.get("metadata") or {}).get("name")
        extra = {"dry_run": "All"} if dry_run else {}
        return self._call(
            self._what(plural, namespace, name), fn, *self._ns_args(res, namespace), body, **extra
        )

    def replace(
        self, plural: str, name: str, body: Obj, namespace: str | None = None, dry_run: bool = False
    ) -> Obj:
        """PUT ``body`` (its ``metadata.resourceVersion`` is a precondition: 409 when stale); ``dry_run``: the
        server's answer without storing it."""
        res, fn = self._method(plural, "replace")
        extra = {"dry_run": "All"} if dry_run else {}
        return self._call(
            self._what(plural, namespace, name), fn, name, *self._ns_args(res, namespace), body, **extra
        )

    def patch(
        self,
        plural: str,
        name: str,
        body: Obj | builtins.list[Obj],
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> Obj:
        """Merge patch by default; a ``metadata.resourceVersion`` in the body is a precondition (409 when stale)."""
        res, fn = self._method(plural, "patch")
        return self._call(
            self._what(plural, namespace, name),
            fn,
            name,
            *self._ns_args(res, namespace),
            body,
            _content_type=content_type,
        )

    def delete(self, plural: str, name: str, namespace: str | None = None, missing_ok: bool = True) -> bool:
        res, fn = self._method(plural, "delete")
        try:
            self._call(self._what(plural, namespace, name), fn, name, *self._ns_args(res, namespace))
        except NotFound:
            if missing_ok:
                return False
            raise
        return True

    def scale(self, name: str, namespace: str, replicas: int) -> Obj:
        if replicas < 0:
            raise InputInvalid(f"replicas must be >= 0, not {replicas}")
        api = client.AppsV1Api(self.api_client)
        return self._call(
            self._what("deployments", namespace, name) + " scale",
            api.patch_namespaced_deployment_scale,
            name,
            namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )

    def pod_log(
        self,
        name: str,
        namespace: str,
        tail_lines: int = 200,
        previous: bool = False,
        container: str | None = None,
    ) -> str:
        """The last ``tail_lines`` of the container's log (``previous``: of its last terminated
        run; 400, InputInvalid, when there is none or the container waits to start)."""
        api = client.CoreV1Api(self.api_client)
        extra: dict[str, Any] = {"previous": True} if previous else {}
        if container:
            extra["container"] = container
        try:
            resp: Any = api.read_namespaced_pod_log(
                name,
                namespace,
                tail_lines=tail_lines,
                _preload_content=False,
                _request_timeout=self.timeout_s,
                **extra,
            )
            return str(resp.data.decode("utf-8", "replace"))
        except Exception as e:
            raise translate(e, self._what("pods", namespace, name) + " log") from e

    def can_i(
        self,
        verb: str,
        resource: str,
        namespace: str | None = None,
        group: str = "",
        subresource: str = "",
        name: str | None = None,
    ) -> tuple[bool, str]:
        """Whether these credentials may ``verb`` ``resource`` (SelfSubjectAccessReview): (allowed,
        the authorizer's reason or evaluation error)."""
        api = client.AuthorizationV1Api(self.api_client)
        attributes = {"verb": verb, "resource": resource, "group": group}
        if subresource:
            attributes["subresource"] = subresource
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        what = (
            f"can-i {verb} {resource}{'/' + subresource if subresource else ''} in {namespace or 'cluster'}"
        )
        review = self._call(what, api.create_self_subject_access_review, body) or {}
        status = review.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or status.get("evaluationError") or "")

    def service_proxy_get(
        self, name: str, namespace: str, path: str, port: str | None = None, timeout_s: float | None = None
    ) -> tuple[int, bytes]:
        """GET through the API server's service proxy: how a flow outside the cluster reaches a Service.

        Returns the status and body the Service answered (an error status is an answer, not an exception);
        only an unreachable API server raises.
        """
        api = client.CoreV1Api(self.api_client)
        svc = f"{name}:{port}" if port else name
        try:
            resp: Any = api.connect_get_namespaced_service_proxy_with_path(
                svc,
                namespace,
                path.lstrip("/"),
                _preload_content=False,
                _request_timeout=timeout_s or self.timeout_s,
            )
            return int(resp.status), bytes(resp.data or b"")
        except ApiException as e:
            body = e.body if isinstance(e.body, bytes) else str(e.body or "").encode()
            return int(e.status or 0), body
        except Exception as e:
            raise translate(e, f"service {namespace}/{name} proxy {path}") from e

    def watch(
        self,
        plural: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_s: int = 60,
        resource_version: str | None = None,
    ) -> Iterator[tuple[str, Obj]]:
        """Yield (event type, object dict) until ``timeout_s`` passes on the server side."""
        res, fn = self._method(plural, "list")
        kwargs: dict[str, Any] = {
            "timeout_seconds": timeout_s,
            "_request_timeout": timeout_s + self.timeout_s,
        }
        if label_selector:
            kwargs["label_selector"] = label_selector
        if field_selector:
            kwargs["field_selector"] = field_selector
        if resource_version:
            kwargs["resource_version"] = resource_version
        w = watch.Watch()
        try:
            for event in w.stream(fn, *self._ns_args(res, namespace), **kwargs):
                yield str(event["type"]), dict(event["raw_object"])
        except Exception as e:
            raise translate(e, f"watch {self._what(plural, namespace)}") from e
        finally:
            w.stop()
