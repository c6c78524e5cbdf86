"""config-restore: put a config bundle back into the cluster (the runbook's `kubectl apply -f backup/...`).

1. Choose the bundle: ``bundle`` (a stamp), else the newest complete one of the environment.
2. Verify it before anything else: every index path inside the bundle, every file's size and
   sha256 against ``index.json``, then every object (JSON, a kind config-backup exports, its own
   namespace, Secrets with keys and no value), and that the bundle is the environment's own
   (environment, namespace and cluster in its index). A refused bundle raises BackupInvalid
   naming the file and the problem; nothing has been read from the cluster or applied.
3. Diff: for each object, read the live one, ask the API server for a dry run (``dryRun=All``) of
   the write the restore would make, and compare the two without what the server manages
   (:mod:`greenlight.core.restore`): created, changed (field by field) or unchanged. A Secret is
   created with its keys and empty values when missing; an existing one is never written.
4. Only with ``apply``: check nothing moved since the dry run (Conflict, nothing applied), then
   write each object in order (Secrets and ConfigMaps first), each replace conditional on the
   resourceVersion the dry run saw.

``into`` restores into another namespace (it must exist) beside the environment's own, to inspect.
The report (markdown artifact ``config-restore-<env>``) lists every object with its action.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from prefect import flow

from greenlight.core.restore import (
    BundleObject,
    Item,
    Owner,
    RestorePlan,
    check_bundle_objects,
    check_owner,
    choose_bundle,
    decide,
    decide_secret,
    hpa_targets,
    index_path_problems,
    keep_live_traffic,
    limit,
    render_report,
    restore_body,
    skip_reason,
    summary,
    update_body,
)
from greenlight.errors import BackupInvalid
from greenlight.settings import Environment, Profile, load_profile
from greenlight.tasks.evidence import publish_report
from greenlight.tasks.policy import logger
from greenlight.tasks.restore import apply_items, dry_run_items, read_live_objects
from greenlight.tasks.storage import (
    INDEX,
    bundles_root,
    check_bundle,
    config_bucket,
    list_bundles,
    read_bundle,
)

__all__ = ["bundle_owner", "plan_restore", "restore_config"]


def bundle_owner(profile: Profile) -> Owner:
    """Whose bundles config-backup writes for ``profile``: what its index records and a restore checks."""
    return Owner(profile.name, profile.namespace, profile.cluster.context or "in-cluster")


def _read_verified(profile: Profile, bundle: str | None) -> tuple[str, list[BundleObject], list[str]]:
    """(the bundle's gs:// URI, its objects, notes) after every check of step 2; BackupInvalid or NotFound."""
    bucket, root = config_bucket(profile), bundles_root(profile)
    bundles = list_bundles(bucket, root)
    complete = [stamp for stamp, names in bundles.items() if f"{root}{stamp}/{INDEX}" in names]
    stamp = choose_bundle(complete, bundle, f"gs://{bucket}/{root}")
    prefix = f"{root}{stamp}/"
    where = f"gs://{bucket}/{prefix}"
    index, files = read_bundle(bucket, prefix)
    if not isinstance(index, dict):
        raise BackupInvalid(f"config bundle {where}: {INDEX} is not a JSON object")
    paths = index_path_problems(index)
    if paths:
        raise BackupInvalid(f"corrupted config bundle {where}: " + limit(paths))
    check_bundle(index, files, where)
    notes = check_owner(index, bundle_owner(profile))
    objects = check_bundle_objects(index, files, profile.namespace)
    return where, objects, notes


def plan_restore(
    profile: Profile, bundle: str | None = None, into: str | None = None
) -> tuple[str, str, RestorePlan]:
    """(bundle URI, target namespace, the plan): the bundle verified, then each object diffed through a
    server-side dry run. Writes nothing. Used by the flow and by tests (plain Python over the tasks)."""
    where, objects, notes = _read_verified(profile, bundle)
    namespace = into or profile.namespace
    same = namespace == profile.namespace
    label = profile.release.colour_label
    restored = [o for o in objects if skip_reason(o) is None]
    live = read_live_objects(profile, namespace, [(o.plural, o.name) for o in restored])
    scaled = hpa_targets(objects)
    bodies = {o.path: restore_body(o, namespace, same) for o in restored}
    keep = {o.path: o.kind == "Deployment" and o.name in scaled for o in restored}
    seen = dry_run_items(
        profile,
        namespace,
        [(o.plural, o.name, bodies[o.path], live[f"{o.plural}/{o.name}"], keep[o.path]) for o in restored],
    )
    items: list[Item] = []
    for o in objects:
        why = skip_reason(o)
        if why is not None:
            items.append(Item(o.plural, o.name, "skip", why))
            continue
        current = live[f"{o.plural}/{o.name}"]
        if o.kind == "Secret":
            items.append(
                decide_secret(o, bodies[o.path], None if current is None else current.get("keys") or [])
            )
            continue
        kept: list[str] = []
        if current is None:
            body = bodies[o.path]
        else:  # update_body's copy, then live traffic kept in it (what the dry run was sent)
            body = update_body(bodies[o.path], current, keep[o.path])
            kept = keep_live_traffic(body, current, label)
        item = decide(o, body, seen[f"{o.plural}/{o.name}"])
        extra = ["replicas kept: an HPA scales it"] if keep[o.path] and current is not None else []
        if kept:
            extra.append(f"live traffic kept: {', '.join(kept)}; `greenlight switch` moves traffic")
        if extra:
            item = replace(item, detail="; ".join([item.detail, *extra] if item.detail else extra))
        items.append(item)
    if not same:
        notes.append(f"restored into namespace {namespace}, beside {profile.namespace} (--into)")
    return where, namespace, RestorePlan(tuple(items), tuple(notes))


@flow(name="config-restore")
def restore_config(
    environment: Environment,
    bundle: str | None = None,
    into: str | None = None,
    apply: bool = False,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """Verify a config bundle of ``environment``, diff it against the cluster and, with ``apply``, restore it.

    Returns every object with its action and field changes, the counts and what was applied;
    raises BackupInvalid (nothing applied) for a corrupted or foreign bundle, NotFound for an
    unknown bundle or namespace, Conflict when the cluster changed between the dry run and the apply.

    Args:
        environment: whose bundle to restore, into its own namespace (one of the profiles)
        bundle: the bundle's stamp (e.g. 20261201T023000.123Z); empty: the newest complete one
        into: restore into this namespace instead of the environment's (it must exist), to inspect beside it
        apply: write the changes; false (the default) only shows the diff
        profile: for tests and ad-hoc runs only: a whole profile that replaces the environment's file (leave empty)
    """
    prof = profile if profile is not None else load_profile(environment)
    log = logger()
    where, namespace, plan = plan_restore(prof, bundle, into)
    counts = plan.counts()
    done: list[str] = []
    if apply and plan.writes:
        done = apply_items(prof, namespace, plan.writes)
    if apply:
        outcome = f"restored {where} into {namespace}: {summary(counts)}"
    else:
        outcome = f"{where} into {namespace} would be: {summary(counts)}"
    log.info("config restore: %s", outcome)
    result = {
        "environment": prof.name,
        "namespace": namespace,
        "bundle": where,
        "applied": apply,
        "outcome": outcome,
        "counts": counts,
        "done": done,
        "notes": list(plan.notes),
        "objects": [
            {
                "ref": i.ref,
                "action": i.action,
                "detail": i.detail,
                "changes": [c.line() for c in i.changes],
                "keys": list(i.keys),
            }
            for i in plan.items
        ],
    }
    facts = {"bundle": where, "namespace": namespace, "applied": apply, **counts}
    try:
        publish_report(
            f"config-restore-{prof.name}",
            render_report(f"Config restore: {prof.name} into {namespace}", outcome, facts, plan),
            f"Config restore: {prof.name}",
        )
    except Exception as e:  # the record must not hide the outcome
        log.warning("config restore report not published: %s", e)
    return result
