"""Writing manifests back into a namespace: read what is live, ask the server for a dry run, apply.

Shared by config-restore (``flows/config_restore.py``) and the DR drill's apply step
(``tasks/drill.py``): :func:`create_or_replace` is the one way an object of a bundle is written,
creating it when missing, else replacing it over the live object with what the cluster assigned kept
(:func:`greenlight.core.restore.update_body`). A Secret is only ever created, never replaced (there
is no call that could); its values never leave :func:`read_live_objects` (keys only).
"""

from __future__ import annotations

from typing import Any

from prefect import task

from greenlight.clients.kube import Kube
from greenlight.core.restore import REPLACED_KINDS, Item, Observed, secret_keys, update_body
from greenlight.errors import Conflict, GreenlightError, InputInvalid, NotFound, with_message
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.policy import FRESH, RETRIES

__all__ = ["apply_items", "create_or_replace", "dry_run_items", "read_live_objects"]


def _create(kube: Kube, plural: str, body: dict[str, Any], namespace: str, dry_run: bool) -> dict[str, Any]:
    if plural == "secrets":
        return kube.create("secrets", body, namespace, dry_run=dry_run)
    return kube.create(plural, body, namespace, dry_run=dry_run)


def _replace(
    kube: Kube, plural: str, name: str, body: dict[str, Any], namespace: str, dry_run: bool
) -> dict[str, Any]:
    if plural not in REPLACED_KINDS:  # a Secret above all: never overwritten
        raise InputInvalid(f"{plural}/{name}: a restore never replaces {plural}")
    return kube.replace(plural, name, body, namespace, dry_run=dry_run)


def create_or_replace(
    kube: Kube,
    plural: str,
    name: str,
    body: dict[str, Any],
    namespace: str,
    live: dict[str, Any] | None,
    dry_run: bool = False,
    keep_replicas: bool = False,
    colour_label: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Create ``body`` when ``live`` is None, else replace the live object with ``body`` written over it
    (its resourceVersion the write's precondition; ``keep_replicas``: the live replicas, an HPA's;
    ``colour_label``: where live traffic goes, see :func:`greenlight.core.restore.keep_live_traffic`);
    (``created``/``replaced``, the server's answer). ``dry_run``: the answer, nothing stored."""
    if live is None:
        return "created", _create(kube, plural, body, namespace, dry_run)
    new = update_body(body, live, keep_replicas, colour_label)
    return "replaced", _replace(kube, plural, name, new, namespace, dry_run)


@task(name="read-live-objects", **FRESH, **RETRIES)
def read_live_objects(
    profile: Profile, namespace: str, refs: list[tuple[str, str]]
) -> dict[str, dict[str, Any] | None]:
    """Per ``plural/name``: the live object in ``namespace`` (None: missing). A Secret comes back as its
    name, type, resourceVersion and keys: its values never leave this task."""
    out: dict[str, dict[str, Any] | None] = {}
    with cluster(profile) as kube:
        for plural, name in refs:
            if plural == "secrets":
                secret = kube.find("secrets", name, namespace)
                out[f"secrets/{name}"] = None if secret is None else _keys_only(secret)
            else:
                out[f"{plural}/{name}"] = kube.find(plural, name, namespace)
    return out


def _keys_only(secret: dict[str, Any]) -> dict[str, Any]:
    meta = secret.get("metadata") or {}
    return {
        "kind": "Secret",
        "metadata": {"name": meta.get("name"), "resourceVersion": meta.get("resourceVersion")},
        "type": secret.get("type"),
        "keys": secret_keys(secret),
    }


@task(name="dry-run-objects", **FRESH, **RETRIES)
def dry_run_items(
    profile: Profile,
    namespace: str,
    writes: list[tuple[str, str, dict[str, Any], dict[str, Any] | None, bool]],
) -> dict[str, Observed]:
    """Per ``plural/name``: the server's answer (``dryRun=All``: admission and defaults, nothing stored) to
    the write of each (plural, name, body, live, keep_replicas), live traffic kept where it goes. An
    existing Secret is not asked: it is never written. NotFound naming the namespace when it does not exist."""
    out: dict[str, Observed] = {}
    with cluster(profile) as kube:
        for plural, name, body, live, keep in writes:
            rv = None if live is None else (live.get("metadata") or {}).get("resourceVersion")
            if plural == "secrets" and live is not None:
                out[f"{plural}/{name}"] = Observed(live, rv, None)
                continue
            try:
                _, answer = create_or_replace(
                    kube, plural, name, body, namespace, live, True, keep, profile.release.colour_label
                )
            except NotFound as e:
                raise NotFound(f"namespace {namespace} does not exist in the cluster ({e})") from e
            if plural == "secrets":
                answer = _keys_only(answer)  # empty values, but still: nothing of a Secret but its keys
            out[f"{plural}/{name}"] = Observed(live, rv, answer)
    return out


@task(name="apply-restore", **FRESH)
def apply_items(profile: Profile, namespace: str, items: list[Item]) -> list[str]:
    """Write each item (in order) the dry run planned; what was done (``created configmaps/a``, ...).

    First every item is checked against the cluster as the dry run saw it (a replaced object's
    resourceVersion, a created one still missing): any difference is a Conflict and nothing is
    written. Each replace carries the same resourceVersion as its precondition (409: Conflict). A
    write that fails part-way raises the error's kind naming what was applied and what was not;
    nothing is undone (every write done is one the dry run showed, and a second run converges).
    Not retried: a retry would start over on a half-applied namespace.
    """
    done: list[str] = []
    with cluster(profile) as kube:
        moved = []
        for item in items:
            if item.plural == "secrets":
                live = kube.find("secrets", item.name, namespace)
            else:
                live = kube.find(item.plural, item.name, namespace)
            now = None if live is None else str((live.get("metadata") or {}).get("resourceVersion"))
            if item.action == "update" and now != item.resource_version:
                moved.append(
                    f"{item.ref} is at resourceVersion {now}, the dry run saw {item.resource_version}"
                )
            elif item.action != "update" and live is not None:
                moved.append(f"{item.ref} exists now, the dry run saw it missing")
        if moved:
            raise Conflict(
                "the cluster changed since the dry run, nothing applied: "
                + "; ".join(moved)
                + " (run restore-config again to see the new diff)"
            )
        for n, item in enumerate(items):
            assert item.body is not None
            try:
                if item.action == "update":
                    _replace(kube, item.plural, item.name, item.body, namespace, False)
                    done.append(f"changed {item.ref}")
                else:
                    _create(kube, item.plural, item.body, namespace, False)
                    done.append(f"created {item.ref}")
            except GreenlightError as e:
                applied = ", ".join(done) or "nothing"
                rest = ", ".join(i.ref for i in items[n:])
                raise with_message(
                    e,
                    f"restore stopped at {item.ref}: {e}. Applied: {applied}. Not applied: {rest}. "
                    "Nothing was undone; run restore-config again to see what is left",
                ) from e
    return done
