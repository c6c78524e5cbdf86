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
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task

from greenlight.clients.postgres import Postgres
from greenlight.core.backups import (
    DumpObject,
    achieved_rpo,
    check_found,
    check_integrity,
    check_probe,
    check_sql_probe,
    select_newest,
)
from greenlight.core.drill import (
    APPLY_ORDER,
    DRILL_LABEL,
    ApplyPlan,
    AppTarget,
    DrillStep,
    DrillVerdict,
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
from greenlight.errors import BackupInvalid, Conflict, GateFailed, GreenlightError, InputInvalid
from greenlight.flows.config_backup import backup_config
from greenlight.flows.release import current_run_link, parallel
from greenlight.settings import Backups, DisasterRecovery, Environment, Profile, load_profile
from greenlight.tasks.database import probe_tables, restore_dump, run_sql_probes, scratch_server_url
from greenlight.tasks.evidence import emit, publish_report
from greenlight.tasks.kube import cluster, container_digest, read_live, wait_rollout
from greenlight.tasks.metrics import publish_gauge
from greenlight.tasks.notify import notify
from greenlight.tasks.policy import FRESH, RETRIES, logger
from greenlight.tasks.probes import smoke
from greenlight.tasks.storage import config_bucket, download_dump, find_dumps, latest_bundle, load_bundle

TEARDOWN_WAIT_S = 120.0  # a real namespace takes a while to terminate; pods go after their Deployment


class DrillFailed(GateFailed):
    """The drill failed a step, missed a target or left something behind; ``result`` has every value."""

    def __init__(self, reason: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(reason)
        self.result = result or {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (str(self), self.result))


# --- tasks: thin I/O against the DR cluster and the DR database server --------------------------------


@task(name="dr-database-exists", **FRESH, **RETRIES)
def database_exists(server_url: str, name: str) -> bool:
    """Whether database ``name`` exists on the server."""
    return bool(
        Postgres(server_url).scalar("SELECT count(*) > 0 FROM pg_database WHERE datname = %s", (name,))
    )


@task(name="create-dr-database", **FRESH)
def create_database(server_url: str, name: str) -> str:
    """Create the empty DR database ``name``; its URL (Conflict when it exists). Not retried: a retry
    after a lost answer would find it existing."""
    return Postgres(server_url).create_database(name)


@task(name="drop-dr-database", **FRESH, **RETRIES)
def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name``, ending its sessions; nothing happens when it is gone."""
    Postgres(server_url).drop_database(name)


@task(name="dr-secret-keys", **FRESH, **RETRIES)
def secret_keys(profile: Profile, names: list[str]) -> dict[str, list[str] | None]:
    """Per Secret name: its keys in the profile's namespace (None: missing). Values never leave this task."""
    out: dict[str, list[str] | None] = {}
    with cluster(profile) as kube:
        for name in names:
            obj = kube.find("secrets", name, profile.namespace)
            out[name] = (
                None if obj is None else sorted(set(obj.get("data") or {}) | set(obj.get("stringData") or {}))
            )
    return out


@task(name="ensure-dr-namespace", **FRESH, **RETRIES)
def ensure_namespace(profile: Profile, drill: str) -> bool:
    """Create the profile's namespace (labelled with the drill) unless it exists; True when created."""
    with cluster(profile) as kube:
        if kube.find("namespaces", profile.namespace) is not None:
            return False
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": profile.namespace, "labels": {DRILL_LABEL: drill}},
        }
        try:
            kube.create("namespaces", body)
        except Conflict:  # created since it was read (or by our own lost-answer retry): not ours to delete
            return False
        return True


@task(name="apply-dr-objects", **FRESH, **RETRIES)
def apply_objects(profile: Profile, objects: list[tuple[str, str, dict[str, Any]]]) -> list[str]:
    """Create each object in the profile's namespace, or replace the one there (keeping the cluster IPs
    a Service was given); ``["created services/backend", ...]`` in order."""
    done = []
    ns = profile.namespace
    with cluster(profile) as kube:
        for plural, name, body in objects:
            existing = kube.find(plural, name, ns)
            if existing is None:
                kube.create(plural, body, ns)
                done.append(f"created {plural}/{name}")
                continue
            new = {
                **body,
                "metadata": {**body["metadata"], "resourceVersion": existing["metadata"]["resourceVersion"]},
            }
            if plural == "services":
                assigned = {
                    k: v for k, v in (existing.get("spec") or {}).items() if k in ("clusterIP", "clusterIPs")
                }
                new["spec"] = {**(body.get("spec") or {}), **assigned}
            kube.replace(plural, name, new, ns)
            done.append(f"replaced {plural}/{name}")
    return done


@task(name="dr-deployment-digests", **FRESH, **RETRIES)
def deployment_digests(profile: Profile, pinned: dict[str, str]) -> dict[str, str | None]:
    """Per app: the digest its pinned Deployment runs now, read back from the DR cluster."""
    out: dict[str, str | None] = {}
    with cluster(profile) as kube:
        for app, name in pinned.items():
            dep = kube.find("deployments", name, profile.namespace)
            out[app] = container_digest(dep, profile.app(app).container) if dep else None
    return out


@task(name="dr-teardown-cluster", **FRESH, **RETRIES)
def delete_drill_objects(profile: Profile, drill: str, namespace_created: bool) -> list[str]:
    """Delete what the drill applied: the namespace when the drill created it, else every object carrying
    the drill's label (reverse apply order); what was deleted."""
    ns = profile.namespace
    with cluster(profile) as kube:
        if namespace_created:
            return [f"namespace {ns}"] if kube.delete("namespaces", ns) else []
        if kube.find("namespaces", ns) is None:  # the drill stopped before applying anything
            return []
        deleted = []
        for plural in reversed(APPLY_ORDER):
            for obj in kube.items(plural, ns, label_selector=f"{DRILL_LABEL}={drill}"):
                name = obj["metadata"]["name"]
                if kube.delete(plural, name, ns):
                    deleted.append(f"{plural}/{name}")
        return deleted


@task(name="dr-leftovers", **FRESH, **RETRIES)
def cluster_leftovers(profile: Profile, drill: str, namespace_created: bool) -> list[str]:
    """What is still there of the drill: the namespace (when the drill created it), else the objects
    and pods carrying the drill's label."""
    ns = profile.namespace
    with cluster(profile) as kube:
        if namespace_created:
            return [f"namespace {ns}"] if kube.find("namespaces", ns) is not None else []
        if kube.find("namespaces", ns) is None:
            return []
        left = []
        for plural in (*APPLY_ORDER, "pods"):
            left += [
                f"{plural}/{o['metadata']['name']}"
                for o in kube.items(plural, ns, label_selector=f"{DRILL_LABEL}={drill}")
            ]
        return left


# --- the drill -------------------------------------------------------------------------------------------


class Drill:
    """One drill while it runs: its profiles, its timeline, what it created, what it measured."""

    def __init__(self, profile: Profile, source: Profile, keep: bool) -> None:
        self.profile, self.source, self.keep = profile, source, keep
        self.dr: DisasterRecovery = _dr_of(profile)
        self.backups: Backups = _backups_of(profile)
        self.start = datetime.now(UTC)
        self.id = drill_id(profile.name, self.start, pysecrets.token_hex(3))
        self.steps: list[DrillStep] = []
        self.values: dict[str, Any] = {}
        self.log = logger()
        self._lock = threading.Lock()
        self._tmp = Path(tempfile.mkdtemp(prefix="greenlight-drill-"))
        self.dump: DumpObject | None = None
        self.dump_path: Path | None = None
        self.server_url = ""
        self.database = dr_database_name(self.backups.database)
        self.database_url = ""
        self.database_created = False
        self.namespace_created = False
        self.bundle: list[dict[str, Any]] = []
        self.plan: ApplyPlan | None = None
        self.rpo_s: float | None = None
        self.validated_at: datetime | None = None
        self.leftovers: list[str] = []

    # -- the timeline

    def run_step(self, name: str, fn: Callable[[], str]) -> bool:
        """Run one step, record it (ok with ``fn``'s detail, or failed with the error), say whether it passed.

        A Greenlight error is the step's failure reason; anything else is recorded the same way (with
        its traceback in the log), so the drill still reports and tears down.
        """
        started = datetime.now(UTC)
        try:
            detail, outcome = fn(), "ok"
        except GreenlightError as e:
            detail, outcome = str(e), "failed"
        except Exception as e:  # an unexpected failure must still be reported and torn down
            self.log.exception("drill step %s raised", name)
            detail, outcome = f"{type(e).__name__}: {e}", "failed"
        self.record(name, started, outcome, detail)
        return outcome == "ok"

    def record(self, name: str, started: datetime, outcome: str, detail: str) -> None:
        step = timed_step(name, self.start, started, datetime.now(UTC), outcome, detail)
        with self._lock:
            self.steps.append(step)
            # the two tracks interleave: keep the timeline in start order
            self.steps.sort(key=lambda s: s.started_at)
        (self.log.info if step.ok else self.log.error)(
            "drill %s: %s %s in %.1f s: %s", self.id, name, outcome, step.seconds, detail
        )

    def run(self) -> None:
        """Both tracks side by side, then the smoke probes; sets ``validated_at`` when every step passed."""
        data_ok, cluster_ok = parallel(lambda track: track(), [self._data_track, self._cluster_track])
        if not (data_ok and cluster_ok):
            self.record("smoke", datetime.now(UTC), "skipped", "not run: an earlier step failed")
            return
        if self.run_step("smoke", self._smoke):
            self.validated_at = datetime.now(UTC)

    def _data_track(self) -> bool:
        return (
            self.run_step("find-dump", self._find_dump)
            and self.run_step("download-dump", self._download)
            and self.run_step("restore-database", self._restore)
            and self.run_step("probe-database", self._probe)
        )

    def _cluster_track(self) -> bool:
        return (
            self.run_step("config-bundle", self._config_bundle)
            and self.run_step("plan", self._plan)
            and self.run_step("check-secrets", self._check_secrets)
            and self.run_step("apply-config", self._apply)
            and self.run_step("wait-healthy", self._wait_healthy)
        )

    # -- data

    def _find_dump(self) -> str:
        where = f"gs://{self.backups.bucket}/{self.backups.prefix}"
        dumps, listed = find_dumps(self.backups)
        newest = select_newest(dumps)
        found = check_found(newest, where, self.backups.name_pattern, listed)
        if newest is None:
            raise BackupInvalid(found.reason)
        self.dump = newest
        age = (self.start - newest.dump_time).total_seconds()
        self.values.update(
            {"dump": f"gs://{self.backups.bucket}/{newest.name}", "dump_time": newest.dump_time.isoformat(),
             "dump_age_seconds": round(age, 1)}
        )  # fmt: skip
        return f"{newest.name} in gs://{self.backups.bucket}, dumped {newest.dump_time.isoformat()} ({age:.0f} s before the drill)"

    def _download(self) -> str:
        assert self.dump is not None
        path, computed = download_dump(self.backups.bucket, self.dump, self._tmp)
        integrity = check_integrity(self.dump, computed, None)
        if not integrity.ok:
            raise BackupInvalid(integrity.reason)
        self.dump_path = path
        return f"{self.dump.size} bytes, {integrity.reason}"

    def _restore(self) -> str:
        assert self.dump_path is not None
        self.server_url = scratch_server_url()
        server = Postgres(self.server_url)
        if database_exists(self.server_url, self.database):
            raise Conflict(
                f"DR database {self.database} already exists on {server.where} (left by a kept drill?): "
                "drop it before the next drill"
            )
        self.database_url = create_database(self.server_url, self.database)
        self.database_created = True
        self.values["database"] = f"{self.database} on {server.where}"
        restored = restore_dump(self.dump_path, self.database_url, self.backups.restore_jobs)
        self.values["restore_seconds"] = round(restored.seconds, 3)
        return (
            f"into {self.database}: {restored.format}, {restored.bytes_in} bytes in {restored.seconds:.1f} s"
        )

    def _probe(self) -> str:
        assert self.dump is not None
        tables = probe_tables(self.database_url, self.backups.probes)
        minimums = {p.table: p.min_rows for p in self.backups.probes}
        checks = [check_probe(t, minimums[t.table], self.dump.name) for t in tables]
        expected = {p.name: p.expect_true for p in self.backups.sql_probes}
        checks += [
            check_sql_probe(name, value, expected[name], error, self.dump.name)
            for name, value, error in run_sql_probes(self.database_url, self.backups.sql_probes)
        ]
        newest = max((t.newest for t in tables if t.newest is not None), default=None)
        self.rpo_s = data_loss_seconds(self.start, newest)
        lag = achieved_rpo(self.dump.dump_time, tables)
        self.values.update(
            {"newest_row": newest.isoformat() if newest else None,
             "rpo_seconds": None if self.rpo_s is None else round(self.rpo_s, 3),
             "dump_lag_seconds": None if lag is None else round(lag, 3)}
        )  # fmt: skip
        failed = [c.reason for c in checks if not c.ok]
        if failed:
            raise BackupInvalid("; ".join(failed))
        rows = sum(t.rows for t in tables)
        return f"{len(checks)} probes passed ({rows} rows); newest row {newest.isoformat() if newest else 'unknown'}"

    # -- cluster

    def _config_bundle(self) -> str:
        bucket = config_bucket(self.source)
        prefix = latest_bundle(self.source)
        exported = prefix is None
        if prefix is None:
            prefix = str(backup_config(self.source.name, profile=self.source)["prefix"])
        self.bundle = load_bundle(self.source, prefix)
        self.values["bundle"] = f"gs://{bucket}/{prefix}"
        how = f"exported now from {self.source.name} (there was none)" if exported else "newest"
        return f"gs://{bucket}/{prefix}: {len(self.bundle)} objects ({how})"

    def _plan(self) -> str:
        live = read_live(self.source)
        digests, problems = live_digests(live, [a.name for a in self.profile.apps])
        self.values["digests"] = digests
        if problems:
            raise InputInvalid(f"cannot tell what is live in {self.source.name}: " + "; ".join(problems))
        targets = [
            AppTarget(a.name, a.service, a.container, a.image_repository, digests[a.name])
            for a in self.profile.apps
        ]
        plan = plan_apply(
            self.bundle, targets, self.profile.namespace, self.id, self.profile.release.colour_label
        )
        if plan.problems:
            raise InputInvalid("the bundle cannot be applied: " + "; ".join(plan.problems))
        self.plan = plan
        self.values["pinned"] = {app: f"{dep} @ {digests[app]}" for app, dep in plan.pinned.items()}
        kinds = ", ".join(f"{n} {k}" for k, n in plan.count_by_kind().items())
        skipped = f"; left out: {'; '.join(plan.skipped)}" if plan.skipped else ""
        pins = ", ".join(f"{dep}@{digests[app][:19]}…" for app, dep in plan.pinned.items())
        return f"{kinds}; pinned {pins}{skipped}"

    def _check_secrets(self) -> str:
        assert self.plan is not None
        refs = self.plan.secrets
        if not refs:
            return "the bundle names no Secret"
        present = secret_keys(self.profile, [r.name for r in refs])
        gaps = secret_gaps(refs, present)
        where = f"{self.profile.cluster.context or 'the DR cluster'}/{self.profile.namespace}"
        if gaps:
            raise GateFailed(f"{len(gaps)} Secret(s) not ready in {where}: " + "; ".join(gaps))
        return f"{len(refs)} Secret(s) present with their keys in {where}: " + ", ".join(
            f"{r.name} ({', '.join(r.keys)})" for r in refs
        )

    def _apply(self) -> str:
        assert self.plan is not None
        self.namespace_created = ensure_namespace(self.profile, self.id)
        done = apply_objects(self.profile, list(self.plan.objects))
        created = "created namespace; " if self.namespace_created else ""
        return f"{created}{len(done)} objects in {self.profile.namespace}: " + ", ".join(done)

    def _wait_healthy(self) -> str:
        assert self.plan is not None
        label = self.profile.release.colour_label
        pinned = self.plan.pinned
        bodies = {name: body for plural, name, body in self.plan.objects if plural == "deployments"}

        def wait(app: str) -> str:
            colour = bodies[pinned[app]]["spec"]["template"]["metadata"]["labels"].get(label, "")
            return f"{app}: {wait_rollout(self.profile, app, colour).reason}"

        reasons = parallel(wait, list(pinned))
        running = deployment_digests(self.profile, pinned)
        wrong = [
            f"{app}: {pinned[app]} runs {running.get(app)}, not {self.values['digests'][app]}"
            for app in pinned
            if running.get(app) != self.values["digests"][app]
        ]
        if wrong:
            raise GateFailed("DR Deployments do not run the digests live in the source: " + "; ".join(wrong))
        return "; ".join(reasons) + "; every digest matches the source"

    def _smoke(self) -> str:
        failed, passed = [], 0
        for app in self.profile.apps:
            for r in smoke(self.profile, app.name, "live"):
                if r.ok:
                    passed += 1
                else:
                    failed.append(f"{app.name} {r.reason}")
        if failed:
            raise GateFailed("smoke probes of the DR Services failed: " + "; ".join(failed))
        return (
            f"{passed} smoke probes of {', '.join(a.service for a in self.profile.apps)} answered as expected"
        )

    # -- teardown

    def teardown(self) -> None:
        """Delete what the drill created (cluster objects, DR database), then list what is left; recorded
        as the ``teardown`` step, and anything left goes to ``leftovers``."""
        started = datetime.now(UTC)
        done: list[str] = []
        problems: list[str] = []
        try:
            deleted = delete_drill_objects(self.profile, self.id, self.namespace_created)
            done.append(f"deleted {len(deleted)} object(s)" + (f" ({', '.join(deleted)})" if deleted else ""))
        except GreenlightError as e:
            problems.append(f"cluster cleanup failed: {e}")
        if self.database_created:
            try:
                drop_database(self.server_url, self.database)
                done.append(f"dropped database {self.database}")
            except GreenlightError as e:
                problems.append(f"database {self.database} not dropped: {e}")
        self.leftovers = self._wait_nothing_left()
        shutil.rmtree(self._tmp, ignore_errors=True)
        self.values["leftovers"] = list(self.leftovers)
        if self.leftovers or problems:
            left = [f"left: {', '.join(self.leftovers)}"] if self.leftovers else []
            self.record("teardown", started, "failed", "; ".join([*problems, *left]))
        else:
            self.record("teardown", started, "ok", "; ".join(done) + "; nothing left (listed after teardown)")

    def _wait_nothing_left(self) -> list[str]:
        """What is left of the drill, waiting up to ``TEARDOWN_WAIT_S`` for the cluster to finish deleting."""
        deadline = time.monotonic() + TEARDOWN_WAIT_S
        while True:
            try:
                left = cluster_leftovers(self.profile, self.id, self.namespace_created)
            except GreenlightError as e:
                left = [f"cluster not listable: {e}"]
            if self.database_created and self.server_url and database_exists(self.server_url, self.database):
                left.append(f"database {self.database}")
            if not left or time.monotonic() > deadline:
                return left
            time.sleep(0.5)

    def keep_note(self) -> None:
        """Record that teardown was skipped and what stays."""
        kept = [f"namespace {self.profile.namespace} on {self.profile.cluster.context or 'the DR cluster'}"]
        if self.database_created:
            kept.append(f"database {self.database}")
        self.record("teardown", datetime.now(UTC), "skipped", "--keep: left running: " + ", ".join(kept))
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- verdict and record

    def verdict(self) -> DrillVerdict:
        rto_s = elapsed_seconds(self.start, self.validated_at) if self.validated_at else None
        rto = compare_target("RTO", rto_s, self.dr.rto_target_s, "the drill did not reach validation")
        rpo = compare_target("RPO", self.rpo_s, self.dr.rpo_target_s, "no restored row had a timestamp")
        return decide_drill(self.steps, rto, rpo, self.leftovers)

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
            "namespace_created": self.namespace_created,
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


def _backups_of(profile: Profile) -> Backups:
    if profile.backups is None:
        raise InputInvalid(
            f"environment '{profile.name}' has no 'backups' section: the drill has no dump to restore"
        )
    return profile.backups


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
    try:
        drill.run()
    finally:
        if keep:
            drill.keep_note()
        else:
            drill.teardown()
    verdict = drill.verdict()
    result = drill.result(verdict)
    drill.publish(verdict, result)
    if not verdict.passed:
        raise DrillFailed(f"DR drill of {prof.name} FAILED: {verdict.reason}", result)
    return result


# --- dry run ----------------------------------------------------------------------------------------------


def plan_drill(environment: str, profile: Profile | None = None) -> list[str]:
    """What a drill of ``environment`` would do, read-only (plain Python, no Prefect run): the dump,
    the bundle (or that one would be exported), the objects and pinned digests, the Secrets, the targets."""
    prof = profile if profile is not None else load_profile(environment)
    dr, backups = _dr_of(prof), _backups_of(prof)
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
        targets = [
            AppTarget(a.name, a.service, a.container, a.image_repository, digests[a.name])
            for a in prof.apps
            if a.name in digests
        ]
        plan = plan_apply(
            load_bundle.fn(source, prefix), targets, prof.namespace, "dry-run", prof.release.colour_label
        )
        lines.append(f"would apply gs://{config_bucket(source)}/{prefix}:")
        lines += [f"  {plural}/{name}" for plural, name, _ in plan.objects]
        lines += [f"  left out {s}" for s in plan.skipped] + [f"PROBLEM: {p}" for p in plan.problems]
        if plan.secrets:
            gaps = secret_gaps(plan.secrets, secret_keys.fn(prof, [r.name for r in plan.secrets]))
            lines += [f"PROBLEM: {g}" for g in gaps] or [
                f"Secrets present: {', '.join(r.name for r in plan.secrets)}"
            ]
    lines.append(f"targets: RTO {dr.rto_target_s:.0f} s, RPO {dr.rpo_target_s:.0f} s")
    return lines
