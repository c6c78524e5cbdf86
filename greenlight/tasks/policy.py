"""Retry policy shared by every task: retry transient failures only (429, 5xx, timeouts), and no
sooner than the server's ``Retry-After``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from greenlight.errors import Conflict, TransientError, is_transient

#: the longest a task waits for a server's ``Retry-After`` before its next try; a server asking
#: for longer is not retried: the task fails with the TransientError (exit code 4, run it later)
MAX_RETRY_AFTER_S = 30.0


def retry_pause(
    error: BaseException, planned_s: float, max_wait_s: float = MAX_RETRY_AFTER_S
) -> float | None:
    """How long to wait, before Prefect's own ``planned_s`` delay, so that the next try of a task
    that raised ``error`` starts no sooner than the server's ``Retry-After``; None: do not retry
    (not transient, the client's budget spent, or the server asked for more than ``max_wait_s``)."""
    if not is_transient(error):
        return None
    assert isinstance(error, TransientError)  # is_transient said so
    if error.retry_after is None:
        return 0.0
    if error.retry_after > max_wait_s:
        return None
    return max(0.0, error.retry_after - planned_s)


def planned_delay(task: Any, task_run: Any) -> float:
    """The delay Prefect puts before the next try of ``task`` (its ``retry_delay_seconds`` for the
    attempt ``task_run.run_count`` that just failed); 0 when unknown or jittered (jitter may shorten it)."""
    delays = getattr(task, "retry_delay_seconds", None)
    if not delays or getattr(task, "retry_jitter_factor", None):
        return 0.0
    if isinstance(delays, Sequence):
        attempt = max(1, int(getattr(task_run, "run_count", 1) or 1))
        return float(delays[min(attempt - 1, len(delays) - 1)])
    return float(delays)


def retry_transient_within(max_wait_s: float) -> Callable[[Any, Any, Any], bool]:
    """A Prefect ``retry_condition_fn``: yes for a transient error (:func:`greenlight.errors.is_transient`),
    after sleeping what the server's ``Retry-After`` asks beyond Prefect's planned delay, when that
    is at most ``max_wait_s``; no for anything else. (Prefect asks only while retries are left.)"""

    def retry(task: Any, task_run: Any, state: Any) -> bool:
        try:
            state.result()
        except BaseException as e:
            error: BaseException = e
        else:
            return False
        pause = retry_pause(error, planned_delay(task, task_run), max_wait_s)
        if pause is None:
            if isinstance(error, TransientError) and error.retry_after is not None and not error.exhausted:
                logger().warning(
                    "not retrying: the server asks to wait %.0f s (Retry-After), more than %.0f s",
                    error.retry_after,
                    max_wait_s,
                )
            return False
        if pause > 0:
            logger().info(
                "the server asked to wait (Retry-After): waiting %.1f s more than the planned %.1f s",
                pause,
                planned_delay(task, task_run),
            )
            time.sleep(pause)
        return True

    retry.__name__ = retry.__qualname__ = f"retry_transient_within({max_wait_s:g})"
    return retry


#: the ``retry_condition_fn`` of every task with retries: transient failures only, not once the
#: client spent its own retry budget (starting over would multiply the wait), and no sooner than
#: the server's ``Retry-After`` (up to :data:`MAX_RETRY_AFTER_S`)
retry_transient = retry_transient_within(MAX_RETRY_AFTER_S)


def retry_if(accept: Callable[[BaseException], bool]) -> Callable[[Any, Any, Any], bool]:
    """A ``retry_condition_fn``: what :data:`retry_transient` retries (honouring Retry-After), and
    also an error ``accept`` takes; nothing else (a bug or a refusal is never tried again)."""

    def retry(task: Any, task_run: Any, state: Any) -> bool:
        if retry_transient(task, task_run, state):
            return True
        try:
            state.result()
        except BaseException as e:
            return not isinstance(e, TransientError) and accept(e)
        return False

    retry.__name__ = retry.__qualname__ = f"retry_if({getattr(accept, '__name__', 'accept')})"
    return retry


def lost_a_race(error: BaseException) -> bool:
    """A write that lost an optimistic-concurrency race (a stale resourceVersion, created meanwhile):
    read again and write again."""
    return isinstance(error, Conflict)


def prefect_api_transient(error: BaseException) -> bool:
    """A call to Prefect's API that may work on another try: the connection failed or timed out, or
    the server answered 429 or 5xx (after the Prefect client's own retries)."""
    if isinstance(error, httpx.TransportError):
        return True
    if isinstance(error, httpx.HTTPStatusError):
        code = error.response.status_code
        return code == 429 or code >= 500
    return False


# Greenlight's tasks read live state: never serve a cached result of an earlier call
FRESH: dict[str, Any] = {"cache_policy": NO_CACHE}

# use as @task(**FRESH, **RETRIES)
RETRIES: dict[str, Any] = {
    "retries": 5,
    "retry_delay_seconds": [0.5, 1, 2, 4, 8],
    "retry_condition_fn": retry_transient,
}


def logger(name: str = "greenlight") -> logging.Logger | logging.LoggerAdapter[Any]:
    """The run logger inside a flow or task run (its lines reach the Prefect UI), a plain one outside."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(name)
