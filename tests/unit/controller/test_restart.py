"""A listener restarted during a takeover run (recovery.py with the parts): the run cut short is cancelled or
redone, and orders go on from what its run state file says."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubip import protocol
from tests.support.cluster import (
    IPS,
    NODES,
    carry_out,
    killed_mid_run,
    ordered,
    restarted,
    runstate,
)
from tests.support.listeners import heartbeat, heartbeat_answer


def test_a_run_cut_short_by_a_listener_restart_stops_orders_until_a_run_completes(tmp_path: Path) -> None:
    again, _run_state = killed_mid_run(tmp_path, "no state file")
    # no retake from a record of 4
    assert again.placement.get().planned_generation == 5 and again.placement.newest() == 5
    again.view.set_alive("node3", False)
    again.policy.issue()
    assert ordered(again) == {}


def test_a_death_right_after_a_listener_restart_is_ordered_from_where_the_earlier_orders_put_the_ips(
        tmp_path: Path) -> None:
    """Chaos seed 32: node3's IPs were ordered, the listener restarted, node1 died - and got no orders: the
    earlier batch of the generation was unknown to the new listener, so the generation was sealed (18.7 s unheld
    until a run). The orders are kept across the restart (same boot) and go on."""
    first, _ = killed_mid_run(tmp_path, "idle")
    first.view.set_alive("node3", False)
    first.policy.issue()
    before = ordered(first)
    carry_out(first, "node1", "node2")
    taker = before[IPS[2]]
    survivor = ({"node1", "node2"} - {taker}).pop()
    again = restarted(tmp_path)
    again.view.set_alive("node3", False)
    again.view.set_alive(taker, False)
    again.policy.issue()
    now = {o["id"]: o for o in again.policy.recent(100)}
    new = [o for i, o in now.items() if i > max(o["id"] for o in first.policy.recent(100))]
    assert {o["node"] for o in new} == {survivor}
    assert {ip for o in new for ip in o["ips"]} == {ip for ip, n in before.items() if n == taker} \
        | {IPS[NODES.index(taker)], IPS[NODES.index(taker) + 3]}


def test_a_run_cut_short_before_it_changed_a_host_is_cancelled_and_orders_go_on(tmp_path: Path) -> None:
    """Chaos: two listener restarts during runs still gathering closed fast takeover until a run completed: a
    death meanwhile left its IPs unheld for 17 s. Such a run is cancelled by the listener that starts next, so
    it can change no host even if its ansible-playbook still runs, and orders start from the last run."""
    again, run_state = killed_mid_run(tmp_path, None)
    assert run_state is not None
    assert not again.placement.get().planned_generation and again.placement.newest() == 4
    assert runstate.begin_changes(run_state)[0] is False  # the orphaned run can change nothing now
    again.view.set_alive("node3", False)
    again.policy.issue()
    assert set(ordered(again)) == {IPS[2], IPS[5]} and set(ordered(again).values()) <= {"node1", "node2"}


def test_a_run_cut_short_while_changing_hosts_stops_orders_until_a_run_completes(tmp_path: Path) -> None:
    again, run_state = killed_mid_run(tmp_path, "changing")
    assert run_state is not None
    assert again.placement.get().planned_generation == 5 and again.placement.newest() == 5
    assert not Path(run_state).exists()  # nothing to keep: it goes on whatever anyone says
    again.view.set_alive("node3", False)
    again.policy.issue()
    assert ordered(again) == {}


def test_a_run_cut_short_after_its_takes_leaves_its_ips_where_it_took_them_for_fast_takeover(tmp_path: Path) -> None:
    """Chaos: a listener restart during a run's record phase closed fast takeover until a run completed; a
    death meanwhile waited 18 s. Its takes were all done: like a run that failed after them, where it left the
    IPs stands, and the death it skipped is ordered at once - to the nodes it released (only they may have
    recorded it)."""
    again, _run_state = killed_mid_run(tmp_path, "taken")
    assert again.placement.get().generation == 5 and again.placement.newest() == 5
    placed = again.placement.get()
    assert placed.assignment[IPS[0]] == "node2" and placed.recorded_on == ["node1", "node2"]
    assert again.policy.wanted() and again.policy.waiting_for() == {"node3"}
    again.policy.issue()
    assert set(ordered(again)) == {IPS[2], IPS[5]} and set(ordered(again).values()) <= {"node1", "node2"}
    assert {o["generation"] for o in again.policy.recent(10)} == {5}


def test_a_run_cut_short_while_releasing_lets_the_nodes_it_gathered_retake_and_orders_go_as_during_it(
        tmp_path: Path) -> None:
    """Chaos: restarts during a run's release phase held back every fast retake and order until a run completed
    (16 s). Such a run records nothing before its takes are all done, releases on each node it gathered (marking
    it) before any take, and takes nothing a node failed to release: those nodes may retake from their records.
    Not a node it declared dead (the run may have given its IPs away), not one it did not gather. Orders go as
    while it ran: from its plan, under its id, to the nodes it marked, and not the IPs it moves."""
    again, _run_state = killed_mid_run(tmp_path, "releasing")
    assert again.placement.newest() == 5
    ask = {"membership": {"tick": 1.0, "lease": 3.0, "hears": {}}, "holds": [], "taking": [IPS[0]],
           "retake": [IPS[0]], "record": {"generation": 4, "marked": False}}
    answer = heartbeat_answer(again, "node1", "192.0.2.1", ask)
    assert answer.retake_floor == 4 and protocol.retake_refused(answer, 4) is None
    for node in ("node2", "node3"):  # declared dead by it; not gathered by it
        answer = heartbeat_answer(again, node, "192.0.2.9", {**ask, "retake": [IPS[1]], "taking": [IPS[1]]})
        assert answer.retake_floor == 5 and protocol.retake_refused(answer, 4) is not None
    again.view.set_alive("node3", False)
    again.policy.issue()
    assert ordered(again) == {IPS[5]: "node1"}  # IPS[2] moves in that run: it waits
    assert [o.generation for o in again.policy.deliver("node1")] == [5]
    assert [o["run_id"] for o in again.policy.recent(100)] == ["r5"]  # carried out under that run's mark only


@pytest.mark.parametrize(("change", "node3_mark"), [("moving", None), ("moving, source not released", None),
                                                   ("moving, source not released", "r5"),
                                                   ("moving, source not released", "r4")])
def test_an_ip_a_run_cut_short_released_and_did_not_take_yet_is_ordered_where_it_was_going(
        tmp_path: Path, change: str, node3_mark: str | None) -> None:
    """Chaos seeds 33 and 37: the listener restarted while a run moved IPS[2] from node3 to node1, after node3's
    release; IPS[2] waited for the redo run (17.5 s, 12.6 s). It is ordered to node1 under that run's generation
    and id - where its ansible-playbook, if it still runs, takes it too - once every live node has reported and
    none holds it; not while node3, which its record gives it, was not released by the run (it may retake it):
    its state file says it was, or node3's heartbeat says its record carries that run's mark (the listener died
    before the run could write it down)."""

    again, _run_state = killed_mid_run(tmp_path, change)
    hb = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}
    record3 = {"record": {"generation": 4, "marked": True, "run_id": node3_mark}} if node3_mark else {}
    for node, holds in (("node1", [IPS[0], IPS[3]]), ("node2", [IPS[1], IPS[4]]), ("node3", [IPS[5], IPS[2]])):
        heartbeat(again, node, "192.0.2.9", {**hb, "holds": holds, **(record3 if node == "node3" else {})})
    again.drops.cut_short_moves(wait=0.0)
    assert ordered(again) == {}  # node3 still holds it: its release is not through
    heartbeat(again, "node3", "192.0.2.3", {**hb, "holds": [IPS[5]], **record3})
    again.drops.cut_short_moves(wait=0.0)
    if change == "moving" or node3_mark == "r5":
        assert ordered(again) == {IPS[2]: "node1"}
        assert [(o["generation"], o["run_id"]) for o in again.policy.recent(100)] == [(5, "r5")]
    else:
        assert ordered(again) == {}
    again.view.set_alive("node3", False)
    again.policy.issue()  # a death after it: IPS[2] is not ordered twice
    assert [ip for o in again.policy.recent(10) for ip in o["ips"]].count(IPS[2]) == (
        change == "moving" or node3_mark == "r5")


def test_a_dead_nodes_ips_a_run_cut_short_was_moving_to_it_are_ordered_at_its_death(tmp_path: Path) -> None:
    """Chaos (seed 149571864 under load): a listener restart cut a run short after it moved an IP to node4;
    node4 died, and the IP waited for a run as one the cut run might still take - while every run after was
    cancelled by a death or a return (19.6 s unheld). That run takes it only on node4, which takes nothing now."""
    again, _run_state = killed_mid_run(tmp_path, "moving")  # r5 moves IPS[2] to node1; node1 and node3 released
    again.view.set_alive("node1", False)
    again.policy.issue()
    assert ordered(again) == {IPS[0]: "node3", IPS[2]: "node3", IPS[3]: "node3"}  # node2: not marked by r5
    assert [(o["generation"], o["run_id"]) for o in again.policy.recent(100)] == [(5, "r5")]


def test_a_moving_ip_of_a_run_cut_short_waits_while_its_planned_node_lives(tmp_path: Path) -> None:
    again, _run_state = killed_mid_run(tmp_path, "moving")
    again.view.set_alive("node3", False)
    again.policy.issue()
    assert IPS[2] not in ordered(again)  # the cut run may still take it on node1


def test_an_ip_a_run_cut_short_after_its_takes_left_untaken_is_ordered_before_the_first_run(tmp_path: Path) -> None:
    """Chaos (seed 149571864 under load): a run moved two IPs to a node whose watchdog had just restarted (no
    lease: it refused them), a listener restart cut the run short after its takes, and nothing ordered them -
    every run after was cut short or cancelled (23.4 s unheld). As after a failed run, they are ordered, once
    every live node has reported what it holds."""

    again, _run_state = killed_mid_run(tmp_path, "taken, one refused")
    assert again.placement.newest() == 5 and again.placement.get().untaken == [IPS[0]]
    hb = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}
    for node, holds in (("node1", [IPS[3]]), ("node2", [IPS[1], IPS[4]]), ("node3", [IPS[2], IPS[5]])):
        heartbeat(again, node, "192.0.2.9", {**hb, "holds": holds})
    again.drops.order_untaken_at_start(wait=0.0)
    assert set(ordered(again)) == {IPS[0]}
    assert [o["generation"] for o in again.policy.recent(100)] == [5]
