"""pubip-watchdog: CTDB's recovery-daemon check on each host, every interval and on netlink events.

An APScheduler job runs the check every `interval` seconds; a netlink
subscription (its own thread) only moves that job's next run to now, so a
vanished address is seen within milliseconds. On a finding the watchdog asks
the controller for a takeover run; with `fast_retake` it first re-adds an IP
that the current record assigns here (see README: the safety argument).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any

from .. import _collection, logs, protocol
from ..membership import LISTENER, Ears, Timing
from . import actions, ordered, realtime, sdnotify
from . import check as ipcheck
from .config import DEFAULT_PATH, Config, ConfigError, load
from .lease import Lease, file_due
from .requester import Requester

_lease = _collection.module_utils("lease")
_locking = _collection.module_utils("locking")
_netlink = _collection.module_utils("netlink")
_record = _collection.module_utils("record")
_rtdump = _collection.module_utils("rtdump")
log = logging.getLogger("pubip.watchdog")
EXIT_CLEAN, EXIT_FINDING, EXIT_ERROR = 0, 1, 2


class _Value:
    """Stands in for a prometheus_client metric when the exporter is off (it is not even imported)."""

    def __init__(self) -> None:
        self.value = 0.0
        self.children: dict[str, _Value] = {}

    def labels(self, *values: str) -> _Value:
        return self.children.setdefault("/".join(values), _Value())

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class Metrics:
    checks: Any
    findings: Any
    skips: Any
    requests: Any
    fast_retakes: Any
    duration: Any

    def __init__(self, port: int, address: str):
        if not port:
            self.checks, self.findings, self.skips, self.requests = _Value(), _Value(), _Value(), _Value()
            self.fast_retakes, self.duration = _Value(), _Value()
            return
        from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

        self.registry = CollectorRegistry()
        self.checks = Counter("pubip_watchdog_checks", "Checks run", ["trigger"], registry=self.registry)
        self.findings = Counter("pubip_watchdog_findings", "Findings by rule", ["rule"], registry=self.registry)
        self.skips = Counter("pubip_watchdog_skips", "Checks skipped", ["reason"], registry=self.registry)
        self.requests = Counter("pubip_watchdog_requests", "Takeover run requests", ["outcome"],
                                registry=self.registry)
        self.fast_retakes = Counter("pubip_watchdog_fast_retakes", "IPs re-added by the fast path",
                                    registry=self.registry)
        self.duration = Gauge("pubip_watchdog_last_check_seconds", "Duration of the last check",
                              registry=self.registry)
        if port:
            start_http_server(port, addr=address, registry=self.registry)


class Watchdog:
    def __init__(self, cfg: Config, metrics: Metrics | None = None):
        self.cfg = cfg
        self.metrics = metrics or Metrics(0, "")
        self.requester = Requester(cfg, on_result=self._request_result)
        self.links: dict[str, bool] | None = None
        self.last_skip: str | None = None
        self.last_findings: set[str] = set()
        self.last_request: tuple[Any, ...] | None = None
        self.last_request_at = 0.0
        self.trigger = "interval"
        self.nl = _netlink.Netlink()
        self.stopped = threading.Event()
        self.ordered: dict[str, Any] = {}  # IP -> generation: taken on the listener's order, not yet recorded
        self.order_results: list[dict[str, Any]] = []  # sent back with the next heartbeat
        self.order_lock = threading.Lock()  # orders arrive with any heartbeat, from two threads
        self.channels = threading.local()  # each thread's open connection to the listener (requester.Channel)
        self.order_nl: Any = None
        self.retake_held: str | None = None  # why the last fast retake was held back
        self.taking: set[str] = set()  # IPs a fast retake may be adding now: reported as held meanwhile
        # Membership (README, "Safety: one holder"): the lease, and whom this node hears and shuns.
        self.timing = Timing(lease=cfg.lease or Timing.lease, heartbeat=cfg.heartbeat_interval)
        peers = sorted(cfg.peers.nodes) if cfg.peers else []
        voters = {cfg.node, *peers} | ({LISTENER} if cfg.backend == "listener" else set())
        self.lease = Lease(cfg.node, voters, cfg.lease) if cfg.lease else None
        self.ears = Ears(peers, self.timing)
        self.membership_lock = threading.Lock()
        self.listener_tick: float | None = None  # the listener's clock in its last answer, echoed in the next
        self.listener_generation: Any = None  # the last run's generation the listener knows (its last answer)
        self.lost_cluster = False
        self.stepped_down: str | None = None  # why the listener said to hold nothing (banned, unhealthy)
        self.leaving = False  # this host is shutting down (pubip-watchdog --leave): it holds and takes nothing
        self.hurry = threading.Event()  # send the next heartbeat now
        self.scheduler: Any = None
        self.connections: dict[str, list[list[Any]]] = {}  # public IP -> its TCP connections (tickle_interval)
        self.connections_dirty = False  # listed since the last heartbeat carried them
        self.health: dict[str, Any] = {"ok": True, "hook": "", "message": ""}  # the monitor hooks' verdict
        self.monitor_failed = 0
        self.monitored = float("-inf")  # when the monitor hooks last ran
        self.expired_run: Any = None  # the run_started of a dead run's mark, once logged
        self.started = time.monotonic()
        # A watchdog that was down longer than suspect_after is shunned for shun_hold after it speaks again:
        # it keeps what it holds that long (plus a lease and two heartbeats) before deciding it lost the cluster.
        # Only a host that lost its watchdog and its network at once could be dead meanwhile (README, Limits).
        self.start_grace = self.timing.shun_hold + self.timing.lease + 2 * self.timing.heartbeat
        if self.lease is not None:
            # A restart of the watchdog, not of the host: the lease the previous process held still counts.
            found, until = _lease.read_until(cfg.lease_path)
            if found == _lease.VALID:
                self.lease.carried = until
        # Taken on an order before a restart and still held: kept, not released as foreign (ordered.py).
        self.ordered_path = ordered.path_beside(cfg.lease_path)
        self.ordered = ordered.load(self.ordered_path, self.held_public() or set())
        if self.ordered:
            log.info("Taken on fast takeover orders before this watchdog started, not yet recorded: %s",
                     ", ".join(sorted(self.ordered)))

    def has_lease(self) -> bool:
        if self.lease is None:
            return True
        with self.membership_lock:
            return self.lease.valid()

    def _request_result(self, ok: bool) -> None:
        self.metrics.requests.labels("sent" if ok else "failed").inc()

    # --- the check ------------------------------------------------------------
    def check(self) -> ipcheck.Result:
        started = time.monotonic()
        trigger, self.trigger = self.trigger, "interval"
        self.metrics.checks.labels(trigger).inc()
        try:
            first = _record.read(self.cfg.record_path)
            ifaces = self.nl.interfaces()
            again = _record.read(self.cfg.record_path)
        except (OSError, ValueError) as exc:
            log.error("Cannot check: %s", exc)
            raise
        if first and first.get("node") not in (None, self.cfg.node):
            # Every IP would look foreign and be released: refuse to act instead (a copied config or record).
            result = ipcheck.Result(skipped=f"the record {self.cfg.record_path} is node {first.get('node')}'s, "
                                            f"this watchdog is node {self.cfg.node}'s: refusing to act")
            if result.skipped != self.last_skip:
                log.error("Check skipped: %s", result.skipped)
            self.last_skip = result.skipped
            self.metrics.skips.labels("node mismatch").inc()
            return result
        expired = _record.mark_expired(first)
        if expired and self.expired_run != (first or {}).get("run_started"):
            log.warning("Takeover run %s marked this record in progress and is past its deadline: it died mid-way; "
                        "checking without it (no fast retake)", (first or {}).get("run_id") or "?")
        self.expired_run = (first or {}).get("run_started") if expired else None
        result = ipcheck.check(first, again, ifaces, self.cfg.node, self.links,
                               in_progress=_record.in_progress(first))
        if self.cfg.release_on_link_loss and first and actions.stranded(first, ifaces):
            actions.release_stranded(self.cfg, self.nl, first)
        if self.ordered and first is not None:
            # Taken on the listener's order: the verifying run is already coming; no need to ask for one.
            gen = first.get("generation")
            with self.order_lock:
                recorded = [ip for ip, order in self.ordered.items()
                            if order.get("generation") != gen and not actions.ordered_by_marking_run(first, order)]
                for ip in recorded:
                    self.ordered.pop(ip, None)  # recorded by a run since: the record speaks again
                # gone from the kernel (a network restart, a link loss): not held here any more, whatever this
                # node's heartbeats said - the listener orders it again, or a run places it (chaos: reported
                # held for 20 s while nobody held it). Read under the lock an order's take holds.
                kernel = self.held_public() if self.ordered else None
                lost = sorted(ip for ip in self.ordered if kernel is not None and ip not in kernel
                              and ip not in self.taking)
                for ip in lost:
                    self.ordered.pop(ip, None)
                if recorded or lost:
                    self._save_ordered()
            if lost:
                log.warning("No longer holds %s, taken on fast takeover orders: gone from the kernel",
                            ", ".join(lost))
            result.findings = [f for f in result.findings if not (f.rule == ipcheck.FOREIGN and f.ip in self.ordered)]
        foreign = [f.ip for f in result.findings if f.rule == ipcheck.FOREIGN]
        if self.cfg.release_foreign and foreign and first is not None and \
                (not result.skipped or _record.in_progress(first)):
            actions.release_foreign(self.cfg, self.nl, first, foreign, spare=lambda: set(self.ordered) | self.taking)
        if result.skipped:
            self.metrics.skips.labels(result.skipped).inc()
            if result.skipped != self.last_skip:
                log.info("Check skipped: %s", result.skipped)
            self.last_skip = result.skipped
        else:
            self.last_skip = None
            self.links = result.links
        seen = set()
        for f in result.findings:
            self.metrics.findings.labels(f.rule).inc()
            seen.add(f.message)
            # A finding is logged when it appears; while it lasts, only at debug level.
            log.log(logging.DEBUG if f.message in self.last_findings else logging.WARNING, "%s", f.message)
        self.last_findings = seen
        if not result.findings and not result.skipped:
            self.last_request = None  # clean again: the next finding is asked for at once
            self.requester.withdraw()
        retaken: list[str] = []
        if self.cfg.fast_retake and result.fast_retake and first is not None and \
                self._may_retake(first, result.fast_retake):
            retaken = self._fast_retake(first, result.fast_retake)
        if result.findings and all(f.rule == ipcheck.MISSING and f.ip in retaken for f in result.findings):
            # The kernel matches the record again: nothing for a takeover run to do.
            log.info("Fast retake restored %s: the record holds, no takeover run needed", ", ".join(retaken))
            self.last_findings = set()
            self.requester.withdraw()  # one asked for while the network was down is not needed either
        elif result.findings and not result.skipped:
            # Under a run's mark the run is changing this host and records the outcome: what it does not give this
            # node was released above, and asking for another run would only follow it with one more.
            self._ask(first, result, trigger)
        self.metrics.duration.set(time.monotonic() - started)
        return result

    def _ask(self, record: dict[str, Any] | None, result: ipcheck.Result, trigger: str) -> None:
        key = ((record or {}).get("generation"), tuple(sorted((f.rule, f.ip) for f in result.findings)))
        # The same findings under the same generation are asked for again only after retry_max.
        if key == self.last_request and time.monotonic() - self.last_request_at < self.cfg.retry_max:
            return
        self.last_request, self.last_request_at = key, time.monotonic()
        payload = {"node": self.cfg.node, "generation": key[0], "trigger": trigger,
                   "reason": "; ".join(f.message for f in result.findings)[:1000],
                   "findings": [{"rule": f.rule, "ip": f.ip} for f in result.findings]}
        self.requester.request(payload)

    def _may_retake(self, record: dict[str, Any], wanted: list[str]) -> bool:
        """A fast retake needs a lease, a record whose last run did not die mid-way, and - with the listener -
        the listener's word: the record alone no longer proves these IPs are still ours (a takeover run that
        could not reach this node, or a fast takeover while it was silent, may have given them away without
        this node's record changing). So the listener is asked (a heartbeat, a few milliseconds): no run
        running, the record not older than its last run, our IPs not given away under this generation.
        Without an answer there is no fast retake."""
        why: str | None = None
        if not self.has_lease():
            why = "this node has no lease (it lost the cluster)"
        elif self.stepped_down:
            why = f"this node is {self.stepped_down}"
        elif not self.health["ok"]:
            why = "this node is UNHEALTHY: its IPs move away"
        elif _record.mark_expired(record):
            why = "the last takeover run died mid-way (its mark expired): where its IPs went is unknown"
        elif self.cfg.backend == "listener":
            # Reported as held from before the listener is asked: a run it starts after saying yes counts them.
            self.taking = set(wanted)
            why = self._listener_forbids(int(record.get("generation") or 0), wanted)
            if why:
                self.taking = set()
        if why:  # said once while it lasts
            log.log(logging.DEBUG if why == self.retake_held else logging.WARNING,
                    "Fast retake held back: %s; a takeover run decides", why)
        self.retake_held = why
        return why is None

    def _listener_forbids(self, generation: int, wanted: list[str]) -> str | None:
        from .requester import RequestFailed

        for attempt in range(3):  # a network restart flushes this host's own address too: it comes back soon
            try:
                answer = self.exchange({"retake": wanted})
                break
            except RequestFailed as exc:
                if attempt == 2 or self.stopped.wait(0.1):
                    return f"the listener did not answer ({exc})"
        # A run running is no reason to wait once it has gathered this node: it releases whatever it does not
        # keep here (public_ip's keep), and while it marks this record only what it keeps here is retaken. Before
        # that, a run that then cannot reach this node would pin it with what it reported: the listener holds
        # back a retake of IPs that report did not name, briefly.
        if answer.get("hold_retake"):
            self.recheck_soon()
        return protocol.retake_refused(answer, generation)

    def recheck_soon(self, delay: float = 0.1) -> None:
        """Run the check again in DELAY seconds (a retake the listener held back for a moment)."""
        if self.scheduler is None:
            return
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
        try:
            self.scheduler.modify_job("check", next_run_time=when)
        except Exception as exc:  # the scheduler is shutting down
            log.debug("recheck ignored: %s", exc)

    def _fast_retake(self, record: dict[str, Any], wanted: list[str]) -> list[str]:
        """Re-add IPs the current record assigns here, on the interface the record allows, under the lock;
        returns those now held.

        Safe because the record is the last completed takeover run's decision, and the listener said no run
        gave them away since: no other node is entitled to these IPs. A run in progress either has not marked
        this record yet - its release phase (same lock) then releases whatever it does not keep here - or
        marked it, and then only what it keeps here (run_keep) is retaken (checked again under the lock).
        """
        done: list[str] = []
        try:
            with _locking.InterfaceLock(self.cfg.lock_path, timeout=0.5):
                current = _record.read(self.cfg.record_path)
                if ipcheck.record_key(current) != ipcheck.record_key(record) or (
                        _record.in_progress(current) and not set(wanted) <= set(_record.kept(current))):
                    log.info("Fast retake skipped: the assignment record changed")
                    return done
                for act in actions.take(self.cfg, self.nl, record, actions.specs_of(record, wanted)):
                    if act.kind == "take" and not act.error:
                        self.metrics.fast_retakes.inc()
                        log.warning("Fast retake: %s", act.message)
                    elif act.error:
                        log.error("Fast retake failed: %s", act.message)
                    if not act.error:
                        done.append(act.pip.cidr)
        except _locking.LockTimeout:
            log.info("Fast retake skipped: interface lock busy (a takeover run is changing this node)")
        finally:
            self.taking = set()
        return done

    # --- running ----------------------------------------------------------------
    def wake(self, scheduler: Any) -> None:
        """Run the check now (debounced): the netlink thread's only action."""
        self.trigger = "netlink"
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=self.cfg.debounce)
        try:
            scheduler.modify_job("check", next_run_time=when)
        except Exception as exc:  # the scheduler is shutting down
            log.debug("wake ignored: %s", exc)

    def monitor(self, scheduler: Any) -> None:
        # A plain rtnetlink subscription (RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR): the
        # same groups pyroute2 binds, without its 16 MB of imports in a daemon that must stay small.
        sock = None
        while not self.stopped.is_set():
            try:
                sock = sock or _rtdump.subscribe()
                if _rtdump.wait_event(sock):
                    self.wake(scheduler)
            except Exception:  # netlink only hurries the checks: without it they still run every interval
                log.exception("Netlink events failed; resubscribing in 1s")
                if sock is not None:
                    with contextlib.suppress(Exception):
                        sock.close()
                sock = None
                self.stopped.wait(1.0)

    def exchange(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """One signed heartbeat to the listener, reporting on orders carried out since the last one;
        carries out the fast takeover orders the answer brings. Returns the answer's signed part:
        orders, declared_dead, running, generation. Raises RequestFailed."""
        from .requester import Channel, RequestFailed, listener_exchange, signed_answer

        assert self.cfg.listener is not None
        channel = getattr(self.channels, "listener", None)
        if channel is None:
            channel = self.channels.listener = Channel(self.cfg.listener.url, self.cfg.listener.timeout,
                                                       self.cfg.listener.ca_file)
        with self.order_lock:
            done, self.order_results = self.order_results, []
        taking, by_order = set(self.taking), set(self.ordered)
        kernel = self.held_public()
        holds = None if kernel is None else sorted(kernel | taking | by_order)
        record = self.record_report()
        connections, self.connections_dirty = (self.connections if self.connections_dirty else None), False
        with self.membership_lock:
            membership = {"tick": self.listener_tick, "lease": self.cfg.lease,
                          "lease_left": round(self.lease.remaining(), 3) if self.lease else None,
                          **self.ears.report()}
            grace = self.start_grace - (time.monotonic() - self.started)
            if self.lease is not None and grace > 0:
                # it may hold public IPs without a lease that long: the listener declares it dead only after
                membership["grace"] = math.ceil(grace * 1000) / 1000
        sent = time.monotonic()
        try:
            _status, answer, signed, path = listener_exchange(
                self.cfg.listener, self.cfg.node,
                {"node": self.cfg.node, "membership": membership, "holds": holds, **({"done": done} if done else {}),
                 # what the kernel holds, no more: the listener puts no IP beside it
                 **({"held": sorted(kernel)} if kernel is not None else {}),
                 # what HOLDS names only because a fast retake may be adding it (the listener drops those when
                 # it refuses the retake this heartbeat asks for)
                 **({"taking": sorted(taking - kernel - by_order)} if taking and kernel is not None else {}),
                 **({"record": record} if record else {}),
                 **({"health": dict(self.health)} if self.cfg.monitor_interval else {}),
                 **({"leaving": True} if self.leaving else {}),
                 **({"connections": connections} if connections is not None else {}), **(extra or {})},
                protocol.HEARTBEAT_PATH, channel)
            received = time.monotonic()
            part = signed_answer(self.cfg.listener, answer, signed, path)
        except RequestFailed:
            with self.order_lock:
                self.order_results = done + self.order_results
            raise
        with self.membership_lock:
            if isinstance(part.get("tick"), (int, float)):
                self.listener_tick = float(part["tick"])
            self.listener_generation = part.get("generation")
            if part.get("lease_ack") is True and self.lease is not None:
                self.lease.acknowledged(LISTENER, sent)
        if part.get("leave") is True and not self.leaving:
            log.warning("Leaving the cluster (graceful shutdown): releasing all public IPs for the others to take")
            self.leaving = True
        self._step_down("leaving" if self.leaving else part.get("step_down"))
        if isinstance(part.get("gratarp"), list) and part["gratarp"]:
            announced = actions.announce(self.cfg, self.order_nl or _netlink.Netlink(),
                                         _record.read(self.cfg.record_path), [str(ip) for ip in part["gratarp"]])
            log.info("Gratuitous ARP / NA on the listener's word: %s", ", ".join(announced) or "none held here")
        for order in part["orders"] if self.cfg.fast_takeover else []:
            self._carry_out(order, received)
        return part

    def record_report(self) -> dict[str, Any] | None:
        """This host's record for the listener: its generation and whether a run marks it, and all of it when
        it is newer than the listener knows (a takeover run the listener did not start: it adopts it once
        every live node has recorded it)."""
        try:
            record = _record.read(self.cfg.record_path)
        except (OSError, ValueError):
            return None
        if not record:
            return None
        out = {"generation": record.get("generation"), "marked": _record.marked(record)}
        if out["marked"] and record.get("run_id"):
            out["run_id"] = record["run_id"]  # the run that marked it: after a listener restart, its release is done
        known = self.listener_generation
        if not out["marked"] and isinstance(known, int) and int(record.get("generation") or 0) > known:
            out.update({k: record.get(k) for k in ("public_ips", "nodes", "run_started", "run_finished")})
        return out

    def held_public(self) -> set[str] | None:
        """The public IPs this host's kernel holds now (None: unknown). Reported with every heartbeat, with
        what a fast path may be adding right now: a run that cannot reach this node keeps them here (pinned),
        recorded or not."""
        try:
            record = _record.read(self.cfg.record_path)
            public = {e["ip"].split("/", 1)[0]: e["ip"] for e in (record or {}).get("public_ips") or []}
            _links, addrs = _rtdump.read_links_and_addresses()
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return {public[a] for _i, _f, a, _p, _s in addrs if a in public}

    def _step_down(self, why: Any) -> None:
        """The listener says this node must hold nothing - banned (CTDB's ban), UNHEALTHY while another node is
        healthy, or leaving: it drops every public IP by itself (no hooks: a node banned for failing releases
        must still let go) and takes none meanwhile; the listener hands them to the others as soon as a
        heartbeat says nothing is held here."""
        why = str(why) if isinstance(why, str) and why else None
        if why and why != self.stepped_down:
            if why == "banned":
                log.error("Banned by the listener: releasing all public IPs; none taken until the ban ends")
            elif why != "leaving":
                log.error("The listener moves this node's public IPs away (%s): releasing them all", why)
            self.stepped_down = why
            actions.release_all(self.cfg, self.order_nl or _netlink.Netlink(), _record.read(self.cfg.record_path),
                                why.capitalize())
            self.hurry.set()  # the listener learns at once that nothing is held here
        elif not why and self.stepped_down:
            log.warning("No longer %s: public IPs come back through a takeover run", self.stepped_down)
            self.stepped_down = None

    def monitor_hooks(self) -> None:
        """The `monitor` event (CTDB's convention), every monitor_interval: monitor_failures failures in a row
        make this node UNHEALTHY (reported with every heartbeat: the listener moves its IPs away)."""
        _hooks = _collection.module_utils("hooks")
        try:
            _hooks.run_hooks(self.cfg.hook_dir, "monitor", [], self.cfg.monitor_timeout)
        except _hooks.HookError as exc:
            self.monitor_failed += 1
            if self.monitor_failed >= self.cfg.monitor_failures and self.health["ok"]:
                log.error("Monitor: this node is UNHEALTHY: %s", exc)
            if self.monitor_failed >= self.cfg.monitor_failures:
                self.health = {"ok": False, "hook": os.path.basename(exc.hook), "message": str(exc.detail)[:300]}
            return
        if not self.health["ok"]:
            log.warning("Monitor: this node is healthy again")
        self.monitor_failed = 0
        self.health = {"ok": True, "hook": "", "message": ""}

    def _carry_out(self, order: dict[str, Any], received: float) -> None:
        if not self.has_lease():
            log.warning("Fast takeover order %s refused: this node has no lease", order.get("id"))
            with self.order_lock:
                self.order_results.append({"id": order.get("id"), "taken": [], "errors": [],
                                           "refused": "this node has no lease (it lost the cluster)"})
            return
        if self.stepped_down or not self.health["ok"]:
            why = f"this node is {self.stepped_down or 'UNHEALTHY'}"
            log.warning("Fast takeover order %s refused: %s", order.get("id"), why)
            with self.order_lock:
                self.order_results.append({"id": order.get("id"), "taken": [], "errors": [], "refused": why})
            return
        with self.order_lock:
            self.order_nl = self.order_nl or _netlink.Netlink()
            ips = [str(e.get("ip")) for e in order.get("ips") or [] if isinstance(e, dict)]
            for ip in ips:  # before the take: its netlink events wake a check that must know
                self.ordered[ip] = {"generation": order.get("generation"), "run_id": order.get("run_id")}
            self._save_ordered()
            result = actions.take_ordered(self.cfg, self.order_nl, order, received)
            for ip in set(ips) - set(result["taken"]):
                self.ordered.pop(ip, None)
            self._save_ordered()
            self.order_results.append(result)

    def _save_ordered(self) -> None:
        """Under order_lock."""
        try:
            ordered.save(self.ordered_path, self.ordered)
        except OSError as exc:  # a restart would release them as foreign; nothing else depends on the file
            log.warning("Cannot keep the IPs taken on orders in %s: %s", self.ordered_path, exc)

    def heartbeats(self) -> None:
        """Tell the listener this node is alive, every heartbeat_interval (its own thread); the answers
        may bring fast takeover orders, reported on in the very next heartbeat."""
        from .requester import RequestFailed

        failing = False
        while not self.stopped.is_set():
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
                self.stopped.wait(1.0)
            if failing or not self.order_results:  # orders just carried out are reported at once
                self.hurry.wait(self.cfg.heartbeat_interval)
                self.hurry.clear()

    def keep_lease(self) -> None:
        """Every 50 ms (its own thread): write the lease file for public_ip; without a lease, release every
        public IP held here (CTDB: "lost the cluster") - after a start-up grace of one lease time."""
        assert self.lease is not None
        nl = _netlink.Netlink()
        written: float | None = None
        while not self.stopped.wait(0.05):
            try:
                with self.membership_lock:
                    expiry = self.lease.expiry()
                    report = self.ears.report()
                now = time.monotonic()
                if file_due(written, expiry, self.timing.heartbeat):
                    _lease.write(self.cfg.lease_path, self.cfg.node, expiry)
                    written = expiry
                if expiry > now:
                    if self.lost_cluster:
                        log.warning("Lease regained: a quorum of voters hears this node again; public IPs "
                                    "come back by a fast retake if the listener allows it, else a takeover run")
                        self.lost_cluster = False
                        self.recheck_soon(0.0)  # its own IPs, if nobody moved them meanwhile: a fast retake now
                        # It can host again: a run gives it its share (CTDB rebalances a node that comes back).
                        self.requester.request({"node": self.cfg.node, "trigger": "lease",
                                                "reason": "Lease regained: this node can host public IPs again",
                                                "findings": []})
                    continue
                if now - self.started < self.start_grace:
                    continue  # start-up: time to hear a quorum, past the shuns a restart may have caused
                if not self.lost_cluster:
                    silent = sorted(p for p, ago in report["hears"].items() if ago >= self.timing.suspect_after)
                    log.error("Lost the cluster: no lease from a quorum of voters (peers not heard: %s; listener "
                              "acknowledged %s): releasing all public IPs", ", ".join(silent) or "none",
                              "never" if LISTENER not in self.lease.acks else
                              f"{now - self.lease.acks[LISTENER]:.1f}s ago")
                    self.lost_cluster = True
                self.release_all(nl)
            except Exception:  # the lease loop must outlive anything
                log.exception("Lease check failed")
                self.stopped.wait(0.5)

    def release_all(self, nl: Any) -> None:
        """Lost the cluster: release every public IP held here. Those taken on orders are forgotten with them:
        the heartbeats reported them held until a run recorded them, so a run that could not reach this node
        would have pinned them here, unheld (chaos: 48 s), and the listener would not have seen them unheld."""
        released = actions.release_all(self.cfg, nl, _record.read(self.cfg.record_path))
        if not self.ordered:
            return
        kernel = self.held_public()  # also those released before (link loss), not only these
        with self.order_lock:
            forgotten = sorted(ip for ip in self.ordered if ip in released or (kernel is not None and ip not in kernel))
            for ip in forgotten:
                self.ordered.pop(ip, None)
            if forgotten:
                self._save_ordered()
        if forgotten:
            log.warning("Lost the cluster: no longer holds %s, taken on fast takeover orders", ", ".join(forgotten))

    def run_forever(self) -> None:
        from apscheduler.schedulers.blocking import BlockingScheduler

        scheduler = BlockingScheduler(timezone=datetime.UTC)
        self.scheduler = scheduler
        scheduler.add_job(self._safe_check, "interval", seconds=self.cfg.interval, id="check", coalesce=True,
                          max_instances=1, misfire_grace_time=None,
                          next_run_time=datetime.datetime.now(datetime.UTC))
        if self.cfg.tickle_interval and self.cfg.backend == "listener":
            scheduler.add_job(self.list_connections, "interval", seconds=self.cfg.tickle_interval, id="tickles",
                              coalesce=True, max_instances=1, misfire_grace_time=None,
                              next_run_time=datetime.datetime.now(datetime.UTC))
        if self.cfg.announce_refresh:
            scheduler.add_job(self.refresh_announcements, "interval", seconds=self.cfg.announce_refresh,
                              id="announce", coalesce=True, max_instances=1, misfire_grace_time=None)
        if self.cfg.monitor_interval and self.cfg.hook_dir:
            # Every second at most, the hooks every monitor_interval - and every second while UNHEALTHY, so that a
            # recovery is seen at once and the IPs come back (failback) without waiting a whole interval.
            scheduler.add_job(self._safe_monitor, "interval", seconds=min(1.0, self.cfg.monitor_interval),
                              id="monitor",
                              coalesce=True, max_instances=1, misfire_grace_time=None,
                              next_run_time=datetime.datetime.now(datetime.UTC))

        def stop(signum: int, _frame: Any) -> None:
            log.info("Watchdog stopping (signal %d)", signum)
            self.stopped.set()
            self.requester.stop()
            # Not from the handler itself: the signal may have interrupted the main thread inside the
            # scheduler's executor, holding a lock that shutdown() needs. A thread waits for it instead -
            # and for the scheduler to have started, when the signal came just before it did.
            threading.Thread(target=shut_down, name="pubip-stop").start()

        def shut_down() -> None:
            deadline = time.monotonic() + 10
            while not scheduler.running and time.monotonic() < deadline:
                time.sleep(0.01)
            scheduler.shutdown(wait=False)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if self.cfg.realtime:  # before any thread starts: they all inherit it
            why = realtime.enter()
            if why:
                log.warning("No real-time scheduling (%s): on a busy host a lost lease's release may come late; "
                            "give the watchdog CAP_SYS_NICE or CPUSchedulingPolicy=fifo", why)
        if self.cfg.fast_retake:
            _ = self.nl.ipr  # pyroute2 loaded now, not in the middle of the first fast retake
        if self.cfg.netlink:
            threading.Thread(target=self.monitor, args=(scheduler,), name="pubip-netlink", daemon=True).start()
        if self.cfg.backend == "listener" and self.cfg.listener is not None:
            threading.Thread(target=self.heartbeats, name="pubip-heartbeat", daemon=True).start()
        if self.cfg.peers is not None and self.lease is not None:
            from .peers import Peers

            peers = Peers(self.cfg.node, self.cfg.peers.nodes, self.cfg.peers.port, self.cfg.peers.bind,
                          self.cfg.peers.secret, self.lease, self.ears, self.membership_lock,
                          self.cfg.heartbeat_interval)
            threading.Thread(target=peers.run, args=(self.stopped,), name="pubip-peers", daemon=True).start()
            threading.Thread(target=self.keep_lease, name="pubip-lease", daemon=True).start()
        log.info("Watchdog started on node %s: interval %.2fs, netlink %s, fast retake %s, backend %s, lease %s, "
                 "scheduling %s", self.cfg.node, self.cfg.interval, "on" if self.cfg.netlink else "off",
                 "on" if self.cfg.fast_retake else "off", self.cfg.backend,
                 f"{self.cfg.lease:.2f}s with {len(self.cfg.peers.nodes)} peers" if self.lease and self.cfg.peers
                 else "off", realtime.policy())
        sdnotify.notify("READY=1")
        scheduler.start()

    def list_connections(self) -> None:
        """Every tickle_interval: the TCP connections to the public IPs held here, for the listener."""
        try:
            self.connections = actions.connections(self.cfg, _record.read(self.cfg.record_path))
            self.connections_dirty = True
        except Exception:
            log.exception("Listing TCP connections failed")

    def refresh_announcements(self) -> None:
        try:
            actions.announce(self.cfg, self.nl, _record.read(self.cfg.record_path))
        except Exception:
            log.exception("Announcement refresh failed")

    def _safe_monitor(self) -> None:
        if self.health["ok"] and time.monotonic() - self.monitored < self.cfg.monitor_interval - 0.05:
            return
        self.monitored = time.monotonic()
        try:
            self.monitor_hooks()
        except Exception:
            log.exception("Monitor failed")

    def _safe_check(self) -> None:
        try:
            self.check()
        except Exception:
            log.exception("Check failed")
        else:
            sdnotify.notify("WATCHDOG=1")  # a check that hangs stops these, and systemd restarts the watchdog


def _logging(cfg: Config, verbose: bool = False) -> None:
    root = logging.getLogger("pubip")
    root.addHandler(logs.handler("pubip-watchdog", cfg.log_file))
    root.setLevel(logging.DEBUG if verbose else getattr(logging, cfg.log_level.upper()))
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pubip-watchdog", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=DEFAULT_PATH)
    ap.add_argument("--once", action="store_true",
                    help="run one check and exit: 0 clean (or skipped), 1 finding (a run was requested), 2 error")
    ap.add_argument("--check-config", action="store_true", help="validate the configuration and exit")
    ap.add_argument("--leave", action="store_true",
                    help="graceful shutdown (the pubip-watchdog-leave unit's ExecStop): ask the listener to move this "
                    "node's public IPs away, and wait until the others hold them (exit 0) or --timeout (exit 1)")
    ap.add_argument("--timeout", type=float, default=15.0, help="how long --leave waits")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    try:
        cfg = load(args.config)
    except ConfigError as exc:
        print(f"pubip-watchdog: {exc}", file=sys.stderr)
        return EXIT_ERROR
    if args.check_config:
        print(f"{args.config}: valid")
        return EXIT_CLEAN
    _logging(cfg, args.verbose)
    if args.leave:
        from .leave import leave

        return EXIT_CLEAN if leave(cfg, args.timeout) else EXIT_FINDING
    if args.once:
        dog = Watchdog(cfg)
        try:
            result = dog.check()
        except (OSError, ValueError):
            return EXIT_ERROR
        if not result.findings:
            return EXIT_CLEAN
        deadline = time.monotonic() + cfg.retry_max
        while dog.requester.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        return EXIT_FINDING if dog.requester.sent else EXIT_ERROR
    Watchdog(cfg, Metrics(cfg.metrics_port, cfg.metrics_address)).run_forever()
    return EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
