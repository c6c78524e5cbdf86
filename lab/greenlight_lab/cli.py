"""``greenlight lab ...``: the lab's commands (mounted by greenlight.cli).

``greenlight lab slack`` lists the messages the Slack stand-in received; ``greenlight lab slack
click --user U... --action approve|reject [--reason TEXT] [--run RUN_ID] [--age-s S]`` plays a
person clicking the approval button in Slack (the daemon's ``POST /slack/click``): it prints what
was clicked and the receiver's answer, and exits 0 when the receiver answered 2xx, 2 on bad input,
3 when there is no pending approval message (for that run), 4 when the receiver answered non-2xx,
could not be reached or did not answer within Slack's 3 s, 1 on any other failure (e.g. no Request
URL configured). Failures say ``FAILED: <reason>`` on stderr, as every greenlight command does.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from greenlight_lab import supervisor
from greenlight_lab.state import lab_dir


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lab = sub.add_parser(
        "lab", help="the local stand-ins: up, down, status, env, url, image, slack, load, fault"
    )
    lab.add_argument("--dir", help="lab directory (default $GREENLIGHT_LAB_DIR or ./.lab)")
    cmds = lab.add_subparsers(dest="lab_command", required=True)
    lab_up = cmds.add_parser("up", help="start the lab in the background; returns when it is ready")
    lab_up.add_argument(
        "--data-plane",
        choices=supervisor.DATA_PLANES,
        help="the Services' default data plane (env GREENLIGHT_LAB_DATA_PLANE, lab.yaml data_plane; "
        "default kube-proxy); a Service's annotations may choose another",
    )
    lab_up.add_argument(
        "--endpoint-delay-s",
        type=float,
        help="kube-proxy's endpoint propagation delay, jitter a third of it "
        "(env GREENLIGHT_LAB_ENDPOINT_DELAY_S, lab.yaml endpoint_delay_s; default 1.5)",
    )
    lab_up.add_argument(
        "--gateway-program-s",
        type=float,
        help="how long the Gateway controller takes to program an HTTPRoute or Gateway change, "
        "jitter a third of it (env GREENLIGHT_LAB_GATEWAY_PROGRAM_S, lab.yaml gateway_program_s; "
        "default 2.0)",
    )
    lab_up.add_argument(
        "--scrape-interval-s",
        type=float,
        help="Monitoring's scrape interval: one point per series every S seconds "
        "(env GREENLIGHT_LAB_SCRAPE_INTERVAL_S, lab.yaml scrape_interval_s; default 1.0)",
    )
    lab_up.add_argument(
        "--ingestion-delay-s",
        type=float,
        help="how long after its scrape a Monitoring point becomes readable; keep it below the "
        "profiles' monitoring.ingestion_delay_s (env GREENLIGHT_LAB_INGESTION_DELAY_S, lab.yaml "
        "ingestion_delay_s; default 1.0)",
    )
    lab_up.add_argument(
        "--prefect-db",
        choices=supervisor.PREFECT_DBS,
        help="where the Prefect server keeps its database: sqlite in the lab directory, or postgres "
        "(a database of its own on the lab's PostgreSQL, as a server shared by several workers "
        "runs) (env GREENLIGHT_LAB_PREFECT_DB, lab.yaml prefect_db; default sqlite)",
    )
    lab_up.add_argument(
        "--workers",
        type=_count,
        default=0,
        help="start N Prefect process workers (worker-1 ...) on the pool greenlight-local, running "
        "the deployments of this checkout's prefect.yaml; stopped by `lab down` (default 0)",
    )
    lab_up.add_argument(
        "--worker-limit",
        type=_count,
        help="at most N flow runs at once on each worker (prefect worker start --limit; default none)",
    )
    cmds.add_parser("down", help="stop everything the lab started")
    st = cmds.add_parser("status", help="processes, ports and objects")
    st.add_argument("--json", action="store_true", help="print the status as JSON")
    cmds.add_parser("env", help='print export lines: eval "$(greenlight lab env)"')
    url = cmds.add_parser("url", help="the local URL of a Service's proxy")
    url.add_argument("service", help="NAMESPACE/SERVICE (primary cluster) or CONTEXT/NAMESPACE/SERVICE")
    img = cmds.add_parser("image", help="the image catalogue").add_subparsers(
        dest="image_command", required=True
    )
    push = img.add_parser("push", help="add an image with a behaviour")
    push.add_argument("ref", help="REPO:TAG, e.g. ghcr.io/sma-platform/backend:abc123")
    push.add_argument("--version", dest="image_version", help="what '/' answers (default: the tag)")
    push.add_argument(
        "--error-rate", type=float, default=0.0, help="share of requests answered 500 (0 to 1; default 0)"
    )
    push.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer (default 0)")
    push.add_argument(
        "--latency-sigma",
        type=float,
        default=0.0,
        help="> 0: lognormal latency, median --latency-ms, this shape (0.5: p95 about 2.3 x the median)",
    )
    push.add_argument(
        "--startup-s", type=float, default=0.0, help="how long a pod takes to become ready (default 0)"
    )
    push.add_argument("--crash", action="store_true", help="pods of this image crash at start (never ready)")
    signing = push.add_mutually_exclusive_group()
    signing.add_argument(
        "--unsigned", action="store_true", help="do not sign it (drops an earlier signature of the digest)"
    )
    signing.add_argument(
        "--signed-by",
        choices=["lab", "other", "cosign3"],
        default="lab",
        help="the lab key that signs it (default lab, the key the lab's production profile names; "
        "other: a key no profile names; cosign3: cosign 3's default bundle format under the referrers "
        "tag, which Greenlight refuses naming how to sign instead)",
    )
    push.add_argument(
        "--degrade-after-s",
        type=float,
        default=0.0,
        help="after this long a pod's error rate becomes --degraded-error-rate",
    )
    push.add_argument(
        "--degraded-error-rate", type=float, default=0.0, help="the error rate after --degrade-after-s"
    )
    push.add_argument(
        "--shutdown",
        choices=["graceful", "abrupt"],
        default="abrupt",
        help="on SIGTERM: drain in-flight requests (graceful) or exit at once (abrupt, the default)",
    )
    push.add_argument(
        "--platforms",
        help="push a multi-platform image: an OCI index over one manifest per platform, e.g. "
        "linux/amd64,linux/arm64 (default: one single-platform manifest)",
    )
    img.add_parser("list", help="the pushed images")
    slack = cmds.add_parser(
        "slack", help="the messages the Slack stand-in received; `slack click`: click an approval button"
    )
    slack_cmds = slack.add_subparsers(dest="slack_command")
    click = slack_cmds.add_parser(
        "click",
        help="click Approve or Reject on the newest pending approval message (of --run) as a Slack user: "
        "Slack's signed block_actions interaction goes to the Request URL",
    )
    click.add_argument("--user", required=True, help="the clicking Slack user ID, e.g. U0LABALICE")
    click.add_argument("--action", required=True, choices=["approve", "reject"], help="which button")
    click.add_argument("--reason", default="", help="typed in the message's reason input")
    click.add_argument("--run", help="the flow run ID whose approval message to click (default: the newest)")
    click.add_argument(
        "--age-s",
        type=float,
        default=0.0,
        help="sign the request as if sent S seconds ago (over 300: a stale request Slack's verifier refuses)",
    )
    load = cmds.add_parser("load", help="load generator: sent, succeeded, failed, latency percentiles")
    load.add_argument("url", help="the URL to send GET requests to (greenlight lab url NS/SERVICE)")
    load.add_argument("--rps", type=float, default=100, help="requests per second (default 100)")
    load.add_argument("--seconds", type=float, default=10, help="how long (default 10)")
    load.add_argument(
        "--connections",
        type=int,
        default=8,
        help="keep-alive connections in the pool (extras open when all are busy)",
    )
    load.add_argument(
        "--host", help="the Host header to send instead of the URL's (a lab Gateway routes by it)"
    )
    load.add_argument("--json", action="store_true", help="print the report as JSON")
    fault = cmds.add_parser("fault", help="inject faults").add_subparsers(dest="fault_command", required=True)
    add = fault.add_parser("add", help="fail or stall the next N matching calls")
    add.add_argument(
        "target",
        choices=[
            "kube-primary",
            "kube-dr",
            "gcs",
            "monitoring",
            "slack",
            "registry",
            "packages",
            "pagerduty",
            "smtp",
            "cloudflare",
        ],
        help="the stand-in whose calls to fail",
    )
    add.add_argument(
        "--verb", help="only this verb: a Kubernetes verb, a lower-case HTTP method or an RPC name"
    )
    add.add_argument(
        "--resource",
        help="only this resource: a plural Kubernetes resource (deployments), a Slack API method (chat.postMessage), free-form otherwise",
    )
    add.add_argument(
        "--mode", choices=["error", "stall"], default="error", help="answer --status, or stall --stall-s"
    )
    add.add_argument("--status", type=int, default=503, help="the status an error answers (default 503)")
    add.add_argument(
        "--stall-s", type=float, default=30.0, help="how long a stall holds the call (default 30)"
    )
    add.add_argument("--count", type=int, default=1, help="-1: until cleared")
    add.add_argument("--retry-after", type=float, help="send Retry-After: S with the error")
    add.add_argument("--skip", type=int, default=0, help="matching calls to let through first")
    clear = fault.add_parser("clear", help="remove fault rules")
    clear.add_argument("target", nargs="?", help="only this target's rules (default: all)")
    fault.add_parser("list", help="the fault rules in force")


def _count(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number >= 0")
    return value


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def run(args: argparse.Namespace) -> int:
    directory = lab_dir(args.dir)
    cmd = args.lab_command
    if cmd == "up":
        state = supervisor.up(
            directory,
            data_plane=args.data_plane,
            endpoint_delay_s=args.endpoint_delay_s,
            scrape_interval_s=args.scrape_interval_s,
            ingestion_delay_s=args.ingestion_delay_s,
            prefect_db=args.prefect_db,
            workers=args.workers,
            worker_limit=args.worker_limit or None,
            gateway_program_s=args.gateway_program_s,
        )
        print(f"data plane:    {supervisor.describe_data_plane(state)}")
        if state.gateway_program_s is not None:
            print(
                f"gateways:      programmed {state.gateway_program_s:g} s after a change (GET /gateways: URLs)"
            )
        print(f"monitoring:    {supervisor.describe_monitoring(state)}")
        print(f"kube contexts: lab-primary, lab-dr  (KUBECONFIG={state.env['KUBECONFIG']})")
        print(f"Prefect UI:    {state.env['PREFECT_API_URL'].removesuffix('/api')}")
        print(f"Prefect:       {supervisor.describe_prefect(state)}")
        print(f"timings (s from start): {json.dumps(state.timings)}")
        print(
            f'next: eval "$(greenlight lab{" --dir " + shlex.quote(str(directory)) if args.dir else ""} env)"'
        )
        return 0
    if cmd == "down":
        supervisor.down(directory)
        return 0
    if cmd == "status":
        info = supervisor.status(directory)
        if args.json:
            _print_json(info)
        else:
            print(f"lab in {info['dir']}: {'running' if info['running'] else 'not running'}")
            if info.get("data_plane_text"):
                print(f"  data plane {info['data_plane_text']}")
            if info.get("monitoring_text"):
                print(f"  monitoring {info['monitoring_text']}")
            if info.get("prefect_text"):
                print(f"  Prefect on {info['prefect_text']}")
            for name, p in (info.get("processes") or {}).items():
                print(f"  {name:<9} pid {p['pid']:<8} {'alive' if p['alive'] else 'DEAD'}")
            for name, port in sorted((info.get("ports") or {}).items()):
                print(f"  port {name:<13} {port}")
        return 0 if info["running"] else 1
    if cmd == "env":
        state = supervisor.require_running(directory)
        for k, v in sorted(state.env.items()):
            print(f"export {k}={shlex.quote(v)}")
        return 0
    state = supervisor.require_running(directory)
    if cmd == "url":
        parts = args.service.split("/")
        if len(parts) == 2:
            parts = ["lab-primary", *parts]
        if len(parts) != 3 or not all(parts):
            print(
                f"FAILED: '{args.service}' is not NAMESPACE/SERVICE or CONTEXT/NAMESPACE/SERVICE",
                file=sys.stderr,
            )
            return 2
        urls = supervisor.control(state, "GET", "/urls")
        key = "/".join(parts)
        if key not in urls:
            print(
                f"FAILED: no Service {key} in the lab (known: {', '.join(sorted(urls)) or 'none'})",
                file=sys.stderr,
            )
            return 3
        print(urls[key])
        return 0
    if cmd == "image":
        if args.image_command == "push":
            body = {
                "ref": args.ref,
                "version": args.image_version or args.ref.rsplit(":", 1)[-1],
                "error_rate": args.error_rate,
                "latency_ms": args.latency_ms,
                "latency_sigma": args.latency_sigma,
                "startup_s": args.startup_s,
                "crash": args.crash,
                "degrade_after_s": args.degrade_after_s,
                "degraded_error_rate": args.degraded_error_rate,
                "shutdown": args.shutdown,
                "signed_by": None if args.unsigned else args.signed_by,
            }
            if args.platforms:
                body["platforms"] = [p.strip() for p in args.platforms.split(",") if p.strip()]
            out = supervisor.control(state, "POST", "/images", body)
            print(f"pushed {out['ref']} -> {out['digest']}")
            signer = out.get("signature")
            tag = "sha256-" + str(out["digest"]).split(":", 1)[-1] + ".sig"
            print(f"signature: {f'signed by the {signer} key ({tag})' if signer else 'none (unsigned)'}")
            if out.get("platforms"):
                print(f"platforms: {', '.join(out['platforms'])} (an OCI image index over one manifest each)")
            print(f"behaviour: {json.dumps(out['behaviour'], sort_keys=True)}")
            return 0
        for image in supervisor.control(state, "GET", "/images"):
            print(json.dumps(image, sort_keys=True))
        return 0
    if cmd == "slack" and args.slack_command == "click":
        return _slack_click(state, args)
    if cmd == "slack":
        msgs = supervisor.control(state, "GET", "/slack")
        for m in msgs:
            thread = f" (thread {m['thread_ts']})" if m.get("thread_ts") else ""
            print(f"[{m.get('channel')}] {m.get('ts')}{thread} {m.get('kind')}: {m.get('text')}")
        print(f"{len(msgs)} message(s)")
        return 0
    if cmd == "load":
        from greenlight_lab.load import main_load

        return main_load(
            args.url, args.rps, args.seconds, args.json, connections=args.connections, host=args.host
        )
    if cmd == "fault":
        if args.fault_command == "add":
            body = {
                "target": args.target, "verb": args.verb, "resource": args.resource, "mode": args.mode,
                "status": args.status, "stall_s": args.stall_s, "count": args.count, "retry_after": args.retry_after, "skip": args.skip,
            }  # fmt: skip
            _print_json(supervisor.control(state, "POST", "/faults", body))
            return 0
        if args.fault_command == "clear":
            q = f"?target={args.target}" if args.target else ""
            print(f"cleared {supervisor.control(state, 'DELETE', '/faults' + q)['cleared']} rule(s)")
            return 0
        _print_json(supervisor.control(state, "GET", "/faults"))
        return 0
    raise AssertionError(cmd)


# exit codes of `greenlight lab slack click` (0 ok, 1 other failures as every command, 2 bad input)
EXIT_BAD_INPUT = 2
EXIT_NO_APPROVAL = 3
EXIT_RECEIVER = 4
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{8,}$")


def _slack_click(state: Any, args: argparse.Namespace) -> int:
    if not _SLACK_USER.match(args.user):
        print(f"FAILED: --user {args.user!r} is not a Slack user ID (like U0LABALICE)", file=sys.stderr)
        return EXIT_BAD_INPUT
    body = {
        "user": args.user,
        "action": args.action,
        "reason": args.reason,
        "run": args.run,
        "age_s": args.age_s,
    }
    status, out = _control_status(state, "/slack/click", body)
    if status != 200:
        error = out.get("error") if isinstance(out, dict) else out
        print(f"FAILED: {error}", file=sys.stderr)
        if status == 404:
            return EXIT_NO_APPROVAL
        return EXIT_BAD_INPUT if status == 400 else 1
    run = out.get("run") or "(none named)"
    where = f"(message {out.get('message_ts')} in #{out.get('channel_name') or out.get('channel')})"
    clicked = f"clicked {args.action} as {args.user} on the approval of run {run} {where}"
    answer = json.dumps(out.get("answer"), sort_keys=True)
    if out.get("timed_out"):
        print(f"{clicked}: the receiver did not answer within {out.get('elapsed_s')} s")
        print(f"FAILED: the receiver timed out: {out.get('error')}", file=sys.stderr)
        return EXIT_RECEIVER
    if out.get("status") is None:
        print(f"{clicked}: the receiver could not be reached")
        print(
            f"FAILED: the receiver at {out['request']['url']} could not be reached: {out.get('error')}",
            file=sys.stderr,
        )
        return EXIT_RECEIVER
    print(f"{clicked}: receiver answered {out['status']} in {out.get('elapsed_s'):.2f} s")
    print(f"answer: {answer}")
    if not 200 <= int(out["status"]) < 300:
        print(f"FAILED: the receiver answered HTTP {out['status']}: {answer}", file=sys.stderr)
        return EXIT_RECEIVER
    return 0


def _control_status(state: Any, path: str, body: Any) -> tuple[int, Any]:
    """POST to the daemon's control API: (HTTP status, parsed answer), error statuses included."""
    req = urllib.request.Request(
        state.env["GREENLIGHT_LAB_CONTROL"] + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"null")
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def main_path(args: argparse.Namespace) -> Path:
    return lab_dir(args.dir)
