"""When the listener lets a node retake its IPs while a takeover run runs (holds_retake): only what the
run would pin to the node if it then could not reach it, or once the run has gathered the node."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubip import protocol
from pubip.controller.listener import Listener
from pubip.controller.placement import Placement
from tests.support.listeners import Clock, heartbeat, heartbeat_answer, make_listener, runner_of

IP1, IP2 = "198.51.100.1/24", "198.51.100.2/24"


@pytest.fixture
def listener(tmp_path: Path) -> Listener:
    return make_listener(tmp_path, {"node1": "s" * 32, "node2": "t" * 32}, fast_takeover=False, clock=Clock())


def report(lst: Listener, node: str, holds: list[str], tick: float) -> None:
    heartbeat(lst, node, None, {"membership": {"tick": tick, "lease": 3.0, "hears": {}}, "holds": holds})


def start_run(lst: Listener) -> None:
    """What work() does before a run: mark it (settle_orders, await_reports); the snapshot comes with its
    extravars."""
    lst.queue.settle_orders()
    lst.queue.await_reports(timeout=0.0)


def test_no_run_or_a_gathered_node_never_holds_a_retake(listener: Listener) -> None:
    assert listener.gate.waits("node1", [IP1]) is False
    start_run(listener)
    runner_of(listener).gathered.add("node1")  # type: ignore[attr-defined]
    assert listener.gate.waits("node1", [IP1]) is False


def test_before_the_snapshot_every_retake_waits(listener: Listener) -> None:
    start_run(listener)
    report(listener, "node1", [IP1], tick=listener.clock())
    assert listener.gate.waits("node1", [IP1]) is True


def test_after_the_snapshot_only_ips_it_pinned_to_the_node_may_be_retaken(listener: Listener) -> None:
    report(listener, "node2", [IP2], tick=listener.clock() - 5)  # made before the mark: the run ignores it
    start_run(listener)
    report(listener, "node1", [IP1], tick=listener.clock())
    pinned = listener.queue.extravars([], {}, pin=True)["pubip_reported_holds"]
    assert pinned == {"node1": [IP1]}
    assert listener.gate.waits("node1", [IP1]) is False
    assert listener.gate.waits("node1", [IP1, IP2]) is True  # IP2 was not in its report
    assert listener.gate.waits("node2", [IP2]) is True  # no report after the mark
    assert listener.gate.waits("node1", []) is True and listener.gate.waits("node1", None) is True
    report(listener, "node1", [IP1, IP2], tick=listener.clock())  # later reports do not change the run's pins
    assert listener.gate.waits("node1", [IP2]) is True


def test_a_node_without_a_report_after_the_mark_may_hold_what_it_last_reported_and_what_orders_gave_it(
        listener: Listener) -> None:
    """Chaos (a double holding): node2 took IP2 on a fast takeover order, reported nothing after the run's mark
    in time, and the run could not gather it: from the records alone the run gave IP2 to another node."""
    report(listener, "node2", [IP1], tick=listener.clock() - 5)  # before the mark
    listener.policy.issue_batch(4, {"node2": [{"ip": IP2, "from": "node3", "interfaces": ["eth0"]}]})
    assert [o.id for o in listener.policy.deliver("node2")] == [1]
    start_run(listener)
    report(listener, "node1", [IP1], tick=listener.clock())
    variables = listener.queue.extravars([], {}, pin=True)
    assert variables["pubip_reported_holds"] == {"node1": [IP1]}
    assert variables["pubip_may_hold"] == {"node2": [IP1, IP2]}  # node1's report is exact: not there
    listener.view.set_alive("node2", False)  # a dead node holds nothing (the run does not contact it)
    assert listener.queue.extravars([], {})["pubip_may_hold"] == {}


def test_a_preview_does_not_change_what_the_running_run_pinned(listener: Listener) -> None:
    start_run(listener)
    report(listener, "node1", [IP1], tick=listener.clock())
    listener.queue.extravars([], {}, pin=True)
    report(listener, "node1", [IP1, IP2], tick=listener.clock())
    listener.queue.extravars([], {})  # the check-mode preview (pubip disable --check) builds variables too
    assert listener.gate.waits("node1", [IP2]) is True


def ask(lst: Listener, node: str, held: list[str], wanted: list[str], generation: int) -> protocol.HeartbeatAnswer:
    """A node's heartbeat asking to retake WANTED: it reports them as held already (and says so in "taking")."""
    return heartbeat_answer(lst, node, "192.0.2.1", {
        "membership": {"tick": lst.clock(), "lease": 3.0, "hears": {}}, "holds": sorted({*held, *wanted}),
        "taking": wanted, "retake": wanted, "record": {"generation": generation, "marked": False}})


def test_a_refused_retake_is_not_counted_as_held_so_no_run_pins_it_to_a_node_it_cannot_reach(
        listener: Listener) -> None:
    """Chaos found it: node3, back without its IPs and with its sshd down, asked to retake them while a run was
    starting; the run could not reach it and pinned them to it from that report - unheld 10 s."""
    listener.placement.set(Placement.from_json({"generation": 5}))
    start_run(listener)
    answer = ask(listener, "node1", [IP2], [IP1], generation=3)
    assert answer.retake_wait is True  # refused: the run has not gathered node1, and its record is old
    assert listener.queue.extravars([], {}, pin=True)["pubip_reported_holds"] == {"node1": [IP2]}
    assert listener.gate.waits("node1", [IP1]) is True


def test_an_ask_held_back_only_by_the_starting_run_is_pinned_by_its_snapshot_and_may_go_ahead(
        listener: Listener) -> None:
    """Chaos under load: runs started back to back and each held node1's retake back until it had gathered
    node1 (8.5 s unheld). The run's snapshot now counts what node1 asked for as held by it: if the run cannot
    reach node1 it keeps them there, so node1's next ask may go ahead."""
    listener.placement.set(Placement.from_json({"generation": 3}))
    start_run(listener)
    answer = ask(listener, "node1", [IP2], [IP1], generation=3)
    assert answer.retake_wait is True and protocol.retake_refused(answer, 3) == \
        "a takeover run has not gathered this node yet"
    assert listener.holdings.holds_of("node1")[0] == [IP2]  # not counted as held while refused
    assert listener.queue.extravars([], {}, pin=True)["pubip_reported_holds"] == {"node1": [IP1, IP2]}
    answer = ask(listener, "node1", [IP2], [IP1], generation=3)
    assert answer.retake_wait is False and protocol.retake_refused(answer, 3) is None


def test_a_starting_runs_snapshot_pins_no_ask_that_is_stale_or_now_refused_for_another_reason(
        listener: Listener) -> None:
    listener.placement.set(Placement.from_json({"generation": 3}))
    start_run(listener)
    ask(listener, "node1", [], [IP1], generation=3)
    ask(listener, "node2", [], [IP2], generation=3)
    clock = listener.clock
    assert isinstance(clock, Clock)
    clock.advance(5)  # asked 5 s ago: stale
    report(listener, "node1", [], tick=listener.clock())
    listener.placement.set(Placement.from_json({"generation": 4}))  # node2's record is older than the last run's now
    assert listener.queue.extravars([], {}, pin=True)["pubip_reported_holds"] == {"node1": [], "node2": []}
    listener.placement.set(Placement.from_json({"generation": 3}))
    start_run(listener)
    ask(listener, "node2", [], [IP2], generation=3)
    report(listener, "node1", [IP2], tick=listener.clock())  # node1's heartbeat: it holds IP2
    assert listener.queue.extravars([], {}, pin=True)["pubip_reported_holds"] == {"node1": [IP2], "node2": []}


def test_a_retake_refused_for_an_old_record_is_not_counted_as_held(listener: Listener) -> None:
    listener.placement.set(Placement.from_json({"generation": 5}))
    ask(listener, "node1", [], [IP1], generation=3)
    assert listener.holdings.holds_of("node1")[0] == []


def test_an_allowed_retake_counts_as_held_from_the_asking_heartbeat_on(listener: Listener) -> None:
    listener.placement.set(Placement.from_json({"generation": 3}))
    answer = ask(listener, "node1", [IP2], [IP1], generation=3)
    assert answer.retake_wait is False and listener.holdings.holds_of("node1")[0] == [IP1, IP2]


def test_no_retake_of_an_ip_another_live_nodes_heartbeat_says_it_holds(listener: Listener) -> None:
    """Chaos (a double holding): node5's record gave it an IP that node2, which the run that wrote that record
    could not reach, still held; node5 retook it beside node2. The listener's heartbeats knew better."""
    report(listener, "node2", [IP1], tick=listener.clock())
    answer = ask(listener, "node1", [], [IP1, IP2], generation=3)
    assert answer.held_elsewhere == {IP1: "node2"}
    assert protocol.retake_refused(answer, 3) == f"{IP1} is held by node2 (its heartbeat)"
    assert listener.holdings.holds_of("node1")[0] == []  # refused: not counted as held
    listener.view.set_alive("node2", False)  # a dead node holds nothing: its last report no longer counts
    answer = ask(listener, "node1", [], [IP1], generation=3)
    assert answer.held_elsewhere == {} and protocol.retake_refused(answer, 3) is None
