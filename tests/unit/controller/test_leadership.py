"""HA listeners (leadership.py) in the listener: a standby hears every node but orders nothing, acknowledges no
lease and runs nothing; a new leader orders only once its term is fenced in (every live node reports it, or
FENCE_WAIT passed), and its orders and runs carry the term. The election itself runs against a real etcd in
tests/integration/test_leadership.py; here a scripted elector stands in for it."""

from __future__ import annotations

import threading
from pathlib import Path

from pubip.controller import leadership
from pubip.controller.fence import FENCE_WAIT
from pubip.controller.listener import Listener
from pubip.controller.placement import Placement
from tests.support.cluster import IPS, SECRETS, advance, run_plan
from tests.support.listeners import Clock, heartbeat_answer, make_listener, runner_of

BEAT = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}


class ScriptedElector:
    """Whoever the test says holds the leader key."""

    def __init__(self) -> None:
        self.holder: tuple[str | None, int | None] = ("listener2", 4)

    def campaign(self, name: str, ttl: int) -> tuple[str | None, int | None]:
        return self.holder

    def renew(self, term: int) -> bool:
        return self.holder == ("listener1", term)

    def resign(self, term: int) -> None:
        self.holder = (None, None)


def ha_listener(tmp_path: Path) -> tuple[Listener, leadership.Leadership, ScriptedElector]:
    clock = Clock()
    elector = ScriptedElector()
    part = leadership.Leadership("listener1", elector, clock=clock)
    lst = make_listener(tmp_path, SECRETS, clock=clock, leadership=part, name="listener1")
    lst.placement.set(Placement.from_json(run_plan(4)))
    return lst, part, elector


def test_a_standby_hears_but_orders_acknowledges_and_runs_nothing(tmp_path: Path) -> None:
    lst, part, _elector = ha_listener(tmp_path)
    part.step()
    assert part.view() == leadership.View(leadership.STANDBY, "listener2", 4, "listener2 leads")
    lst.view.set_alive("node3", False)
    lst.policy.issue()  # as the liveness watch would not, a standby: the orders stay undelivered
    answer = heartbeat_answer(lst, "node1", "192.0.2.1", BEAT)
    assert (answer.leader, answer.term, answer.lease_ack, answer.orders) == (False, 4, False, [])
    assert lst.holdings.last_seen("node1") is not None  # heard: its view stays warm
    assert lst.ordering_term() is None
    status = lst.status()
    assert (status.role, status.leader, status.term) == ("standby", "listener2", 4)


def test_a_new_leader_orders_once_every_live_node_reports_its_term(tmp_path: Path) -> None:
    lst, part, elector = ha_listener(tmp_path)
    elector.holder = ("listener1", 7)
    part.step()
    assert part.leading() == 7
    for node in ("node1", "node2", "node3"):
        answer = heartbeat_answer(lst, node, None, BEAT)
        assert (answer.leader, answer.term, answer.lease_ack) == (True, 7, True)
    assert lst.ordering_term() is None  # the nodes have not reported term 7 yet
    lst.view.set_alive("node3", False)
    for node in ("node1", "node2"):
        heartbeat_answer(lst, node, None, {**BEAT, "term": 7})
    assert lst.ordering_term() == 7  # node3 is dead: the live ones report term 7
    lst.policy.issue()
    orders = [o for node in ("node1", "node2") for o in heartbeat_answer(lst, node, None, {**BEAT, "term": 7}).orders]
    assert orders and {o.term for o in orders} == {7}
    assert {e["ip"] for o in orders for e in o.ips} == {IPS[2], IPS[5]}


def test_a_new_leader_waits_at_most_fence_wait_for_a_silent_node(tmp_path: Path) -> None:
    lst, part, elector = ha_listener(tmp_path)
    elector.holder = ("listener1", 7)
    part.step()
    heartbeat_answer(lst, "node1", None, {**BEAT, "term": 7})
    assert lst.ordering_term() is None  # node2 and node3: live, not heard with term 7
    advance(lst, FENCE_WAIT - 0.1)
    assert lst.ordering_term() is None
    advance(lst, 0.1)  # an older leader's order is past its deadline by now
    assert lst.ordering_term() == 7


def test_a_leader_that_cannot_renew_stops_ordering_before_its_lease_ends(tmp_path: Path) -> None:
    lst, part, elector = ha_listener(tmp_path)
    elector.holder = ("listener1", 7)
    part.step()
    timing = leadership.Timing()
    advance(lst, timing.ttl - timing.margin - 0.01)
    assert part.leading() == 7
    advance(lst, 0.02)  # no renewal since: the margin is reached
    assert part.leading() is None and part.view().role == leadership.UNKNOWN
    answer = heartbeat_answer(lst, "node1", None, {**BEAT, "term": 7})
    assert (answer.leader, answer.lease_ack, answer.orders) == (False, False, [])


def test_the_run_queue_of_a_standby_starts_no_run(tmp_path: Path) -> None:
    lst, part, _elector = ha_listener(tmp_path)
    part.step()
    worker = threading.Thread(target=lst.work, daemon=True)
    worker.start()
    lst.stopping.wait(0.5)
    lst.stopping.set()
    worker.join(5)
    assert runner_of(lst).runs == 0 and lst.queue  # its start-up request waits for whoever leads


def test_a_leader_that_steps_aside_resigns_and_campaigns_for_none_meanwhile(tmp_path: Path) -> None:
    lst, part, elector = ha_listener(tmp_path)
    elector.holder = ("listener1", 7)
    part.step()
    part.step_aside(5.0, "it hears no quorum of the nodes")
    assert part.leading() is None and elector.holder == (None, None)  # resigned: the key is free
    elector.holder = ("listener1", 9)  # would win again at once
    part.step()
    assert part.leading() is None  # but campaigns for none yet
    advance(lst, 5.0)
    part.step()
    assert part.leading() == 9
