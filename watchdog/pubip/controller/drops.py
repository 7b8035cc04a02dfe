"""Public IPs held by nobody that no node can bring back by itself, and the orders that place them: IPs a node
took on an order and dropped (it lost the cluster, say), IPs a failed run left with a node that let go of them,
IPs a run's takers refused, and - once after a restart - the IPs a run cut short had moved but not taken.

Rules:
- an IP is dropped only when its holder's heartbeats since the order, or since the failed run, say it is not held,
  no live node holds it, and no open order may still place it;
- an IP a node may retake from its record is never dropped: the retake brings it back;
- each dropped IP cancels one run at most, and only a run that has changed no host.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from . import decisions, fasttakeover
from .holdings import Holdings
from .nodestates import NodeStates
from .nodeview import NodeView
from .ordering import OrderPolicy
from .placement import LastPlacement
from .runs import CurrentRun

log = logging.getLogger("pubip.listener")


class Drops:
    def __init__(self, lock: threading.Lock, nodes: list[str], placement: LastPlacement, holdings: Holdings,
                 view: NodeView, states: NodeStates, run: CurrentRun, policy: OrderPolicy, fast: bool,
                 stopping: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = lock  # the listener's order lock
        self._nodes = nodes
        self._placement, self._holdings, self._view, self._states = placement, holdings, view, states
        self._run, self._policy, self._fast, self._stopping, self._clock = run, policy, fast, stopping, clock
        self._planned: tuple[set[tuple[str, str]], set[str]] = (set(), set())  # order_dropped's last plan
        self._cancelled_for: set[tuple[int, str]] = set()  # (generation, IP): cancel_for_dropped did
        self._untaken_during: tuple[Any, list[str]] | None = None  # (run, IPs): order_untaken_during_run did
        # (generation, when it ended, IP -> node): a failed run's IPs whose release on that node failed
        self._stuck: tuple[int, float, dict[str, str]] = (0, 0.0, {})
        # (generation, when it ended, IP -> node): a failed run's IPs kept on a node that did not record it
        self._left_unrecorded: tuple[int, float, dict[str, str]] = (0, 0.0, {})
        self._cut_short_moved = False  # order_cut_short_moves done (once, before the first run)
        self._untaken_ordered = False  # order_untaken_at_start done (once, before the first run)

    def failed_run(self, generation: int, stuck: dict[str, str], left_unrecorded: dict[str, str]) -> None:
        """A failed run of GENERATION left IPs with nodes whose release failed (STUCK), and kept IPs on nodes that
        did not record it (LEFT_UNRECORDED): if those let go of them, they are dropped."""
        now = self._clock()
        self._stuck = (generation, now, stuck)
        self._left_unrecorded = (generation, now, left_unrecorded)

    def unheld(self, besides: str | None = None) -> list[str]:
        """The last placement's public IPs that no live node's heartbeat says it holds ([] while one has not
        reported); BESIDES: a node back from the dead, whose holds count for nothing."""
        live = self._view.live() - {besides}
        return self._holdings.unheld(self._placement.get().ips(), sorted(live))

    def dropped(self, generation: int) -> dict[str, str]:
        """IP -> node, for the IPs an order of GENERATION put on a live node that no longer holds them, nor
        does any other live node; so too those a failed run of GENERATION left with a node whose release failed
        (stuck), and those it kept on a node that did not record it and whose record is older - once that
        node's heartbeats since say it holds them no more. Nobody can retake them: only an order or a run can
        put them back."""
        unheld = set(self.unheld())
        if not unheld:
            return {}
        stuck_generation, ended, stuck = self._stuck
        left_generation, left_ended, left = self._left_unrecorded
        unheld -= {e["ip"] for order in self._policy.outstanding() for e in order.ips}  # an open order may place it
        lost: dict[str, tuple[str, float]] = {}
        if stuck_generation == generation:
            lost.update((ip, (node, ended)) for ip, node in stuck.items())
        may_retake = set()  # left with a node whose record may give it them: never dropped
        if left_generation == generation:
            for ip, node in left.items():
                record = self._holdings.record_of(node)
                if record is not None and record[0] < generation:
                    lost[ip] = (node, left_ended)
                else:
                    may_retake.add(ip)
        # an order carried out says who had it last
        lost.update(self._policy.carried_out(generation))
        out = {}
        for ip, (node, since) in lost.items():
            if ip in may_retake:
                continue
            ips, tick = self._holdings.holds_of(node)
            if ip in unheld and self._view.alive(node) and ips is not None and tick >= since and ip not in ips:
                out[ip] = node
        return out

    def retakeable(self, ips: list[str]) -> list[str]:
        """Those of IPS a fast retake may bring back: the last placement gave them to a live node that was not
        declared dead since and whose record is not older than the newest generation a host may have recorded,
        and no order of this generation moved them."""
        if not ips:
            return []
        p = self._placement.get()
        generation = int(p.generation or 0)
        holder = p.holders()
        moved = self._policy.overlay(generation)
        older = self._holdings.older_records(p.newest() or 0)  # their retake is refused (protocol.retake_refused)
        declared = p.declared_dead
        return [ip for ip in ips if ip not in moved and self._view.known_alive(str(holder.get(ip)))
                and holder.get(ip) not in older
                and not (protocol.is_number(declared.get(holder[ip])) and declared[holder[ip]] >= generation)]

    def order_dropped(self, exclude: set[str]) -> None:
        """Order again the IPs a node took on an order and dropped (dropped), to the nodes the planner picks -
        none EXCLUDE (not heard lately). No run is running (the caller)."""
        with self._lock:
            if self._run.running() is not None:
                return
            generation = int(self._placement.completed() or 0)
            if not generation or self._policy.blocked(generation):
                return
            dropped = self.dropped(generation)
            if not dropped:
                return
            # a node without a lease refuses: the one that dropped them, at the heal
            leaseless = {n for n in self._nodes if not self._holdings.has_lease(n)} \
                if self._holdings.leases_on() else set()
            refusers = self._policy.refusers(generation)
            planned = (set(dropped.items()), refusers | {f"no lease: {n}" for n in leaseless})
            if planned == self._planned:
                return
            self._planned = planned  # a plan that ordered none: again once a refusal or a lease changes it
            start = self._policy.base([])
            if start is None or start.run_id is not None:
                return
            overlay = self._policy.overlay(generation)
            base = {**start.run, "untaken": sorted(dropped),
                    "public_ips": [{**e, "node": None if e["ip"] in dropped else overlay.get(e["ip"], e.get("node"))}
                                   for e in start.run["public_ips"]]}
            left_out = exclude | self._states.stepping() | start.unavailable | refusers | leaseless \
                | set(self._view.dead())
            try:
                by_node = fasttakeover.orders(base, [], left_out)
            except Exception:
                log.exception("No fast takeover: cannot plan it")
                return
            unplaced = sorted(set(dropped) - {str(e["ip"]) for entries in by_node.values() for e in entries})
            by_node, beside = self._policy.not_beside_holders(by_node)
            if beside:
                self._planned = (set(), set())  # planned again at the next liveness check
            if unplaced:  # said once per plan: why an IP held by nobody waits for a run
                log.warning("No fast takeover of %s (dropped) yet: the planner gives it to no node that may take "
                            "an order now (left out: %s)", ", ".join(unplaced), ", ".join(sorted(left_out)) or "none")
            for entries in by_node.values():  # from the node that dropped it: an order may move it again
                for entry in entries:
                    entry["from"] = dropped[entry["ip"]]
            batch = self._policy.issue_batch(generation, by_node)
            for order in batch:
                log.info("Fast takeover order %d to %s (generation %d): %s", order.id, order.node, order.generation,
                         ", ".join(f"{i['ip']} dropped by {i['from']}" for i in order.ips))
            refused = sorted({str(e["ip"]) for entries in by_node.values() for e in entries}
                             - {str(e["ip"]) for order in batch for e in order.ips})
            if refused:  # orders.issue: an IP is ordered again only from the node an earlier order put it on
                log.warning("No fast takeover of %s (dropped) yet: generation %d gives no order for it (ordered "
                            "before from another node, or sealed by a listener restart)", ", ".join(refused),
                            generation)

    def cancel_for_dropped(self, run_state: dict[str, Any] | None = None) -> None:
        """A run is running and has changed no host yet, and IPs were dropped since it started: cancel it, so
        that they are ordered at once and a new run follows, instead of waiting for its takes."""
        generation = int(self._placement.completed() or 0)
        if not generation or not self._run.running() or self._run.state_file() is None:
            return
        run_state = run_state or self._run.read()
        if run_state["cancelled"] or run_state["changing"]:  # cancelled already; or too late (what its releases let
            return  # go is no drop)
        new = {(generation, ip) for ip in self.dropped(generation)} - self._cancelled_for
        if not new:
            return
        with self._lock:  # the run's end clears its state file under it: no cancel of a finished run
            if self._run.state_file() is None or not self._run.cancel():
                return
        self._cancelled_for = {key for key in self._cancelled_for if key[0] == generation} | new
        log.warning("Takeover run %s cancelled before it changed any host (%s dropped: no node can retake them): "
                    "fast takeover now, then a new run", self._run.running(), ", ".join(sorted(ip for _g, ip in new)))

    def order_untaken_during_run(self, run_state: dict[str, Any] | None = None) -> None:
        """A run's takes are all done and its takers refused some IPs before changing anything: held by nobody,
        they are ordered now, not when the run ends. Once per run and set of IPs."""
        if self._run.state_file() is None:
            return
        run_state = run_state or self._run.read()
        if not isinstance(run_state["taken"], dict) or not isinstance(run_state["taken"].get("public_ips"), list):
            return
        missed = decisions.untaken((run_state["plan"] or {}).get("public_ips"), run_state["taken"]["public_ips"])
        if not missed or self._untaken_during == (self._run.running(), missed):
            return
        self._untaken_during = (self._run.running(), missed)
        log.warning("Takeover run %s: its takers refused %s before changing anything: held by nobody, ordered to "
                    "other nodes now", self._run.running(), ", ".join(missed))
        planned = {str(e.get("ip")): e.get("node") for e in (run_state["plan"] or {}).get("public_ips") or []
                   if isinstance(e, dict)}
        self._policy.issue(exclude=self._view.suspected() | {str(planned[ip]) for ip in missed})  # no lease

    def order_cut_short_moves(self, wait: float = 1.0) -> None:
        """Once after start-up, before the first run: cut_short_moves."""
        cut = self._placement.get().cut_short
        if self._cut_short_moved or not self._fast or not isinstance(cut, dict) \
                or cut.get("generation") != self._placement.newest():
            return
        self._cut_short_moved = True
        self.cut_short_moves(wait)

    def cut_short_moves(self, wait: float = 1.0) -> None:
        """The IPs a run cut short by the restart moved and released but did not take yet are ordered where its
        plan puts them, under its generation and id - to the nodes it marked. Only an IP no live node holds
        (every one reported within WAIT) and that no node may retake."""
        p = self._placement.get()
        cut = p.cut_short or {}
        plan = cut.get("plan") or {}
        moving = {str(ip) for ip in plan.get("moving") or []}
        if not moving or not plan.get("run_id") or not isinstance(plan.get("public_ips"), list):
            return
        self.await_holds(wait)
        with self._lock:
            # released: its state file says so, or the node's record carries its mark
            marked = self._holdings.marked_by(str(plan["run_id"]))
            released, dead = set(cut.get("released") or []) | marked, set(cut.get("dead") or [])
            live = self._view.live()
            unheld, held, recorded = set(self.unheld()), self._holdings.held_by_others(None, live), p.holders()
            by_node: dict[str, list[dict[str, Any]]] = {}
            for e in plan["public_ips"]:
                ip, to, src = str(e.get("ip")), e.get("node"), recorded.get(str(e.get("ip")))
                if ip not in moving or ip not in unheld or ip in held or to not in released - dead \
                        or not self._view.alive(str(to)):
                    continue
                if src is not None and src not in released | dead and self._view.alive(src):
                    continue  # its record gives it this IP and the run did not release it: it may retake it
                by_node.setdefault(str(to), []).append({"ip": ip, "interfaces": e.get("interfaces"), "from": None})
            for order in self._policy.issue_batch(int(plan["generation"]), by_node, str(plan["run_id"])):
                log.info("Fast takeover order %d to %s (generation %d of takeover run %s, cut short): %s, moved by "
                         "it", order.id, order.node, order.generation, plan["run_id"],
                         ", ".join(i["ip"] for i in order.ips))

    def order_untaken_at_start(self, wait: float = 1.0) -> None:
        """Once after start-up, before the first run: the IPs a run cut short after its takes left untaken are
        ordered as after a failed run, once every live node has reported what it holds."""
        if self._untaken_ordered or not self._fast or not self._placement.get().untaken:
            return
        self._untaken_ordered = True
        self.await_holds(wait)
        self._policy.issue()

    def await_holds(self, wait: float) -> None:
        """Until every live node has reported what it holds, WAIT seconds at most."""
        deadline = self._clock() + wait
        while self._clock() < deadline and not self._stopping.is_set():
            if not self._holdings.reported(sorted(self._view.live())):
                return
            self._stopping.wait(0.02)
