"""The run queue (runqueue.RunQueue): what a run's outcome leaves, and when a run waits - for a quorum, for
retakes after a partition, for orders to settle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pubip.controller.listener import Listener
from pubip.controller.placement import Placement
from pubip.controller.runners import Outcome
from pubip.controller.runqueue import RETAKE_CAP, RETAKE_WAIT
from tests.support.cluster import (
    IPS,
    NODES,
    DeadNodeRun,
    advance,
    lose_and_regain_quorum,
    run_plan,
    runstate,
    with_leases,
)
from tests.support.listeners import heartbeat, runner_of


def test_no_takeover_run_starts_while_the_listener_hears_no_quorum(listener: Listener) -> None:
    """A partition that leaves the listener in the minority: a run would fail after changing what it can
    reach, and its failure would hold back the fast paths after the heal. Runs wait for a quorum."""

    assert listener.view.hears_quorum(listener.holdings.leases_on())  # no node reported a lease yet
    with_leases(listener)
    advance(listener, 10)
    assert not listener.view.hears_quorum(listener.holdings.leases_on())  # 1 of 4 voters
    heartbeat(listener, "node1", None, {})
    assert listener.view.hears_quorum(listener.holdings.leases_on())  # 2 of 4, with the listener: the tie is its side's


@pytest.mark.parametrize("other", [None, "node2"])
def test_a_run_only_dying_nodes_kept_from_completing_stands(listener: Listener, other: str | None) -> None:
    listener.placement.set(Placement.from_json(run_plan(4)))
    listener.view.set_alive("node3", False)
    failures = ["node3: Task failed: Data could not be sent to remote host", *([f"{other}: hook failed"] if other
                                                                              else []),
                "node1: Takeover run generation 5 incomplete: node3 was declared dead during the run"]
    runner_of(listener).script = DeadNodeRun(failures).run
    ok, _generation, _detail = listener.queue.run(1, [], {})
    assert not ok
    if other is None:  # its plan is where the IPs are: orders start from it, the waiting operation retries
        assert listener.placement.get().generation == 5 and listener.queue.found()["plan_stands"] is True
    else:  # a live node failed too: where the IPs are is not known
        assert listener.placement.get().generation == 4 and "plan_stands" not in listener.queue.found()


def test_after_a_no_quorum_wait_a_run_waits_briefly_for_the_nodes_that_may_retake(listener: Listener) -> None:
    """A partition left the listener in the minority with node3 (as "listener,node3 | node1,node2,node4,node5"
    would with five nodes): node3 lost its lease and released its IPs; nobody moved them.
    A run started as soon as the quorum is back would hold back node3's retake until it gathered node3 (13 s
    under load); so it waits, up to RETAKE_WAIT, while some IP is held by no live node."""

    listener.placement.set(Placement.from_json(run_plan(4)))
    with_leases(listener)
    hb = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}
    heartbeat(listener, "node1", "192.0.2.1", {**hb, "holds": [IPS[0], IPS[3]]})
    heartbeat(listener, "node2", "192.0.2.2", {**hb, "holds": [IPS[1], IPS[4]]})
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": []})  # released: no lease
    assert not listener.queue.awaits_retakes()  # the listener never lacked a quorum: a run goes ahead at once
    lose_and_regain_quorum(listener)
    assert listener.queue.awaits_retakes()  # node3's IPs are held by nobody
    # its lease is back: it asks to retake them, reporting them held meanwhile - not retaken yet
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": [IPS[2], IPS[5]], "taking": [IPS[2], IPS[5]]})
    assert listener.queue.awaits_retakes()
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": [IPS[2], IPS[5]]})  # retaken
    assert not listener.queue.awaits_retakes()
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": []})
    assert listener.queue.awaits_retakes()
    advance(listener, RETAKE_WAIT)  # node3 has no lease yet (under load: over 3 s)
    assert listener.queue.awaits_retakes()
    advance(listener, RETAKE_CAP)  # a node whose lease does not come back holds runs back no longer
    assert not listener.queue.awaits_retakes()


def test_after_a_no_quorum_wait_a_node_with_its_lease_back_has_a_moment_to_retake(listener: Listener) -> None:
    """The wait follows the node's lease: RETAKE_WAIT from when its heartbeat shows the lease back, not from
    when the listener heard the quorum (the CI's lab test: a run started 3 s after the heal, before node2's
    lease was back)."""

    listener.placement.set(Placement.from_json(run_plan(4)))
    with_leases(listener)
    def hb(left: float) -> dict:
        return {"membership": {"tick": 1.0, "hears": {}, "shuns": {}, "lease_left": left}}

    heartbeat(listener, "node1", "192.0.2.1", {**hb(5.0), "holds": [IPS[0], IPS[3]]})
    heartbeat(listener, "node2", "192.0.2.2", {**hb(5.0), "holds": [IPS[1], IPS[4]]})
    heartbeat(listener, "node3", "192.0.2.3", {**hb(0.0), "holds": []})
    lose_and_regain_quorum(listener)
    advance(listener, RETAKE_WAIT + 1.0)
    assert listener.queue.awaits_retakes()  # node3's lease is not back: its IPs may still come back by a retake
    heartbeat(listener, "node3", "192.0.2.3", {**hb(5.0), "holds": []})
    assert listener.queue.awaits_retakes()  # lease back just now: a moment to retake
    advance(listener, RETAKE_WAIT)
    assert not listener.queue.awaits_retakes()  # lease back a while and no retake: the run places them


def test_after_a_no_quorum_wait_a_run_waits_only_for_ips_a_retake_can_bring_back(listener: Listener) -> None:
    """An IP a node held on an order (it forgets it with its lease), or one of a node declared dead under this
    generation (its retake is refused), comes back by no retake: the run does not wait for it."""

    listener.placement.set(Placement.from_json(run_plan(4, declared_dead={"node2": 4})))
    with_leases(listener)
    hb = {"membership": {"tick": 1.0, "hears": {}, "shuns": {}}}
    listener.policy.issue_batch(4, {"node1": [{"ip": IPS[2], "interfaces": ["eth0"], "from": "node3"}]}, None)
    assert heartbeat(listener, "node1", "192.0.2.1", {**hb, "holds": [IPS[0], IPS[3]]})  # delivered
    heartbeat(listener, "node2", "192.0.2.2", {**hb, "holds": []})
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": [IPS[5]]})
    lose_and_regain_quorum(listener)
    assert listener.drops.retakeable(listener.drops.unheld()) == []  # node2's: refused; IPS[2]: on node1 by order
    assert not listener.queue.awaits_retakes()
    # node3 asks to retake IPS[2] (moved by the order: refused) at each check: that ask holds no run back
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": [IPS[2], IPS[5]], "taking": [IPS[2]]})
    assert not listener.queue.awaits_retakes()
    # a run of generation 5 failed after changing hosts: node3 still has a record of 4 and refuses to retake
    heartbeat(listener, "node3", "192.0.2.3", {**hb, "holds": [], "record": {"generation": 4}})
    assert listener.drops.retakeable([IPS[5]]) == [IPS[5]]
    listener.placement.note_planned(5)
    assert listener.drops.retakeable([IPS[5]]) == [] and not listener.queue.awaits_retakes()


@pytest.mark.parametrize("changing", [False, True])
def test_a_run_that_changed_no_host_is_cancelled_when_the_listener_loses_the_quorum(
        listener: Listener, tmp_path: Path, changing: bool) -> None:
    """Chaos: a run started 2 s before a partition that left the listener in the minority ran on for 18 s,
    reaching only the listener's side, and failed. One that has changed no host is cancelled at once; one
    that has goes on (it must carry out its releases and takes)."""

    listener.placement.set(Placement.from_json(run_plan(4)))
    with_leases(listener)
    listener.run.set(9, str(tmp_path / "runstate.json"))
    if changing:
        runstate.begin_changes(listener.run.state_file())
    for n in NODES:
        heartbeat(listener, n, None, {})
    assert listener.view.hears_quorum(listener.holdings.leases_on())
    assert runstate.read(listener.run.state_file())["cancelled"] is False
    advance(listener, 10)
    assert not listener.view.hears_quorum(listener.holdings.leases_on())
    assert runstate.read(listener.run.state_file())["cancelled"] is (not changing)


def test_no_run_starts_when_the_quorum_is_lost_while_fast_takeover_orders_settle(listener: Listener) -> None:
    """A lab test found it under load: the listener lost the quorum while its run waited for orders to settle
    (no run to cancel yet), then started the run all the same: it ran 18 s and recorded the ordered IPs the
    partition had made a node drop. The run now starts only if the quorum is still heard."""
    import threading
    import time

    calls: list[int] = []

    class Counting:
        def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
            calls.append(run_id)
            raise RuntimeError("no run should start")

    runner_of(listener).script = Counting().run
    listener.placement.set(Placement.from_json(run_plan(4)))
    with_leases(listener)
    for n in NODES:
        heartbeat(listener, n, None, {})
    assert listener.view.hears_quorum(listener.holdings.leases_on())
    listener.policy.issue_batch(4, {"node1": [{"ip": IPS[2], "interfaces": ["eth0"], "from": "node3"}]}, None)
    assert listener.policy.deliver("node1")  # delivered, not done: may be carried out for 1.2 s
    listener.store.add_request("node2", "a takeover run, please")
    worker = threading.Thread(target=listener.work, daemon=True)
    worker.start()
    try:
        time.sleep(0.3)  # the run waits for the order to settle
        advance(listener, 10)  # a partition: alone
        time.sleep(2.0)
        assert calls == [] and listener.run.running() is None
    finally:
        listener.stopping.set()
        listener.requests.poke()
        worker.join(5)
