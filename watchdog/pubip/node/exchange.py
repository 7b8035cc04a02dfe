"""The heartbeat exchange with the listener: what a heartbeat says (heartbeat_payload, pure), and what its
signed answer does here - the listener's tick and generation noted, the lease acknowledged, a step-down or a
leave carried out (release everything, take nothing), announcements repeated, fast takeover orders carried out.
One thread per listener sends a heartbeat every heartbeat_interval, and at once when orders were just carried
out.

HA listeners (listener.urls): each gets the heartbeats, so a standby's view stays warm; only the leader's
answer counts - one voter for the lease, the only one whose orders, step-downs and announcements are carried
out - and only while its term is the newest seen. A newer term is written to the record under the interface
lock before anything else happens (no take of an older term can be under way then, none starts after), and
the heartbeats report it (fencing: the new leader orders once every live node has).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace
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
_locking = module_utils("locking")
log = logging.getLogger("pubip.watchdog")


def heartbeat_payload(node: str, membership: protocol.Membership, kernel_held: set[str] | None, taking: set[str],
                      by_order: set[str], done: list[protocol.OrderResult], record: protocol.RecordReport | None,
                      health: protocol.Health | None, leaving: bool, connections: dict[str, Any] | None,
                      retake: list[str] | None = None, term: int = 0) -> protocol.Heartbeat:
    """A heartbeat. HOLDS: what the kernel holds (KERNEL_HELD; None: unknown), with what a fast retake is adding
    (TAKING) and what orders put here (BY_ORDER): a run that cannot reach this node keeps those here (pinned).
    HELD: the kernel alone - the listener puts no IP beside it. TAKING: what HOLDS names only because a retake
    may be adding it (dropped when the listener refuses the retake this heartbeat asks for: RETAKE)."""
    return protocol.Heartbeat(
        node=node, membership=membership,
        holds=None if kernel_held is None else sorted(kernel_held | taking | by_order),
        held=None if kernel_held is None else sorted(kernel_held),
        taking=sorted(taking - kernel_held - by_order) if kernel_held is not None else [],
        done=done, record=record, health=health, connections=connections, retake=retake, leaving=leaving, term=term)


class Exchange:
    def __init__(self, cfg: Config, keeper: LeaseKeeper, orders: OrderTaker, health: Health,
                 taking: Callable[[], set[str]]) -> None:
        self._cfg, self._keeper, self._orders, self._health, self._taking = cfg, keeper, orders, health, taking
        self._channels = threading.local()  # each thread's open connections to the listeners
        self._lock = threading.Lock()
        self._ticks: dict[str, float] = {}  # each listener's clock in its last answer, echoed in the next
        self._term = _record.term(_record.read(cfg.record_path)) if cfg.listener else 0  # the newest term seen
        self._leader: str | None = None  # the URL of the listener whose answers count
        self._known: dict[str, int | None] = {}  # each listener's retake floor in its last answer: what it knows
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

    def exchange(self, retake: list[str] | None = None, url: str | None = None) -> protocol.HeartbeatAnswer:
        """One signed heartbeat to the listener at URL (default: the leader, else the first), reporting on orders
        carried out since the last one (and asking to RETAKE those IPs); carries out what a leader's answer
        brings. Returns the answer. Raises RequestFailed."""
        listener = self._cfg.listener
        assert listener is not None
        url = url or self._leader or listener.urls[0]
        channels = getattr(self._channels, "open", None)
        if channels is None:
            channels = self._channels.open = {}
        if url not in channels:  # this thread's connection to URL, and URL's backend settings
            channels[url] = (Channel(url, listener.timeout, listener.ca_file),
                             listener if url == listener.url else replace(listener, url=url))
        channel, backend = channels[url]
        done = self._orders.results()
        connections, self._connections = self._connections, None
        with self._lock:
            tick, known = self._ticks.get(url), self._known.get(url)
        beat = heartbeat_payload(
            self._cfg.node, self._keeper.report(tick), kernel.held_public(self._cfg), self._taking(),
            self._orders.held(), done, kernel.record_report(self._cfg, known),
            self._health.report() if self._cfg.monitor_interval else None, self._leaving, connections, retake,
            self._term)
        sent = time.monotonic()
        try:
            _status, raw, signed, path = listener_exchange(backend, self._cfg.node, beat.wire(),
                                                           protocol.HEARTBEAT_PATH, channel)
            received = time.monotonic()
            answer = signed_answer(backend, raw, signed, path)
        except RequestFailed:
            self._orders.put_back(done)
            raise
        with self._lock:
            if answer.tick is not None:
                self._ticks[url] = answer.tick
            self._known[url] = answer.retake_floor  # a standby adopts the placement from the records it lacks
        if not self._counts(url, answer):
            self._orders.put_back(done)  # a standby's answer: the leader hears of them
            return answer
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

    def _counts(self, url: str, answer: protocol.HeartbeatAnswer) -> bool:
        """Whether the answer from URL is the leader's, of the newest term: the only one acted on. A newer term
        is fenced in first: written to the record under the interface lock."""
        if not answer.leader:
            if self._leader == url:
                self._leader = None
            return False
        if answer.term < self._term:
            log.warning("Ignoring %s: it answers as the leader of term %d, older than term %d", url, answer.term,
                        self._term)
            return False
        if answer.term > self._term:
            try:
                self._fence(answer.term, url)
            except _locking.LockTimeout:  # a take holds the lock: acted on once it is done, next heartbeat
                return False
        if self._leader != url and len(self._cfg.listener.urls if self._cfg.listener else []) > 1:
            log.warning("Listener %s leads (term %d)", url, answer.term)
        self._leader = url
        return True

    def _fence(self, term: int, url: str) -> None:
        with _locking.InterfaceLock(self._cfg.lock_path, timeout=actions.LOCK_TIMEOUT):
            record = _record.read(self._cfg.record_path)
            if record is not None and _record.term(record) < term:
                _record.write(self._cfg.record_path, _record.with_term(record, term))
            self._term = max(self._term, term)
        log.warning("Leadership term %d (listener %s): orders and takeover runs of older terms are refused here",
                    term, url)

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

    def run(self, stopped: threading.Event, url: str | None = None) -> None:
        """Tell the listener at URL this node is alive, every heartbeat_interval (its own thread); orders just
        carried out are reported at once."""
        failing = False
        url = url or (self._cfg.listener.urls[0] if self._cfg.listener else None)
        while not stopped.is_set():
            try:
                self.exchange(url=url)
                if failing:
                    log.info("Heartbeats reach the listener again%s", f" ({url})" if self._many() else "")
                failing = False
            except RequestFailed as exc:
                if not failing:
                    log.warning("Heartbeat failed: %s", exc)
                if self._leader == url:
                    self._leader = None
                failing = True
            except Exception:  # the heartbeat loop must outlive anything (a bug, a bad answer): log, back off
                log.exception("Heartbeat failed unexpectedly")
                failing = True
                stopped.wait(1.0)
            if failing or not self._orders.reporting():
                self._hurry.wait(self._cfg.heartbeat_interval)
                self._hurry.clear()

    def _many(self) -> bool:
        return self._cfg.listener is not None and len(self._cfg.listener.urls) > 1
