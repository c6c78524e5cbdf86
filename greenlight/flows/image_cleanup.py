"""Image cleanup: delete GHCR image versions older than the profile's retention, never one in use.

The flow lists every version of each app's package (GitHub Packages API), reads what must stay
from every environment that shares the repositories (their live and previous colours, and the
digests their release records name within the retention), asks
:func:`greenlight.core.cleanup.plan_cleanup` for a verdict per version (reading the manifest of
every kept version, so that the platform manifests of a kept multi-platform index stay too) and,
only when ``apply``
is true, deletes the planned ones, stopping at the first refused delete. It returns (or, when a
delete failed, raises with it as ``report``) a report of every version: deleted, would delete,
kept, or not deleted, each with why. Runs as the weekly deployment ``image-cleanup/weekly``
(a dry run unless its ``apply`` parameter is set) and as ``greenlight cleanup-images ENV``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from greenlight import errors
from greenlight.core.cleanup import CleanupPlan, Package, PackageVersion, plan_cleanup
from greenlight.errors import GreenlightError, PermanentError
from greenlight.settings import Environment, RegistryCleanup, load_profile
from greenlight.tasks.cleanup import (
    api_url,
    cleaned_packages,
    cleanup_settings,
    delete_package_versions,
    list_package_versions,
    packages_token,
    protected_digests,
    read_manifests,
)
from greenlight.tasks.policy import logger

#: what each version's ``outcome`` says, by plan and what happened
OUTCOMES = ("deleted", "would delete", "kept", "not deleted", "not attempted")


def _rows(plan: CleanupPlan, outcomes: dict[int, str], errors_by_id: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for verdict in plan.verdicts:
        v = verdict.version
        outcome = outcomes.get(v.id, "kept" if verdict.action == "keep" else "would delete")
        reasons = list(verdict.reasons)
        if v.id in errors_by_id:
            reasons.append(f"the delete failed: {errors_by_id[v.id]}")
        rows.append(
            {
                "id": v.id,
                "digest": v.digest,
                "tags": list(v.tags),
                "created_at": v.created_at.isoformat(),
                "outcome": outcome,
                "reasons": reasons,
            }
        )
    return rows


def summary_line(report: dict[str, Any]) -> str:
    """``N versions in P packages: D deleted, W would be deleted, K kept[, F not deleted]``."""
    counts = report["counts"]
    parts = [
        f"{counts.get(o, 0)} {o if o != 'would delete' else 'would be deleted'}"
        for o in OUTCOMES
        if counts.get(o)
    ]
    total = sum(counts.values())
    return f"{total} versions in {len(report['packages'])} package(s): {', '.join(parts) or 'none'}"


def plan_package(
    package: Package,
    versions: list[PackageVersion],
    protected: dict[str, list[str]],
    settings: RegistryCleanup,
    now: datetime,
) -> CleanupPlan:
    """The package's plan, once the manifest of every version it keeps has been read: plan, read
    what the plan asks for (the kept versions, then the platform manifests their indexes name),
    plan again, until nothing kept is unread."""
    indexes: dict[str, tuple[str, ...]] = {}
    unreadable: dict[str, str] = {}
    while True:
        plan = plan_cleanup(
            package.image,
            versions,
            protected,
            settings.retention_days,
            settings.keep_newest,
            now,
            indexes=indexes,
            unreadable=unreadable,
        )
        if not plan.unread:
            break
        named, bad = read_manifests(package, list(plan.unread))
        indexes |= named
        unreadable |= bad
    if plan.refusal is not None:
        logger().warning("%s: %s", package.image, plan.refusal)
    return plan


@flow(name="image-cleanup")
def image_cleanup(environment: Environment, apply: bool = False) -> dict[str, Any]:
    """Plan (and with ``apply`` delete) the GHCR image versions past the retention.

    Args:
        environment: whose apps' image packages to clean (its profile's registry.cleanup)
        apply: delete the planned versions (false: a dry run that deletes nothing)
    """
    log = logger()
    profile = load_profile(environment)
    settings = cleanup_settings(profile)
    packages_token()  # fail first, naming where the token is looked for
    now = datetime.now(UTC)
    packages = cleaned_packages(profile)
    listings = {p.image: list_package_versions(profile, p) for p in packages}
    protected = protected_digests(profile, listings, now)
    plans = [plan_package(p, listings[p.image], protected, settings, now) for p in packages]
    report: dict[str, Any] = {
        "environment": environment,
        "apply": apply,
        "api_url": api_url(settings),
        "retention_days": settings.retention_days,
        "keep_newest": settings.keep_newest,
        "protected_environments": list(dict.fromkeys([environment, *settings.environments])),
        "at": now.isoformat(),
        "packages": [],
        "failure": None,
    }
    failure: GreenlightError | None = None
    for package, plan in zip(packages, plans, strict=True):
        outcomes: dict[int, str] = {}
        errors_by_id: dict[int, str] = {}
        planned = [v.version.id for v in plan.delete]
        if apply and planned and failure is None:
            result = delete_package_versions(profile, package, planned)
            outcomes |= {i: "deleted" for i in result["deleted"]}
            outcomes |= {i: "not attempted" for i in result["not_attempted"]}
            if result["failed"] is not None:
                bad = result["failed"]
                outcomes[bad["id"]] = "not deleted"
                errors_by_id[bad["id"]] = bad["error"]
                kind = getattr(errors, bad["kind"], PermanentError)
                failure = kind(
                    f"{package.image}: version {bad['id']} not deleted: {bad['error']}; "
                    f"{len(result['deleted'])} deleted before it, {len(result['not_attempted'])} not attempted"
                )
        elif apply and failure is not None:
            outcomes |= {i: "not attempted" for i in planned}
        rows = _rows(plan, outcomes, errors_by_id)
        for row in rows:
            log.info("%s %s %s: %s", package.image, row["id"], row["outcome"], "; ".join(row["reasons"]))
        report["packages"].append(
            {
                "image": package.image,
                "owner": package.owner,
                "name": package.name,
                "refusal": plan.refusal,
                "versions": rows,
            }
        )
    counts: dict[str, int] = {}
    for pkg in report["packages"]:
        for row in pkg["versions"]:
            counts[row["outcome"]] = counts.get(row["outcome"], 0) + 1
    report["counts"] = counts
    report["summary"] = summary_line(report)
    if failure is not None:
        report["failure"] = str(failure)
        failure.report = report  # type: ignore[attr-defined]  # the CLI prints it
        log.error("image cleanup of %s stopped: %s (%s)", environment, failure, report["summary"])
        raise failure
    log.info("image cleanup of %s%s: %s", environment, "" if apply else " (dry run)", report["summary"])
    return report
