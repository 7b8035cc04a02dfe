"""A node's lease (pure; the clock is injected).

The node may hold public IPs while a quorum of voters (itself included) acknowledged heartbeats it *sent*
within the lease time. Measured from the send time on this node's monotonic clock, so a slow answer never
stretches it. A cluster with a single node always has its lease: nobody could take over.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..membership import LISTENER, quorum


@dataclass
class Lease:
    me: str
    voters: set[str]  # node names and LISTENER
    duration: float
    clock: Callable[[], float] = time.monotonic
    acks: dict[str, float] = field(default_factory=dict)  # voter -> send time of its newest acknowledged heartbeat
    carried: float = -math.inf  # a lease the previous watchdog process held (its lease file, same boot)

    def acknowledged(self, voter: str, sent_at: float) -> None:
        if voter in self.voters and voter != self.me:
            self.acks[voter] = max(sent_at, self.acks.get(voter, -math.inf))

    def expiry(self) -> float:
        """The moment the lease runs out (-inf: never had one; inf: a one-node cluster)."""
        if not any(v != self.me and v != LISTENER for v in self.voters):
            return math.inf
        members = {self.me}
        for voter, sent in sorted(self.acks.items(), key=lambda kv: kv[1], reverse=True):
            members.add(voter)
            if quorum(members, self.voters):
                return max(sent + self.duration, self.carried)
        return self.carried

    def valid(self) -> bool:
        return self.expiry() > self.clock()

    def remaining(self) -> float:
        return max(0.0, min(self.expiry() - self.clock(), 3600.0))


def file_due(written: float | None, expiry: float, step: float) -> bool:
    """Whether the lease file (which public_ip's takes and a restarted watchdog read) must be written again.

    Every ack moves the expiry - five voters, five heartbeats a second each - so the file follows it in STEPs,
    and at once when it shrinks: it may say less than the lease, never more, and what reads it only ever
    waits longer for that."""
    return written is None or expiry < written or expiry - written >= step
