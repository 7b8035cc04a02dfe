"""A three-node cluster for the listener's unit tests: its placement, its nodes' heartbeats, scripted runs, and a
listener killed in the middle of a run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pubip import _collection, protocol
from pubip.controller.decisions import generation_floor as floor_of
from pubip.controller.listener import Listener
from pubip.controller.placement import Placement
from pubip.controller.runners import Outcome
from tests.support.listeners import Clock, ScriptedRunner, heartbeat, make_listener, runner_of

IPS = [f"198.51.100.{i}/24" for i in range(1, 7)]
NODES = ["node1", "node2", "node3"]
SECRETS = {n: n[0] * 32 for n in NODES}
runstate = _collection.module_utils("runstate")


def three_nodes(tmp_path: Path) -> Listener:
    """The listener of NODES, with a scripted runner and a clock a test can move."""
    return make_listener(tmp_path, SECRETS, clock=Clock())


def run_plan(generation: int, **extra: Any) -> dict[str, Any]:
    return {"generation": generation, "algorithm": "lcp2", "options": {},
            "nodes": {n: {"pnn": i, "state": "enabled"} for i, n in enumerate(NODES)},
            "public_ips": [{"ip": ip, "interfaces": ["eth0"], "node": NODES[i % 3]} for i, ip in enumerate(IPS)],
            **extra}


def generation_floor(lst: Listener) -> int:
    return floor_of(lst.placement.get(), lst.holdings.record_generations())


def advance(lst: Listener, seconds: float) -> None:
    clock = lst.clock
    assert isinstance(clock, Clock)
    clock.advance(seconds)


def with_leases(lst: Listener) -> None:
    """Every node's heartbeat says it runs with a lease."""
    for node in NODES:
        heartbeat(lst, node, None, {"membership": {"tick": None, "lease": 1.0, "hears": {}, "shuns": {}}})


def ordered(lst: Listener) -> dict[str, str]:
    """IP -> the node the latest order gave it to."""
    return {ip: o["node"] for o in lst.policy.recent(100) for ip in o["ips"] if not o["withdrawn"]}


def carry_out(lst: Listener, *nodes: str) -> None:
    """NODES get their orders and take every IP in them."""
    for node in nodes:
        for order in lst.policy.deliver(node):
            lst.policy.acknowledge(node, [protocol.OrderResult(order.id, [e["ip"] for e in order.ips])])


def report_record(lst: Listener, node: str, holds: list[str], generation: int) -> None:
    """NODE's heartbeat: what it holds, and its record's generation (not marked)."""

    heartbeat(lst, node, f"192.0.2.{node[-1]}",
                  {"membership": {"tick": lst.clock(), "hears": {}, "shuns": {}}, "holds": holds,
                   "record": {"generation": generation, "marked": False}})


def a_failed_run_leaves_ips5_with_node3(lst: Listener) -> None:
    """Generation 5 fails after changing hosts: its release of IPS[5] on node3 failed, and its plan keeps it
    there (StuckReleaseRun)."""
    lst.placement.set(Placement.from_json(run_plan(4)))
    runner_of(lst).script = StuckReleaseRun().run
    ok, _generation, _detail = lst.queue.run(1, [], {})
    assert not ok and lst.placement.get().assignment[IPS[5]] == "node3"


class FailedRun:
    """A run of generation 5 that failed after changing hosts: node2 recorded it, node1 did not."""

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        record = run_plan(5)
        plan = {"generation": 5, "changed": True, "moves": [], "algorithm": "lcp2", "options": {},
                "record": {"nodes": record["nodes"], "public_ips": record["public_ips"]}}
        achieved = [dict(e, node="node2") if e["ip"] == IPS[0] else e for e in record["public_ips"]]
        return Outcome(False, 5, "node1 failed in the take phase", plan, ["node1: failed"], ["node1"],
                       {"generation": 5, "public_ips": achieved, "recorded_on": ["node2", "node3"]})


class DeadNodeRun:
    """A run of generation 5 that a node dying during it kept from completing: its release task failed, and
    the finish phase blames it alone."""

    def __init__(self, failures: list[str]) -> None:
        self.failures = failures

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        record = run_plan(5)
        plan = {"generation": 5, "changed": True, "moves": [], "algorithm": "lcp2", "options": {},
                "assignment": {e["ip"]: e["node"] for e in record["public_ips"]},
                "record": {"nodes": record["nodes"], "public_ips": record["public_ips"]}}
        return Outcome(False, 5, "; ".join(self.failures), plan, self.failures, ["node3"], None)


def killed_mid_run(tmp_path: Path, change: str | None) -> tuple[Listener, str | None]:
    """A listener killed during a run whose pubip_run_state file says CHANGE (None: the run had not begun
    releasing; "changing", "releasing", "taken": how far it got; "no state file": a runner that shares none),
    and the listener that starts after it; and that file. "idle": the first listener itself, no run."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text("all: {}\n")
    secrets = {n: n[0] * 32 for n in NODES}
    first = make_listener(tmp_path, secrets, runner=ScriptedRunner(shares_run_state=True))
    first.placement.set(Placement.from_json(run_plan(4)))
    if change == "idle":  # no run: the listener as it is, to kill later (restarted)
        return first, None
    if change == "no state file":
        first.store.start_run([])
        return restarted(tmp_path), None
    first.queue.settle_orders()  # the run's state file is made before the run starts
    assert first.run.state_file() is not None
    if change in ("changing", "taken"):
        assert runstate.begin_changes(first.run.state_file())[0]
    if change == "releasing":  # generation 5, planned with node1 and node2 gathered (node3 not), node2 died
        plan = {**run_plan(5), "run_id": "r5", "connected": ["node1", "node2"], "moving": [IPS[2]]}
        plan["public_ips"][2]["node"] = "node1"  # IPS[2] moves from node3 to node1
        assert runstate.begin_changes(first.run.state_file(), plan)[0]
        runstate.released(first.run.state_file(), "node1")
        runstate.declare_dead(first.run.state_file(), ["node2"])
    if change in ("moving", "moving, source not released"):  # generation 5 moves IPS[2] from node3 to node1
        run = run_plan(5)
        run["public_ips"][2]["node"] = "node1"
        assert runstate.begin_changes(first.run.state_file(), {**run, "run_id": "r5", "connected": NODES,
                                                              "moving": [IPS[2]]})[0]
        for node in ("node1", "node3") if change == "moving" else ("node1",):
            runstate.released(first.run.state_file(), node)
    if change == "taken":  # generation 5 moved IPS[0] to node2; node3 died during it; its takes are all done
        for node in ("node1", "node2"):
            runstate.released(first.run.state_file(), node)
        runstate.declare_dead(first.run.state_file(), ["node3"])
        run = run_plan(5)
        run["public_ips"][0]["node"] = "node2"
        runstate.takes_done(first.run.state_file(), {**run, "run_id": "r5", "connected": NODES})
    if change == "taken, one refused":  # generation 5 moved IPS[0] to node2, which refused it (no lease)
        run = run_plan(5)
        run["public_ips"][0]["node"] = "node2"
        assert runstate.begin_changes(first.run.state_file(), {**run, "run_id": "r5", "connected": NODES,
                                                              "moving": [IPS[0]]})[0]
        for node in NODES:
            runstate.released(first.run.state_file(), node)
        run["public_ips"][0]["node"] = None
        runstate.takes_done(first.run.state_file(), {**run, "run_id": "r5", "connected": NODES})
    first.store.start_run([])
    return restarted(tmp_path), first.run.state_file()


def restarted(tmp_path: Path) -> Listener:
    """The listener that starts on killed_mid_run's state directory."""
    again = make_listener(tmp_path, {n: n[0] * 32 for n in NODES})
    return again


class RefusedTakeRun:
    """A run of generation 5 whose taker node2 refused IPS[1] before changing anything (no lease): node1 and
    node3 recorded it, with IPS[1] held by nobody."""

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        record = run_plan(5)
        plan = {"generation": 5, "changed": True, "moves": [], "algorithm": "lcp2", "options": {},
                "assignment": {e["ip"]: e["node"] for e in record["public_ips"]},
                "record": {"nodes": record["nodes"], "public_ips": record["public_ips"]}}
        achieved = {"generation": 5, "recorded_on": ["node1", "node3"],
                    "public_ips": [{**e, "node": None} if e["ip"] == IPS[1] else e for e in record["public_ips"]]}
        return Outcome(False, 5, "node2: Takeover on node2 failed: node2 has no lease", plan,
                       ["node2: Takeover on node2 failed: node2 has no lease"], ["node2"], achieved)


class CancelledRun:
    """A run of generation 5 that planned changes and failed without an account of where it left the IPs."""

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        record = run_plan(5)
        plan = {"generation": 5, "changed": True, "moves": [], "algorithm": "lcp2", "options": {},
                "assignment": {e["ip"]: e["node"] for e in record["public_ips"]},
                "record": {"nodes": record["nodes"], "public_ips": record["public_ips"]}}
        return Outcome(False, 5, "Takeover run cancelled by the listener before any host changed", plan,
                       ["node1: cancelled"], [], None)


def lose_and_regain_quorum(lst: Listener) -> None:
    """The listener hears no node for a while (alone: no quorum), then all of them again."""

    advance(lst, 10)
    assert not lst.view.hears_quorum(lst.holdings.leases_on())
    for n in NODES:
        heartbeat(lst, n, None, {})
    assert lst.view.hears_quorum(lst.holdings.leases_on())


class StuckReleaseRun:
    """Generation 5 moves IPS[2] from node3 to node1; node3's release "failed" (sshd killed under it), so the
    run left IPS[2] with node3, recorded on node1 and node2."""

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        record = run_plan(5)
        record["public_ips"][2]["node"] = "node1"
        plan = {"generation": 5, "changed": True, "moves": [{"ip": IPS[2], "from": "node3", "to": "node1"}],
                "algorithm": "lcp2", "options": {}, "record": {"nodes": record["nodes"],
                                                                "public_ips": record["public_ips"]}}
        achieved = [dict(e, node="node3") if e["ip"] == IPS[2] else e for e in record["public_ips"]]
        return Outcome(False, 5, "node3: release failed", plan, ["node3: Data could not be sent"], ["node3"],
                       {"generation": 5, "public_ips": achieved, "recorded_on": ["node1", "node2"]})
