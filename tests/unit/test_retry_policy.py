"""The tasks' retry rule: transient failures only, and not once the client spent its own budget."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from greenlight.errors import Conflict, InputInvalid, TransientError
from greenlight.tasks.policy import retry_transient


class Failed:
    """A Prefect state whose result raises ``error`` (what retry_condition_fn is given)."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def result(self) -> Any:
        raise self.error


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (TransientError("503 from the API server"), True),
        (TransientError("429", retry_after=2.0), True),
        (TransientError("gave up retrying: 503", exhausted=True), False),
        (Conflict("resourceVersion changed"), False),
        (InputInvalid("malformed image reference"), False),
        (RuntimeError("a bug"), False),
    ],
    ids=["transient", "rate-limited", "client-budget-spent", "conflict", "bad-input", "bug"],
)
def test_only_transient_failures_with_budget_left_are_retried(error: BaseException, retried: bool) -> None:
    assert retry_transient(None, None, Failed(error)) is retried


def test_transient_error_keeps_its_fields_through_pickling() -> None:
    """Prefect may persist a failed state's exception: retry_after and exhausted must survive."""
    back = pickle.loads(pickle.dumps(TransientError("gave up", retry_after=1.5, exhausted=True)))
    assert (str(back), back.retry_after, back.exhausted) == ("gave up", 1.5, True)
