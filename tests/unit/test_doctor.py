"""greenlight.core.doctor: the access table, each verdict, the output and the exit code."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from greenlight.core import doctor as dr
from greenlight.core.drill import APPLY_ORDER
from greenlight.core.restore import REPLACED_KINDS
from greenlight.errors import GateFailed, exit_code

ROOT = Path(__file__).resolve().parents[2]
COLOURS = ("blue", "green")


# --- the access table ------------------------------------------------------------------------------

# how a Kube method maps onto the RBAC verb it needs
KUBE_VERBS = {"get": "get", "find": "get", "items": "list", "list": "list", "create": "create",
              "replace": "update", "patch": "patch", "delete": "delete", "watch": "watch"}  # fmt: skip
PLURAL_CONSTANTS = {
    "CLONED_KINDS": ("horizontalpodautoscalers", "poddisruptionbudgets"),
    "APPLY_ORDER": APPLY_ORDER,
    "REPLACED_KINDS": REPLACED_KINDS,
    "plural": None,  # resolved per file below
}
GROUPS = {"deployments": "apps", "horizontalpodautoscalers": "autoscaling", "poddisruptionbudgets": "policy",
          "jobs": "batch", "ingresses": "networking.k8s.io", "httproutes": "gateway.networking.k8s.io"}  # fmt: skip
# files whose Kubernetes calls run as another identity than the flows' (config backup: its own
# ServiceAccount) or that are not flows at all
# not the release ServiceAccount's calls: config-backup runs as its own list-only account, and
# `greenlight adopt` is run once per app by a person with their own credentials, never by a flow
NOT_THE_FLOWS = {
    "greenlight/flows/config_backup.py",
    "greenlight/tasks/config_export.py",
    "greenlight/tasks/adopt.py",
}


def _calls_in(path: Path) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every ``kube.<verb>(<plural>, ...)`` in a file."""
    text = path.read_text()
    out: set[tuple[str, str, str]] = set()
    for method, arg in re.findall(r"kube\.(\w+)\(\s*([^,)]+)", text):
        if method == "scale":
            out.add(("apps", "deployments/scale", "patch"))
            continue
        if method == "pod_log":
            out.add(("", "pods/log", "get"))
            continue
        if method == "service_proxy_get":
            out.add(("", "services/proxy", "get"))
            continue
        if method not in KUBE_VERBS:
            continue
        arg = arg.strip()
        if arg.startswith('"'):
            plurals: tuple[str, ...] = (arg.strip('"'),)
        elif arg in ("plural", "kind.plural"):
            # a loop over one of the constants: the file names which
            plurals = tuple(p for name, ps in PLURAL_CONSTANTS.items() if ps and name in text for p in ps)
        else:
            continue
        for p in plurals:
            out.add((GROUPS.get(p, ""), p, KUBE_VERBS[method]))
    return out


def test_every_kubernetes_call_of_the_flows_is_in_the_access_table() -> None:
    """A verb a task or flow calls and the table lacks would pass doctor and fail the release."""
    table = {(a.group, a.resource, a.verb) for a in dr.FLOW_ACCESS}
    calls: dict[tuple[str, str, str], str] = {}
    for path in sorted([*ROOT.glob("greenlight/tasks/*.py"), *ROOT.glob("greenlight/flows/*.py")]):
        rel = str(path.relative_to(ROOT))
        if rel in NOT_THE_FLOWS:
            continue
        for call in _calls_in(path):
            calls.setdefault(call, rel)
    assert len(calls) > 15, "the scan found too few calls: the pattern no longer matches the code"
    missing = {c: where for c, where in calls.items() if c not in table}
    assert not missing, f"calls not in greenlight.core.doctor.FLOW_ACCESS: {missing}"


@pytest.mark.parametrize(
    ("apiserver", "job", "drill", "has", "lacks"),
    [
        (
            True,
            False,
            False,
            ["patch services", "get services/proxy"],
            ["create jobs.batch", "get namespaces"],
        ),
        (False, False, False, ["patch services", "get pods/log", "list events"], ["get services/proxy"]),
        (False, True, False, ["create jobs.batch", "get pods/log"], ["get services/proxy"]),
        (
            True,
            False,
            True,
            ["get namespaces", "get secrets", "delete ingresses.networking.k8s.io"],
            ["create namespaces", "patch services", "create jobs.batch"],
        ),
    ],
)
def test_required_access_follows_the_profile(
    apiserver: bool, job: bool, drill: bool, has: list[str], lacks: list[str]
) -> None:
    """The proxy, Job and drill rows only when the profile uses them; each row once."""
    rows = dr.required_access(probe_via_apiserver=apiserver, pre_deploy_job=job, dr=drill)
    labels = [r.label for r in rows]
    assert len(labels) == len(set(labels))
    for label in has:
        assert label in labels
    for label in lacks:
        assert label not in labels


@pytest.mark.parametrize(
    ("row", "label"),
    [
        (dr.Access("", "services", "patch", "x"), "patch services"),
        (dr.Access("apps", "deployments/scale", "patch", "x"), "patch deployments.apps/scale"),
        (dr.Access("", "pods/log", "get", "x"), "get pods/log"),
    ],
)
def test_access_label_is_as_kubectl_auth_can_i_names_it(row: dr.Access, label: str) -> None:
    assert row.label == label


def test_denied_verbs_are_named_with_the_rules_that_grant_them() -> None:
    namespaces = [
        r
        for r in dr.required_access(
            probe_via_apiserver=True, pre_deploy_job=False, dr=True, new_namespace=True
        )
        if r.resource == "namespaces"
    ]
    rows = dr.required_access(probe_via_apiserver=True, pre_deploy_job=False, dr=False) + namespaces
    answers = [
        (r, not (r.resource == "services" and r.verb == "patch") and r.resource != "namespaces", "")
        for r in rows
    ]
    r = dr.assess_access("sma-staging", answers)
    assert r.failed
    assert "patch services (move traffic" in r.what
    assert '"resources":["services"],"verbs":["patch"]' in r.fix
    assert "a ClusterRole with rules" in r.fix and '"resources":["namespaces"]' in r.fix
    assert {d["verb"] for d in r.values["denied"]} == {
        "patch services",
        "get namespaces",
        "create namespaces",
        "delete namespaces",
    }


def test_a_drill_creates_its_namespace_only_when_missing() -> None:
    def labels(new: bool) -> set[str]:
        rows = dr.required_access(probe_via_apiserver=False, pre_deploy_job=False, dr=True, new_namespace=new)
        return {r.label for r in rows}

    assert labels(True) - labels(False) == {"create namespaces", "delete namespaces"}
    assert "get namespaces" in labels(False)


@pytest.mark.parametrize(
    ("drill", "has", "lacks"),
    [
        (False, ["get httproutes.gateway.networking.k8s.io", "patch httproutes.gateway.networking.k8s.io"],
         ["create httproutes.gateway.networking.k8s.io", "delete httproutes.gateway.networking.k8s.io"]),
        (True, ["get httproutes.gateway.networking.k8s.io", "list httproutes.gateway.networking.k8s.io",
                "create httproutes.gateway.networking.k8s.io", "update httproutes.gateway.networking.k8s.io",
                "delete httproutes.gateway.networking.k8s.io"],
         ["patch httproutes.gateway.networking.k8s.io"]),
    ],
)  # fmt: skip
def test_an_httproute_profile_needs_the_routes_rows_its_flows_use(
    drill: bool, has: list[str], lacks: list[str]
) -> None:
    """A release moves weights (get, patch); a DR drill applies the bundle's routes and deletes them."""
    rows = dr.required_access(probe_via_apiserver=False, pre_deploy_job=False, dr=drill, httproute=True)
    labels = {r.label for r in rows}
    assert set(has) <= labels and not set(lacks) & labels
    plain = {r.label for r in dr.required_access(probe_via_apiserver=False, pre_deploy_job=False, dr=drill)}
    assert not any("httproutes" in label for label in plain)


def test_all_allowed_passes() -> None:
    rows = dr.required_access(probe_via_apiserver=True, pre_deploy_job=False, dr=False)
    r = dr.assess_access("ns", [(row, True, "") for row in rows])
    assert r.status == "ok" and f"all {len(rows)} verbs" in r.what


@pytest.mark.parametrize(
    ("kind", "fix_has"),
    [
        (None, None),
        ("InputInvalid", "cluster.context"),
        ("Forbidden", "credentials were refused"),
        ("NotFound", "SelfSubjectAccessReview"),
        ("TransientError", "reachable"),
    ],
)
def test_cluster_fix_follows_the_kind_of_failure(kind: str | None, fix_has: str | None) -> None:
    r = dr.assess_cluster("context c", kind, None if kind is None else "boom")
    assert r.failed == (kind is not None)
    if fix_has:
        assert fix_has in r.fix


# --- blue-green shape ------------------------------------------------------------------------------


def dep(colour: str | None, selector_colour: str | None = "same") -> dict[str, Any]:
    labels = {"app": "web", **({"color": colour} if colour else {})}
    sel = labels if selector_colour == "same" else {"app": "web"}
    return {"spec": {"selector": {"matchLabels": sel}, "template": {"metadata": {"labels": labels}}}}


def svc(selector: dict[str, str]) -> dict[str, Any]:
    return {"spec": {"selector": selector}}


LIVE = svc({"app": "web", "color": "blue"})
PREVIEW = svc({"app": "web", "color": "green"})


@pytest.mark.parametrize(
    ("live", "preview", "deps", "plain", "status", "what_has", "fix_has"),
    [
        (LIVE, PREVIEW, {"blue": dep("blue"), "green": None}, None, "ok", "selects color=blue (web-blue)", ""),
        (LIVE, PREVIEW, {"blue": dep("blue"), "green": dep("green")}, None, "ok", "web-blue, web-green", ""),
        (None, None, {"blue": None, "green": None}, None, "ok", "nothing deployed yet", ""),
        (None, None, {"blue": None, "green": None}, dep(None), "fail", "Deployment web is not blue-green", "greenlight adopt staging web"),
        (svc({"app": "web"}), None, {"blue": None, "green": None}, dep(None), "fail", "no 'color'", "greenlight adopt staging web"),
        (LIVE, None, {"blue": dep("blue"), "green": None}, None, "fail", "preview Service web-preview is missing", "create Service web-preview"),
        (LIVE, PREVIEW, {"blue": None, "green": None}, dep(None), "fail", "web-blue is missing", "greenlight adopt staging web"),
        (LIVE, PREVIEW, {"blue": dep(None), "green": None}, None, "fail", "not labelled color=blue", "label color"),
        (LIVE, PREVIEW, {"blue": dep("blue", None), "green": None}, None, "fail", "selector does not match", "adopt"),
        (svc({"app": "web", "color": "red"}), PREVIEW, {"blue": dep("blue"), "green": None}, None, "fail", "not blue or green", "release.colours"),
        (None, PREVIEW, {"blue": dep("blue"), "green": None}, None, "fail", "live Service web is missing", "adopt"),
        (LIVE, svc({"app": "web"}), {"blue": dep("blue"), "green": None}, None, "fail", "does not select by color", "adopt"),
    ],
)  # fmt: skip
def test_app_shape(
    live: Any, preview: Any, deps: dict[str, Any], plain: Any, status: str, what_has: str, fix_has: str
) -> None:
    r = dr.assess_app_shape(
        "staging", "web", "web", "web-preview", COLOURS, "color", live, preview, deps, plain
    )
    assert r.status == status, r
    assert what_has in r.what
    assert fix_has in r.fix


def test_app_shape_reports_the_live_colour() -> None:
    r = dr.assess_app_shape(
        "s",
        "web",
        "web",
        "web-preview",
        COLOURS,
        "color",
        LIVE,
        PREVIEW,
        {"blue": dep("blue"), "green": None},
        None,
    )
    assert r.values["live_colour"] == "blue"


# --- metrics ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("colour", "answered", "seen", "other", "status", "what_has", "fix_has"),
    [
        ("blue", 10, 12.0, None, "ok", "12 requests seen on color=blue", ""),
        (None, 0, None, None, "skip", "no live colour", ""),
        ("blue", 0, None, None, "fail", "none of 10 requests", "live Service answer"),
        ("blue", 10, None, {"": 30.0}, "fail", "none labelled color=blue", "targetLabels: {fromPod: [{from: color}]}"),
        ("blue", 10, 0.0, {"green": 3.0}, "fail", "green: 3", "monitoring.colour_label"),
        ("blue", 10, None, {}, "fail", "no prometheus.googleapis.com/x series of web", "PodMonitoring"),
    ],
)  # fmt: skip
def test_metrics(
    colour: str | None,
    answered: int,
    seen: float | None,
    other: dict[str, float] | None,
    status: str,
    what_has: str,
    fix_has: str,
) -> None:
    r = dr.assess_metrics(
        "web", colour, "color", 10, answered, seen, 3.0, other, "prometheus.googleapis.com/x"
    )
    assert r.status == status, r
    assert what_has in r.what
    assert fix_has in r.fix


# --- Slack, Prefect --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "source", "identity", "error", "block", "status", "fix_has"),
    [
        (None, None, None, None, None, "skip", ""),
        ("#r", None, None, None, "b", "fail", "greenlight setup` with SLACK_BOT_TOKEN set"),
        ("#r", None, None, None, None, "fail", "slack.token_secret_block"),
        ("#r", "SLACK_BOT_TOKEN", None, "the bot token was refused (invalid_auth)", "b", "fail", "Secret block b"),
        ("#r", "SLACK_BOT_TOKEN", {"team": "t", "user": "u"}, None, "b", "ok", ""),
    ],
)  # fmt: skip
def test_slack(
    channel: Any, source: Any, identity: Any, error: Any, block: Any, status: str, fix_has: str
) -> None:
    r = dr.assess_slack(channel, source, identity, error, block)
    assert r.status == status
    assert fix_has in r.fix


@pytest.mark.parametrize(
    ("expected", "present", "status", "what_has", "fix_has"),
    [
        ([("a", "x"), ("b", "y")], ["a", "b"], "ok", "a, b", ""),
        ([("a", "x"), ("b", "y")], ["a"], "fail", "missing b: y", "run `greenlight setup staging` (it"),
        ([("a", "x"), ("tok", "the token (from $SLACK_BOT_TOKEN)")], ["a"], "ok", "not set up (setup makes them when their variables are set): tok", ""),
        ([("key", "generated"), ("reg", "creds (from $U + $P)")], [], "fail", "missing key: generated", "greenlight setup"),
        ([], [], "skip", "", ""),
    ],
)  # fmt: skip
def test_prefect(
    expected: list[tuple[str, str]], present: list[str], status: str, what_has: str, fix_has: str
) -> None:
    """What setup makes itself must exist; a credential block setup would skip is only named."""
    r = dr.assess_prefect("variable", expected, present, "staging")
    assert r.status == status
    assert what_has in r.what
    assert fix_has in r.fix


# --- output ----------------------------------------------------------------------------------------

RESULTS = [
    dr.ok("cluster", "answered"),
    dr.fail("slack", "refused", "put a token"),
    dr.skip("backups", "no section"),
]


def test_lines_mark_each_status_and_name_the_fix() -> None:
    assert [dr.line(r) for r in RESULTS] == [
        "ok   cluster: answered",
        "FAIL slack: refused — fix: put a token",
        "skip backups: no section",
    ]


@pytest.mark.parametrize(
    ("results", "summary", "code"),
    [
        (RESULTS, "doctor staging: 1 ok, 1 failed, 1 skipped (slack)", dr.FAILED_EXIT),
        ([RESULTS[0], RESULTS[2]], "doctor staging: 1 ok, 0 failed, 1 skipped; ready for a release", 0),
    ],
)
def test_summary_and_exit_code(results: list[dr.Result], summary: str, code: int) -> None:
    assert dr.summary("staging", results) == summary
    assert dr.exit_code(results) == code


def test_failed_exit_is_that_of_a_failed_gate() -> None:
    assert exit_code(GateFailed("x")) == dr.FAILED_EXIT


def test_json_holds_every_check_and_the_verdict() -> None:
    doc = json.loads(dr.to_json("staging", [dr.ok("a", "fine", n=1), *RESULTS[1:]]))
    assert doc["ok"] is False and doc["environment"] == "staging"
    assert [c["status"] for c in doc["checks"]] == ["ok", "fail", "skip"]
    assert doc["checks"][0]["values"] == {"n": 1}
    assert doc["checks"][1]["fix"] == "put a token"


def _route(
    blue: int, green: int, observed: int = 2, names: tuple[str, ...] = ("backend-blue", "backend-green")
) -> Any:
    from greenlight.core.httproute import snapshot_route

    refs = [{"name": n, "port": 8080, "weight": w} for n, w in zip(names, (blue, green), strict=False)]
    raw = {
        "metadata": {"name": "backend", "namespace": "gw", "generation": 2, "resourceVersion": "5"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": refs}]},
        "status": {"parents": [{"parentRef": {"name": "gw"}, "conditions": [
            {"type": t, "status": "True", "observedGeneration": observed} for t in ("Accepted", "ResolvedRefs")
        ]}]},
    }  # fmt: skip
    return snapshot_route(raw, {"blue": "backend-blue", "green": "backend-green"})


ROUTE_SHAPES: list[tuple[str, Any, bool, bool, str]] = [
    # id, route snapshot, green's Service exists, ok, a part of what it says
    ("ready", _route(100, 0), True, True, "sends everything to blue (programmed)"),
    ("no-route", None, True, False, "no HTTPRoute backend"),
    ("a-colour-service-missing", _route(100, 0), False, False, "backend Service(s) backend-green are missing"),
    ("a-colour-not-named", _route(100, 0, names=("backend-blue",)), True, False, "has no backendRef naming Service backend-green"),
    ("split-without-record", _route(50, 50), True, False, "splits traffic between colours"),
    ("not-programmed", _route(100, 0, observed=1), True, False, "is not programmed: Gateway gw has not programmed generation 2"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("route", "green_svc", "good", "what"), [c[1:] for c in ROUTE_SHAPES], ids=[c[0] for c in ROUTE_SHAPES]
)
def test_an_httproute_app_is_checked_through_its_route(
    route: Any, green_svc: bool, good: bool, what: str
) -> None:
    r = dr.assess_route_shape(
        "backend", "backend", route, {"blue": {"kind": "Service"}, "green": {"kind": "Service"} if green_svc else None},
        "backend-preview", {"kind": "Service"},
    )  # fmt: skip
    assert r.failed is not good
    assert what in r.what, r.what
    if good:
        assert r.values["live_colour"] == "blue"
