"""The run queue (CTDB's reallocate_callers): requests wait in the store; one takeover run at a time covers all
that arrived before it; a failed run is retried with backoff, at once when a node died, came back or was banned.

A run starts only with a quorum, after the fast takeover orders have settled and every live node has reported
what it holds since the run was marked (a node the run cannot reach keeps exactly that: pinned). Its outcome
decides the last placement (decisions.run_verdict).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import decisions
from .drops import Drops
from .holdings import Holdings
from .nodestates import NodeStates
from .nodeview import NodeView
from .ordering import OrderPolicy
from .placement import LastPlacement
from .runners import Runner
from .runs import CurrentRun, Requests
from .store import Store

log = logging.getLogger("pubip.listener")
RETAKE_WAIT = 3.0  # seconds a run waits for a retake once the quorum is back and the node has its lease
RETAKE_CAP = 8.0  # ... and at most this long after the quorum is back, for a node whose lease is not back yet
ASK_FRESH = 1.0  # seconds an ask to retake held back by a starting run counts for that run's snapshot


class RunQueue:
    def __init__(self, *, store: Store, requests: Requests, runner: Runner, run: CurrentRun,
                 order_lock: threading.Lock, stopping: threading.Event, placement: LastPlacement,
                 holdings: Holdings, view: NodeView, states: NodeStates, policy: OrderPolicy, drops: Drops,
                 runner_dir: Path, fast: bool, address: str | None, retry_initial: float = 0.5,
                 retry_max: float = 5.0, leading: Callable[[], int | None] = lambda: 0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store, self._requests, self._runner, self._run = store, requests, runner, run
        self._order_lock = order_lock
        self._run_lock = threading.Lock()  # one ansible run at a time, real or check
        self._stopping = stopping
        self._placement, self._holdings, self._view, self._states = placement, holdings, view, states
        self._policy, self._drops = policy, drops
        self._runner_dir, self._fast, self._address = runner_dir, fast, address
        self._retry_initial, self._retry_max, self._clock = retry_initial, retry_max, clock
        self._leading = leading  # the term while this listener leads, else None: a standby runs nothing
        self._last_found: dict[str, Any] = {}  # the last run's plan, failures and what followed from them
        self._awaited: set[int] = set()  # requests of operations waiting for the first run that covers them
        self._attempts: dict[int, dict[str, Any]] = {}  # such a request -> that run's outcome
        self._moved: dict[str, dict[str, Any]] = {}  # public IP -> its last move (pubip ipinfo)
        self._retakes_awaited = False  # "waits for retakes" said once per wait

    # --- the loop ------------------------------------------------------------------------------------------------
    def work(self) -> None:
        delay = self._retry_initial
        while not self._stopping.is_set():
            ended = self._states.end_bans()
            if ended:
                self.replan(f"ban of {', '.join(ended)} ended")
            pending = self._store.pending()
            if not pending:
                self._requests.wait(1.0)
                continue
            if self._leading() is None:
                self._requests.wait(0.2)  # a standby: requests wait for whoever leads
                continue
            if not self._view.hears_quorum(self._holdings.leases_on()):
                self._requests.wait(0.1)  # no run can complete, and a failed one only blocks fast paths after
                continue
            if self.awaits_retakes():
                self._requests.wait(0.1)
                continue
            self._drops.order_cut_short_moves()
            self._drops.order_untaken_at_start()
            self.settle_orders()
            self.await_reports()
            if not self._view.hears_quorum(self._holdings.leases_on()):  # lost while orders settled
                with self._order_lock:
                    self._run.end()
                continue
            delay = self._one_run(delay)

    def _one_run(self, delay: float) -> float:
        """One takeover run of what is pending; the next backoff."""
        pending = self._store.pending()  # with what arrived while orders settled
        self._requests.clear_news()  # a death or a return from now on is news to this run
        dead = self._view.dead()
        self._run.begin(0, dead)
        run_id = self._store.start_run(dead)
        self._store.cover(pending, run_id)  # everything queued so far: later requests wait for the next run
        self._run.begin(run_id, dead)
        moves = self._store.overrides("moveip")
        state_file = self._run.state_file()
        extravars: dict[str, Any] = {}
        try:
            if state_file and self._run.read()["cancelled"]:
                ok, generation, detail = False, None, "cancelled before it started"
            else:
                term = self._leading()
                if term is None:
                    raise RuntimeError("this listener no longer leads")
                extravars = {**self.extravars(dead, moves, pin=True), "pubip_term": term,
                             **({"pubip_run_state": state_file} if state_file else {})}
                with self._run_lock:
                    ok, generation, detail = self.run(run_id, dead, extravars)
            if ok and moves:
                self._store.clear_overrides("moveip", list(moves))  # one-shot, like CTDB's moveip
        except Exception as exc:  # a broken run must not stop the queue
            log.exception("Takeover run %d could not run", run_id)
            ok, generation, detail = False, None, f"{type(exc).__name__}: {exc}"
        run_state = self._run.read()
        if run_state["cancelled"]:
            detail = "cancelled before it changed any host (the cluster changed: replanned)"
            log.info("Takeover run %d %s", run_id, detail)
        self._store.finish_run(run_id, ok, generation, detail)
        if not ok:
            self._store.uncover(run_id)  # its requests wait for the next run
        with self._order_lock:  # only now: a status never shows the cluster idle with a run to come
            self._run.end()
            self._policy.run_ended(run_state["cancelled"])
            if run_state["dead"] and self._fast:
                # The deaths it skipped: their IPs go to the others, and a node among them that is back holds
                # nothing (it lost its lease before it was declared dead) and is no order's target.
                self._policy.want_gone(set(run_state["dead"]) - set(self._view.dead()))
        self._run.remove_file(state_file)
        if (run_state["dead"] or self._last_found.get("untaken")) and self._fast:
            self._policy.issue(exclude=self._view.suspected())  # the deaths it skipped, the IPs it left untaken
        # A run cancelled, or incomplete only because nodes died during it (its plan stands, a retry follows at
        # once): an operation waiting on it gets the next run's answer
        retried = run_state["cancelled"] or (not ok and self._last_found.get("plan_stands") is True)
        for request_id in set(pending) & self._awaited if not retried else ():
            self._attempts[request_id] = {"run": run_id, "success": ok, "generation": generation,
                                          "detail": detail, "done": True}
        if ok:
            self._states.run_completed()
            self._states.given_back(list(extravars.get("pubip_rebalance_nodes") or []))
            return self._retry_initial
        if run_state["cancelled"]:
            return delay  # not a failure: the next run starts at once
        self._states.charge((self._last_found.get("problem_nodes") or []) if extravars else [], self._view.live(),
                            run_id)
        if moves and "moveip:" in detail:  # the plan refused it: retrying would fail forever
            self._store.clear_overrides("moveip", list(moves))
            log.error("Dropped the pending moveip %s: the takeover run refused it (%s)",
                      ", ".join(f"{i} -> {n}" for i, n in moves.items()), detail)
        log.error("Takeover run %d failed: %s; retrying in %.1fs", run_id, detail, delay)
        # Most runs fail because a node vanished mid-run; once the listener knows it, the next can succeed.
        if self._requests.wait_news(delay):
            log.info("Takeover run %d: retrying now, a node died, came back or was banned", run_id)
        return min(delay * 2, self._retry_max)

    def awaits_retakes(self) -> bool:
        """Whether a run should wait a moment after a partition that left the listener in the minority: no run
        starts while some public IP held by no live node is one a retake can bring back and its node either has
        no lease yet (at most RETAKE_CAP after the quorum is back) or got it back less than RETAKE_WAIT ago; nor
        while a node reports a retake in progress. A starting run holds retakes back until it gathers them."""
        now = self._clock()
        back = self._view.quorum_back()
        since = now - back if back is not None else RETAKE_CAP
        unheld: list[str] = []
        if since < RETAKE_CAP:
            holder = self._placement.holders()
            unheld = [ip for ip in self._drops.retakeable(self._drops.unheld())
                      if not self._holdings.has_lease(holder[ip], now)
                      or now - max(back or 0.0, self._holdings.lease_back(holder[ip])) < RETAKE_WAIT]
            if not unheld:  # a retake asked for, not yet done: a run now would hold it back - unless refused
                unheld = self._drops.retakeable(self._holdings.taking())
        if unheld and not self._retakes_awaited:
            log.info("Takeover run waits up to %.1fs after the quorum came back: nodes with their leases back may "
                     "retake %s first", RETAKE_CAP, ", ".join(unheld))
        self._retakes_awaited = bool(unheld)
        return bool(unheld)

    def settle_orders(self) -> None:
        """Return once no fast takeover order can still be carried out, with the run marked (no new orders until
        it has finished)."""
        waited = self._clock()
        while not self._stopping.is_set():
            if self._fast and not self._policy.outstanding():
                # the last moment the fast paths are open: IPs dropped since are ordered now, not placed by the
                # run's takes many seconds later
                self._drops.order_dropped(exclude=self._view.suspected())
            with self._order_lock:
                if not self._policy.outstanding():
                    self._run.mark(self._runner_dir if self._runner.shares_run_state else None)
                    self._runner.gathered.clear()  # no node gathered by it yet: no retake until it is ...
                    self._holdings.unpin()  # ... or until its snapshot of the reports pins the IPs asked for
                    break
            self._stopping.wait(0.02)
        if self._clock() - waited > 0.05:
            log.info("Takeover run waited %.2fs for fast takeover orders to settle", self._clock() - waited)

    def await_reports(self, timeout: float = 0.5) -> None:
        """Once the run is marked, wait until every live node has reported what it holds in a heartbeat made after
        the mark (it echoes a tick from after it); one that does not is pinned with what the records give it."""
        marked = self._clock()
        self._run.set_marked(marked)
        deadline = marked + timeout
        while self._clock() < deadline and not self._stopping.is_set():
            if not self._holdings.reported(sorted(self._view.live()), since=marked):
                return
            self._stopping.wait(0.02)

    def extravars(self, dead: list[str], moves: dict[str, str], states: dict[str, str] | None = None,
                  pin: bool = False) -> dict[str, Any]:
        """The run's variables; PIN: the starting run's, whose snapshot of the reports the retake gate goes by."""
        now = self._clock()
        live = self._view.live()
        if pin:
            asked = {node: self.asked_to_pin(node, now) for node in self._holdings.asks()}
            reported = self._holdings.pin(self._run.marked(), asked)
        else:
            reported = self._holdings.snapshot(self._run.marked())
        issued = self._policy.issued_for()
        overlay = self._policy.overlay(issued) if issued is not None else {}
        may = decisions.may_hold(sorted(live), reported, self._holdings.last_holds(), overlay)
        floor = decisions.generation_floor(self._placement.get(), self._holdings.record_generations())
        return decisions.extravars(dead, moves, self._states.effective(live) if states is None else states,
                                   self._states.rebalance(), self._holdings.connections(), reported, may, floor,
                                   self._address)

    def asked_to_pin(self, node: str, now: float) -> frozenset[str]:
        """What NODE asked to retake less than ASK_FRESH ago, held back only because the starting run had not
        gathered it, and that it may retake by everything else the listener knows: the run's snapshot counts
        them as held by NODE (if it cannot reach NODE, it keeps them there)."""
        ips, generation, when = self._holdings.asks().get(node, (frozenset(), 0, 0.0))
        if not ips or now - when > ASK_FRESH or not self._view.alive(node):
            return frozenset()
        others = self._holdings.held_by_others(node, self._view.live())
        why = decisions.retake_verdict(self._placement.retake_generation(node), self._placement.declared_dead(node),
                                       {ip: others[ip] for ip in ips if ip in others}, generation)
        return ips if why is None else frozenset()

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False
            ) -> tuple[bool, int | None, str]:
        self._last_found = {}
        out = self._runner.run(run_id, dead, extravars, check)
        self._last_found = {"generation": out.generation, "plan": out.plan, "failures": out.failures,
                            "problem_nodes": out.problem_nodes}
        verdict = decisions.run_verdict(out, check, self._view.dead(), self.changed_no_host())
        for move in verdict.moves:
            self._moved[move["ip"]] = {"from": move.get("from"), "to": move.get("to"),
                                       "generation": (out.plan or {}).get("generation"), "when": time.time()}
        if verdict.adopt is not None:
            if verdict.plan_stands:
                log.info("Takeover run %d: only dead nodes (%s) kept it from completing; its plan stands",
                         run_id, ", ".join(out.problem_nodes or []))
                self._last_found["plan_stands"] = True
            elif verdict.recorded_on is not None:
                log.info("Takeover run %d failed after changing hosts; what it achieved (recorded on %s) stands "
                         "until a run completes", run_id, ", ".join(verdict.recorded_on) or "no node")
                if verdict.untaken:
                    log.warning("Takeover run %d: its takers refused %s before changing anything: held by nobody, "
                                "ordered to other nodes now", run_id, ", ".join(verdict.untaken))
                    self._last_found["untaken"] = verdict.untaken  # this run's: ordered once, when it ends
            self._placement.adopt(verdict.adopt, self._policy.issued_for(), verdict.recorded_on, verdict.untaken)
            if verdict.recorded_on is not None:
                self._drops.failed_run(int((out.plan or {}).get("generation") or 0), verdict.stuck,
                                       verdict.left_unrecorded)
        elif verdict.planned_generation is not None:
            self._placement.note_planned(verdict.planned_generation)
        return out.ok, out.generation, out.detail

    def changed_no_host(self) -> bool:
        """The running run's state file says no host began a change: its generation is on no host."""
        return bool(self._run.state_file()) and not self._run.read()["changing"]

    # --- cancels -------------------------------------------------------------------------------------------------
    def replan(self, why: str) -> None:
        """The cluster changed under a run that has not changed any host yet: cancel it, so that the next run
        plans with the change now."""
        with self._order_lock:
            if self._run.running() is not None and self._run.state_file() and self._run.cancel():
                log.info("Takeover run %s cancelled before it changed any host: %s; replanning",
                         self._run.running() or "starting", why)

    def cancel_for_quorum(self) -> None:
        """The listener lost the quorum while a run runs: cancel the run if it has changed no host yet (it could
        reach only the listener's side and would fail). Its requests wait for the quorum."""
        with self._order_lock:  # the run's end clears its state file under it: no cancel of a finished run
            if self._run.state_file() is None:
                return
            if self._run.read()["cancelled"] or not self._run.cancel():
                return
        log.warning("Takeover run %s cancelled before it changed any host (the listener lost the quorum): it "
                    "could not complete; runs wait for the quorum", self._run.running() or "starting")

    def cancel_for_leadership(self) -> None:
        """This listener no longer leads (HA): cancel its run if it has changed no host yet; one that has goes on
        and the nodes that saw the new term refuse what is left of it (fencing)."""
        with self._order_lock:
            if self._run.state_file() is None:
                return
            if self._run.read()["cancelled"] or not self._run.cancel():
                return
        log.warning("Takeover run %s cancelled before it changed any host: this listener no longer leads",
                    self._run.running() or "starting")

    def cancel_for_return(self, node: str) -> None:
        """NODE, which the running run was started without, is back: cancel that run if it has changed no host
        yet, so the next one includes NODE now. Not while some public IP is held by no live node: the run places
        it, and a cancel would only leave it unheld for another gather."""
        with self._order_lock:
            if self._run.state_file() is None or not self._run.started_without(node):
                return
            unheld = self._drops.unheld(besides=node)
            if unheld:
                log.info("Takeover run %s goes on without %s (back): it places %s, held by no node",
                         self._run.running() or "starting", node, ", ".join(unheld))
                return
            if self._run.read()["cancelled"] or not self._run.cancel():
                return
        log.warning("Takeover run %s cancelled before it changed any host (%s back): the next run includes it",
                    self._run.running() or "starting", node)

    # --- a run the listener did not start --------------------------------------------------------------------------
    def adopt_record(self) -> None:
        """A takeover run the listener did not start (the main job by hand, an AWX job) completed: once every
        live node has recorded its generation, unmarked, its placement is the last placement."""
        if not self._holdings.has_newer_record() or self._run.running() is not None:
            return
        record = self._holdings.newer_record(self._placement.newest() or 0, sorted(self._view.live()))
        if record is None:
            return
        try:
            public = [{"ip": str(e["ip"]), "node": e.get("node"), "interfaces": list(e.get("interfaces") or [])}
                      for e in record["public_ips"]]
        except (KeyError, TypeError):
            return
        self._placement.adopt_record(record["generation"], public, record["nodes"], self._policy.issued_for())
        log.warning("Adopted generation %d from the nodes' records: a takeover run the listener did not start "
                    "(every live node recorded it)", record["generation"])

    # --- for operations --------------------------------------------------------------------------------------------
    def check_run(self, moves: dict[str, str], states: dict[str, str]) -> tuple[bool, str, dict[str, Any]]:
        """A check-mode run with MOVES and STATES: (ok, detail, its plan)."""
        dead = self._view.dead()
        with self._run_lock:
            ok, _gen, detail = self.run(0, dead, self.extravars(dead, moves, states), check=True)
        return ok, detail, self._last_found.get("plan") or {}

    def request_and_wait(self, reason: str, timeout: float = 600.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """Ask for a run and wait for the first that covers the request (not a cancelled one): (its outcome, its
        plan)."""
        request_id = self._requests.ask(reason, node="_admin")
        self._awaited.add(request_id)
        deadline = self._clock() + timeout
        while request_id not in self._attempts and self._clock() < deadline and not self._stopping.is_set():
            time.sleep(0.05)
        self._awaited.discard(request_id)
        result = self._attempts.pop(request_id, None) or self.wait_for(request_id, 0)
        return result, self._last_found.get("plan") or {}

    def wait_for(self, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = self._clock() + timeout
        while True:
            state = self._store.request(request_id) or {}
            if state.get("done") or self._clock() >= deadline:
                return state
            time.sleep(0.05)

    def found(self) -> dict[str, Any]:
        """What the last run found: its plan, failures, problem nodes, and what followed from them."""
        return dict(self._last_found)

    def last_move(self, ip: str) -> dict[str, Any] | None:
        return self._moved.get(ip)
