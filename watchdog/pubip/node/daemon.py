"""The watchdog: CTDB's recovery-daemon check on each host - the composition root.

It builds the parts, each owning its state - the lease keeper (leasekeeper.py), the health hooks (health.py),
the orders taken (ordertaker.py), the heartbeat exchange (exchange.py), the fast retake (retake.py), metrics
(metrics.py) - and runs the check: the kernel against the record (check.py, pure), every interval and on netlink
events. On a finding it asks the controller for a takeover run; with fast_retake it first re-adds an IP the
record gives this node. main.py schedules it.

Lock order: the interface lock (a host's changes, shared with the takeover run's modules) may be held while
taking a part's own lock; a part's lock is a leaf, held only inside its methods.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from .._collection import module_utils
from . import actions
from . import check as ipcheck
from . import kernel as kernel_reader
from .config import Config
from .exchange import Exchange
from .health import Health
from .leasekeeper import LeaseKeeper
from .metrics import Metrics
from .ordertaker import OrderTaker
from .requester import Requester
from .retake import FastRetake

_netlink = module_utils("netlink")
_record = module_utils("record")
_rtdump = module_utils("rtdump")
log = logging.getLogger("pubip.watchdog")


class Watchdog:
    def __init__(self, cfg: Config, metrics: Metrics | None = None,
                 kernel: Callable[[], set[str] | None] | None = None):
        """KERNEL: what reads the public IPs the kernel holds (kernel.held_public)."""
        self.cfg = cfg
        self._kernel = kernel or (lambda: kernel_reader.held_public(cfg))
        self.metrics = metrics or Metrics(0, "")
        self.requester = Requester(cfg, on_result=self._request_result)
        self.nl = _netlink.Netlink()
        self.stopped = threading.Event()
        self.scheduler: Any = None
        self.keeper = LeaseKeeper(cfg)
        self.health = Health(cfg)
        self.orders = OrderTaker(cfg, self.held_public)
        self.exchange = Exchange(cfg, self.keeper, self.orders, self.health, lambda: self.retake.taking())
        self.retake = FastRetake(cfg, self.nl, self.metrics.fast_retakes.inc, self.exchange.blocker,
                                 self.exchange.exchange, self.recheck_soon, self.stopped)
        self._trigger = "interval"  # what woke the next check
        self._links: dict[str, bool] | None = None  # the links at the last check
        self._last_skip: str | None = None
        self._last_findings: set[str] = set()
        self._last_request: tuple[Any, ...] | None = None
        self._last_request_at = 0.0
        self._expired_run: Any = None  # the run_started of a dead run's mark, once logged

    def held_public(self) -> set[str] | None:
        return self._kernel()

    def _request_result(self, ok: bool) -> None:
        self.metrics.requests.labels("sent" if ok else "failed").inc()

    # --- the check ------------------------------------------------------------
    def check(self) -> ipcheck.Result:
        started = time.monotonic()
        trigger, self._trigger = self._trigger, "interval"
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
            if result.skipped != self._last_skip:
                log.error("Check skipped: %s", result.skipped)
            self._last_skip = result.skipped
            self.metrics.skips.labels("node mismatch").inc()
            return result
        expired = _record.mark_expired(first)
        if expired and self._expired_run != (first or {}).get("run_started"):
            log.warning("Takeover run %s marked this record in progress and is past its deadline: it died mid-way; "
                        "checking without it (no fast retake)", (first or {}).get("run_id") or "?")
        self._expired_run = (first or {}).get("run_started") if expired else None
        result = ipcheck.check(first, again, ifaces, self.cfg.node, self._links,
                               in_progress=_record.in_progress(first))
        if self.cfg.release_on_link_loss and first and actions.stranded(first, ifaces):
            actions.release_stranded(self.cfg, self.nl, first)
        if first is not None and self.orders.held():
            # Taken on the listener's order: the verifying run is already coming; no need to ask for one.
            self.orders.reconcile(first, self.retake.taking())
            by_order = self.orders.held()
            result.findings = [f for f in result.findings if not (f.rule == ipcheck.FOREIGN and f.ip in by_order)]
        foreign = [f.ip for f in result.findings if f.rule == ipcheck.FOREIGN]
        if self.cfg.release_foreign and foreign and first is not None and \
                (not result.skipped or _record.in_progress(first)):
            actions.release_foreign(self.cfg, self.nl, first, foreign,
                                    spare=lambda: self.orders.held() | self.retake.taking())
        if result.skipped:
            self.metrics.skips.labels(result.skipped).inc()
            if result.skipped != self._last_skip:
                log.info("Check skipped: %s", result.skipped)
            self._last_skip = result.skipped
        else:
            self._last_skip = None
            self._links = result.links
        seen = set()
        for f in result.findings:
            self.metrics.findings.labels(f.rule).inc()
            seen.add(f.message)
            # A finding is logged when it appears; while it lasts, only at debug level.
            log.log(logging.DEBUG if f.message in self._last_findings else logging.WARNING, "%s", f.message)
        self._last_findings = seen
        if not result.findings and not result.skipped:
            self._last_request = None  # clean again: the next finding is asked for at once
            self.requester.withdraw()
        retaken: list[str] = []
        if self.cfg.fast_retake and result.fast_retake and first is not None and \
                self.retake.allowed(first, result.fast_retake):
            retaken = self.retake.retake(first, result.fast_retake)
        if result.findings and all(f.rule == ipcheck.MISSING and f.ip in retaken for f in result.findings):
            # The kernel matches the record again: nothing for a takeover run to do.
            log.info("Fast retake restored %s: the record holds, no takeover run needed", ", ".join(retaken))
            self._last_findings = set()
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
        if key == self._last_request and time.monotonic() - self._last_request_at < self.cfg.retry_max:
            return
        self._last_request, self._last_request_at = key, time.monotonic()
        generation = key[0] if isinstance(key[0], int) else None
        self.requester.request(protocol.TakeoverRequest(
            self.cfg.node, "; ".join(f.message for f in result.findings)[:1000], trigger, generation,
            [{"rule": f.rule, "ip": f.ip} for f in result.findings]).wire())

    def safe_check(self) -> bool:
        try:
            self.check()
        except Exception:
            log.exception("Check failed")
            return False
        return True

    # --- the lease ---------------------------------------------------------------------------------------------
    def release_all(self, nl: Any) -> None:
        """Lost the cluster: release every public IP held here, and forget those taken on orders."""
        released = actions.release_all(self.cfg, nl, _record.read(self.cfg.record_path))
        self.orders.forget_released(released)

    def regained(self) -> None:
        """The lease is back: its own IPs by a fast retake now, if nobody moved them meanwhile; and a run, to give
        this node its share (CTDB rebalances a node that comes back)."""
        self.recheck_soon(0.0)
        self.requester.request(protocol.TakeoverRequest(
            self.cfg.node, "Lease regained: this node can host public IPs again", "lease").wire())

    # --- waking the check -------------------------------------------------------------------------------------------
    def recheck_soon(self, delay: float = 0.1) -> None:
        """Run the check again in DELAY seconds."""
        self._move_check(delay, "recheck")

    def wake(self) -> None:
        """Run the check now (debounced): the netlink thread's only action."""
        self._trigger = "netlink"
        self._move_check(self.cfg.debounce, "wake")

    def _move_check(self, delay: float, why: str) -> None:
        if self.scheduler is None:
            return
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=delay)
        try:
            self.scheduler.modify_job("check", next_run_time=when)
        except Exception as exc:  # the scheduler is shutting down
            log.debug("%s ignored: %s", why, exc)

    def netlink_events(self) -> None:
        """A plain rtnetlink subscription (links, IPv4 and IPv6 addresses), its own thread: wakes the check."""
        sock = None
        while not self.stopped.is_set():
            try:
                sock = sock or _rtdump.subscribe()
                if _rtdump.wait_event(sock):
                    self.wake()
            except Exception:  # netlink only hurries the checks: without it they still run every interval
                log.exception("Netlink events failed; resubscribing in 1s")
                if sock is not None:
                    with contextlib.suppress(Exception):
                        sock.close()
                sock = None
                self.stopped.wait(1.0)

    # --- periodic jobs ------------------------------------------------------------------------------------------
    def list_connections(self) -> None:
        """Every tickle_interval: the TCP connections to the public IPs held here, for the listener."""
        try:
            self.exchange.set_connections(actions.connections(self.cfg, _record.read(self.cfg.record_path)))
        except Exception:
            log.exception("Listing TCP connections failed")

    def refresh_announcements(self) -> None:
        try:
            actions.announce(self.cfg, self.nl, _record.read(self.cfg.record_path))
        except Exception:
            log.exception("Announcement refresh failed")
