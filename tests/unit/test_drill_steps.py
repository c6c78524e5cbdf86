"""How the DR drill's steps hand values on (flows/dr_drill.py Drill): a step's value reaches the next
step only when it passed, a failed step stops its track, and a probe that failed after measuring still
hands on its RPO. The steps' I/O is replaced by plain methods of a subclass; no SDK is involved."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from greenlight.core.backups import DumpObject, StoredObject
from greenlight.core.drill import Done, DownloadedDump, ProbedData, RestoredDatabase
from greenlight.errors import BackupInvalid
from greenlight.flows.dr_drill import Drill
from greenlight.settings import load_profile
from greenlight_lab.state import LAB_ENVIRONMENTS

DUMP = DumpObject("db/app.dump", datetime(2026, 12, 1, tzinfo=UTC), "name", (StoredObject("db/app.dump", 1),))


class ScriptedDrill(Drill):
    """A drill whose data steps return what the test says, and which records what each step received."""

    def __init__(self, fail_at: str = "", probe_failure: str = "") -> None:
        super().__init__(
            load_profile("dr", LAB_ENVIRONMENTS), load_profile("production", LAB_ENVIRONMENTS), False
        )
        self.fail_at, self.probe_failure = fail_at, probe_failure
        self.received: dict[str, object] = {}

    def _step(self, name: str) -> None:
        if self.fail_at == name:
            raise BackupInvalid(f"{name} broke")

    def _find_dump(self) -> Done[DumpObject]:
        self._step("find-dump")
        return Done("found", DUMP)

    def _download(self, dump: DumpObject) -> Done[DownloadedDump]:
        self.received["download-dump"] = dump
        self._step("download-dump")
        return Done("downloaded", DownloadedDump(dump, self._tmp / "app.dump"))

    def _restore(self, downloaded: DownloadedDump) -> Done[RestoredDatabase]:
        self.received["restore-database"] = downloaded
        self._step("restore-database")
        return Done("restored", RestoredDatabase(downloaded.dump, "postgresql://x/app_dr"))

    def _probe(self, restored: RestoredDatabase) -> Done[ProbedData]:
        self.received["probe-database"] = restored
        self._step("probe-database")
        return Done("probed", ProbedData(42.0), failure=self.probe_failure)


@pytest.fixture
def drills() -> Iterator[list[ScriptedDrill]]:
    made: list[ScriptedDrill] = []
    yield made
    for d in made:
        shutil.rmtree(d._tmp, ignore_errors=True)


def test_each_data_step_receives_what_the_one_before_it_produced(drills: list[ScriptedDrill]) -> None:
    """find -> download -> restore -> probe: each gets the previous step's value; the RPO comes back."""
    d = ScriptedDrill()
    drills.append(d)
    assert d._data_track() == (True, 42.0)
    assert d.received["download-dump"] is DUMP
    assert isinstance(d.received["restore-database"], DownloadedDump)
    assert d.received["probe-database"] == RestoredDatabase(DUMP, "postgresql://x/app_dr")
    assert [(s.name, s.outcome, s.detail) for s in d.steps] == [
        ("find-dump", "ok", "found"),
        ("download-dump", "ok", "downloaded"),
        ("restore-database", "ok", "restored"),
        ("probe-database", "ok", "probed"),
    ]


@pytest.mark.parametrize("fail_at", ["find-dump", "download-dump", "restore-database"])
def test_a_failed_step_stops_its_track_and_no_later_step_runs(
    drills: list[ScriptedDrill], fail_at: str
) -> None:
    """The failing step is recorded with its error; the steps after it neither run nor appear."""
    d = ScriptedDrill(fail_at=fail_at)
    drills.append(d)
    assert d._data_track() == (False, None)
    order = ["find-dump", "download-dump", "restore-database", "probe-database"]
    ran = order[: order.index(fail_at) + 1]
    assert [s.name for s in d.steps] == ran
    assert (d.steps[-1].outcome, d.steps[-1].detail) == ("failed", f"{fail_at} broke")
    assert not set(d.received) - set(ran)


def test_a_probe_that_fails_after_measuring_still_hands_on_its_rpo(drills: list[ScriptedDrill]) -> None:
    """A failed probe fails the track, its reason is the step's detail, and the RPO it measured counts."""
    d = ScriptedDrill(probe_failure="table orders is missing")
    drills.append(d)
    assert d._data_track() == (False, 42.0)
    assert (d.steps[-1].name, d.steps[-1].outcome, d.steps[-1].detail) == (
        "probe-database",
        "failed",
        "table orders is missing",
    )
