"""Figure 6 of the benchmark: how often the health gate passes a worse image and fails a good one.

In the bench's staging environment (the lab staging's profile as bench/releases.py writes it: 2
intervals of 2 s, 20 rps of synthetic traffic per colour), the live colour of ``backend`` runs a
"good" noisy image (20 ms median latency, lognormal with sigma 0.5, 0.5 % errors). Then, ``runs``
times per kind, interleaved so that drift hits every kind alike, a new image (a new version, so a
new digest even for the same behaviour) is deployed to the other colour the way a release does it
(``deploy_colour`` cloning the live Deployment, ``wait_rollout``, ``point_preview``) and judged by
``run_gate(profile, "backend", colour)``, with nothing else loading the lab. The kinds:

- ``good``: the live colour's behaviour; must pass;
- ``slower``: latency x2 (40 ms median, same sigma): p95 beyond the profile's 1.5 ratio; must fail;
- ``much-slower``: latency x5 (100 ms), p95 still under the profile's 500 ms limit; must fail;
- ``errors``: 8.5 % errors (+8 points over live, beyond its 2 points), with the absolute
  ``max_error_rate`` raised to 0.25 so that only the relative check can catch it; must fail.

An inconclusive verdict blocks a release (fail closed), so it counts as not passed: a false fail
for ``good``, and not a false pass for the others.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greenlight_lab import supervisor
from greenlight_lab.state import LabState

Echo = Callable[[str], None]
APP = "backend"
RUNS = 8
LIVE = {"latency_ms": 20.0, "latency_sigma": 0.5, "error_rate": 0.005}


@dataclass(frozen=True)
class Kind:
    """One kind of candidate image: its behaviour, what the gate should say, profile overrides."""

    name: str
    label: str
    behaviour: dict[str, float]
    should_pass: bool
    gate: dict[str, Any] = field(default_factory=dict)  # profile.gate fields changed for this kind


KINDS: tuple[Kind, ...] = (
    Kind("good", "same behaviour as live (20 ms, sigma 0.5, 0.5 % errors)", dict(LIVE), True),
    Kind("slower", "latency x2 (40 ms, sigma 0.5, 0.5 % errors)", {**LIVE, "latency_ms": 40.0}, False),
    Kind("much-slower", "latency x5 (100 ms, sigma 0.5, 0.5 % errors)", {**LIVE, "latency_ms": 100.0}, False),
    Kind(
        "errors",
        "errors +8 points (20 ms, sigma 0.5, 8.5 % errors; gate.max_error_rate 0.25)",
        {**LIVE, "error_rate": 0.085},
        False,
        {"max_error_rate": 0.25},
    ),
)


# --- the arithmetic (pure) ------------------------------------------------------------------------


def summarise(kind: Kind, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Counts of verdicts, the rate that matters for ``kind`` and the gate's wall times.

    ``good``: false-fail rate = runs not passed (failed or inconclusive: fail closed) / runs;
    the worse kinds: false-pass rate = runs passed / runs. ``met``: that rate is 0 (None
    without runs).
    """
    n = len(runs)
    verdicts = [r["verdict"] for r in runs]
    passed, failed = verdicts.count("pass"), verdicts.count("fail")
    inconclusive = n - passed - failed
    wrong = n - passed if kind.should_pass else passed
    walls = [float(r["wall_s"]) for r in runs]
    return {
        "label": kind.label,
        "should": "pass" if kind.should_pass else "fail",
        "runs": n,
        "passed": passed,
        "failed": failed,
        "inconclusive": inconclusive,
        "rate_name": "false-fail" if kind.should_pass else "false-pass",
        "wrong": wrong,
        "rate": round(wrong / n, 4) if n else None,
        "met": wrong == 0 if n else None,
        "wall_median_s": round(statistics.median(walls), 2) if walls else None,
        "wall_max_s": round(max(walls), 2) if walls else None,
    }


def goal_text(kinds: dict[str, dict[str, Any]]) -> str:
    """``good: false-fail 0 of 8; worse: false-pass 0 of 8`` (the runs of each kind)."""
    good = [s["runs"] for s in kinds.values() if s["should"] == "pass"]
    worse = [s["runs"] for s in kinds.values() if s["should"] == "fail"]
    parts = []
    if good:
        parts.append(f"good: false-fail 0 of {max(good)}")
    if worse:
        parts.append(f"worse: false-pass 0 of {max(worse)}")
    return "; ".join(parts)


def _interval_values(verdict: Any) -> dict[str, Any]:
    """The last interval's checks (the relative ones pooled over the intervals so far): value,
    limit, ok and reason; and that interval's requests of each colour."""
    if not verdict.intervals:
        return {}
    out: dict[str, Any] = {}
    last = verdict.intervals[-1]
    for c in last.checks:
        if c.name in ("error_rate", "p95_ms", "error_rate_vs_live", "p95_vs_live"):
            out[c.name] = {"value": c.value, "limit": c.limit, "ok": c.ok, "reason": c.reason}
    out["requests"] = last.candidate.requests
    if last.live is not None:
        out["live_requests"] = last.live.requests
    return out


# --- the lab ----------------------------------------------------------------------------------------


def _push(lab: LabState, repository: str, tag: str, behaviour: dict[str, float]) -> str:
    body = {"ref": f"{repository}:{tag}", "version": f"{APP}-{tag}", **behaviour}
    return str(supervisor.control(lab, "POST", "/images", body)["digest"])


def _colours(profile: Any) -> tuple[str, str]:
    """(live, other): the colour the live Service selects and the other one."""
    from greenlight.core.switch import snapshot_service
    from greenlight.tasks.cluster import cluster

    with cluster(profile) as kube:
        svc = kube.get("services", profile.app(APP).service, profile.namespace)
    live = snapshot_service(svc, profile.release.colour_label).colour()
    if live is None:
        raise RuntimeError(f"the live Service of {APP} in {profile.namespace} selects no colour")
    other = next(c for c in profile.release.colours if c != live)
    return live, other


def _digest_of(profile: Any, colour: str) -> str | None:
    """The image digest ``colour``'s Deployment runs now."""
    from greenlight.tasks.cluster import cluster
    from greenlight.tasks.kube import container_digest

    with cluster(profile) as kube:
        dep = kube.get("deployments", f"{APP}-{colour}", profile.namespace)
    return container_digest(dep, profile.app(APP).container)


def _roll(profile: Any, colour: str, source: str, digest: str, rid: str) -> None:
    """Put ``digest`` on ``colour`` (its Deployment cloned from ``source``'s, as a release does),
    wait for the rollout, then for the data plane to forget the old pods (which left the
    endpoints when their deletion started, before the rollout was complete)."""
    from greenlight.tasks.kube import deploy_colour, wait_rollout

    deploy_colour.fn(profile, APP, colour, source, digest, rid)
    wait_rollout.fn(profile, APP, colour)
    time.sleep(profile.release.propagation_s)


def _ensure_staging(lab: LabState) -> None:
    """Bootstrap the bench's staging environment unless it is there (another figure made it)."""
    from greenlight.clients.kube import Kube
    from greenlight_lab.bootstrap import bootstrap_environment

    kube = Kube.connect(context="lab-primary")
    try:
        bootstrap_environment(kube, "staging", Path(os.environ["GREENLIGHT_ENVIRONMENTS"]), {}, lab.env, 120)
    finally:
        kube.close()


@functools.cache
def _gate_flow() -> Callable[[Any, str], tuple[Any, float]]:
    """A flow that runs ``run_gate`` (in a flow run of its own, as the release's and ``greenlight
    gate``'s) and returns the verdict and the gate's wall time, from the call to the return."""
    from prefect import flow

    from greenlight.flows.health_gate import run_gate

    @flow(name="bench-gate", validate_parameters=False)
    def bench_gate(profile: Any, colour: str) -> tuple[Any, float]:
        t0 = time.monotonic()
        verdict = run_gate(profile, APP, colour)
        return verdict, time.monotonic() - t0

    return bench_gate


def figure(lab: LabState, echo: Echo, runs: int = RUNS, kinds: Sequence[Kind] = KINDS) -> dict[str, Any]:
    """``runs`` gates of each kind of candidate against the good noisy live colour; per kind the
    verdicts, the false-pass or false-fail rate and the gate's wall time (run_gate's call to its
    return); every run's verdict, reason and pooled values in ``samples``."""
    from greenlight.settings import load_profile
    from greenlight.tasks.kube import point_preview

    _ensure_staging(lab)
    profile = load_profile("staging")
    repository = profile.app(APP).image_repository
    live, other = _colours(profile)
    restore = _digest_of(profile, live)
    batch = uuid.uuid4().hex[:6]
    echo(f"  {APP}: live colour {live} gets the good noisy image; candidates go to {other}")
    _roll(profile, live, live, _push(lab, repository, f"gate-{batch}-live", LIVE), f"bench-gate-{batch}-live")
    point_preview.fn(profile, APP, other)
    samples: list[dict[str, Any]] = []
    try:
        for i in range(runs):
            for kind in kinds:  # interleaved: drift hits every kind alike
                tag = f"gate-{batch}-{kind.name}-{i + 1}"
                digest = _push(lab, repository, tag, kind.behaviour)
                _roll(profile, other, live, digest, f"bench-{tag}")
                judged = profile
                if kind.gate:
                    judged = profile.model_copy(update={"gate": profile.gate.model_copy(update=kind.gate)})
                verdict, wall = _gate_flow()(judged, other)
                sample = {
                    "kind": kind.name,
                    "run": i + 1,
                    "image": f"{repository}:{tag}",
                    "digest": digest,
                    "verdict": verdict.verdict,
                    "reason": verdict.reason,
                    "wall_s": round(wall, 3),
                    "intervals": len(verdict.intervals),
                    "values": _interval_values(verdict),
                }
                samples.append(sample)
                echo(
                    f"  {kind.name:11} {i + 1}/{runs}: {verdict.verdict:12} in {wall:4.1f} s: {verdict.reason}"
                )
    finally:
        if restore is not None:  # leave the live colour as the record says (the bootstrap's image)
            try:
                _roll(profile, live, live, restore, f"bench-gate-{batch}-restore")
            except Exception as e:  # the figure's numbers stand without it
                echo(f"  could not put the live colour back on {restore}: {e}")
    by_kind = {k.name: summarise(k, [s for s in samples if s["kind"] == k.name]) for k in kinds}
    return {
        "app": APP,
        "runs": runs,
        "live": {"colour": live, **LIVE},
        "candidate_colour": other,
        "interval_s": profile.gate.interval_s,
        "intervals": profile.gate.intervals,
        "synthetic_rps": profile.gate.synthetic_rps,
        "confidence": profile.gate.confidence,
        "goal": goal_text(by_kind),
        "met": all(s["met"] for s in by_kind.values()),
        "kinds": by_kind,
        "samples": samples,
    }
