"""The tasks' retry rule: transient failures only, not once the client spent its own budget, and
no sooner than the server's Retry-After."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from greenlight.errors import Conflict, InputInvalid, TransientError, is_transient
from greenlight.tasks.policy import (
    MAX_RETRY_AFTER_S,
    lost_a_race,
    planned_delay,
    prefect_api_transient,
    retry_if,
    retry_pause,
    retry_transient,
)


class Failed:
    """A Prefect state whose result raises ``error`` (what retry_condition_fn is given)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error


def task(delays: Any, jitter: float | None = None) -> Any:
    """What retry_condition_fn reads of a Prefect task: its retry delays and jitter."""
    return SimpleNamespace(retry_delay_seconds=delays, retry_jitter_factor=jitter)


def attempt(n: int) -> Any:
    """A task run whose ``n``-th try just failed."""
    return SimpleNamespace(run_count=n)


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientError("503 from the API server"), True),
        (TransientError("429", retry_after=2.0), True),
        (TransientError("429", retry_after=MAX_RETRY_AFTER_S + 1), False),
        (TransientError("gave up retrying: 503", exhausted=True), False),
        (Conflict("resourceVersion changed"), False),
        (InputInvalid("malformed image reference"), False),
        (RuntimeError("a bug"), False),
    ],
    ids=["transient", "rate-limited", "asks-too-long", "client-budget-spent", "conflict", "bad-input", "bug"],
)
def test_only_transient_failures_with_budget_left_are_retried(error: BaseException, retried: bool) -> None:
    # Prefect's planned delay (5 s) already covers every Retry-After here: nothing sleeps
    assert retry_transient(task([5.0]), attempt(1), Failed(error)) is retried


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (TransientError("503"), True),
        (TransientError("429", retry_after=3.0), True),
        (TransientError("gave up", exhausted=True), False),
        (Conflict("stale"), False),
        (ValueError("a bug"), False),
    ],
    ids=["transient", "with-retry-after", "exhausted", "permanent", "not-ours"],
)
def test_is_transient_says_whether_retrying_the_task_may_help(error: BaseException, expected: bool) -> None:
    assert is_transient(error) is expected


@pytest.mark.parametrize(
    ("error", "planned_s", "max_wait_s", "pause"),
    [
        (TransientError("503"), 0.5, 30.0, 0.0),
        (TransientError("429", retry_after=4.0), 0.5, 30.0, 3.5),
        (TransientError("429", retry_after=4.0), 8.0, 30.0, 0.0),
        (TransientError("429", retry_after=4.0), 0.0, 4.0, 4.0),
        (TransientError("429", retry_after=4.0), 0.5, 2.0, None),
        (TransientError("429", retry_after=0.0), 0.5, 30.0, 0.0),
        (TransientError("429", retry_after=4.0, exhausted=True), 0.5, 30.0, None),
        (Conflict("409"), 0.5, 30.0, None),
    ],
    ids=[
        "no-retry-after",
        "waits-the-rest",
        "planned-delay-covers-it",
        "at-the-limit",
        "beyond-the-limit",
        "zero",
        "exhausted",
        "permanent",
    ],
)
def test_retry_pause_makes_the_next_try_start_no_sooner_than_retry_after(
    error: BaseException, planned_s: float, max_wait_s: float, pause: float | None
) -> None:
    assert retry_pause(error, planned_s, max_wait_s) == pause


@pytest.mark.parametrize(
    ("delays", "jitter", "run_count", "planned"),
    [
        ([0.5, 1, 2, 4, 8], None, 1, 0.5),
        ([0.5, 1, 2, 4, 8], None, 3, 2.0),
        ([0.5, 1], None, 5, 1.0),
        (0.2, None, 4, 0.2),
        (None, None, 1, 0.0),
        (0, None, 1, 0.0),
        ([0.5, 1], 0.5, 1, 0.0),
        ([0.5, 1], None, 0, 0.5),
    ],
    ids=["first-try", "third-try", "past-the-list", "one-number", "none", "zero", "jittered", "no-run-count"],
)
def test_planned_delay_is_what_prefect_waits_after_that_try(
    delays: Any, jitter: float | None, run_count: int, planned: float
) -> None:
    assert planned_delay(task(delays, jitter), attempt(run_count)) == planned


def test_transient_error_keeps_its_fields_through_pickling() -> None:
    """Prefect may persist a failed state's exception: retry_after and exhausted must survive."""
    back = pickle.loads(pickle.dumps(TransientError("gave up", retry_after=1.5, exhausted=True, status=503)))
    assert (str(back), back.retry_after, back.exhausted, back.status) == ("gave up", 1.5, True, 503)


def status_error(code: int) -> httpx.HTTPStatusError:
    """What the Prefect client raises for an answer it did not retry (its PrefectHTTPStatusError is one)."""
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/artifacts/")
    return httpx.HTTPStatusError(f"{code}", request=request, response=httpx.Response(code, request=request))


@pytest.mark.parametrize(
    ("accept", "error", "retried"),
    [
        # record-release: a lost race is read again and written again; a refusal is not
        (lost_a_race, Conflict("resourceVersion changed"), True),
        (lost_a_race, TransientError("503 from the API server"), True),
        (lost_a_race, TransientError("429", retry_after=MAX_RETRY_AFTER_S + 1), False),
        (lost_a_race, TransientError("gave up", exhausted=True), False),
        (lost_a_race, InputInvalid("entry lacks release_id"), False),
        (lost_a_race, KeyError("release_id"), False),
        # publish-report, record-approval-answer: Prefect's API down or failing, not a bad request
        (prefect_api_transient, httpx.ConnectError("connection refused"), True),
        (prefect_api_transient, httpx.ReadTimeout("timed out"), True),
        (prefect_api_transient, status_error(503), True),
        (prefect_api_transient, status_error(429), True),
        (prefect_api_transient, status_error(422), False),
        (prefect_api_transient, status_error(404), False),
        (prefect_api_transient, Conflict("not Prefect's"), False),
        (prefect_api_transient, TypeError("a bug in the markdown"), False),
    ],
    ids=[
        "race-conflict",
        "race-transient",
        "race-asks-too-long",
        "race-budget-spent",
        "race-bad-entry",
        "race-bug",
        "api-refused",
        "api-timeout",
        "api-503",
        "api-429",
        "api-422",
        "api-404",
        "api-conflict",
        "api-bug",
    ],
)
def test_retry_if_adds_one_kind_to_the_transient_ones_and_nothing_else(
    accept: Any, error: BaseException, retried: bool
) -> None:
    assert retry_if(accept)(task([5.0]), attempt(1), Failed(error)) is retried


def test_tasks_that_retry_do_so_on_a_condition() -> None:
    """Every task of the product with retries names the errors it retries: none retries a bug."""
    import importlib
    import pkgutil

    from prefect import Task

    import greenlight.tasks

    found = []
    for info in pkgutil.iter_modules(greenlight.tasks.__path__):
        module = importlib.import_module(f"greenlight.tasks.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Task) and value.retries:
                found.append(value.name)
                assert value.retry_condition_fn is not None, f"task {value.name} retries on any error"
    assert {"record-release", "publish-report", "record-approval-answer"} <= set(found)
