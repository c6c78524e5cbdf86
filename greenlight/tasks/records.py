"""The release record a person can read: ConfigMap ``greenlight-releases`` in each environment's namespace.

Each key is a release id (or the record's own key, below); each value a JSON document:
environment, release id, commit, author, digests (app -> digest), outcome, bake, time (``at``),
and a signature (HMAC-SHA256 over the rest, with the key in Prefect Secret block
``greenlight-release-record-key``): anyone who can write ConfigMaps in the namespace can add an
entry, so promotion trusts only entries that verify.

Outcomes (the DORA figures of :mod:`greenlight.core.dora` read them; records written before
these fields existed simply lack them):

- ``released``: a release that switched and baked; ``switched_at`` (when the last app's
  selector moved), ``commit_at`` (when the commit was made) and ``commit_at_from`` (where that
  time came from: ``receiver`` when the GitHub receiver's commit proof verified, ``typed`` when it
  did not, ``<origin>, record <staging release id>`` when taken from staging's record; ``request``
  and ``record <id>`` in records written before commit proofs). Keyed by release id.
- ``rolled-back``: a release rolled back after a breach in its bake; ``switched_at``,
  ``decided_at`` (when the breach was decided), ``restored_at`` (when the last selector went
  back), ``reason``. Keyed ``<release id>.rolled-back-<epoch s>``, so a later ``released`` record
  of the same digests never erases it.
- ``rollback``: a manual rollback (the ``rollback`` flow); ``undid`` (the release ids the live
  Services recorded, taken out of service), ``restored_at``, ``reason``, ``actor``; its
  ``release_id`` is its own key ``<env>-rollback-<epoch s>``.

Only ``released`` records count as passes (:func:`passed_records`, :func:`author_of`). Production's promotion reads staging's record to
accept only digests that passed there, and to learn the author who may not approve their own
release. See it with ``kubectl -n sma-staging get configmap greenlight-releases -o yaml``.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from prefect import task
from prefect.blocks.system import Secret

from greenlight.core.commit_proof import origin, vouched
from greenlight.core.release import RECORD_SIGNATURE, PassedRecord, sign_record, verify_record
from greenlight.errors import Forbidden
from greenlight.settings import Profile
from greenlight.tasks.cluster import cluster
from greenlight.tasks.policy import FRESH, RETRIES, lost_a_race, retry_if

RECORD = "greenlight-releases"
KEEP = 100  # records kept per environment (oldest pruned)
#: the Prefect Secret block with the key that signs release records (``greenlight setup`` makes it)
RECORD_KEY_BLOCK = "greenlight-release-record-key"


def record_key() -> bytes:
    """The key that signs and verifies release records (Prefect Secret block ``RECORD_KEY_BLOCK``).

    Raises Forbidden when the block is missing: without it no record can be trusted, and
    ``greenlight setup`` creates one."""
    try:
        value = Secret.load(RECORD_KEY_BLOCK).get()  # type: ignore[union-attr]  # sync context
    except ValueError as e:
        raise Forbidden(
            f"no release record key: Prefect Secret block {RECORD_KEY_BLOCK!r} is missing; "
            "run `greenlight setup` (records signed with no key cannot be trusted)"
        ) from e
    return str(value).encode()


def _entries(cm: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    out = {}
    for key, text in ((cm or {}).get("data") or {}).items():
        try:
            out[key] = json.loads(text)
        except ValueError:
            continue
    return out


@task(name="read-release-records", **FRESH, **RETRIES)
def read_records(profile: Profile) -> list[dict[str, Any]]:
    """Every release recorded in the profile's namespace, oldest first."""
    with cluster(profile) as kube:
        cm = kube.find("configmaps", RECORD, profile.namespace)
    return sorted(_entries(cm).values(), key=lambda e: str(e.get("at", "")))


def passed_records(records: list[dict[str, Any]], key: bytes) -> list[PassedRecord]:
    """The digests of released records, each with why it cannot be trusted (its signature with
    ``key``) or was not watched (its bake)."""
    return [
        PassedRecord(
            app=app,
            digest=digest,
            environment=str(r.get("environment", "")),
            release_id=str(r.get("release_id", "")),
            unwatched=_unwatched(r),
            untrusted=verify_record(r, key),
        )
        for r in records
        if r.get("outcome") == "released"
        for app, digest in (r.get("digests") or {}).items()
    ]


def _unwatched(record: dict[str, Any]) -> str | None:
    """Why a released record's bake does not prove the release behaved; None when it does."""
    bake = record.get("bake")
    if not isinstance(bake, dict):
        return "its record has no bake judgement"
    if bake.get("watched") is True:
        return None
    unjudged = [str(x) for x in bake.get("unjudged") or []]
    first = f": {unjudged[0]}" if unjudged else ""
    return f"its bake judged {bake.get('judged', 0)} of {bake.get('windows', 0)} window(s){first}"


def staged_commit_time(
    records: list[dict[str, Any]], digests: dict[str, str], key: bytes
) -> tuple[str, str] | None:
    """(commit time, where it came from) of the newest trusted (signed) ``released`` record that
    carried exactly these digests and knows its commit time, preferring one whose time the GitHub
    receiver vouched for; None when none does. Where it came from is ``<origin>, record <release
    id>``, ``<origin>`` being that record's own (``receiver``, ``typed``, or ``request`` for records
    written before commit proofs): see :mod:`greenlight.core.commit_proof`."""
    known = [
        r
        for r in reversed(records)
        if r.get("digests") == digests
        and r.get("outcome") == "released"
        and isinstance(r.get("commit_at"), str)
        and verify_record(r, key) is None
    ]
    best = next((r for r in known if vouched(r.get("commit_at_from"))), known[0] if known else None)
    if best is None:
        return None
    return str(best["commit_at"]), f"{origin(best.get('commit_at_from'))}, record {best.get('release_id')}"


def author_of(records: list[dict[str, Any]], digests: dict[str, str], key: bytes) -> str | None:
    """The author recorded with the newest trusted (signed) release that carried exactly these digests."""
    for r in reversed(records):
        if r.get("digests") == digests and r.get("outcome") == "released" and verify_record(r, key) is None:
            return r.get("author")
    return None


@task(
    name="record-release",
    retries=5,
    retry_delay_seconds=0.2,
    retry_condition_fn=retry_if(lost_a_race),
    **FRESH,
)
def record_release(profile: Profile, entry: dict[str, Any], key: str | None = None) -> str:
    """Add or replace one entry, under ``key`` (default: its release id), signed; optimistic
    concurrency (retried on Conflict); prune old ones."""
    entry = {**entry, "environment": profile.name, "at": entry.get("at") or datetime.now(UTC).isoformat()}
    entry[RECORD_SIGNATURE] = sign_record(entry, record_key())
    key = key or str(entry["release_id"])
    with cluster(profile) as kube:
        cm = kube.find("configmaps", RECORD, profile.namespace)
        if cm is None:
            kube.create(
                "configmaps",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": RECORD, "labels": {"app.kubernetes.io/managed-by": "greenlight"}},
                 "data": {key: json.dumps(entry, sort_keys=True)}},
                profile.namespace,
            )  # fmt: skip
            return f"configmap {profile.namespace}/{RECORD} created with {key}"
        entries = _entries(cm)
        entries[key] = entry
        keep = sorted(entries.items(), key=lambda kv: str(kv[1].get("at", "")))[-KEEP:]
        cm["data"] = {k: json.dumps(v, sort_keys=True) for k, v in keep}
        kube.replace("configmaps", RECORD, cm, profile.namespace)  # PUT with the read resourceVersion
    return f"configmap {profile.namespace}/{RECORD}: {key} recorded"
