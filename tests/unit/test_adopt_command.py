"""``greenlight adopt``'s refusals exit with their kind's code and say FAILED on stderr."""

from __future__ import annotations

import pytest

from greenlight.cli import build_parser
from greenlight.commands.adopt import _refuse

CODES = [("not-found", 3), ("conflict", 6), ("input", 2), (None, 2)]


@pytest.mark.parametrize(("kind", "code"), CODES)
def test_refusal_kinds_map_to_exit_codes(
    kind: str | None, code: int, capsys: pytest.CaptureFixture[str]
) -> None:
    """not-found 3, conflict 6, input 2; the reason follows FAILED: on stderr, nothing on stdout."""
    assert _refuse("web cannot be adopted: because", kind) == code
    out = capsys.readouterr()
    assert out.err == "FAILED: web cannot be adopted: because\n"
    assert out.out == ""


def test_adopt_parses_env_app_and_dry_run() -> None:
    args = build_parser(mounted={}).parse_args(["adopt", "staging", "web", "--dry-run"])
    assert (args.command, args.env, args.app, args.dry_run) == ("adopt", "staging", "web", True)
