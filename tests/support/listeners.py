"""One way to build a listener for unit tests: its runner scripted, its state in the test's directory, no
threads started (a test calls the loops' steps itself)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pubip import protocol
from pubip.controller.listener import Listener
from pubip.controller.runners import Outcome


class ScriptedRunner:
    """A Runner (runners.py) whose runs the test scripts: SCRIPT(run_id, dead, extravars, check) -> Outcome.
    Without a script, a run is a test failure."""

    def __init__(self, shares_run_state: bool = False) -> None:
        self.shares_run_state = shares_run_state  # a run state file, as the playbook runner's
        self.gathered: set[str] = set()
        self.script: Any = None
        self.runs = 0

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        self.runs += 1
        if self.script is None:
            raise AssertionError("no takeover run may start here")
        out: Outcome = self.script(run_id, dead, extravars, check)
        return out


def make_listener(tmp_path: Path, secrets: dict[str, str], *, fast_takeover: bool = True, **options: Any
                  ) -> Listener:
    inventory = tmp_path / "inventory.yml"
    if not inventory.exists():
        inventory.write_text("all: {}\n")
    return Listener(str(inventory), secrets, str(tmp_path / "state"), fast_takeover=fast_takeover,
                    runner=options.pop("runner", None) or ScriptedRunner(), **options)


def heartbeat(listener: Listener, node: str, peer: str | None = None, payload: dict[str, Any] | None = None
              ) -> list[protocol.Order]:
    """NODE's heartbeat, as the HTTP front hands it over: parsed, strictly (an unknown key is a test's error)."""
    return listener.heartbeat(node, peer, parse(node, payload))


def heartbeat_answer(listener: Listener, node: str, peer: str | None = None, payload: dict[str, Any] | None = None
                     ) -> protocol.HeartbeatAnswer:
    return listener.heartbeat_answer(node, peer, parse(node, payload))


def parse(node: str, payload: dict[str, Any] | None) -> protocol.Heartbeat:
    return protocol.Heartbeat.parse({"node": node, "version": protocol.VERSION, **(payload or {})})


def runner_of(listener: Listener) -> ScriptedRunner:
    runner = listener.runner
    assert isinstance(runner, ScriptedRunner)
    return runner


class Clock:
    """The monotonic clock, shifted by what a unit test says has passed (advance): loops that wait end in real
    time, and a test can skip ahead."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds
