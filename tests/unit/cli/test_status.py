"""`pubip status` as an operator reads it: a table, what is wrong named, and the exit status (as `ctdb status`)."""

from __future__ import annotations

from typing import Any

from pubip.cli.status import FAILOVER_OFF, problems, render_status

IP1, IP2, IP3 = "198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"


def status(liveness: dict[str, str], holders: dict[str, list[str]], failover: bool = True) -> dict[str, Any]:
    nodes: dict[str, dict[str, Any]] = {n: {"alive": state == "alive", "liveness": state, "pnn": i, "state": "enabled",
                 "last_heartbeat_ago": 0.1, "lease_left": 1.0, "does_not_hear": [], "runtime_state": "enabled",
                 "banned_for": None, "health": {"ok": True}, "ban_credits": 0}
             for i, (n, state) in enumerate(liveness.items())}
    public = [{"ip": ip, "node": hs[0] if len(hs) == 1 else None, "holders": hs, "planned": "node1",
               "from_plan": False} for ip, hs in holders.items()]
    return {"nodes": nodes, "public_ips": public, "failover": failover, "generation": 4, "pending_requests": 0,
            "running": None, "runs": [], "accepted_requests": 0, "rejections": {}, "fast_takeover_orders": []}


def test_a_well_cluster_has_no_problem() -> None:
    st = status({"node1": "alive", "node2": "alive"}, {IP1: ["node1"], IP2: ["node2"]})
    assert problems(st) == []
    table = render_status(st)
    assert "alive" in table and FAILOVER_OFF not in table


def test_every_problem_is_named() -> None:
    st = status({"node1": "alive", "node2": "unreachable", "node3": "dead"},
                {IP1: ["node1"], IP2: [], IP3: ["node1", "node2"]})
    assert problems(st) == ["node node2 is unreachable", "node node3 is dead", f"public IP {IP2} is held by no node",
                            f"public IP {IP3} is held by node1 and node2"]
    table = render_status(st)
    assert "UNREACHABLE" in table and "DEAD" in table


def test_without_leases_status_says_loudly_that_failover_is_off() -> None:
    table = render_status(status({"node1": "alive"}, {IP1: ["node1"]}, failover=False))
    assert table.startswith(FAILOVER_OFF)


def test_ha_listeners_status_names_the_leader_and_says_when_none_leads() -> None:
    st = status({"node1": "alive"}, {IP1: ["node1"]})
    assert "Leader" not in render_status(st)  # a single listener: term 0, nothing to say
    led = {**st, "leader": "listener2", "term": 4, "role": "standby", "leadership": "listener2 leads"}
    assert "Leader listener2, term 4; this listener is the standby" in render_status(led) and problems(led) == []
    none = {**st, "leader": None, "term": None, "role": "unknown",
            "leadership": "etcd unreachable: etcd http://192.0.2.254:2379: ConnectionTimeoutError"}
    assert problems(none) == ["no listener leads (etcd unreachable: etcd http://192.0.2.254:2379: "
                              "ConnectionTimeoutError): no orders, no takeover runs"]
    assert render_status(none).startswith("WARNING: no listener leads (etcd unreachable")
