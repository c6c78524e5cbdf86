"""Figure 5, backups: verification time over plain ``pg_restore`` time of the same dump, and peak RSS.

For each size (about 10 MB and 200 MB; 1 GB with ``make bench BIG=1``) a generated custom-format
dump (see :mod:`bench.dumps`; cached between runs) is uploaded to the lab's backup bucket under
its own prefix as the newest dump (``dump_time`` now), with its cross-region copy in the replica
bucket, and a profile copy of the lab's production profile (``format: custom``, probes on the
generated tables, ``restore_jobs`` as the baseline) is written for it. Then, interleaved
(A B A B ...) so that drift on a noisy machine hits both:

A. the baseline: ``pg_restore --jobs=N --no-owner --no-privileges --exit-on-error`` of the local
   file into a fresh database (created before, dropped after, neither timed);
B. the verification: the real flow ``greenlight.flows.backup_verification.verify_backups`` run in a child
   process (its peak RSS is its own), timed from inside the child around the flow call; the
   child reports its import time, its peak RSS after the imports and after the flow, the peak
   RSS of its children (pg_restore) and, read back from the Prefect server, each task run's
   time, which gives the split of the extra time. A verification that does not pass fails the
   figure with the flow's reason: no time is reported for it.

Ratio: median verification seconds over median pg_restore seconds (and per pair). Goals: a ratio
close to 1 and a flow RSS flat in the dump size.

Standalone (starts and always stops its own lab)::

    uv run python -m bench.backups --sizes 10 200 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.dumps import BenchDump
    from greenlight_lab.state import LabState

_STARTED = time.monotonic()  # the child's clock starts when this module is first executed

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_MARK = "BENCH-BACKUPS-RESULT "
NAME_PATTERN = r"(?P<date>\d{8}T\d{6}Z)\.dump$"
RESTORE_TIMEOUT_S = 3600.0
CHILD_TIMEOUT_S = 3600.0
BIG_MB = 50  # dumps larger than this get fewer repeats (see repeats_for)
RESTORE_STEP = "restore (pg_restore + tool checks)"
DOWNLOAD_STEP = "download + md5/crc32c"
SCRATCH_STEP = "scratch database create + drop"
STEP_GROUPS = {
    RESTORE_STEP: ("restore-dump",),
    DOWNLOAD_STEP: ("download-dump",),
    "list bucket + replica stat": ("find-dumps", "stat-replica"),
    SCRATCH_STEP: ("create-scratch-database", "drop-scratch-database"),
    "probes (tables + SQL)": ("probe-tables", "sql-probes"),
    "publish (metrics, artifact, Slack)": ("publish-backup-metrics", "publish-report", "slack"),
}
ENGINE = "Prefect engine + flow code between tasks"


# --- pure helpers ---------------------------------------------------------------------------------


def repeats_for(size_mb: int, repeats: int) -> int:
    """Repeats for one size: ``repeats`` up to BIG_MB, a third of it (at least one) above."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    return repeats if size_mb <= BIG_MB else max(1, repeats // 3)


def summary(samples: list[float]) -> dict[str, Any]:
    """Median and every sample (seconds, rounded to ms)."""
    return {"median_s": round(statistics.median(samples), 3), "samples_s": [round(s, 3) for s in samples]}


def ratios(verification: list[float], baseline: list[float]) -> dict[str, Any]:
    """Median verification over median baseline, and the ratio of each interleaved pair."""
    median = statistics.median(verification) / statistics.median(baseline)
    pairs = [v / b for v, b in zip(verification, baseline, strict=True)]
    return {"median": round(median, 3), "pairs": [round(p, 3) for p in pairs]}


def group_steps(task_seconds: dict[str, float], flow_seconds: float) -> dict[str, float]:
    """Task-run seconds summed by STEP_GROUPS (unknown tasks under their own name) plus ENGINE: the rest."""
    out: dict[str, float] = {}
    for task, seconds in task_seconds.items():
        group = next((g for g, names in STEP_GROUPS.items() if task in names), task)
        out[group] = out.get(group, 0.0) + seconds
    out[ENGINE] = flow_seconds - sum(task_seconds.values())
    return {k: round(v, 3) for k, v in out.items()}


def median_steps(samples: list[dict[str, float]]) -> dict[str, float]:
    """Per step, the median over repeats (a step missing from a repeat counts 0)."""
    names = sorted({k for s in samples for k in s})
    return {k: round(statistics.median(s.get(k, 0.0) for s in samples), 3) for k in names}


def extra_text(size_mb: int, entry: dict[str, Any]) -> str:
    """What the verification's time beyond plain pg_restore buys, from one size's measured split."""
    v = entry["verification"]
    base = entry["pg_restore"]["median_s"]
    steps = dict(v["steps_median_s"])
    restore_in = v["restore_inside_median_s"]
    checks = steps.pop(RESTORE_STEP, restore_in) - restore_in
    steps["tool + server version checks before pg_restore"] = checks
    mb = entry["dump"]["bytes"] / 1e6
    parts = []
    for name, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
        part = f"{name} {seconds:.2f}s"
        if name == DOWNLOAD_STEP and seconds > 0:
            part += f" ({mb / seconds:.0f} MB/s)"
        if name == ENGINE and v.get("engine_median_s"):
            e = v["engine_median_s"]
            part += (
                f" (before the first task {e.get('before_first_task', 0):.2f}s, between tasks "
                f"{e.get('between_tasks', 0):.2f}s, after the last {e.get('after_last_task', 0):.2f}s"
            )
            if v.get("empty_flow_s") is not None:
                part += f"; an empty Prefect flow run costs {v['empty_flow_s']:.2f}s here"
            part += ")"
        if name == SCRATCH_STEP:
            part += f" (dropping the same database after plain pg_restore: {entry['pg_restore']['drop_after_median_s']:.2f}s)"
        parts.append(part)
    return (
        f"{size_mb} MB: verification {v['median_s']:.2f}s = the flow's own pg_restore {restore_in:.2f}s "
        f"(plain pg_restore: {base:.2f}s) + " + ", ".join(parts) + "."
    )


# --- the figure -----------------------------------------------------------------------------------


def run(
    lab: LabState, sizes_mb: list[int], repeats: int, work: Path, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Measure every size (see the module docstring); a JSON-able dict. Raises when a verification fails.

    ``lab`` is a started ``greenlight_lab.state.LabState`` whose ``env`` is already in os.environ.
    """
    from bench.dumps import ensure_dump
    from greenlight.clients.gcs import GcsClient
    from greenlight.settings import load_profile
    from greenlight_lab.supervisor import cache_dir

    started = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    base = load_profile("production", Path(lab.env["GREENLIGHT_ENVIRONMENTS"]))
    assert base.backups is not None and base.backups.replica_bucket
    bucket, replica = base.backups.bucket, base.backups.replica_bucket
    jobs = base.backups.restore_jobs
    server_url = lab.env["GREENLIGHT_SCRATCH_DATABASE_URL"]
    cache = cache_dir() / "bench"
    profiles = work / "profiles"
    profiles.mkdir(exist_ok=True)
    run_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
    gcs = GcsClient(timeout_s=120)
    out: dict[str, Any] = {
        "format": "custom (pg_dump -Fc, default gzip)",
        "restore_jobs": jobs,
        "baseline": f"pg_restore --jobs={jobs} --no-owner --no-privileges --exit-on-error -d <fresh db> <file>",
        "verification": "greenlight.flows.backup_verification.verify_backups in a child process, timed around the call",
        "sizes": {},
    }
    for size in sizes_mb:
        n = repeats_for(size, repeats)
        echo(f"backups {size} MB: dump ({'cache ' + str(cache)})")
        t0 = time.monotonic()
        dump, cached = ensure_dump(size, server_url, cache, echo)
        prepare_s = time.monotonic() - t0
        echo(f"backups {size} MB: {'cached' if cached else 'generated'} dump {dump.bytes / 1e6:.1f} MB")
        prefix = f"bench-backups/{run_id}/{size}mb/"
        name = f"bench-{size}mb"
        now = datetime.now(UTC)
        obj = f"{prefix}{now:%Y%m%dT%H%M%SZ}.dump"
        _write_profile(profiles, name, Path(lab.env["GREENLIGHT_ENVIRONMENTS"]), prefix, jobs, dump, now)
        load_profile(name, profiles)  # a bad profile fails here, not inside the flow
        try:
            t0 = time.monotonic()
            meta = {"dump_time": now.isoformat(), "format": "custom", "database": "shop"}
            gcs.upload_file(bucket, obj, dump.path, metadata=meta)
            gcs.copy(bucket, obj, replica)
            upload_s = time.monotonic() - t0
            echo(f"backups {size} MB: uploaded gs://{bucket}/{obj} + copy in {upload_s:.1f}s")
            entry = _measure(size, n, dump, server_url, jobs, name, profiles, work, echo)
        finally:
            for b in (bucket, replica):
                try:
                    gcs.delete(b, obj)
                except Exception as e:  # cleanup must not hide the measurement's own failure
                    echo(f"backups {size} MB: could not delete gs://{b}/{obj}: {e}")
        entry["dump"] = {
            "bytes": dump.bytes,
            "restored_db_bytes": entry.pop("restored_db_bytes"),
            "generated_db_bytes": dump.db_bytes,
            "rows": dump.rows,
            "cached": cached,
            "prepare_s": round(prepare_s, 2),
            "generate_s": dump.generate_seconds,
            "pg_dump_s": dump.dump_seconds,
            "upload_and_copy_s": round(upload_s, 2),
        }
        entry["extra"] = extra_text(size, entry)
        out["sizes"][str(size)] = entry
        echo(
            f"backups {size} MB: ratio {entry['ratio']['median']:.2f} "
            f"(verification {entry['verification']['median_s']:.2f}s / pg_restore {entry['pg_restore']['median_s']:.2f}s), "
            f"flow peak RSS {entry['verification']['peak_rss_mb']:.0f} MB"
        )
    out["extra"] = " ".join(e["extra"] for e in out["sizes"].values())
    out["rss"] = _rss_summary(out["sizes"])
    out["wall_s"] = round(time.monotonic() - started, 1)
    return out


def _write_profile(
    directory: Path, name: str, lab_profiles: Path, prefix: str, jobs: int, dump: BenchDump, now: datetime
) -> None:
    """A copy of the lab's production profile whose backups section reads ``prefix`` as custom dumps.

    Table probes ask for every generated row (a short restore fails them); the RPO target is a day
    plus the age of the cached data, so a dump generated days ago still passes the data-RPO check.
    """
    import yaml

    from bench.dumps import SQL_PROBES, TIMESTAMP_COLUMNS

    doc = yaml.safe_load((lab_profiles / "production.yaml").read_text())
    newest = datetime.fromisoformat(dump.newest_row)
    doc["name"] = name
    doc["backups"].update(
        {
            "prefix": prefix,
            "name_pattern": NAME_PATTERN,
            "format": "custom",
            "database": "shop",
            "restore_jobs": jobs,
            "rpo_target_s": 86400 + math.ceil((now - newest).total_seconds()),
            "probes": [
                {
                    "table": t,
                    "min_rows": rows,
                    **({"timestamp_column": TIMESTAMP_COLUMNS[t]} if t in TIMESTAMP_COLUMNS else {}),
                }
                for t, rows in dump.rows.items()
            ],
            "sql_probes": [{"name": n, "sql": q} for n, q in SQL_PROBES.items()],
        }
    )
    (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def _measure(
    size: int,
    n: int,
    dump: BenchDump,
    server_url: str,
    jobs: int,
    profile: str,
    profiles: Path,
    work: Path,
    echo: Callable[[str], None],
) -> dict[str, Any]:
    """``n`` interleaved pairs of baseline restore and verification of one dump."""
    base: list[Baseline] = []
    ver: list[dict[str, Any]] = []
    for k in range(n):
        a = baseline_restore(dump.path, server_url, jobs)
        base.append(a)
        echo(
            f"backups {size} MB [{k + 1}/{n}] A pg_restore {a.seconds:.2f}s, peak RSS {a.rss_mb:.1f} MB "
            f"per process, {a.rss_all_mb:.1f} MB all workers (drop afterwards {a.drop_s:.2f}s)"
        )
        child = verify_in_child(profile, profiles, work / f"child-{size}mb-{k}", reference=k == 0)
        ver.append(child)
        echo(
            f"backups {size} MB [{k + 1}/{n}] B verification {child['flow_s']:.2f}s "
            f"(inner pg_restore {child['restore_seconds']:.2f}s), peak RSS {child['rss_mb']['after_flow']:.0f} MB "
            f"(after imports {child['rss_mb']['after_import']:.0f} MB), pg_restore in flow "
            f"{child['rss_mb']['pg_restore']:.1f} MB"
        )
    base_s = [a.seconds for a in base]
    flow_s = [c["flow_s"] for c in ver]
    return {
        "repeats": n,
        "restored_db_bytes": base[0].db_bytes,
        "pg_restore": {
            **summary(base_s),
            "peak_rss_mb": max(a.rss_mb for a in base),
            "peak_rss_all_workers_mb": max(a.rss_all_mb for a in base),
            "drop_after_median_s": round(statistics.median(a.drop_s for a in base), 3),
        },
        "verification": {
            **summary(flow_s),
            "restore_inside_median_s": round(statistics.median(c["restore_seconds"] for c in ver), 3),
            "restore_inside_samples_s": [c["restore_seconds"] for c in ver],
            "steps_median_s": median_steps([c["steps_s"] for c in ver]),
            "peak_rss_mb": round(max(c["rss_mb"]["after_flow"] for c in ver), 1),
            "rss_after_import_mb": round(max(c["rss_mb"]["after_import"] for c in ver), 1),
            "pg_restore_peak_rss_mb": max(c["rss_mb"]["pg_restore"] for c in ver),
            "tools_peak_rss_all_mb": max(c["rss_mb"]["tools_total"] for c in ver),
            "engine_median_s": median_steps([c["engine_s"] for c in ver]),
            "empty_flow_s": ver[0]["empty_flow_s"],
            "child_import_s": summary([c["import_s"] for c in ver]),
            "child_process_wall_s": summary([c["process_wall_s"] for c in ver]),
            "task_runs_seen": [c["task_runs"] for c in ver],
        },
        "ratio": ratios(flow_s, base_s),
    }


def _rss_summary(sizes: dict[str, Any]) -> dict[str, Any]:
    """The flow's peak RSS per size and its growth from the smallest to the largest dump."""
    peaks = {s: e["verification"]["peak_rss_mb"] for s, e in sizes.items()}
    floors = {s: e["verification"]["rss_after_import_mb"] for s, e in sizes.items()}
    keys = sorted(peaks, key=int)
    out: dict[str, Any] = {"flow_peak_mb": peaks, "flow_after_import_mb": floors}
    if len(keys) > 1:
        out["growth_mb"] = round(peaks[keys[-1]] - peaks[keys[0]], 1)
        out["dump_growth_mb"] = round(
            (sizes[keys[-1]]["dump"]["bytes"] - sizes[keys[0]]["dump"]["bytes"]) / 1e6, 1
        )
    return out


# --- A: plain pg_restore ---------------------------------------------------------------------------


def _wait(proc: subprocess.Popen[Any], timeout_s: float, what: str) -> int:
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} did not finish within {timeout_s:.0f}s") from None


@dataclass(frozen=True)
class Baseline:
    """One plain pg_restore: its time, peak RSS (one process; all its workers together), what it made."""

    seconds: float
    rss_mb: float
    rss_all_mb: float
    db_bytes: int
    drop_s: float  # dropping the restored database afterwards (not part of ``seconds``)


def baseline_restore(path: Path, server_url: str, jobs: int) -> Baseline:
    """Restore ``path`` with plain pg_restore into a fresh database, then drop it (untimed)."""
    from bench.dumps import tool_env
    from greenlight.clients.postgres import Postgres, pg_tool

    server = Postgres(server_url)
    name = f"bench_restore_{secrets.token_hex(4)}"
    url = server.create_database(name)
    try:
        conninfo, env = tool_env(url)
        argv = [str(pg_tool("pg_restore")), f"--jobs={jobs}", "--no-owner", "--no-privileges"]
        argv += ["--exit-on-error", "-d", conninfo, str(path)]
        with tempfile.TemporaryFile() as err:
            started = time.monotonic()
            proc = subprocess.Popen(
                argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
            with PeakRss(proc.pid, include_root=True) as peak:
                code = _wait(proc, RESTORE_TIMEOUT_S, f"baseline pg_restore of {path.name}")
            seconds = time.monotonic() - started
            if code != 0:
                err.seek(0)
                tail = err.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"baseline pg_restore of {path.name} failed (exit {code}): {tail}")
        size = Postgres(url).scalar("SELECT pg_database_size(current_database())")
    finally:
        dropping = time.monotonic()
        server.drop_database(name)
        drop_s = time.monotonic() - dropping
    return Baseline(
        seconds=seconds,
        rss_mb=peak.peak_of("pg_restore"),
        rss_all_mb=peak.peak_total_mb,
        db_bytes=int(size) if isinstance(size, int) else 0,
        drop_s=round(drop_s, 3),
    )


# --- B: the verification flow, in a child process ----------------------------------------------------


def verify_in_child(profile: str, profiles: Path, logs: Path, reference: bool = False) -> dict[str, Any]:
    """Run the verification of ``profile`` in a child process; what it reported, plus its wall time.

    ``reference``: the child also times an empty Prefect flow after the verification.

    Raises RuntimeError with the flow's reason when the backup was not verified.
    """
    env = dict(os.environ)
    env["GREENLIGHT_ENVIRONMENTS"] = str(profiles)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    out_path, err_path = logs.with_suffix(".out"), logs.with_suffix(".err")
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench.backups",
                "--child",
                profile,
                *(["--reference"] if reference else []),
            ],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        code = _wait(proc, CHILD_TIMEOUT_S, f"verification of {profile}")
        wall = time.monotonic() - started
    lines = [x for x in out_path.read_text(errors="replace").splitlines() if x.startswith(RESULT_MARK)]
    if not lines:
        tail = err_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"verification child exited {code} without a result; stderr tail:\n{tail}")
    report: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARK) :])
    if not report.get("verified"):
        raise RuntimeError(f"backup verification of {profile} did NOT pass: {report.get('reason')}")
    report["process_wall_s"] = round(wall, 3)
    return report


def empty_flow_seconds() -> float:
    """Wall time of an empty Prefect flow run in this process: the engine's fixed cost per run."""
    from prefect import flow

    @flow(name="bench-empty-flow", persist_result=False)
    def empty() -> None:
        return None

    started = time.monotonic()
    empty()
    return round(time.monotonic() - started, 3)


def child_main(profile: str, reference: bool = False) -> int:
    """In the child: import the flow, run it for ``profile``, print one RESULT_MARK line of JSON.

    ``reference``: afterwards also time an empty flow (Prefect's fixed cost per flow run).
    """
    from greenlight.flows.backup_verification import verify_backups

    imported = time.monotonic()
    rss_import = own_peak_rss_mb()
    with PeakRss(os.getpid(), include_root=False, interval_s=0.05) as tools:
        wall_start, called = time.time(), time.monotonic()
        state = verify_backups(profile, return_state=True)
        flow_s, wall_end = time.monotonic() - called, time.time()
    rss_flow = own_peak_rss_mb()
    result = state.result(raise_on_failure=False)
    verified = isinstance(result, dict) and result.get("verified") is True
    reason = "every check passed" if verified else str(result)
    runs = task_runs(state.state_details.flow_run_id)
    tasks: dict[str, float] = {}
    for name, start, end in runs:
        tasks[name] = round(tasks.get(name, 0.0) + end - start, 3)
    report = {
        "verified": verified,
        "reason": reason,
        "state": state.type.value,
        "flow_s": round(flow_s, 3),
        "import_s": round(imported - _STARTED, 3),
        "restore_seconds": result.get("restore_seconds", 0.0) if isinstance(result, dict) else 0.0,
        "scratch_dropped": result.get("scratch_dropped") if isinstance(result, dict) else None,
        "rss_mb": {
            "after_import": rss_import,
            "after_flow": rss_flow,
            "pg_restore": tools.peak_of("pg_restore"),
            "tools_total": tools.peak_total_mb,
        },
        "task_runs": len(runs),
        "tasks_s": tasks,
        "steps_s": group_steps(tasks, flow_s) if tasks else {},
        "engine_s": engine_split(runs, wall_start, wall_end) if runs else {},
        "empty_flow_s": empty_flow_seconds() if reference else None,
    }
    if verified and report["scratch_dropped"] is not True:
        report["verified"], report["reason"] = False, "the flow did not drop its scratch database"
    print(RESULT_MARK + json.dumps(report), flush=True)
    return 0


def engine_split(
    runs: list[tuple[str, float, float]], wall_start: float, wall_end: float
) -> dict[str, float]:
    """Where the time outside task runs went: before the first task, between tasks, after the last."""
    ordered = sorted(runs, key=lambda r: r[1])
    before = ordered[0][1] - wall_start
    after = wall_end - max(r[2] for r in ordered)
    covered = sum(r[2] - r[1] for r in ordered)
    between = (wall_end - wall_start) - before - after - covered
    return {
        "before_first_task": round(before, 3),
        "between_tasks": round(between, 3),
        "after_last_task": round(after, 3),
    }


def task_runs(flow_run_id: Any, settle_s: float = 15.0) -> list[tuple[str, float, float]]:
    """(task name, start, end as epoch seconds) of every task run of the flow run, read from Prefect.

    Task runs reach the server as events: send the queued ones, then poll until every task run
    has an end time and their number stops changing (at most ``settle_s``). [] if none arrived.
    """
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.events.worker import EventsWorker

    try:
        EventsWorker.drain_all(timeout=10, at_exit=False)
    except RuntimeError:  # never started
        pass
    deadline = time.monotonic() + settle_s
    seen, stable = -1, 0
    runs: list[Any] = []
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
            )
            done = all(r.end_time is not None for r in runs)
            stable = stable + 1 if (len(runs) == seen and done) else 0
            seen = len(runs)
            if stable >= 2:
                break
            time.sleep(0.5)
    return [
        (str(r.name).rsplit("-", 1)[0], r.start_time.timestamp(), r.end_time.timestamp())
        for r in runs
        if r.start_time is not None and r.end_time is not None
    ]


# --- peak RSS ------------------------------------------------------------------------------------------
# ru_maxrss cannot be used here: Linux carries a process's high-water mark across exec, so a
# pg_restore forked from a 150 MB Python process reports 150 MB (seen: 132.9 MB for a pg_restore
# whose own peak is 2.8 MB). VmHWM in /proc/<pid>/status belongs to the exec'd image only.


def _status_kb(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def own_peak_rss_mb() -> float:
    """This process's peak RSS since exec (VmHWM), in MB; ru_maxrss where /proc is missing."""
    kb = _status_kb("self", "VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kb / 1024, 1)


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        pass
    return out


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


class PeakRss:
    """Polls the processes under ``root`` (and ``root`` itself with ``include_root``) while in use.

    Keeps each command's peak (VmHWM, the high-water mark of its own image) and the peak sum of
    their current RSS. A Python process between fork and exec is skipped (it still shows its
    parent's memory). Polling every ``interval_s`` misses nothing of a high-water mark except
    what a process reaches in its last interval.
    """

    def __init__(self, root: int, include_root: bool, interval_s: float = 0.02) -> None:
        self.root, self.include_root, self.interval_s = root, include_root, interval_s
        self.peaks_kb: dict[str, int] = {}
        self.total_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-peak-rss", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        pids = [self.root] if self.include_root else []
        todo = _children(self.root)
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo += _children(pid)
        total = 0
        for pid in pids:
            comm = _comm(pid)
            if not comm or comm.startswith("python"):
                continue
            hwm, rss = _status_kb(pid, "VmHWM"), _status_kb(pid, "VmRSS")
            if hwm is not None:
                self.peaks_kb[comm] = max(self.peaks_kb.get(comm, 0), hwm)
            total += rss or 0
        self.total_kb = max(self.total_kb, total)

    def peak_of(self, comm: str) -> float:
        """The peak RSS in MB of any one process running ``comm`` (0 when none was seen)."""
        return round(self.peaks_kb.get(comm, 0) / 1024, 1)

    @property
    def peak_total_mb(self) -> float:
        return round(self.total_kb / 1024, 1)


# --- standalone ---------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    """The figure as a text table."""
    head = f"{'dump':>9} {'restored':>9} {'n':>2} {'pg_restore':>11} {'verify':>8} {'ratio':>6} {'flow RSS':>9} {'pg_restore RSS':>15}"
    lines = [head]
    for size, e in result["sizes"].items():
        v = e["verification"]
        lines.append(
            f"{e['dump']['bytes'] / 1e6:7.1f}MB {e['dump']['restored_db_bytes'] / 1e6:7.0f}MB {e['repeats']:>2} "
            f"{e['pg_restore']['median_s']:10.2f}s {v['median_s']:7.2f}s {e['ratio']['median']:6.2f} "
            f"{v['peak_rss_mb']:7.0f}MB {v['pg_restore_peak_rss_mb']:6.1f}/{e['pg_restore']['peak_rss_mb']:.1f}MB"
            f"   ({size} MB target)"
        )
    lines.append(
        "pg_restore RSS: inside the flow / baseline. Ratio: median verification / median pg_restore."
    )
    for size, e in result["sizes"].items():
        steps = ", ".join(f"{k} {s:.2f}" for k, s in e["verification"]["steps_median_s"].items())
        lines.append(f"{size} MB split (s): {steps}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.backups", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 200], help="dump sizes in MB")
    parser.add_argument(
        "--repeats", type=int, default=3, help=f"pairs per dump up to {BIG_MB} MB (a third above)"
    )
    parser.add_argument("--child", metavar="PROFILE", help=argparse.SUPPRESS)
    parser.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.reference)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import shutil

    from greenlight_lab import supervisor

    started = time.monotonic()
    directory = Path(tempfile.mkdtemp(prefix="greenlight-bench-backups-"))
    saved = dict(os.environ)
    try:
        state = supervisor.up(directory, echo=print)
        os.environ.update(state.env)
        result = run(state, args.sizes, args.repeats, directory / "work", print)
        result["standalone_wall_s"] = round(time.monotonic() - started, 1)
        print(table(result))
        print(json.dumps(result, indent=2))
    finally:
        supervisor.down(directory, echo=print)
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
