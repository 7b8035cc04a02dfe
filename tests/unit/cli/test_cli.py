"""The commands as an operator meets them: a help line for every option, shell completion, --version."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from pubip.cli.main import main, parser
from pubip.node import main as watchdog_main


def unhelped(p: argparse.ArgumentParser, path: str) -> Iterator[str]:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from unhelped(sub, f"{path} {name}")
        elif not action.help and action.dest != "help":
            yield f"{path}: {action.dest}"


def test_every_option_of_every_command_has_a_help_line() -> None:
    assert list(unhelped(parser(), "pubip")) == []
    assert list(unhelped(watchdog_main.arguments(), "pubip-watchdog")) == []


def test_shell_completion_knows_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert all(command in script for command in ("status", "moveip", "secrets", "listen"))


def test_the_watchdog_says_its_version_and_protocol(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        watchdog_main.main(["--version"])
    assert done.value.code == 0 and "(protocol 2)" in capsys.readouterr().out
