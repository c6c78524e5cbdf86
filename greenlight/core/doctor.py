"""``greenlight doctor``: what each check found, what the flows need, and how it is said. Pure.

The I/O (the cluster, Monitoring, GCS, Slack, the Prefect API) lives in
:mod:`greenlight.tasks.doctor`; it gathers facts and hands them to the ``assess_*`` functions
here, each of which returns one :class:`Result`: a status, what was found, and (when it failed)
the fix, in words a person can act on.

:data:`FLOW_ACCESS` is the Kubernetes access the flows need, one row per (API group, resource,
verb) with the call that needs it. It is kept by hand next to the flows' calls (greenlight/tasks/kube.py,
greenlight/tasks/records.py, greenlight/tasks/probes.py, greenlight/tasks/drill.py, greenlight/tasks/restore.py); the RBAC in
deployments/kubernetes grants the same rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from greenlight.core.httproute import RouteSnapshot

Status = Literal["ok", "fail", "skip"]
#: when a row of FLOW_ACCESS applies: always, with ``gate.probe_via: apiserver``, with a
#: ``release.pre_deploy_job``, for a profile with a ``dr`` section (the drill's target, instead of
#: the release's rows), there when the drill's namespace does not exist yet, and for config-restore
#: (its own ServiceAccount greenlight-config-restore: never among an environment's required rows)
When = Literal[
    "release",
    "probe-apiserver",
    "pre-deploy-job",
    "gateway-httproute",
    "dr",
    "dr-new-namespace",
    "dr-httproute",
    "config-restore",
]
#: the exit code when any check fails: the one of a failed gate (greenlight.errors.GateFailed)
FAILED_EXIT = 8
MARKS: dict[str, str] = {"ok": "ok  ", "fail": "FAIL", "skip": "skip"}


@dataclass(frozen=True)
class Result:
    """One check: ``status``, ``what`` it found, the ``fix`` when it failed, and the values behind it."""

    check: str
    status: Status
    what: str
    fix: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status == "fail"


def ok(check: str, what: str, **values: Any) -> Result:
    return Result(check, "ok", what, "", values)


def fail(check: str, what: str, fix: str, **values: Any) -> Result:
    return Result(check, "fail", what, fix, values)


def skip(check: str, what: str, **values: Any) -> Result:
    return Result(check, "skip", what, "", values)


# --- Kubernetes access -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """One verb on one resource that a flow calls, and why."""

    group: str  # "" is the core API group
    resource: str  # plural, with a subresource after a slash: "deployments/scale"
    verb: str
    why: str
    when: When = "release"
    namespaced: bool = True
    by_name: bool = False  # asked for the object named after the profile's namespace (resourceNames)

    @property
    def label(self) -> str:
        """``patch services``, ``patch deployments.apps/scale``: as ``kubectl auth can-i`` names it."""
        base, _, sub = self.resource.partition("/")
        name = f"{base}.{self.group}" if self.group else base
        return f"{self.verb} {name}" + (f"/{sub}" if sub else "")

    @property
    def base_resource(self) -> str:
        return self.resource.partition("/")[0]

    @property
    def subresource(self) -> str:
        return self.resource.partition("/")[2]


def _rows(group: str, resource: str, verbs: str, why: str, when: When = "release") -> list[Access]:
    return [Access(group, resource, v, why, when) for v in verbs.split()]


FLOW_ACCESS: tuple[Access, ...] = (
    *_rows("apps", "deployments", "get", "read each colour's Deployment (read-app-state, read-live)"),
    *_rows("apps", "deployments", "create", "deploy a colour the first time (deploy-colour)"),
    *_rows("apps", "deployments", "update", "deploy onto an existing colour (deploy-colour, guarded PUT)"),
    *_rows("apps", "deployments/scale", "patch", "scale a colour (rollback-app up, scale-colour down)"),
    *_rows("", "services", "get", "read the live and preview Services (read-live, switch-traffic)"),
    *_rows("", "services", "create", "create a missing preview Service (point-preview)"),
    *_rows("", "services", "patch", "move traffic: the live Service's selector (switch-traffic, rollback-app)"),
    *_rows("", "endpoints", "get", "see traffic arrive on a colour (await-traffic), preview readiness"),
    *_rows("", "pods", "list", "count a colour's ready pods, follow a rollout (wait-rollout)"),
    *_rows("", "configmaps", "get create update", "the signed release records (ConfigMap greenlight-releases)"),
    *_rows(
        "autoscaling", "horizontalpodautoscalers", "get create update delete",
        "clone a colour's HPA onto the new colour, delete it with a scaled-down colour",
    ),
    *_rows(
        "policy", "poddisruptionbudgets", "get create update delete",
        "clone a colour's PDB onto the new colour, delete it with a scaled-down colour",
    ),
    *_rows("", "services/proxy", "get", "smoke probes and synthetic traffic via the API server", "probe-apiserver"),
    *_rows("batch", "jobs", "get create", "run the pre-deploy Job (release.pre_deploy_job)", "pre-deploy-job"),
    *_rows("gateway.networking.k8s.io", "httproutes", "get", "read where the HTTPRoute sends traffic, and its status "
           "(traffic.router gateway-httproute: read-app-state, switch-traffic, await-traffic)", "gateway-httproute"),
    *_rows("gateway.networking.k8s.io", "httproutes", "patch", "move traffic: the HTTPRoute's weights "
           "(switch-traffic, rollback-app)", "gateway-httproute"),
    *_rows("", "pods/log", "get", "a failing colour's log tail (collect-diagnostics), a failed pre-deploy Job's logs"),
    *_rows("", "events", "list", "a failing colour's pods' Events (collect-diagnostics)"),
    # a DR target (a profile with ``dr``): what dr-drill does there, instead of the release's rows
    Access("", "namespaces", "get", "find the drill's namespace, by name (ensure-dr-namespace)", "dr",
           namespaced=False, by_name=True),
    Access("", "namespaces", "create", "create the drill's namespace when it is missing", "dr-new-namespace",
           namespaced=False),
    Access("", "namespaces", "delete", "tear down a namespace the drill created", "dr-new-namespace",
           namespaced=False),
    *_rows("", "secrets", "get", "check the restored app's Secrets and keys (check-secrets)", "dr"),
    *[
        row
        for group, plural in (("", "configmaps"), ("", "services"), ("apps", "deployments"),
                              ("autoscaling", "horizontalpodautoscalers"), ("networking.k8s.io", "ingresses"))
        for row in _rows(group, plural, "get list create update delete",
                         "apply the production bundle and tear it down by its drill label (apply-dr-objects)", "dr")
    ],
    *_rows("gateway.networking.k8s.io", "httproutes", "get list create update delete",
           "apply the bundle's HTTPRoutes, see the DR Gateway serve them (dr-await-routes), tear them down",
           "dr-httproute"),
    *_rows("", "pods", "list", "find what a drill left behind (dr-leftovers)", "dr"),
    *_rows("", "endpoints", "get", "probe the restored apps", "dr"),
    # config-restore (flows/config_restore.py, tasks/restore.py): read, dry-run and apply a bundle;
    # a Secret is only read (for its keys) and created when missing, never updated
    *_rows("", "secrets", "get create", "restore a missing Secret by name and keys (config-restore)", "config-restore"),
    *[
        row
        for group, plural in (("", "configmaps"), ("", "services"), ("apps", "deployments"),
                              ("autoscaling", "horizontalpodautoscalers"), ("networking.k8s.io", "ingresses"),
                              ("gateway.networking.k8s.io", "httproutes"))
        for row in _rows(group, plural, "get create update",
                         "diff a bundle (dry run) and apply it (config-restore)", "config-restore")
    ],
)  # fmt: skip


def required_access(
    *,
    probe_via_apiserver: bool,
    pre_deploy_job: bool,
    dr: bool,
    new_namespace: bool = False,
    httproute: bool = False,
) -> list[Access]:
    """The rows of :data:`FLOW_ACCESS` an environment needs: a release environment's rows, or a
    DR target's (the drill's, and its namespace's creation when ``new_namespace``); the proxy,
    Job and HTTPRoute rows only when the profile uses them. One row per (group, resource, verb),
    first reason kept."""
    wanted: set[When] = {"dr"} if dr else {"release"}
    if dr and new_namespace:
        wanted.add("dr-new-namespace")
    if probe_via_apiserver:
        wanted.add("probe-apiserver")
    if pre_deploy_job and not dr:
        wanted.add("pre-deploy-job")
    if httproute:
        wanted.add("dr-httproute" if dr else "gateway-httproute")
    seen: set[tuple[str, str, str]] = set()
    out = []
    for row in FLOW_ACCESS:
        key = (row.group, row.resource, row.verb)
        if row.when in wanted and key not in seen:
            seen.add(key)
            out.append(row)
    return out


def role_rules(rows: Iterable[Access]) -> list[dict[str, list[str]]]:
    """RBAC rules granting ``rows`` (one rule per group and resource, verbs in table order)."""
    rules: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        verbs = rules.setdefault((row.group, row.resource), [])
        if row.verb not in verbs:
            verbs.append(row.verb)
    return [{"apiGroups": [g], "resources": [r], "verbs": v} for (g, r), v in rules.items()]


def assess_access(namespace: str, answers: Sequence[tuple[Access, bool, str]]) -> Result:
    """Every row allowed, or the denied ones with the Role rules that grant them.

    ``answers``: (row, allowed, the authorizer's reason) per row, as SelfSubjectAccessReview said."""
    denied = [(row, reason) for row, allowed, reason in answers if not allowed]
    if not denied:
        return ok(
            "access",
            f"all {len(answers)} verbs the flows need in {namespace} are allowed",
            namespace=namespace,
            allowed=[row.label for row, _, _ in answers],
        )
    rows = [row for row, _ in denied]
    names = ", ".join(f"{row.label} ({row.why})" for row in rows)
    namespaced = [row for row in rows if row.namespaced]
    cluster = [row for row in rows if not row.namespaced]
    grants = []
    if namespaced:
        grants.append(f"a Role in {namespace} with rules {_compact(role_rules(namespaced))}")
    if cluster:
        grants.append(f"a ClusterRole with rules {_compact(role_rules(cluster))}")
    return fail(
        "access",
        f"{len(rows)} of {len(answers)} verbs the flows need are denied in {namespace}: {names}",
        "grant them to the identity the flows run as (the Role greenlight-release bound to the ServiceAccount "
        f"greenlight-flows in deployments/kubernetes): {' and '.join(grants)}",
        namespace=namespace,
        denied=[{"verb": r.label, "why": r.why, "reason": why} for r, why in denied],
        allowed=[row.label for row, allowed, _ in answers if allowed],
    )


def _compact(rules: list[dict[str, list[str]]]) -> str:
    return json.dumps(rules, separators=(",", ":"))


def assess_cluster(where: str, error_kind: str | None, error: str | None) -> Result:
    """The API server answered (a SelfSubjectAccessReview), or why not: ``error_kind`` is the
    Greenlight error's class name (InputInvalid: no such context; Forbidden: credentials refused;
    TransientError: unreachable; NotFound: no SelfSubjectAccessReview served)."""
    if error_kind is None:
        return ok("cluster", f"{where}: the API server answered and accepted the credentials", cluster=where)
    fixes = {
        "InputInvalid": "set the profile's cluster.context to a context of your kubeconfig (kubectl config "
        "get-contexts), or cluster.in_cluster: true inside the cluster",
        "Forbidden": "the credentials were refused: renew them (gcloud container clusters get-credentials ...) "
        "or give the kubeconfig user a valid token",
        "NotFound": "the API server does not serve authorization.k8s.io/v1 SelfSubjectAccessReview: "
        "Kubernetes 1.19 or later is needed",
    }
    fix = fixes.get(
        error_kind,
        "make the API server reachable from here (network, VPN, authorized networks of the cluster) "
        "and check cluster.context / cluster.kubeconfig",
    )
    return fail("cluster", f"{where}: {error}", fix, cluster=where, error=error)


# --- blue-green shape ------------------------------------------------------------------------------


def _labels(obj: Mapping[str, Any] | None, *path: str) -> dict[str, str]:
    node: Any = obj or {}
    for key in path:
        node = (node or {}).get(key) if isinstance(node, Mapping) else None
    return dict(node) if isinstance(node, Mapping) else {}


def assess_route_shape(
    app: str,
    route_name: str,
    route: RouteSnapshot | None,
    colour_services: Mapping[str, Mapping[str, Any] | None],
    preview: str,
    preview_svc: Mapping[str, Any] | None,
) -> Result:
    """``traffic.router: gateway-httproute``: whether ``app``'s HTTPRoute can be switched (it names
    each colour's Service, sends one colour everything, and its Gateway has programmed it), and
    each colour's Service and the preview Service exist. ``colour_services``: colour -> its
    Service (None when missing)."""
    check = f"app {app}"
    docs = "docs/traffic-routers.md shows the HTTPRoute and the colours' Services"
    values: dict[str, Any] = {"route": route_name, "preview_service": preview}
    if route is None:
        return fail(
            check, f"no HTTPRoute {route_name}", f"create it with a backendRef per colour ({docs})", **values
        )
    missing = sorted(c for c, svc in colour_services.items() if svc is None)
    if missing:
        names = ", ".join(route.backends[c] for c in missing)
        return fail(
            check,
            f"the HTTPRoute's backend Service(s) {names} are missing",
            f"create them ({docs})",
            **values,
        )
    if route.problem:
        return fail(check, route.problem, f"fix the route ({docs})", **values)
    if not route.programmed:
        return fail(check, f"HTTPRoute {route_name} is not programmed: {route.programmed_reason}",
                    "see the Gateway's status (kubectl describe httproute)", **values)  # fmt: skip
    if preview_svc is None:
        return ok(check, f"HTTPRoute {route_name} sends everything to {route.colour()}; the first release creates "
                  f"the preview Service {preview}", live_colour=route.colour(), **values)  # fmt: skip
    return ok(check, f"HTTPRoute {route_name} sends everything to {route.colour()} (programmed)",
              live_colour=route.colour(), **values)  # fmt: skip


def assess_app_shape(
    env: str,
    app: str,
    service: str,
    preview: str,
    colours: tuple[str, str],
    colour_label: str,
    live_svc: Mapping[str, Any] | None,
    preview_svc: Mapping[str, Any] | None,
    deployments: Mapping[str, Mapping[str, Any] | None],
    plain: Mapping[str, Any] | None,
) -> Result:
    """Whether ``app`` has the shape releases work on: ``<app>-<colour>`` Deployments whose pods
    carry ``colour_label``, the live Service selecting one colour by it, and the preview Service.

    ``deployments``: colour -> that colour's Deployment (None when missing); ``plain``: a Deployment
    named ``<app>`` (not blue-green), if any."""
    check = f"app {app}"
    adopt = f"greenlight adopt {env} {app}"
    names = {c: f"{app}-{c}" for c in colours}
    present = {c: d for c, d in deployments.items() if d is not None}
    values: dict[str, Any] = {
        "service": service,
        "preview_service": preview,
        "deployments": sorted(names[c] for c in present),
    }
    if live_svc is None and not present:
        if plain is not None:
            return fail(
                check,
                f"Deployment {app} is not blue-green (no {names[colours[0]]}/{names[colours[1]]}) and there is no live Service {service}",
                f"`{adopt}` converts it: {names[colours[0]]} from its spec, Services {service} and {preview} selecting {colour_label}",
                **values,
            )
        return ok(
            check,
            f"nothing deployed yet: the first release creates {names[colours[0]]} and Services {service} and {preview} "
            "from the template (greenlight/templates/app.yaml)",
            **values,
        )
    if live_svc is None:
        return fail(
            check,
            f"{', '.join(names[c] for c in present)} exist but the live Service {service} is missing",
            f"`{adopt}` creates it, or create Service {service} selecting {colour_label}: {next(iter(present))} "
            "(greenlight/templates/app.yaml)",
            **values,
        )
    selector = _labels(live_svc, "spec", "selector")
    live = selector.get(colour_label)
    if live is None:
        return fail(
            check,
            f"the live Service {service} selects {json.dumps(selector, sort_keys=True)}: no '{colour_label}', so it would route to both colours",
            f"`{adopt}` converts the app (its Deployment to {names[colours[0]]}, the Service to select {colour_label})",
            selector=selector,
            **values,
        )
    if live not in colours:
        return fail(
            check,
            f"the live Service {service} selects {colour_label}={live}, not {colours[0]} or {colours[1]}",
            "point it at a colour of release.colours, or set release.colours to the ones in use",
            selector=selector,
            **values,
        )
    values["live_colour"] = live
    live_dep = present.get(live)
    if live_dep is None:
        return fail(
            check,
            f"the live Service {service} selects {colour_label}={live} but Deployment {names[live]} is missing"
            + (f" (Deployment {app} is not blue-green)" if plain is not None else ""),
            f"`{adopt}` creates {names[live]} from the running Deployment, or point {service} at the colour that runs",
            **values,
        )
    problems = []
    for c, dep in sorted(present.items()):
        pod_labels = _labels(dep, "spec", "template", "metadata", "labels")
        match = _labels(dep, "spec", "selector", "matchLabels")
        if pod_labels.get(colour_label) != c:
            problems.append(f"{names[c]}'s pods are not labelled {colour_label}={c}")
        elif match.get(colour_label) != c:
            problems.append(f"{names[c]}'s selector does not match {colour_label}={c}")
        elif any(pod_labels.get(k) != v for k, v in selector.items() if k != colour_label):
            problems.append(f"{names[c]}'s pods do not carry the Service's other selector labels")
    if preview_svc is None:
        problems.append(
            f"the preview Service {preview} is missing (the gate probes the candidate colour through it)"
        )
    elif colour_label not in _labels(preview_svc, "spec", "selector"):
        problems.append(f"the preview Service {preview} does not select by {colour_label}")
    if problems:
        fix = (
            f"`{adopt}` puts the missing pieces in place"
            + (
                f"; or create Service {preview} as {service} with {colour_label}: the colour not live "
                "(greenlight/templates/app.yaml)"
                if preview_svc is None
                else ""
            )
            + f"; pods of each colour need the label {colour_label}: <colour> (their Deployment's template)"
        )
        return fail(check, "; ".join(problems), fix, **values)
    return ok(
        check,
        f"live Service {service} selects {colour_label}={live} ({names[live]}); preview Service {preview}; "
        f"Deployments {', '.join(names[c] for c in sorted(present))}",
        **values,
    )


# --- metrics per colour ----------------------------------------------------------------------------


def assess_metrics(
    app: str,
    colour: str | None,
    colour_label: str,
    sent: int,
    answered: int,
    seen: float | None,
    waited_s: float,
    other_labels: Mapping[str, float] | None,
    requests_metric: str,
) -> Result:
    """Whether requests of our own to the live colour came back from Monitoring labelled by colour.

    ``seen``: the requests Monitoring counted on ``colour`` while we waited (None: no series);
    ``other_labels``: when none were seen, the same metric of the app without the colour in the
    filter, summed by the colour label's value ("" for series without it); None when not read."""
    check = f"metrics {app}"
    values: dict[str, Any] = {
        "colour": colour,
        "sent": sent,
        "answered": answered,
        "seen": seen,
        "waited_s": round(waited_s, 1),
    }
    if colour is None:
        return skip(check, "no live colour to send requests to (see the app check)", **values)
    if answered == 0:
        return fail(
            check,
            f"none of {sent} requests to the live colour {colour} was answered",
            "make the live Service answer (see the app check; the smoke probes use the same path)",
            **values,
        )
    if seen:
        return ok(
            check,
            f"{seen:g} requests seen on {colour_label}={colour} in Monitoring after {waited_s:.1f} s "
            f"({answered} of ours answered)",
            **values,
        )
    if other_labels:
        found = ", ".join(f"{k or '(none)'}: {v:g}" for k, v in sorted(other_labels.items()))
        return fail(
            check,
            f"{requests_metric} of {app} has requests but none labelled {colour_label}={colour} after {waited_s:.1f} s "
            f"(by {colour_label}: {found})",
            f"map the pod label into the metrics: the app's PodMonitoring needs `targetLabels: {{fromPod: "
            f"[{{from: {colour_label}}}]}}` (and the pods the label {colour_label}: <colour>); or set "
            f"monitoring.colour_label to the label the series carry",
            labels=dict(other_labels),
            **values,
        )
    return fail(
        check,
        f"no {requests_metric} series of {app} in Monitoring after {waited_s:.1f} s ({answered} requests answered)",
        "collect the app's request metric: a PodMonitoring selecting its pods (with targetLabels.fromPod "
        f"[{{from: {colour_label}}}]); check monitoring.requests_metric, namespace_label and app_label of the "
        "profile against the series Metrics Explorer shows",
        **values,
    )


# --- backups, Slack, Prefect -----------------------------------------------------------------------


def from_backup_check(check: str, passed: bool, reason: str, fix: str, **values: Any) -> Result:
    """A result from one of greenlight.core.backups' checks (its pass and its reason)."""
    return ok(check, reason, **values) if passed else fail(check, reason, fix, **values)


def assess_slack(
    channel: str | None,
    source: str | None,
    identity: Mapping[str, Any] | None,
    error: str | None,
    block: str | None,
) -> Result:
    """The bot token the flows would use was accepted by auth.test (``source`` says where it came from)."""
    if channel is None:
        return skip("slack", "the profile has no slack section: no notifications, no Slack approvals")
    store = f"the Prefect Secret block {block}" if block else "SLACK_BOT_TOKEN"
    if source is None:
        return fail(
            "slack",
            f"no bot token: SLACK_BOT_TOKEN is not set and {f'the Secret block {block} does not exist' if block else 'the profile names no token_secret_block'}",
            f"run `greenlight setup` with SLACK_BOT_TOKEN set (it saves {store})"
            + ("" if block else ", and name the block in slack.token_secret_block"),
            channel=channel,
        )
    if error is not None or identity is None:
        return fail(
            "slack",
            f"the token from {source} was refused: {error}",
            f"put a valid bot token (xoxb-..., scope chat:write, invited to {channel}) in {store}: "
            f"delete the block and run `greenlight setup` with SLACK_BOT_TOKEN set",
            channel=channel,
            source=source,
        )
    team, user = identity.get("team"), identity.get("user")
    return ok(
        "slack",
        f"token from {source} accepted: bot {user} of team {team}; posts to {channel}",
        channel=channel,
        source=source,
        team=team,
        user=user,
    )


def _sources(why: str) -> list[str]:
    """The environment variables a credential block is made from, as setup's why names them
    (``... (from $A + $B)``); none for an object setup makes itself."""
    return re.findall(r"\$([A-Z][A-Z0-9_]*)", why)


def assess_prefect(
    kind: str, expected: Sequence[tuple[str, str]], present: Iterable[str], env: str
) -> Result:
    """Every object of ``kind`` that ``greenlight setup`` creates for ``env`` exists.

    ``expected``: (name, why) as setup lists them. A why saying ``(from $VAR ...)`` is a credential
    block setup makes from the environment, and skips when the variable is unset: its absence is
    said on the line but fails nothing, as setup itself does not (the Slack token has a check of
    its own)."""
    have = set(present)
    missing = [(name, why) for name, why in expected if name not in have]
    required = [(name, why) for name, why in missing if not _sources(why)]
    optional = [(name, why) for name, why in missing if _sources(why)]
    check = f"prefect {kind}"
    names = [name for name, _ in expected]
    if not expected:
        return skip(check, f"setup creates no {kind} for {env}")
    values: dict[str, Any] = {"expected": names, "missing": [name for name, _ in missing]}
    if required:
        return fail(
            check,
            "missing " + "; ".join(f"{name}: {why}" for name, why in required),
            f"run `greenlight setup {env}` (it creates what is missing and leaves the rest)",
            **values,
        )
    found = [name for name in names if name in have]
    text = ", ".join(found) or "none"
    if optional:
        text += "; not set up (setup makes them when their variables are set): " + "; ".join(
            f"{name}: {why}" for name, why in optional
        )
    return ok(check, text, **values)


# --- output ----------------------------------------------------------------------------------------


def line(r: Result) -> str:
    """``ok   check: what`` / ``FAIL check: what — fix: how``."""
    text = f"{MARKS[r.status]} {r.check}: {r.what}"
    return f"{text} — fix: {r.fix}" if r.failed and r.fix else text


def summary(env: str, results: Sequence[Result]) -> str:
    counts = {s: sum(1 for r in results if r.status == s) for s in ("ok", "fail", "skip")}
    failed = [r.check for r in results if r.failed]
    head = f"doctor {env}: {counts['ok']} ok, {counts['fail']} failed, {counts['skip']} skipped"
    return head + (f" ({', '.join(failed)})" if failed else "; ready for a release")


def to_json(env: str, results: Sequence[Result]) -> str:
    return json.dumps(
        {
            "environment": env,
            "ok": not any(r.failed for r in results),
            "summary": summary(env, results),
            "checks": [{**asdict(r), "values": dict(r.values)} for r in results],
        },
        indent=2,
        default=str,
    )


def exit_code(results: Sequence[Result]) -> int:
    """0 when nothing failed, else :data:`FAILED_EXIT`."""
    return FAILED_EXIT if any(r.failed for r in results) else 0
