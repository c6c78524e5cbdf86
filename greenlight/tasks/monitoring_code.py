"""Monitoring as code: read the definition files, compare them with the project, apply, export.

The files live in the profile's ``monitoring_code.directory`` (default ``monitoring`` under the
configuration directory, i.e. ``deployments/monitoring/`` in this repository). Every file is
read, rendered and validated before anything is applied (:func:`load_definitions`): a bad file
fails the whole command naming the file, and nothing is written. The project's side comes from
:class:`~greenlight.clients.monitoring_config.MonitoringConfigClient`; the decisions from
:mod:`greenlight.core.monitoring_code`.

Plain functions for the ``greenlight monitoring`` command, and one task for the
``monitoring-drift`` flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from prefect import task

from greenlight.clients.monitoring_config import MonitoringConfigClient, canonical
from greenlight.core.monitoring_code import (
    Definition,
    Item,
    Plan,
    check_unique,
    export_document,
    parse_definition,
    plan,
)
from greenlight.errors import GreenlightError, InputInvalid
from greenlight.settings import MonitoringCode, Profile, config_dir
from greenlight.tasks.policy import FRESH, RETRIES


def section(profile: Profile) -> MonitoringCode:
    """The profile's ``monitoring_code`` section (its defaults when the profile has none)."""
    return profile.monitoring_code or MonitoringCode()


def placeholder_values(profile: Profile) -> dict[str, str | list[str] | None]:
    """What each placeholder stands for in ``profile``'s environment (None: not set)."""
    s = section(profile)
    return {
        "environment": profile.name,
        "project": profile.monitoring.project,
        "namespace": profile.namespace,
        "cluster": s.cluster,
        "backend_host": s.backend_host,
        "frontend_host": s.frontend_host,
        "database_id": s.database_id,
        "status_label": profile.monitoring.status_label,
        "notification_channels": list(s.notification_channels),
    }


def definitions_dir(profile: Profile, override: str | Path | None = None) -> Path:
    """``override``, else the profile's directory (relative to the configuration directory)."""
    path = Path(override) if override else Path(section(profile).directory)
    return path if path.is_absolute() else (Path.cwd() / path if override else config_dir() / path)


def load_definitions(profile: Profile, directory: Path) -> list[Definition]:
    """Every ``*.yaml`` in ``directory``, rendered for ``profile`` and validated, in name order.

    Raises InputInvalid naming the file: invalid YAML, an unknown placeholder, a field the API
    does not have, what the API would refuse, an id used twice, or no files at all.
    """
    if not directory.is_dir():
        raise InputInvalid(f"no definitions directory {directory} (monitoring_code.directory in the profile)")
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise InputInvalid(f"no definition files (*.yaml) in {directory}")
    values = placeholder_values(profile)
    out = []
    for path in files:
        source = str(path)
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise InputInvalid(f"{source}: not valid YAML: {e}") from None
        d = parse_definition(doc, source, values)
        out.append(Definition(d.kind, d.id, canonical(d.kind, d.spec, source), source))
    check_unique(out)
    return out


def config_client(profile: Profile) -> MonitoringConfigClient:
    return MonitoringConfigClient(profile.monitoring.project)


def drift_plan(profile: Profile, directory: Path, client: MonitoringConfigClient | None = None) -> Plan:
    """What apply would do: the files against the project."""
    definitions = load_definitions(profile, directory)
    client = client or config_client(profile)
    return plan(definitions, client.list_all(), profile.name)


def item_dict(item: Item) -> dict[str, Any]:
    return {
        "action": item.action,
        "kind": item.kind,
        "id": item.id,
        "display_name": item.display_name,
        "name": item.name,
        "source": item.source,
        "matched_by": item.matched_by,
        "update_mask": list(item.mask),
        "changes": [{"field": c.path, "project": c.before, "files": c.after} for c in item.changes],
    }


def plan_dict(profile: Profile, directory: Path, p: Plan) -> dict[str, Any]:
    return {
        "environment": profile.name,
        "project": profile.monitoring.project,
        "directory": str(directory),
        "drift": p.drift,
        "counts": p.counts(),
        "items": [item_dict(i) for i in p.items],
    }


def apply_plan(
    profile: Profile, directory: Path, prune: bool = False, client: MonitoringConfigClient | None = None
) -> dict[str, Any]:
    """Create and update what the files say (with ``prune``, delete what Greenlight labelled and
    no file names any more); hand-made resources are left alone.

    Returns ``{"created", "updated", "unchanged", "deleted", "left": [...], "items": [...]}``. A
    refused call stops there: the error raised carries the same report (``report``) of what was
    done before it.
    """
    client = client or config_client(profile)
    p = plan(load_definitions(profile, directory), client.list_all(), profile.name)
    report: dict[str, Any] = {
        "environment": profile.name,
        "project": profile.monitoring.project,
        "directory": str(directory),
        "prune": prune,
        "created": 0,
        "updated": 0,
        "unchanged": 0,
        "deleted": 0,
        "items": [],
    }
    for item in p.items:
        row = item_dict(item)
        try:
            if item.action == "create" and item.definition is not None:
                row["name"] = client.create(item.kind, item.definition.spec)
                row["outcome"] = "created"
                report["created"] += 1
            elif item.action == "update" and item.definition is not None and item.name:
                client.update(item.kind, item.name, item.definition.spec, list(item.mask))
                row["outcome"] = "updated"
                report["updated"] += 1
            elif item.action == "unchanged":
                row["outcome"] = "unchanged"
                report["unchanged"] += 1
            elif item.action == "orphaned" and prune and item.name:
                client.delete(item.kind, item.name)
                row["outcome"] = "deleted"
                report["deleted"] += 1
            else:
                row["outcome"] = "left alone"
        except GreenlightError as e:
            row["outcome"] = f"failed: {e}"
            report["items"].append(row)
            e.report = report  # type: ignore[attr-defined]
            raise
        report["items"].append(row)
    return report


def export_project(
    profile: Profile, directory: Path, client: MonitoringConfigClient | None = None
) -> dict[str, Any]:
    """Write every alert policy and uptime check of the project (but those labelled for another
    environment) as a definition file in
    ``directory`` (``<id>.yaml``, created if missing), the profile's values as placeholders.

    Returns ``{"written": [...], "unchanged": [...]}`` (paths). Files of other ids are left.
    """
    client = client or config_client(profile)
    values = placeholder_values(profile)
    resources = [r for r in client.list_all() if r.environment in (None, profile.name)]
    directory.mkdir(parents=True, exist_ok=True)
    taken: set[str] = {r.label for r in resources if r.label}
    written, same, rows = [], [], []
    labelled = [r for r in resources if r.label]
    unlabelled = [r for r in resources if not r.label]
    for r in labelled + unlabelled:
        if r.label:
            taken.discard(r.label)
        doc = export_document(r, values, taken)
        path = directory / f"{doc['id']}.yaml"
        text = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)
        if path.is_file() and path.read_text() == text:
            same.append(str(path))
        else:
            path.write_text(text)
            written.append(str(path))
        rows.append({"kind": r.kind, "name": r.name, "id": doc["id"], "file": str(path)})
    return {
        "environment": profile.name,
        "project": profile.monitoring.project,
        "directory": str(directory),
        "written": written,
        "unchanged": same,
        "items": rows,
    }


@task(name="monitoring-diff", **FRESH, **RETRIES)
def monitoring_diff(profile: Profile, directory: str | None = None) -> dict[str, Any]:
    """The drift of ``profile``'s project from its definition files (see :func:`plan_dict`)."""
    where = definitions_dir(profile, directory)
    return plan_dict(profile, where, drift_plan(profile, where))
