"""The ``failover ENV`` and ``failback ENV`` commands: move the environment's DNS record to DR, or back.

``failover`` points the profile's ``dns.record`` at ``dns.dr_target``, ``failback`` at
``dns.primary_target``, after an approval as verified as a production promotion's (Approve in
Slack by an approver who is not the requester); the record is read back through the provider's
API. ``--dry-run`` prints the plan (record, current content, new content, TTL) and changes
nothing. A record that already points at the target changes nothing and exits 0; one that points
at neither target is refused (exit 6) unless ``--force``. The flow is imported when the command
runs, so ``greenlight --help`` stays fast.
"""

from __future__ import annotations

import argparse
import getpass

from greenlight.commands.progress import progress

COMMANDS = {"failover", "failback"}


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``failover`` and ``failback`` subcommands."""
    for name, what in (
        ("failover", "point the environment's DNS record at the DR target (after a verified approval)"),
        (
            "failback",
            "point the environment's DNS record back at the primary target (after a verified approval)",
        ),
    ):
        p = sub.add_parser(name, help=what, description=what)
        p.add_argument("env", help="the environment whose DNS record moves (its profile has a 'dns' section)")
        p.add_argument(
            "--dry-run", action="store_true", help="print the plan (record, contents, TTL), change nothing"
        )
        p.add_argument(
            "--force", action="store_true", help="change the record even when it points at neither target"
        )
        p.add_argument(
            "--requester", help="who asks (default: the login name); the requester cannot approve it"
        )
        p.add_argument("--reason", default="", help="why, on the record")


def run(args: argparse.Namespace) -> int:
    from greenlight.flows.dns_failover import FailoverRequest, dns_failover, read_plan

    request = FailoverRequest(
        environment=args.env,
        direction=args.command,
        requester=args.requester or getpass.getuser(),
        reason=args.reason,
        dry_run=args.dry_run,
        force=args.force,
    )
    if args.dry_run:
        plan = read_plan(request)
        for line in plan.lines():
            print(line)
        if plan.action == "refuse":
            from greenlight.flows.dns_failover import refusal

            raise refusal(plan)
        print("DRY RUN: nothing changed")
        return 0
    with progress(f"{args.command} {args.env}"):
        result = dns_failover(request)
    for key in (
        "failover_id",
        "direction",
        "record",
        "type",
        "outcome",
        "from",
        "to",
        "ttl",
        "reason",
        "approver",
    ):
        if key in result:
            print(f"{key}: {result[key]}")
    return 0
