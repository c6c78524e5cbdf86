"""Release planning from cluster state, promotion records, pre-flight checks and release ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping

import pytest

from greenlight.core.gate import BreachVerdict, GateVerdict
from greenlight.core.manifests import ACTIVE_COLOUR
from greenlight.core.release import (
    AppState,
    ColourState,
    PassedRecord,
    check_preflight,
    check_promotion,
    plan_release,
    release_id,
    sign_record,
    verify_record,
)
from greenlight.core.switch import ServiceSnapshot
from greenlight.errors import InputInvalid

OLD = "sha256:" + "0a" * 32
NEW = "sha256:" + "0b" * 32
COLOURS = ("blue", "green")


def svc(colour: str | None = "blue", active: str | None = None) -> ServiceSnapshot:
    """A live Service selecting ``colour``, optionally recording ``active`` as the active colour."""
    selector = {"app": "backend"} | ({"color": colour} if colour else {})
    return ServiceSnapshot("backend", "7", selector, {ACTIVE_COLOUR: active} if active else {})


def dep(colour: str, digest: str | None, replicas: int = 3, ready: int = 3) -> ColourState:
    return ColourState(colour, digest, replicas, ready)


PLANS = [
    # id, app state, action, live, target, target_has, live_has, spec_from, reason fragment
    (
        "deploy-to-inactive",
        AppState("backend", svc("blue"), {"blue": dep("blue", OLD)}),
        "deploy",
        "blue",
        "green",
        False,
        False,
        "blue",
        "backend: deploy sha256:0b0b0b0b0b0b to green (blue runs sha256:0a0a0a0a0a0a)",
    ),
    (
        "deploy-over-stale-target",
        AppState("backend", svc("green"), {"green": dep("green", OLD), "blue": dep("blue", OLD, 0, 0)}),
        "deploy",
        "green",
        "blue",
        False,
        False,
        "green",
        "deploy sha256:0b0b0b0b0b0b to blue",
    ),
    (
        "resume-target-already-runs-digest",
        AppState("backend", svc("blue"), {"blue": dep("blue", OLD), "green": dep("green", NEW, 3, 2)}),
        "resume",
        "blue",
        "green",
        True,
        False,
        "blue",
        "green already runs sha256:0b0b0b0b0b0b (2/3 ready): resuming without redeploying",
    ),
    (
        "scaled-down-target-with-digest-redeploys",
        AppState("backend", svc("blue"), {"blue": dep("blue", OLD), "green": dep("green", NEW, 0, 0)}),
        "deploy",
        "blue",
        "green",
        True,
        False,
        "blue",
        "deploy sha256:0b0b0b0b0b0b to green",
    ),
    (
        "nothing-live-already-serves",
        AppState("backend", svc("green"), {"green": dep("green", NEW), "blue": dep("blue", OLD)}),
        "nothing",
        "green",
        "blue",
        False,
        True,
        "green",
        "backend: green already serves sha256:0b0b0b0b0b0b: nothing to release",
    ),
    (
        "bootstrap-without-service",
        AppState("backend", None),
        "bootstrap",
        None,
        "blue",
        False,
        False,
        None,
        "no live Service yet: bootstrapping blue with sha256:0b0b0b0b0b0b from the manifests",
    ),
    (
        "no-live-deployment-uses-manifests",
        AppState("backend", svc("blue")),
        "deploy",
        "blue",
        "green",
        False,
        False,
        None,
        "(blue is live; no live Deployment, its spec comes from the manifests)",
    ),
    (
        "unpinned-live-image",
        AppState("backend", svc("blue"), {"blue": dep("blue", None)}),
        "deploy",
        "blue",
        "green",
        False,
        False,
        "blue",
        "(blue runs an image not pinned by digest)",
    ),
    (
        "selector-wins-over-stale-annotation",
        AppState("backend", svc("green", active="blue"), {"green": dep("green", OLD)}),
        "deploy",
        "green",
        "blue",
        False,
        False,
        "green",
        "(the Service records blue as active but its selector routes to green)",
    ),
    (
        "no-colour-in-selector-blocks-despite-annotation",
        AppState("backend", svc(None, active="green"), {"green": dep("green", OLD)}),
        "blocked",
        None,
        "blue",
        False,
        False,
        None,
        "has no 'color' in its selector (app=backend): it is not a blue-green Service (it would route to both colours)",
    ),
    (
        "unknown-live-colour-blocks",
        AppState("backend", svc("red")),
        "blocked",
        "red",
        "blue",
        False,
        False,
        None,
        "backend: live Service backend has color=red, not one of blue/green",
    ),
    (
        "no-colour-at-all-blocks",
        AppState("backend", svc(None)),
        "blocked",
        None,
        "blue",
        False,
        False,
        None,
        "has no 'color' in its selector",
    ),
]


@pytest.mark.parametrize(
    ("state", "action", "live", "target", "target_has", "live_has", "spec_from", "reason"),
    [c[1:] for c in PLANS],
    ids=[c[0] for c in PLANS],
)
def test_plan_release_per_app(
    state: AppState,
    action: str,
    live: str | None,
    target: str,
    target_has: bool,
    live_has: bool,
    spec_from: str | None,
    reason: str,
) -> None:
    """Each app's cluster state gives its action, live and target colour, and a reason."""
    plan = plan_release([state], {"backend": NEW}, COLOURS)
    app = plan.app("backend")
    assert app.action == action
    assert (app.live_colour, app.target_colour) == (live, target)
    assert (app.target_has_digest, app.live_has_digest, app.spec_from) == (target_has, live_has, spec_from)
    assert reason in app.reason
    assert app.digest == NEW


BACKEND_DEPLOY = AppState("backend", svc("blue"), {"blue": dep("blue", OLD)})
FRONTEND_DONE = AppState("frontend", svc("green"), {"green": dep("green", NEW)})
FRONTEND_BLOCKED = AppState("frontend", svc("red"))


@pytest.mark.parametrize(
    ("states", "blocked", "nothing", "switching", "reason"),
    [
        ([BACKEND_DEPLOY, FRONTEND_DONE], False, False, ["backend"], "backend: deploy"),
        ([FRONTEND_DONE], False, True, [], "nothing to release: every app already serves its digest"),
        ([BACKEND_DEPLOY, FRONTEND_BLOCKED], True, False, ["backend"], "blocked: frontend: live Service"),
    ],
    ids=["mixed", "all-nothing", "one-blocked-blocks-all"],
)
def test_release_plan_summary(
    states: list[AppState], blocked: bool, nothing: bool, switching: list[str], reason: str
) -> None:
    """The plan of several apps is blocked if any is, nothing only if all are, and lists the apps to switch."""
    digests = {s.name: NEW for s in states}
    plan = plan_release(states, digests, COLOURS)
    assert plan.blocked is blocked
    assert plan.nothing_to_release is nothing
    assert [a.app for a in plan.to_switch] == switching
    assert reason in plan.reason


@pytest.mark.parametrize(
    ("digests", "colours", "message"),
    [
        ({"backend": NEW, "worker": NEW}, COLOURS, "digests for unknown apps: worker"),
        ({}, COLOURS, "no digest for apps: backend"),
        ({"backend": NEW}, ("blue", "blue"), "two different"),
    ],
)
def test_plan_release_refuses_mismatched_input(
    digests: dict[str, str], colours: tuple[str, str], message: str
) -> None:
    """Digests that do not match the apps one to one, or a bad colour pair, raise InputInvalid."""
    with pytest.raises(InputInvalid, match=message):
        plan_release([BACKEND_DEPLOY], digests, colours)


def test_plan_app_lookup_names_the_apps() -> None:
    """Asking a plan for an app it does not hold raises InputInvalid listing the apps it does."""
    plan = plan_release([BACKEND_DEPLOY], {"backend": NEW}, COLOURS)
    with pytest.raises(InputInvalid, match=r"'web' is not part of this release \(backend\)"):
        plan.app("web")


PROMOTIONS = [
    # id, digests, passed, ok, reason fragment
    (
        "all-passed-mapping",
        {"backend": NEW},
        {"backend": {OLD, NEW}},
        True,
        "every digest passed staging: backend sha256:0b0b",
    ),
    (
        "unproven-named",
        {"backend": NEW, "frontend": OLD},
        {"backend": {NEW}},
        False,
        f"refusing: not passed in staging: frontend {OLD}",
    ),
    ("digest-of-other-app", {"backend": NEW}, {"frontend": [NEW]}, False, f"backend {NEW}"),
    (
        "records",
        {"backend": NEW},
        [PassedRecord("backend", NEW, "staging", "staging-abc")],
        True,
        "every digest passed",
    ),
    (
        "records-unlabelled-count",
        {"backend": NEW},
        [PassedRecord("backend", NEW)],
        True,
        "every digest passed",
    ),
    (
        "records-of-other-env-ignored",
        {"backend": NEW},
        [PassedRecord("backend", NEW, "dev")],
        False,
        "not passed in staging",
    ),
    ("nothing-to-promote", {}, {}, False, "nothing to promote"),
]


@pytest.mark.parametrize(
    ("digests", "passed", "ok", "reason"), [c[1:] for c in PROMOTIONS], ids=[c[0] for c in PROMOTIONS]
)
def test_check_promotion(
    digests: dict[str, str],
    passed: Mapping[str, Collection[str]] | Iterable[PassedRecord],
    ok: bool,
    reason: str,
) -> None:
    """Production accepts only digests that passed staging, naming each app and digest that did not."""
    decision = check_promotion(digests, passed)
    assert decision.ok is ok
    assert reason in decision.reason
    assert bool(decision.blockers) is not ok


LIVE_FAIL = GateVerdict("fail", "error rate 9.00% > 5.00%", ())
LIVE_PASS = GateVerdict("pass", "fine", ())
LIVE_INCONCLUSIVE = GateVerdict("inconclusive", "too little data", ())
BREACH = BreachVerdict("breach", "p95 900 ms > 500 ms", ())
QUIET = BreachVerdict("no-data", "no data", ())

PREFLIGHTS = [
    # id, freeze, forced, live, ok, forced?, reason fragment
    ("clear", None, None, None, True, False, "pre-flight clear"),
    ("blank-freeze", "  ", None, LIVE_PASS, True, False, "pre-flight clear"),
    ("freeze-false", "False", None, None, True, False, "pre-flight clear"),
    (
        "freeze",
        "holiday freeze until Jan 5",
        None,
        None,
        False,
        False,
        "blocked: release freeze declared: holiday freeze until Jan 5 (force with a reason to override)",
    ),
    (
        "freeze-forced",
        "holiday",
        "hotfix for INC-42",
        None,
        True,
        True,
        "forced past: release freeze declared: holiday (forced: hotfix for INC-42)",
    ),
    (
        "freeze-forced-blank-reason",
        "holiday",
        "  ",
        None,
        False,
        False,
        "a forced release needs a non-empty reason",
    ),
    (
        "live-gate-fail",
        None,
        None,
        LIVE_FAIL,
        False,
        False,
        "live colour is failing its own gate: error rate 9.00% > 5.00%",
    ),
    ("live-breach", None, None, BREACH, False, False, "live colour is failing its own gate: p95 900 ms"),
    (
        "live-inconclusive-does-not-block",
        None,
        None,
        LIVE_INCONCLUSIVE,
        True,
        False,
        "pre-flight clear: no freeze; live colour not judged (too little data)",
    ),
    (
        "live-no-data-does-not-block",
        None,
        None,
        {"web": QUIET},
        True,
        False,
        "web live colour not judged (no data)",
    ),
    ("live-ok", None, None, BreachVerdict("ok", "fine", ()), True, False, "pre-flight clear: no freeze"),
    (
        "per-app",
        None,
        None,
        {"backend": LIVE_PASS, "frontend": BREACH},
        False,
        False,
        "frontend live colour is failing its own gate",
    ),
    (
        "both-blockers-forced",
        "freeze",
        "CEO says go",
        LIVE_FAIL,
        True,
        True,
        "release freeze declared: freeze; live colour is failing",
    ),
]


@pytest.mark.parametrize(
    ("freeze", "forced", "live", "ok", "was_forced", "reason"),
    [c[1:] for c in PREFLIGHTS],
    ids=[c[0] for c in PREFLIGHTS],
)
def test_check_preflight(
    freeze: str | None,
    forced: str | None,
    live: GateVerdict | BreachVerdict | Mapping[str, GateVerdict | BreachVerdict] | None,
    ok: bool,
    was_forced: bool,
    reason: str,
) -> None:
    """A freeze or a failing live colour blocks a release unless forced with a non-empty reason."""
    decision = check_preflight(freeze, forced, live)
    assert decision.ok is ok
    assert decision.forced is was_forced
    assert reason in decision.reason


DIGESTS = {"backend": NEW, "frontend": OLD}
DIGEST_HASH = hashlib.sha256(json.dumps(DIGESTS, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
RELEASE_IDS = [
    ("staging", "4f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39", f"staging-4f2a9c1d8e7b-{DIGEST_HASH[:8]}"),
    ("production", "4F2A9C1", f"production-4f2a9c1-{DIGEST_HASH[:8]}"),
    ("staging", " abc ", f"staging-abc-{DIGEST_HASH[:8]}"),
    ("staging", None, f"staging-d{DIGEST_HASH[:12]}"),
]


@pytest.mark.parametrize(("env", "commit", "expected"), RELEASE_IDS)
def test_release_id_from_commit_and_digests(env: str, commit: str | None, expected: str) -> None:
    """A release id is the environment, the commit's first 12 characters (lowercased) and a hash of the digests."""
    assert release_id(env, DIGESTS, commit) == expected


def test_release_id_is_unique_per_set_of_digests() -> None:
    """Ids depend on the digests, not their order; they differ between environments, between digest
    sets under one commit, and between commits alike in their first 12 characters (a test that
    failed when ids were the commit's first 12 characters)."""
    one = release_id("staging", DIGESTS)
    assert one == release_id("staging", {"frontend": OLD, "backend": NEW})
    assert one != release_id("production", DIGESTS)
    assert one != release_id("staging", {"backend": OLD, "frontend": NEW})
    assert release_id("staging", DIGESTS, "abc") != release_id(
        "staging", {"backend": OLD, "frontend": NEW}, "abc"
    )
    jan = release_id("staging", DIGESTS, "release-2025-01")
    feb = release_id("staging", {"backend": OLD, "frontend": NEW}, "release-2025-02")
    assert jan != feb


@pytest.mark.parametrize(
    ("env", "digests", "commit", "message"),
    [
        ("Staging", DIGESTS, "abc", "environment name 'Staging' is malformed"),
        ("staging", DIGESTS, "abc def", "commit 'abc def' is malformed"),
        ("staging", DIGESTS, "", "commit '' is malformed"),
        ("staging", {}, "abc", "no digests"),
    ],
)
def test_release_id_refuses_bad_input(env: str, digests: dict[str, str], commit: str, message: str) -> None:
    """A malformed environment or commit, or no digests, raises InputInvalid."""
    with pytest.raises(InputInvalid, match=message):
        release_id(env, digests, commit)


UNWATCHED = PassedRecord(
    "backend", NEW, "staging", "staging-abc", unwatched="its bake judged 3 of 8 window(s)"
)
WATCHED = PassedRecord("backend", NEW, "staging", "staging-def")
BAKE_RULES = [
    # id, records, force reason, ok, forced, reason fragment
    ("unwatched-refused", [UNWATCHED], None, False, False, "the staging bake was not judged throughout"),
    ("unwatched-names-why", [UNWATCHED], None, False, False, "its bake judged 3 of 8 window(s)"),
    ("unwatched-forced", [UNWATCHED], "Monitoring outage, watched by hand", True, True, "forced (Monitoring"),
    ("one-watched-pass-is-enough", [UNWATCHED, WATCHED], None, True, False, "every digest passed staging"),
]


@pytest.mark.parametrize(
    ("records", "force", "ok", "forced", "reason"),
    [c[1:] for c in BAKE_RULES],
    ids=[c[0] for c in BAKE_RULES],
)
def test_production_refuses_digests_whose_staging_bake_was_not_judged(
    records: list[PassedRecord], force: str | None, ok: bool, forced: bool, reason: str
) -> None:
    """A staging pass whose bake was not judged throughout is no proof: refused unless a person forces it with a reason."""
    decision = check_promotion({"backend": NEW}, records, force_reason=force)
    assert (decision.ok, decision.forced) == (ok, forced)
    assert reason in decision.reason


KEY = b"k" * 32
SIGNED = {
    "release_id": "staging-abc",
    "environment": "staging",
    "digests": {"backend": NEW},
    "outcome": "released",
}
SIGNED = {**SIGNED, "signature": sign_record(SIGNED, KEY)}
RECORD_CASES = [
    # id, entry, key, why fragment (None: trusted)
    ("signed", SIGNED, KEY, None),
    ("no-signature", {k: v for k, v in SIGNED.items() if k != "signature"}, KEY, "it has no signature"),
    ("other-scheme", {**SIGNED, "signature": "sha256:00"}, KEY, "is not hmac-sha256"),
    ("digest-edited", {**SIGNED, "digests": {"backend": OLD}}, KEY, "does not match its content"),
    ("author-edited", {**SIGNED, "author": "mallory"}, KEY, "does not match its content"),
    ("outcome-edited", {**SIGNED, "outcome": "released ", "bake": {"watched": True}}, KEY, "does not match"),
    ("other-key", SIGNED, b"x" * 32, "signed with another key"),
]


@pytest.mark.parametrize(
    ("entry", "key", "why"), [c[1:] for c in RECORD_CASES], ids=[c[0] for c in RECORD_CASES]
)
def test_a_release_record_is_trusted_only_with_its_signature(
    entry: dict, key: bytes, why: str | None
) -> None:
    """A record verifies only as its key signed it: no signature, another scheme, any edited field or another key is named."""
    got = verify_record(entry, key)
    assert (got is None) if why is None else (got is not None and why in got), got


def test_production_refuses_a_digest_passed_only_by_a_record_that_does_not_verify() -> None:
    """A forged 'released' record (no valid signature) does not let a digest pass staging, and the refusal names the record."""
    forged = PassedRecord("backend", NEW, "staging", "staging-forged", untrusted="it has no signature")
    decision = check_promotion({"backend": NEW}, [forged])
    assert not decision.ok
    assert "record staging-forged it has no signature" in decision.reason
    genuine = PassedRecord("backend", NEW, "staging", "staging-real")
    assert check_promotion({"backend": NEW}, [forged, genuine]).ok


@pytest.mark.parametrize(
    ("text", "cell"),
    [
        ("a|b", "a\\|b"),
        ("two\nlines", "two lines"),
        (r"(?P<date>\d{4})\.sql", r"(?P&lt;date>\d{4})\.sql"),
        ("R&D", "R&amp;D"),
    ],
    ids=["pipe", "newline", "regex-group-is-not-a-tag", "ampersand"],
)
def test_a_report_cell_renders_as_written(text: str, cell: str) -> None:
    """A table cell of a report (release, backup, drill) shows its text as is in the Prefect UI."""
    from greenlight.core.report import table_cell

    assert table_cell(text) == cell
