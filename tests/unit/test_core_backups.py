"""Backup decisions over snapshots: finding dumps, each check, the verdict, config export."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from greenlight.core.backups import (
    EXPORT_KINDS,
    Check,
    DumpObject,
    StoredObject,
    TableProbe,
    achieved_rpo,
    bundle_stamp,
    bundles_to_delete,
    check_data_rpo,
    check_found,
    check_freshness,
    check_integrity,
    check_probe,
    check_replica,
    check_restore,
    check_size,
    check_sql_probe,
    collect_dumps,
    decide_verification,
    download_layout,
    export_object,
    parse_date,
    previous_sizes,
    quote_column,
    quote_table,
    random_candidates,
    render_report,
    select_newest,
    unsafe_path_reason,
    verify_index,
)
from greenlight.errors import BackupInvalid

PATTERN = r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.sql\.gz$"
NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KINDS = {k.kind: k for k in EXPORT_KINDS}


def obj(
    name: str, size: int = 100, md5: str | None = "m", crc: str | None = "c", **meta: str
) -> StoredObject:
    return StoredObject(name, size, md5, crc, meta)


def dump(name: str, when: datetime, *members: StoredObject) -> DumpObject:
    return DumpObject(name, when, "name", members or (obj(name),))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-26T0300Z", datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        ("2026-11-26T03:00:00+00:00", datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        ("2026-11-26T04:00:00+01:00", datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        ("20261126T030000Z", datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        ("20261126", datetime(2026, 11, 26, tzinfo=UTC)),
        ("2026-11-26T03:00:00", datetime(2026, 11, 26, 3, 0, tzinfo=UTC)),
        ("yesterday", None),
        ("2026-13-40T0300Z", None),
    ],
)
def test_parse_date_reads_names_and_metadata_in_utc(text: str, expected: datetime | None) -> None:
    """Dates from names and ``dump_time`` metadata are read as UTC; anything else is None."""
    assert parse_date(text) == expected


def test_collect_dumps_prefers_metadata_time_and_skips_non_matching() -> None:
    """The dump time comes from ``dump_time`` metadata when valid, else the name; other objects are ignored."""
    objects = [
        obj("db/2026-11-25T0300Z.sql.gz"),
        obj("db/2026-11-24T0300Z.sql.gz", dump_time="2026-11-24T02:55:00+00:00"),
        obj("db/2026-11-23T0300Z.sql.gz", dump_time="garbage"),
        obj("db/readme.txt"),
        obj("db/2026-11-22T0300Z.sql"),
    ]
    dumps = collect_dumps(objects, PATTERN)
    assert [(d.name, d.dump_time_source) for d in dumps] == [
        ("db/2026-11-23T0300Z.sql.gz", "name"),
        ("db/2026-11-24T0300Z.sql.gz", "metadata"),
        ("db/2026-11-25T0300Z.sql.gz", "name"),
    ]
    assert dumps[1].dump_time == datetime(2026, 11, 24, 2, 55, tzinfo=UTC)


def test_collect_dumps_groups_a_directory_dump_under_its_prefix() -> None:
    """A prefix holding toc.dat is one dump of all its files, dated by the toc.dat's metadata."""
    objects = [
        obj("db/2026-11-26T0300Z.dir/toc.dat", 10, dump_time="2026-11-26T03:00:00Z", format="directory"),
        obj("db/2026-11-26T0300Z.dir/3001.dat.gz", 500),
        obj("db/2026-11-26T0300Z.dir/3002.dat.gz", 700),
        obj("db/2026-11-25T0300Z.dump", 1000),
    ]
    dumps = collect_dumps(objects, r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)\.(dump|dir)$")
    newest = select_newest(dumps)
    assert newest is not None and newest.is_directory
    assert newest.name == "db/2026-11-26T0300Z.dir/"
    assert newest.size == 1210
    assert newest.declared_format == "directory"
    assert sorted(newest.relative(m) for m in newest.members) == ["3001.dat.gz", "3002.dat.gz", "toc.dat"]
    assert len(dumps) == 2


DIR = "db/2025-01-01T0000Z/"


def dir_dump(prefix: str, *rest: str) -> DumpObject:
    """A directory dump under ``prefix`` with a toc.dat and members ``prefix + r`` for each ``r``."""
    members = (obj(prefix + "toc.dat"), *(obj(prefix + r) for r in rest))
    return DumpObject(prefix, NOW, "name", members)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("3001.dat.gz", None),
        ("blobs/blob_16384.dat", None),
        ("..", "'..' component"),
        ("../../../../tmp/x", "'..' component"),
        ("a/../../x", "'..' component"),
        ("a/..", "'..' component"),
        (".", "'.' component"),
        ("./toc.dat", "'.' component"),
        ("/tmp/x", "absolute"),
        ("a//b", "empty component"),
        ("a/", "empty component"),
        ("", "empty"),
        ("..\\..\\x", "backslash"),
        ("a\\b", "backslash"),
        ("a\x00b", "NUL"),
        ("a\nb", "control character"),
        ("x" * 256, "longer than 255"),
    ],
)
def test_unsafe_path_reason_refuses_what_would_leave_the_directory(path: str, reason: str | None) -> None:
    """A path inside a dump is safe only as plain '/'-separated names: no '..', '.', empty part, '/', '\\', NUL."""
    got = unsafe_path_reason(path)
    if reason is None:
        assert got is None
    else:
        assert got is not None and reason in got


def test_download_layout_of_a_directory_dump_keeps_members_under_its_directory() -> None:
    """A directory dump lands under its own directory name; each member under its path inside the dump."""
    root, paths = download_layout(dir_dump(DIR, "3001.dat.gz", "blobs/b1.dat"))
    assert root == "2025-01-01T0000Z"
    assert paths == {
        DIR + "toc.dat": "2025-01-01T0000Z/toc.dat",
        DIR + "3001.dat.gz": "2025-01-01T0000Z/3001.dat.gz",
        DIR + "blobs/b1.dat": "2025-01-01T0000Z/blobs/b1.dat",
    }


def test_download_layout_of_a_file_dump_is_its_basename() -> None:
    """A file dump lands under its basename, whatever the prefix (the prefix never becomes a local path)."""
    name = "db/../x/2025-01-01T0000Z.sql.gz"
    root, paths = download_layout(dump(name, NOW))
    assert root == "2025-01-01T0000Z.sql.gz" and paths == {name: root}


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../../../../tmp/x", "'..' component"),
        ("/tmp/x", "absolute"),  # db/2025-01-01T0000Z//tmp/x
        ("sub/../../x", "'..' component"),
        ("..\\..\\x", "backslash"),
        ("a\x00b", "NUL"),
        ("a//b", "empty component"),
        ("sub/", "empty component"),  # a "folder" placeholder object
        ("", "empty"),  # an object named like the prefix itself
    ],
)
def test_download_layout_refuses_a_member_that_would_leave_the_download_directory(
    member: str, reason: str
) -> None:
    """BackupInvalid naming the dump, the object and why, for any member whose local path is not plainly inside."""
    bad = DIR + member
    with pytest.raises(BackupInvalid) as info:
        download_layout(dir_dump(DIR, "3001.dat.gz", member))
    message = str(info.value)
    assert repr(bad) in message and DIR in message and reason in message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("db/2025-01-01T0000Z.sql.gz/..", "'..' component"),
        ("db/2025-01-01T0000Z.sql.gz/.", "'.' component"),
        ("db\\..\\2025-01-01T0000Z.sql.gz", "backslash"),
        ("2025-01-01T0000Z.sql.gz\x00", "NUL"),
    ],
)
def test_download_layout_refuses_a_file_dump_whose_basename_is_not_a_plain_name(
    name: str, reason: str
) -> None:
    """A file dump's basename must itself be a plain file name."""
    with pytest.raises(BackupInvalid, match="cannot be downloaded safely") as info:
        download_layout(dump(name, NOW))
    assert repr(name) in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize("prefix", ["db/../", "db/./", "db//", "/", "db/a\\..\\/"])
def test_download_layout_refuses_a_directory_dump_whose_own_name_is_not_plain(prefix: str) -> None:
    """The directory a dump lands in is its last name component: '..', '.', empty or a backslash is refused."""
    with pytest.raises(BackupInvalid, match="cannot be downloaded safely"):
        download_layout(dir_dump(prefix, "3001.dat.gz"))


def test_download_layout_refuses_members_that_collide() -> None:
    """A member that is both a file and another member's directory cannot be written: refused, naming both."""
    with pytest.raises(BackupInvalid, match=r"both a file and a directory") as info:
        download_layout(dir_dump(DIR, "a", "a/b"))
    assert repr(DIR + "a") in str(info.value) and repr(DIR + "a/b") in str(info.value)


def test_collect_dumps_keeps_a_directory_dump_with_a_hostile_member_for_the_download_to_refuse() -> None:
    """A hostile member does not hide its dump (an older one would be verified instead): it stays a member."""
    objects = [obj(DIR + "toc.dat"), obj(DIR + "../../../../tmp/x"), obj("db/2024-12-31T0000Z/toc.dat")]
    dumps = collect_dumps(objects, r"(?P<date>\d{4}-\d{2}-\d{2}T\d{4}Z)")
    newest = select_newest(dumps)
    assert newest is not None and newest.name == DIR
    assert DIR + "../../../../tmp/x" in [m.name for m in newest.members]
    with pytest.raises(BackupInvalid, match=r"\.\./\.\./\.\./\.\./tmp/x"):
        download_layout(newest)


def test_select_newest_of_nothing_is_none() -> None:
    """No dump: nothing is selected."""
    assert select_newest([]) is None


def test_random_candidates_exclude_the_newest_and_old_dumps() -> None:
    """Random picks come from the window, never the newest (already verified)."""
    dumps = [dump(f"d{k}", NOW - timedelta(days=k)) for k in range(10)]
    names = [d.name for d in random_candidates(dumps, NOW, 3)]
    assert names == ["d1", "d2", "d3"]


def test_previous_sizes_are_the_older_dumps_newest_first() -> None:
    """The size history of a dump is the dumps before it, newest first, at most ``history``."""
    dumps = [dump(f"d{k}", NOW - timedelta(days=k), obj(f"d{k}", size=100 + k)) for k in range(5)]
    assert previous_sizes(dumps, dumps[1], history=2) == [102, 103]
    assert previous_sizes(dumps, dumps[4]) == []


@pytest.mark.parametrize(
    ("age_h", "ok", "words"),
    [
        (6, True, "old"),
        (24, True, "old"),
        (25, False, "stale"),
        (-1, False, "future"),
        (-0.01, True, "old"),  # within clock skew
    ],
)
def test_freshness_against_rpo(age_h: float, ok: bool, words: str) -> None:
    """A dump older than the RPO target, or dated in the future, fails freshness, with the numbers."""
    c = check_freshness(NOW - timedelta(hours=age_h), NOW, 86400, "db/x.sql.gz")
    assert c.ok is ok
    assert words in c.reason and "db/x.sql.gz" in c.reason


@pytest.mark.parametrize(
    ("size", "previous", "tolerance", "ok", "words"),
    [
        (100, [100, 100, 100], 0.2, True, "below median"),
        (81, [100, 100, 100], 0.2, True, "below median"),
        (79, [100, 100, 100], 0.2, False, "shrank"),
        (50, [100, 100, 1], 0.2, False, "median 100"),
        (500, [100], 0.2, True, "below median"),
        (10, [], 0.2, True, "no earlier dump"),
        (0, [], 0.2, False, "empty"),
        (0, [100], 1.0, False, "empty"),
    ],
)
def test_size_against_median(size: int, previous: list[int], tolerance: float, ok: bool, words: str) -> None:
    """A dump more than the tolerance below the median of the previous ones (or empty) fails."""
    c = check_size(size, previous, tolerance, "d")
    assert c.ok is ok
    assert words in c.reason


def test_integrity_passes_on_matching_hashes_and_fails_with_the_mismatch() -> None:
    """Computed hashes equal to the stored ones pass; any difference or download error fails naming it."""
    d = dump("db/d.sql.gz", NOW, obj("db/d.sql.gz", 10, "md5A", "crcA"))
    assert check_integrity(d, {"db/d.sql.gz": (10, "md5A", "crcA")}, None).ok
    bad = check_integrity(d, {"db/d.sql.gz": (10, "md5B", "crcA")}, None)
    assert not bad.ok and "md5 mismatch" in bad.reason and "md5A" in bad.reason
    short = check_integrity(d, {"db/d.sql.gz": (5, "md5A", "crcA")}, None)
    assert not short.ok and "size" in short.reason
    assert not check_integrity(d, {}, None).ok
    err = check_integrity(d, {}, "gs://b/db/d.sql.gz: crc32c mismatch")
    assert not err.ok and "crc32c mismatch" in err.reason
    unhashed = dump("u", NOW, obj("u", 10, None, None))
    assert not check_integrity(unhashed, {"u": (10, "x", "y")}, None).ok


@pytest.mark.parametrize(
    ("replica", "ok", "words"),
    [
        ([obj("db/d", 10, "m", "c")], True, "matches"),
        (None, False, "missing"),
        ([], False, "missing"),
        ([obj("db/d", 10, "m2", "c2")], False, "md5"),
        ([obj("db/d", 11, "m", "c")], False, "size"),
        ([obj("db/d", 10, None, "c")], True, "matches"),  # composite objects have no md5
        ([obj("db/d", 10, None, None)], False, "no stored hash"),
        ([obj("db/other", 10, "m", "c")], False, "missing"),
    ],
)
def test_replica_must_exist_with_same_size_and_hashes(
    replica: list[StoredObject] | None, ok: bool, words: str
) -> None:
    """The cross-region copy passes only when every member is there with the same size and hashes."""
    primary = dump("db/d", NOW, obj("db/d", 10, "m", "c"))
    c = check_replica(primary, replica, "dr-bucket")
    assert c.ok is ok
    assert words in c.reason
    if not ok:
        assert "dr-bucket" in c.reason


def test_restore_check_carries_time_or_the_tools_reason() -> None:
    """A restore check says how long it took, or why it failed."""
    assert check_restore(True, 1.5, "plain-gzip", "d").value == "1.5s"
    failed = check_restore(False, None, "the gzip stream ends early", "d")
    assert not failed.ok and "ends early" in failed.reason


@pytest.mark.parametrize(
    ("probe", "min_rows", "ok", "words"),
    [
        (TableProbe("users", True, 2000, NOW), 1000, True, "2000 rows"),
        (TableProbe("users", True, 999), 1000, False, "fewer than the minimum 1000"),
        (TableProbe("users", False), 0, False, "missing"),
        (TableProbe("users", True, error="permission denied"), 0, False, "permission denied"),
        (TableProbe("users", True, 0), 0, True, "0 rows"),
    ],
)
def test_table_probe(probe: TableProbe, min_rows: int, ok: bool, words: str) -> None:
    """A probed table must exist and hold at least its minimum rows."""
    c = check_probe(probe, min_rows, "d")
    assert c.ok is ok and words in c.reason


@pytest.mark.parametrize(
    ("result", "expect_true", "error", "ok"),
    [
        (True, True, None, True),
        (False, True, None, False),
        (None, True, None, False),
        (1, True, None, False),
        (False, False, None, True),
        (None, True, "syntax error", False),
    ],
)
def test_sql_probe_wants_a_boolean(result: object, expect_true: bool, error: str | None, ok: bool) -> None:
    """An SQL probe passes only when it ran and returned exactly the expected boolean."""
    assert check_sql_probe("p", result, expect_true, error, "d").ok is ok


def test_achieved_rpo_is_dump_time_minus_newest_row() -> None:
    """The achieved RPO is measured from the newest timestamp among the probed tables."""
    probes = [
        TableProbe("a", True, 1, NOW - timedelta(seconds=50)),
        TableProbe("b", True, 1, NOW - timedelta(seconds=20)),
        TableProbe("c", True, 1, None),
    ]
    assert achieved_rpo(NOW, probes) == 20.0
    assert achieved_rpo(NOW, [TableProbe("a", True, 0)]) is None
    assert check_data_rpo(20.0, 86400).ok
    stale = check_data_rpo(90000.0, 86400, "d")
    assert not stale.ok and "older than the dump" in stale.reason


def test_found_fails_naming_where_and_pattern() -> None:
    """No dump under the prefix: the reason names the location and the pattern."""
    c = check_found(None, "gs://b/db/", PATTERN, 3)
    assert not c.ok and "gs://b/db/" in c.reason and "3 objects" in c.reason


@pytest.mark.parametrize(
    ("oks", "verified", "reasons"),
    [
        ([True, True], True, 0),
        ([True, False], False, 1),
        ([False, False], False, 2),
        ([], False, 1),
    ],
)
def test_verdict_only_when_every_check_passed(oks: list[bool], verified: bool, reasons: int) -> None:
    """Verified needs at least one check and all of them passed; every failure's reason is listed."""
    checks = [Check(f"c{i}", ok, "v", "l", f"reason {i}") for i, ok in enumerate(oks)]
    v = decide_verification(checks)
    assert v.verified is verified
    assert len(v.reasons) == reasons


def test_report_lists_every_check_and_value() -> None:
    """The markdown report holds the verdict, each check row and each value."""
    checks = [
        Check("size", True, "10 bytes", "drop <= 20%", "fine", "d"),
        Check("restore", False, "-", "x", "a|b"),
    ]
    md = render_report("T", decide_verification(checks), {"restore_seconds": 1.5})
    assert (
        "NOT VERIFIED" in md and "| size | d | 10 bytes |" in md and "a\\|b" in md and "restore_seconds" in md
    )


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("users", '"users"'),
        ("public.users", '"public"."users"'),
        ("a;drop", None),
        ("a.b.c", None),
        ("Users", None),
    ],
)
def test_quote_table_accepts_only_plain_identifiers(name: str, quoted: str | None) -> None:
    """Table names become quoted identifiers; anything else is refused."""
    if quoted is None:
        with pytest.raises(ValueError):
            quote_table(name)
    else:
        assert quote_table(name) == quoted
    assert quote_column("created_at") == '"created_at"'
    with pytest.raises(ValueError):
        quote_column('x"')


def test_export_secret_keeps_keys_never_values() -> None:
    """An exported Secret has its name, type and keys; data, stringData and last-applied are gone."""
    secret = {
        "metadata": {
            "name": "db",
            "namespace": "ns",
            "uid": "u",
            "resourceVersion": "7",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": '{"data":{"password":"c2VjcmV0"}}'
            },
        },
        "type": "Opaque",
        "data": {"password": "c2VjcmV0"},
        "stringData": {"token": "hunter2"},
    }
    out = export_object(KINDS["Secret"], secret)
    assert out == {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "db", "namespace": "ns"},
        "type": "Opaque",
        "keys": ["password", "token"],
    }
    assert "c2VjcmV0" not in repr(out) and "hunter2" not in repr(out)


def test_export_strips_server_fields_and_cluster_ip() -> None:
    """Server-managed metadata, status and a Service's cluster IPs are not exported."""
    svc = {
        "metadata": {
            "name": "backend",
            "uid": "u",
            "resourceVersion": "1",
            "creationTimestamp": "t",
            "generation": 2,
            "managedFields": [],
            "labels": {"app": "backend"},
            "annotations": {"greenlight.io/active": "blue"},
        },
        "spec": {"clusterIP": "10.0.0.1", "clusterIPs": ["10.0.0.1"], "selector": {"app": "backend"}},
        "status": {"loadBalancer": {}},
    }
    out = export_object(KINDS["Service"], svc)
    assert out == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "backend",
            "labels": {"app": "backend"},
            "annotations": {"greenlight.io/active": "blue"},
        },
        "spec": {"selector": {"app": "backend"}},
    }


def test_bundle_stamps_sort_by_time_and_retention_deletes_oldest() -> None:
    """Bundle folder names sort by time; retention deletes the oldest beyond N."""
    stamps = [bundle_stamp(NOW + timedelta(milliseconds=k)) for k in (5, 1, 3)]
    assert sorted(stamps) == [bundle_stamp(NOW + timedelta(milliseconds=k)) for k in (1, 3, 5)]
    assert bundles_to_delete(stamps, 2) == [bundle_stamp(NOW + timedelta(milliseconds=1))]
    assert bundles_to_delete(stamps, 5) == []


def test_verify_index_finds_missing_changed_and_extra_files() -> None:
    """Read-back problems are listed per file; a matching bundle gives none."""
    index = {
        "files": [{"path": "a.json", "size": 2, "sha256": "x"}, {"path": "b.json", "size": 2, "sha256": "y"}]
    }
    assert verify_index(index, {"a.json": (2, "x"), "b.json": (2, "y")}) == []
    problems = verify_index(index, {"a.json": (2, "z"), "c.json": (1, "w")})
    assert len(problems) == 3
    assert any("a.json" in p for p in problems) and any("b.json" in p and "missing" in p for p in problems)
    assert any("c.json" in p and "not in index" in p for p in problems)
