"""The order policy: when, and from what, the listener issues fast takeover orders (orders.py keeps them,
fasttakeover.py plans them). They start from the last placement, or - while a run changes hosts - from what that
run says in its run state file: its plan, the nodes it has released, and, once its takes are done, where it left
every IP. A run that has changed no host is cancelled instead, so that orders go out at once.

Rules:
- an order never puts an IP beside a node whose kernel holds it (its latest heartbeat);
- no orders after a failed run that changed hosts, until a run completes (where the IPs are is unknown);
- a later death's batch waits until the earlier batch of the generation has settled, and plans from where it
  put the IPs;
- a set of deaths cancels one run at most.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, NamedTuple

from .. import _collection, protocol
from . import decisions, fasttakeover
from .holdings import Holdings
from .nodestates import NodeStates
from .nodeview import NodeView
from .orders import Order, Orders
from .placement import LastPlacement
from .runs import CurrentRun

log = logging.getLogger("pubip.listener")
_lease = _collection.module_utils("leasefile")  # boot_id: the orders' monotonic times hold within one boot
ORDERS_FILE = "orders.json"  # in the state directory: the orders, across a restart


class OrderBase(NamedTuple):
    """Where fast takeover orders start from."""
    run: dict[str, Any]  # the plan: generation, public_ips, nodes, algorithm, options, allowed
    run_id: str | None  # the takeover run still carrying it out
    unavailable: set[str]  # nodes that would refuse its orders
    later: frozenset[str] = frozenset()  # IPs not to order yet
    again: bool = False  # try again soon: some nodes will accept its orders later
    cut_short: bool = False  # the run was cut short by a listener restart (recovery.py)


class OrderPolicy:
    def __init__(self, lock: threading.Lock, nodes: list[str], placement: LastPlacement, holdings: Holdings,
                 view: NodeView, states: NodeStates, run: CurrentRun, orders: Orders, state_dir: Path) -> None:
        self._lock = lock  # the listener's order lock: orders are issued only while no run starts or ends
        self._nodes = nodes
        self._placement, self._holdings, self._view, self._states, self._run = placement, holdings, view, states, run
        self._orders = orders
        self._path = state_dir / ORDERS_FILE
        self._wanted = False  # a later death's orders wait for the earlier batch, or for a run's takes
        self._wanted_gone: set[str] = set()  # nodes stepped down whose IPs those waiting orders are for
        self._waiting_logged = False  # "Fast takeover waits" said once per wait
        self._beside_logged: set[tuple[str, str, str]] = set()  # (IP, to, holder): an order held back, said once
        self._run_told: tuple[Any, bool] | None = None  # (the run and the deaths told to it, cancelled)
        self._cancelled_for: frozenset[str] = frozenset()  # the deaths a run was cancelled for, until a run ends
        if not self._resume():  # the earlier batches are unknown: no more orders of their generation
            self._orders.seal(placement.get().orders_issued_for)
        self._orders.saver = self._save

    # --- what others ask ---------------------------------------------------------------------------------------
    def wanted(self) -> bool:
        return self._wanted

    def want(self, gone: set[str] | None = None) -> None:
        """Orders are wanted at the next liveness check (for GONE too: nodes holding nothing for good)."""
        self._wanted = True
        self._wanted_gone |= gone or set()

    def want_gone(self, gone: set[str]) -> None:
        """GONE hold nothing for good (a run's skipped deaths, back already): no order targets them from now on."""
        self._wanted_gone |= gone

    def waiting_for(self) -> set[str]:
        """The nodes gone for good whose IPs the orders wanted are for."""
        return set(self._wanted_gone)

    def outstanding(self) -> list[Order]:
        return self._orders.outstanding()

    def issued_for(self) -> int | None:
        return self._orders.last_generation()

    def overlay(self, generation: int) -> dict[str, str]:
        return self._orders.overlay(generation)

    def carried_out(self, generation: int) -> dict[str, tuple[str, float]]:
        return self._orders.carried_out(generation)

    def blocked(self, generation: int) -> bool:
        return self._orders.blocked(generation)

    def refusers(self, generation: int) -> set[str]:
        return self._orders.refusers(generation)

    def deliver(self, node: str) -> list[protocol.Order]:
        return [o.message() for o in self._orders.deliver(node)]

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        return self._orders.recent(limit)

    def forget_cancel(self, node: str) -> None:
        """NODE is back: its next death is news."""
        self._cancelled_for -= {node}

    def run_ended(self, cancelled: bool) -> None:
        if not cancelled:
            self._cancelled_for = frozenset()  # a run got to plan with them: a death from now on is news

    def acknowledge(self, node: str, done: list[protocol.OrderResult]) -> None:
        for order in self._orders.acknowledge(node, [d.wire() for d in done]):
            res = order.result or {}
            if res.get("refused"):
                log.warning("Fast takeover order %d refused by %s: %s; its IPs go to another node", order.id, node,
                            res["refused"])
                self._wanted = True  # ordered again once the batch settles
            else:
                log.info("Fast takeover order %d done by %s: took %s%s", order.id, node,
                         ", ".join(res.get("taken") or []) or "nothing",
                         f"; errors: {'; '.join(res['errors'])}" if res.get("errors") else "")

    # --- issuing -----------------------------------------------------------------------------------------------
    def issue(self, exclude: set[str] | None = None, gone: set[str] | None = None) -> None:
        """Tell live watchdogs to take the dead nodes' IPs now, as the verifying run will plan them; none to
        EXCLUDE (nodes the listener does not hear: they may have no lease and could not take anyway)."""
        with self._lock:
            gone = (gone or set()) | self._wanted_gone
            self._wanted_gone = set()
            self._wanted = False
            start = self.base(sorted(gone))
            if start is None:  # wanted: not yet (the run's takes are not all done)
                self._wanted_gone = gone if self._wanted else set()
                return
            plan, run_id, unavailable, later = start.run, start.run_id, start.unavailable, start.later
            # GONE: alive but holding nothing, for good; not while a run changes hosts - it may still take an
            # IP on such a node (a dead node's lease is gone: it refuses, or the run skips it)
            dead = sorted(set(self._view.dead()) | (gone if run_id is None else set()))
            if start.cut_short and later:
                # a run cut short takes an IP it moves on the node its plan puts it on, nowhere else: once that
                # node is dead (no lease: it takes nothing) the IP waits for no run
                planned = {str(e.get("ip")): e.get("node") for e in plan["public_ips"] if isinstance(e, dict)}
                later = frozenset(ip for ip in later if planned.get(ip) not in dead)
            generation = int(plan.get("generation") or 0)
            if self._orders.blocked(generation):
                if not self._waiting_logged:
                    log.info("Fast takeover waits: orders of generation %d may still be carried out", generation)
                self._waiting_logged = True
                self._wanted, self._wanted_gone = True, gone  # again once they settle
                return
            self._waiting_logged = False
            self._wanted = False
            # where earlier orders of this generation put the IPs (a node that took some may be the one dying)
            overlay = self._orders.overlay(generation)
            base = {**plan, "public_ips": [{**e, "node": overlay.get(e["ip"], e.get("node"))}
                                           for e in plan["public_ips"]]}
            try:
                by_node = fasttakeover.orders(base, dead, (exclude or set()) | self._states.stepping()
                                              | unavailable | self._orders.refusers(generation))
            except Exception:  # a plan that cannot be made leaves it to the takeover run
                log.exception("No fast takeover: cannot plan it")
                return
            by_node, beside = self.not_beside_holders(by_node)
            if beside:
                self._wanted, self._wanted_gone = True, gone  # again at the next liveness check
            held_back = {e["ip"] for entries in by_node.values() for e in entries if e["ip"] in later}
            if held_back:
                by_node = {n: kept for n, entries in by_node.items() if (kept := [e for e in entries
                                                                                   if e["ip"] not in later])}
            if held_back or (start.again and dead):
                self._wanted, self._wanted_gone = True, gone  # again once the run got further
            connections = self._holdings.connections()
            for entries in by_node.values():  # the new holder tickles the connections the dead node had
                for entry in entries:
                    holder, conns = connections.get(entry["ip"], ("", []))
                    if holder == entry["from"] and conns:
                        entry["tickles"] = conns
            batch = self._orders.issue(generation, by_node, run_id)
            if not batch and by_node and not held_back and not beside:
                log.info("No fast takeover: generation %d already ordered these IPs%s", generation,
                         " (before the listener restarted)" if generation == self._orders.sealed_generation() else "")
            during = "" if not run_id else f" of takeover run {run_id}, cut short" if start.cut_short \
                else f" during takeover run {self._run.running()} ({run_id})"
            for order in batch:
                log.info("Fast takeover order %d to %s (generation %d%s): %s", order.id, order.node,
                         order.generation, during, ", ".join(f"{i['ip']} from {i['from']}" for i in order.ips))
            if batch:
                # Their owners must not put these IPs back by themselves under this generation (fast retake):
                # each heartbeat answer tells a node the generation it was given away under.
                given: dict[str, int] = {}
                for order in batch:
                    for entry in order.ips:
                        if entry["from"] is not None:  # an IP a failed take left untaken was nobody's
                            given[entry["from"]] = max(order.generation, given.get(entry["from"], 0))
                self._placement.give_away(given, self._orders.last_generation())

    def issue_batch(self, generation: int, by_node: dict[str, list[dict[str, Any]]], run_id: str | None = None
                    ) -> list[Order]:
        """Orders planned elsewhere (drops.py), as they are; the caller holds the order lock."""
        return self._orders.issue(generation, by_node, run_id)

    def not_beside_holders(self, by_node: dict[str, list[dict[str, Any]]]
                           ) -> tuple[dict[str, list[dict[str, Any]]], bool]:
        """BY_NODE without the IPs another live node's kernel held at its latest heartbeat; and whether any was
        left out (the caller tries again soon: that holder may be letting go of it, or about to be declared
        dead)."""
        held = self._holdings.held_by_others(None, self._view.live())
        out = {}
        for node, entries in by_node.items():
            beside = [e for e in entries if held.get(str(e.get("ip")), node) != node]
            for e in beside:
                said = (str(e.get("ip")), node, held[str(e.get("ip"))])
                if said not in self._beside_logged:
                    log.warning("No fast takeover of %s to %s yet: %s's heartbeat says it holds it", *said)
                    self._beside_logged.add(said)
            kept = [e for e in entries if e not in beside]
            if kept:
                out[node] = kept
        return out, out != by_node

    def base(self, gone: list[str]) -> OrderBase | None:
        """What fast takeover orders start from (the caller holds the order lock); None: no orders now.
        During a run changing hosts that is the run itself: it takes only the IPs it moves, so the others may be
        ordered at once - to the nodes it has marked, after their release - and the IPs it moves once its takes
        are all done."""
        if self._run.running() is not None and not self.tell_run(gone):
            said = self._run.read()
            for run, taken in ((said["taken"], True), (said["plan"], False)):
                if run is None or not isinstance(run.get("public_ips"), list) or not run.get("generation"):
                    continue
                # nodes whose release (which marks them) is not done refuse its orders: plan without them; and
                # without the nodes it declared dead, back or not: after it they count as holding nothing until a
                # run gives them IPs
                unmarked = set(self._nodes) - set(said["released"])
                unavailable = unmarked | set(said["dead"])
                if taken:  # IPs its takers refused before changing anything are held by nobody: ordered too
                    missed = decisions.untaken((said["plan"] or {}).get("public_ips"), run["public_ips"])
                    return OrderBase({**run, "untaken": missed}, str(run.get("run_id")), unavailable)
                # its takes are not all done: the IPs it moves wait for them, the nodes it has not marked
                # for their release; both may come before the run ends
                return OrderBase(run, str(run.get("run_id")), unavailable,
                                 later=frozenset(str(ip) for ip in run.get("moving") or []),
                                 again=bool(unmarked & set(run.get("connected") or [])))
            self._wanted = True  # again, until the run says where it puts the IPs
            return None
        # no run, or one cancelled before it changed any host: the last placement is where the IPs are
        p = self._placement.get()
        if not p.public_ips:
            log.info("No fast takeover: no completed takeover run to start from")
            return None
        generation = int(p.generation or 0)
        cut = p.cut_short
        if isinstance(cut, dict) and cut.get("generation") == p.newest() and isinstance(cut.get("plan"), dict) \
                and cut["plan"].get("run_id") and isinstance(cut["plan"].get("public_ips"), list):
            # a run cut short by a listener restart between its first release and its last take: as while it
            # ran - its plan, under its id, to the nodes it marked; the IPs it moves wait for a run
            plan = cut["plan"]
            return OrderBase(plan, str(plan["run_id"]), set(self._nodes) - set(cut.get("released") or [])
                             | set(cut.get("dead") or []), later=frozenset(str(ip) for ip in plan.get("moving") or []),
                             cut_short=True)
        if int(p.planned_generation or 0) > generation:
            # It may have moved IPs between nodes it reached: planned from the last placement, an order could put
            # an IP on a node it did not reach beside the node it moved that IP to.
            log.info("No fast takeover: takeover run generation %s failed after changing hosts; the next "
                     "run finds where the IPs are", p.planned_generation)
            return None
        floor = decisions.generation_floor(p, self._holdings.record_generations())
        if floor > generation:  # a host reports a newer record: a run the listener did not see end
            log.info("No fast takeover: a host recorded generation %d, newer than the last completed run's %d; the "
                     "next run finds where the IPs are", floor, generation)
            return None
        # after a failed run, nodes that did not record it refuse its generation's orders; and nodes whose record
        # a run still marks refuse every order but that run's: plan without both
        unrecorded = set(self._nodes) - set(p.recorded_on) if p.recorded_on is not None else set()
        return OrderBase(p.plan(), None, unrecorded | self._holdings.marked())

    # --- the run in progress -----------------------------------------------------------------------------------
    def tell_run(self, gone: list[str]) -> bool:
        """stop_run, once for each new set of dead nodes during the current run: True when it was cancelled.
        A set of deaths cancels one run at most: the runs after it start knowing them. Without a death or a node
        gone, nothing cancels a run."""
        deaths = frozenset(self._view.dead()) | frozenset(gone)
        key = (self._run.state_file() or self._run.running(), deaths)
        if self._run_told is None or self._run_told[0] != key:
            if deaths <= self._cancelled_for:  # no news (none at all: orders wanted for IPs a run left untaken)
                cancelled = bool(self._run.state_file()) and self._run.read()["cancelled"]
            else:
                cancelled = self.stop_run(gone)
                if cancelled:
                    self._cancelled_for = deaths
            self._run_told = (key, cancelled)
        return self._run_told[1]

    def stop_run(self, gone: list[str]) -> bool:
        """A node died (or GONE: stepped down, holding nothing) while a takeover run runs: cancel the run if it
        has changed no host yet - then orders go out at once and a new run follows; else the run skips the dead
        nodes from now on, and the orders go by what it says (base). True when the run was cancelled."""
        dead = self._view.dead()
        if self._run.state_file() is None:
            log.info("No fast takeover yet: takeover run %s cannot be cancelled here (AWX); orders follow it",
                     self._run.running() or "starting")
            return False
        if self._run.read()["cancelled"] or self._run.cancel():
            log.warning("Takeover run %s cancelled before it changed any host (%s): fast takeover now, "
                        "then a new run", self._run.running() or "starting",
                        ", ".join([f"{n} dead" for n in dead] + [f"{n} stepped down" for n in gone]))
            return True
        if not dead:
            return False  # nodes that stepped down hold nothing and take nothing: the run goes on with them
        self._run.declare_dead(dead)
        log.info("Takeover run %s is changing hosts: it skips %s (dead) from now on; fast takeover orders for "
                 "what it does not take", self._run.running(), ", ".join(dead))
        return False

    # --- across a restart ----------------------------------------------------------------------------------------
    def _save(self, state: dict[str, Any]) -> None:
        """The orders, for the listener after a restart; CLOCK_MONOTONIC times: valid in this boot only."""
        try:
            self._path.with_suffix(".tmp").write_text(json.dumps({"boot_id": _lease.boot_id(), **state}))
            os.replace(self._path.with_suffix(".tmp"), self._path)
        except OSError as exc:  # the orders go on; a restart would then seal their generation
            log.warning("Cannot keep the fast takeover orders in %s: %s", self._path, exc)

    def _resume(self) -> bool:
        """Go on with the orders the listener before a restart issued (same boot)."""
        try:
            state = json.loads(self._path.read_text())
            if state.get("boot_id") != _lease.boot_id():
                return False
            self._orders.resume(state)
        except (OSError, ValueError, TypeError, KeyError):
            return False
        if self._orders.last_generation() is not None:
            log.info("Fast takeover orders of generation %d go on from before the restart (%d kept)",
                     self._orders.last_generation(), len(state["orders"]))
        return True
