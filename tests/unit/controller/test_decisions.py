"""The listener's decisions as pure functions (decisions.py): no sqlite, no threads, no clock."""

from __future__ import annotations

from typing import Any

import pytest

from pubip.controller import decisions
from pubip.controller.placement import Placement
from pubip.controller.runners import Outcome

IPS = [f"198.51.100.{i}/24" for i in range(1, 5)]


def plan(generation: int, holders: list[str], changed: bool = True) -> dict[str, Any]:
    public = [{"ip": ip, "node": node, "interfaces": ["eth0"]} for ip, node in zip(IPS, holders, strict=True)]
    return {"generation": generation, "changed": changed, "moves": [{"ip": IPS[0], "from": "node2", "to": "node1"}],
            "assignment": {e["ip"]: e["node"] for e in public}, "record": {"nodes": {}, "public_ips": public}}


@pytest.mark.parametrize(("heard", "quorum"), [
    ({}, False),  # the listener alone: 1 of 4 voters
    ({"node1": 99.9}, True),  # 2 of 4 with the listener: the tie is its side's
    ({"node1": 90.0}, False),  # heard too long ago
    ({"node1": 99.9, "node2": 99.9, "node3": 99.9}, True),
])
def test_the_listener_hears_a_quorum_with_the_nodes_it_heard_lately(heard: dict[str, float], quorum: bool) -> None:
    ok, members = decisions.listener_quorum(heard, ["node1", "node2", "node3"], now=100.0, suspect_after=0.6)
    assert ok is quorum and members[0] == "_listener"


def test_a_retake_waits_only_for_a_run_that_has_not_gathered_the_node_and_does_not_pin_the_ips() -> None:
    assert decisions.retake_wait(running=False, gathered=False, pinned=None, wanted=[IPS[0]]) is False
    assert decisions.retake_wait(running=True, gathered=True, pinned=None, wanted=[IPS[0]]) is False
    assert decisions.retake_wait(running=True, gathered=False, pinned=None, wanted=[IPS[0]]) is True  # no snapshot
    pinned = frozenset({IPS[0]})
    assert decisions.retake_wait(running=True, gathered=False, pinned=pinned, wanted=[IPS[0]]) is False
    assert decisions.retake_wait(running=True, gathered=False, pinned=pinned, wanted=[IPS[0], IPS[1]]) is True
    assert decisions.retake_wait(running=True, gathered=False, pinned=pinned, wanted=[]) is True


def test_the_retake_verdict_names_why_a_record_may_not_be_retaken() -> None:
    assert decisions.retake_verdict(4, None, {}, 4) is None
    assert "older than the last run's (5)" in str(decisions.retake_verdict(5, None, {}, 4))
    assert "gave this node's IPs away under generation 4" in str(decisions.retake_verdict(4, 4, {}, 4))
    assert decisions.retake_verdict(4, 3, {}, 4) is None  # given away under an older generation: recorded since
    assert decisions.retake_verdict(4, None, {IPS[0]: "node2"}, 4) == f"{IPS[0]} is held by node2 (its heartbeat)"


def test_a_completed_run_is_the_placement_and_its_moves_are_kept() -> None:
    verdict = decisions.run_verdict(Outcome(True, 5, "", plan(5, ["node1"] * 4)), False, [], False)
    assert verdict.adopt is not None and verdict.adopt["generation"] == 5 and verdict.recorded_on is None
    assert verdict.moves == [{"ip": IPS[0], "from": "node2", "to": "node1"}]


def test_a_check_run_or_one_without_a_plan_leaves_the_placement_alone() -> None:
    assert decisions.run_verdict(Outcome(True, 5, "", plan(5, ["node1"] * 4)), True, [], False) == \
        decisions.RunVerdict()
    assert decisions.run_verdict(Outcome(False, None, "no plan"), False, [], False) == decisions.RunVerdict()


@pytest.mark.parametrize(("failures", "stands"), [
    (["node3: unreachable", "node1: incomplete: node3 was declared dead"], True),
    (["node3: unreachable", "node2: hook failed", "node1: incomplete"], False),
])
def test_a_run_only_dead_nodes_kept_from_completing_stands(failures: list[str], stands: bool) -> None:
    out = Outcome(False, 5, "failed", plan(5, ["node1"] * 4), failures, ["node3"])
    verdict = decisions.run_verdict(out, False, ["node3"], False)
    assert verdict.plan_stands is stands
    if not stands:  # it changed hosts and said nothing of where it left them: where the IPs are is unknown
        assert verdict.adopt is None and verdict.planned_generation == 5


def test_a_run_that_failed_after_its_takes_leaves_what_it_achieved_with_its_recorders() -> None:
    planned = plan(5, ["node1", "node2", "node3", "node2"])
    left = [{"ip": IPS[0], "node": "node3", "interfaces": ["eth0"]},  # its release on node3 failed: stuck
            {"ip": IPS[1], "node": None, "interfaces": ["eth0"]},  # node2 refused it: untaken
            {"ip": IPS[2], "node": "node3", "interfaces": ["eth0"]},  # kept on node3, which did not record
            {"ip": IPS[3], "node": "node2", "interfaces": ["eth0"]}]
    out = Outcome(False, 5, "failed", planned, ["node3: failed"], ["node3"],
                  {"generation": 5, "public_ips": left, "recorded_on": ["node1", "node2"]})
    verdict = decisions.run_verdict(out, False, [], False)
    assert verdict.adopt is not None and verdict.adopt["record"]["public_ips"] == left
    assert verdict.recorded_on == ["node1", "node2"] and verdict.untaken == [IPS[1]]
    assert verdict.stuck == {IPS[0]: "node3"} and verdict.left_unrecorded == {IPS[2]: "node3"}


def test_a_run_that_failed_before_changing_a_host_leaves_no_newer_generation() -> None:
    out = Outcome(False, 5, "failed", plan(5, ["node1"] * 4), ["node1: failed"], ["node1"])
    assert decisions.run_verdict(out, False, [], True) == decisions.RunVerdict()
    assert decisions.run_verdict(out, False, [], False).planned_generation == 5


def test_the_generation_floor_covers_runs_orders_deaths_and_what_nodes_recorded() -> None:
    placement = Placement(generation=4, planned_generation=5, orders_issued_for=4, declared_dead={"node3": 6})
    assert decisions.generation_floor(placement, [3, 4]) == 6
    assert decisions.generation_floor(placement, [7]) == 7
    assert decisions.generation_floor(Placement(), []) == 0


def test_a_node_without_a_fresh_report_may_hold_what_it_last_reported_and_what_orders_gave_it() -> None:
    may = decisions.may_hold(["node1", "node2", "node3"], {"node1": [IPS[0]]},
                             {"node1": {IPS[0]}, "node2": {IPS[1]}}, {IPS[2]: "node2", IPS[3]: "node1"})
    assert may == {"node2": [IPS[1], IPS[2]]}  # node1 reported after the mark; node3 may hold nothing


def test_the_extra_vars_carry_what_the_run_needs_and_only_tickles_with_connections() -> None:
    extra = decisions.extravars(["node3"], {IPS[0]: "node2"}, {"node2": "disabled"}, {"node1"},
                                {IPS[0]: ("node1", [[445, "192.0.2.50", 50000]]), IPS[1]: ("node2", [])},
                                {"node1": [IPS[0]]}, {}, 7, None)
    assert extra["pubip_dead_nodes"] == ["node3"] and extra["pubip_moveip"] == {IPS[0]: "node2"}
    assert extra["pubip_tickles"] == {IPS[0]: ["node1", [[445, "192.0.2.50", 50000]]]}
    assert extra["pubip_generation_floor"] == 7 and "pubip_listener_address" not in extra
    assert decisions.extravars([], {}, {}, [], {}, {}, {}, 0, "192.0.2.254")["pubip_listener_address"] == \
        "192.0.2.254"


def test_untaken_ips_are_those_planned_on_a_node_and_left_on_none() -> None:
    planned = [{"ip": IPS[0], "node": "node1"}, {"ip": IPS[1], "node": None}]
    left = [{"ip": IPS[0], "node": None}, {"ip": IPS[1], "node": None}]
    assert decisions.untaken(planned, left) == [IPS[0]]
