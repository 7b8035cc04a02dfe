"""The listener's decisions as pure functions over plain data (no I/O, no threads, no clock of their own):
quorum, the retake gate, what a run's outcome leaves as the last placement, and a run's variables.
The parts gather the facts, call these, and apply the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .. import protocol
from ..membership import LISTENER, quorum
from .placement import Placement
from .runners import Outcome


def listener_quorum(heard: dict[str, float], nodes: list[str], now: float, suspect_after: float
                    ) -> tuple[bool, list[str]]:
    """Whether the listener and the nodes it heard within SUSPECT_AFTER are a quorum of the voters; and who
    they are."""
    members = [LISTENER, *sorted(n for n, t in heard.items() if now - t < suspect_after)]
    return quorum(members, [LISTENER, *nodes]), members


def retake_wait(running: bool, gathered: bool, pinned: frozenset[str] | None, wanted: Any) -> bool:
    """Whether a node's fast retake of WANTED waits for the running run (the heartbeat answer's retake_wait).
    A run that has not GATHERED the node would, if it then cannot reach it, pin it with what it reported
    after the run was marked (PINNED): a retake of those IPs agrees with that, any other waits for the
    gather. Before the run takes its snapshot of the reports (PINNED None), every retake waits."""
    if not running or gathered:
        return False
    return not (pinned is not None and isinstance(wanted, list) and wanted and {str(ip) for ip in wanted} <= pinned)


def retake_verdict(retake_generation: int | None, declared_dead: int | None, held_elsewhere: dict[str, str],
                   generation: int) -> str | None:
    """Why a node with a record of GENERATION may not retake (protocol.retake_refused), the run aside."""
    return protocol.retake_refused(protocol.HeartbeatAnswer(retake_floor=retake_generation, declared_dead=declared_dead,
                                                            held_elsewhere=held_elsewhere), generation)


def untaken(planned: Any, achieved: list[Any]) -> list[str]:
    """The IPs a run planned on a node (PLANNED: its public IPs) that where its takes left them (ACHIEVED) are
    on none: their takers refused them before changing anything."""
    to = {str(e.get("ip")): e.get("node") for e in planned or [] if isinstance(e, dict)}
    return sorted(str(e.get("ip")) for e in achieved if isinstance(e, dict)
                  and e.get("node") is None and to.get(str(e.get("ip"))) is not None)


@dataclass
class RunVerdict:
    """What a run's outcome leaves behind."""

    adopt: dict[str, Any] | None = None  # the plan that is the last placement now
    recorded_on: list[str] | None = None  # a failed run's: the nodes that recorded it
    untaken: list[str] = field(default_factory=list)  # its IPs whose takers refused them
    plan_stands: bool = False  # only nodes now dead kept it from completing
    planned_generation: int | None = None  # failed after planning: some hosts may have recorded it
    stuck: dict[str, str] = field(default_factory=dict)  # IP -> the node whose release of it failed
    left_unrecorded: dict[str, str] = field(default_factory=dict)  # IP -> a node that kept it, unrecorded
    moves: list[dict[str, Any]] = field(default_factory=list)  # a completed run's moves (pubip ipinfo)


def run_verdict(out: Outcome, check: bool, dead: Iterable[str], changed_no_host: bool) -> RunVerdict:
    """A run's OUTCOME as the last placement sees it; DEAD: the nodes dead now; CHANGED_NO_HOST: its state file
    says it changed no host (cancelled, or failed before its first release)."""
    dead = set(dead)
    plan = out.plan
    if check or not plan:
        return RunVerdict()
    if out.ok:
        return RunVerdict(adopt=plan, moves=list(plan.get("moves") or []))
    if out.problem_nodes and set(out.problem_nodes) <= dead and {f.split(":", 1)[0] for f in out.failures[:-1]} <= dead:
        # Only nodes now dead (quorum: their leases are gone) kept it from completing - the finish phase blames
        # only them, and every other failed task was theirs: every live host carried out its plan and recorded it.
        return RunVerdict(adopt=plan, plan_stands=True)
    achieved = out.achieved
    if plan.get("changed") and achieved and achieved.get("generation") == plan.get("generation") \
            and isinstance(achieved.get("public_ips"), list):
        # Failed after changing hosts, but its finish phase said where it left every IP (the record its hosts
        # wrote): that stands, with orders only to the nodes that recorded it.
        record = plan.get("record") or {}
        planned = {e.get("ip"): e.get("node") for e in record.get("public_ips") or []}
        recorded = [str(n) for n in achieved.get("recorded_on") or []]
        left = achieved["public_ips"]
        return RunVerdict(
            adopt={**plan, "record": {**record, "public_ips": left}}, recorded_on=recorded,
            untaken=untaken(record.get("public_ips"), left),
            stuck={str(e["ip"]): str(e["node"]) for e in left
                   if e.get("node") is not None and planned.get(e.get("ip")) not in (None, e["node"])},
            left_unrecorded={str(e["ip"]): str(e["node"]) for e in left if e.get("node") is not None
                             and planned.get(e.get("ip")) == e["node"] and e["node"] not in set(recorded)})
    if plan.get("changed") and not changed_no_host:
        return RunVerdict(planned_generation=int(plan.get("generation") or 0))
    return RunVerdict()


def generation_floor(placement: Placement, record_generations: Iterable[int]) -> int:
    """The newest generation any host may have recorded, as far as the listener knows: runs it knows of, orders
    it issued, and what every node's heartbeats said its record is - a node a run did not reach may hold the
    record of a run cut short that the next run would otherwise reuse."""
    known = [placement.generation, placement.planned_generation, placement.orders_issued_for,
             *placement.declared_dead.values(), *record_generations]
    return max([int(g) for g in known if isinstance(g, int)] or [0])


def may_hold(nodes: Iterable[str], reported: dict[str, list[str]], last: dict[str, set[str]],
             overlay: dict[str, str]) -> dict[str, list[str]]:
    """For each node of NODES without a REPORTED snapshot: what it may hold if the run cannot reach it - what it
    LAST reported and what orders put on it since (OVERLAY: IP -> node). No record gives it those."""
    out = {node: sorted(last.get(node, set()) | {ip for ip, n in overlay.items() if n == node})
           for node in nodes if node not in reported}
    return {node: ips for node, ips in out.items() if ips}


def extravars(dead: list[str], moves: dict[str, str], states: dict[str, str], rebalance: Iterable[str],
              connections: dict[str, tuple[str, list[list[Any]]]], reported: dict[str, list[str]],
              may: dict[str, list[str]], floor: int, address: str | None) -> dict[str, Any]:
    """A takeover run's variables (playbooks/takeover_run.yml)."""
    return {"pubip_dead_nodes": dead, "pubip_moveip": moves,
            "pubip_state_overrides": states,
            "pubip_rebalance_nodes": sorted(rebalance),
            # the TCP connections each IP's holder last reported: whoever takes an IP tickles them
            "pubip_tickles": {ip: [holder, conns] for ip, (holder, conns) in connections.items() if conns},
            # what each node said it holds: a node the run cannot reach keeps these (pinned)
            "pubip_reported_holds": reported,
            "pubip_may_hold": may,
            # no two placements share a generation: a changing run records a newer one than any host has
            "pubip_generation_floor": floor,
            **({"pubip_listener_address": address} if address else {})}
