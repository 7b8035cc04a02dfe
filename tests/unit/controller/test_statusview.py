"""What `pubip status` shows of the nodes (statusview.StatusView): a node not heard for longer than the death
threshold is never shown alive, and a cluster whose nodes run without leases says that failover is off."""

from __future__ import annotations

from pubip.controller.listener import Listener
from pubip.membership import Timing
from tests.support.cluster import NODES, advance
from tests.support.listeners import heartbeat


def beat(listener: Listener, node: str, lease: float = 1.0) -> None:
    heartbeat(listener, node, None, {"membership": {"tick": None, "lease": lease, "hears": {}, "shuns": {}}})


def test_a_node_unheard_past_the_death_threshold_is_unreachable_not_alive(listener: Listener) -> None:
    for node in NODES:
        beat(listener, node)
    assert {n: v["liveness"] for n, v in listener.status().nodes.items()} == dict.fromkeys(NODES, "alive")
    advance(listener, Timing(lease=1.0).dead_after + 0.1)
    beat(listener, "node1")
    beat(listener, "node2")
    nodes = listener.status().nodes
    assert nodes["node3"]["alive"] is False and nodes["node3"]["liveness"] == "unreachable"
    assert nodes["node1"]["alive"] is True
    listener.node_died("node3", 2.0, "a quorum shuns it")
    assert listener.status().nodes["node3"]["liveness"] == "dead"


def test_failover_is_on_only_when_every_node_runs_with_a_lease(listener: Listener) -> None:
    assert listener.status().failover is False  # no node heard yet
    beat(listener, "node1")
    beat(listener, "node2", lease=0.0)  # a watchdog without peers: no lease
    assert listener.status().failover is False
    beat(listener, "node2")
    assert listener.status().failover is True
