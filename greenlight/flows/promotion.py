"""The promotion rules: which images a request names, and whether they may be released here
(allow-list, signatures, digests proven in the required environment, freeze, the live colour's
health, approval)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prefect.variables import Variable

from greenlight.core.commit_proof import RECEIVER, TYPED, canonical_time, proof_problem
from greenlight.core.gate import check_breach
from greenlight.core.images import (
    ImageRef,
    check_allowed,
    image_for_commit,
    parse_image_ref,
    require_tag_or_digest,
)
from greenlight.core.release import Decision, check_preflight, check_promotion, release_id
from greenlight.errors import GreenlightError, InputInvalid, ReleaseRefused
from greenlight.flows.approval_wait import Subject, await_answer
from greenlight.flows.journal import RunJournal
from greenlight.settings import Profile, load_profile
from greenlight.tasks.kube import read_app_state
from greenlight.tasks.metrics import gate_config, sample_colour
from greenlight.tasks.policy import logger
from greenlight.tasks.records import author_of, passed_records, read_records, record_key, staged_commit_time
from greenlight.tasks.registry import resolve_images
from greenlight.tasks.signatures import refusal, verify_signatures

FREEZE_VARIABLE = "greenlight_release_freeze_{env}"


@dataclass(frozen=True)
class PromotionPlan:
    """What a promotion would release, and whether its rules let it: what the flow acts on and
    the CLI's dry run prints, made by one function (:func:`plan_promotion`)."""

    digests: dict[str, str]
    release_id: str
    author: str
    #: app -> "signed by <key>" or the problem, when the profile requires signatures ({} otherwise)
    signatures: dict[str, str]
    #: every image without a valid signature, named (None: all signed, or not required)
    unsigned: str | None
    #: the promotion rule's decision when the profile requires an environment first (None: it does not)
    promotion: Decision | None
    #: the commit time the required environment's signed record carries (time, source), if any
    staged: tuple[str, str] | None

    @property
    def refusal(self) -> str | None:
        """Why the rules refuse this promotion (the signatures first), or None."""
        if self.unsigned:
            return self.unsigned
        if self.promotion is not None and not self.promotion.ok:
            return self.promotion.reason
        return None


def plan_promotion(
    profile: Profile,
    refs: dict[str, ImageRef],
    commit: str | None,
    actor: str | None,
    force_reason: str | None,
    as_tasks: bool = True,
) -> PromotionPlan:
    """Resolve ``refs`` to digests and apply the rules that need no lock: the allow-list (raises
    InputInvalid), signatures, and the digests' passage through ``release.requires`` (whose
    record may name the commit's author). ``as_tasks``: run the reads as Prefect tasks (the
    flow: retries, task runs in the UI), or as plain calls (the CLI's dry run)."""

    def run(task: Any, *args: Any) -> Any:
        return task(*args) if as_tasks else task.fn(*args)

    for ref in refs.values():
        check_allowed(ref, profile.registry.allowed)
    digests: dict[str, str] = run(resolve_images, refs)
    rid = release_id(profile.name, digests, commit)
    author = actor or getpass.getuser()
    signatures: dict[str, str] = {}
    unsigned = None
    if profile.registry.signatures.required:
        verdicts = run(verify_signatures, profile.registry.signatures, refs, digests)
        signatures = {app: verdict.text for app, verdict in verdicts.items()}
        unsigned = refusal(refs, verdicts)
    decision = staged = None
    required = profile.release.requires
    if required:
        records = run(read_records, load_profile(required))
        key = record_key()
        decision = check_promotion(
            digests, passed_records(records, key), required_env=required, force_reason=force_reason
        )
        author = author_of(records, digests, key) or author
        staged = staged_commit_time(records, digests, key)
    return PromotionPlan(digests, rid, author, signatures, unsigned, decision, staged)


def images_for_commit(profile: Profile, commit: str) -> dict[str, ImageRef]:
    return {
        a.name: image_for_commit(a.image_repository, commit, profile.registry.image_template)
        for a in profile.apps
    }


def images_by_app(profile: Profile, images: list[str]) -> dict[str, ImageRef]:
    """Map each image to the app whose repository it is; every app needs exactly one image."""
    out: dict[str, ImageRef] = {}
    repos = {parse_image_ref(a.image_repository).name: a.name for a in profile.apps}
    for text in images:
        ref = parse_image_ref(text)
        require_tag_or_digest(ref)
        app = repos.get(ref.name)
        if app is None:
            raise InputInvalid(
                f"image '{text}' is not the repository of any app of {profile.name} ({', '.join(sorted(repos))})"
            )
        if app in out:
            raise InputInvalid(f"two images for app '{app}': '{out[app]}' and '{text}'")
        out[app] = ref
    missing = sorted(set(repos.values()) - set(out))
    if missing:
        raise InputInvalid(
            f"no image for app(s) {', '.join(missing)} of {profile.name}: a release moves every app together"
        )
    return out


def freeze_of(environment: str) -> str | None:
    value = Variable.get(FREEZE_VARIABLE.format(env=environment.replace("-", "_")), default=None)
    return str(value) if value not in (None, "") else None


def preflight(profile: Profile, force_reason: str | None) -> str:
    """A production release does not start during a freeze or while the live colour fails its own
    gate metrics, unless forced with a reason (which goes on the record)."""
    if profile.release.requires is None:
        return "no preflight for this environment"
    cfg = gate_config(profile)
    now = datetime.now(UTC)
    window = timedelta(seconds=profile.gate.interval_s * profile.gate.intervals)
    live_verdicts = {}
    for app in profile.apps:
        state = read_app_state(profile, app.name)
        colour = state.traffic.colour() if state.traffic else None
        if colour:
            try:
                live_verdicts[app.name] = check_breach(
                    sample_colour(profile, app.name, colour, now - window, now), cfg
                )
            except GreenlightError as e:
                logger().warning("preflight: %s live metrics unavailable: %s", app.name, e)
    decision = check_preflight(freeze_of(profile.name), force_reason, live_verdicts or None)
    if not decision.ok:
        raise ReleaseRefused(f"preflight: {decision.reason}")
    return decision.reason


def await_approval(profile: Profile, rid: str, author: str | None, rel: RunJournal, poll_s: int = 2) -> str:
    """Pause until an answer that may end the wait (see :mod:`greenlight.core.approval`); returns
    the approver. Refused answers are recorded and the run pauses again, until the profile's
    timeout; a rejection or the timeout raise ReleaseRefused."""
    return await_answer(profile, Subject("release", rid, author), rel, poll_s)


def refuse_unsigned(profile: Profile, plan: PromotionPlan, commit: str | None) -> None:
    """An image without a valid signature by a named key refuses the release before the
    promotion rule, the lock, the approval and any deploy: the refusal names every failing image
    (``image <repo>@<digest>: <problem>``) and goes to the report and the Slack channel."""
    if plan.unsigned is None:
        return
    rel = RunJournal(profile, plan.release_id, plan.digests, commit, plan.author)
    rel.step("signatures", "refused", plan.unsigned)
    rel.say(
        f":no_entry: release {plan.release_id} to {profile.name} refused, nothing deployed: {plan.unsigned}"
    )
    rel.event("refused", reason=plan.unsigned)
    rel.publish(f"refused: {plan.unsigned}")
    raise ReleaseRefused(plan.unsigned)


def requested_commit_time(
    profile: Profile, commit: str | None, commit_at: datetime | None, commit_proof: str | None
) -> tuple[tuple[str, str] | None, str]:
    """(commit time, ``receiver`` or ``typed``) of the request, and why: ``receiver`` only when its
    proof verifies with the profile's ``github.receiver_keys`` for the profile's repository and
    this commit (see :mod:`greenlight.core.commit_proof`)."""
    if commit_at is None:
        return None, "no commit time"
    at = canonical_time(commit_at)
    github = profile.github
    problem = proof_problem(
        github.receiver_keys if github else [],
        commit_proof,
        github.repository if github else None,
        commit,
        at,
    )
    if problem is None:
        return (at, RECEIVER), "vouched for by the GitHub receiver"
    logger().warning("commit time %s not counted in the lead time: %s", at, problem)
    return (at, TYPED), problem
