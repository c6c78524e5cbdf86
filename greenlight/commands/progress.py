"""Progress of a long command (promote, deploy, gate, monitor, drill, verify-backups, an approval's
wait) on stderr, so stdout keeps only the outcome that scripts and tests read.

On a terminal: one live line (a spinner, the elapsed time and the last thing the run logged) under
the run's log lines. Elsewhere (CI, a pipe, a log file): plain lines, ``progress: TITLE: started``,
``... still running after N s (last: ...)`` when the run has logged nothing for a while, and
``... done in N s`` / ``... stopped after N s``; the run's own log lines stay as Prefect prints them.
``GREENLIGHT_PROGRESS=plain`` forces the plain lines, ``off`` turns progress off.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

#: the loggers a flow run's and its task runs' messages go to
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


def mode(stream: TextIO) -> str:
    """``rich`` on a terminal, ``plain`` otherwise; ``GREENLIGHT_PROGRESS`` (off, plain, rich) decides first."""
    chosen = os.environ.get("GREENLIGHT_PROGRESS", "").strip().lower()
    if chosen in ("off", "plain", "rich"):
        return chosen
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "rich" if tty and os.environ.get("TERM") != "dumb" else "plain"


#: what Prefect's engine logs about every run: not a step of the command, so not shown as one
ENGINE_CHATTER = ("Finished in state", "Beginning flow run", "Beginning subflow run", "Created task run")


def describe(record: logging.LogRecord) -> str | None:
    """A run's log record as one short line (``task-name: message`` for a task run's); None for the
    engine's own bookkeeping (:data:`ENGINE_CHATTER`)."""
    message = record.getMessage().splitlines()[0] if record.getMessage() else ""
    if not message or message.startswith(ENGINE_CHATTER):
        return None
    task = getattr(record, "task_run_name", None)
    return f"{task}: {message}" if task else message


def elapsed(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


class _Plain:
    """Plain progress lines; a line after ``heartbeat_s`` of silence says the run is still going."""

    def __init__(self, title: str, stream: TextIO, heartbeat_s: float) -> None:
        self.title, self.stream, self.heartbeat_s = title, stream, heartbeat_s
        self.started = time.monotonic()
        self.last = ""
        self.last_seen = self.started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="greenlight-progress")

    def _say(self, text: str) -> None:
        print(f"progress: {self.title}: {text}", file=self.stream, flush=True)

    def start(self) -> None:
        self._say("started")
        self._thread.start()

    def update(self, text: str) -> None:
        self.last, self.last_seen = text, time.monotonic()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            if time.monotonic() - self.last_seen >= self.heartbeat_s:
                took = elapsed(time.monotonic() - self.started)
                self._say(f"still running after {took}" + (f" (last: {self.last})" if self.last else ""))
                self.last_seen = time.monotonic()

    def stop(self, ok: bool) -> None:
        self._stop.set()
        self._thread.join(1)
        took = elapsed(time.monotonic() - self.started)
        self._say(f"done in {took}" if ok else f"stopped after {took}")


class _Rich:
    """A live line on the terminal, drawn by the console Prefect logs through (so log lines print above it)."""

    def __init__(self, title: str, stream: TextIO) -> None:
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.title = title
        self.console = _console_of(stream) or Console(file=stream)
        self.started = time.monotonic()
        stdout_tty = _isatty(sys.stdout)
        self.bar = Progress(
            SpinnerColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=True,
            # stdout on the same terminal: its lines print above the live line, not through it
            redirect_stdout=stdout_tty,
            redirect_stderr=False,
        )
        self.task = self.bar.add_task(title, total=None)

    def start(self) -> None:
        self.bar.start()

    def update(self, text: str) -> None:
        width = max(20, self.console.width - 30)
        line = f"{self.title}: {text}"
        self.bar.update(self.task, description=line if len(line) <= width else line[: width - 1] + "…")

    def stop(self, ok: bool) -> None:
        self.bar.stop()
        took = elapsed(time.monotonic() - self.started)
        self.console.print(f"{self.title}: {'done in' if ok else 'stopped after'} {took}", highlight=False)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _console_of(stream: TextIO) -> Any:
    """The rich console of Prefect's console log handler when it writes to ``stream``, else None."""
    for handler in logging.getLogger().handlers:
        console = getattr(handler, "console", None)
        if console is not None and getattr(handler, "stream", None) is stream:
            return console
    return None


class _Listener(logging.Handler):
    def __init__(self, sink: _Plain | _Rich) -> None:
        super().__init__(logging.INFO)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # progress never breaks the command
            text = describe(record)
            if text is not None:
                self.sink.update(text)


class Progress:
    """What a command holds while it runs: :meth:`note` says what it is doing (between log lines)."""

    def __init__(self, sink: _Plain | _Rich | None) -> None:
        self.sink = sink

    def note(self, text: str) -> None:
        if self.sink is not None:
            self.sink.update(text)


@contextlib.contextmanager
def progress(title: str, stream: TextIO | None = None, heartbeat_s: float = 30.0) -> Iterator[Progress]:
    """Show ``title``'s progress on ``stream`` (stderr) while the block runs; the run's log records
    (loggers :data:`RUN_LOGGERS`) say what it is doing."""
    stream = stream or sys.stderr
    how = mode(stream)
    if how == "off":
        yield Progress(None)
        return
    sink: _Plain | _Rich = _Rich(title, stream) if how == "rich" else _Plain(title, stream, heartbeat_s)
    listener = _Listener(sink)
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    for logger in loggers:
        logger.addHandler(listener)
    sink.start()
    ok = False
    try:
        yield Progress(sink)
        ok = True
    finally:
        for logger in loggers:
            logger.removeHandler(listener)
        sink.stop(ok)
