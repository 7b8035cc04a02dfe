"""Fast takeover on node death: the orders, and the listener's bookkeeping of them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pubip import protocol
from pubip import protocol as auth
from pubip._collection import module_utils
from pubip.controller import fasttakeover
from pubip.controller.orders import Orders
from pubip.node.config import ListenerBackend
from pubip.node.requester import RequestFailed, signed_answer

takeover = module_utils("takeover")


def cluster(n_nodes: int, n_ips: int, ipv6: bool = False, restricted: bool = False
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    nodes = [{"name": f"node{i + 1}", "pnn": i, "state": "enabled"} for i in range(n_nodes)]
    ips = []
    for k in range(1, n_ips + 1):
        address = f"2001:db8:100::{k:x}" if ipv6 and k % 2 else f"198.51.100.{k}"
        allowed = [f"node{(k % n_nodes) + 1}", f"node{((k + 1) % n_nodes) + 1}"] if restricted else None
        ips.append({"ip": f"{address}/{64 if ':' in address else 24}", "address": address, "interfaces": ["eth0"],
                    "nodes": allowed})
    return nodes, ips


def gathered_from(holdings: dict[str, list[str]], ips: list[dict[str, Any]], alive: list[str]
                  ) -> dict[str, dict[str, Any]]:
    return {name: {"public_ips": [{"ip": ip} for ip in holdings.get(name, [])],
                   "can_host": [ip["ip"] for ip in ips if ip["nodes"] is None or name in ip["nodes"]],
                   "interfaces": [{"name": "eth0"}]} for name in alive}


def placement_of(plan: dict[str, Any]) -> dict[str, Any]:
    """What the listener keeps of a finished run (listener.run_playbook)."""
    return {"generation": plan["generation"], "public_ips": plan["record"]["public_ips"],
            "nodes": plan["record"]["nodes"], "algorithm": plan["algorithm"], "options": plan["options"],
            "allowed": plan["allowed"]}


@settings(max_examples=40, deadline=None)
@given(n_nodes=st.integers(2, 7), n_ips=st.integers(1, 20), dead_count=st.integers(1, 3),
       algorithm=st.sampled_from(["lcp2", "det", "nondet"]), ipv6=st.booleans(), restricted=st.booleans())
def test_orders_leave_nothing_for_the_verifying_run_to_move(n_nodes: int, n_ips: int, dead_count: int,
                                                           algorithm: str, ipv6: bool, restricted: bool) -> None:
    nodes, ips = cluster(n_nodes, n_ips, ipv6, restricted)
    names = [n["name"] for n in nodes]
    first = takeover.plan(nodes, ips, gathered_from({}, ips, names), algorithm=algorithm)
    holdings: dict[str, list[str]] = {}
    for ip, node in first["assignment"].items():
        if node:
            holdings.setdefault(node, []).append(ip)
    dead = names[-min(dead_count, n_nodes - 1):]
    orders = fasttakeover.orders(placement_of(first), dead)
    # Only dead nodes' IPs, only to live nodes, each IP once.
    ordered = [o["ip"] for batch in orders.values() for o in batch]
    assert len(ordered) == len(set(ordered))
    assert set(orders) <= set(names) - set(dead)
    assert all(o["from"] in dead for batch in orders.values() for o in batch)
    for name, batch in orders.items():
        holdings.setdefault(name, []).extend(o["ip"] for o in batch)
    alive = [n for n in names if n not in dead]
    verifying = takeover.plan(nodes, ips, gathered_from(holdings, ips, alive), algorithm=algorithm)
    # The verifying run puts every IP of a dead node where its order put it: nothing of theirs moves twice.
    for name in dead:
        for ip in holdings.get(name, []):
            new = verifying["assignment"][ip]
            assert new is None or ip in holdings.get(new, []), (ip, new, orders)


def test_no_orders_without_a_placement_or_without_dead_nodes() -> None:
    nodes, ips = cluster(3, 6)
    first = takeover.plan(nodes, ips, gathered_from({}, ips, ["node1", "node2", "node3"]))
    assert fasttakeover.orders({}, ["node3"]) == {}
    assert fasttakeover.orders(placement_of(first), []) == {}
    # every node dead: nobody to order
    assert fasttakeover.orders(placement_of(first), ["node1", "node2", "node3"]) == {}


def test_restricted_ips_go_only_to_allowed_nodes() -> None:
    nodes, ips = cluster(4, 8, restricted=True)
    names = [n["name"] for n in nodes]
    first = takeover.plan(nodes, ips, gathered_from({}, ips, names))
    allowed = {ip["ip"]: ip["nodes"] for ip in ips}
    for dead in names:
        for node, batch in fasttakeover.orders(placement_of(first), [dead]).items():
            assert all(node in allowed[o["ip"]] for o in batch)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_orders_are_delivered_once_and_settle_on_acknowledgement() -> None:
    clock = Clock()
    orders = Orders(clock=clock)
    batch = orders.issue(5, {"node2": [{"ip": "198.51.100.1/24", "interfaces": ["eth0"], "from": "node3"}]})
    assert [o.node for o in batch] == ["node2"]
    assert orders.outstanding()
    assert [o.id for o in orders.deliver("node2")] == [batch[0].id]
    assert orders.deliver("node2") == []  # once only
    assert orders.deliver("node1") == []
    orders.acknowledge("node1", [{"id": batch[0].id}])  # another node cannot acknowledge it
    assert orders.outstanding()
    orders.acknowledge("node2", [{"id": batch[0].id, "taken": ["198.51.100.1/24"]}])
    assert not orders.outstanding()


IP1, IP2, IP3 = "198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"


def test_a_later_batch_of_a_generation_waits_for_the_earlier_and_never_reorders_its_ips() -> None:
    clock = Clock()
    orders = Orders(clock=clock)
    first = orders.issue(5, {"node2": [{"ip": IP1, "from": "node3"}]})
    assert first and orders.blocked(5)
    assert orders.issue(5, {"node1": [{"ip": IP2, "from": "node2"}]}) == []  # the first may still be carried out
    assert orders.deliver("node2") == first
    orders.acknowledge("node2", [{"id": first[0].id, "taken": [IP1]}])
    assert not orders.blocked(5)
    assert orders.overlay(5) == {IP1: "node2"}  # node2 holds IP1 now: if node2 dies, IP1 goes with its IPs
    second = orders.issue(5, {"node1": [{"ip": IP1, "from": "node2"}, {"ip": IP2, "from": "node2"}]})
    assert [(o.node, [e["ip"] for e in o.ips]) for o in second] == [("node1", [IP1, IP2])]
    assert orders.issue(5, {"node4": [{"ip": IP1, "from": "node1"}]}) == []  # blocked by the second batch
    clock.now += 5  # undelivered: withdrawn
    assert orders.overlay(5) == {IP1: "node2"}  # withdrawn orders put nothing anywhere
    # IP1's second order was never delivered either: IP1 is where the first put it, ordered again only from there
    assert orders.issue(5, {"node4": [{"ip": IP1, "from": "node1"}]}) == []
    # IP2's order was withdrawn, never delivered: nobody saw it, so it may be ordered again (chaos seed 42: an
    # order to a node cut off before its next heartbeat kept the IP unheld until a run, 12.9 s)
    again = orders.issue(5, {"node4": [{"ip": IP2, "from": "node2"}]})
    assert [(o.node, [e["ip"] for e in o.ips]) for o in again] == [("node4", [IP2])]
    orders.deliver("node4")  # delivered: from now on it may have placed IP2
    clock.now += 5
    assert orders.issue(5, {"node3": [{"ip": IP2, "from": "node2"}]}) == []
    assert orders.issue(6, {"node4": [{"ip": IP2, "from": "node1"}]})  # a new generation starts afresh


def test_refused_orders_put_nothing_anywhere_and_unanswered_ones_may_have() -> None:
    clock = Clock()
    orders = Orders(clock=clock)
    batch = orders.issue(2, {"node1": [{"ip": IP1}], "node2": [{"ip": IP2}], "node3": [{"ip": IP3}]})
    for node in ("node1", "node2"):
        orders.deliver(node)
    orders.acknowledge("node1", [{"id": batch[0].id, "taken": [], "refused": "a takeover run is in progress"}])
    clock.now += 5
    assert orders.overlay(2) == {IP2: "node2"}  # delivered, no answer: it may hold it


def test_a_generation_ordered_before_a_restart_gets_no_more_batches() -> None:
    orders = Orders(clock=Clock(), issued_for=7, sealed=7)
    assert not orders.blocked(7)
    assert orders.issue(7, {"node1": [{"ip": IP1}]}) == []
    assert orders.issue(8, {"node1": [{"ip": IP1}]})


def test_orders_go_on_after_a_restart_from_what_the_saver_kept() -> None:
    clock, kept = Clock(), list[dict[str, Any]]()
    orders = Orders(clock=clock, saver=kept.append)
    first = orders.issue(5, {"node2": [{"ip": IP1, "from": "node3"}], "node1": [{"ip": IP2, "from": "node3"}]})
    assert len(kept) == 1  # kept before any of them could be delivered
    orders.deliver("node2")
    orders.acknowledge("node2", [{"id": first[1].id, "taken": [IP1]}])
    orders.deliver("node1")  # delivered, no answer yet: the listener dies here
    again = Orders(clock=clock)
    again.resume(json.loads(json.dumps(kept[-1])))
    assert again.overlay(5) == {IP1: "node2", IP2: "node1"} and again.blocked(5)
    assert [o.node for o in again.outstanding()] == ["node1"]  # a run waits for it as before the restart
    again.acknowledge("node1", [{"id": first[0].id, "taken": [IP2]}])
    assert not again.blocked(5)
    later = again.issue(5, {"node1": [{"ip": IP1, "from": "node2"}, {"ip": IP3, "from": "node2"}]})
    assert [(o.id, [e["ip"] for e in o.ips]) for o in later] == [(3, [IP1, IP3])]  # ids go on; IP1 again from
    assert again.issue(5, {"node2": [{"ip": IP2, "from": "node3"}]}) == []  # node2; IP2 never ordered twice


def test_undelivered_orders_are_withdrawn_and_delivered_ones_expire() -> None:
    clock = Clock()
    orders = Orders(deliver_within=1.0, execute_within=1.0, slack=0.2, clock=clock)
    orders.issue(1, {"node1": [{"ip": "198.51.100.1/24"}], "node2": [{"ip": "198.51.100.2/24"}]})
    clock.now += 0.5
    assert len(orders.deliver("node1")) == 1
    clock.now += 0.6  # node2's order is 1.1 s old: never delivered any more
    assert orders.deliver("node2") == []
    assert [o.node for o in orders.outstanding()] == ["node1"]  # delivered 0.6 s ago: may still be executed
    clock.now += 0.7  # 1.3 s after delivery: the watchdog refuses it by now
    assert orders.outstanding() == []


def listener_answer(secret: str, request_headers: dict[str, str], **part: Any) -> dict[str, Any]:
    """A heartbeat answer as the listener signs it."""
    part = {**protocol.HeartbeatAnswer(lease_ack=True, tick=12.5).wire(), **part}
    sig = auth.answer_signature(secret, request_headers, "/v1/heartbeat", json.dumps(part, sort_keys=True).encode())
    return {"ok": True, **part, "signature": sig}


def test_a_watchdog_acts_only_on_answers_the_listener_signed() -> None:
    backend = ListenerBackend(url="http://192.0.2.254:8750/v1/takeover-run", secret="s3cret")
    signed = auth.sign("s3cret", "node1", b"{}", "/v1/heartbeat")
    order = protocol.Order(1, 4, [{"ip": "198.51.100.1/24", "interfaces": ["eth0"]}])
    orders = [order.wire()]
    good = listener_answer("s3cret", signed, orders=orders, retake_floor=4)
    assert signed_answer(backend, good, signed, "/v1/heartbeat") == protocol.HeartbeatAnswer(
        orders=[order], retake_floor=4, lease_ack=True, tick=12.5)
    other_request = auth.sign("s3cret", "node1", b"{}", "/v1/heartbeat")  # a replay of another answer
    for answer, headers in ((listener_answer("wrong", signed, orders=orders), signed),
                            ({k: v for k, v in good.items() if k != "signature"}, signed),
                            ({**good, "declared_dead": 7}, signed),  # altered on the way
                            ({**good, "running": True}, signed),
                            ({**good, "lease_ack": False}, signed),
                            ({**good, "step_down": "banned"}, signed),  # a forged ban or leave would drop every IP
                            ({**good, "leave": True}, signed),
                            (good, other_request)):
        try:
            signed_answer(backend, answer, headers, "/v1/heartbeat")
        except RequestFailed as exc:
            assert "without a valid listener signature" in str(exc)
        else:
            raise AssertionError("an unsigned, altered or forged answer was accepted")
    older = listener_answer("s3cret", signed, version=1)  # signed, by a listener of another protocol version
    with pytest.raises(RequestFailed, match="the listener speaks protocol 1, this watchdog speaks protocol 2"):
        signed_answer(backend, older, signed, "/v1/heartbeat")


def test_an_ip_whose_every_order_was_refused_may_be_ordered_again_but_not_to_its_refuser() -> None:
    """A refusal is definite (the watchdog refuses before taking anything): the IP is still the dead node's, so
    a later batch of the generation orders it to another node; the caller plans without the refusers."""
    clock = Clock()
    orders = Orders(clock=clock)
    (first,) = orders.issue(4, {"node1": [{"ip": IP1, "from": "node3"}]})
    orders.deliver("node1")
    orders.acknowledge("node1", [{"id": first.id, "taken": [], "refused": "the record is generation 1, the order 4"}])
    assert orders.refusers(4) == {"node1"} and orders.overlay(4) == {}
    (again,) = orders.issue(4, {"node2": [{"ip": IP1, "from": "node3"}]})
    assert again.node == "node2" and orders.refusers(5) == set()
