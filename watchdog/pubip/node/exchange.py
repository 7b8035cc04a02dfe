"""The heartbeat exchange with the listener: what a heartbeat says (heartbeat_payload, pure), and what its
signed answer does here - the listener's tick and generation noted, the lease acknowledged, a step-down or a
leave carried out (release everything, take nothing), announcements repeated, fast takeover orders carried out.
One thread sends a heartbeat every heartbeat_interval, and at once when orders were just carried out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from .._collection import module_utils
from ..membership import LISTENER
from . import actions, gate, kernel
from .config import Config
from .health import Health
from .leasekeeper import LeaseKeeper
from .ordertaker import OrderTaker
from .requester import Channel, RequestFailed, listener_exchange, signed_answer

_record = module_utils("record")
log = logging.getLogger("pubip.watchdog")


def heartbeat_payload(node: str, membership: protocol.Membership, kernel_held: set[str] | None, taking: set[str],
                      by_order: set[str], done: list[protocol.OrderResult], record: protocol.RecordReport | None,
                      health: protocol.Health | None, leaving: bool, connections: dict[str, Any] | None,
                      retake: list[str] | None = None) -> protocol.Heartbeat:
    """A heartbeat. HOLDS: what the kernel holds (KERNEL_HELD; None: unknown), with what a fast retake is adding
    (TAKING) and what orders put here (BY_ORDER): a run that cannot reach this node keeps those here (pinned).
    HELD: the kernel alone - the listener puts no IP beside it. TAKING: what HOLDS names only because a retake
    may be adding it (dropped when the listener refuses the retake this heartbeat asks for: RETAKE)."""
    return protocol.Heartbeat(
        node=node, membership=membership,
        holds=None if kernel_held is None else sorted(kernel_held | taking | by_order),
        held=None if kernel_held is None else sorted(kernel_held),
        taking=sorted(taking - kernel_held - by_order) if kernel_held is not None else [],
        done=done, record=record, health=health, connections=connections, retake=retake, leaving=leaving)


class Exchange:
    def __init__(self, cfg: Config, keeper: LeaseKeeper, orders: OrderTaker, health: Health,
                 taking: Callable[[], set[str]]) -> None:
        self._cfg, self._keeper, self._orders, self._health, self._taking = cfg, keeper, orders, health, taking
        self._channels = threading.local()  # each thread's open connection to the listener
        self._lock = threading.Lock()
        self._tick: float | None = None  # the listener's clock in its last answer, echoed in the next
        self._generation: int | None = None  # the retake floor in the listener's last answer
        self._connections: dict[str, list[list[Any]]] | None = None  # listed since the last heartbeat carried them
        self._stepped_down: str | None = None  # why the listener said to hold nothing (banned, unhealthy)
        self._leaving = False  # this host is shutting down: it holds and takes nothing
        self._hurry = threading.Event()  # send the next heartbeat now

    def stepped_down(self) -> str | None:
        return self._stepped_down

    def blocker(self) -> str | None:
        """Why this node may take nothing now (gate.py)."""
        return gate.blocker(self._keeper.has_lease(), self._stepped_down, self._health.ok())

    def set_connections(self, connections: dict[str, list[list[Any]]]) -> None:
        """The TCP connections to the public IPs held here (tickle_interval): sent with the next heartbeat."""
        self._connections = connections

    def exchange(self, retake: list[str] | None = None) -> protocol.HeartbeatAnswer:
        """One signed heartbeat to the listener, reporting on orders carried out since the last one (and asking to
        RETAKE those IPs); carries out the orders the answer brings. Returns the answer. Raises RequestFailed."""
        assert self._cfg.listener is not None
        channel = getattr(self._channels, "listener", None)
        if channel is None:
            channel = self._channels.listener = Channel(self._cfg.listener.url, self._cfg.listener.timeout,
                                                        self._cfg.listener.ca_file)
        done = self._orders.results()
        connections, self._connections = self._connections, None
        with self._lock:
            tick, known = self._tick, self._generation
        beat = heartbeat_payload(
            self._cfg.node, self._keeper.report(tick), kernel.held_public(self._cfg), self._taking(),
            self._orders.held(), done, kernel.record_report(self._cfg, known),
            self._health.report() if self._cfg.monitor_interval else None, self._leaving, connections, retake)
        sent = time.monotonic()
        try:
            _status, raw, signed, path = listener_exchange(self._cfg.listener, self._cfg.node, beat.wire(),
                                                           protocol.HEARTBEAT_PATH, channel)
            received = time.monotonic()
            answer = signed_answer(self._cfg.listener, raw, signed, path)
        except RequestFailed:
            self._orders.put_back(done)
            raise
        with self._lock:
            if answer.tick is not None:
                self._tick = answer.tick
            self._generation = answer.retake_floor
        if answer.lease_ack:
            self._keeper.acknowledged(LISTENER, sent)
        if answer.leave and not self._leaving:
            log.warning("Leaving the cluster (graceful shutdown): releasing all public IPs for the others to take")
            self._leaving = True
        self._step_down("leaving" if self._leaving else answer.step_down)
        if answer.gratarp:
            announced = actions.announce(self._cfg, self._orders.netlink(), _record.read(self._cfg.record_path),
                                         answer.gratarp)
            log.info("Gratuitous ARP / NA on the listener's word: %s", ", ".join(announced) or "none held here")
        for order in answer.orders if self._cfg.fast_takeover else []:
            self._orders.carry_out(order, received, self.blocker())
        return answer

    def _step_down(self, why: str | None) -> None:
        """The listener says this node must hold nothing - banned, UNHEALTHY while another node is healthy, or
        leaving: it drops every public IP by itself (no hooks: a node banned for failing releases must still let
        go) and takes none meanwhile; the listener hands them to the others once a heartbeat says none is held."""
        if why and why != self._stepped_down:
            if why == "banned":
                log.error("Banned by the listener: releasing all public IPs; none taken until the ban ends")
            elif why != "leaving":
                log.error("The listener moves this node's public IPs away (%s): releasing them all", why)
            self._stepped_down = why
            actions.release_all(self._cfg, self._orders.netlink(), _record.read(self._cfg.record_path),
                                why.capitalize())
            self._hurry.set()  # the listener learns at once that nothing is held here
        elif not why and self._stepped_down:
            log.warning("No longer %s: public IPs come back through a takeover run", self._stepped_down)
            self._stepped_down = None

    def run(self, stopped: threading.Event) -> None:
        """Tell the listener this node is alive, every heartbeat_interval (its own thread); orders just carried
        out are reported at once."""
        failing = False
        while not stopped.is_set():
            try:
                self.exchange()
                if failing:
                    log.info("Heartbeats reach the listener again")
                failing = False
            except RequestFailed as exc:
                if not failing:
                    log.warning("Heartbeat failed: %s", exc)
                failing = True
            except Exception:  # the heartbeat loop must outlive anything (a bug, a bad answer): log, back off
                log.exception("Heartbeat failed unexpectedly")
                failing = True
                stopped.wait(1.0)
            if failing or not self._orders.reporting():
                self._hurry.wait(self._cfg.heartbeat_interval)
                self._hurry.clear()
