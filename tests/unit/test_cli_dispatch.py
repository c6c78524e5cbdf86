"""The release commands dispatch through one table: every command has its handler, and no more."""

from __future__ import annotations

from greenlight.commands import release


def test_every_release_command_has_exactly_one_handler() -> None:
    assert set(release.HANDLERS) == release.COMMANDS
