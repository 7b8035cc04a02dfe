"""Fast takeover orders: the listener's bookkeeping of "take these IPs now" sent to live watchdogs.

When a node dies, the listener plans who takes its public IPs (fasttakeover.orders)
and hands each survivor its share in the answer to its next heartbeat. The
verifying takeover run must not gather while an order could still be carried
out - it might plan an IP elsewhere - so the run waits until every order is
acknowledged or can no longer be executed:

- an order not delivered within `deliver_within` is withdrawn, never delivered later;
- a delivered order is executed by the watchdog within `execute_within` of receiving
  it, or refused (the watchdog enforces that on its own clock);
- so `outstanding()` is false at most `deliver_within + execute_within + slack` after issue.

Several batches per generation, one at a time: a later death before the verifying
run finished waits until no order of the earlier batch can still be carried out,
then plans from where those orders put the IPs (overlaid) and orders only IPs no
earlier batch of the generation ordered - so two batches never disagree about an
IP - or whose orders were all refused (a refusal comes before any take) or never
delivered (withdrawn: nobody saw them), to other nodes than the refusers. The
orders are kept across a listener restart (`saver`, `resume`: the listener keeps
them in its state directory, for the same boot, since the times are
CLOCK_MONOTONIC's); without them the earlier batches are unknown: that generation
gets no more (sealed), the verifying run decides.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import protocol


@dataclass
class Order:
    id: int
    node: str
    generation: int
    ips: list[dict[str, Any]]
    created: float
    delivered: float | None = None
    result: dict[str, Any] | None = None
    withdrawn: bool = False
    acked: float | None = None  # when its result came
    run_id: str | None = None  # issued while that takeover run records: its takes are done

    def message(self) -> protocol.Order:
        return protocol.Order(self.id, self.generation, self.ips, self.run_id)


@dataclass
class Orders:
    deliver_within: float = 1.0
    execute_within: float = 1.0
    slack: float = 0.2
    clock: Callable[[], float] = time.monotonic
    issued_for: int | None = None  # the generation of the last batch
    sealed: int | None = None  # a generation whose batches were issued before a restart: no more
    saver: Callable[[dict[str, Any]], None] | None = None  # given _state() after every change
    _next: int = 1
    _orders: list[Order] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, generation: int, by_node: dict[str, list[dict[str, Any]]], run_id: str | None = None
              ) -> list[Order]:
        """A new batch; empty while an earlier batch of this generation is outstanding, for a sealed
        generation, and for IPs an earlier batch of it ordered (they are dropped). RUN_ID: the takeover run
        of GENERATION that is still recording (the watchdogs accept the orders under its mark)."""
        with self._lock:
            if generation == self.sealed or (self.issued_for == generation and any(map(self._open, self._orders))):
                return []
            # again only from a node an earlier order put it on (that node died too, or dropped it), or when every
            # earlier order of it was refused (the refuser took nothing; the caller plans without it: refusers)
            ordered, overlay = self._ordered(generation), self._overlay(generation)
            by_node = {node: kept for node, entries in by_node.items()
                       if (kept := [e for e in entries if e.get("ip") not in ordered
                                    or (e.get("from") is not None and e.get("from") == overlay.get(str(e.get("ip"))))])}
            if not by_node:
                return []
            self.issued_for = generation
            batch = []
            for node in sorted(by_node):
                batch.append(Order(self._next, node, generation, by_node[node], self.clock(), run_id=run_id))
                self._next += 1
            # this generation's orders stay known: the next batch plans from where they put the IPs
            self._orders = [o for o in self._orders if self._open(o) or o.generation == generation] + batch
            self._changed()  # kept before any of them can be delivered
            return batch

    def _state(self) -> dict[str, Any]:
        """Everything a listener after a restart needs to go on with these orders (resume)."""
        return {"next": self._next, "issued_for": self.issued_for, "orders": [asdict(o) for o in self._orders]}

    def resume(self, state: dict[str, Any]) -> None:
        """Go on with the orders a listener before a restart issued (its _state(), same boot): later batches of
        their generation plan from where they put the IPs, and a run waits while one may still be carried out."""
        orders = [Order(**o) for o in state["orders"]]
        with self._lock:
            self._orders, self._next, self.sealed = orders, int(state["next"]), None
            self.issued_for = None if state["issued_for"] is None else int(state["issued_for"])

    def seal(self, generation: int | None) -> None:
        """The batches of GENERATION before a restart are unknown: no more orders of it."""
        with self._lock:
            self.issued_for = self.sealed = generation

    def last_generation(self) -> int | None:
        """The generation of the last batch."""
        return self.issued_for

    def sealed_generation(self) -> int | None:
        return self.sealed

    def _changed(self) -> None:
        if self.saver is not None:
            self.saver(self._state())

    def blocked(self, generation: int) -> bool:
        """True while a batch of GENERATION may still be carried out: the next one must wait for it."""
        with self._lock:
            return self.issued_for == generation and any(map(self._open, self._orders))

    def overlay(self, generation: int) -> dict[str, str]:
        """IP -> the node an order of GENERATION may have put it on: delivered and not refused (an order
        whose answer never came may have been carried out); the latest order of an IP wins."""
        with self._lock:
            return self._overlay(generation)

    def _overlay(self, generation: int) -> dict[str, str]:
        return {e["ip"]: o.node for o in self._orders if o.generation == generation and o.delivered is not None
                and not (o.result or {}).get("refused") for e in o.ips}

    def carried_out(self, generation: int) -> dict[str, tuple[str, float]]:
        """IP -> (node, when its result came) for the IPs whose latest order of GENERATION (as overlay) was
        carried out: acknowledged, not refused."""
        with self._lock:
            out: dict[str, tuple[str, float]] = {}
            for o in self._orders:
                if o.generation == generation and o.delivered is not None and not (o.result or {}).get("refused"):
                    for e in o.ips:
                        out.pop(e["ip"], None)
                        if o.acked is not None:
                            out[e["ip"]] = (o.node, o.acked)
            return out

    def _ordered(self, generation: int) -> set[str]:
        """The IPs an order of GENERATION may have placed: not refused, and delivered or still deliverable (an
        order never delivered within deliver_within is never delivered: nobody saw it, it placed nothing)."""
        now = self.clock()
        return {str(e.get("ip")) for o in self._orders if o.generation == generation
                and not (o.result or {}).get("refused")
                and not self._undeliverable(o, now) for e in o.ips}

    def _undeliverable(self, o: Order, now: float) -> bool:
        """Never delivered, and never will be (withdrawn, or past deliver_within)."""
        return o.delivered is None and (o.withdrawn or now - o.created > self.deliver_within)

    def refusers(self, generation: int) -> set[str]:
        """The nodes that refused an order of GENERATION (no lease, a run's mark, an older record): no more
        orders of it go to them."""
        with self._lock:
            return {o.node for o in self._orders if o.generation == generation and (o.result or {}).get("refused")}

    def deliver(self, node: str) -> list[Order]:
        """The orders to put in NODE's heartbeat answer (each delivered once)."""
        now = self.clock()
        out, withdrawn = [], False
        with self._lock:
            for o in self._orders:
                if o.node != node or o.delivered is not None or o.withdrawn:
                    continue
                if self._undeliverable(o, now):
                    o.withdrawn = withdrawn = True
                    continue
                o.delivered = now
                out.append(o)
            if out or withdrawn:
                self._changed()  # delivered: from now on it may be carried out, also after a restart
        return out

    def acknowledge(self, node: str, results: list[dict[str, Any]]) -> list[Order]:
        done = []
        with self._lock:
            for r in results:
                for o in self._orders:
                    if o.node == node and o.id == r.get("id") and o.result is None and o.delivered is not None:
                        o.result, o.acked = r, self.clock()
                        done.append(o)
            if done:
                self._changed()
        return done

    def _open(self, o: Order) -> bool:
        if o.result is not None or o.withdrawn:
            return False
        now = self.clock()
        if o.delivered is None:
            return now - o.created <= self.deliver_within
        return now - o.delivered <= self.execute_within + self.slack

    def outstanding(self) -> list[Order]:
        """Orders that may still be carried out: a takeover run must wait for them."""
        with self._lock:
            return [o for o in self._orders if self._open(o)]

    def recent(self, limit: int = 10) -> list[dict[str, Any]]:
        with self._lock:
            return [{"id": o.id, "node": o.node, "generation": o.generation, "ips": [i["ip"] for i in o.ips],
                     "delivered": o.delivered is not None, "withdrawn": o.withdrawn, "result": o.result,
                     "run_id": o.run_id}
                    for o in self._orders[-limit:]]
