"""The lab's Cloud Monitoring configuration: ``AlertPolicyService`` and ``UptimeCheckService``.

Served on the lab Monitoring's gRPC server (:class:`greenlight_lab.monitoring.MonitoringServer`
registers :func:`handlers`) for the real ``AlertPolicyServiceClient`` and
``UptimeCheckServiceClient``, held to the real API where Greenlight leans on it:

- **List** pages: ``page_size`` (default :data:`DEFAULT_PAGE_SIZE`, small on purpose so that
  clients must follow ``next_page_token``; at most 1000) and ``page_token`` (opaque to clients: a
  cursor after the page's last resource, so deleting while paging skips nothing; a malformed one
  is INVALID_ARGUMENT). Resources come in creation order. ``filter`` takes comparisons of ``display_name`` and
  ``user_labels.KEY`` (``=``, ``!=``, ``:``; joined by AND/whitespace, OR, NOT), the fields the
  real filter language offers for these; others are INVALID_ARGUMENT naming them.
- **Create** assigns ``projects/P/alertPolicies/ID`` (each condition
  ``…/conditions/CID``) or ``projects/P/uptimeCheckConfigs/ID``, fills ``creation_record`` and
  ``mutation_record`` (policies), ``enabled: true`` when unset, and for uptime checks the
  defaults the real API fills (port 80/443, GET, STATIC_IP_CHECKERS).
- **Update** with ``update_mask`` replaces the named top-level fields and leaves the rest; no
  mask replaces the whole resource (keeping its name and creation record). An unknown path is
  INVALID_ARGUMENT.
- **Get**, **Delete**: NOT_FOUND for a name the project does not have.
- Refusals (INVALID_ARGUMENT) in the API's words: a policy without ``display_name``, without
  conditions or with more than 6, without a ``combiner``; a condition without its
  ``display_name``, without exactly one condition kind, a threshold or absence condition
  without a filter or with one the lab's filter parser refuses (the MetricService's
  :func:`~greenlight_lab.monitoring.parse_filter`) or that names no metric type; a threshold
  without a comparison; an uptime check without display name, resource or check, with a period
  other than 1, 5, 10 or 15 minutes, or a timeout outside 1-60 s; notification channels not
  named ``projects/P/notificationChannels/ID``.

What the lab does not do: evaluate policies (nothing fires), run uptime checks, keep
NotificationChannels (any well-formed channel name is accepted), or implement ``order_by``.
Faults: ``faults.take("monitoring", "<RPC name>", None)`` as the MetricService does.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.cloud import monitoring_v3
from google.protobuf import empty_pb2, field_mask_pb2

from greenlight_lab.monitoring import (
    ApiError,
    FilterError,
    invalid,
    mentions_metric_type,
    parse_filter,
    tokenize,
)

ALERT_SERVICE = "google.monitoring.v3.AlertPolicyService"
UPTIME_SERVICE = "google.monitoring.v3.UptimeCheckService"
DEFAULT_PAGE_SIZE = 3
MAX_PAGE_SIZE = 1000
MAX_CONDITIONS = 6
UPTIME_PERIODS_S = (60, 300, 600, 900)
CONDITION_KINDS = (
    "condition_threshold",
    "condition_absent",
    "condition_matched_log",
    "condition_monitoring_query_language",
    "condition_prometheus_query_language",
    "condition_sql",
)
CHANNEL = re.compile(r"^projects/[^/]+/notificationChannels/[^/]+$")
LAB_USER = "lab@greenlight.local"

_pb = {
    name: getattr(monitoring_v3, name).pb()
    for name in (
        "AlertPolicy",
        "UptimeCheckConfig",
        "ListAlertPoliciesRequest",
        "ListAlertPoliciesResponse",
        "GetAlertPolicyRequest",
        "CreateAlertPolicyRequest",
        "UpdateAlertPolicyRequest",
        "DeleteAlertPolicyRequest",
        "ListUptimeCheckConfigsRequest",
        "ListUptimeCheckConfigsResponse",
        "GetUptimeCheckConfigRequest",
        "CreateUptimeCheckConfigRequest",
        "UpdateUptimeCheckConfigRequest",
        "DeleteUptimeCheckConfigRequest",
    )
}


def _id(resource: Any) -> int:
    """The numeric id the lab gave a resource (the last part of its name)."""
    return int(resource.name.rsplit("/", 1)[1])


def not_found(what: str, name: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.NOT_FOUND, f"Requested entity was not found: {what} {name!r} does not exist."
    )


# ---------------------------------------------------------------------------------------------
# The List filter: display_name and user_labels.KEY
# ---------------------------------------------------------------------------------------------


def _config_filter(text: str) -> Callable[[Any], bool]:
    """A predicate over a policy or check pb for a List ``filter``; INVALID_ARGUMENT otherwise."""
    try:
        tokens = tokenize(text)
    except FilterError as e:
        raise invalid(f"Field filter had an invalid value: {e}") from None
    pos = 0

    def peek() -> Any:
        return tokens[pos] if pos < len(tokens) else None

    def take(what: str) -> Any:
        nonlocal pos
        tok = peek()
        if tok is None:
            raise invalid(f"Field filter had an invalid value: expected {what} at the end")
        pos += 1
        return tok

    def or_expr() -> Callable[[Any], bool]:
        nonlocal pos
        terms = [and_expr()]
        while (tok := peek()) is not None and tok.text == "OR":
            pos += 1
            terms.append(and_expr())
        return lambda m: any(t(m) for t in terms)

    def and_expr() -> Callable[[Any], bool]:
        nonlocal pos
        terms = [unary()]
        while (tok := peek()) is not None and tok.kind != "rparen" and tok.text != "OR":
            if tok.text == "AND":
                pos += 1
            terms.append(unary())
        return lambda m: all(t(m) for t in terms)

    def unary() -> Callable[[Any], bool]:
        tok = take("a comparison")
        if tok.text == "NOT":
            inner = unary()
            return lambda m: not inner(m)
        if tok.kind == "lparen":
            inner = or_expr()
            if take("')'").kind != "rparen":
                raise invalid("Field filter had an invalid value: expected ')'")
            return inner
        if tok.kind != "name":
            raise invalid(f"Field filter had an invalid value: unexpected {tok.text!r} at position {tok.pos}")
        field = tok.text
        if field == "display_name":
            get: Callable[[Any], str | None] = lambda m: m.display_name  # noqa: E731
        elif field.startswith(("user_labels.", "user_label.")) and field.count(".") == 1:
            key = field.split(".", 1)[1]
            get = lambda m: m.user_labels.get(key)  # noqa: E731
        else:
            raise invalid(
                f"Field filter had an invalid value: the lab filters on display_name and "
                f"user_labels.KEY, not {field!r}"
            )
        op = take("an operator")
        value = take("a value")
        if op.text not in ("=", "!=", ":") or value.kind != "string":
            raise invalid(f'Field filter had an invalid value: expected = "..." after {field}')
        want = value.text[1:-1]
        if op.text == "=":
            return lambda m: get(m) == want
        if op.text == "!=":
            return lambda m: get(m) != want
        return lambda m: (get(m) or "").find(want) >= 0

    if not tokens:
        return lambda m: True
    predicate = or_expr()
    if peek() is not None:
        raise invalid(f"Field filter had an invalid value: unexpected {peek().text!r}")
    return predicate


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------


def _check_filter(where: str, text: str) -> None:
    if not text.strip():
        raise invalid(f"Field {where} had an invalid value: a filter is required.")
    try:
        node = parse_filter(text)
    except FilterError as e:
        raise invalid(f'Field {where} had an invalid value of "{text}": {e}') from None
    if not mentions_metric_type(node):
        raise invalid(
            f'Field {where} had an invalid value of "{text}": the filter must specify a metric type.'
        )


def validate_policy(p: Any) -> None:
    """Refuse what the real API refuses in an AlertPolicy pb (INVALID_ARGUMENT naming the field)."""
    if not p.display_name.strip():
        raise invalid("Field alert_policy.display_name had an invalid value: a display name is required.")
    if not p.conditions:
        raise invalid(
            "Field alert_policy.conditions had an invalid value: at least one condition is required."
        )
    if len(p.conditions) > MAX_CONDITIONS:
        raise invalid(
            f"Field alert_policy.conditions had an invalid value: at most {MAX_CONDITIONS} conditions "
            f"are allowed, got {len(p.conditions)}."
        )
    if p.combiner == 0:
        raise invalid("Field alert_policy.combiner had an invalid value: a combiner is required.")
    for i, c in enumerate(p.conditions):
        where = f"alert_policy.conditions[{i}]"
        if not c.display_name.strip():
            raise invalid(f"Field {where}.display_name had an invalid value: a display name is required.")
        which = c.WhichOneof("condition")
        if which is None:
            raise invalid(f"Field {where} had an invalid value: a condition type is required.")
        if which in ("condition_threshold", "condition_absent"):
            body = getattr(c, which)
            _check_filter(f"{where}.{which}.filter", body.filter)
            if which == "condition_threshold":
                if body.denominator_filter:
                    _check_filter(f"{where}.{which}.denominator_filter", body.denominator_filter)
                if body.comparison == 0:
                    raise invalid(
                        f"Field {where}.{which}.comparison had an invalid value: a comparison is required."
                    )
    for i, ch in enumerate(p.notification_channels):
        if not CHANNEL.match(ch):
            raise invalid(
                f'Field alert_policy.notification_channels[{i}] had an invalid value of "{ch}": '
                "expected projects/[PROJECT_ID]/notificationChannels/[CHANNEL_ID]."
            )


def validate_check(c: Any) -> None:
    """Refuse what the real API refuses in an UptimeCheckConfig pb."""
    if not c.display_name.strip():
        raise invalid(
            "Field uptime_check_config.display_name had an invalid value: a display name is required."
        )
    if c.WhichOneof("resource") is None:
        raise invalid(
            "Field uptime_check_config.resource had an invalid value: a monitored resource is required."
        )
    if c.WhichOneof("check_request_type") is None:
        raise invalid(
            "Field uptime_check_config.check_request_type had an invalid value: http_check or tcp_check."
        )
    if c.HasField("period") and c.period.seconds not in UPTIME_PERIODS_S:
        raise invalid(
            f'Field uptime_check_config.period had an invalid value of "{c.period.seconds}s": '
            "must be 60s, 300s, 600s or 900s."
        )
    if c.HasField("timeout") and not 1 <= c.timeout.seconds + c.timeout.nanos / 1e9 <= 60:
        raise invalid("Field uptime_check_config.timeout had an invalid value: must be between 1s and 60s.")


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class MonitoringConfig:
    """Alert policies and uptime checks of the lab's one project, in memory."""

    def __init__(self, project_id: str, clock: Callable[[], float] = time.time) -> None:
        self.project_id = project_id
        self._clock = clock
        self._policies: dict[str, Any] = {}
        self._checks: dict[str, Any] = {}
        self._ids = itertools.count(int(clock()) % 100_000 * 1000 + 1)
        self._lock = threading.Lock()

    def clear(self) -> None:
        with self._lock:
            self._policies.clear()
            self._checks.clear()

    # -- helpers -----------------------------------------------------------------------------------

    def _check_parent(self, name: str) -> None:
        if not name.startswith("projects/") or "/" in name[len("projects/") :]:
            raise invalid(f'Field name had an invalid value of "{name}": expected projects/[PROJECT_ID].')
        if name[len("projects/") :] != self.project_id:
            raise ApiError(
                grpc.StatusCode.NOT_FOUND, f"Project {name} not found (the lab serves {self.project_id})."
            )

    def _stamp(self, record: Any) -> None:
        record.mutate_time.FromNanoseconds(int(self._clock() * 1e9))
        record.mutated_by = LAB_USER

    def _page(self, items: list[Any], request: Any, response: Any, field: str) -> Any:
        """One page of ``items`` (in creation order). The token is the id of the page's last item,
        so that deleting while paging (list, then delete each) skips nothing."""
        if request.page_size < 0:
            raise invalid("Field page_size had an invalid value: must not be negative.")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        items = sorted(items, key=_id)
        if request.page_token:
            if not request.page_token.isdigit():
                raise invalid(f'Field page_token had an invalid value of "{request.page_token}".')
            after = int(request.page_token)
            items = [i for i in items if _id(i) > after]
        for item in items[:size]:
            getattr(response, field).add().CopyFrom(item)
        if len(items) > size:
            response.next_page_token = str(_id(items[size - 1]))
        return response

    @staticmethod
    def _mask(request: Any, message: Any, what: str) -> list[str]:
        fields = {f.name for f in message.DESCRIPTOR.fields} - {"name"}
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        for path in paths:
            if path.split(".")[0] not in fields:
                raise invalid(f'Field update_mask had an invalid value of "{path}": not a field of {what}.')
        return paths

    @staticmethod
    def _merge(existing: Any, update: Any, paths: list[str]) -> Any:
        merged = type(existing)()
        merged.CopyFrom(existing)
        if not paths:  # no mask: replace, keeping what the server owns
            keep = {f: getattr(existing, f) for f in ("name",)}
            merged.CopyFrom(update)
            merged.name = keep["name"]
            if hasattr(existing, "creation_record"):
                merged.creation_record.CopyFrom(existing.creation_record)
            return merged
        # a path names a field whose value the update gives (unset in the update: cleared)
        mask = field_mask_pb2.FieldMask(paths=sorted({p.split(".")[0] for p in paths}))
        mask.MergeMessage(update, merged, replace_message_field=True, replace_repeated_field=True)
        for top in mask.paths:  # a map is merged by MergeMessage: replace it as a whole
            field = existing.DESCRIPTOR.fields_by_name[top]
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                getattr(merged, top).clear()
                getattr(merged, top).update(getattr(update, top))
        return merged

    def _name_conditions(self, policy: Any) -> None:
        for c in policy.conditions:
            if not c.name:
                c.name = f"{policy.name}/conditions/{next(self._ids)}"

    @staticmethod
    def _check_defaults(c: Any) -> None:
        if c.HasField("http_check"):
            h = c.http_check
            if not h.port:
                h.port = 443 if h.use_ssl else 80
            if h.request_method == 0:
                h.request_method = monitoring_v3.UptimeCheckConfig.HttpCheck.RequestMethod.GET
        if c.checker_type == 0:
            c.checker_type = monitoring_v3.UptimeCheckConfig.CheckerType.STATIC_IP_CHECKERS
        if not c.HasField("period"):
            c.period.seconds = 60
        if not c.HasField("timeout"):
            c.timeout.seconds = 10

    # -- AlertPolicyService ---------------------------------------------------------------------------

    def list_alert_policies(self, request: Any) -> Any:
        self._check_parent(request.name)
        keep = _config_filter(request.filter)
        with self._lock:
            items = [p for p in self._policies.values() if keep(p)]
        return self._page(items, request, _pb["ListAlertPoliciesResponse"](), "alert_policies")

    def get_alert_policy(self, request: Any) -> Any:
        with self._lock:
            found = self._policies.get(request.name)
        if found is None:
            raise not_found("alert policy", request.name)
        return found

    def create_alert_policy(self, request: Any) -> Any:
        self._check_parent(request.name)
        p = _pb["AlertPolicy"]()
        p.CopyFrom(request.alert_policy)
        if p.name:
            raise invalid("Field alert_policy.name had an invalid value: the name is assigned by the server.")
        validate_policy(p)
        with self._lock:
            p.name = f"{request.name}/alertPolicies/{next(self._ids)}"
            self._name_conditions(p)
            if not p.HasField("enabled"):
                p.enabled.value = True
            self._stamp(p.creation_record)
            self._stamp(p.mutation_record)
            self._policies[p.name] = p
        return p

    def update_alert_policy(self, request: Any) -> Any:
        update = request.alert_policy
        with self._lock:
            existing = self._policies.get(update.name)
            if existing is None:
                raise not_found("alert policy", update.name)
            merged = self._merge(existing, update, self._mask(request, existing, "AlertPolicy"))
            validate_policy(merged)
            self._name_conditions(merged)
            if not merged.HasField("enabled"):
                merged.enabled.value = True
            self._stamp(merged.mutation_record)
            self._policies[merged.name] = merged
        return merged

    def delete_alert_policy(self, request: Any) -> Any:
        with self._lock:
            if self._policies.pop(request.name, None) is None:
                raise not_found("alert policy", request.name)
        return empty_pb2.Empty()

    # -- UptimeCheckService ---------------------------------------------------------------------------

    def list_uptime_check_configs(self, request: Any) -> Any:
        self._check_parent(request.parent)
        keep = _config_filter(request.filter)
        with self._lock:
            items = [c for c in self._checks.values() if keep(c)]
        response = self._page(items, request, _pb["ListUptimeCheckConfigsResponse"](), "uptime_check_configs")
        response.total_size = len(items)
        return response

    def get_uptime_check_config(self, request: Any) -> Any:
        with self._lock:
            found = self._checks.get(request.name)
        if found is None:
            raise not_found("uptime check", request.name)
        return found

    def create_uptime_check_config(self, request: Any) -> Any:
        self._check_parent(request.parent)
        c = _pb["UptimeCheckConfig"]()
        c.CopyFrom(request.uptime_check_config)
        validate_check(c)
        self._check_defaults(c)
        with self._lock:
            c.name = f"{request.parent}/uptimeCheckConfigs/{next(self._ids)}"
            self._checks[c.name] = c
        return c

    def update_uptime_check_config(self, request: Any) -> Any:
        update = request.uptime_check_config
        with self._lock:
            existing = self._checks.get(update.name)
            if existing is None:
                raise not_found("uptime check", update.name)
            merged = self._merge(existing, update, self._mask(request, existing, "UptimeCheckConfig"))
            validate_check(merged)
            self._check_defaults(merged)
            self._checks[merged.name] = merged
        return merged

    def delete_uptime_check_config(self, request: Any) -> Any:
        with self._lock:
            if self._checks.pop(request.name, None) is None:
                raise not_found("uptime check", request.name)
        return empty_pb2.Empty()

    # -- gRPC --------------------------------------------------------------------------------------

    def handlers(
        self, wrap: Callable[[str, Callable[[Any], Any]], Callable[[Any, grpc.ServicerContext], Any]]
    ) -> tuple[grpc.GenericRpcHandler, ...]:
        """The two services' handlers; ``wrap(rpc name, fn)`` adds faults and error mapping."""
        alert = {
            "ListAlertPolicies": (
                self.list_alert_policies,
                "ListAlertPoliciesRequest",
                _pb["ListAlertPoliciesResponse"],
            ),
            "GetAlertPolicy": (self.get_alert_policy, "GetAlertPolicyRequest", _pb["AlertPolicy"]),
            "CreateAlertPolicy": (self.create_alert_policy, "CreateAlertPolicyRequest", _pb["AlertPolicy"]),
            "UpdateAlertPolicy": (self.update_alert_policy, "UpdateAlertPolicyRequest", _pb["AlertPolicy"]),
            "DeleteAlertPolicy": (self.delete_alert_policy, "DeleteAlertPolicyRequest", empty_pb2.Empty),
        }
        uptime = {
            "ListUptimeCheckConfigs": (
                self.list_uptime_check_configs,
                "ListUptimeCheckConfigsRequest",
                _pb["ListUptimeCheckConfigsResponse"],
            ),
            "GetUptimeCheckConfig": (
                self.get_uptime_check_config, "GetUptimeCheckConfigRequest", _pb["UptimeCheckConfig"],
            ),
            "CreateUptimeCheckConfig": (
                self.create_uptime_check_config, "CreateUptimeCheckConfigRequest", _pb["UptimeCheckConfig"],
            ),
            "UpdateUptimeCheckConfig": (
                self.update_uptime_check_config, "UpdateUptimeCheckConfigRequest", _pb["UptimeCheckConfig"],
            ),
            "DeleteUptimeCheckConfig": (
                self.delete_uptime_check_config, "DeleteUptimeCheckConfigRequest", empty_pb2.Empty,
            ),
        }  # fmt: skip

        def generic(service: str, methods: dict[str, Any]) -> grpc.GenericRpcHandler:
            return grpc.method_handlers_generic_handler(
                service,
                {
                    name: grpc.unary_unary_rpc_method_handler(
                        wrap(name, fn),
                        request_deserializer=_pb[req].FromString,
                        response_serializer=resp.SerializeToString,
                    )
                    for name, (fn, req, resp) in methods.items()
                },
            )

        return generic(ALERT_SERVICE, alert), generic(UPTIME_SERVICE, uptime)
