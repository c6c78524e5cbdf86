"""The exit codes are one table: each kind of error has its own code, and docs/cli.md, the errors
module and `greenlight --help` say the same as greenlight.errors.OUTCOMES."""

from __future__ import annotations

import inspect
import re

import pytest

import greenlight.cli
import greenlight.errors as errors
from greenlight.commands.reference import BEGIN, END, cli_doc, exit_codes_markdown, exit_codes_text, fill
from greenlight.errors import (
    _EXIT_CODES,
    OUTCOMES,
    BackupNotVerified,
    DrillFailed,
    GreenlightError,
    InputInvalid,
    exit_code,
)
from greenlight.settings import REPO_ROOT

CLI_DOC = REPO_ROOT / "docs" / "cli.md"


def test_every_code_is_distinct_and_documented_once() -> None:
    """No two kinds share a code, and every code exit_code() can give has one row in OUTCOMES."""
    codes = [code for _, code in _EXIT_CODES]
    assert len(codes) == len(set(codes))
    rows = [o.code for o in OUTCOMES]
    assert len(rows) == len(set(rows)) and rows == sorted(rows)
    assert set(codes) | {0, 1, errors.INTERRUPTED} == set(rows)


@pytest.mark.parametrize(("kind", "code"), _EXIT_CODES, ids=[k.__name__ for k, _ in _EXIT_CODES])
def test_each_row_names_the_kind_behind_its_code(kind: type[BaseException], code: int) -> None:
    """The row of code N names the error class that exits N."""
    row = next(o for o in OUTCOMES if o.code == code)
    assert kind.__name__ in row.kind.split(", ")


def _kinds() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    todo: list[type[BaseException]] = [GreenlightError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


@pytest.mark.parametrize(
    "kind", [k for k in _kinds() if k.__module__.startswith("greenlight.")], ids=lambda k: k.__name__
)
def test_every_error_class_ends_in_a_documented_row(kind: type[BaseException]) -> None:
    """Every GreenlightError subclass in the product (the flows' too) exits with a code that has a row;
    the abstract families (GreenlightError, PermanentError) exit 1."""
    code = exit_code(kind.__new__(kind))
    assert code in {o.code for o in OUTCOMES}
    if kind in (DrillFailed, BackupNotVerified):
        assert kind.__name__ in next(o for o in OUTCOMES if o.code == code).kind


def test_docs_cli_md_has_the_generated_table_and_commands() -> None:
    """docs/cli.md's generated sections are what the code renders now
    (regenerate: uv run python -m greenlight.commands.reference)."""
    text = CLI_DOC.read_text()
    assert cli_doc(text) == text, "docs/cli.md is stale: run `uv run python -m greenlight.commands.reference`"
    assert exit_codes_markdown() in text


def test_the_table_in_docs_has_one_row_per_code() -> None:
    """The Markdown table lists each code once, in order."""
    rows = re.findall(r"^\| (\d+) \|", exit_codes_markdown(), re.M)
    assert [int(r) for r in rows] == [o.code for o in OUTCOMES]


def test_help_and_docstrings_list_every_code() -> None:
    """`greenlight --help` (its epilog) and the module docstrings of greenlight.cli and greenlight.errors
    mention every code."""
    epilog = greenlight.cli.build_parser(mounted={}).format_help()
    assert exit_codes_text() in epilog
    for doc in (greenlight.cli.__doc__ or "", inspect.getdoc(errors) or ""):
        for o in OUTCOMES:
            assert re.search(rf"(?<!\d){o.code}(?!\d)", doc), (o.code, doc[:200])


def test_fill_replaces_only_its_section_and_refuses_a_missing_one() -> None:
    """A generated section is replaced between its markers, the text around it kept; no markers: an error."""
    text = f"before\n{BEGIN.format(name='x')}old\n{END.format(name='x')}\nafter\n"
    assert fill(text, "x", "new\n") == f"before\n{BEGIN.format(name='x')}new\n{END.format(name='x')}\nafter\n"
    with pytest.raises(InputInvalid, match="no generated section 'y'"):
        fill(text, "y", "new\n")
