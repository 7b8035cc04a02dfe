"""When the listener issues fast takeover orders (ordering.OrderPolicy): from the last placement, never after a
failed run that changed hosts, a later death's batch from where earlier orders put IPs, and during a run that
changes hosts from what its run state file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubip import protocol
from pubip.controller.listener import Listener
from pubip.controller.placement import Placement
from tests.support.cluster import (
    IPS,
    NODES,
    CancelledRun,
    FailedRun,
    RefusedTakeRun,
    carry_out,
    generation_floor,
    ordered,
    run_plan,
    runstate,
)
from tests.support.listeners import heartbeat, heartbeat_answer, runner_of


def test_a_death_orders_its_ips_to_the_survivors(listener: Listener) -> None:
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    assert set(ordered(listener)) == {IPS[2], IPS[5]} and set(ordered(listener).values()) <= {"node1", "node2"}


def test_no_order_puts_an_ip_beside_a_node_whose_heartbeat_says_it_holds_it(listener: Listener) -> None:
    listener.placement.set(Placement.from_json(run_plan(4)))
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": 1.0, "hears": {}, "shuns": {}},
                                              "holds": [IPS[0], IPS[3], IPS[2]]})  # IPS[2]: node3's, by the run
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    assert set(ordered(listener)) == {IPS[5]}  # IPS[2] waits: node1 says it holds it
    assert listener.policy.wanted()  # tried again at the next liveness check
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": 2.0, "hears": {}, "shuns": {}},
                                              "holds": [IPS[0], IPS[3], IPS[2]], "held": [IPS[0], IPS[3]]})
    listener.policy.acknowledge(ordered(listener)[IPS[5]], [protocol.OrderResult(1, [IPS[5]])])
    listener.policy.issue()  # its kernel no longer has it (a run released it; its report still names it)
    assert set(ordered(listener)) == {IPS[2], IPS[5]} and not listener.policy.wanted()


def test_no_orders_after_a_failed_run_that_changed_hosts(listener: Listener) -> None:
    # generation 5 failed after changing hosts: it may have moved node3's IPs to a node it reached
    listener.placement.set(Placement.from_json(run_plan(4, planned_generation=5)))
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    assert ordered(listener) == {}


def test_a_later_death_orders_what_the_first_batch_put_on_the_dying_node(listener: Listener) -> None:
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    first = ordered(listener)
    carry_out(listener, "node1", "node2")
    taker = first[IPS[2]]
    listener.view.set_alive(taker, False)  # the node that took IPS[2] dies too, in the same generation
    listener.policy.issue()
    survivor = ({"node1", "node2"} - {taker}).pop()
    now = ordered(listener)
    # everything the first batch gave the taker, and the taker's own IPs, go to the one survivor
    assert {ip for ip, node in first.items() if node == taker} <= {ip for ip, n in now.items() if n == survivor}
    assert all(now.get(ip) == survivor for ip in (IPS[NODES.index(taker)], IPS[NODES.index(taker) + 3]))
    assert listener.placement.get().declared_dead[taker] == 4


def test_a_failed_run_that_changed_hosts_is_where_orders_start_and_only_its_recorders_get_them(
        listener: Listener) -> None:
    listener.placement.set(Placement.from_json(run_plan(4)))
    runner_of(listener).script = FailedRun().run
    ok, generation, _detail = listener.queue.run(1, [], {})
    assert not ok and generation == 5
    assert listener.placement.get().generation == 5 and listener.placement.get().assignment[IPS[0]] == "node2"
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    orders = listener.policy.recent(10)
    assert orders and {o["generation"] for o in orders} == {5}
    assert {o["node"] for o in orders} == {"node2"}  # node1 did not record generation 5: it would refuse
    assert set(ordered(listener)) == {IPS[2], IPS[5]}


def test_a_node_declared_dead_retakes_nothing_from_its_old_record_when_it_comes_back(listener: Listener) -> None:
    """Chaos found it: node3, cut off during a run that had gathered it, was declared dead; the run gave its
    IPs to node1 (it holds nothing, its lease is gone); node3 came back before the run ended and retook them
    from its unchanged record beside node1."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.node_died("node3", 1.7, "no quorum hears it")
    listener.view.set_alive("node3", True)  # back: heartbeats again
    answer = heartbeat_answer(listener, "node3", "192.0.2.3", {"retake": [IPS[2]]})
    assert answer.declared_dead == 4  # >= its record's generation (4): the watchdog refuses the retake


def test_a_death_during_a_run_changing_hosts_is_ordered_during_it(listener: Listener, tmp_path: Path) -> None:
    """Issue 14: a host death while a run changes hosts waited for the run's end (seconds). The run takes
    only the IPs it moves: the dead node's other IPs are ordered at once, to the nodes whose release (and
    mark) is done; those it moves once its takes are all done - under the run's generation and id, from where
    the run puts them."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.run.set(9, str(tmp_path / "runstate.json"))
    # generation 5 moves IPS[1] from node2 to node3; IPS[0] from node1 to node2
    run = run_plan(5)
    run["public_ips"][0]["node"], run["public_ips"][1]["node"] = "node2", "node3"
    planned = {**run, "run_id": "run-5", "connected": NODES, "moving": [IPS[0], IPS[1]]}
    listener.view.set_alive("node3", False)
    assert runstate.begin_changes(listener.run.state_file(), planned)[0]  # node1 releases: too late to cancel
    listener.policy.issue()
    assert ordered(listener) == {} and listener.policy.wanted()  # no node's release is done: none would accept
    assert runstate.read(listener.run.state_file())["dead"] == ["node3"]  # the run skips node3 from now on
    runstate.released(listener.run.state_file(), "node2")
    listener.policy.issue()  # watch_liveness's retry
    assert set(ordered(listener)) == {IPS[2], IPS[5]} and set(ordered(listener).values()) == {"node2"}
    assert listener.policy.wanted()  # IPS[1], which the run moves to node3, waits for its takes
    for order in listener.policy.deliver("node2"):
        assert order.generation == 5 and order.run_id == "run-5"
        listener.policy.acknowledge("node2", [protocol.OrderResult(order.id, [e["ip"] for e in order.ips])])
    runstate.released(listener.run.state_file(), "node1")
    runstate.takes_done(listener.run.state_file(), {**run, "run_id": "run-5", "connected": NODES})
    listener.policy.issue()
    assert set(ordered(listener)) == {IPS[1], IPS[2], IPS[5]} and not listener.policy.wanted()
    assert listener.placement.get().declared_dead["node3"] == 5
    listener.policy.issue()  # nothing ordered twice
    assert len(listener.policy.recent(10)) == len({o["id"] for o in listener.policy.recent(10)}) == 2


def test_ips_a_runs_takers_refused_are_ordered_once_its_takes_are_done_not_at_its_end(listener: Listener,
                                                                                     tmp_path: Path) -> None:
    """Chaos under load: the run moved IPS[1] to node3, which had just lost its lease and refused it before
    changing anything; the run went on recording for 7 s and only its end ordered IPS[1] (10.2 s unheld). Once
    its state file says where its takes left the IPs, the IPs no node took are ordered - to a node the run
    has marked - once."""

    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.run.set(9, str(tmp_path / "runstate.json"))
    runstate.create(listener.run.state_file())
    run = run_plan(5)
    run["public_ips"][1]["node"] = "node3"  # generation 5 moves IPS[1] from node2 to node3
    assert runstate.begin_changes(listener.run.state_file(), {**run, "run_id": "run-5", "connected": NODES,
                                                       "moving": [IPS[1]]})[0]
    for node in NODES:
        runstate.released(listener.run.state_file(), node)
    listener.drops.order_untaken_during_run()
    assert ordered(listener) == {}  # its takes are not done
    left = run_plan(5)
    left["public_ips"][1]["node"] = None  # node3 refused it
    runstate.takes_done(listener.run.state_file(), {**left, "run_id": "run-5", "connected": NODES})
    listener.drops.order_untaken_during_run()
    assert set(ordered(listener)) == {IPS[1]} and ordered(listener)[IPS[1]] in {"node1", "node2"}  # not node3
    assert listener.policy.recent(10)[0]["generation"] == 5
    listener.drops.order_untaken_during_run()  # once
    assert len(listener.policy.recent(10)) == 1


def test_a_node_the_run_declared_dead_gets_no_order_during_it_even_once_back(listener: Listener,
                                                                           tmp_path: Path) -> None:
    """Chaos found it: node2, released by the run, was declared dead during it and came back; node3 died
    next and the listener ordered one of node3's IPs to node2, which took it. After the run the listener
    counts the nodes the run declared dead as holding nothing (orders for "their" IPs go to the others): the
    IP was on two hosts. Such a node gets no order until a run gives it IPs."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.run.set(9, str(tmp_path / "runstate.json"))
    run = run_plan(5)
    planned = {**run, "run_id": "run-5", "connected": NODES, "moving": []}
    assert runstate.begin_changes(listener.run.state_file(), planned)[0]
    for node in NODES:
        runstate.released(listener.run.state_file(), node)
    runstate.declare_dead(listener.run.state_file(), ["node2"])  # declared dead, and back since (alive)
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    assert set(ordered(listener)) == {IPS[2], IPS[5]} and set(ordered(listener).values()) == {"node1"}


def test_a_dead_nodes_own_record_bounds_its_retakes_and_the_next_runs_generation(listener: Listener) -> None:
    """node1 recorded generation 7 (a run cut short by a listener restart) while the listener's runs know only
    6: its death gives its IPs away under 7, and the next run records 8 - never a second generation 7."""
    listener.placement.set(Placement.from_json(run_plan(6)))
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": None, "hears": {}, "shuns": {}},
                                              "record": {"generation": 7, "marked": False}})
    assert generation_floor(listener) == 7
    assert listener.queue.extravars([], {})["pubip_generation_floor"] == 7
    listener.node_died("node1", 1.6, "no quorum hears it")
    listener.view.set_alive("node1", True)
    answer = heartbeat_answer(listener, "node1", "192.0.2.1", {"retake": [IPS[0]]})
    assert answer.declared_dead == 7  # >= its record's generation: no fast retake from it


def test_no_orders_from_a_run_older_than_a_record_some_host_reports(listener: Listener) -> None:
    """Chaos found it: a run cut short by a listener restart moved node4's IP to node2 and recorded generation 5
    on node1; the new listener, knowing only generation 4, ordered that IP to node3 when node4 died."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": None, "hears": {}, "shuns": {}},
                                              "record": {"generation": 5, "marked": False}})
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    assert ordered(listener) == {}


def test_orders_held_back_without_a_death_cancel_no_run(listener: Listener, tmp_path: Path) -> None:
    """Chaos seed 42: a failed run's taker refused IPS[1]; its order waited beside node2, whose heartbeat said it
    still held it (its record marked by that run, its watchdog kept it), and every liveness check's retry cancelled
    the run that had just started, for no death at all - 282 runs in 2 minutes, none ran."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    runner_of(listener).script = RefusedTakeRun().run
    assert not listener.queue.run(1, [], {})[0] and listener.placement.get().untaken == [IPS[1]]
    heartbeat(listener, "node2", "192.0.2.2", {"membership": {"tick": 1.0, "hears": {}, "shuns": {}},
                                              "holds": [IPS[1], IPS[4]], "held": [IPS[1], IPS[4]]})
    listener.policy.issue()
    assert ordered(listener) == {} and listener.policy.wanted()  # held back beside node2
    listener.run.set(0, str(tmp_path / "runstate.json"))
    runstate.create(listener.run.state_file())
    listener.policy.issue()  # watch_liveness's retry
    assert runstate.read(listener.run.state_file())["cancelled"] is False


def test_an_ip_a_failed_runs_taker_refused_is_ordered_to_a_node_that_recorded_the_run(listener: Listener) -> None:
    """Chaos: node2's watchdog restarted between the gather and the take (no lease): the IP it was to take was
    released by its holder and held by nobody until a later run - 15 s. Now an order gives it to another at once,
    never to node2 (it did not record the run)."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    runner_of(listener).script = RefusedTakeRun().run
    ok, _generation, _detail = listener.queue.run(1, [], {})
    assert not ok and listener.placement.get().untaken == [IPS[1]]
    listener.policy.issue()
    orders = listener.policy.recent(100)
    assert [ip for o in orders for ip in o["ips"]] == [IPS[1]]
    assert orders[0]["node"] in {"node1", "node3"}
    assert listener.placement.get().declared_dead == {}  # nobody's IP was given away: no node loses a retake


@pytest.mark.parametrize("changing", [False, True])
def test_a_node_a_run_was_started_without_cancels_it_by_coming_back_before_it_changes_a_host(
        listener: Listener, tmp_path: Path, changing: bool) -> None:
    """A healed partition: the run started while node3 was dead would leave it out, and one more run would
    follow to give it IPs. Cancelled before any change, the next run includes it at once; once a host changed,
    the run goes on."""
    listener.run.set(9, str(tmp_path / "runstate.json"), {"node3"})
    listener.view.set_alive("node3", False)
    if changing:
        assert runstate.begin_changes(listener.run.state_file(),
                                      {**run_plan(5), "run_id": "run-5", "connected": NODES})[0]
    heartbeat(listener, "node3", "192.0.2.3", {"membership": {"tick": None, "hears": {}, "shuns": {}}})
    assert listener.view.alive("node3") and runstate.read(listener.run.state_file())["cancelled"] is not changing
    listener.view.set_alive("node2", False)  # a node the run included: no reason to cancel
    listener.run.set(listener.run.running(), str(tmp_path / "other.json"))
    heartbeat(listener, "node2", "192.0.2.2", {"membership": {"tick": None, "hears": {}, "shuns": {}}})
    assert runstate.read(listener.run.state_file())["cancelled"] is False


def test_no_order_goes_to_a_node_whose_record_a_run_still_marks(listener: Listener) -> None:
    """Chaos: a run declared node1 dead after its release had marked it and stood without it; node1 came back
    with that mark, which refuses every order but that run's - node2's IPs, ordered to it, stayed unheld."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": None, "hears": {}, "shuns": {}},
                                              "record": {"generation": 3, "marked": True}})
    listener.view.set_alive("node2", False)
    listener.policy.issue()
    assert set(ordered(listener)) == {IPS[1], IPS[4]} and set(ordered(listener).values()) == {"node3"}


def test_a_refused_order_goes_to_another_node(listener: Listener) -> None:
    """Chaos: node3's IPs ordered to a node whose record was older than the order's generation; it refused, and
    the IPs stayed unheld until a run (24.9 s). Now the refuser's share is ordered to the others."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    first = {o["node"]: o for o in listener.policy.recent(100)}
    refuser = sorted(first)[0]
    (order,) = listener.policy.deliver(refuser)
    heartbeat(listener, refuser, "192.0.2.9", {"done": [{"id": order.id, "taken": [], "refused": "record too old"}]})
    assert listener.policy.wanted()
    for other in set(first) - {refuser}:  # the rest of the batch is done
        (o,) = listener.policy.deliver(other)
        heartbeat(listener, other, "192.0.2.8", {"done": [{"id": o.id, "taken": [e["ip"] for e in o.ips]}]})
    listener.policy.issue()
    again = [o for o in listener.policy.recent(100) if o["id"] not in {f["id"] for f in first.values()}]
    assert sorted(ip for o in again for ip in o["ips"]) == sorted(first[refuser]["ips"])
    assert {o["node"] for o in again} == {"node1", "node2"} - {refuser}


@pytest.mark.parametrize("changed_a_host", [False, True])
def test_a_run_that_changed_no_host_leaves_orders_open_and_one_that_did_holds_them_back(
        listener: Listener, tmp_path: Path, changed_a_host: bool) -> None:
    """Chaos (seed 1): a run cancelled for a node's return, before any release, counted as a run that changed
    hosts: the next death's orders waited for a run to complete - 11.7 s unheld."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.run.set(listener.run.running(), str(tmp_path / "run-state.json"))
    if changed_a_host:
        runstate.begin_changes(listener.run.state_file())  # its first release began
    else:
        assert runstate.cancel(listener.run.state_file())  # node2 came back before any host changed
    runner_of(listener).script = CancelledRun().run
    ok, _generation, _detail = listener.queue.run(1, [], {})
    listener.run.set(listener.run.running(), None)
    assert not ok
    listener.view.set_alive("node3", False)
    listener.policy.issue()
    if changed_a_host:
        assert listener.placement.get().planned_generation == 5 and ordered(listener) == {}
    else:
        assert not listener.placement.get().planned_generation
        assert set(ordered(listener)) == {IPS[2], IPS[5]}


def test_a_node_back_does_not_cancel_a_run_while_some_ip_is_held_by_no_live_node(
        listener: Listener, tmp_path: Path) -> None:
    """Chaos: faults 1-3 s apart cancelled run after run for nodes coming back, while IPs nobody held waited for
    a run to place them (up to 30 s)."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    hb = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}
    heartbeat(listener, "node1", "192.0.2.1", {**hb, "holds": [IPS[0], IPS[3]]})
    heartbeat(listener, "node2", "192.0.2.2", {**hb, "holds": [IPS[1], IPS[4]]})
    listener.run.set(9, str(tmp_path / "runstate.json"), {"node3"})
    listener.view.set_alive("node3", False)  # its IPS[2], IPS[5] are held by nobody: the run places them
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": []})
    assert listener.view.alive("node3") and runstate.read(listener.run.state_file())["cancelled"] is False
    # every IP held by a live node: the run only verifies, and the next one includes node3 at once
    heartbeat(listener, "node1", "192.0.2.1", {**hb, "holds": [IPS[0], IPS[2], IPS[3]]})
    heartbeat(listener, "node2", "192.0.2.2", {**hb, "holds": [IPS[1], IPS[4], IPS[5]]})
    listener.view.set_alive("node3", False)
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": []})
    assert runstate.read(listener.run.state_file())["cancelled"] is True


def test_a_node_back_from_the_dead_does_not_cancel_the_run_placing_its_ips_by_what_it_held_before(
        listener: Listener, tmp_path: Path) -> None:
    """Chaos: node4 died holding two IPs, a run started to place them, node4 came back: its first heartbeat,
    sent before its new watchdog read the kernel, carried no holds, so its last word - from before its death,
    holding both - counted, and the run was cancelled as if nothing were unheld (19.6 s with later faults)."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    hb = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}
    heartbeat(listener, "node1", "192.0.2.1", {**hb, "holds": [IPS[0], IPS[3]]})
    heartbeat(listener, "node2", "192.0.2.2", {**hb, "holds": [IPS[1], IPS[4]]})
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": [IPS[2], IPS[5]]})
    listener.run.set(9, str(tmp_path / "runstate.json"), {"node3"})
    listener.view.set_alive("node3", False)
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": None})
    assert listener.view.alive("node3") and runstate.read(listener.run.state_file())["cancelled"] is False


def test_a_death_cancels_one_starting_run_not_every_run_after_it(listener: Listener, tmp_path: Path) -> None:
    """Chaos seed 32: node3's IPs could not be ordered (node1's heartbeat said it held one), so the orders stayed
    wanted, and every run that started was cancelled for the same death - 7 s without a run while IPs waited.
    One cancel per death: the runs after it know it, and place what the orders could not."""
    listener.placement.set(Placement.from_json(run_plan(4)))
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": 1.0, "hears": {}, "shuns": {}},
                                              "holds": [IPS[0], IPS[3], IPS[2]], "held": [IPS[0], IPS[3], IPS[2]]})
    listener.view.set_alive("node3", False)
    runs = []
    for i in range(3):  # a run starting (settle_orders), then watch_liveness's retries of the wanted orders
        listener.run.set(0, str(tmp_path / f"runstate-{i}.json"))
        runstate.create(listener.run.state_file())
        runs.append(listener.run.state_file())
        listener.policy.issue()
        listener.policy.issue()
        assert listener.policy.wanted()  # IPS[2] still waits for node1 to let it go
    assert [runstate.read(r)["cancelled"] for r in runs] == [True, False, False]
    listener.view.set_alive("node2", False)  # a new death: news to the starting run, which is cancelled for it
    listener.policy.issue()
    assert runstate.read(runs[-1])["cancelled"] is True
