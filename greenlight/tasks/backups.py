"""What the nightly backup verification and the DR drill share: the profile's backups section, the
probes of a restored dump, and the backup gauges.

- :func:`backups_of`: the profile's ``backups`` section, or InputInvalid naming the environment and
  what the caller cannot do without it;
- :func:`probe_restored`: run the section's probes against a restored dump (:func:`probe_tables`:
  tables, rows, newest rows; :func:`run_sql_probes`) and judge them
  (:func:`greenlight.core.backups.judge_probes`); both flows call it, so a probe added here runs in
  the verification and the drill alike;
- :func:`publish_backup_metrics`: the verification's gauges in Cloud Monitoring.

Adding a probe: a check that SQL can answer with true or false is a profile entry
(``backups.sql_probes``), no code. A new kind of probe is run here (its query, as a task beside
:func:`probe_tables`, called from :func:`probe_restored`) and judged in
:func:`greenlight.core.backups.judge_probes` (pure, tested by tables); a field in
``greenlight.settings.Backups`` when the profile configures it. Both flows pick it up from here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from greenlight.clients.monitoring import MonitoringClient
from greenlight.clients.postgres import Postgres
from greenlight.core.backups import (
    DumpObject,
    ProbeFindings,
    TableProbe,
    judge_probes,
    quote_column,
    quote_table,
)
from greenlight.errors import InputInvalid, PermanentError
from greenlight.settings import Backups, Probe, Profile, SqlProbe
from greenlight.tasks.policy import FRESH, RETRIES


def backups_of(profile: Profile, needed_for: str) -> Backups:
    """The profile's ``backups`` section; InputInvalid naming the environment and ``needed_for`` without one."""
    if profile.backups is None:
        raise InputInvalid(
            f"environment '{profile.name}' has no 'backups' section in its profile: {needed_for}"
        )
    return profile.backups


def probe_restored(url: str, backups: Backups, dump: DumpObject) -> ProbeFindings:
    """Probe the database at ``url``, restored from ``dump``, with ``backups.probes`` and
    ``backups.sql_probes`` and judge what they saw. A probe that cannot run (a missing table, a failing
    SQL probe) is a failed check; an error reaching the database raises (the probe tasks retry it)."""
    tables = probe_tables(url, backups.probes)
    sql_results = run_sql_probes(url, backups.sql_probes)
    return judge_probes(
        dump,
        tables,
        {p.table: p.min_rows for p in backups.probes},
        sql_results,
        {p.name: p.expect_true for p in backups.sql_probes},
    )


@task(name="probe-tables", **FRESH, **RETRIES)
def probe_tables(url: str, probes: list[Probe]) -> list[TableProbe]:
    """For each probed table: whether it exists, its row count and its newest ``timestamp_column`` value."""
    db = Postgres(url)
    return [_probe(db, p) for p in probes]


def _probe(db: Postgres, probe: Probe) -> TableProbe:
    if db.scalar("SELECT to_regclass(%s) IS NOT NULL", (probe.table,)) is not True:
        return TableProbe(probe.table, exists=False, timestamp_column=probe.timestamp_column)
    table = quote_table(probe.table)
    try:
        if probe.timestamp_column:
            rows = db.query(f"SELECT count(*), max({quote_column(probe.timestamp_column)}) FROM {table}")
            count, newest = rows[0]
        else:
            count, newest = db.scalar(f"SELECT count(*) FROM {table}"), None
    except PermanentError as e:  # transient errors propagate: the task retries
        return TableProbe(probe.table, True, timestamp_column=probe.timestamp_column, error=str(e))
    return TableProbe(probe.table, True, int(count), _utc(newest), probe.timestamp_column)


def _utc(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@task(name="sql-probes", **FRESH, **RETRIES)
def run_sql_probes(url: str, probes: list[SqlProbe]) -> list[tuple[str, object, str | None]]:
    """Run each SQL probe in the restored database: (name, its first value, the error if it failed)."""
    db = Postgres(url)
    out: list[tuple[str, object, str | None]] = []
    for p in probes:
        try:
            out.append((p.name, db.scalar(p.sql), None))
        except PermanentError as e:  # transient errors propagate: the task retries
            out.append((p.name, None, str(e)))
    return out


@task(name="publish-backup-metrics", **FRESH, **RETRIES)
def publish_backup_metrics(
    project: str, prefix: str, values: dict[str, float], labels: dict[str, str]
) -> list[str]:
    """Write each value as a GAUGE point of ``<prefix>/<name>`` with ``labels``; the metric types written."""
    client = MonitoringClient(project)
    written = []
    for name, value in values.items():
        metric_type = f"{prefix.rstrip('/')}/{name}"
        client.write_gauge(metric_type, value, labels)
        written.append(metric_type)
    return written
