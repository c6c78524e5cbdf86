"""The record of one run (release, rollback, check): timestamped steps, rendered as markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


@dataclass
class Step:
    at: datetime
    name: str
    outcome: str  # "ok", "failed", "skipped", "info"
    detail: str


@dataclass
class RunReport:
    """Steps and facts of one run; ``render`` gives the markdown artifact."""

    title: str
    facts: dict[str, str] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)
    outcome: str = "running"

    def step(self, name: str, outcome: str, detail: str, at: datetime | None = None) -> Step:
        s = Step(at or datetime.now(UTC), name, outcome, detail)
        self.steps.append(s)
        return s

    def table(self, caption: str, header: list[str], rows: list[list[Any]]) -> None:
        self.tables.append((caption, header, [[str(c) for c in r] for r in rows]))

    def render(self) -> str:
        lines = [f"# {self.title}", "", f"**Outcome: {self.outcome}**", ""]
        if self.facts:
            lines += (
                ["| | |", "|---|---|"] + [f"| {k} | {table_cell(v)} |" for k, v in self.facts.items()] + [""]
            )
        lines += ["## Steps", "", "| time (UTC) | step | outcome | detail |", "|---|---|---|---|"]
        lines += [
            f"| {s.at.strftime('%H:%M:%S.%f')[:-3]} | {table_cell(s.name)} | {s.outcome} | {table_cell(s.detail)} |"
            for s in self.steps
        ]
        for caption, header, rows in self.tables:
            lines += ["", f"## {caption}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(table_cell(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"


def table_cell(text: object) -> str:
    """``text`` as one cell of a markdown table: pipes escaped, one line, and ``<``/``&`` as
    entities (a regex's ``(?P<date>...)`` is not an HTML tag to the renderer)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|").replace("\n", " ")
