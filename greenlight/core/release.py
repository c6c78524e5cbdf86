"""Plan a blue-green release and check that it may start. Pure.

:func:`plan_release` reads, per app, what the cluster says (the live Service and the Deployment
of each colour) and decides where the new digest goes: the inactive colour. Because the plan is
derived from the cluster and not from memory, re-running a release after a crash converges: a
target colour already running the digest is resumed (not redeployed), and a live colour already
serving it needs nothing (never switch twice).

:func:`check_promotion` holds production to digests that passed the required environment;
:func:`check_preflight` stops a release during a freeze or while the live colour fails its own
gate, unless forced with a reason; :func:`release_id` names a release deterministically.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from greenlight.core.gate import BreachVerdict, GateVerdict
from greenlight.core.switch import TrafficSnapshot, other_colour
from greenlight.errors import InputInvalid

AppAction = Literal["bootstrap", "deploy", "resume", "nothing", "blocked"]
NO_FREEZE = frozenset({"", "false", "off", "no", "none", "0"})
_ENV = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_COMMIT = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class ColourState:
    """One colour's Deployment: the digest its app container runs (None: not pinned), replicas."""

    colour: str
    digest: str | None
    replicas: int
    ready: int


@dataclass(frozen=True)
class AppState:
    """An app as read from the cluster: what routes its live traffic (the live Service, or its
    HTTPRoute; None: no live Service yet) and its Deployments."""

    name: str
    traffic: TrafficSnapshot | None
    deployments: Mapping[str, ColourState] = field(default_factory=dict)  # by colour


@dataclass(frozen=True)
class AppPlan:
    """What the release does for one app.

    ``action``: ``bootstrap`` (no live Service: create it and ``target_colour`` from the
    manifests), ``deploy`` (put the digest on ``target_colour``), ``resume`` (the target colour
    already runs it: gate and switch without redeploying), ``nothing`` (live already serves it),
    ``blocked`` (the cluster's state makes the release unsafe; ``reason`` says why).
    ``spec_from`` is the colour whose Deployment spec the target copies (None: from manifests).
    """

    app: str
    action: AppAction
    reason: str
    live_colour: str | None
    target_colour: str
    digest: str
    target_has_digest: bool
    live_has_digest: bool
    spec_from: str | None


@dataclass(frozen=True)
class ReleasePlan:
    """The plan of every app of one release; they switch together, all or none."""

    apps: tuple[AppPlan, ...]
    reason: str

    @property
    def blocked(self) -> bool:
        return any(a.action == "blocked" for a in self.apps)

    @property
    def nothing_to_release(self) -> bool:
        return all(a.action == "nothing" for a in self.apps)

    @property
    def to_switch(self) -> tuple[AppPlan, ...]:
        """The apps whose live Service must be switched to the target colour."""
        return tuple(a for a in self.apps if a.action in ("deploy", "resume"))

    def app(self, name: str) -> AppPlan:
        for a in self.apps:
            if a.app == name:
                return a
        raise InputInvalid(
            f"app {name!r} is not part of this release ({', '.join(a.app for a in self.apps)})"
        )


@dataclass(frozen=True)
class Decision:
    """May the release go on? ``forced`` when it goes on only because a person forced it."""

    ok: bool
    reason: str
    forced: bool = False
    blockers: tuple[str, ...] = ()


@dataclass(frozen=True)
class PassedRecord:
    """A digest that passed an environment's release (as recorded where a person can see it)."""

    app: str
    digest: str
    environment: str = ""
    release_id: str = ""
    unwatched: str | None = None  # why its bake was not judged throughout (None: it was)
    untrusted: str | None = None  # why its signature does not verify (None: it does)


def plan_release(
    apps: Sequence[AppState],
    target_digests: Mapping[str, str],
    colours: tuple[str, str],
    colour_label: str = "color",
) -> ReleasePlan:
    """Plan the release of ``target_digests`` (app name -> digest) to ``apps``.

    Every app must have a digest and every digest an app, else :class:`InputInvalid` naming
    them. The live colour is the one the live Service's selector routes to (not the active-colour
    annotation, which a hand edit of the selector makes stale); the target is the other one. A
    Service whose selector has no colour, or a colour outside ``colours``, blocks the release.
    """
    other_colour(colours, colours[0])  # validates the pair
    names = [a.name for a in apps]
    unknown = sorted(set(target_digests) - set(names))
    missing = sorted(set(names) - set(target_digests))
    if unknown or missing:
        parts = [f"digests for unknown apps: {', '.join(unknown)}"] if unknown else []
        parts += [f"no digest for apps: {', '.join(missing)}"] if missing else []
        raise InputInvalid(f"release digests do not match the apps ({'; '.join(parts)})")
    plans = tuple(_plan_app(a, target_digests[a.name], colours, colour_label) for a in apps)
    return ReleasePlan(plans, _plan_summary(plans))


def check_promotion(
    digests: Mapping[str, str],
    passed: Mapping[str, Collection[str]] | Iterable[PassedRecord],
    required_env: str = "staging",
    force_reason: str | None = None,
) -> Decision:
    """Allow only digests (app -> digest) that passed ``required_env``; name every one that did not.

    ``passed`` maps an app to the digests that passed, or lists :class:`PassedRecord` entries
    (those of other environments are ignored when the record names its environment). A digest
    whose only passes had a bake that was not judged throughout (``unwatched``) did not prove
    itself: refused, unless a person forces it with a reason (``forced`` on the decision).
    """
    proven, unwatched = _proven(passed, required_env)
    if not digests:
        return Decision(False, "nothing to promote: no digests given", blockers=("no digests",))
    missing = [(app, d) for app, d in sorted(digests.items()) if d not in proven.get(app, set())]
    untrusted = _untrusted(passed, required_env, set(missing))
    if untrusted:
        named = "; ".join(
            f"{app} {_short(d)}: record {rid} {why}" for (app, d), (rid, why) in sorted(untrusted.items())
        )
        reason = f"refusing: the {required_env} record that would let these pass does not verify: {named}"
        return Decision(False, reason, blockers=tuple(f"{app} {d}" for app, d in sorted(untrusted)))
    unproven = [f"{app} {d}" for app, d in missing if (app, d) not in unwatched]
    if unproven:
        reason = f"refusing: not passed in {required_env}: {', '.join(unproven)}"
        return Decision(False, reason, blockers=tuple(unproven))
    shown = ", ".join(f"{app} {_short(d)}" for app, d in sorted(digests.items()))
    if missing:
        blind = [f"{app} {_short(d)} ({unwatched[(app, d)]})" for app, d in missing]
        text = f"the {required_env} bake was not judged throughout for {', '.join(blind)}"
        if not force_reason:
            reason = f"refusing: {text}; release it to {required_env} again, or force with a reason"
            return Decision(False, reason, blockers=tuple(f"{app} {d}" for app, d in missing))
        return Decision(True, f"forced ({force_reason}): {text}", forced=True)
    return Decision(True, f"every digest passed {required_env}: {shown}")


def check_preflight(
    freeze: str | None,
    forced_reason: str | None,
    live_gate: GateVerdict | BreachVerdict | Mapping[str, GateVerdict | BreachVerdict] | None,
) -> Decision:
    """May a release start? A declared freeze or a live colour failing its own gate blocks it.

    ``freeze`` is the freeze Variable's text: None, blank or false/off/no/none/0 means no
    freeze. ``live_gate`` is the live colour's own verdict (one, or by app); ``fail`` or
    ``breach`` blocks, ``no-data`` and ``inconclusive`` do not. Blockers are overridden by a
    non-blank ``forced_reason``, which the decision carries (``forced=True``).
    """
    blockers = []
    if freeze is not None and freeze.strip().casefold() not in NO_FREEZE:
        blockers.append(f"release freeze declared: {freeze.strip()}")
    verdicts = live_gate if isinstance(live_gate, Mapping) else {"": live_gate} if live_gate else {}
    unjudged = []
    for app, verdict in sorted(verdicts.items()):
        whose = f"{app} live colour" if app else "live colour"
        if _failing(verdict):
            blockers.append(f"{whose} is failing its own gate: {verdict.reason}")
        elif not _healthy(verdict):
            unjudged.append(f"{whose} not judged ({verdict.reason})")
    if not blockers:
        return Decision(True, "; ".join(["pre-flight clear: no freeze", *unjudged]))
    listed = "; ".join(blockers)
    if forced_reason is not None and forced_reason.strip():
        return Decision(
            True, f"forced past: {listed} (forced: {forced_reason.strip()})", True, tuple(blockers)
        )
    hint = (
        "a forced release needs a non-empty reason"
        if forced_reason is not None
        else "force with a reason to override"
    )
    return Decision(False, f"blocked: {listed} ({hint})", blockers=tuple(blockers))


RECORD_SIGNATURE = "signature"
_SIGNATURE_SCHEME = "hmac-sha256:"


def _record_text(entry: Mapping[str, object]) -> bytes:
    """The bytes a record's signature covers: every field but the signature, canonical JSON."""
    body = {k: v for k, v in entry.items() if k != RECORD_SIGNATURE}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def sign_record(entry: Mapping[str, object], key: bytes) -> str:
    """The signature of a release record: HMAC-SHA256 over all its other fields, with ``key``."""
    if not key:
        raise InputInvalid("the release record key is empty")
    return _SIGNATURE_SCHEME + hmac.new(key, _record_text(entry), hashlib.sha256).hexdigest()


def verify_record(entry: Mapping[str, object], key: bytes) -> str | None:
    """Why a release record cannot be trusted (None: its signature verifies with ``key``).

    Anyone who can write ConfigMaps in the namespace can add or edit an entry; only a holder of
    the key can sign one, so an entry without a valid signature proves nothing.
    """
    given = entry.get(RECORD_SIGNATURE)
    if not isinstance(given, str) or not given:
        return "it has no signature"
    if not given.startswith(_SIGNATURE_SCHEME):
        return f"its signature is not {_SIGNATURE_SCHEME.rstrip(':')}"
    if not hmac.compare_digest(given, sign_record(entry, key)):
        return "its signature does not match its content (edited, or signed with another key)"
    return None


def release_id(env: str, digests: Mapping[str, str], commit: str | None = None) -> str:
    """A deterministic release id, unique per set of digests: ``<env>-<commit's first 12>-<8 of the
    digests' hash>``, or ``<env>-d<12 of the digests' hash>`` without a commit.

    The same digests (order aside) and commit in the same environment always give the same id, so
    a re-run of a release is recognised; other digests never share it, even under one commit (a
    rebuilt image) or commits alike in their first 12 characters (``release-2025-01`` and
    ``release-2025-02``), so no rerun, record or pre-deploy Job is taken for another's. Raises
    :class:`InputInvalid` on a malformed environment name or commit, or an empty digest map.
    """
    if not _ENV.match(env):
        raise InputInvalid(f"environment name {env!r} is malformed (lowercase letters, digits and '-')")
    if not digests:
        raise InputInvalid("cannot name a release of no digests")
    text = json.dumps(dict(digests), sort_keys=True, separators=(",", ":"))
    digest_hash = hashlib.sha256(text.encode()).hexdigest()
    if commit is None:
        return f"{env}-d{digest_hash[:12]}"
    stripped = commit.strip()
    if not _COMMIT.match(stripped):
        raise InputInvalid(f"commit {commit!r} is malformed (letters, digits, '.', '_', '-')")
    return f"{env}-{stripped[:12].lower()}-{digest_hash[:8]}"


# --- helpers ------------------------------------------------------------------------------------


def _plan_app(app: AppState, digest: str, colours: tuple[str, str], colour_label: str) -> AppPlan:
    short = _short(digest)
    if app.traffic is None:
        target = colours[0]
        has = _runs(app.deployments.get(target), digest)
        reason = f"{app.name}: no live Service yet: bootstrapping {target} with {short} from the manifests"
        return AppPlan(app.name, "bootstrap", reason, None, target, digest, has, False, None)
    svc = app.traffic
    live = svc.colour()
    if live is None or svc.problem:
        reason = f"{app.name}: {svc.problem or f'{svc.kind} {svc.name} sends no colour all its traffic'}"
        if svc.kind == "Service":
            reason += " (it would route to both colours)"
        return AppPlan(app.name, "blocked", reason, None, colours[0], digest, False, False, None)
    if live not in colours:
        what = f"{colour_label}={live}" if svc.kind == "Service" else f"its traffic on {live}"
        reason = f"{app.name}: live {svc.kind} {svc.name} has {what}, not one of {colours[0]}/{colours[1]}"
        return AppPlan(app.name, "blocked", reason, live, colours[0], digest, False, False, None)
    target = other_colour(colours, live)
    live_dep, target_dep = app.deployments.get(live), app.deployments.get(target)
    live_has, target_has = _runs(live_dep, digest), _runs(target_dep, digest)
    spec_from = live if live_dep is not None else None
    note = _annotation_note(svc, live)

    def plan(action: AppAction, reason: str) -> AppPlan:
        return AppPlan(app.name, action, reason + note, live, target, digest, target_has, live_has, spec_from)

    if live_has:
        return plan("nothing", f"{app.name}: {live} already serves {short}: nothing to release")
    if target_has and target_dep is not None and target_dep.replicas > 0:
        ready = f"{target_dep.ready}/{target_dep.replicas} ready"
        return plan(
            "resume", f"{app.name}: {target} already runs {short} ({ready}): resuming without redeploying"
        )
    if live_dep is None:
        running = f"{live} is live; no live Deployment, its spec comes from the manifests"
    elif live_dep.digest:
        running = f"{live} runs {_short(live_dep.digest)}"
    else:
        running = f"{live} runs an image not pinned by digest"
    return plan("deploy", f"{app.name}: deploy {short} to {target} ({running})")


def _annotation_note(svc: TrafficSnapshot, live: str) -> str:
    recorded = svc.active_colour
    if recorded and recorded != live:
        routes = "its selector routes" if svc.kind == "Service" else "its weights send traffic"
        return f" (the {svc.kind} records {recorded} as active but {routes} to {live})"
    return ""


def _runs(dep: ColourState | None, digest: str) -> bool:
    return dep is not None and dep.digest == digest


def _plan_summary(plans: Sequence[AppPlan]) -> str:
    if any(p.action == "blocked" for p in plans):
        return "blocked: " + "; ".join(p.reason for p in plans if p.action == "blocked")
    if all(p.action == "nothing" for p in plans):
        return "nothing to release: every app already serves its digest"
    return "; ".join(p.reason for p in plans)


def _proven(
    passed: Mapping[str, Collection[str]] | Iterable[PassedRecord], env: str
) -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """(app -> digests proven by a watched bake, (app, digest) -> why its passes were not watched)."""
    if isinstance(passed, Mapping):
        return {app: set(ds) for app, ds in passed.items()}, {}
    out: dict[str, set[str]] = {}
    unwatched: dict[tuple[str, str], str] = {}
    for rec in passed:
        if rec.environment and rec.environment != env:
            continue
        if rec.untrusted is not None:
            continue
        if rec.unwatched is None:
            out.setdefault(rec.app, set()).add(rec.digest)
        else:
            unwatched[(rec.app, rec.digest)] = rec.unwatched
    return out, unwatched


def _untrusted(
    passed: Mapping[str, Collection[str]] | Iterable[PassedRecord], env: str, missing: set[tuple[str, str]]
) -> dict[tuple[str, str], tuple[str, str]]:
    """(app, digest) still missing -> (record id, why) of a record claiming it that does not verify."""
    if isinstance(passed, Mapping):
        return {}
    out: dict[tuple[str, str], tuple[str, str]] = {}
    for rec in passed:
        if (
            rec.untrusted
            and (rec.app, rec.digest) in missing
            and (not rec.environment or rec.environment == env)
        ):
            out[(rec.app, rec.digest)] = (rec.release_id or "?", rec.untrusted)
    return out


def _healthy(verdict: GateVerdict | BreachVerdict) -> bool:
    if isinstance(verdict, GateVerdict):
        return verdict.verdict == "pass"
    return verdict.status == "ok"


def _failing(verdict: GateVerdict | BreachVerdict) -> bool:
    if isinstance(verdict, GateVerdict):
        return verdict.verdict == "fail"
    return verdict.status == "breach"


def _short(digest: str) -> str:
    """``sha256:0123456789ab``: enough to tell digests apart in a sentence."""
    algo, _, hex_part = digest.partition(":")
    return f"{algo}:{hex_part[:12]}" if hex_part else digest[:19]
