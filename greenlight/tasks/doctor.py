"""What ``greenlight doctor`` reads from a real environment; the verdicts are greenlight.core.doctor's.

Plain functions (doctor is a command, not a flow: no task runs), each returning
:class:`~greenlight.core.doctor.Result` values and never raising for what it checks: a failure
to reach something is itself a failed check, with its fix.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.exceptions import ObjectNotFound

from greenlight.clients.slack import TOKEN_ENV, Notifier
from greenlight.core import doctor as dr
from greenlight.core.backups import check_found, check_freshness, check_replica, select_newest
from greenlight.core.httproute import colour_service, snapshot_route
from greenlight.errors import Forbidden, GreenlightError, NotFound
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.kube import deployment_name
from greenlight.tasks.metrics import monitoring_client, request_count, request_filters
from greenlight.tasks.probes import Prober
from greenlight.tasks.storage import find_dumps, gcs, stat_replica

#: our own requests to the live colour while the metrics check waits for them in Monitoring
METRICS_RPS = 5.0
METRICS_POLL_S = 1.0


def _where(profile: Profile) -> str:
    c = profile.cluster
    return "in-cluster service account" if c.in_cluster else f"context {c.context}"


# --- the cluster and the flows' access ------------------------------------------------------------


def check_access(profile: Profile) -> list[dr.Result]:
    """``cluster`` (the API server answers these credentials) and ``access`` (a
    SelfSubjectAccessReview of every verb the flows need in the profile's namespace)."""
    where = _where(profile)
    answers: list[tuple[dr.Access, bool, str]] = []
    try:
        with cluster(profile) as kube:
            new_namespace = False
            if profile.dr is not None:  # the drill creates its namespace only when it is missing
                try:
                    new_namespace = kube.find("namespaces", profile.namespace) is None
                except Forbidden:
                    pass  # not readable: the access check says so (get namespaces)
            rows = dr.required_access(
                probe_via_apiserver=profile.gate.probe_via == "apiserver",
                pre_deploy_job=profile.release.pre_deploy_job is not None,
                dr=profile.dr is not None,
                new_namespace=new_namespace,
                httproute=profile.traffic.router == "gateway-httproute",
            )
            for row in rows:
                allowed, reason = kube.can_i(
                    row.verb,
                    row.base_resource,
                    profile.namespace if row.namespaced else None,
                    row.group,
                    row.subresource,
                    profile.namespace if row.by_name else None,
                )
                answers.append((row, allowed, reason))
    except GreenlightError as e:
        if not answers:
            return [dr.assess_cluster(where, type(e).__name__, str(e))]
        return [
            dr.assess_cluster(where, None, None),
            dr.fail(
                "access", f"reading access broke off after {len(answers)} verbs: {e}", "run doctor again"
            ),
        ]
    return [dr.assess_cluster(where, None, None), dr.assess_access(profile.namespace, answers)]


# --- blue-green shape ------------------------------------------------------------------------------


def check_apps(profile: Profile, env: str) -> tuple[list[dr.Result], dict[str, str | None]]:
    """One ``app <name>`` result per app, and each app's live colour (None when it has none)."""
    ns, label = profile.namespace, profile.release.colour_label
    results: list[dr.Result] = []
    live: dict[str, str | None] = {}
    try:
        with cluster(profile) as kube:
            for app in profile.apps:
                if profile.traffic.router == "gateway-httproute":
                    backends = {c: colour_service(app.service, c) for c in profile.release.colours}
                    raw = kube.find("httproutes", app.route_name, ns)
                    r = dr.assess_route_shape(
                        app.name, app.route_name, snapshot_route(raw, backends) if raw else None,
                        {c: kube.find("services", name, ns) for c, name in backends.items()},
                        app.preview, kube.find("services", app.preview, ns),
                    )  # fmt: skip
                    results.append(r)
                    colour = r.values.get("live_colour")
                    live[app.name] = str(colour) if colour else None
                    continue
                svc = kube.find("services", app.service, ns)
                r = dr.assess_app_shape(
                    env,
                    app.name,
                    app.service,
                    app.preview,
                    profile.release.colours,
                    label,
                    svc,
                    kube.find("services", app.preview, ns),
                    {
                        c: kube.find("deployments", deployment_name(app, c), ns)
                        for c in profile.release.colours
                    },
                    kube.find("deployments", app.name, ns),
                )
                results.append(r)
                colour = r.values.get("live_colour")
                live[app.name] = str(colour) if colour else None
    except GreenlightError as e:
        done = {r.check for r in results}
        for app in profile.apps:
            if f"app {app.name}" not in done:
                results.append(
                    dr.fail(f"app {app.name}", f"cannot read its objects in {ns}: {e}", _kube_fix(e))
                )
                live.setdefault(app.name, None)
    return results, live


def _kube_fix(e: GreenlightError) -> str:
    if isinstance(e, Forbidden):
        return "grant the flows' identity get on services and deployments (see the access check)"
    return "see the cluster check"


# --- metrics per colour ----------------------------------------------------------------------------


class _Trickle:
    """GETs of ``/`` to the app's live Service at :data:`METRICS_RPS` in a thread, until stopped."""

    def __init__(self, profile: Profile, app: str) -> None:
        self.prober = Prober(profile, app, "live")
        self.timeout_s = profile.gate.smoke[0].timeout_s if profile.gate.smoke else 5.0
        self.sent = 0
        self.answered = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"doctor-{app}", daemon=True)

    def __enter__(self) -> _Trickle:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.prober.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            answer = self.prober.get("/", self.timeout_s)
            self.sent += 1
            if answer.status is not None and answer.status < 500:
                self.answered += 1
            elif answer.error and len(self.errors) < 3:
                self.errors.append(answer.error)
            self._stop.wait(1.0 / METRICS_RPS)


def check_metrics(
    profile: Profile,
    app: str,
    colour: str | None,
    timeout_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> dr.Result:
    """Send requests of our own to ``app``'s live colour and wait (up to ``timeout_s``) until
    Monitoring counts requests on that colour, with the gate's own filter; when none come, read
    the app's series without the colour to tell a missing colour label from missing metrics."""
    m = profile.monitoring
    args: dict[str, Any] = {"colour_label": m.colour_label, "requests_metric": m.requests_metric}
    if colour is None:
        return dr.assess_metrics(
            app, None, sent=0, answered=0, seen=None, waited_s=0, other_labels=None, **args
        )
    began = clock()
    start = datetime.now(UTC) - timedelta(seconds=1)
    seen: float | None = None
    try:
        with _Trickle(profile, app) as trickle:
            while True:
                seen = request_count(profile, app, colour, start, datetime.now(UTC))
                waited = clock() - began
                if seen or waited >= timeout_s:
                    break
                time.sleep(METRICS_POLL_S)
        other = None
        if not seen and trickle.answered:
            other = _by_colour_label(profile, app, colour, start)
    except GreenlightError as e:
        return dr.fail(
            f"metrics {app}",
            f"cannot read Monitoring of project {m.project}: {e}",
            "give the flows' identity roles/monitoring.viewer on the project (and check monitoring.project)"
            if isinstance(e, Forbidden)
            else "make Cloud Monitoring reachable from here (or GREENLIGHT_MONITORING_ENDPOINT)",
        )
    return dr.assess_metrics(
        app, colour, sent=trickle.sent, answered=trickle.answered, seen=seen, waited_s=clock() - began,
        other_labels=other, **args,
    )  # fmt: skip


def _by_colour_label(profile: Profile, app: str, colour: str, start: datetime) -> dict[str, float]:
    """The app's requests since ``start`` with the gate's filter less its colour clause, by the
    colour label's value ("" for series without the label)."""
    m = profile.monitoring
    requests, _, _ = request_filters(profile, app, colour)
    clause = f' metric.labels.{m.colour_label}="{colour}"'
    if clause not in requests:  # the gate's filter took another form: nothing to compare with
        return {}
    groups = monitoring_client(profile).sum_delta(
        requests.replace(clause, ""), start, datetime.now(UTC), [f"metric.label.{m.colour_label}"]
    )
    out: dict[str, float] = {}
    for g in groups:
        if g.value:
            key = g.labels.get(m.colour_label, "")
            out[key] = out.get(key, 0.0) + g.value
    return out


# --- backups ---------------------------------------------------------------------------------------


def _gcs_fix(e: GreenlightError, bucket: str, field: str) -> str:
    if isinstance(e, NotFound):
        return f"create gs://{bucket} or correct {field} in the profile"
    if isinstance(e, Forbidden):
        return f"grant the flows' Google service account roles/storage.objectViewer on gs://{bucket}"
    return "make GCS reachable from here (or set STORAGE_EMULATOR_HOST for an emulator)"


def check_backups(profile: Profile, now: datetime | None = None) -> list[dr.Result]:
    """``backups``: the bucket lists, its newest dump is readable and within the RPO target;
    ``backups copy``: the replica bucket holds that dump with the same size and hashes."""
    b = profile.backups
    if b is None:
        return [dr.skip("backups", "the profile has no backups section")]
    now = now or datetime.now(UTC)
    where = f"gs://{b.bucket}/{b.prefix}"
    try:
        dumps, listed = find_dumps.fn(b)
    except GreenlightError as e:
        return [dr.fail("backups", f"cannot list {where}: {e}", _gcs_fix(e, b.bucket, "backups.bucket"))]
    newest = select_newest(dumps)
    found = check_found(newest, where, b.name_pattern, listed)
    if newest is None:
        return [
            dr.fail(
                "backups",
                found.reason,
                f"have the nightly export write dumps named like {b.name_pattern!r} under {where}, or correct "
                "backups.prefix / backups.name_pattern",
                listed=listed,
            )
        ]
    try:
        for member in newest.members:
            gcs().stat(b.bucket, member.name)
    except GreenlightError as e:
        return [
            dr.fail(
                "backups",
                f"dump {newest.name} listed but not readable: {e}",
                _gcs_fix(e, b.bucket, "backups.bucket"),
            )
        ]
    fresh = check_freshness(newest.dump_time, now, b.rpo_target_s, newest.name)
    results = [
        dr.from_backup_check(
            "backups",
            fresh.ok,
            f"{where}: {len(dumps)} dumps; newest {fresh.reason}",
            "the nightly export is late or stopped: run it (and its schedule), or raise backups.rpo_target_s",
            dump=newest.name,
            age=fresh.value,
            rpo_target_s=b.rpo_target_s,
        )
    ]
    if not b.replica_bucket:
        results.append(dr.skip("backups copy", "the profile names no backups.replica_bucket"))
        return results
    try:
        gcs().list(b.replica_bucket, b.prefix)
        copies = stat_replica.fn(b.replica_bucket, newest)
    except GreenlightError as e:
        results.append(
            dr.fail(
                "backups copy",
                f"cannot read gs://{b.replica_bucket}: {e}",
                _gcs_fix(e, b.replica_bucket, "backups.replica_bucket"),
            )
        )
        return results
    replica = check_replica(newest, copies, b.replica_bucket)
    results.append(
        dr.from_backup_check(
            "backups copy",
            replica.ok,
            replica.reason,
            f"copy every dump to gs://{b.replica_bucket} after it is written (a Storage Transfer job, or "
            f"`gcloud storage rsync gs://{b.bucket}/{b.prefix} gs://{b.replica_bucket}/{b.prefix}`)",
            dump=newest.name,
        )
    )
    return results


# --- Slack -----------------------------------------------------------------------------------------


def check_slack(profile: Profile) -> dr.Result:
    """auth.test with the token the flows would use: ``SLACK_BOT_TOKEN``, else the profile's block."""
    s = profile.slack
    if s is None:
        return dr.assess_slack(None, None, None, None, None)
    block = s.token_secret_block
    token, source = os.environ.get(TOKEN_ENV) or None, TOKEN_ENV
    if token is None and block:
        source = f"Secret block {block}"
        try:
            token = str(Secret.load(block).get())  # type: ignore[union-attr]  # sync context
        except ValueError:
            token = None
        except Exception as e:  # the Prefect API itself: say so, the prefect checks say more
            return dr.fail(
                "slack", f"cannot read the Secret block {block}: {type(e).__name__}", "see the prefect checks"
            )
    if not token:
        return dr.assess_slack(s.channel, None, None, None, block)
    try:
        identity = Notifier(token=token, channel=s.channel, timeout_s=10).auth_test()
    except GreenlightError as e:
        return dr.assess_slack(s.channel, source, None, str(e), block)
    return dr.assess_slack(s.channel, source, identity, None, block)


# --- Prefect ---------------------------------------------------------------------------------------


#: how each kind of object ``greenlight setup`` manages is read (greenlight.commands.setup *_KIND)
PREFECT_READERS: dict[str, Callable[[Any, str], Any]] = {
    "work pool": lambda client, name: client.read_work_pool(name),
    "global concurrency limit": lambda client, name: client.read_global_concurrency_limit_by_name(name),
    "variable": lambda client, name: client.read_variable_by_name(name),
    # the block's document without its value: doctor never reads a secret it does not need
    "secret block": lambda client, name: client.read_block_document_by_name(
        name, block_type_slug="secret", include_secrets=False
    ),
}


def check_prefect(env: str, expected: Mapping[str, Sequence[tuple[str, str]]]) -> list[dr.Result]:
    """One result per kind of object ``greenlight setup`` creates (``expected``: kind -> (name,
    why), from its ``expected_objects``): each exists in the Prefect API."""
    results = []
    try:
        with get_client(sync_client=True) as client:
            for kind, names in expected.items():
                read = PREFECT_READERS[kind]
                present = [n for n, _ in names if _exists(read, client, n)]
                results.append(dr.assess_prefect(kind, names, present, env))
    except Exception as e:  # the Prefect API unreachable or refusing: every kind left unread fails
        done = {r.check for r in results}
        url = os.environ.get("PREFECT_API_URL") or "(PREFECT_API_URL not set)"
        for kind in expected:
            if f"prefect {kind}" not in done:
                results.append(
                    dr.fail(
                        f"prefect {kind}",
                        f"cannot read them from the Prefect API at {url}: {type(e).__name__}: {e}",
                        "point PREFECT_API_URL at the server the flows use (and PREFECT_API_KEY for Prefect Cloud)",
                    )
                )
    return results


def _exists(read: Callable[[Any, str], Any], client: Any, name: str) -> bool:
    try:
        return read(client, name) is not None
    except ObjectNotFound:
        return False
