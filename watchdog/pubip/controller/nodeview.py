"""The listener's view of the membership: whom it hears (it is a voter), which nodes are alive, dead, silent,
suspected, leaving or left, whether it hears a quorum - and the death verdict for each node, taken with the
reports, a knock on the node's host, and its watchdog's start-up grace.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..membership import LISTENER, Ears, Timing
from . import death, decisions
from . import probe as knock
from .store import Store

log = logging.getLogger("pubip.listener")


@dataclass(frozen=True)
class Death:
    node: str
    silent_for: float
    why: str


class NodeView:
    def __init__(self, nodes: list[str], timing: Timing, store: Store, probe_port: int = 22,
                 probe_timeout: float = 0.25, clock: Callable[[], float] = time.monotonic,
                 on_quorum_lost: Callable[[], None] = lambda: None) -> None:
        self._nodes = sorted(nodes)
        self._timing = timing
        self._store = store
        self._clock = clock
        self._probe_port, self._probe_timeout = probe_port, probe_timeout
        self._on_quorum_lost = on_quorum_lost
        self._lock = threading.Lock()
        self._ears = Ears(self._nodes, timing, clock)  # whom the listener hears and shuns
        known = store.nodes()
        self._alive: dict[str, bool] = {n: v["alive"] for n, v in known.items() if n in nodes}
        self._peers: dict[str, str] = {n: v["peer"] for n, v in known.items() if v.get("peer")}
        self._silent: set[str] = set()  # nodes without heartbeats whose host still answers the knock
        self._suspected: set[str] = set()  # nodes not heard for suspect_after (logged once)
        self._graced: set[str] = set()  # nodes whose death waits for their start-up grace (logged once)
        self._probed: dict[str, float] = {}  # node -> when its host last answered the knock
        self._leaving: dict[str, float] = {}  # node -> when it asked to leave (graceful shutdown), not yet gone
        self._left: set[str] = set()  # nodes that left gracefully: dead until their watchdog starts again
        self._quorum = True  # hears_quorum's last answer
        self._quorum_back: float | None = None  # when the listener last heard a quorum again

    # --- facts ------------------------------------------------------------------------------------------------
    def alive(self, node: str) -> bool:
        return self._alive.get(node, True)

    def known_alive(self, node: str) -> bool:
        """Alive, and heard of: a node never heard since the store began is not."""
        return self._alive.get(node, False)

    def live(self) -> set[str]:
        return {n for n in self._nodes if self._alive.get(n, True)}

    def dead(self) -> list[str]:
        return sorted(n for n, ok in self._alive.items() if not ok)

    def peer(self, node: str) -> str | None:
        return self._peers.get(node)

    def suspected(self) -> set[str]:
        return set(self._suspected)

    def shuns(self, node: str) -> bool:
        with self._lock:
            return self._ears.shuns(node)

    def liveness(self, node: str, now: float, dead_after: float) -> str:
        """dead (declared), unreachable (not heard for DEAD_AFTER, without a verdict: no quorum, or no leases),
        or alive."""
        if not self._alive.get(node, True):
            return "dead"
        with self._lock:
            heard = self._ears.heard.get(node, now)
        return "unreachable" if now - heard > dead_after else "alive"

    def quorum_back(self) -> float | None:
        return self._quorum_back

    # --- a heartbeat ---------------------------------------------------------------------------------------------
    def hear(self, node: str, peer: str | None) -> None:
        with self._lock:
            self._ears.hear(node)
        if peer:
            self._peers[node] = peer
        self._store.heartbeat(node, peer)
        if node in self._silent or node in self._suspected:
            self._silent.discard(node)
            self._suspected.discard(node)
            log.info("Node %s sends heartbeats again", node)

    def back(self, node: str) -> bool:
        """NODE sent a heartbeat: True when it was dead (it is alive from now on)."""
        if self._alive.get(node, True):
            self._alive.setdefault(node, True)
            return False
        self._left.discard(node)
        self._alive[node] = True
        self._store.set_alive(node, True)
        return True

    def declare_dead(self, node: str) -> None:
        self._alive[node] = False
        self._silent.discard(node)
        self._store.set_alive(node, False)

    def set_alive(self, node: str, alive: bool) -> None:
        """The operator's or a test's word; no log, no run."""
        self._alive[node] = alive

    # --- graceful leave ------------------------------------------------------------------------------------------
    def leave(self, node: str) -> bool:
        """NODE asks to leave: True when that is news."""
        if node in self._leaving or node in self._left:
            return False
        self._leaving[node] = self._clock()
        return True

    def leaving_since(self, node: str) -> float | None:
        return self._leaving.get(node)

    def is_leaving(self, node: str) -> bool:
        """Leaving, or left: told so in every heartbeat answer."""
        return node in self._leaving or node in self._left

    def has_left(self, node: str) -> bool:
        return node in self._left

    def gone(self, node: str) -> None:
        """A leaving node holds nothing now: it has left."""
        self._leaving.pop(node, None)
        self._left.add(node)

    # --- quorum ------------------------------------------------------------------------------------------------
    def hears_quorum(self, leases_on: bool) -> bool:
        """Whether the listener hears a quorum of voters, when the nodes run with leases (LEASES_ON). Without
        one, nodes on its side have no lease and the others cannot be reached: runs and orders wait (said once
        per wait); on losing it, on_quorum_lost."""
        if not leases_on:
            return True
        now = self._clock()
        with self._lock:
            heard = dict(self._ears.heard)
        ok, members = decisions.listener_quorum(heard, self._nodes, now, self._timing.suspect_after)
        if ok == self._quorum:
            return ok
        self._quorum = ok
        if ok:
            self._quorum_back = now
            log.info("The listener hears a quorum of voters again: takeover runs go on")
        else:
            log.warning("The listener hears only %s of %d voters (no quorum): takeover runs wait",
                        ", ".join(members), len(self._nodes) + 1)
            self._on_quorum_lost()
        return ok

    # --- deaths --------------------------------------------------------------------------------------------------
    def verdicts(self, reports: dict[str, death.Report], timing: Timing, grace_left: Callable[[str, float], float],
                 in_grace: Callable[[str], None]) -> tuple[list[Death], list[str]]:
        """The nodes dead by the death verdict whose host does not answer a knock and whose watchdog's start-up
        grace is over; and the nodes a quorum shuns whose leases are still running out."""
        now = self._clock()
        with self._lock:
            heard = dict(self._ears.heard)
        died: list[Death] = []
        shunned = []
        for node in self._nodes:
            silent = now - heard[node]
            if silent < timing.suspect_after:
                self._suspected.discard(node)
            if not self._alive.get(node, True):
                continue
            verdict = death.verdict(node, now, self._nodes, heard[node], reports, timing)
            if not verdict.dead:
                if silent >= timing.suspect_after and node not in self._suspected:
                    self._suspected.add(node)
                    log.warning("Node %s sent no heartbeat for %.1fs: suspected (%s)", node, silent, verdict.why)
                if verdict.quorum:
                    shunned.append(node)
                continue
            if now - self._probed.get(node, -timing.dead_after) < timing.dead_after:
                continue  # its host answered the knock lately: wait before knocking again
            peer = self._peers.get(node)
            if peer and knock.probe(peer, self._probe_port, self._probe_timeout) == knock.ALIVE:
                self._probed[node] = self._clock()
                if node not in self._silent:
                    self._silent.add(node)
                    log.warning("Node %s sent no heartbeat for %.1fs but its host %s answers: not dead "
                                "(is its watchdog down?)", node, silent, peer)
                continue
            if node in self._silent:
                # Its host answered while its watchdog was silent: a watchdog may have started there since,
                # keeping what the host holds for its start-up grace before it has a lease.
                self._silent.discard(node)
                in_grace(node)
            grace = grace_left(node, self._clock())
            if grace > 0:
                if node not in self._graced:
                    self._graced.add(node)
                    log.warning("Node %s is silent and its host does not answer, but its watchdog may still "
                                "hold its IPs in its start-up grace: not dead for %.1fs more", node, grace)
                continue
            self._graced.discard(node)
            died.append(Death(node, silent, f"{verdict.why}; "
                              + ("its host does not answer" if peer else "no address to probe")))
        return died, shunned


__all__ = ["LISTENER", "Death", "NodeView"]
