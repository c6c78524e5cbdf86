"""The receiver's pure decisions: signatures, routes from profiles, and the filter, branch by branch."""

from __future__ import annotations

from typing import Any

import pytest

from greenlight.errors import InputInvalid
from greenlight.settings import GitHub
from greenlight.webhook.verify import (
    PayloadInvalid,
    Route,
    RunIdentity,
    build_routes,
    decide,
    event_resource,
    field,
    resource_id,
    sign,
    signature_valid,
)

from .support import REPO, ROUTES, run_payload

BODY = b'{"zen": "Keep it logically awesome."}'
GOOD = sign(b"s3cret", BODY)


@pytest.mark.parametrize(
    ("secret", "body", "header", "valid"),
    [
        (b"s3cret", BODY, GOOD, True),
        (b"s3cret", BODY, f"  {GOOD} ", True),  # surrounding whitespace is not part of the value
        (b"s3cret", BODY, None, False),  # missing header
        (b"s3cret", BODY, "", False),  # empty header
        (b"s3cret", BODY, GOOD.removeprefix("sha256="), False),  # bare hex without the prefix
        (b"s3cret", BODY, "sha1=" + GOOD.removeprefix("sha256="), False),  # another algorithm
        (b"s3cret", BODY, GOOD.upper(), False),  # GitHub sends lowercase hex
        (b"s3cret", BODY, GOOD[:-1], False),  # truncated
        (b"s3cret", BODY + b" ", GOOD, False),  # body changed after signing
        (b"other", BODY, GOOD, False),  # signed with another secret
        (b"", BODY, sign(b"", BODY), False),  # an empty secret never verifies
        (b"s3cret", BODY, "sha256=é" + "0" * 63, False),  # non-ASCII in the header
    ],
)
def test_signature_valid_only_for_the_exact_hmac(
    secret: bytes, body: bytes, header: str | None, valid: bool
) -> None:
    """Only ``sha256=`` plus the lowercase hex HMAC-SHA256 of the exact body under the secret verifies."""
    assert signature_valid(secret, body, header) is valid


def test_sign_matches_githubs_documented_example() -> None:
    """``sign`` reproduces the example in GitHub's "Validating webhook deliveries" documentation."""
    assert (
        sign(b"It's a Secret to Everybody", b"Hello, World!")
        == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


@pytest.mark.parametrize(
    ("event", "payload", "action", "reason"),
    [
        ("ping", {"zen": "Design for failure."}, "ping", "ping"),
        ("push", run_payload(), "ignore", "event push is not workflow_run"),
        ("workflow_run", run_payload(action="requested"), "ignore", "action requested is not completed"),
        ("workflow_run", run_payload(action="in_progress"), "ignore", "action in_progress is not completed"),
        (
            "workflow_run",
            run_payload(repository="someone/else"),
            "ignore",
            "repository someone/else is not configured",
        ),
        (
            "workflow_run",
            run_payload(workflow="lint"),
            "ignore",
            "workflow 'lint' of sma-platform/sma is not configured",
        ),
        ("workflow_run", run_payload(conclusion="failure"), "ignore", "conclusion failure is not success"),
        (
            "workflow_run",
            run_payload(conclusion="cancelled"),
            "ignore",
            "conclusion cancelled is not success",
        ),
        ("workflow_run", run_payload(conclusion=None), "ignore", "conclusion None is not success"),
        (
            "workflow_run",
            run_payload(branch="feature/x"),
            "ignore",
            "branch feature/x releases no environment",
        ),
        ("workflow_run", run_payload(branch=None), "ignore", "branch None releases no environment"),
        (
            "workflow_run",
            run_payload(trigger="pull_request", head_repository="evil/sma"),
            "ignore",
            "run from fork evil/sma, not sma-platform/sma",
        ),
        (
            "workflow_run",
            run_payload(trigger="push", head_repository="evil/sma"),
            "ignore",
            "run from fork evil/sma, not sma-platform/sma",
        ),
        (
            "workflow_run",
            run_payload(trigger="pull_request", head_repository="sma-platform/sma-fork"),
            "ignore",
            "run from fork sma-platform/sma-fork, not sma-platform/sma",
        ),
        ("workflow_run", run_payload(trigger="pull_request"), "ignore", "event pull_request, not push"),
        (
            "workflow_run",
            run_payload(trigger="pull_request_target"),
            "ignore",
            "event pull_request_target, not push",
        ),
        (
            "workflow_run",
            run_payload(trigger="workflow_dispatch"),
            "ignore",
            "event workflow_dispatch, not push",
        ),
        ("workflow_run", run_payload(trigger="schedule"), "ignore", "event schedule, not push"),
        (
            "workflow_run",
            run_payload(head_repository="SMA-PLATFORM/sma"),
            "emit",
            "develop of sma-platform/sma releases staging",
        ),
        (
            "workflow_run",
            run_payload(branch="develop"),
            "emit",
            "develop of sma-platform/sma releases staging",
        ),
        ("workflow_run", run_payload(branch="main"), "emit", "main of sma-platform/sma releases production"),
        (
            "workflow_run",
            run_payload(repository="SMA-Platform/SMA"),
            "emit",
            "develop of SMA-Platform/SMA releases staging",
        ),
    ],
)
def test_decide_names_the_first_reason_a_delivery_is_not_a_release(
    event: str, payload: dict[str, Any], action: str, reason: str
) -> None:
    """Event, action, repository (case-insensitive, as GitHub's), workflow, the run's head repository
    (no fork) and trigger (push only), conclusion and branch are checked in order."""
    decision = decide(event, "d-1", payload, ROUTES)
    assert (decision.action, decision.reason) == (action, reason)


def test_decide_emits_the_documented_payload_for_the_branchs_environment() -> None:
    """A successful develop run releases staging with sha, branch, actor, delivery, repository, workflow, run URL."""
    decision = decide("workflow_run", "72d3162e", run_payload(sha="abc123", actor="erin"), ROUTES)
    assert decision.environment == "staging"
    assert decision.payload == {
        "sha": "abc123",
        "branch": "develop",
        "actor": "erin",
        "delivery": "72d3162e",
        "environment": "staging",
        "repository": REPO,
        "workflow": "build-images",
        "run_url": "https://github.com/sma-platform/sma/actions/runs/30433642",
        "run_id": 30433642,
        "run_attempt": 1,
        "commit_at": "2026-11-30T15:20:05+00:00",  # head_commit.timestamp, in UTC
    }


@pytest.mark.parametrize(
    ("timestamp", "commit_at"),
    [
        ("2026-11-30T16:20:05+01:00", "2026-11-30T15:20:05+00:00"),  # the committer's offset
        ("2026-11-30T15:20:05Z", "2026-11-30T15:20:05+00:00"),  # Z
        ("2026-11-30T10:20:05-05:00", "2026-11-30T15:20:05+00:00"),
        (None, None),  # head_commit: null
    ],
)
def test_decide_carries_the_signed_head_commit_time_in_utc(
    timestamp: str | None, commit_at: str | None
) -> None:
    """The emitted payload's commit_at is workflow_run.head_commit.timestamp in UTC, None without a head commit."""
    decision = decide("workflow_run", "d-1", run_payload(commit_timestamp=timestamp), ROUTES)
    assert decision.action == "emit" and decision.payload is not None
    assert decision.payload["commit_at"] == commit_at


@pytest.mark.parametrize(
    ("timestamp", "problem"),
    [
        ("yesterday", "expected an ISO 8601 date-time, got 'yesterday'"),
        ("2026-11-30T15:20:05", "expected a date-time with its UTC offset"),
        (1764516005, "expected a string or null, got a number"),
    ],
)
def test_a_malformed_head_commit_time_is_refused_naming_the_field(timestamp: object, problem: str) -> None:
    """A head commit time that is not an ISO 8601 date-time with its offset is PayloadInvalid naming the field."""
    payload = run_payload()
    payload["workflow_run"]["head_commit"]["timestamp"] = timestamp
    with pytest.raises(PayloadInvalid, match=r"workflow_run\.head_commit\.timestamp") as err:
        decide("workflow_run", "d-1", payload, ROUTES)
    assert problem in str(err.value)


def _without(path: str) -> dict[str, Any]:
    payload = run_payload()
    *parents, last = path.split(".")
    node = payload
    for p in parents:
        node = node[p]
    del node[last]
    return payload


def _with(path: str, value: Any) -> dict[str, Any]:
    payload = run_payload()
    *parents, last = path.split(".")
    node = payload
    for p in parents:
        node = node[p]
    node[last] = value
    return payload


@pytest.mark.parametrize(
    ("payload", "field_name", "message"),
    [
        (_without("action"), "action", "field action: missing"),
        (_without("repository"), "repository.full_name", "field repository.full_name: missing"),
        (_without("repository.full_name"), "repository.full_name", "field repository.full_name: missing"),
        (_with("repository", "sma"), "repository", "field repository: expected an object"),
        (_without("workflow_run"), "workflow_run.name", "field workflow_run.name: missing"),
        (
            _without("workflow_run.conclusion"),
            "workflow_run.conclusion",
            "field workflow_run.conclusion: missing",
        ),
        (
            _without("workflow_run.head_branch"),
            "workflow_run.head_branch",
            "field workflow_run.head_branch: missing",
        ),
        (_without("workflow_run.head_sha"), "workflow_run.head_sha", "field workflow_run.head_sha: missing"),
        (
            _with("workflow_run.head_sha", 42),
            "workflow_run.head_sha",
            "field workflow_run.head_sha: expected a string, got a number",
        ),
        (
            _with("workflow_run.conclusion", True),
            "workflow_run.conclusion",
            "field workflow_run.conclusion: expected a string or null, got a boolean",
        ),
        (_without("workflow_run.html_url"), "workflow_run.html_url", "field workflow_run.html_url: missing"),
        (_without("workflow_run.event"), "workflow_run.event", "field workflow_run.event: missing"),
        (
            _without("workflow_run.head_repository"),
            "workflow_run.head_repository",
            "field workflow_run.head_repository: missing",
        ),
        (
            _without("workflow_run.head_repository.full_name"),
            "workflow_run.head_repository.full_name",
            "field workflow_run.head_repository.full_name: missing",
        ),
        (_without("workflow_run.id"), "workflow_run.id", "field workflow_run.id: missing"),
        (
            _with("workflow_run.id", "30433642"),
            "workflow_run.id",
            "field workflow_run.id: expected a number, got a string",
        ),
        (
            _with("workflow_run.id", True),
            "workflow_run.id",
            "field workflow_run.id: expected a number, got a boolean",
        ),
        (
            _without("workflow_run.run_attempt"),
            "workflow_run.run_attempt",
            "field workflow_run.run_attempt: missing",
        ),
        (
            _with("workflow_run.run_attempt", 0),
            "workflow_run.run_attempt",
            "field workflow_run.run_attempt: expected a positive number, got 0",
        ),
    ],
)
def test_decide_names_a_missing_or_mistyped_field(
    payload: dict[str, Any], field_name: str, message: str
) -> None:
    """A field the decision needs that is absent or of the wrong JSON type raises PayloadInvalid naming it."""
    with pytest.raises(PayloadInvalid) as caught:
        decide("workflow_run", "d-1", payload, ROUTES)
    assert (caught.value.field, str(caught.value)) == (field_name, message)


def test_a_run_from_a_deleted_fork_is_ignored() -> None:
    """GitHub sends head_repository null once the fork is gone: not ours, ignored."""
    payload = _with("workflow_run.head_repository", None)
    decision = decide("workflow_run", "d-1", payload, ROUTES)
    assert (decision.action, decision.reason) == (
        "ignore",
        "run from an unknown head repository (null), not sma-platform/sma",
    )


def test_decide_names_the_signed_run_it_releases() -> None:
    """An emit decision carries the run's identity from the signed payload: repository (as GitHub
    compares it, case-insensitively), run id and attempt."""
    decision = decide(
        "workflow_run", "d-1", run_payload(repository="SMA-Platform/SMA", run_attempt=3), ROUTES
    )
    assert decision.run == RunIdentity("sma-platform/sma", 30433642, 3)
    assert decision.run.key == "sma-platform/sma/actions/runs/30433642/attempts/3"


def test_fields_only_needed_to_emit_do_not_fail_an_ignored_delivery() -> None:
    """An ignored delivery (another repository) is not rejected for lacking head_sha."""
    payload = run_payload(repository="someone/else")
    del payload["workflow_run"]["head_sha"]
    assert decide("workflow_run", "d-1", payload, ROUTES).action == "ignore"


@pytest.mark.parametrize(
    ("actor", "sender", "expected"),
    [
        ({"login": "erin"}, {"login": "frank"}, "erin"),
        (None, {"login": "frank"}, "frank"),
        ({}, {"login": "frank"}, "frank"),
    ],
)
def test_actor_is_the_runs_actor_else_the_sender(actor: Any, sender: Any, expected: str) -> None:
    """The payload's actor is workflow_run.actor.login, falling back to sender.login."""
    payload = run_payload()
    payload["workflow_run"]["actor"] = actor
    payload["sender"] = sender
    decision = decide("workflow_run", "d-1", payload, ROUTES)
    assert decision.payload is not None and decision.payload["actor"] == expected


def test_no_actor_at_all_names_the_field() -> None:
    """Without workflow_run.actor.login nor sender.login the delivery is rejected naming the actor field."""
    payload = run_payload()
    del payload["workflow_run"]["actor"], payload["sender"]
    with pytest.raises(PayloadInvalid, match=r"workflow_run\.actor\.login: missing"):
        decide("workflow_run", "d-1", payload, ROUTES)


def test_field_on_a_non_object_body_names_the_body() -> None:
    """Looking into a body that is not an object names '(body)'."""
    with pytest.raises(PayloadInvalid, match=r"field \(body\): expected an object"):
        field([], "action")  # type: ignore[arg-type]


def test_build_routes_from_profiles_skips_environments_without_github() -> None:
    """Each profile's github section becomes a route to that environment; profiles without one give none."""
    routes = build_routes(
        [
            ("staging", GitHub(repository=REPO, workflow="build-images", branch="develop")),
            ("dr", None),
            ("production", GitHub(repository=REPO, workflow="build-images", branch="main")),
        ]
    )
    assert routes == (
        Route("staging", REPO, "build-images", "develop"),
        Route("production", REPO, "build-images", "main"),
    )


def test_build_routes_refuses_two_environments_on_one_branch() -> None:
    """Two environments released by the same repository, workflow and branch are a configuration error."""
    same = GitHub(repository=REPO, workflow="build-images", branch="develop")
    with pytest.raises(InputInvalid, match="'staging' and 'qa' both release on sma-platform/sma"):
        build_routes([("staging", same), ("qa", same)])


def test_resource_id_names_the_repository() -> None:
    """The event's resource is github.repo.OWNER/NAME."""
    assert resource_id(REPO) == "github.repo.sma-platform/sma"


def test_event_resource_labels_the_repository_with_branch_and_environment() -> None:
    """The event's resource is the repository, labelled so a trigger can match its environment."""
    decision = decide("workflow_run", "d-1", run_payload(branch="main"), ROUTES)
    assert decision.payload is not None
    assert event_resource(decision.payload) == {
        "prefect.resource.id": "github.repo.sma-platform/sma",
        "prefect.resource.name": "sma-platform/sma",
        "github.branch": "main",
        "greenlight.environment": "production",
    }
