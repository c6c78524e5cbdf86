"""Backup decisions as pure functions over snapshots: which dump, is it fresh, whole, copied, restorable.

Nothing here does I/O. The tasks list the bucket, stream the dump, restore it and run the probes;
these functions turn what they saw into :class:`Check` values (a measured value against its
limit, with a reason that names the object and the numbers), and :func:`decide_verification`
turns the checks into a :class:`Verdict`: verified only when every check passed.

Dumps are found by the profile's ``name_pattern`` (a regular expression searched in the object's
name, whose named group ``date`` dates it). A directory-format dump is a prefix of objects with a
``toc.dat`` in it; the pattern is searched in the prefix's name. The dump time is the object's
``dump_time`` metadata when it is there and valid, else the ``date`` group; never the upload time.

A dump's object names become local paths when it is downloaded: :func:`download_layout` says
where each member lands under the download directory, and refuses (BackupInvalid) any name that
would land anywhere else.

The config-backup half: objects exported from the cluster lose their server-managed fields, and a
Secret keeps only its name, labels and its keys, never a value.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from greenlight.core.report import table_cell
from greenlight.errors import BackupInvalid

DIRECTORY_MARKER = "toc.dat"
CLOCK_SKEW_S = 300.0  # a dump time this far in the future is not believed
SIZE_HISTORY = 7  # previous dumps whose median the size is compared with

_DATE_FORMATS = (
    "%Y-%m-%dT%H%MZ",
    "%Y-%m-%dT%H%M%SZ",
    "%Y%m%dT%H%M%SZ",
    "%Y%m%dT%H%MZ",
    "%Y%m%d",
)
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
NAME_MAX_BYTES = 255  # the longest file name a local file system takes


# --- snapshots -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredObject:
    """One object as the bucket listing shows it (hashes base64, as GCS reports them)."""

    name: str
    size: int
    md5_b64: str | None = None
    crc32c_b64: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DumpObject:
    """A dump found in the bucket: one object, or (directory format) the objects under a prefix.

    ``name`` is the object's name, or the directory's prefix ending in ``/``; ``members`` the
    objects it is made of (one for a file dump); ``dump_time_source`` says where the time came
    from: ``metadata`` (the object's ``dump_time``) or ``name`` (the pattern's ``date`` group).
    """

    name: str
    dump_time: datetime
    dump_time_source: str
    members: tuple[StoredObject, ...]
    declared_format: str | None = None

    @property
    def size(self) -> int:
        """Bytes in the dump (all members of a directory dump)."""
        return sum(m.size for m in self.members)

    @property
    def is_directory(self) -> bool:
        return self.name.endswith("/")

    def relative(self, member: StoredObject) -> str:
        """A member's path inside a directory dump (its name for a file dump)."""
        return member.name[len(self.name) :] if self.is_directory else member.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Check:
    """One verification step: what was measured against what limit, whether it passed, and why."""

    name: str
    ok: bool
    value: str
    limit: str
    reason: str
    subject: str = ""


@dataclass(frozen=True)
class Verdict:
    """Verified only when every check passed; ``reasons`` lists every failed check's reason."""

    verified: bool
    reasons: tuple[str, ...]
    checks: tuple[Check, ...]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "every check passed"


@dataclass(frozen=True)
class TableProbe:
    """What a probe of one restored table saw (``exists`` False: the table is missing)."""

    table: str
    exists: bool
    rows: int = 0
    newest: datetime | None = None
    timestamp_column: str | None = None
    error: str | None = None


# --- finding dumps ---------------------------------------------------------------------------------


def parse_date(text: str) -> datetime | None:
    """A UTC datetime from a ``date`` group or ``dump_time`` value (ISO 8601 and compact forms); None if not a date."""
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _dump_time(
    name: str, pattern: re.Pattern[str], metadata: Mapping[str, str]
) -> tuple[datetime, str] | None:
    meta = metadata.get("dump_time")
    if meta:
        parsed = parse_date(meta)
        if parsed is not None:
            return parsed, "metadata"
    match = pattern.search(name)
    if match is None:
        return None
    from_name = parse_date(match.group("date"))
    return (from_name, "name") if from_name is not None else None


def collect_dumps(objects: Sequence[StoredObject], name_pattern: str) -> list[DumpObject]:
    """Every dump among ``objects``, oldest first: objects the pattern matches, and directory dumps.

    A directory dump is the prefix holding a ``toc.dat`` whose name (with or without the
    trailing ``/``) the pattern matches; its metadata is the ``toc.dat`` object's. Objects
    inside a directory dump are never dumps of their own. A match whose date cannot be read
    is left out.
    """
    pattern = re.compile(name_pattern)
    directories: dict[str, StoredObject] = {}
    for obj in objects:
        if obj.name.endswith("/" + DIRECTORY_MARKER):
            prefix = obj.name[: -len(DIRECTORY_MARKER)]
            if pattern.search(prefix) or pattern.search(prefix.rstrip("/")):
                directories[prefix] = obj
    dumps: list[DumpObject] = []
    for prefix, toc in directories.items():
        members = tuple(sorted((o for o in objects if o.name.startswith(prefix)), key=lambda o: o.name))
        dated = _dump_time(prefix.rstrip("/"), pattern, toc.metadata) or _dump_time(prefix, pattern, {})
        if dated is not None:
            dumps.append(DumpObject(prefix, dated[0], dated[1], members, toc.metadata.get("format")))
    for obj in objects:
        if any(obj.name.startswith(p) for p in directories) or not pattern.search(obj.name):
            continue
        dated = _dump_time(obj.name, pattern, obj.metadata)
        if dated is not None:
            dumps.append(DumpObject(obj.name, dated[0], dated[1], (obj,), obj.metadata.get("format")))
    return sorted(dumps, key=lambda d: (d.dump_time, d.name))


def select_newest(dumps: Sequence[DumpObject]) -> DumpObject | None:
    """The dump with the newest dump time (ties: the last name); None when there is none."""
    return max(dumps, key=lambda d: (d.dump_time, d.name), default=None)


def random_candidates(dumps: Sequence[DumpObject], now: datetime, within_days: int) -> list[DumpObject]:
    """The dumps other than the newest whose dump time lies within ``within_days`` of ``now``."""
    newest = select_newest(dumps)
    since = now - timedelta(days=within_days)
    return [d for d in dumps if d is not newest and d.dump_time >= since]


def previous_sizes(dumps: Sequence[DumpObject], target: DumpObject, history: int = SIZE_HISTORY) -> list[int]:
    """Sizes of up to ``history`` dumps made before ``target``, newest first."""
    older = [d for d in dumps if d.dump_time < target.dump_time]
    return [d.size for d in sorted(older, key=lambda d: d.dump_time, reverse=True)[:history]]


# --- local paths -----------------------------------------------------------------------------------


def unsafe_path_reason(path: str) -> str | None:
    """Why ``path`` (a ``/``-separated path from an object name) cannot be used below a directory; None if it can.

    Safe is only a sequence of plain names: no ``..`` or ``.`` component, no empty component
    (``a//b``, a trailing ``/``), not absolute, no backslash (a separator elsewhere), no NUL or
    other control character, no component longer than a file name may be.
    """
    if not path:
        return "is empty"
    if "\x00" in path:
        return "contains a NUL byte"
    if "\\" in path:
        return "contains a backslash"
    if _CONTROL.search(path):
        return "contains a control character"
    if path.startswith("/"):
        return "is absolute (starts with '/')"
    for part in path.split("/"):
        if part == "":
            return "has an empty component ('//' or a trailing '/')"
        if part in (".", ".."):
            return f"has a {part!r} component"
        if len(part.encode("utf-8", errors="surrogatepass")) > NAME_MAX_BYTES:
            return f"has a component longer than {NAME_MAX_BYTES} bytes"
    return None


def download_layout(dump: DumpObject) -> tuple[str, dict[str, str]]:
    """Where the dump lands under a download directory: (the path to restore from, {member name: its path}).

    Paths are relative, ``/``-separated: a file dump is its basename; a directory dump is its
    directory's name, each member ``<directory name>/<path inside the dump>``. The object names
    come from the bucket, so they are not trusted: BackupInvalid naming the dump, the object and
    why, when a path would not stay plainly inside the download directory (see
    :func:`unsafe_path_reason`), or when one member would be both a file and another's directory.
    """
    if not dump.is_directory:
        member = dump.members[0]
        base = dump.relative(member)
        _refuse_unsafe(dump, member.name, "its basename", base)
        return base, {member.name: base}
    root = dump.name[:-1].rsplit("/", 1)[-1]
    _refuse_unsafe(dump, dump.name, "its directory name", root)
    paths: dict[str, str] = {}
    for member in dump.members:
        inside = dump.relative(member)
        _refuse_unsafe(dump, member.name, "its path inside the dump", inside)
        paths[member.name] = f"{root}/{inside}"
    by_path = {p: name for name, p in paths.items()}
    for name, path in paths.items():
        parts = path.split("/")
        for depth in range(2, len(parts)):
            other = by_path.get("/".join(parts[:depth]))
            if other is not None:
                raise BackupInvalid(
                    f"dump {dump.name} cannot be downloaded safely: object {other!r} would be both "
                    f"a file and a directory (of object {name!r})"
                )
    return root, paths


def _refuse_unsafe(dump: DumpObject, name: str, what: str, path: str) -> None:
    reason = unsafe_path_reason(path)
    if reason is not None:
        raise BackupInvalid(
            f"dump {dump.name} cannot be downloaded safely: object {name!r}: {what} {path!r} {reason}, "
            "so it would not stay inside the download directory"
        )


# --- checks ------------------------------------------------------------------------------------------


def check_found(dump: DumpObject | None, where: str, name_pattern: str, listed: int) -> Check:
    """Passes when a dump was found under ``where`` (``gs://bucket/prefix``)."""
    if dump is None:
        return Check(
            "found",
            False,
            f"{listed} objects",
            "a dump matching the pattern",
            f"no dump under {where} matches {name_pattern!r} ({listed} objects listed)",
        )
    return Check(
        "found",
        True,
        dump.name,
        name_pattern,
        f"dump {dump.name} from {dump.dump_time.isoformat()} (time from its {dump.dump_time_source})",
        dump.name,
    )


def check_freshness(dump_time: datetime, now: datetime, rpo_s: float, subject: str = "") -> Check:
    """Passes when the dump is at most ``rpo_s`` old, and not dated in the future."""
    age = (now - dump_time).total_seconds()
    value, limit = f"{age:.0f}s", f"<= {rpo_s:.0f}s"
    if age < -CLOCK_SKEW_S:
        return Check(
            "freshness",
            False,
            value,
            limit,
            f"{subject} is dated {dump_time.isoformat()}, {-age:.0f}s in the future: its time cannot be trusted",
            subject,
        )
    if age > rpo_s:
        return Check(
            "freshness",
            False,
            value,
            limit,
            f"{subject} is stale: {age:.0f}s old ({_hours(age)}), RPO target {rpo_s:.0f}s ({_hours(rpo_s)})",
            subject,
        )
    return Check("freshness", True, value, limit, f"{subject} is {age:.0f}s old ({_hours(age)})", subject)


def check_size(size: int, previous: Sequence[int], tolerance: float, subject: str = "") -> Check:
    """Fails on an empty dump, or one more than ``tolerance`` smaller than the median of ``previous``."""
    if size <= 0:
        return Check("size", False, "0 bytes", "> 0 bytes", f"{subject} is empty (0 bytes)", subject)
    if not previous:
        return Check(
            "size", True, f"{size} bytes", "no history", f"{subject}: no earlier dump to compare", subject
        )
    median = float(statistics.median(previous))
    drop = 1.0 - size / median if median > 0 else 0.0
    value = f"{size} bytes ({-drop:+.1%} vs median {median:.0f})"
    limit = f"drop <= {tolerance:.0%}"
    if drop > tolerance:
        return Check(
            "size",
            False,
            value,
            limit,
            f"{subject} shrank: {size} bytes is {drop:.1%} below the median {median:.0f} of the "
            f"{len(previous)} previous dumps (tolerance {tolerance:.0%})",
            subject,
        )
    return Check("size", True, value, limit, f"{subject}: {size} bytes, {drop:.1%} below median", subject)


def check_integrity(
    dump: DumpObject, computed: Mapping[str, tuple[int, str, str]], error: str | None
) -> Check:
    """Passes when every member streamed down with the size, MD5 and CRC32C GCS stored.

    ``computed`` maps member names to (size, md5, crc32c) as computed while streaming;
    ``error`` is the download's failure (a hash mismatch, a missing member), if any.
    """
    limit = "stored md5/crc32c"
    if error is not None:
        return Check("integrity", False, "download failed", limit, error, dump.name)
    for m in dump.members:
        got = computed.get(m.name)
        if got is None:
            return Check(
                "integrity", False, "incomplete", limit, f"gs://…/{m.name} was not downloaded", dump.name
            )
        size, md5, crc = got
        for what, want, have in (
            ("size", str(m.size), str(size)),
            ("md5", m.md5_b64, md5),
            ("crc32c", m.crc32c_b64, crc),
        ):
            if want is not None and want != have:
                return Check(
                    "integrity", False, f"{what} {have}", f"{what} {want}",
                    f"{m.name}: {what} mismatch: stored {want}, downloaded {have}", dump.name,
                )  # fmt: skip
        if m.md5_b64 is None and m.crc32c_b64 is None:
            return Check(
                "integrity", False, "no stored hash", limit, f"{m.name}: GCS stores no hash", dump.name
            )
    files = len(dump.members)
    first = dump.members[0]
    value = f"crc32c {first.crc32c_b64}" if files == 1 else f"{files} files"
    return Check(
        "integrity", True, value, limit, f"{dump.name}: {files} file(s) match their stored hashes", dump.name
    )


def check_replica(primary: DumpObject, replica: Sequence[StoredObject] | None, replica_bucket: str) -> Check:
    """Passes when the cross-region copy holds every member with the same size and hashes.

    ``replica``: the objects found under the same name(s) in ``replica_bucket`` (None or empty:
    the copy is missing).
    """
    where = f"gs://{replica_bucket}/{primary.name}"
    limit = "same size, md5, crc32c"
    if not replica:
        return Check(
            "replica", False, "missing", limit, f"cross-region copy {where} is missing", primary.name
        )
    by_name = {o.name: o for o in replica}
    for m in primary.members:
        copy = by_name.get(m.name)
        if copy is None:
            return Check(
                "replica", False, "incomplete", limit,
                f"cross-region copy gs://{replica_bucket}/{m.name} is missing", primary.name,
            )  # fmt: skip
        compared = 0
        for what, want, have in (
            ("size", str(m.size), str(copy.size)),
            ("md5", m.md5_b64, copy.md5_b64),
            ("crc32c", m.crc32c_b64, copy.crc32c_b64),
        ):
            if want is None or have is None:
                continue
            compared += 1
            if want != have:
                return Check(
                    "replica", False, f"{what} {have}", f"{what} {want}",
                    f"cross-region copy gs://{replica_bucket}/{m.name} does not match the primary: "
                    f"{what} {have} != {want}", primary.name,
                )  # fmt: skip
        if compared < 2:
            return Check(
                "replica", False, "no hashes", limit,
                f"gs://{replica_bucket}/{m.name}: no stored hash to compare with the primary", primary.name,
            )  # fmt: skip
    return Check("replica", True, "match", limit, f"{where} matches the primary", primary.name)


def check_restore(ok: bool, seconds: float | None, detail: str, subject: str = "") -> Check:
    """The full restore: passed or not, how long it took, and what the tool said when it failed."""
    value = f"{seconds:.1f}s" if seconds is not None else "-"
    if not ok:
        return Check(
            "restore", False, value, "restores fully", f"{subject} does not restore: {detail}", subject
        )
    return Check(
        "restore", True, value, "restores fully", f"{subject} restored in {value} ({detail})", subject
    )


def check_probe(probe: TableProbe, min_rows: int, subject: str = "") -> Check:
    """Passes when the table exists in the restored dump and has at least ``min_rows`` rows."""
    name = f"probe {probe.table}"
    limit = f">= {min_rows} rows"
    if probe.error is not None:
        return Check(
            name, False, "error", limit, f"{subject}: probe of {probe.table} failed: {probe.error}", subject
        )
    if not probe.exists:
        return Check(
            name, False, "missing", limit, f"{subject}: table {probe.table} is missing after restore", subject
        )
    newest = f", newest {probe.newest.isoformat()}" if probe.newest is not None else ""
    value = f"{probe.rows} rows{newest}"
    if probe.rows < min_rows:
        return Check(
            name,
            False,
            value,
            limit,
            f"{subject}: table {probe.table} has {probe.rows} rows, fewer than the minimum {min_rows}",
            subject,
        )
    return Check(name, True, value, limit, f"{probe.table}: {probe.rows} rows{newest}", subject)


def check_sql_probe(
    name: str, result: object, expect_true: bool, error: str | None, subject: str = ""
) -> Check:
    """Passes when the SQL probe ran and its first value is ``expect_true``."""
    limit = "true" if expect_true else "false"
    if error is not None:
        return Check(
            f"sql {name}", False, "error", limit, f"{subject}: SQL probe '{name}' failed: {error}", subject
        )
    ok = (result is True) if expect_true else (result is False)
    if not ok:
        return Check(
            f"sql {name}", False, str(result), limit,
            f"{subject}: SQL probe '{name}' returned {result!r}, expected {limit}", subject,
        )  # fmt: skip
    return Check(f"sql {name}", True, str(result), limit, f"SQL probe '{name}' holds", subject)


def achieved_rpo(dump_time: datetime, probes: Sequence[TableProbe]) -> float | None:
    """Seconds between the dump time and the newest row among the probed tables; None without timestamps."""
    newest = [p.newest for p in probes if p.newest is not None]
    if not newest:
        return None
    return (dump_time - max(newest)).total_seconds()


def check_data_rpo(rpo_s: float | None, target_s: float, subject: str = "") -> Check:
    """Fails when the newest row in the dump is more than ``target_s`` older than the dump itself."""
    limit = f"<= {target_s:.0f}s"
    if rpo_s is None:
        return Check("data rpo", True, "-", limit, f"{subject}: no timestamp columns probed", subject)
    value = f"{rpo_s:.0f}s"
    if rpo_s > target_s:
        return Check(
            "data rpo",
            False,
            value,
            limit,
            f"{subject}: its newest row is {rpo_s:.0f}s ({_hours(rpo_s)}) older than the dump, "
            f"beyond the RPO target {target_s:.0f}s",
            subject,
        )
    return Check(
        "data rpo", True, value, limit, f"{subject}: newest row {rpo_s:.0f}s before the dump", subject
    )


@dataclass(frozen=True)
class ProbeFindings:
    """What the probes of one restored dump found: a check per probe (tables first, then SQL probes,
    in the profile's order), the newest row among the probed tables, and the dump's own lag."""

    checks: tuple[Check, ...]
    tables: tuple[TableProbe, ...]
    newest_row: datetime | None
    dump_lag_s: float | None  # dump time minus the newest row (achieved_rpo); None without timestamps

    @property
    def failures(self) -> list[str]:
        """The reason of every failed check, in order."""
        return [c.reason for c in self.checks if not c.ok]

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)


def judge_probes(
    dump: DumpObject,
    tables: Sequence[TableProbe],
    min_rows: Mapping[str, int],
    sql_results: Sequence[tuple[str, object, str | None]],
    expect_true: Mapping[str, bool],
) -> ProbeFindings:
    """The probes of a restored ``dump`` judged: each table against its ``min_rows[table]``, each SQL
    probe's ``(name, value, error)`` against ``expect_true[name]``; the one judgement the nightly
    verification and the DR drill both use."""
    checks = [check_probe(t, min_rows[t.table], dump.name) for t in tables]
    checks += [
        check_sql_probe(name, value, expect_true[name], error, dump.name)
        for name, value, error in sql_results
    ]
    newest = max((t.newest for t in tables if t.newest is not None), default=None)
    return ProbeFindings(tuple(checks), tuple(tables), newest, achieved_rpo(dump.dump_time, tables))


def decide_verification(checks: Sequence[Check]) -> Verdict:
    """Verified only when there is at least one check and every check passed; reasons of the failed ones."""
    failed = tuple(c.reason for c in checks if not c.ok)
    if not checks:
        failed = ("nothing was checked",)
    return Verdict(verified=not failed, reasons=failed, checks=tuple(checks))


# --- reporting -------------------------------------------------------------------------------------------


def render_report(title: str, verdict: Verdict, values: Mapping[str, Any]) -> str:
    """A markdown report: the verdict, every check (subject, value, limit, result, reason), the values."""
    lines = [
        f"# {title}",
        "",
        f"**{'VERIFIED' if verdict.verified else 'NOT VERIFIED'}**: {verdict.reason}",
        "",
    ]
    lines += ["| step | subject | value | limit | result | reason |", "|---|---|---|---|---|---|"]
    for c in verdict.checks:
        cells = [c.name, c.subject, c.value, c.limit, "ok" if c.ok else "FAIL", c.reason]
        lines.append("| " + " | ".join(table_cell(x) for x in cells) + " |")
    lines += ["", "| value | |", "|---|---|"]
    lines += [f"| {table_cell(k)} | {table_cell(str(v))} |" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def check_line(c: Check) -> str:
    """One line for a terminal: name, value, limit, ok/FAIL (and the subject when there is one)."""
    where = f"  [{c.subject}]" if c.subject else ""
    return f"{c.name:<28} {c.value:<40} {c.limit:<24} {'ok' if c.ok else 'FAIL'}{where}"


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f}h"


# --- SQL identifiers --------------------------------------------------------------------------------------


def quote_table(name: str) -> str:
    """A validated ``table`` or ``schema.table`` as quoted SQL identifiers; ValueError for anything else."""
    parts = name.split(".")
    if not 1 <= len(parts) <= 2 or not all(_IDENT.match(p) for p in parts):
        raise ValueError(f"table name {name!r} is not a plain identifier or schema.table")
    return ".".join(f'"{p}"' for p in parts)


def quote_column(name: str) -> str:
    """A validated column name as a quoted SQL identifier; ValueError for anything else."""
    if not _IDENT.match(name):
        raise ValueError(f"column name {name!r} is not a plain identifier")
    return f'"{name}"'


# --- config bundles ---------------------------------------------------------------------------------------

SERVER_MANAGED_METADATA = (
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "managedFields",
    "generation",
    "selfLink",
)
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


@dataclass(frozen=True)
class ExportKind:
    """A resource exported into config bundles: its API plural, apiVersion and kind."""

    plural: str
    api_version: str
    kind: str


EXPORT_KINDS: tuple[ExportKind, ...] = (
    ExportKind("deployments", "apps/v1", "Deployment"),
    ExportKind("services", "v1", "Service"),
    ExportKind("configmaps", "v1", "ConfigMap"),
    ExportKind("ingresses", "networking.k8s.io/v1", "Ingress"),
    ExportKind("horizontalpodautoscalers", "autoscaling/v2", "HorizontalPodAutoscaler"),
    ExportKind("secrets", "v1", "Secret"),
    # traffic.router gateway-httproute: the apps' routes (a cluster without Gateway API: skipped)
    ExportKind("httproutes", "gateway.networking.k8s.io/v1", "HTTPRoute"),
)


def _clean_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in metadata.items() if k not in SERVER_MANAGED_METADATA}
    annotations = {k: v for k, v in (metadata.get("annotations") or {}).items() if k != LAST_APPLIED}
    out.pop("annotations", None)
    if annotations:
        out["annotations"] = annotations
    return out


def export_object(kind: ExportKind, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as a config bundle keeps it: server-managed fields and status gone.

    A Secret becomes its name, labels, annotations, type and sorted ``keys``: never a value
    (``data``, ``stringData`` and the last-applied annotation, which holds them, are dropped).
    A Service loses ``clusterIP``/``clusterIPs`` (the cluster assigns them).
    """
    metadata = _clean_metadata(obj.get("metadata") or {})
    if kind.kind == "Secret":
        keys = sorted(set(obj.get("data") or {}) | set(obj.get("stringData") or {}))
        return {
            "apiVersion": kind.api_version,
            "kind": kind.kind,
            "metadata": metadata,
            "type": obj.get("type") or "Opaque",
            "keys": keys,
        }
    out: dict[str, Any] = {
        k: v for k, v in obj.items() if k not in ("status", "metadata", "apiVersion", "kind")
    }
    out = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": metadata, **out}
    if kind.kind == "Service" and isinstance(out.get("spec"), dict):
        out["spec"] = {k: v for k, v in out["spec"].items() if k not in ("clusterIP", "clusterIPs")}
    return out


def bundle_path(kind: ExportKind, name: str) -> str:
    """Where an object lives inside a bundle: ``<plural>/<name>.json``."""
    return f"{kind.plural}/{name}.json"


def bundle_stamp(at: datetime) -> str:
    """A bundle's folder name for ``at``: sortable, millisecond precision (``20261126T031500.123Z``)."""
    at = at.astimezone(UTC)
    return at.strftime("%Y%m%dT%H%M%S") + f".{at.microsecond // 1000:03d}Z"


def bundles_to_delete(stamps: Sequence[str], keep: int) -> list[str]:
    """The bundle folders beyond the newest ``keep`` (by name, which sorts by time), oldest first."""
    ordered = sorted(set(stamps))
    return ordered[: max(0, len(ordered) - keep)]


def verify_index(index: Mapping[str, Any], read: Mapping[str, tuple[int, str]]) -> list[str]:
    """Problems between a bundle's index and what was read back: (size, sha256) per path.

    An empty list means every listed file is there with its size and checksum, and nothing
    unlisted is in the bundle.
    """
    problems: list[str] = []
    listed = {str(f["path"]): f for f in index.get("files") or []}
    for path, entry in listed.items():
        got = read.get(path)
        if got is None:
            problems.append(f"{path} is listed in index.json but missing")
        elif got != (int(entry["size"]), str(entry["sha256"])):
            problems.append(
                f"{path}: sha256/size {got[1]}/{got[0]} != index {entry['sha256']}/{entry['size']}"
            )
    problems += [f"{path} is in the bundle but not in index.json" for path in sorted(set(read) - set(listed))]
    return problems
