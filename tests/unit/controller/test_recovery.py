"""What runs a listener restart cut short leave behind (recovery.plan, pure: no files, no threads)."""

from __future__ import annotations

from typing import Any

from pubip.controller import recovery
from pubip.controller.placement import Placement

IPS = [f"198.51.100.{i}/24" for i in range(1, 4)]
NODES = ["node1", "node2", "node3"]


def placed(generation: int) -> Placement:
    public = [{"ip": ip, "node": node, "interfaces": ["eth0"]} for ip, node in zip(IPS, NODES, strict=True)]
    return Placement(generation=generation, public_ips=public, assignment={e["ip"]: e["node"] for e in public},
                     declared_dead={"node3": 3})


def state(**said: Any) -> dict[str, Any]:
    return {"cancelled": False, "changing": True, "dead": [], "released": [], "plan": None, "taken": None, **said}


def test_a_run_that_changed_no_host_is_redone_and_the_placement_stands() -> None:
    out = recovery.plan([7], True, None, placed(4))
    assert out.redo == [(7, "cancelled: it had changed no host")] and out.placement is None and out.adopt is None


def test_a_run_that_may_have_changed_hosts_is_redone_and_no_retake_from_an_older_record() -> None:
    out = recovery.plan([7], False, None, placed(4))
    assert out.redo == [(7, "")] and out.placement is not None
    assert out.placement.planned_generation == 5 and out.placement.newest() == 5
    assert out.placement.cut_short is None  # its state file is unknown (AWX): nobody retakes
    assert out.placement.declared_dead == {"node3": 3}  # kept


def test_a_run_cut_short_while_releasing_lets_the_nodes_it_gathered_and_kept_alive_retake() -> None:
    run_plan = {"generation": 5, "run_id": "r5", "connected": ["node1", "node2"], "public_ips": [], "moving": []}
    out = recovery.plan([7], False, state(plan=run_plan, released=["node1"], dead=["node2"]), placed(4))
    assert out.placement is not None and out.placement.cut_short is not None
    cut = out.placement.cut_short
    assert cut["generation"] == 5 and cut["retake_ok"] == ["node1"] and cut["released"] == ["node1"]
    assert out.placement.retake_generation("node1") == 4 and out.placement.retake_generation("node3") == 5


def test_a_run_cut_short_after_its_takes_is_the_placement_with_orders_to_the_nodes_it_released() -> None:
    left = [{"ip": IPS[0], "node": None, "interfaces": ["eth0"]}, {"ip": IPS[1], "node": "node2"},
            {"ip": IPS[2], "node": "node1"}]
    run_plan = {"generation": 5, "public_ips": [{"ip": IPS[0], "node": "node2"}, {"ip": IPS[1], "node": "node2"},
                                                {"ip": IPS[2], "node": "node1"}]}
    said = state(plan=run_plan, released=["node1", "node2", "node3"], dead=["node3"],
                 taken={"generation": 5, "public_ips": left, "nodes": {}})
    out = recovery.plan([7], False, said, placed(4))
    assert out.redo[0][1].startswith("its takes were all done") and out.placement is None
    assert out.adopt is not None and out.adopt["generation"] == 5 and out.adopt["record"]["public_ips"] == left
    assert out.recorded_on == ["node1", "node2"] and out.untaken == [IPS[0]] and out.skipped == ["node3"]


def test_takes_no_newer_than_the_placement_are_not_adopted() -> None:
    said = state(taken={"generation": 4, "public_ips": [], "nodes": {}})
    out = recovery.plan([7], False, said, placed(4))
    assert out.adopt is None and out.placement is not None and out.placement.planned_generation == 5
