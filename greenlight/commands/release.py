"""Release commands: deploy, promote, rollback, monitor, smoke, gate, switch, approve, reject,
cleanup, setup, status. Each prints its outcome and the values behind it on stdout."""

from __future__ import annotations

import argparse
import getpass
import json
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

from greenlight.commands import JSON_HELP, print_json, stdout_for_json
from greenlight.commands.progress import progress
from greenlight.errors import GateFailed, InputInvalid, NotFound, ReleaseRefused
from greenlight.settings import load_profile

ENV_HELP = "the environment: a profile's name (greenlight profile validate lists them)"
APP_HELP = "only this app (default: every app of the profile)"


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    def cmd(name: str, help: str, changes: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if changes:
            p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
        return p

    p = cmd("deploy", "blue-green deploy of the given images (tags resolved to digests first)")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument(
        "images", nargs="+", metavar="IMAGE", help="REPOSITORY:TAG or REPOSITORY@sha256:..., one per app"
    )
    p.add_argument("--actor", help="who releases, on the record (default: the login name)")
    p.add_argument(
        "--force-reason",
        help="release despite a freeze or a failing live colour (the reason is on the record)",
    )
    p.add_argument(
        "--bake-s", type=float, metavar="S", help="watch the new colour this long (default: release.bake_s)"
    )
    p = cmd("promote", "release the images of a commit (production: after approval)")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument(
        "--commit",
        required=True,
        help="the commit whose images to release (registry.image_template names them)",
    )
    p.add_argument(
        "--actor", help="who asks (default: the login name); the author cannot approve their own release"
    )
    p.add_argument("--force-reason", help="release despite a freeze or a failing live colour (on the record)")
    p.add_argument(
        "--bake-s", type=float, metavar="S", help="watch the new colour this long (default: release.bake_s)"
    )
    p = cmd("rollback", "point traffic back at the previous colour")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--app", help=APP_HELP)
    p.add_argument(
        "--reason", default="manual rollback", help="why, on the record (default: manual rollback)"
    )
    p = cmd("monitor", "watch the live colour; roll back on breach")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("seconds", type=float, help="how long to watch")
    p = cmd("smoke", "the smoke probes alone", changes=False)
    p.add_argument("env", help=ENV_HELP)
    p.add_argument(
        "--colour",
        choices=["live", "preview"],
        default="live",
        help="probe the live (default) or the preview Service",
    )
    p.add_argument("--app", help=APP_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p = cmd(
        "gate",
        "the whole health gate: per interval the candidate's and the baseline's figures",
        changes=False,
    )
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--app", help=APP_HELP)
    p.add_argument("--colour", default="preview", help="preview (default), live, or a colour name")
    p.add_argument("--json", action="store_true", help="the verdicts, intervals and checks as JSON")
    p = cmd("switch", "point the live Services at a colour")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("colour", help="the colour to serve (one of release.colours)")
    p.add_argument("--app", help=APP_HELP)
    for verb in ("approve", "reject"):
        p = sub.add_parser(verb, help=f"{verb} a paused production promotion")
        p.add_argument("run_id", help="the paused flow run's id (the promotion prints it while it waits)")
        p.add_argument("--approver", required=True, help="who answers: typed, so unverified")
        p.add_argument("--reason", default="", help="why, on the record")
        p.add_argument(
            "--wait-s", type=float, default=20, help="how long to wait for the run's judgement (default 20)"
        )
    p = sub.add_parser(
        "approval-key",
        help="make the Slack receiver's key pair: the private key to a new file, the public key printed",
    )
    p.add_argument("--out", required=True, help="file for the private key (created 0600; never overwritten)")
    p = cmd("cleanup", "scale down colours idle past the scale-down delay, once drained")
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--now", action="store_true", help="skip the scale-down delay (never the drain)")
    p = cmd("setup", "create what the flows need in the Prefect API (idempotent)")
    p.add_argument("envs", nargs="*", metavar="ENV", help="environments to set up (default: every profile)")
    p = cmd("status", "per app: live and previous colour, digests, release, replicas", changes=False)
    p.add_argument("env", help=ENV_HELP)
    p.add_argument("--json", action="store_true", help=JSON_HELP)


COMMANDS = {
    "deploy",
    "promote",
    "rollback",
    "monitor",
    "smoke",
    "gate",
    "switch",
    "approve",
    "reject",
    "approval-key",
    "cleanup",
    "setup",
    "status",
}


def _print_result(result: dict[str, Any]) -> None:
    for key, value in result.items():
        print(
            f"{key}: {json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value}"
        )


def run(args: argparse.Namespace) -> int:
    return int(HANDLERS[args.command](args))


def _plan(
    env: str, refs: dict[str, Any], commit: str | None, actor: str | None, force_reason: str | None
) -> int:
    """The dry run of deploy and promote: the planning half of the flow (the same
    greenlight.flows.promotion.plan_promotion, then the release plan), printed; nothing changes."""
    from greenlight.core.release import plan_release
    from greenlight.flows.promotion import plan_promotion
    from greenlight.tasks.kube import read_app_state, shutdown_safety

    profile = load_profile(env)
    planned = plan_promotion(profile, refs, commit, actor, force_reason, as_tasks=False)
    states = [read_app_state.fn(profile, a.name) for a in profile.apps]
    plan = plan_release(states, planned.digests, profile.release.colours, profile.release.colour_label)
    print(f"dry run: release {planned.release_id} to {env} (nothing changed)")
    for app, d in sorted(planned.digests.items()):
        print(f"  {app}: {refs[app]} -> {d}")
    if profile.registry.signatures.required:
        for app, text in sorted(planned.signatures.items()):
            print(f"  signature {app}: {text}")
    else:
        print("  signatures: not required by the profile")
    if planned.promotion is not None:
        print(f"  passed {profile.release.requires}: {planned.promotion.reason}")
    print(f"  author: {planned.author}")
    for p in plan.apps:
        print(f"  plan {p.app}: {p.action}: {p.reason}")
    print(f"  traffic: {profile.traffic.router}" + (
        f", progressive {' -> '.join(f'{w}%' for w in profile.traffic.progressive)} -> 100%"
        if profile.traffic.progressive else ""
    ))  # fmt: skip
    findings = shutdown_safety.fn(profile)
    for finding in findings:
        print(f"  warning: {finding}")
    if not findings:
        print(
            "  shutdown safety: every app has a readiness probe, a preStop hook and a grace period to leave Services without loss"
        )
    if profile.release.requires:
        print(
            f"  requires: digests released in {profile.release.requires}; approval by {profile.release.approval.approvers}"
        )
    if planned.refusal:
        raise ReleaseRefused(f"dry run: the release would be refused: {planned.refusal}")
    if plan.blocked:
        raise ReleaseRefused(f"dry run: the release is blocked: {plan.reason}")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    from greenlight.flows.promotion import images_by_app
    from greenlight.flows.release import deploy
    from greenlight.flows.requests import DeployRequest

    if args.dry_run:
        return _plan(
            args.env, images_by_app(load_profile(args.env), args.images), None, args.actor, args.force_reason
        )
    with progress(f"deploy {args.env}"):
        result = deploy(
            DeployRequest(
                environment=args.env,
                images=args.images,
                actor=args.actor,
                force_reason=args.force_reason,
                bake_s=args.bake_s,
            )
        )
    _print_result(result)
    return 0


def _promote(args: argparse.Namespace) -> int:
    from greenlight.flows.promotion import images_for_commit
    from greenlight.flows.release import build_promote
    from greenlight.flows.requests import PromoteRequest

    if args.dry_run:
        return _plan(
            args.env,
            images_for_commit(load_profile(args.env), args.commit),
            args.commit,
            args.actor,
            args.force_reason,
        )
    actor = args.actor or getpass.getuser()
    with progress(f"promote {args.env} {args.commit}"):
        result = build_promote(
            PromoteRequest(
                environment=args.env,
                commit=args.commit,
                actor=actor,
                force_reason=args.force_reason,
                bake_s=args.bake_s,
            )
        )
    _print_result(result)
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from greenlight.flows.rollback import rollback

    if args.dry_run:
        from greenlight.tasks.cluster import cluster
        from greenlight.tasks.kube import live_snapshot

        profile = load_profile(args.env)
        apps = [profile.app(args.app)] if args.app else profile.apps
        with cluster(profile) as kube:
            for a in apps:
                s = live_snapshot(kube, profile, a)
                print(
                    f"dry run: {a.name}: live {s.colour()} -> previous {s.previous_colour or '(none recorded)'} (nothing changed)"
                )
        return 0
    result = rollback(args.env, app=args.app, reason=args.reason, actor=getpass.getuser())
    for app, step in result["apps"].items():
        print(f"{app}: {step['action']}: {step['reason']}")
    return 0


def _monitor(args: argparse.Namespace) -> int:
    from greenlight.flows.monitor import monitor

    if args.dry_run:
        print(f"dry run: would watch {args.env} for {args.seconds:g} s and roll back on breach")
        return 0
    with progress(f"monitor {args.env} for {args.seconds:g} s"):
        result = monitor(args.env, args.seconds)
    print(f"{args.env}: {result['status']}: {result['detail']} (colours {result['colours']})")
    return 0


def _smoke(args: argparse.Namespace) -> int:
    from greenlight.tasks.probes import smoke

    profile = load_profile(args.env)
    apps = [profile.app(args.app).name] if args.app else [a.name for a in profile.apps]
    probes: list[dict[str, Any]] = []
    for app in apps:
        for r in smoke.fn(profile, app, args.colour):
            probes.append(
                {
                    "app": app,
                    "colour": args.colour,
                    "probe": r.name,
                    "ok": r.ok,
                    "status": r.status,
                    "expect_status": r.expect_status,
                    "elapsed_ms": r.elapsed_ms,
                    "error": r.error,
                    "reason": r.reason,
                }
            )
    bad = [p for p in probes if not p["ok"]]
    summary = "all smoke probes passed" if not bad else f"{len(bad)} of {len(probes)} smoke probe(s) failed"
    if args.json:
        print_json(
            {
                "environment": args.env,
                "colour": args.colour,
                "passed": not bad,
                "summary": summary,
                "probes": probes,
            }
        )
    else:
        for p in probes:
            print(f"{'ok  ' if p['ok'] else 'FAIL'} {p['app']} ({p['colour']}) {p['reason']}")
        print(summary)
    if bad:
        raise GateFailed(f"{summary}: " + "; ".join(f"{p['app']} {p['reason']}" for p in bad))
    return 0


def _gate(args: argparse.Namespace) -> int:
    from greenlight.flows.health_gate import health_gate

    try:
        with stdout_for_json(args.json), progress(f"gate {args.env} ({args.colour})"):
            result = health_gate(args.env, app=args.app, colour=args.colour)
    except GateFailed as e:
        if e.verdicts is not None:
            _print_gate(args, e.verdicts)
        raise
    _print_gate(args, result)
    return 0


def _print_gate(args: argparse.Namespace, result: dict[str, Any]) -> None:
    if args.json:
        print_json({"environment": args.env, "apps": result})
        return
    for app, v in sorted(result.items()):
        for line in gate_lines(app, v):
            print(line)


def _figures(s: dict[str, Any] | None) -> str:
    """``50 req (50 synthetic, 0 users), 0.00% 5xx, p95 12 ms`` for one colour's window."""
    if s is None:
        return "—"
    if s.get("requests") is None:
        return "no data"
    mix = ""
    if s.get("synthetic") is not None:
        mix = f" ({s['synthetic']:g} synthetic, {s.get('user') or 0:g} users)"
    rate = (s.get("errors") or 0) / s["requests"] if s["requests"] else 0.0
    p95 = (s.get("latency_ms") or {}).get("p95")
    latency = f"p95 {p95:.0f} ms" if p95 is not None else "p95 n/a"
    return f"{s['requests']:g} req{mix}, {rate * 100:.2f}% 5xx, {latency}"


def gate_lines(app: str, v: dict[str, Any]) -> list[str]:
    """A gate verdict as text: the verdict, then per interval the candidate's and the
    baseline's figures side by side, then every check with its value and limit."""
    lines = [f"{app} ({v.get('colour')}): {v.get('verdict')}: {v.get('reason')}"]
    for i, iv in enumerate(v.get("intervals") or [], 1):
        cand, base = iv.get("candidate") or {}, iv.get("live")
        start, end = cand.get("start"), cand.get("end")
        window = (
            f"{time.strftime('%H:%M:%S', time.gmtime(start))}-{time.strftime('%H:%M:%S', time.gmtime(end))}"
            if start and end
            else "?"
        )
        baseline = _figures(base) if base is not None else f"none ({iv.get('absolute_only') or 'not read'})"
        lines.append(f"  interval {i} {window}: {iv.get('verdict')}")
        lines.append(f"    candidate: {_figures(cand)}")
        lines.append(f"    baseline:  {baseline}")
        lines.append(f"    {iv.get('reason')}")
    for c in v.get("checks", []):
        if not str(c.get("name", "")).startswith("interval "):
            ok = {True: "ok", False: "FAIL", None: "—"}[c.get("ok")]
            lines.append(f"  {c.get('name')}: {ok}: {c.get('reason')}")
    return lines


def _switch(args: argparse.Namespace) -> int:
    from greenlight.flows.traffic_switch import switch

    if args.dry_run:
        from greenlight.core.switch import decide_switch
        from greenlight.tasks.cluster import cluster
        from greenlight.tasks.kube import colour_endpoints, live_snapshot
        from greenlight.tasks.routers import router_for

        profile = load_profile(args.env)
        apps = [profile.app(args.app)] if args.app else profile.apps
        router = router_for(profile)
        with cluster(profile) as kube:
            for a in apps:
                snap = live_snapshot(kube, profile, a)
                mode = router.mode(profile, snap)
                step = decide_switch(
                    snap, args.colour, colour_endpoints(kube, profile, a, args.colour), "dry-run", {}, mode
                )
                print(f"dry run: {a.name} ({mode} switch): {step.action}: {step.reason} (nothing changed)")
        return 0
    result = switch(args.env, args.colour, app=args.app, actor=getpass.getuser())
    for app, o in result["apps"].items():
        print(f"{app}: {o['action']}: {o['reason']}")
    return 0


def _answer(args: argparse.Namespace, approve: bool) -> int:
    """Resume the paused run with a typed (so unverified) answer, then say what the run made of it:
    the run judges every answer itself and writes its judgement beside its inputs."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import resume_flow_run
    from prefect.input import read_flow_run_input

    from greenlight.errors import AnswerRefused
    from greenlight.tasks.approval import ANSWER_KEY

    try:
        run_id = UUID(args.run_id)
    except ValueError as e:
        raise InputInvalid(f"'{args.run_id}' is not a flow run id") from e
    if not args.approver.strip():
        raise InputInvalid("--approver must name a person")
    verb = "approve" if approve else "reject"
    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(run_id)
        except ObjectNotFound as e:
            raise NotFound(f"no flow run {run_id} in the Prefect API: nothing to {verb}") from e
    if run.state is None or not run.state.is_paused():
        raise InputInvalid(
            f"flow run {run_id} is not waiting for approval (state: {run.state.name if run.state else 'unknown'})"
        )
    pause = run.state.state_details.pause_key
    resume_flow_run(run_id, run_input={"approve": approve, "approver": args.approver, "reason": args.reason})
    print(
        f"answered flow run {run_id}: {verb} as {args.approver} (typed, unverified): {args.reason or '(no reason)'}"
    )
    deadline = time.monotonic() + args.wait_s
    judged: dict[str, Any] | None = None
    with progress(f"waiting up to {args.wait_s:g} s for run {run_id} to judge the answer"):
        while pause and judged is None and time.monotonic() < deadline:
            judged = read_flow_run_input(ANSWER_KEY.format(pause=pause), flow_run_id=run_id)  # type: ignore[assignment]  # sync context
            if judged is None:
                time.sleep(0.5)
    if judged is None:
        print(f"the run has not judged the answer within {args.wait_s:g} s; see its log for the decision")
        return 0
    print(f"the run judged it: {judged['text']}")
    if not judged["final"]:
        raise AnswerRefused(f"answer refused, the run still waits: {judged['text']}")
    return 0


def _approve(args: argparse.Namespace) -> int:
    return _answer(args, True)


def _reject(args: argparse.Namespace) -> int:
    return _answer(args, False)


def _approval_key(args: argparse.Namespace) -> int:
    """A new Ed25519 key pair for the Slack receiver: the private half only to a new file."""
    import os
    from pathlib import Path

    from greenlight.core.approval import new_signing_key

    private, public = new_signing_key()
    path = Path(args.out)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise InputInvalid(f"{path} exists: a key is never overwritten (choose another --out)") from e
    except OSError as e:
        raise InputInvalid(f"cannot create {path}: {e.strerror}") from e
    with os.fdopen(fd, "w") as f:
        f.write(private + "\n")
    print(f"private key written to {path} (mode 0600): give it to the receiver only, as")
    print(f"  GREENLIGHT_APPROVAL_SIGNING_KEY_FILE={path} (or a Kubernetes Secret mounted there)")
    print(f"public key: {public}")
    print("  add it to each production profile: release.approval.receiver_keys: [" + public + "]")
    print("  and to each profile with a github section: github.receiver_keys: [" + public + "]")
    print("  (the receiver signs the commit times it verified with it: only those count in the lead time)")
    return 0


def _cleanup(args: argparse.Namespace) -> int:
    from greenlight.flows.maintenance import cleanup

    result = cleanup(args.env, dry_run=args.dry_run, now=args.now)
    if result.get("skipped"):
        print(f"skipped: {result['skipped']}")
        return 0
    for line in result["scaled_down"] or [
        "nothing idle" + ("" if args.now else " past the scale-down delay")
    ]:
        print(("dry run: " if args.dry_run else "") + line)
    print(f"kept: {', '.join(result['kept']) or 'none'}")
    return 0


def _setup(args: argparse.Namespace) -> int:
    from greenlight.commands.setup import ensure_setup

    for line in ensure_setup(args.envs or None, dry_run=args.dry_run):
        print(line)
    return 0


def _status(args: argparse.Namespace) -> int:
    from greenlight.tasks.kube import read_live

    profile = load_profile(args.env)
    live = read_live.fn(profile)
    apps = []
    for s in live.values():
        live_dep = s["colours"].get(s["live_colour"] or "", {})
        apps.append({**s, "replicas_ready": f"{live_dep.get('ready', 0)}/{live_dep.get('replicas', 0)}"})
    if args.json:
        print_json({"environment": args.env, "namespace": profile.namespace, "apps": apps, "at": time.time()})
        return 0
    print(f"{args.env} ({profile.namespace})")
    for a in apps:
        print(
            f"  {a['name']}: live {a['live_colour']} (previous {a['previous_colour'] or '-'}), release {a['release_id'] or '-'}, ready {a['replicas_ready']}"
        )
        print(f"    image {a['image_repository']}")
        for colour, d in sorted(a["colours"].items()):
            print(f"    {colour}: {d['digest'] or '(not pinned)'} replicas {d['ready']}/{d['replicas']}")
    return 0


#: each command's handler, one per name of COMMANDS (tests/unit/test_cli_dispatch.py holds them equal)
HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "deploy": _deploy,
    "promote": _promote,
    "rollback": _rollback,
    "monitor": _monitor,
    "smoke": _smoke,
    "gate": _gate,
    "switch": _switch,
    "approve": _approve,
    "reject": _reject,
    "approval-key": _approval_key,
    "cleanup": _cleanup,
    "setup": _setup,
    "status": _status,
}
