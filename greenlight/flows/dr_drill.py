"""dr-drill: a timed run of the disaster-recovery runbook, measured against the profile's RTO and RPO.

Two tracks run side by side from the drill's start, each step timed and recorded:

- data: find the newest dump in the DR profile's ``backups.bucket`` (the cross-region copies),
  download it verified, restore it into the DR database (``<backups.database>_dr`` on the
  server ``GREENLIGHT_SCRATCH_DATABASE_URL`` names) and probe it (tables, rows, SQL probes);
- cluster: take the newest config bundle of the source environment (``dr.source``), exporting
  one first when there is none; read the digests live in the source (its live Services); plan
  what to apply (the Deployment each live Service selects, pinned to its digest; Services,
  ConfigMaps, HPAs, Ingresses; never a Secret); check that every Secret the bundle names exists
  in the DR namespace with its keys; create the namespace if needed, create or replace the
  objects; wait until every pinned Deployment is available and runs exactly its digest.

Then the DR Services are smoke-probed (profile ``gate.smoke``, live Services): that moment is
"validated", and RTO is the drill's start to it. RPO is what a disaster at the drill's start
would have lost: the drill's start minus the newest row in the restored data. (Dump time minus
newest row, the dump's own lag, is recorded beside it as ``dump_lag_seconds``; the drill reports
the former because it is the data loss a real recovery would have suffered, including the
dump's age.)

Teardown always runs (``finally``) unless ``keep``: the namespace goes when the drill created
it, else every object carrying the drill's label; the DR database is dropped when the drill
created it; then the cluster and server are listed again and anything left is named (and fails
the drill). The report (markdown artifact ``dr-drill-<env>``, Slack, gauges ``drill_rto_seconds``,
``drill_rpo_seconds``, ``drill_passed``, event ``greenlight.drill.passed|failed``) is published
before :class:`DrillFailed` is raised.
"""

from __future__ import annotations

import secrets as pysecrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from prefect import flow

from greenlight.core.alerts import Condition, Kind
from greenlight.core.backups import DumpObject, check_found, check_integrity, select_newest
from greenlight.core.dns import drill_record_name
from greenlight.core.drill import (
    GATEWAY_ROUTER,
    ApplyPlan,
    AppTarget,
    Done,
    DownloadedDump,
    DrillStep,
    DrillVerdict,
    PlannedApply,
    ProbedData,
    Reached,
    RestoredDatabase,
    compare_target,
    data_loss_seconds,
    decide_drill,
    dr_database_name,
    drill_id,
    elapsed_seconds,
    live_digests,
    plan_apply,
    render_report,
    secret_gaps,
    timed_step,
)
from greenlight.errors import BackupInvalid, Conflict, DrillFailed, GateFailed, GreenlightError, InputInvalid
from greenlight.flows.approval_wait import current_run_link
from greenlight.flows.concurrency import parallel
from greenlight.flows.config_backup import backup_config
from greenlight.settings import Backups, DisasterRecovery, Environment, Profile, load_profile
from greenlight.tasks.alerts import raise_alert, resolve_alerts
from greenlight.tasks.backups import backups_of, probe_restored
from greenlight.tasks.database import restore_dump, scratch_server_url
from greenlight.tasks.dns import create_drill_record, drill_records_left, remove_drill_records
from greenlight.tasks.drill import (
    apply_objects,
    await_routes,
    cluster_leftovers,
    create_database,
    database_exists,
    database_where,
    delete_drill_objects,
    deployment_digests,
    drop_database,
    ensure_namespace,
    secret_keys,
)
from greenlight.tasks.evidence import emit, publish_report
from greenlight.tasks.kube import read_live, wait_rollout
from greenlight.tasks.metrics import publish_gauge
from greenlight.tasks.notify import notify
from greenlight.tasks.policy import logger
from greenlight.tasks.probes import smoke
from greenlight.tasks.storage import config_bucket, download_dump, find_dumps, latest_bundle, load_bundle

T = TypeVar("T")
TEARDOWN_WAIT_S = 120.0  # a real namespace takes a while to terminate; pods go after their Deployment


# --- the drill -------------------------------------------------------------------------------------------


@dataclass
class Created:
    """What a drill has created so far, for teardown: the server holding the DR database (empty: none
    created) and whether the namespace is the drill's own. Set the moment each thing exists."""

    database_on: str = ""
    namespace: bool = False


def _ok(done: Done[T] | None) -> TypeGuard[Done[T]]:
    """The step ran to the end and passed."""
    return done is not None and not done.failure


class Drill:
    """One drill while it runs: its profiles, its id and start, the timeline, what it has created.

    Steps take what the steps before them produced and return a :class:`Done` with what they
    produced; the tracks pass it on, so no step runs on a value another step did not make. Two things
    outlive the steps and are kept here: ``created`` (what teardown must undo, filled the moment
    each thing exists, so a step that fails half-way still leaves it known) and ``values`` (the
    facts of the report, which steps only add to).
    """

    def __init__(self, profile: Profile, source: Profile, keep: bool) -> None:
        self.profile, self.source, self.keep = profile, source, keep
        self.dr: DisasterRecovery = _dr_of(profile)
        self.backups: Backups = backups_of(profile, "the drill has no dump to restore")
        self.start = datetime.now(UTC)
        self.id = drill_id(profile.name, self.start, pysecrets.token_hex(3))
        self.database = dr_database_name(self.backups.database)
        self.created = Created()
        self.steps: list[DrillStep] = []
        self.values: dict[str, Any] = {}
        self.log = logger()
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="greenlight-drill-"))

    # -- the timeline

    def run_step(self, name: str, fn: Callable[[], Done[T]]) -> Done[T] | None:
        """Run one step and record it: ok with its detail, or failed with its failure or the error.

        Returns what the step produced (also when it failed after measuring something: ``failure``
        set), None when it raised. A Greenlight error is the step's failure reason; anything else is
        recorded the same way (with its traceback in the log), so the drill still reports and tears down.
        """
        started = datetime.now(UTC)
        done: Done[T] | None = None
        try:
            done = fn()
            detail, outcome = (done.failure, "failed") if done.failure else (done.detail, "ok")
        except GreenlightError as e:
            detail, outcome = str(e), "failed"
        except Exception as e:  # an unexpected failure must still be reported and torn down
            self.log.exception("drill step %s raised", name)
            detail, outcome = f"{type(e).__name__}: {e}", "failed"
        self.record(name, started, outcome, detail)
        return done

    def record(self, name: str, started: datetime, outcome: str, detail: str) -> None:
        step = timed_step(name, self.start, started, datetime.now(UTC), outcome, detail)
        with self._lock:
            self.steps.append(step)
            # the two tracks interleave: keep the timeline in start order
            self.steps.sort(key=lambda s: s.started_at)
        (self.log.info if step.ok else self.log.error)(
            "drill %s: %s %s in %.1f s: %s", self.id, name, outcome, step.seconds, detail
        )

    def note(self, **facts: Any) -> None:
        """Add facts to the report (steps write them; no step reads them)."""
        with self._lock:
            self.values.update(facts)

    def run(self) -> Reached:
        """Both tracks side by side, then the smoke probes and the DNS record; validated when every step passed."""
        tracks: list[Callable[[], Any]] = [self._data_track, self._cluster_track]
        (data_ok, rpo_s), cluster_ok = parallel(lambda track: track(), tracks)
        if not (data_ok and cluster_ok):
            self.record("smoke", datetime.now(UTC), "skipped", "not run: an earlier step failed")
            return Reached(None, rpo_s)
        if _ok(self.run_step("smoke", self._smoke)) and self._dns_step():
            return Reached(datetime.now(UTC), rpo_s)
        return Reached(None, rpo_s)

    def _dns_step(self) -> bool:
        """The drill's DNS record at the DR target, checked through the provider's API (inside RTO)."""
        dns = self.profile.dns
        return dns is None or _ok(
            self.run_step("dns-record", lambda: Done(create_drill_record(dns, self.id), None))
        )

    def _data_track(self) -> tuple[bool, float | None]:
        """find-dump, download-dump, restore-database, probe-database: (all passed, the RPO when measured)."""
        found = self.run_step("find-dump", self._find_dump)
        if not _ok(found):
            return False, None
        downloaded = self.run_step("download-dump", lambda: self._download(found.value))
        if not _ok(downloaded):
            return False, None
        restored = self.run_step("restore-database", lambda: self._restore(downloaded.value))
        if not _ok(restored):
            return False, None
        probed = self.run_step("probe-database", lambda: self._probe(restored.value))
        return _ok(probed), None if probed is None else probed.value.rpo_s

    def _cluster_track(self) -> bool:
        """config-bundle, plan, check-secrets, apply-config, wait-healthy: whether all passed."""
        bundle = self.run_step("config-bundle", self._config_bundle)
        if not _ok(bundle):
            return False
        planned = self.run_step("plan", lambda: self._plan(bundle.value))
        if not _ok(planned):
            return False
        return (
            _ok(self.run_step("check-secrets", lambda: self._check_secrets(planned.value)))
            and _ok(self.run_step("apply-config", lambda: self._apply(planned.value)))
            and _ok(self.run_step("wait-healthy", lambda: self._wait_healthy(planned.value)))
        )

    # -- data

    def _find_dump(self) -> Done[DumpObject]:
        where = f"gs://{self.backups.bucket}/{self.backups.prefix}"
        dumps, listed = find_dumps(self.backups)
        newest = select_newest(dumps)
        found = check_found(newest, where, self.backups.name_pattern, listed)
        if newest is None:
            raise BackupInvalid(found.reason)
        age = (self.start - newest.dump_time).total_seconds()
        self.note(dump=f"gs://{self.backups.bucket}/{newest.name}", dump_time=newest.dump_time.isoformat(),
                  dump_age_seconds=round(age, 1))  # fmt: skip
        return Done(
            f"{newest.name} in gs://{self.backups.bucket}, dumped {newest.dump_time.isoformat()} ({age:.0f} s before the drill)",
            newest,
        )

    def _download(self, dump: DumpObject) -> Done[DownloadedDump]:
        path, computed = download_dump(self.backups.bucket, dump, self._tmp)
        integrity = check_integrity(dump, computed, None)
        if not integrity.ok:
            raise BackupInvalid(integrity.reason)
        return Done(f"{dump.size} bytes, {integrity.reason}", DownloadedDump(dump, path))

    def _restore(self, downloaded: DownloadedDump) -> Done[RestoredDatabase]:
        server_url = scratch_server_url()
        where = database_where(server_url)
        if database_exists(server_url, self.database):
            raise Conflict(
                f"DR database {self.database} already exists on {where} (left by a kept drill?): "
                "drop it before the next drill"
            )
        url = create_database(server_url, self.database)
        self.created.database_on = server_url
        self.note(database=f"{self.database} on {where}")
        restored = restore_dump(downloaded.path, url, self.backups.restore_jobs)
        self.note(restore_seconds=round(restored.seconds, 3))
        return Done(
            f"into {self.database}: {restored.format}, {restored.bytes_in} bytes in {restored.seconds:.1f} s",
            RestoredDatabase(downloaded.dump, url),
        )

    def _probe(self, restored: RestoredDatabase) -> Done[ProbedData]:
        found = probe_restored(restored.url, self.backups, restored.dump)
        newest = found.newest_row
        rpo_s = data_loss_seconds(self.start, newest)
        lag = found.dump_lag_s
        self.note(newest_row=newest.isoformat() if newest else None,
                  rpo_seconds=None if rpo_s is None else round(rpo_s, 3),
                  dump_lag_seconds=None if lag is None else round(lag, 3))  # fmt: skip
        detail = f"{len(found.checks)} probes passed ({found.rows} rows); newest row {newest.isoformat() if newest else 'unknown'}"
        return Done(detail, ProbedData(rpo_s), failure="; ".join(found.failures))

    # -- cluster

    def _config_bundle(self) -> Done[list[dict[str, Any]]]:
        bucket = config_bucket(self.source)
        prefix = latest_bundle(self.source)
        exported = prefix is None
        if prefix is None:
            prefix = str(backup_config(self.source.name, profile=self.source)["prefix"])
        bundle = load_bundle(self.source, prefix)
        self.note(bundle=f"gs://{bucket}/{prefix}")
        how = f"exported now from {self.source.name} (there was none)" if exported else "newest"
        return Done(f"gs://{bucket}/{prefix}: {len(bundle)} objects ({how})", bundle)

    def _plan(self, bundle: list[dict[str, Any]]) -> Done[PlannedApply]:
        live = read_live(self.source)
        digests, problems = live_digests(live, [a.name for a in self.profile.apps])
        self.note(digests=digests)
        if problems:
            raise InputInvalid(f"cannot tell what is live in {self.source.name}: " + "; ".join(problems))
        plan = apply_plan(bundle, self.source, self.profile, digests, self.id)
        if plan.problems:
            raise InputInvalid("the bundle cannot be applied: " + "; ".join(plan.problems))
        self.note(pinned={app: f"{dep} @ {digests[app]}" for app, dep in plan.pinned.items()})
        kinds = ", ".join(f"{n} {k}" for k, n in plan.count_by_kind().items())
        skipped = f"; left out: {'; '.join(plan.skipped)}" if plan.skipped else ""
        pins = ", ".join(f"{dep}@{digests[app][:19]}…" for app, dep in plan.pinned.items())
        return Done(f"{kinds}; pinned {pins}{skipped}", PlannedApply(plan, digests))

    def _check_secrets(self, planned: PlannedApply) -> Done[None]:
        refs = planned.plan.secrets
        if not refs:
            return Done("the bundle names no Secret", None)
        present = secret_keys(self.profile, [r.name for r in refs])
        gaps = secret_gaps(refs, present)
        where = f"{self.profile.cluster.context or 'the DR cluster'}/{self.profile.namespace}"
        if gaps:
            raise GateFailed(f"{len(gaps)} Secret(s) not ready in {where}: " + "; ".join(gaps))
        detail = f"{len(refs)} Secret(s) present with their keys in {where}: " + ", ".join(
            f"{r.name} ({', '.join(r.keys)})" for r in refs
        )
        return Done(detail, None)

    def _apply(self, planned: PlannedApply) -> Done[None]:
        namespace_created = ensure_namespace(self.profile, self.id)
        self.created.namespace = namespace_created
        done = apply_objects(self.profile, list(planned.plan.objects))
        created = "created namespace; " if namespace_created else ""
        return Done(f"{created}{len(done)} objects in {self.profile.namespace}: " + ", ".join(done), None)

    def _wait_healthy(self, planned: PlannedApply) -> Done[None]:
        label = self.profile.release.colour_label
        pinned, digests = planned.plan.pinned, planned.digests
        bodies = {name: body for plural, name, body in planned.plan.objects if plural == "deployments"}

        def colour(app: str) -> str:
            return str(bodies[pinned[app]]["spec"]["template"]["metadata"]["labels"].get(label, ""))

        def wait(app: str) -> str:
            return f"{app}: {wait_rollout(self.profile, app, colour(app)).reason}"

        reasons = parallel(wait, list(pinned))
        running = deployment_digests(self.profile, pinned)
        wrong = [
            f"{app}: {pinned[app]} runs {running.get(app)}, not {digests[app]}"
            for app in pinned
            if running.get(app) != digests[app]
        ]
        if wrong:
            raise GateFailed("DR Deployments do not run the digests live in the source: " + "; ".join(wrong))
        routed = ""
        if self.profile.traffic.router == GATEWAY_ROUTER:  # the DR Gateway must serve what was deployed
            routed = "; " + "; ".join(await_routes(self.profile, {app: colour(app) for app in pinned}))
        return Done("; ".join(reasons) + "; every digest matches the source" + routed, None)

    def _smoke(self) -> Done[None]:
        failed, passed = [], 0
        for app in self.profile.apps:
            for r in smoke(self.profile, app.name, "live"):
                if r.ok:
                    passed += 1
                else:
                    failed.append(f"{app.name} {r.reason}")
        if failed:
            raise GateFailed("smoke probes of the DR Services failed: " + "; ".join(failed))
        services = ", ".join(a.service for a in self.profile.apps)
        return Done(f"{passed} smoke probes of {services} answered as expected", None)

    # -- teardown

    def teardown(self) -> list[str]:
        """Delete what the drill created (cluster objects, DR database), then list what is left; recorded
        as the ``teardown`` step. Returns what is left (the leftovers)."""
        started = datetime.now(UTC)
        done: list[str] = []
        problems: list[str] = []
        try:
            deleted = delete_drill_objects(self.profile, self.id, self.created.namespace)
            done.append(f"deleted {len(deleted)} object(s)" + (f" ({', '.join(deleted)})" if deleted else ""))
        except GreenlightError as e:
            problems.append(f"cluster cleanup failed: {e}")
        if self.created.database_on:
            try:
                drop_database(self.created.database_on, self.database)
                done.append(f"dropped database {self.database}")
            except GreenlightError as e:
                problems.append(f"database {self.database} not dropped: {e}")
        if self.profile.dns is not None:  # this drill's record and any a crashed drill left
            try:
                swept = remove_drill_records(self.profile.dns)
                done.append(
                    f"deleted {len(swept)} DNS record(s)" + (f" ({', '.join(swept)})" if swept else "")
                )
            except GreenlightError as e:
                problems.append(f"DNS drill record not removed: {e}")
        leftovers = self._wait_nothing_left()
        if self.profile.dns is not None:  # deleted at once: listed once, not waited for
            try:
                leftovers += drill_records_left(self.profile.dns)
            except GreenlightError as e:
                leftovers.append(f"DNS records not listable: {e}")
        shutil.rmtree(self._tmp, ignore_errors=True)
        self.note(leftovers=list(leftovers))
        if leftovers or problems:
            left = [f"left: {', '.join(leftovers)}"] if leftovers else []
            self.record("teardown", started, "failed", "; ".join([*problems, *left]))
        else:
            self.record("teardown", started, "ok", "; ".join(done) + "; nothing left (listed after teardown)")
        return leftovers

    def _wait_nothing_left(self) -> list[str]:
        """What is left of the drill, waiting up to ``TEARDOWN_WAIT_S`` for the cluster to finish deleting."""
        deadline = time.monotonic() + TEARDOWN_WAIT_S
        server_url = self.created.database_on
        while True:
            try:
                left = cluster_leftovers(self.profile, self.id, self.created.namespace)
            except GreenlightError as e:
                left = [f"cluster not listable: {e}"]
            if server_url and database_exists(server_url, self.database):
                left.append(f"database {self.database}")
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def keep_note(self) -> None:
        """Record that teardown was skipped and what stays."""
        kept = [f"namespace {self.profile.namespace} on {self.profile.cluster.context or 'the DR cluster'}"]
        if self.created.database_on:
            kept.append(f"database {self.database}")
        if self.profile.dns is not None and any(s.name == "dns-record" and s.ok for s in self.steps):
            kept.append(
                f"DNS record {drill_record_name(self.profile.dns.drill_record, self.id, self.profile.dns.zone)}"
            )
        self.record("teardown", datetime.now(UTC), "skipped", "--keep: left running: " + ", ".join(kept))
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- verdict and record

    def verdict(self, reached: Reached, leftovers: list[str]) -> DrillVerdict:
        rto_s = elapsed_seconds(self.start, reached.validated_at) if reached.validated_at else None
        rto = compare_target("RTO", rto_s, self.dr.rto_target_s, "the drill did not reach validation")
        rpo = compare_target("RPO", reached.rpo_s, self.dr.rpo_target_s, "no restored row had a timestamp")
        return decide_drill(self.steps, rto, rpo, leftovers)

    def result(self, verdict: DrillVerdict) -> dict[str, Any]:
        return {
            "environment": self.profile.name,
            "source": self.source.name,
            "drill_id": self.id,
            "started": self.start.isoformat(),
            "passed": verdict.passed,
            "reason": verdict.reason,
            "reasons": list(verdict.reasons),
            "rto_seconds": verdict.rto.value_s,
            "rto_target_s": verdict.rto.target_s,
            "rto": verdict.rto.reason,
            "rpo_target_s": verdict.rpo.target_s,
            "rpo": verdict.rpo.reason,
            "kept": self.keep,
            "namespace": self.profile.namespace,
            "namespace_created": self.created.namespace,
            "steps": [{**asdict(s), "started_at": s.started_at.isoformat()} for s in self.steps],
            **self.values,
        }

    def publish(self, verdict: DrillVerdict, result: dict[str, Any]) -> None:
        """Gauges, the markdown artifact, the Slack summary and an event; publishing never hides the outcome."""
        labels = {"environment": self.profile.name, "source": self.source.name}
        gauges = {"drill_passed": 1.0 if verdict.passed else 0.0}
        if verdict.rto.value_s is not None:
            gauges["drill_rto_seconds"] = verdict.rto.value_s
        if verdict.rpo.value_s is not None:
            gauges["drill_rpo_seconds"] = verdict.rpo.value_s
        for name, value in gauges.items():
            publish_gauge(self.profile, name, value, labels)
        result["metrics_published"] = sorted(gauges)
        title = f"DR drill {self.id}: {self.source.name} -> {self.profile.name}"
        facts = {"run": current_run_link(), "drill id": self.id, "source": self.source.name,
                 "cluster": self.profile.cluster.context or "in-cluster", "namespace": self.profile.namespace,
                 "kept": self.keep, **self.values}  # fmt: skip
        try:
            key = f"dr-drill-{self.profile.name}"
            publish_report(key, render_report(title, verdict, self.steps, facts), title)
            result["report_key"] = key
        except Exception as e:  # the record must not hide the outcome
            self.log.warning("drill report not published: %s", e)
        icon = ":white_check_mark:" if verdict.passed else ":x:"
        state = "passed" if verdict.passed else "FAILED"
        notify(
            self.profile,
            f"{icon} DR drill {self.id} ({self.source.name} -> {self.profile.name}) {state}: {verdict.reason}",
        )
        if verdict.passed:
            resolve_alerts(self.profile, Condition.DRILL_MET_TARGET)
        else:  # measured both targets and missed one: missed target; otherwise the drill itself failed
            measured = verdict.rto.value_s is not None and verdict.rpo.value_s is not None
            kind = Kind.DRILL_MISSED_TARGET if measured else Kind.DRILL_FAILED
            raise_alert(
                self.profile,
                kind,
                f"DR drill {self.id} {state}: {verdict.reason}",
                details={"drill": self.id},
            )
        emit(
            f"greenlight.drill.{'passed' if verdict.passed else 'failed'}",
            f"greenlight.environment.{self.profile.name}",
            {"drill_id": self.id, "reasons": list(verdict.reasons), "rto_seconds": verdict.rto.value_s,
             "rpo_seconds": verdict.rpo.value_s},
        )  # fmt: skip


def _dr_of(profile: Profile) -> DisasterRecovery:
    if profile.dr is None:
        raise InputInvalid(
            f"environment '{profile.name}' has no 'dr' section in its profile: it is not a DR environment"
        )
    return profile.dr


@flow(name="dr-drill")
def dr_drill(
    environment: Environment,
    keep: bool = False,
    profile: Profile | None = None,
    source_profile: Profile | None = None,
) -> dict[str, Any]:
    """Run the DR drill of ``environment`` (a profile with a ``dr`` section) and measure RTO and RPO.

    Returns every step and value; raises DrillFailed (a GateFailed) with the reasons after
    publishing them when a step failed, a target was missed or teardown left something.

    Args:
        environment: the DR environment to drill into (a profile with a dr section, e.g. dr)
        keep: leave the DR workloads and database running after the drill
        profile: for tests and ad-hoc runs only: a whole profile that replaces the environment's file (leave empty)
        source_profile: for tests and ad-hoc runs only: the source environment's profile (leave empty)
    """
    prof = profile if profile is not None else load_profile(environment)
    source = source_profile if source_profile is not None else load_profile(_dr_of(prof).source)
    drill = Drill(prof, source, keep)
    drill.log.info("DR drill %s of %s from %s started", drill.id, prof.name, source.name)
    reached = Reached(None, None)
    leftovers: list[str] = []
    try:
        reached = drill.run()
    finally:
        if keep:
            drill.keep_note()
        else:
            leftovers = drill.teardown()
    verdict = drill.verdict(reached, leftovers)
    result = drill.result(verdict)
    drill.publish(verdict, result)
    if not verdict.passed:
        raise DrillFailed(f"DR drill of {prof.name} FAILED: {verdict.reason}", result)
    return result


def apply_plan(
    bundle: list[dict[str, Any]], source: Profile, profile: Profile, digests: dict[str, str], drill: str
) -> ApplyPlan:
    """What the drill applies of ``source``'s bundle in ``profile``'s namespace, each app (that has a
    digest) pinned to its live digest (``core.drill.plan_apply``, with the DR profile's router); a
    source that routes live traffic another way than the DR profile is a problem: the bundle's
    objects are applied as they are, so both sides must route alike."""
    targets = [
        AppTarget(a.name, a.service, a.container, a.image_repository, digests[a.name], a.route_name)
        for a in profile.apps
        if a.name in digests
    ]
    rel, router = profile.release, profile.traffic.router
    plan = plan_apply(bundle, targets, profile.namespace, drill, rel.colour_label, router, rel.colours)
    if source.traffic.router != router:
        mixed = (
            f"{profile.name} routes live traffic with traffic.router {router} and {source.name} with "
            f"{source.traffic.router}: a drill applies {source.name}'s objects as they are, so both must use the same router"
        )
        return replace(plan, problems=(mixed, *plan.problems))
    return plan


# --- dry run ----------------------------------------------------------------------------------------------


def plan_drill(environment: str, profile: Profile | None = None) -> list[str]:
    """What a drill of ``environment`` would do, read-only (plain Python, no Prefect run): the dump,
    the bundle (or that one would be exported), the objects and pinned digests, the Secrets, the targets."""
    prof = profile if profile is not None else load_profile(environment)
    dr, backups = _dr_of(prof), backups_of(prof, "the drill has no dump to restore")
    source = load_profile(dr.source)
    lines = [
        f"DR drill of {prof.name} from {source.name}: cluster {prof.cluster.context}, namespace {prof.namespace}"
    ]
    dumps, listed = find_dumps.fn(backups)
    newest = select_newest(dumps)
    where = f"gs://{backups.bucket}/{backups.prefix}"
    lines.append(
        f"would restore gs://{backups.bucket}/{newest.name} ({newest.dump_time.isoformat()}) into database "
        f"{dr_database_name(backups.database)}"
        if newest
        else f"NO DUMP: {check_found(None, where, backups.name_pattern, listed).reason}"
    )
    prefix = latest_bundle.fn(source)
    digests, problems = live_digests(read_live.fn(source), [a.name for a in prof.apps])
    lines += [f"would deploy {app} @ {d}" for app, d in sorted(digests.items())] + [
        f"PROBLEM: {p}" for p in problems
    ]
    if prefix is None:
        lines.append(f"no config bundle of {source.name}: would export one from {source.namespace} first")
    else:
        plan = apply_plan(load_bundle.fn(source, prefix), source, prof, digests, "dry-run")
        lines.append(f"would apply gs://{config_bucket(source)}/{prefix}:")
        lines += [f"  {plural}/{name}" for plural, name, _ in plan.objects]
        lines += [f"  left out {s}" for s in plan.skipped] + [f"PROBLEM: {p}" for p in plan.problems]
        if plan.secrets:
            gaps = secret_gaps(plan.secrets, secret_keys.fn(prof, [r.name for r in plan.secrets]))
            lines += [f"PROBLEM: {g}" for g in gaps] or [
                f"Secrets present: {', '.join(r.name for r in plan.secrets)}"
            ]
    if prof.dns is not None:
        name = f"{prof.dns.drill_record}.{prof.dns.zone}"
        lines.append(
            f"would create DNS record {name} {prof.dns.type} {prof.dns.dr_target} in {prof.dns.zone}, then delete it"
        )
    lines.append(f"targets: RTO {dr.rto_target_s:.0f} s, RPO {dr.rpo_target_s:.0f} s")
    return lines
