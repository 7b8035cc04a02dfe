"""Log lines for a file or terminal, and for journald (priority prefix, no duplicated time or program)."""

from __future__ import annotations

import logging

import pytest

from pubip import logs


def line(handler: logging.Handler, level: int, msg: str) -> str:
    return handler.format(logging.LogRecord("pubip.watchdog", level, __file__, 1, msg, None, None))


def test_under_systemd_a_line_is_the_message_behind_its_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    h = logs.handler("pubip-watchdog", None)
    assert line(h, logging.WARNING, "Lost the cluster") == "<4>Lost the cluster"
    assert line(h, logging.ERROR, "x") == "<3>x" and line(h, logging.INFO, "y") == "<6>y"


def test_elsewhere_a_line_carries_time_program_and_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    out = line(logs.handler("pubip-listener", None), logging.WARNING, "Node node3 is dead")
    assert "pubip-listener[" in out and "WARNING Node node3 is dead" in out
