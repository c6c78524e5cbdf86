"""Read a namespace for the config backup: every kind it exports, stripped of what the cluster wrote.

Kept apart from the other tasks on purpose: the config backup runs as its own, list-only
ServiceAccount (deployments/kubernetes: greenlight-config-backup), so the calls made here are not
the release ServiceAccount's (tests/unit/test_doctor.py leaves this file out of FLOW_ACCESS).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from greenlight.core.backups import EXPORT_KINDS, export_object
from greenlight.errors import NotFound
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.policy import FRESH, RETRIES


@task(name="export-namespace", **FRESH, **RETRIES)
def export_namespace(profile: Profile) -> tuple[list[tuple[str, str, dict[str, Any]]], list[str]]:
    """(every exported object as (plural, name, stripped object), kinds the cluster does not serve).

    Secrets come back as names, types and keys only: their values never leave this task.
    """
    objects: list[tuple[str, str, dict[str, Any]]] = []
    skipped: list[str] = []
    with cluster(profile) as kube:
        for kind in EXPORT_KINDS:
            try:
                items = kube.items(kind.plural, profile.namespace)
            except NotFound:
                skipped.append(kind.plural)  # the API does not serve this kind here
                continue
            for item in items:
                exported = export_object(kind, item)
                objects.append((kind.plural, str(exported["metadata"]["name"]), exported))
    return objects, skipped
