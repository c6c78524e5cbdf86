"""Every client's translation of SDK failures: the kind in the tree, the HTTP status (and the
service's own code) kept on the error, Retry-After kept on transient ones; every field survives
pickling, as Prefect pickles exceptions into states."""

from __future__ import annotations

import json
import pickle
from types import SimpleNamespace
from typing import Any

import cloudflare
import grpc
import httpx
import psycopg
import pytest
import urllib3
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exc
from kubernetes.client.exceptions import ApiException
from slack_sdk.errors import SlackApiError
from slack_sdk.web import SlackResponse

import greenlight.errors as errors_module
from greenlight.clients import dns, gcs, kube, monitoring, postgres
from greenlight.clients.packages import PackagesClient
from greenlight.clients.pagerduty import PagerDuty
from greenlight.clients.registry import RegistryClient
from greenlight.clients.slack import Notifier
from greenlight.core.images import parse_image_ref
from greenlight.errors import (
    BackupInvalid,
    BackupNotVerified,
    Conflict,
    DrillFailed,
    Forbidden,
    GreenlightError,
    InputInvalid,
    NotFound,
    PermanentError,
    TransientError,
    exit_code,
    with_message,
)
from greenlight.webhook.verify import PayloadInvalid

Case = tuple[type[GreenlightError], int | None, str | None, float | None]  # kind, status, code, retry_after


def seen(error: GreenlightError | None) -> Case:
    assert error is not None
    retry_after = error.retry_after if isinstance(error, TransientError) else None
    return type(error), error.status, error.code, retry_after


def api_exception(status: int, retry_after: str | None = None) -> ApiException:
    e = ApiException(status=status, reason="reason")
    e.headers = {"Retry-After": retry_after} if retry_after is not None else {}
    e.body = json.dumps({"kind": "Status", "message": f"the server said {status}"})
    return e


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (api_exception(404), (NotFound, 404, None, None)),
        (api_exception(409), (Conflict, 409, None, None)),
        (api_exception(401), (Forbidden, 401, None, None)),
        (api_exception(403), (Forbidden, 403, None, None)),
        (api_exception(400), (InputInvalid, 400, None, None)),
        (api_exception(422), (InputInvalid, 422, None, None)),
        (api_exception(429, "3"), (TransientError, 429, None, 3.0)),
        (api_exception(503), (TransientError, 503, None, None)),
        (api_exception(0), (TransientError, None, None, None)),
        (api_exception(418), (PermanentError, 418, None, None)),
        (urllib3.exceptions.ProtocolError("connection reset"), (TransientError, None, None, None)),
        (TimeoutError("read"), (TransientError, None, None, None)),
    ],
    ids=["404", "409", "401", "403", "400", "422", "429", "503", "no-answer", "418", "reset", "timeout"],
)
def test_kube_translation_keeps_the_http_status(error: BaseException, expected: Case) -> None:
    translated = kube.translate(error, "service sma/frontend")
    assert seen(translated) == expected
    assert str(translated).startswith("service sma/frontend")


def unavailable_with_retry_info(seconds: int) -> gexc.ServiceUnavailable:
    info = SimpleNamespace(retry_delay=SimpleNamespace(seconds=seconds, nanos=0))
    return gexc.ServiceUnavailable("down", details=[info])


class RpcError(grpc.RpcError):
    """A raw gRPC error as a channel raises it (code() tells the status)."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (gexc.InvalidArgument("bad filter"), (InputInvalid, 400, "INVALID_ARGUMENT", None)),
        (gexc.NotFound("no policy"), (NotFound, 404, "NOT_FOUND", None)),
        (gexc.PermissionDenied("no role"), (Forbidden, 403, "PERMISSION_DENIED", None)),
        (gexc.Unauthenticated("who"), (Forbidden, 401, "UNAUTHENTICATED", None)),
        (gexc.AlreadyExists("there"), (Conflict, 409, "ALREADY_EXISTS", None)),
        (unavailable_with_retry_info(4), (TransientError, 503, "UNAVAILABLE", 4.0)),
        (gexc.ResourceExhausted("quota"), (TransientError, 429, "RESOURCE_EXHAUSTED", None)),
        (gexc.DeadlineExceeded("slow"), (TransientError, 504, "DEADLINE_EXCEEDED", None)),
        (gexc.MethodNotImplemented("no"), (TransientError, 501, "UNIMPLEMENTED", None)),
        (RpcError(), (TransientError, None, "UNAVAILABLE", None)),
        (auth_exc.RefreshError("expired"), (Forbidden, None, None, None)),
    ],
    ids=[
        "invalid-argument",
        "not-found",
        "permission-denied",
        "unauthenticated",
        "already-exists",
        "unavailable",
        "quota",
        "deadline",
        "unimplemented",
        "raw-grpc",
        "refresh",
    ],
)
def test_monitoring_translation_keeps_the_status_and_the_grpc_code(error: Exception, expected: Case) -> None:
    translated = monitoring.translate_error(error, "ListTimeSeries")
    assert seen(translated) == expected
    code = expected[2]
    assert str(translated).startswith(
        f"Cloud Monitoring ListTimeSeries failed{f' ({code})' if code else ''}: "
    )


def with_retry_after(cls: type[gexc.GoogleAPICallError], value: str) -> gexc.GoogleAPICallError:
    """An HTTP API error as the storage transport raises it, with the answer it got."""
    return cls("slow down", response=SimpleNamespace(headers={"Retry-After": value}))


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (gexc.NotFound("no bucket"), (NotFound, 404, None, None)),
        (gexc.PreconditionFailed("generation"), (Conflict, 412, None, None)),
        (gexc.Conflict("exists"), (Conflict, 409, None, None)),
        (gexc.Forbidden("no"), (Forbidden, 403, None, None)),
        (with_retry_after(gexc.TooManyRequests, "2"), (TransientError, 429, None, 2.0)),
        (gexc.ServiceUnavailable("down"), (TransientError, 503, None, None)),
        (
            gexc.RetryError("gave up", cause=gexc.ServiceUnavailable("down")),
            (TransientError, 503, None, None),
        ),
        (ConnectionError("refused"), (TransientError, None, None, None)),
        (gexc.BadRequest("bad"), (PermanentError, 400, None, None)),
    ],
    ids=["404", "412", "409", "403", "429", "503", "gave-up", "refused", "400"],
)
def test_gcs_translation_keeps_the_http_status(error: BaseException, expected: Case) -> None:
    assert seen(gcs.translate(error, "gs://backups/db.dump")) == expected


def test_gcs_translation_leaves_what_is_not_an_sdk_error_alone() -> None:
    assert gcs.translate(ValueError("a bug"), "gs://backups/db.dump") is None


def slack_error(status: int, error: str, headers: dict[str, str] | None = None) -> SlackApiError:
    response = SlackResponse(
        client=None,
        http_verb="POST",
        api_url="http://slack/api/chat.postMessage",
        req_args={},
        data={"ok": False, "error": error},
        headers=headers or {},
        status_code=status,
    )
    return SlackApiError("slack said no", response)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (slack_error(429, "ratelimited", {"Retry-After": "3"}), (TransientError, 429, "ratelimited", 3.0)),
        (slack_error(503, "service_unavailable"), (TransientError, 503, "service_unavailable", None)),
        (slack_error(200, "invalid_auth"), (Forbidden, 200, "invalid_auth", None)),
        (slack_error(200, "channel_not_found"), (NotFound, 200, "channel_not_found", None)),
        (slack_error(200, "msg_too_long"), (PermanentError, 200, "msg_too_long", None)),
    ],
    ids=["rate-limited", "down", "bad-token", "no-channel", "other"],
)
def test_slack_translation_keeps_the_status_and_slacks_error(error: SlackApiError, expected: Case) -> None:
    notifier = Notifier("xoxb-secret-token", "#releases", base_url="http://127.0.0.1:9/api/")
    translated = notifier._translate_api_error("chat.postMessage", error)
    assert seen(translated) == expected
    assert "xoxb-secret-token" not in str(translated)


def pg_error(cls: type[psycopg.Error], message: str = "it failed") -> psycopg.Error:
    return cls(message)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (pg_error(psycopg.errors.InvalidPassword), (Forbidden, None, "28P01", None)),
        (pg_error(psycopg.errors.InvalidCatalogName), (NotFound, None, "3D000", None)),
        (pg_error(psycopg.errors.UndefinedTable), (NotFound, None, "42P01", None)),
        (pg_error(psycopg.errors.UniqueViolation), (Conflict, None, "23505", None)),
        (pg_error(psycopg.errors.SerializationFailure), (TransientError, None, "40001", None)),
        (pg_error(psycopg.errors.AdminShutdown), (TransientError, None, "57P01", None)),
        (pg_error(psycopg.errors.SyntaxError), (InputInvalid, None, "42601", None)),
        (pg_error(psycopg.errors.FeatureNotSupported), (PermanentError, None, "0A000", None)),
        (pg_error(psycopg.OperationalError, "connection refused"), (TransientError, None, None, None)),
    ],
    ids=[
        "password",
        "no-database",
        "no-table",
        "duplicate",
        "serialization",
        "shutdown",
        "syntax",
        "unsupported",
        "refused",
    ],
)
def test_postgres_translation_keeps_the_sqlstate(error: psycopg.Error, expected: Case) -> None:
    translated = postgres._translate(error, "query", "s3cret")
    assert seen(translated) == expected


def http_answer(
    status: int, headers: dict[str, str] | None = None, body: Any = None, method: str = "GET"
) -> httpx.Response:
    return httpx.Response(
        status,
        headers=headers or {},
        json=body if body is not None else {},
        request=httpx.Request(method, "http://service.test/path"),
    )


def raised(fn: Any, *args: Any) -> GreenlightError:
    with pytest.raises(GreenlightError) as caught:
        fn(*args)
    return caught.value


IMAGE = parse_image_ref("registry.test/team/app:v1")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (http_answer(429, {"Retry-After": "5"}), (TransientError, 429, None, 5.0)),
        (http_answer(502), (TransientError, 502, None, None)),
        (http_answer(401), (Forbidden, 401, None, None)),
        (http_answer(403), (Forbidden, 403, None, None)),
        (http_answer(404), (NotFound, 404, None, None)),
        (
            http_answer(400, body={"errors": [{"code": "MANIFEST_INVALID"}]}),
            (PermanentError, 400, "MANIFEST_INVALID", None),
        ),
    ],
    ids=["429", "502", "401", "403", "404", "400"],
)
def test_registry_answers_keep_the_http_status(response: httpx.Response, expected: Case) -> None:
    assert seen(raised(RegistryClient._raise_for_status, response, IMAGE)) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (http_answer(429, {"Retry-After": "7"}), (TransientError, 429, None, 7.0)),
        (http_answer(403, {"x-ratelimit-remaining": "0"}), (TransientError, 403, None, None)),
        (http_answer(500), (TransientError, 500, None, None)),
        (http_answer(401), (Forbidden, 401, None, None)),
        (http_answer(403), (Forbidden, 403, None, None)),
        (http_answer(404), (NotFound, 404, None, None)),
        (http_answer(409, method="DELETE"), (Conflict, 409, None, None)),
        (http_answer(422), (PermanentError, 422, None, None)),
    ],
    ids=["429", "rate-limit-spent", "500", "401", "403", "404", "409-delete", "422"],
)
def test_github_packages_answers_keep_the_http_status(response: httpx.Response, expected: Case) -> None:
    assert seen(raised(PackagesClient._raise_for_status, response, "listing versions")) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (http_answer(429, {"Retry-After": "2"}), (TransientError, 429, None, 2.0)),
        (http_answer(503), (TransientError, 503, None, None)),
        (http_answer(400, body={"message": "Invalid Event"}), (PermanentError, 400, None, None)),
    ],
    ids=["429", "503", "400"],
)
def test_pagerduty_answers_keep_the_http_status(response: httpx.Response, expected: Case) -> None:
    pagerduty = PagerDuty("routing-key-secret", base_url="http://127.0.0.1:9")
    error = raised(pagerduty._answer, "trigger", response)
    assert seen(error) == expected
    assert "routing-key-secret" not in str(error)


def cloudflare_error(
    status: int, codes: list[int] | None = None, headers: dict[str, str] | None = None
) -> cloudflare.APIStatusError:
    body = {"success": False, "errors": [{"code": c, "message": "said"} for c in codes or []]}
    return cloudflare.APIStatusError(
        "cloudflare said no", response=http_answer(status, headers, body), body=body
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (cloudflare_error(429, headers={"retry-after": "9"}), (TransientError, 429, None, 9.0)),
        (cloudflare_error(502), (TransientError, 502, None, None)),
        (cloudflare_error(403), (Forbidden, 403, None, None)),
        (cloudflare_error(400, [dns.NO_TOKEN_CODE]), (Forbidden, 400, None, None)),
        (cloudflare_error(404), (NotFound, 404, None, None)),
        (cloudflare_error(400, [81057]), (Conflict, 400, None, None)),
        (cloudflare_error(400, [1004]), (InputInvalid, 400, None, None)),
    ],
    ids=["429", "502", "403", "no-token", "404", "record-in-the-way", "bad-request"],
)
def test_cloudflare_translation_keeps_the_http_status(error: Exception, expected: Case) -> None:
    assert seen(dns.translate(error, "pointing www.example.com")) == expected


def every_class_in_the_tree() -> list[GreenlightError]:
    """One instance of each error class Greenlight defines, with every field set."""
    made: list[GreenlightError] = [
        cls("what went wrong", status=418, code="TEAPOT")
        for cls in vars(errors_module).values()
        if isinstance(cls, type)
        and issubclass(cls, GreenlightError)
        and cls not in (TransientError, BackupNotVerified, DrillFailed)
    ]
    made.append(TransientError("slow down", retry_after=2.5, exhausted=True, status=429, code="ratelimited"))
    # Greenlight's own verdicts, which carry a result: no service answered, status stays None
    made += [BackupNotVerified("stale", {"checks": []}), DrillFailed("rto missed", {"rto_s": 9})]
    payload = PayloadInvalid("workflow_run.head_sha", "expected a string")
    payload.status, payload.code = 422, "unprocessable"
    made.append(payload)
    return made


@pytest.mark.parametrize("error", every_class_in_the_tree(), ids=lambda e: type(e).__name__)
def test_every_field_survives_pickling(error: GreenlightError) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (str(back), back.args, vars(back)) == (str(error), error.args, vars(error))
    assert exit_code(back) == exit_code(error)


@pytest.mark.parametrize(
    ("module", "cls"),
    [("greenlight.flows.dr_drill", DrillFailed), ("greenlight.flows.backup_verification", BackupNotVerified)],
)
def test_a_verdict_pickled_where_it_was_defined_before_still_loads(module: str, cls: type) -> None:
    """DrillFailed and BackupNotVerified lived in their flows, and pickled as (class, (reason,
    result)): a Prefect state saved then still loads, as the class in greenlight.errors."""
    old = f"c{module}\n{cls.__name__}\n(Vrto missed\n(dVrto_s\nI9\nstR.".encode()
    back = pickle.loads(old)
    assert type(back) is cls
    assert (str(back), back.result, back.status) == ("rto missed", {"rto_s": 9}, None)


def test_status_is_none_unless_a_service_answered() -> None:
    error = BackupInvalid("dump is empty")
    assert (error.status, error.code) == (None, None)


@pytest.mark.parametrize("error", every_class_in_the_tree(), ids=lambda e: type(e).__name__)
def test_an_error_told_again_keeps_its_kind_and_fields(error: GreenlightError) -> None:
    """A step that says what it did before the failure keeps the failure's exit code and status."""
    again = with_message(error, f"restore stopped at configmap/app: {error}")
    assert type(again) is type(error)
    assert (str(again), vars(again)) == (f"restore stopped at configmap/app: {error}", vars(error))
    assert exit_code(again) == exit_code(error)
