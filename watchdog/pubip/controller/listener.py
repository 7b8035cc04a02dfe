"""`pubip listen`: the controller side of CTDB's recovery master - the composition root.

It builds the parts, each owning its state, and wires them explicitly:
- leadership (whether this listener leads: the embedded single listener always does; HA listeners through a
  lease in etcd, and a standby orders nothing, runs nothing and acknowledges no lease),
- auth (who may talk), placement (the last placement), holdings (what heartbeats say), nodeview (membership,
  death), nodestates (bans, health, stepping down), ordering and drops (fast takeover orders), retakegate,
  runqueue (one takeover run at a time), operations, statusview; recovery runs once, at start-up.
It offers the HTTP front four entries - heartbeat_answer, takeover_request, operation, status - and runs two
threads: the run queue and the liveness watch.

Lock order (a thread holding one may take only those below it):
1. the run queue's run lock: one ansible run at a time, real or check;
2. the order lock: orders are issued only while no run starts or ends, and a run's state file is cancelled
   only while the run has not ended;
3. each part's own lock (Auth, LastPlacement, Holdings, NodeView, Orders): a leaf, held only inside the part's
   methods, never while calling another part.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import _collection, protocol, sdnotify
from ..awx import AwxBackend
from ..membership import Timing
from . import fasttakeover, recovery
from .auth import Auth
from .drops import Drops
from .fence import TermFence
from .holdings import Holdings
from .leadership import Leadership
from .nodestates import NodeStates
from .nodeview import NodeView
from .operations import Operations
from .ordering import OrderPolicy
from .orders import Orders
from .placement import LastPlacement, set_aside
from .retakegate import RetakeGate
from .runners import AwxRunner, PlaybookRunner, Runner
from .runqueue import RunQueue
from .runs import CurrentRun, Requests
from .statusview import StatusView
from .store import Store

log = logging.getLogger("pubip.listener")
BATCH_WAIT = 0.5  # seconds a death waits for other nodes a quorum already shuns, to share one batch of orders
STEP_ASIDE_AFTER, STEP_ASIDE_FOR = 2.0, 5.0  # an HA leader that hears no quorum of voters lets a standby lead


class Listener:
    def __init__(self, inventory: str, secrets: dict[str, str], state_dir: str, *, lease: float = 1.0,
                 window: float = 30.0, max_body: int = 65536, retry_initial: float = 0.5, retry_max: float = 5.0,
                 playbook: str | None = None, ssh_timeout: int = 2, probe_port: int = 22,
                 probe_timeout: float = 0.25, fast_takeover: bool = True, awx: AwxBackend | None = None,
                 ansible_cfg: str | None = None, trusted_proxy: str | None = None, address: str | None = None,
                 ban_credits: int = 3, ban_period: float = 300.0, read_token: str | None = None,
                 runner: Runner | None = None, leadership: Leadership | None = None, name: str = "listener",
                 clock: Callable[[], float] = time.monotonic):
        self.inventory = inventory
        self.trusted_proxy = trusted_proxy  # a TLS-terminating reverse proxy whose X-Forwarded-For is believed
        self.max_body = max_body
        self.stopping = threading.Event()
        self._fast = fast_takeover
        self.clock = clock  # monotonic: every part measures on it
        self.leadership = leadership or Leadership.alone(name)
        self.fence = TermFence(clock)
        self.leadership.on_change(self._leadership_changed)
        self._accepted = 0
        state = Path(state_dir)
        (state / "runner").mkdir(parents=True, exist_ok=True)
        self.store = open_store(state / "listener.sqlite")
        self.auth = Auth(secrets, window, self.store.use_nonce, read_token)
        nodes = self.auth.nodes()
        timing = Timing(lease=lease)
        self._order_lock = threading.Lock()
        self.requests = Requests(self.store)
        self.placement = LastPlacement(state)
        self.holdings = Holdings(nodes, timing, clock)
        self.view = NodeView(nodes, timing, self.store, probe_port, probe_timeout, clock,
                             on_quorum_lost=lambda: self.queue.cancel_for_quorum())
        self.states = NodeStates(self.store, self.requests, nodes, ban_credits, ban_period, monotonic=clock)
        self.run = CurrentRun()
        # Runs are AWX jobs of a job template, or the main job through ansible-runner here.
        self.runner: Runner = runner or (AwxRunner(awx, self.stopping) if awx is not None else PlaybookRunner(
            state, inventory, self.stopping, playbook or _collection.TAKEOVER_RUN, ssh_timeout, ansible_cfg))
        self.policy = OrderPolicy(self._order_lock, nodes, self.placement, self.holdings, self.view, self.states,
                                  self.run, Orders(clock=clock), state)
        self.drops = Drops(self._order_lock, nodes, self.placement, self.holdings, self.view, self.states, self.run,
                           self.policy, fast_takeover, self.stopping, clock)
        self.queue = RunQueue(store=self.store, requests=self.requests, runner=self.runner, run=self.run,
                              order_lock=self._order_lock, stopping=self.stopping, placement=self.placement,
                              holdings=self.holdings, view=self.view, states=self.states, policy=self.policy,
                              drops=self.drops, runner_dir=state / "runner", fast=fast_takeover, address=address,
                              retry_initial=retry_initial, retry_max=retry_max, leading=self.ordering_term,
                              clock=clock)
        self.gate = RetakeGate(self.holdings, self.view, self.run, self.runner)
        self.statusview = StatusView(auth=self.auth, placement=self.placement, holdings=self.holdings,
                                     view=self.view, states=self.states, store=self.store, run=self.run,
                                     policy=self.policy, timing=timing, accepted=lambda: self._accepted,
                                     leadership=self.leadership.view, clock=clock)
        self.operations = Operations(auth=self.auth, placement=self.placement, holdings=self.holdings,
                                     view=self.view, states=self.states, store=self.store, queue=self.queue,
                                     status=self.statusview)
        if fast_takeover:
            fasttakeover.preload()  # the planner imported now, not when the first node dies
        self._recover(state / "runner")
        # Like a new CTDB recovery master: start with a takeover run, to know (and enforce) the placement.
        self.store.add_request("listener", "listener started")

    def _recover(self, runner_dir: Path) -> None:
        cut_short = self.store.unfinished_runs()
        unchanged, run_state = recovery.cancel_cut_short(runner_dir) if cut_short else (False, None)
        plan = recovery.plan(cut_short, unchanged, run_state, self.placement.get())
        for run_id, known in plan.redo:
            self.store.abandon(run_id)
            self.store.add_request("listener", f"redo of run {run_id}")
            log.warning("Takeover run %d was cut short by a listener restart: redoing it%s", run_id,
                        f" ({known})" if known else "")
        if plan.placement is not None:
            self.placement.set(plan.placement)
        if plan.adopt is not None:
            if plan.untaken:
                log.warning("Takeover run cut short: its takers refused %s before changing anything: held by "
                            "nobody, ordered to other nodes once the nodes report", ", ".join(plan.untaken))
            self.placement.adopt(plan.adopt, self.policy.issued_for(), plan.recorded_on, plan.untaken)
            self.policy.want_gone(set(plan.skipped) - set(self.view.dead()))
            if plan.skipped and self._fast:
                self.policy.want()

    # --- leadership ---------------------------------------------------------------------------------------------
    def _leadership_changed(self, view: Any) -> None:
        self.fence.won(view.term if view.role == "leader" else None)
        if view.role != "leader":
            self.queue.cancel_for_leadership()

    def ordering_term(self) -> int | None:
        """The term under which this listener may order and run now (the embedded listener: 0), else None: it
        leads and its term is fenced in (fence.py)."""
        term = self.leadership.leading()
        if not term:  # not leading, or the embedded listener (term 0): nothing to fence
            return term
        term, first = self.fence.fenced(term, self.view.live())
        if first and self._fast:
            self.policy.want()  # the dead nodes' IPs (declared while a standby) are ordered at once
        return term

    # --- the four entries ----------------------------------------------------------------------------------------
    def heartbeat_answer(self, node: str, peer: str | None, beat: protocol.Heartbeat) -> protocol.HeartbeatAnswer:
        """What a heartbeat's signed answer carries. A standby hears (its view stays warm) but orders nothing,
        acknowledges no lease and tells nothing to do: the listeners are one voter, the leader."""
        term = self.leadership.leading()
        orders = self.heartbeat(node, peer, beat, self.ordering_term())
        if term is None:
            view = self.leadership.view()
            return protocol.HeartbeatAnswer(
                declared_dead=self.placement.declared_dead(node), running=self.run.running() is not None,
                retake_wait=True, retake_floor=self.placement.retake_generation(node) or 0,  # 0: send me records
                generation=self.placement.completed(), tick=self.clock(), leader=False, term=view.term or 0)
        ack = not self.view.shuns(node)
        step_down = self.states.step_down(node, self.view.live())  # before the tick: a later report echoes it
        answer = protocol.HeartbeatAnswer(
            orders=orders, declared_dead=self.placement.declared_dead(node), running=self.run.running() is not None,
            retake_wait=self.gate.waits(node, beat.retake), retake_floor=self.placement.retake_generation(node),
            generation=self.placement.completed(), lease_ack=ack, tick=self.clock(), step_down=step_down,
            leave=self.view.is_leaving(node), gratarp=self.operations.gratarp_for(node),
            held_elsewhere=self.gate.held_elsewhere(node, beat.retake), term=term)
        self.gate.answered(node, beat, answer)
        return answer

    def takeover_request(self, node: str, request: protocol.TakeoverRequest) -> int:
        reason = request.reason[:500]
        request_id = self.requests.ask(reason, node=node)
        self._accepted += 1
        log.info("Takeover run requested by %s (request %d): %s", node, request_id, reason or "no reason given")
        return request_id

    def operation(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self.operations.operation(payload)

    def status(self) -> protocol.Status:
        return self.statusview.status()

    def metrics(self) -> str:
        return self.statusview.metrics()

    def wait_for(self, request_id: int, timeout: float) -> dict[str, Any]:
        return self.queue.wait_for(request_id, timeout)

    # --- heartbeats ----------------------------------------------------------------------------------------------
    def heartbeat(self, node: str, peer: str | None = None, beat: protocol.Heartbeat | None = None,
                  term: int | None = 0) -> list[protocol.Order]:
        """A sign of life; returns the fast takeover orders for NODE (orders.py), under TERM (None: not leading,
        none)."""
        beat = beat or protocol.Heartbeat(node)
        self.fence.reported(node, beat.term)
        self.view.hear(node, peer)
        self.holdings.report(node, beat)
        if beat.health is not None:
            change = self.states.health_report(node, beat.health)
            if change:
                self.queue.replan(change)
        self.queue.adopt_record()
        self.policy.acknowledge(node, beat.done)
        if beat.leave and self.view.leave(node):
            log.warning("Node %s is leaving (graceful shutdown): it drops its public IPs, the others take them", node)
        if self.view.leaving_since(node) is not None:
            self._leave_when_empty(node)
        self._hand_over(node)
        if self.view.has_left(node) and beat.leaving:
            return []  # the leaving watchdog's last heartbeats: not back yet
        if self.view.back(node):
            log.warning("Node %s is back (heartbeat): takeover run to bring it back", node)
            self.policy.forget_cancel(node)
            self.states.give_back(node)
            self.requests.ask(f"node {node} is back", news=True)
            self.queue.cancel_for_return(node)
        return [] if term is None else [replace(o, term=term) for o in self.policy.deliver(node)]

    def _hand_over(self, node: str) -> None:
        """A node stepping down said it holds nothing: its IPs go to the others now, as for a dead node."""
        holds, tick = self.holdings.holds_of(node)
        why = self.states.to_hand_over(node, holds, tick)
        if why:
            log.info("Node %s (%s) holds no public IP now: fast takeover of its IPs", node, why)
            if self._fast and self.ordering_term() is not None:
                self.policy.issue(exclude=self.view.suspected(), gone={node})

    def _leave_when_empty(self, node: str) -> None:
        """A leaving node is gone once a heartbeat made after its leave says it holds nothing: it refuses every
        take from then on, so its IPs go to the others at once, without waiting for its death."""
        since = self.view.leaving_since(node)
        holds, tick = self.holdings.holds_of(node)
        if since is None or holds is None or holds or tick < since:
            return
        self.view.gone(node)
        self.node_died(node, None, "it left gracefully and holds no public IP")
        if self._fast and self.ordering_term() is not None:
            self.policy.issue(exclude=self.view.suspected())
        self.requests.ask(f"node {node} left")

    # --- liveness ------------------------------------------------------------------------------------------------
    def watch_liveness(self) -> None:
        """Every 50 ms, the death verdict for every live node (nodeview.py). Nodes that fall together (a
        partition) are declared dead together, in one batch of orders: a death waits (up to BATCH_WAIT) for the
        other nodes a quorum already shuns. Between deaths, the IPs dropped are ordered (drops.py)."""
        ready_since: float | None = None
        pinged = -math.inf
        deaf_since: float | None = None  # leading (HA) without hearing a quorum of voters since
        while not self.stopping.is_set():
            if self.clock() - pinged >= 1.0:  # systemd restarts a listener whose liveness watch hangs
                sdnotify.notify("WATCHDOG=1")
                pinged = self.clock()
            leases_on = self.holdings.leases_on()
            hears = self.view.hears_quorum(leases_on)  # also while a run runs: awaits_retakes must know a partition
            deaf_since = None if hears or not self.leadership.leading() else (deaf_since or self.clock())
            if deaf_since is not None and self.clock() - deaf_since >= STEP_ASIDE_AFTER:
                self.leadership.step_aside(STEP_ASIDE_FOR, "it hears no quorum of the nodes")
                deaf_since = None
            died, shunned = self.view.verdicts(
                self.holdings.reports(), self.holdings.timing(), self.holdings.grace_left,
                lambda n: self.holdings.in_grace(n, self.clock() + self.holdings.start_grace(n)))
            now = self.clock()
            if died and shunned:
                ready_since = now if ready_since is None else ready_since
                if now - ready_since < BATCH_WAIT:
                    self.stopping.wait(0.05)
                    continue  # the others fall within moments: one batch for all
            ready_since = None
            exclude = self.view.suspected() | set(shunned)
            ordering = self.ordering_term() is not None
            if not ordering:
                pass  # a standby declares deaths (its view stays warm) and orders nothing
            elif self.policy.wanted() and self._fast:
                self.policy.issue(exclude=exclude)
            elif self._fast and not died and self.run.running() is None and self.view.hears_quorum(leases_on):
                self.drops.order_dropped(exclude=exclude)
            elif self._fast and not died and self.run.running() and self.view.hears_quorum(leases_on) \
                    and self.run.state_file():
                run_state = self.run.read()  # once a tick, for both
                self.drops.cancel_for_dropped(run_state)
                self.drops.order_untaken_during_run(run_state)
            if died:
                for d in died:
                    self.node_died(d.node, d.silent_for, d.why)
                if self._fast and ordering:  # one batch of orders for all (a later death's batch waits for this one)
                    self.policy.issue(exclude=exclude)
                names = [d.node for d in died]
                self.requests.ask(f"node{'s' if len(names) > 1 else ''} {', '.join(names)} dead", news=True)
            self.stopping.wait(0.05)

    def node_died(self, node: str, silent_for: float | None, why: str) -> None:
        """Its IPs may go to others now while its record stays as it was: when it comes back, no fast retake from
        that record (nor from the newer one it last reported) - only a run that records it again."""
        self.view.declare_dead(node)
        record = self.holdings.record_of(node)
        self.placement.declare_dead(node, record[0] if record else 0)
        if silent_for is None:
            log.warning("Node %s is gone (%s): takeover run without it", node, why)
        else:
            log.warning("Node %s is dead (no heartbeat for %.1fs; %s): takeover run without it", node, silent_for, why)

    def work(self) -> None:
        self.queue.work()


def open_store(path: Path) -> Store:
    """The sqlite state; a corrupt file is set aside (with its WAL) and a new one started."""
    import sqlite3

    try:
        store = Store(str(path))
        store.pending()
        return store
    except sqlite3.DatabaseError as exc:
        for extra in ("-wal", "-shm"):
            Path(str(path) + extra).unlink(missing_ok=True)
        set_aside(path, str(exc))
        return Store(str(path))

