"""Retry policy shared by every task: retry transient failures only (429, 5xx, timeouts)."""

from __future__ import annotations

import logging
from typing import Any

from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from greenlight.errors import TransientError


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: yes for a TransientError, no for anything else, nor for one
    whose client already spent its own retry budget (starting over would multiply the wait)."""
    try:
        state.result()
    except TransientError as e:
        return not e.exhausted
    except BaseException:
        return False
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
