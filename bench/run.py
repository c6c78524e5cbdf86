"""``make bench``: start a lab of its own, measure the six figures, print them, write them as JSON
and markdown under bench/results/, stop the lab.

The machines are noisy: every figure is a ratio or a difference measured within this one run,
medians over repeats, next to the machine's core count.

    uv run python -m bench.run [--big] [--repeats N] [--gate-runs N] [--results DIR]
        [--only switch,rollback,overhead,scale,backups,gate]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FIGURES = ("switch", "rollback", "overhead", "scale", "backups", "gate")


def echo(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--big", action="store_true", help="also a 1 GB dump (make bench BIG=1)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of each timed run (median reported)")
    parser.add_argument("--only", default=",".join(FIGURES), help="comma-separated figures to run")
    parser.add_argument("--gate-runs", type=int, default=8, help="figure 6: gates of each kind of candidate")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="where latest.md/json go (default bench/results)"
    )
    args = parser.parse_args(argv)
    if args.gate_runs < 1:
        parser.error("--gate-runs must be at least 1")
    only = [f.strip() for f in args.only.split(",") if f.strip()]
    unknown = sorted(set(only) - set(FIGURES))
    if unknown:
        print(f"FAILED: unknown figure(s) {unknown}; known: {', '.join(FIGURES)}", file=sys.stderr)
        return 2

    from greenlight_lab import supervisor

    t_start = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="greenlight-bench-"))
    lab_dir = work / "lab"
    envs = work / "environments"
    envs.mkdir(parents=True)
    results: dict[str, Any] = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "repeats": args.repeats,
        "gate_runs": args.gate_runs,
        "figures": {},
        "figure_seconds": {},
    }
    failed: list[str] = []
    echo(f"bench: {os.cpu_count()} cores; starting a lab in {lab_dir}")
    state = supervisor.up(lab_dir, echo=lambda line: echo(f"  lab: {line}"))
    try:
        os.environ.update(state.env)
        os.environ["GREENLIGHT_ENVIRONMENTS"] = str(envs)
        import prefect.context

        prefect.context.refresh_global_settings_context()
        from bench import releases

        echo("preparing the bench environments")
        releases.prepare(state, envs, echo, tuple(only))
        from bench import switching

        steps: dict[str, Callable[[], Any]] = {
            "switch": lambda: switching.figure(state, echo),
            "rollback": lambda: releases.rollback_on_breach(state, echo, args.repeats),
            "overhead": lambda: releases.release_overhead(state, echo, args.repeats),
            "scale": lambda: releases.scale(state, echo, max(1, args.repeats - 1)),
            "backups": lambda: _backups(state, work, args, echo),
            "gate": lambda: _gate(state, args, echo),
        }
        for name in only:
            echo(f"figure {name}")
            t0 = time.monotonic()
            try:
                results["figures"][name] = steps[name]()
            except Exception as e:  # one figure failing must not hide the others
                failed.append(name)
                results["figures"][name] = {"error": f"{type(e).__name__}: {e}"}
                echo(f"  FAILED: {type(e).__name__}: {e}")
            results["figure_seconds"][name] = round(time.monotonic() - t0, 1)
    finally:
        _drain_prefect()
        supervisor.down(lab_dir, echo=lambda _: None)
        shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - t_start, 1)
    table = render(results)
    print(table)
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "latest.md").write_text(table + "\n")
    echo(f"wrote {out / 'latest.json'} and {out / 'latest.md'}")
    if failed:
        print(f"FAILED: figure(s) {', '.join(failed)} did not complete (see above)", file=sys.stderr)
        return 1
    return 0


def _backups(state: Any, work: Path, args: argparse.Namespace, echo: Callable[[str], None]) -> Any:
    from bench import backups

    sizes = [10, 200] + ([1024] if args.big else [])
    return backups.run(state, sizes, args.repeats, work / "backups", echo)


def _gate(state: Any, args: argparse.Namespace, echo: Callable[[str], None]) -> Any:
    from bench import gate

    return gate.figure(state, echo, args.gate_runs)


def _drain_prefect() -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=10, at_exit=False)
        except RuntimeError:
            pass


def _goal(ok: bool | None) -> str:
    return {True: "met", False: "MISSED", None: "-"}[ok]


def render(results: dict[str, Any]) -> str:
    """The markdown table of every figure with its goal."""
    f = results["figures"]
    m = results["machine"]
    rows: list[tuple[str, str, str, str]] = []

    def add(figure: str, value: str, goal: str, ok: bool | None) -> None:
        rows.append((figure, value, goal, _goal(ok)))

    def err(name: str) -> bool:
        if "error" in f.get(name, {}):
            add(name, f"error: {f[name]['error']}", "-", False)
            return True
        return name not in f

    if not err("switch"):
        rows += _figure1_rows(f["switch"])
    if not err("rollback"):
        r = f["rollback"]
        beyond = r["onset_to_selector_restored_s"] - r["ingestion_delay_s"]
        last = r.get("onset_to_last_failure_s")
        add(
            "2. breach onset -> selector restored",
            f"{r['onset_to_selector_restored_s']:.2f} s = {r['onset_to_selector_restored_intervals']:.2f} intervals "
            f"of {r['interval_s']:g} s, of which {r['ingestion_delay_s']:g} s is the profile's ingestion delay "
            f"(the wait before a window's points are read, as Cloud Monitoring needs): "
            f"{beyond:.2f} s = {beyond / r['interval_s']:.2f} intervals beyond it; onset = the first degraded "
            f"pod's start + degrade_after_s; the load saw failures in {r.get('load_saw_failures', '?')} runs"
            + (f", the last {last:.2f} s after onset" if last is not None else ""),
            "<= 1 interval (beyond the ingestion delay)",
            beyond <= r["interval_s"],
        )
        add(
            "2. rollback decision -> selector restored",
            f"{r['decision_to_selector_restored_s']:.2f} s",
            "about 1 s",
            r["decision_to_selector_restored_s"] <= 1.5,
        )
    if not err("overhead"):
        for env, o in f["overhead"].items():
            add(
                f"3. overhead of a {env} release",
                f"{o['overhead_s']:.1f} s (wall {o['wall_s']:.1f} s - lab waits {o['imposed_waits_s']:.1f} s)",
                "a few seconds",
                o["overhead_s"] <= 5.0,
            )
    if not err("scale"):
        s = f["scale"]
        parts = ", ".join(f"N={n}: {v['wall_s']:.1f} s (x{v['ratio_to_1']:.2f})" for n, v in s.items())
        worst = s[str(max(int(n) for n in s))]["ratio_to_1"]
        add("4. release of N apps vs N=1", parts, "<= 1.5 at N=20", worst <= 1.5)
    if not err("backups"):
        b = f["backups"]
        for size, v in (b.get("sizes") or {}).items():
            ver, base = v["verification"], v["pg_restore"]
            add(
                f"5. backup verification, {v['dump']['bytes'] / 1e6:.0f} MB dump ({size} MB asked)",
                f"x{v['ratio']['median']:.2f} of plain pg_restore ({ver['median_s']:.1f} s vs {base['median_s']:.1f} s, "
                f"n={v['repeats']}); flow peak RSS {ver['peak_rss_mb']:.0f} MB",
                "ratio close to 1",
                None,
            )
        rss = b.get("rss") or {}
        if "growth_mb" in rss:
            add(
                "5. flow peak RSS, smallest to largest dump",
                f"+{rss['growth_mb']:.0f} MB for +{rss['dump_growth_mb']:.0f} MB of dump "
                f"({', '.join(f'{k} MB: {v:.0f} MB' for k, v in rss['flow_peak_mb'].items())})",
                "flat",
                rss["growth_mb"] <= 20,
            )
    if not err("gate"):
        rows += _figure6_rows(f["gate"])
    lines = [
        f"# Greenlight bench, {results['started']}",
        "",
        f"Machine: {m['cores']} cores, Python {m['python']}, {m['platform']}; repeats {results['repeats']} "
        f"(medians); wall {results.get('wall_s', 0):.0f} s",
        "",
    ]
    if "switch" in f and "error" not in f["switch"]:
        lines += [*figure1_table(f["switch"]), ""]
    lines += [
        "| figure | measured | goal | |",
        "|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    extra = (f.get("backups") or {}).get("extra")
    if extra:
        lines += ["", f"Backups: {extra}"]
    return "\n".join(lines)


FIG1_PROCEDURES = {
    "naive": "naive script (apply, rollout status, patch; scale old to 0 at once)",
    "rolling": "rolling update (kubectl set image)",
    "greenlight": "Greenlight (build-promote, rollback, cleanup --now)",
}
FIG1_GOALS = {
    "naive": "loses requests on both data planes (else the lab is too kind)",
    "rolling": "none (expected to lose on kube-proxy)",
    "greenlight": "0 failed in every cell",
}


def figure1_table(fig: dict[str, Any]) -> list[str]:
    """Figure 1 side by side: failed / sent, rows = procedure, columns = operation x data plane."""
    from bench.switching import OPERATIONS, PLANES, goal_met

    cells = fig["cells"]
    head = [f"{op} ({plane})" for plane in PLANES for op in OPERATIONS]
    lines = [
        f"Figure 1: requests failed / sent, {fig['rps']:g} rps over {fig['connections']} kept-alive "
        f"connections, from {fig['lead_s']:g} s before each operation to {fig['tail_s']:g} s after it",
        "",
        "| procedure | " + " | ".join(head) + " | goal | |",
        "|---|" + "---|" * len(head) + "---|---|",
    ]
    for procedure, label in FIG1_PROCEDURES.items():
        if procedure not in cells:
            continue
        row = []
        for plane in PLANES:
            for op in OPERATIONS:
                c = cells[procedure].get(plane, {}).get(op)
                row.append("—" if c is None else f"{c['failed']} / {c['sent']}")
        lines.append(
            f"| {label} | "
            + " | ".join(row)
            + f" | {FIG1_GOALS[procedure]} | {_goal(goal_met(procedure, cells[procedure]))} |"
        )
    failing = [
        f"{procedure} {op} ({plane}): {c['failed_by']}"
        for procedure, planes in cells.items()
        for plane, ops in planes.items()
        for op, c in ops.items()
        if c["failed"]
    ]
    if failing:
        lines += ["", "Failed by kind: " + "; ".join(failing) + "."]
    return lines


def _figure1_rows(fig: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    from bench.switching import goal_met

    out = []
    for procedure, planes in fig["cells"].items():
        total = sum(c["failed"] for ops in planes.values() for c in ops.values())
        sent = sum(c["sent"] for ops in planes.values() for c in ops.values())
        out.append(
            (
                f"1. {FIG1_PROCEDURES[procedure].split(' (')[0]}: switch, rollback, cleanup",
                f"{total} failed of {sent} sent (table above)",
                FIG1_GOALS[procedure],
                _goal(goal_met(procedure, planes)),
            )
        )
    return out


def _figure6_rows(fig: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Figure 6, a row per kind of candidate: verdicts, the rate that matters, the gate's time."""
    out = []
    for name, k in fig["kinds"].items():
        n = k["runs"]
        wall = (
            f"; gate {k['wall_median_s']:.1f} s median, {k['wall_max_s']:.1f} s max"
            if k["wall_median_s"] is not None
            else ""
        )
        out.append(
            (
                f"6. gate, {name}: {k['label']}",
                f"{n} runs: {k['passed']} passed, {k['failed']} failed, {k['inconclusive']} inconclusive; "
                f"{k['rate_name']} {k['wrong']}/{n}{wall}",
                f"{k['rate_name']} 0 of {n}",
                _goal(k["met"]),
            )
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
