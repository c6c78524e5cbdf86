"""The DR drill's I/O: the DR database on the scratch server, and the drill's objects in the DR cluster.

Each task is one thin piece of I/O that ``greenlight.flows.dr_drill`` times as (part of) a step;
what to do is decided in :mod:`greenlight.core.drill`. Every object a drill applies carries the
label :data:`greenlight.core.drill.DRILL_LABEL` with the drill's id, so teardown finds exactly those.
Secret values never leave :func:`secret_keys`: only key names do.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task

from greenlight.clients.postgres import Postgres
from greenlight.core.drill import APPLY_ORDER, DRILL_LABEL, GATEWAY_ROUTER, ROUTES
from greenlight.errors import Conflict, GateFailed, TransientError
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.kube import container_digest, poll_pause
from greenlight.tasks.policy import FRESH, RETRIES
from greenlight.tasks.restore import create_or_replace
from greenlight.tasks.routers import router_for

ROUTE_POLL_S = 0.5


def drill_plurals(profile: Profile) -> tuple[str, ...]:
    """What a drill may have applied in the profile's cluster, in apply order: HTTPRoutes only where
    the profile routes with them (a cluster routed by Services may not serve Gateway API)."""
    return tuple(p for p in APPLY_ORDER if p != ROUTES or profile.traffic.router == GATEWAY_ROUTER)


def database_where(server_url: str) -> str:
    """The server ``server_url`` names, for messages: ``user@host:port/dbname`` (never the password)."""
    return Postgres(server_url).where


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
    """Create each object in the profile's namespace, or replace the one there (keeping what the cluster
    assigned: greenlight.tasks.restore.create_or_replace); ``["created services/backend", ...]`` in order."""
    done = []
    ns = profile.namespace
    with cluster(profile) as kube:
        for plural, name, body in objects:
            how, _ = create_or_replace(kube, plural, name, body, ns, kube.find(plural, name, ns))
            done.append(f"{how} {plural}/{name}")
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
        for plural in reversed(drill_plurals(profile)):
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
        for plural in (*drill_plurals(profile), "pods"):
            left += [
                f"{plural}/{o['metadata']['name']}"
                for o in kube.items(plural, ns, label_selector=f"{DRILL_LABEL}={drill}")
            ]
        return left


@task(name="dr-await-routes", **FRESH)
def await_routes(profile: Profile, colours: dict[str, str]) -> list[str]:
    """Wait until the DR cluster's Gateway serves each app's route (app -> the colour the drill
    deployed): the route's current generation programmed and that colour's Service with ready
    endpoints (the router's ``observe``). Up to ``release.settle_timeout_s`` for them all; one
    reason per app, GateFailed naming the apps not served and why (a route no Gateway accepted)."""
    router = router_for(profile)
    deadline = time.monotonic() + profile.release.settle_timeout_s
    done: dict[str, str] = {}
    with cluster(profile) as kube:
        while True:
            waiting = {}
            for app, colour in colours.items():
                if app in done:
                    continue
                try:
                    seen = router.observe(kube, profile, profile.app(app))
                except TransientError as e:
                    poll_pause(
                        e,
                        deadline - time.monotonic(),
                        f"HTTPRoute of {app}",
                        "the settle timeout",
                        ROUTE_POLL_S,
                    )
                    waiting[app] = f"{app}: unread ({e})"
                    continue
                if seen.by_colour.get(colour, 0) > 0:
                    done[app] = f"{app}: {seen.where}: {colour} {seen.by_colour[colour]} ready"
                else:
                    waiting[app] = f"{app}: {seen.where}: {colour} not served"
            if not waiting:
                return [done[app] for app in colours]
            if time.monotonic() > deadline:
                raise GateFailed(
                    f"the DR Gateway did not serve {len(waiting)} route(s) within "
                    f"{profile.release.settle_timeout_s:g} s: " + "; ".join(waiting.values())
                )
            time.sleep(ROUTE_POLL_S)
