"""Membership rules shared by watchdogs and the listener (pure): the voters, what a quorum is, and the
timing that makes declaring a node dead safe. The argument is in docs/safety.md.

Voters are the nodes and the listener (V = N + 1). A set of voters is a quorum when it holds more than
half of them, or exactly half *with the listener* (the tie-break for an even V: the listener's side wins).
Any two quorums share a voter, which is all the safety argument needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

LISTENER = "_listener"  # the listener's name among the voters


def quorum(members: Iterable[str], voters: Iterable[str]) -> bool:
    everyone = set(voters)
    n = len(set(members) & everyone)
    return 2 * n > len(everyone) or (2 * n == len(everyone) and LISTENER in members)


@dataclass(frozen=True)
class Timing:
    """Seconds, each side measuring on its own monotonic clock."""

    lease: float = 1.0  # L: a node holds public IPs only while a quorum acknowledged it within L
    release_bound: float = 0.3  # R: worst time to release every public IP once the lease ran out
    margin: float = 0.2  # m: scheduling delay
    drift: float = 1e-3  # rho: bound on the relative rate of two clocks
    heartbeat: float = 0.2  # how often a node heartbeats its peers and the listener
    suspect_after: float = 0.6  # silence after which a voter stops acknowledging a node (shuns it)
    shun_hold: float = 1.5  # a shun lasts this long after the last moment the silence was seen

    @property
    def dead_after(self) -> float:
        """D > (1 + rho) L + R + m: after D without a quorum hearing it, a node has released everything."""
        return (1 + self.drift) * self.lease + self.release_bound + self.margin

    @property
    def start_grace(self) -> float:
        """How long a watchdog keeps what it holds after it starts, before it decides it lost the cluster: a
        watchdog that was down longer than suspect_after is shunned for shun_hold after it speaks again, then
        needs a lease and two heartbeats. The listener declares no node dead within it."""
        return self.shun_hold + self.lease + 2 * self.heartbeat


def majority(voters: int) -> int:
    return voters // 2 + 1


@dataclass
class Ears:
    """When this voter last heard each node, and whom it shuns: a node silent for suspect_after is not
    acknowledged until shun_hold after the silence was last seen, even if it speaks again. That promise is
    what lets the listener count a voter's report when it declares a node dead (controller/death.py)."""

    peers: list[str]
    timing: Timing = field(default_factory=Timing)
    clock: Callable[[], float] = time.monotonic
    heard: dict[str, float] = field(default_factory=dict)  # peer -> when last heard (start: as if heard then)
    shun_until: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        now = self.clock()
        for peer in self.peers:
            self.heard.setdefault(peer, now)

    def hear(self, peer: str) -> None:
        self._observe(peer)
        self.heard[peer] = self.clock()

    def _observe(self, peer: str) -> None:
        now = self.clock()
        if now - self.heard.get(peer, now) >= self.timing.suspect_after:
            self.shun_until[peer] = now + self.timing.shun_hold

    def shuns(self, peer: str) -> bool:
        self._observe(peer)
        return self.clock() < self.shun_until.get(peer, -math.inf)

    def report(self) -> dict[str, dict[str, float]]:
        """For the listener: seconds since each peer was heard, and how long each shun still holds."""
        now = self.clock()
        for peer in self.peers:
            self._observe(peer)
        # Rounded down: the listener then sees each peer heard a little later, and each shun a little
        # shorter, than they were - both on the safe side.
        return {"hears": {p: _floor(now - t) for p, t in self.heard.items()},
                "shuns": {p: _floor(u - now) for p, u in self.shun_until.items() if u > now}}


def _floor(seconds: float) -> float:
    return math.floor(seconds * 1000) / 1000
