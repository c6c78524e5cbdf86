"""Progress goes to stderr only: a live line on a terminal, plain lines elsewhere, from the run's log records."""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Iterator

import pytest

from greenlight.commands.progress import RUN_LOGGERS, describe, elapsed, mode, progress


@pytest.fixture(autouse=True)
def run_loggers_at_info() -> Iterator[None]:
    """The run loggers at INFO, as Prefect's logging configuration sets them in a command."""
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.INFO)
    yield
    for lg, level in zip(loggers, levels, strict=True):
        lg.setLevel(level)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(
    ("stream", "env", "term", "expect"),
    [
        (io.StringIO(), None, "xterm", "plain"),
        (Terminal(), None, "xterm", "rich"),
        (Terminal(), None, "dumb", "plain"),
        (Terminal(), "plain", "xterm", "plain"),
        (io.StringIO(), "rich", "xterm", "rich"),
        (Terminal(), "off", "xterm", "off"),
        (Terminal(), " OFF ", "xterm", "off"),
        (Terminal(), "sparkles", "xterm", "rich"),  # unknown: decided by the stream
    ],
)
def test_mode_follows_the_stream_unless_told(
    monkeypatch: pytest.MonkeyPatch, stream: io.StringIO, env: str | None, term: str, expect: str
) -> None:
    """rich on a terminal, plain elsewhere or on TERM=dumb; GREENLIGHT_PROGRESS=off|plain|rich decides first."""
    monkeypatch.setenv("TERM", term)
    if env is None:
        monkeypatch.delenv("GREENLIGHT_PROGRESS", raising=False)
    else:
        monkeypatch.setenv("GREENLIGHT_PROGRESS", env)
    assert mode(stream) == expect


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (59.9, "59 s"),
        (60, "1 min 00 s"),
        (185, "3 min 05 s"),
        (3600, "1 h 00 min"),
        (3725, "1 h 02 min"),
    ],
)
def test_elapsed_reads_as_a_person_would_say_it(seconds: float, text: str) -> None:
    """Seconds, then minutes and seconds, then hours and minutes."""
    assert elapsed(seconds) == text


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_describe_names_the_task_and_keeps_the_first_line() -> None:
    """A task run's record reads `task: message`; a flow run's is its message; only the first line;
    the engine's bookkeeping is no step."""
    assert describe(_record("gate: pass", task_run_name="health-gate-1")) == "health-gate-1: gate: pass"
    assert describe(_record("plan: ok\nsecond line")) == "plan: ok"
    assert describe(_record("Finished in state Completed()", task_run_name="x-1")) is None
    assert describe(_record("Beginning flow run 'brisk-fox' for flow 'promote'")) is None


def test_plain_lines_frame_the_run_on_stderr_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Off a terminal: `started`, then `done in` when the block ends; stdout stays empty."""
    monkeypatch.delenv("GREENLIGHT_PROGRESS", raising=False)
    out = io.StringIO()
    with progress("promote staging abc", stream=out):
        logging.getLogger("prefect.flow_runs").info("plan: ok: release both apps")
    lines = out.getvalue().splitlines()
    assert lines[0] == "progress: promote staging abc: started"
    assert lines[-1].startswith("progress: promote staging abc: done in ")
    assert capsys.readouterr().out == ""


def test_a_failed_block_says_stopped_and_the_error_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    """An error in the block ends the progress with `stopped after` and is not swallowed."""
    monkeypatch.delenv("GREENLIGHT_PROGRESS", raising=False)
    out = io.StringIO()
    with pytest.raises(RuntimeError, match="boom"), progress("drill dr", stream=out):
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("progress: drill dr: stopped after ")


def test_silence_brings_a_still_running_line_with_the_last_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the run logs nothing for heartbeat_s, a line says it is still running and what it did last."""
    monkeypatch.delenv("GREENLIGHT_PROGRESS", raising=False)
    out = io.StringIO()
    with progress("promote production abc", stream=out, heartbeat_s=0.05):
        logging.getLogger("prefect.flow_runs").info("waiting for approval")
        deadline = time.monotonic() + 10
        while "still running" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert (
        "progress: promote production abc: still running after 0 s (last: waiting for approval)"
        in out.getvalue()
    )


def test_off_prints_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """GREENLIGHT_PROGRESS=off: not a line."""
    monkeypatch.setenv("GREENLIGHT_PROGRESS", "off")
    out = io.StringIO()
    with progress("gate staging", stream=out) as p:
        p.note("anything")
        logging.getLogger("prefect.flow_runs").info("plan: ok")
    assert out.getvalue() == ""


def test_on_a_terminal_a_live_line_shows_the_last_step_and_ends_with_the_time(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A terminal gets the rich live line (with the last logged step) and a closing `done in` line;
    the listener is gone afterwards."""
    monkeypatch.delenv("GREENLIGHT_PROGRESS", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Terminal()
    log = logging.getLogger("prefect.task_runs")
    before = list(log.handlers)
    with progress("verify-backups production", stream=out):
        log.info("restore: ok", extra={"task_run_name": "restore-1"})
        time.sleep(0.3)  # let the live line refresh once (it redraws 10 times a second)
    text = out.getvalue()
    assert "verify-backups production: restore-1: restore: ok" in text
    assert re.search(r"verify-backups production: done in \d+ s$", text.rstrip().splitlines()[-1])
    assert log.handlers == before
    assert capsys.readouterr().out == ""
