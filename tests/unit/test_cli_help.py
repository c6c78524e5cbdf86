"""Every argument and option of every command says what it is for in --help, the product's and the lab's."""

from __future__ import annotations

import argparse

import pytest

from greenlight.cli import build_parser, plugins


def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """``greenlight cmd sub: --flag`` for every action under ``parser`` without help text (-h aside)."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                if not helped.get(name):
                    missing.append(f"{path} {name} (the command itself)")
                missing += undocumented(sub, f"{path} {name}")
        elif not action.help:
            missing.append(f"{path}: {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_product_argument_has_help() -> None:
    """build_parser(mounted={}) (no plugins) has help on each command and each of their arguments."""
    assert undocumented(build_parser(mounted={}), "greenlight") == []


def test_every_lab_argument_has_help() -> None:
    """The lab's commands, mounted as a plugin, document each argument too."""
    mounted = plugins()
    if "lab" not in mounted:
        pytest.skip("greenlight-lab is not installed")
    parser = build_parser(mounted={"lab": mounted["lab"]})
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert undocumented(sub.choices["lab"], "greenlight lab") == []


def test_the_walk_finds_an_argument_without_help() -> None:
    """The check itself catches a missing help, in a nested command."""
    parser = argparse.ArgumentParser(prog="x")
    sub = parser.add_subparsers(dest="c")
    a = sub.add_parser("a", help="documented")
    a.add_argument("--documented", help="yes")
    a.add_argument("--bare")
    sub.add_parser("b")
    assert undocumented(parser, "x") == ["x a: --bare", "x b (the command itself)"]


def test_the_lab_stays_out_of_the_product_help() -> None:
    """`greenlight --help` lists the product's commands only, whatever plugins are mounted."""
    text = build_parser().format_help()
    assert "lab" not in text.split("exit codes:")[0].split()
    assert "verify-backups" in text
