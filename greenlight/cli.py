"""greenlight: blue-green releases, health gates, rollbacks, backup verification and DR drills.

Each command prints its outcome and the values behind it on stdout (--json where a command
reports: status, gate, smoke, verify-backups, drill, doctor, metrics) and exits 0 on success; on failure it says
'FAILED: <reason>' on stderr and exits with the code of the kind of failure (see
greenlight.errors): 1 other, 2 bad input, 3 not found, 4 transient (retry), 5 forbidden,
6 conflict, 7 release refused, 8 gate or drill failed, 9 backup not verified, 10 approval answer
not counted, 130 interrupted. Long operations show their progress on stderr."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from importlib import metadata
from types import ModuleType

from greenlight.commands import adopt as adopt_commands
from greenlight.commands import backups as backup_commands
from greenlight.commands import cleanup as cleanup_commands
from greenlight.commands import deployments as deployment_commands
from greenlight.commands import diagnose as diagnose_commands
from greenlight.commands import doctor as doctor_commands
from greenlight.commands import drill as drill_commands
from greenlight.commands import failed
from greenlight.commands import failover as failover_commands
from greenlight.commands import metrics as metrics_commands
from greenlight.commands import monitoring as monitoring_commands
from greenlight.commands import release as release_commands
from greenlight.commands import restore as restore_commands
from greenlight.commands import webhook as webhook_commands
from greenlight.errors import INTERRUPTED, GreenlightError, InputInvalid, ProfileInvalid
from greenlight.settings import available_environments, environments_dir, load_profile


def _profile_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("profile", help="environment profiles: validate, show, reference")
    cmds = p.add_subparsers(dest="profile_command", required=True)
    v = cmds.add_parser("validate", help="validate profiles (all when none named); exit 2 if one is invalid")
    v.add_argument("envs", nargs="*", metavar="ENV", help="environments to validate (default: every profile)")
    s = cmds.add_parser("show", help="print a validated profile with every default filled in, as JSON")
    s.add_argument("env", help="the environment (a profile's file name without .yaml)")
    cmds.add_parser(
        "reference", help="print every profile field (path, type, default, limits, description) as Markdown"
    )


def _run_profile(args: argparse.Namespace) -> int:
    if args.profile_command == "show":
        print(load_profile(args.env).model_dump_json(indent=2))
        return 0
    if args.profile_command == "reference":
        from greenlight.commands.reference import profile_reference

        print(profile_reference(), end="")
        return 0
    names = args.envs or available_environments()
    if not names:
        raise InputInvalid(
            f"no profiles in {environments_dir()} (set GREENLIGHT_CONFIG to the directory holding "
            "environments/ and manifests/, or run from one that has deployments/)"
        )
    failed = 0
    for name in names:
        try:
            prof = load_profile(name)
            apps = ", ".join(a.name for a in prof.apps)
            print(
                f"ok      {name}: namespace {prof.namespace}, apps {apps}, cluster {prof.cluster.context or 'in-cluster'}"
            )
        except GreenlightError as e:
            failed += 1
            print(f"INVALID {name}:\n  " + str(e).replace("\n", "\n  "))
    print(f"{len(names) - failed}/{len(names)} profiles valid in {environments_dir()}")
    if failed:
        raise ProfileInvalid(f"{failed} of {len(names)} profiles invalid (see above)")
    return 0


PLUGIN_GROUP = "greenlight.plugins"
#: the product's command groups: each has register(sub), run(args) and COMMANDS
GROUPS: tuple[ModuleType, ...] = (
    release_commands, backup_commands, drill_commands, deployment_commands, webhook_commands,
    doctor_commands, adopt_commands, cleanup_commands, metrics_commands, diagnose_commands,
    restore_commands,
    monitoring_commands,
    failover_commands,
)  # fmt: skip


def version() -> str:
    try:
        return metadata.version("greenlight")
    except metadata.PackageNotFoundError:  # run from a tree that was never installed
        return "unknown"


def plugins() -> dict[str, ModuleType]:
    """Command groups other distributions mount (entry point group ``greenlight.plugins``: a module
    with ``register(sub)`` and ``run(args)``). The lab is one: installed in a checkout, never in the
    product's wheel or image."""
    found = {}
    for ep in metadata.entry_points(group=PLUGIN_GROUP):
        found[ep.name] = ep.load()
    return found


def build_parser(mounted: dict[str, ModuleType] | None = None) -> argparse.ArgumentParser:
    from greenlight.commands.reference import exit_codes_text

    parser = argparse.ArgumentParser(
        prog="greenlight",
        description=__doc__,
        epilog=exit_codes_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"greenlight {version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _profile_commands(sub)
    for group in GROUPS:
        group.register(sub)
    # The product's help names the product's commands only; a plugin's commands still parse.
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    product = set(sub.choices)
    for plugin in (plugins() if mounted is None else mounted).values():
        plugin.register(sub)
    sub._choices_actions = [a for a in sub._choices_actions if a.dest in product]
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `greenlight ... | head` ends quietly
    mounted = plugins()
    parser = build_parser(mounted)
    args = parser.parse_args(argv)
    try:
        if args.command == "profile":
            return _run_profile(args)
        for group in GROUPS:
            if args.command in group.COMMANDS:
                return int(group.run(args))
        if args.command in mounted:
            return int(mounted[args.command].run(args))
    except GreenlightError as e:
        return failed(e)
    except KeyboardInterrupt:
        return failed("interrupted", INTERRUPTED)
    except Exception as e:  # the lab's own errors and anything unexpected: say what, exit non-zero
        return failed(f"{type(e).__name__}: {e}", 1)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())
