"""When is a silent node dead? The listener's decision (pure; times on the listener's monotonic clock).

A node X is dead only when all of these hold (docs/safety.md):
- the listener has not heard X for suspect_after (it shuns X: its heartbeat answers no longer renew X's lease);
- a quorum of voters shuns X: the listener and every node whose fresh report says it shuns X, with the shun
  still holding now (the report echoes the listener's tick, so it was made after that tick);
- dead_after has passed since the last moment any of them heard X: X's last lease, renewed at the latest
  by heartbeats one of them acknowledged, has run out and X has released its public IPs.
Without such a quorum the listener freezes: nobody is dead, so nothing of X moves.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..membership import LISTENER, Timing, quorum


@dataclass
class Report:
    """What a node's last heartbeat said of its peers."""

    received: float  # when the listener got it
    tick: float | None  # the listener's tick the node echoed: the report was made after it
    hears: dict[str, float] = field(default_factory=dict)  # peer -> seconds since the node last heard it
    shuns: dict[str, float] = field(default_factory=dict)  # peer -> seconds the node's shun still holds


@dataclass
class Verdict:
    dead: bool
    why: str
    against: list[str] = field(default_factory=list)  # the voters that shun the node
    last_heard: float | None = None  # the last moment one of them heard it
    quorum: bool = False  # a quorum shuns it: it is dead once its lease has certainly run out


def verdict(node: str, now: float, nodes: list[str], listener_heard: float, reports: dict[str, Report],
            timing: Timing) -> Verdict:
    """LISTENER_HEARD: when the listener last heard NODE (its start, if never)."""
    if now - listener_heard < timing.suspect_after:
        return Verdict(False, "heard by the listener")
    voters = {*nodes, LISTENER}
    against = [LISTENER]
    last = listener_heard
    stale = []
    for voter in sorted(nodes):
        rep = reports.get(voter)
        if voter == node or rep is None:
            continue
        if now - rep.received > timing.suspect_after or rep.tick is None:
            stale.append(voter)  # not heard lately: its vote cannot count
            continue
        hold = rep.shuns.get(node)
        if hold is None or rep.tick + hold / (1 + timing.drift) < now:
            continue  # it hears the node, or its shun may have ended
        against.append(voter)
        heard_ago = rep.hears.get(node)
        last = max(last, rep.received - (heard_ago / (1 + timing.drift) if heard_ago is not None else 0.0))
    if not quorum(against, voters):
        why = f"no quorum shuns it ({', '.join(against)} of {len(voters)} voters"
        return Verdict(False, why + (f"; not heard lately: {', '.join(stale)})" if stale else ")"), against, last)
    if now - last < timing.dead_after:
        return Verdict(False, f"its lease may still hold ({now - last:.2f}s < {timing.dead_after:.2f}s)", against,
                       last, True)
    return Verdict(True, f"{len(against)} of {len(voters)} voters ({', '.join(against)}) have not heard it for "
                   f"{now - last:.2f}s", against, last, True)
