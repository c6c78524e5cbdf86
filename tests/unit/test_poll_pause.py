"""``tasks.kube.poll_pause``: how a poll loop treats a read that failed for a while."""

from __future__ import annotations

import pytest

from greenlight.errors import TransientError
from greenlight.tasks import kube


@pytest.mark.parametrize(
    ("retry_after", "remaining", "poll", "slept"),
    [
        (None, 10.0, 0.5, 0.5),  # no word from the server: the loop's own pace
        (2.0, 10.0, 0.5, 2.0),  # the server's Retry-After, when longer
        (0.1, 10.0, 0.5, 0.5),  # never faster than the loop's pace
        (30.0, 4.0, 0.5, 4.0),  # never past the deadline
    ],
)
def test_a_pause_honours_retry_after_within_the_deadline(
    retry_after: float | None, remaining: float, poll: float, slept: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(kube.time, "sleep", pauses.append)
    kube.poll_pause(
        TransientError("HTTP 429", retry_after=retry_after, status=429), remaining, "x", "y", poll
    )
    assert pauses == [slept]


@pytest.mark.parametrize("remaining", [0.0, -3.0])
def test_past_the_deadline_the_error_is_raised_naming_what_and_keeping_the_status(remaining: float) -> None:
    e = TransientError("HTTP 429: too many requests", retry_after=1.0, status=429, code="TooManyRequests")
    with pytest.raises(TransientError) as caught:
        kube.poll_pause(e, remaining, "pre-deploy job ns/migrate", "the progress deadline", 0.5)
    assert str(caught.value) == (
        "pre-deploy job ns/migrate unreadable until the progress deadline: HTTP 429: too many requests"
    )
    assert (caught.value.status, caught.value.retry_after, caught.value.code) == (429, 1.0, "TooManyRequests")
    assert caught.value.__cause__ is e
