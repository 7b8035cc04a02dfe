"""When the listener lets a node retake its IPs while a takeover run runs (holds_retake): only what the
run would pin to the node if it then could not reach it, or once the run has gathered the node."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pubip.controller.listener import Listener

IP1, IP2 = "198.51.100.1/24", "198.51.100.2/24"


class Runner:
    shares_run_state = False

    def __init__(self) -> None:
        self.gathered: set[str] = set()


@pytest.fixture
def listener(tmp_path: Path) -> Listener:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    lst = Listener(str(inventory), {"node1": "s" * 32, "node2": "t" * 32}, str(tmp_path / "state"),
                   fast_takeover=False)
    lst.runner = Runner()  # type: ignore[assignment]
    return lst


def report(lst: Listener, node: str, holds: list[str], tick: float) -> None:
    lst.heartbeat(node, None, {"membership": {"tick": tick, "lease": 3.0, "heard": {}}, "holds": holds})


def start_run(lst: Listener) -> None:
    """What work() does: mark the run (settle_orders, await_reports), then snapshot the reports."""
    lst.running_run, lst.run_pinned = 0, None
    lst.run_marked = time.monotonic()


def test_no_run_or_a_gathered_node_never_holds_a_retake(listener: Listener) -> None:
    assert listener.holds_retake("node1", [IP1]) is False
    start_run(listener)
    listener.runner.gathered.add("node1")  # type: ignore[attr-defined]
    assert listener.holds_retake("node1", [IP1]) is False


def test_before_the_snapshot_every_retake_waits(listener: Listener) -> None:
    start_run(listener)
    report(listener, "node1", [IP1], tick=time.monotonic())
    assert listener.holds_retake("node1", [IP1]) is True


def test_after_the_snapshot_only_ips_it_pinned_to_the_node_may_be_retaken(listener: Listener) -> None:
    report(listener, "node2", [IP2], tick=time.monotonic() - 5)  # made before the mark: the run ignores it
    start_run(listener)
    report(listener, "node1", [IP1], tick=time.monotonic())
    pinned = listener.extravars([], {}, pin=True)["pubip_reported_holds"]
    assert pinned == {"node1": [IP1]}
    assert listener.holds_retake("node1", [IP1]) is False
    assert listener.holds_retake("node1", [IP1, IP2]) is True  # IP2 was not in its report
    assert listener.holds_retake("node2", [IP2]) is True  # no report after the mark
    assert listener.holds_retake("node1", []) is True and listener.holds_retake("node1", None) is True
    report(listener, "node1", [IP1, IP2], tick=time.monotonic())  # later reports do not change the run's pins
    assert listener.holds_retake("node1", [IP2]) is True


def test_a_preview_does_not_change_what_the_running_run_pinned(listener: Listener) -> None:
    start_run(listener)
    report(listener, "node1", [IP1], tick=time.monotonic())
    listener.extravars([], {}, pin=True)
    report(listener, "node1", [IP1, IP2], tick=time.monotonic())
    listener.extravars([], {})  # the check-mode preview (pubip disable --check) builds variables too
    assert listener.holds_retake("node1", [IP2]) is True
