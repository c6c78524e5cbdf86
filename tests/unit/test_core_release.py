"""Release planning from cluster state, promotion records, pre-flight checks and release ids."""

from __future__ import annotations

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
        "has no 'color' in its selector: not blue-green (it would route to both colours)",
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
        "has no 'color' in its selector: not blue-green",
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


RELEASE_IDS = [
    ("staging", "4f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39", "staging-4f2a9c1d8e7b"),
    ("production", "4F2A9C1", "production-4f2a9c1"),
    ("staging", " abc ", "staging-abc"),
]


@pytest.mark.parametrize(("env", "commit", "expected"), RELEASE_IDS)
def test_release_id_from_commit(env: str, commit: str, expected: str) -> None:
    """A commit's release id is the environment and the commit's first 12 characters, lowercased."""
    assert release_id(env, commit) == expected


def test_release_id_from_digests_ignores_order_and_differs_by_env() -> None:
    """Digest-based ids depend on the digests, not their order, and differ between environments."""
    one = release_id("staging", {"backend": NEW, "frontend": OLD})
    assert one == release_id("staging", {"frontend": OLD, "backend": NEW})
    assert one.startswith("staging-d") and len(one) == len("staging-d") + 12
    assert one != release_id("production", {"backend": NEW, "frontend": OLD})
    assert one != release_id("staging", {"backend": OLD, "frontend": NEW})


@pytest.mark.parametrize(
    ("env", "what", "message"),
    [
        ("Staging", "abc", "environment name 'Staging' is malformed"),
        ("staging", "abc def", "commit 'abc def' is malformed"),
        ("staging", "", "commit '' is malformed"),
        ("staging", {}, "no digests"),
    ],
)
def test_release_id_refuses_bad_input(env: str, what: str | dict[str, str], message: str) -> None:
    """A malformed environment or commit, or no digests, raises InputInvalid."""
    with pytest.raises(InputInvalid, match=message):
        release_id(env, what)


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
