"""The approval of a production release: its Slack message, and the answers on record.

The approval message is a reply in the release's Slack thread with Approve / Reject buttons
(see :func:`greenlight.core.approval.request_blocks`); once decided it is updated in place and the
buttons go away. Each answer's judgement is also written as a flow run input
(``greenlight-answer-<pause key>``) so that ``greenlight approve`` can say what became of its answer.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import task
from prefect.input import create_flow_run_input

from greenlight.clients.slack import Notifier
from greenlight.core.approval import Judgement, decided_blocks, request_blocks
from greenlight.settings import Profile
from greenlight.tasks.notify import notifier
from greenlight.tasks.policy import FRESH, logger, prefect_api_transient, retry_if

ANSWER_KEY = "greenlight-answer-{pause}"


class ApprovalMessage:
    """The approval request posted in the release's thread, updated in place once decided."""

    def __init__(self, profile: Profile) -> None:
        self._slack: Notifier | None = notifier(profile)
        self.ts: str | None = None

    @property
    def channel(self) -> str:
        return self._slack.channel if self._slack else "-"

    def post(self, text: str, thread: str | None, run_id: str, release: str, environment: str) -> str | None:
        """Post the request (Approve / Reject buttons); its ts, None when Slack is off or down."""
        if self._slack is None:
            return None
        self.ts = _post(self._slack, text, request_blocks(text, run_id, release, environment), thread)
        return self.ts

    def close(self, text: str) -> None:
        """Say what was decided, by whom, when and why, in place of the buttons."""
        if self._slack is not None and self.ts is not None:
            _update(self._slack, self.ts, text, decided_blocks(text))


@task(name="slack-approval-request", retries=0, **FRESH)
def _post(slack: Notifier, text: str, blocks: list[dict[str, Any]], thread: str | None) -> str | None:
    ts = slack.safe_post(text, blocks=blocks, thread_ts=thread)
    if ts is None:
        logger().warning("slack: the approval request was not posted to %s (see above)", slack.channel)
    return ts


@task(name="slack-approval-decided", retries=0, **FRESH)
def _update(slack: Notifier, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
    slack.safe_update(ts, text, blocks=blocks)


@task(name="record-approval-answer", retries=2, retry_condition_fn=retry_if(prefect_api_transient), **FRESH)
def record_answer(pause_key: str, judgement: Judgement) -> None:
    """Write the judgement of the answer to pause ``pause_key`` on the flow run, for the answerer."""
    create_flow_run_input(key=ANSWER_KEY.format(pause=pause_key), value=asdict(judgement))
