"""The fast takeover orders this node carries out, their results for the next heartbeat, and the public IPs it
holds because of them until a run records them (kept across a watchdog restart: ordered.py).

Rules:
- an order is carried out only when the gate allows it (gate.py), and within its deadline (actions.take_ordered);
- an IP held on an order is no finding and is not released as foreign;
- it is forgotten once a run records anew, once it is gone from the kernel, and with the lease.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .. import protocol
from .._collection import module_utils
from . import actions, ordered
from .config import Config

_netlink = module_utils("netlink")
log = logging.getLogger("pubip.watchdog")


class OrderTaker:
    def __init__(self, cfg: Config, kernel: Callable[[], set[str] | None]) -> None:
        self._cfg, self._kernel = cfg, kernel
        self._lock = threading.Lock()  # orders arrive with any heartbeat, from two threads
        self._results: list[protocol.OrderResult] = []  # sent back with the next heartbeat
        self._nl: Any = None
        self._path = ordered.path_beside(cfg.lease_path)
        # taken on an order before a restart and still held: kept, not released as foreign
        self._ordered: dict[str, Any] = ordered.load(self._path, kernel() or set())  # IP -> its order
        if self._ordered:
            log.info("Taken on fast takeover orders before this watchdog started, not yet recorded: %s",
                     ", ".join(sorted(self._ordered)))

    def held(self) -> set[str]:
        return set(self._ordered)

    def netlink(self) -> Any:
        """This part's netlink handle (orders, step-downs, announcements on the listener's word)."""
        self._nl = self._nl or _netlink.Netlink()
        return self._nl

    # --- orders and their results -------------------------------------------------------------------------------
    def carry_out(self, order: protocol.Order, received: float, refusal: str | None) -> None:
        """ORDER, received at RECEIVED; REFUSAL: why the gate says no."""
        if refusal:
            log.warning("Fast takeover order %s refused: %s", order.id, refusal)
            with self._lock:
                self._results.append(protocol.OrderResult(order.id, refused=refusal))
            return
        with self._lock:
            nl = self.netlink()
            ips = [str(e.get("ip")) for e in order.ips]
            for ip in ips:  # before the take: its netlink events wake a check that must know
                self._ordered[ip] = {"generation": order.generation, "run_id": order.run_id}
            self._save()
            result = actions.take_ordered(self._cfg, nl, order.wire(), received)
            for ip in set(ips) - set(result["taken"]):
                self._ordered.pop(ip, None)
            self._save()
            self._results.append(protocol.OrderResult(order.id, result["taken"], result["errors"], result["refused"]))

    def results(self) -> list[protocol.OrderResult]:
        """The results for the next heartbeat (handed over: put_back if it fails)."""
        with self._lock:
            done, self._results = self._results, []
            return done

    def put_back(self, done: list[protocol.OrderResult]) -> None:
        with self._lock:
            self._results = done + self._results

    def reporting(self) -> bool:
        """Results wait to be sent."""
        return bool(self._results)

    # --- forgetting -----------------------------------------------------------------------------------------------
    def reconcile(self, record: dict[str, Any], taking: set[str]) -> None:
        """At a check: forget what a run has recorded since (the record speaks again), and what is gone from the
        kernel (a network restart, a link loss: the listener orders it again, or a run places it) - but not
        what a fast path (TAKING) is adding right now."""
        if not self._ordered:
            return
        gen = record.get("generation")
        with self._lock:  # the kernel read under the lock an order's take holds
            recorded = [ip for ip, order in self._ordered.items()
                        if order.get("generation") != gen and not actions.ordered_by_marking_run(record, order)]
            for ip in recorded:
                self._ordered.pop(ip, None)
            kernel = self._kernel() if self._ordered else None
            lost = sorted(ip for ip in self._ordered if kernel is not None and ip not in kernel and ip not in taking)
            for ip in lost:
                self._ordered.pop(ip, None)
            if recorded or lost:
                self._save()
        if lost:
            log.warning("No longer holds %s, taken on fast takeover orders: gone from the kernel", ", ".join(lost))

    def forget_released(self, released: list[str]) -> None:
        """Lost the cluster: the IPs taken on orders are forgotten with their release (the heartbeats would go on
        reporting them held, and a run that could not reach this node would pin them here, unheld) - and with any
        release before."""
        if not self._ordered:
            return
        kernel = self._kernel()
        with self._lock:
            forgotten = sorted(ip for ip in self._ordered
                               if ip in released or (kernel is not None and ip not in kernel))
            for ip in forgotten:
                self._ordered.pop(ip, None)
            if forgotten:
                self._save()
        if forgotten:
            log.warning("Lost the cluster: no longer holds %s, taken on fast takeover orders", ", ".join(forgotten))

    def _save(self) -> None:
        """Under the lock."""
        try:
            ordered.save(self._path, self._ordered)
        except OSError as exc:  # a restart would release them as foreign; nothing else depends on the file
            log.warning("Cannot keep the IPs taken on orders in %s: %s", self._path, exc)
