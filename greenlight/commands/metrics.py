"""The ``metrics ENV [--days N] [--json] [--publish]`` command: the DORA figures of an environment.

Prints each figure (deployment frequency, lead time median and p90, change failure rate, time to
restore) with the values behind it: the window, the counts, every deployment counted (its switch,
commit time, lead time, whether and how it failed, when traffic was restored) and the records
skipped (untrusted: their signature does not verify). A figure nothing measures says "no data"
(``null`` in ``--json``). ``--publish`` also writes the figures to Cloud Monitoring, as the daily
``deployment-metrics`` flow does. Exit 2 for a bad ``--days`` or an unknown environment (as every
command: greenlight.errors), 5 without the release record key.
"""

from __future__ import annotations

import argparse

from greenlight.commands import JSON_HELP, failed, print_json, stdout_for_json
from greenlight.errors import GreenlightError

COMMANDS = {"metrics"}
DEFAULT_DAYS = 30


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``metrics`` subcommand."""
    p = sub.add_parser(
        "metrics",
        help="DORA figures of an environment from its release records: deployment frequency, "
        "lead time, change failure rate, time to restore",
    )
    p.add_argument(
        "env", metavar="ENV", help="the environment whose releases to measure (one of the profiles)"
    )
    p.add_argument(
        "--days",
        type=int,
        default=DEFAULT_DAYS,
        help=f"the window: the last N days, ending now (1 to 366; default {DEFAULT_DAYS})",
    )
    p.add_argument("--json", action="store_true", help=JSON_HELP)
    p.add_argument(
        "--publish",
        action="store_true",
        help="also write the figures to Cloud Monitoring (<custom_prefix>/dora/..., labels environment and window_days)",
    )
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compute (and with ``--publish`` publish) the figures of ``args.env``; print them."""
    as_json = bool(getattr(args, "json", False))
    try:
        from greenlight.core.dora import check_days, report_dict, report_lines
        from greenlight.settings import load_profile
        from greenlight.tasks.dora import dora_prefix, dora_report, publish_figures

        days = check_days(args.days)
        profile = load_profile(args.env)
        with stdout_for_json(as_json):
            report = dora_report(profile, days)
            published = publish_figures(profile, report) if args.publish else None
    except GreenlightError as e:
        return failed(e)
    if as_json:
        doc = report_dict(report)
        if published is not None:
            doc["published"] = published
        print_json(doc)
        return 0
    for line in report_lines(report):
        print(line)
    if published is not None:
        if published:
            for metric, value in published.items():
                print(f"published {metric} = {value:.6g}")
        else:
            print(f"published nothing under {dora_prefix(profile)}/: no figure has data")
    print(
        f"OK: {report.deployment_count} deployment(s) of {report.environment} in {report.days} day(s), "
        f"{len(report.failed)} failed"
    )
    return 0
