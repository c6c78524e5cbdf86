"""How the lab's Monitoring timings are chosen (flags, environment, lab.yaml, defaults) and shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greenlight_lab import supervisor
from greenlight_lab.faults import FaultRegistry
from greenlight_lab.metrics import RequestRecorder
from greenlight_lab.monitoring import MonitoringServer
from greenlight_lab.state import DEFAULT_INGESTION_DELAY_S, DEFAULT_SCRAPE_INTERVAL_S, LabState


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(supervisor.SCRAPE_INTERVAL_ENV, raising=False)
    monkeypatch.delenv(supervisor.INGESTION_DELAY_ENV, raising=False)


def test_settings_precedence_is_flags_then_env_then_lab_yaml_then_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lab up` takes the scrape interval and ingestion delay from its flags, else the environment,
    else DIR/lab.yaml, else 1 s and 1 s."""
    assert supervisor.monitoring_settings(tmp_path) == (1.0, 1.0)
    (tmp_path / "lab.yaml").write_text("scrape_interval_s: 2.5\ningestion_delay_s: 0.5\n")
    assert supervisor.monitoring_settings(tmp_path) == (2.5, 0.5)
    monkeypatch.setenv(supervisor.SCRAPE_INTERVAL_ENV, "0.5")
    monkeypatch.setenv(supervisor.INGESTION_DELAY_ENV, "0")
    assert supervisor.monitoring_settings(tmp_path) == (0.5, 0.0)
    assert supervisor.monitoring_settings(tmp_path, 1.0, 1.25) == (1.0, 1.25)


@pytest.mark.parametrize(
    ("interval", "delay", "named"),
    [
        (0.0, 1.0, "scrape interval"),
        (-1.0, 1.0, "scrape interval"),
        (float("nan"), 1.0, "scrape interval"),
        (1.0, -0.1, "ingestion delay"),
        (1.0, float("inf"), "ingestion delay"),
    ],
)
def test_bad_settings_are_refused_naming_them(
    tmp_path: Path, interval: float, delay: float, named: str
) -> None:
    """A scrape interval that is not > 0 or a delay that is not a finite number >= 0 is a LabError naming it."""
    with pytest.raises(supervisor.LabError, match=named):
        supervisor.monitoring_settings(tmp_path, interval, delay)


def test_bad_settings_from_lab_yaml_name_the_file(tmp_path: Path) -> None:
    """A bad value in lab.yaml says where it came from."""
    (tmp_path / "lab.yaml").write_text("ingestion_delay_s: soon\n")
    with pytest.raises(supervisor.LabError, match=r"lab\.yaml \(ingestion_delay_s\)"):
        supervisor.monitoring_settings(tmp_path)


def test_the_default_delay_stays_below_the_lab_profiles() -> None:
    """The lab profiles read each window their ingestion delay after it ends: the lab's must be shorter."""
    delays = supervisor.profile_ingestion_delays()
    assert delays and {"staging", "production", "dr"} <= set(delays)
    assert min(delays.values()) > DEFAULT_INGESTION_DELAY_S
    assert supervisor._monitoring_notes(DEFAULT_INGESTION_DELAY_S) == []
    (note,) = supervisor._monitoring_notes(min(delays.values()))
    assert "monitoring.ingestion_delay_s" in note


def test_the_server_and_the_lab_share_defaults() -> None:
    """MonitoringServer's defaults are the lab's: 1 s scrapes, readable 1 s after."""
    srv = MonitoringServer(RequestRecorder(), FaultRegistry())
    assert srv.settings() == {
        "scrape_interval_s": DEFAULT_SCRAPE_INTERVAL_S,
        "ingestion_delay_s": DEFAULT_INGESTION_DELAY_S,
        "stale_after_s": 0.0,
    }


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"scrape_interval_s": 0.0}, "scrape_interval_s"),
        ({"ingestion_delay_s": -1.0}, "ingestion_delay_s"),
        ({"scrape_interval_s": 90.0}, "keep_first_s"),  # the recorder must keep the seconds a reset needs
    ],
)
def test_the_server_refuses_timings_it_cannot_serve(kwargs: dict[str, float], named: str) -> None:
    """Bad timings, or a recorder that would forget a series' first scrape, are refused at construction."""
    with pytest.raises(ValueError, match=named):
        MonitoringServer(RequestRecorder(), FaultRegistry(), **kwargs)  # type: ignore[arg-type]
    MonitoringServer(RequestRecorder(keep_first_s=91.0), FaultRegistry(), scrape_interval_s=90.0)


def test_state_carries_the_timings_and_describes_them(tmp_path: Path) -> None:
    """lab.json keeps the timings; a state from before them reads as the old lab (1 s, readable at once)."""
    (tmp_path / "lab.json").write_text(json.dumps({"dir": str(tmp_path), "ready_s": 3.0}))
    old = LabState.load(tmp_path)
    assert old is not None and old.ingestion_delay_s is None
    assert supervisor.describe_monitoring(old) == "scrape interval 1 s, readable at once"
    old.scrape_interval_s, old.ingestion_delay_s = 2.0, 0.75
    old.save()
    again = LabState.load(tmp_path)
    assert again is not None and (again.scrape_interval_s, again.ingestion_delay_s) == (2.0, 0.75)
    assert supervisor.describe_monitoring(again) == "scrape interval 2 s, ingestion delay 0.75 s"
    info = supervisor.status(tmp_path)
    assert (info["scrape_interval_s"], info["ingestion_delay_s"]) == (2.0, 0.75)
    assert info["monitoring_text"] == "scrape interval 2 s, ingestion delay 0.75 s"
