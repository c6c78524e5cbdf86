"""Cloud Monitoring's configuration: alert policies and uptime checks, for monitoring as code.

The only module that talks to ``AlertPolicyServiceClient`` and ``UptimeCheckServiceClient``. It
opens them as :func:`greenlight.clients.monitoring.make_metric_client` opens the metric client (a
plaintext gRPC channel to ``GREENLIGHT_MONITORING_ENDPOINT`` when
``GREENLIGHT_MONITORING_INSECURE`` is set: the lab; Google's endpoint with Application Default
Credentials otherwise), gives resources as plain dicts in the API's field names
(:class:`greenlight.core.monitoring_code.Resource`), and translates errors as that module does.
Every call carries a timeout and no client-side retry; lists follow every page token.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
from google.auth import exceptions as auth_exc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.alert_policy_service.transports import (
    AlertPolicyServiceGrpcTransport,
)
from google.cloud.monitoring_v3.services.uptime_check_service.transports import (
    UptimeCheckServiceGrpcTransport,
)
from google.protobuf import field_mask_pb2, json_format

from greenlight.clients.monitoring import ENDPOINT_ENV, INSECURE_ENV, _truthy, call
from greenlight.core.monitoring_code import ALERT_POLICY, UPTIME_CHECK, Resource
from greenlight.errors import Forbidden, InputInvalid

T = TypeVar("T")
#: the proto-plus class of each kind
MESSAGES: dict[str, Any] = {
    ALERT_POLICY: monitoring_v3.AlertPolicy,
    UPTIME_CHECK: monitoring_v3.UptimeCheckConfig,
}


def make_config_clients(
    endpoint: str | None = None, insecure: bool = False
) -> tuple[monitoring_v3.AlertPolicyServiceClient, monitoring_v3.UptimeCheckServiceClient]:
    """The two clients for ``endpoint`` (``host:port``; None: from the environment, as the metric
    client). Raises Forbidden when no credentials can be found."""
    if endpoint is None:
        endpoint = os.environ.get(ENDPOINT_ENV) or None
        insecure = insecure or _truthy(os.environ.get(INSECURE_ENV))
    try:
        if endpoint and insecure:
            channel = grpc.insecure_channel(endpoint)
            return (
                monitoring_v3.AlertPolicyServiceClient(
                    transport=AlertPolicyServiceGrpcTransport(channel=channel)
                ),
                monitoring_v3.UptimeCheckServiceClient(
                    transport=UptimeCheckServiceGrpcTransport(channel=channel)
                ),
            )
        options = {"api_endpoint": endpoint} if endpoint else None
        return (
            monitoring_v3.AlertPolicyServiceClient(client_options=options),
            monitoring_v3.UptimeCheckServiceClient(client_options=options),
        )
    except auth_exc.DefaultCredentialsError as e:
        raise Forbidden(
            "no Google credentials for Cloud Monitoring (Application Default Credentials not found); "
            f"set them up or point {ENDPOINT_ENV} at a local endpoint"
        ) from e


def to_dict(message: Any) -> dict[str, Any]:
    """A proto-plus message as a dict in the API's field names (defaults left out)."""
    pb = type(message).pb(message)
    return dict(json_format.MessageToDict(pb, preserving_proto_field_name=True))


def canonical(kind: str, spec: dict[str, Any], source: str) -> dict[str, Any]:
    """``spec`` read as the kind's message and written back as a dict: unknown fields, bad enum
    names and malformed durations are refused (InputInvalid naming ``source``), and both sides
    of a comparison have one spelling (int64 as strings, durations as ``60s``, no defaults)."""
    cls = MESSAGES[kind]
    pb = cls.pb()()
    try:
        json_format.ParseDict(spec, pb)
    except (json_format.ParseError, TypeError, ValueError) as e:
        raise InputInvalid(f"{source}: spec is not a valid {kind}: {e}") from None
    return dict(json_format.MessageToDict(pb, preserving_proto_field_name=True))


class MonitoringConfigClient:
    """Alert policies and uptime checks of one project.

    Args:
        project_id: the project.
        clients: (AlertPolicyServiceClient, UptimeCheckServiceClient); default from the environment.
        timeout_s: the deadline of every call, in seconds.
        page_size: the page size asked of List calls (0: the server's default).
    """

    def __init__(
        self,
        project_id: str,
        clients: tuple[monitoring_v3.AlertPolicyServiceClient, monitoring_v3.UptimeCheckServiceClient]
        | None = None,
        timeout_s: float = 10.0,
        page_size: int = 0,
    ) -> None:
        if not project_id:
            raise InputInvalid("project_id is empty")
        self.project_id = project_id
        self.alerts, self.uptime = clients if clients is not None else make_config_clients()
        self.timeout_s = timeout_s
        self.page_size = page_size

    @property
    def _parent(self) -> str:
        return f"projects/{self.project_id}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        return call(what, fn)

    def list_kind(self, kind: str) -> list[Resource]:
        """Every resource of ``kind`` in the project, following every page."""
        if kind == ALERT_POLICY:

            def fetch() -> list[Any]:
                request = monitoring_v3.ListAlertPoliciesRequest(name=self._parent, page_size=self.page_size)
                return list(
                    self.alerts.list_alert_policies(request=request, retry=None, timeout=self.timeout_s)
                )

            found = self._call("ListAlertPolicies", fetch)
        else:

            def fetch() -> list[Any]:
                request = monitoring_v3.ListUptimeCheckConfigsRequest(
                    parent=self._parent, page_size=self.page_size
                )
                return list(
                    self.uptime.list_uptime_check_configs(request=request, retry=None, timeout=self.timeout_s)
                )

            found = self._call("ListUptimeCheckConfigs", fetch)
        return [Resource(kind, m.name, to_dict(m)) for m in found]

    def list_all(self) -> list[Resource]:
        """Every alert policy, then every uptime check."""
        return self.list_kind(ALERT_POLICY) + self.list_kind(UPTIME_CHECK)

    def _message(self, kind: str, spec: dict[str, Any], name: str = "") -> Any:
        cls = MESSAGES[kind]
        pb = cls.pb()()
        json_format.ParseDict(spec, pb)
        if name:
            pb.name = name
        return cls.wrap(pb)

    def create(self, kind: str, spec: dict[str, Any]) -> str:
        """Create a resource from ``spec``; returns the name the server gave it."""
        message = self._message(kind, spec)
        if kind == ALERT_POLICY:
            made = self._call(
                "CreateAlertPolicy",
                lambda: self.alerts.create_alert_policy(
                    name=self._parent, alert_policy=message, retry=None, timeout=self.timeout_s
                ),
            )
        else:
            made = self._call(
                "CreateUptimeCheckConfig",
                lambda: self.uptime.create_uptime_check_config(
                    parent=self._parent, uptime_check_config=message, retry=None, timeout=self.timeout_s
                ),
            )
        return str(made.name)

    def update(self, kind: str, name: str, spec: dict[str, Any], mask: list[str]) -> None:
        """Set the top-level fields ``mask`` names on ``name`` to ``spec``'s (the others untouched)."""
        message = self._message(kind, {k: v for k, v in spec.items() if k in mask}, name)
        update_mask = field_mask_pb2.FieldMask(paths=list(mask))
        if kind == ALERT_POLICY:
            self._call(
                "UpdateAlertPolicy",
                lambda: self.alerts.update_alert_policy(
                    alert_policy=message, update_mask=update_mask, retry=None, timeout=self.timeout_s
                ),
            )
        else:
            self._call(
                "UpdateUptimeCheckConfig",
                lambda: self.uptime.update_uptime_check_config(
                    request=monitoring_v3.UpdateUptimeCheckConfigRequest(
                        uptime_check_config=message, update_mask=update_mask
                    ),
                    retry=None,
                    timeout=self.timeout_s,
                ),
            )

    def delete(self, kind: str, name: str) -> None:
        if kind == ALERT_POLICY:
            self._call(
                "DeleteAlertPolicy",
                lambda: self.alerts.delete_alert_policy(name=name, retry=None, timeout=self.timeout_s),
            )
        else:
            self._call(
                "DeleteUptimeCheckConfig",
                lambda: self.uptime.delete_uptime_check_config(name=name, retry=None, timeout=self.timeout_s),
            )
