"""Node states at run time, CTDB's flags: disabled and stopped (operations), banned until a moment (an operation,
or ban credits), unhealthy (a failing `monitor` hook); and the ban credits of nodes that keep runs from completing.

The functions are pure; NodeStates owns the facts (store overrides, heartbeats) and asks them what they mean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import protocol
from .runs import Requests
from .store import Store

log = logging.getLogger("pubip.listener")

RUNTIME_STATES = ("banned", "stopped", "disabled", "unhealthy")  # a node in several shows the first


def effective(states: dict[str, str], bans: dict[str, float], unhealthy: set[str], now: float) -> dict[str, str]:
    """node -> the state a takeover run gives it (pubip_state_overrides); nodes not named are enabled.
    STATES: operations' states (disabled, stopped); BANS: node -> when its ban ends (epoch seconds)."""
    out = {}
    for node in sorted(set(states) | set(bans) | unhealthy):
        if bans.get(node, 0.0) > now:
            out[node] = "banned"
        elif states.get(node) in ("stopped", "disabled"):
            out[node] = states[node]
        elif node in unhealthy:
            out[node] = "unhealthy"
    return out


def expired(bans: dict[str, float], now: float) -> list[str]:
    return sorted(node for node, until in bans.items() if until <= now)


@dataclass
class Credits:
    """CTDB's ban credits: a node that keeps LIMIT takeover runs in a row from completing is banned, so one
    broken node cannot stall the cluster; a run that completes clears them all."""

    limit: int = 3
    held: dict[str, int] = field(default_factory=dict)

    def failed(self, nodes: list[str]) -> list[str]:
        """Credits for NODES (those a failed run named); returns those that reached the limit (then reset)."""
        banned = []
        for node in nodes:
            self.held[node] = self.held.get(node, 0) + 1
            if self.held[node] >= self.limit:
                banned.append(node)
                self.held.pop(node)
        return banned

    def succeeded(self) -> None:
        self.held.clear()


class NodeStates:
    """The facts behind the node states, owned: operations' states and bans (in the store), the monitor hooks'
    verdicts (heartbeats), ban credits, the nodes a run must give their share back (rebalance), and the nodes
    told to step down (banned, or UNHEALTHY while another node is healthy: they drop their IPs themselves)."""

    def __init__(self, store: Store, requests: Requests, nodes: list[str], ban_credits: int = 3,
                 ban_period: float = 300.0, clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._store, self._requests, self._nodes = store, requests, nodes
        self._credits = Credits(ban_credits)
        self._ban_period = ban_period
        self._clock, self._monotonic = clock, monotonic  # wall clock: bans end at a moment
        self._health: dict[str, dict[str, Any]] = {}  # node -> its monitor hooks' verdict (heartbeats)
        self._rebalance: set[str] = set()  # nodes that came back: force_rebalance_nodes in the next run
        self._stepping: dict[str, tuple[str, float, bool]] = {}  # node -> (why, since, handed over)

    def bans(self) -> dict[str, float]:
        out = {}
        for node, until in self._store.overrides("ban").items():
            try:
                out[node] = float(until)
            except ValueError:
                continue
        return out

    def unhealthy(self, live: set[str]) -> set[str]:
        return {n for n, h in self._health.items() if h.get("ok") is False and n in live}

    def effective(self, live: set[str]) -> dict[str, str]:
        """node -> the runtime state a takeover run gives it (enabled nodes left out)."""
        return effective(self._store.overrides("state"), self.bans(), self.unhealthy(live), self._clock())

    def health_of(self, node: str) -> dict[str, Any] | None:
        return self._health.get(node)

    def credits_of(self, node: str) -> int:
        return self._credits.held.get(node, 0)

    def rebalance(self) -> list[str]:
        return sorted(self._rebalance)

    def give_back(self, node: str) -> None:
        """NODE hosts again: the next run gives it its share."""
        self._rebalance.add(node)

    def given_back(self, nodes: list[str]) -> None:
        self._rebalance -= set(nodes)

    def ban(self, node: str, seconds: float, why: str) -> None:
        self._store.set_override("ban", node, repr(self._clock() + seconds))
        log.warning("Banning node %s for %gs: %s", node, seconds, why)
        self._requests.ask(f"node {node} banned", news=True)  # the run that failed on it can succeed without it

    def charge(self, nodes: list[str], live: set[str], run_id: int) -> None:
        """Ban credits for the live, unbanned nodes a failed run named; a ban when they pile up."""
        states = self.effective(live)
        culprits = [n for n in nodes if n in self._nodes and n in live and states.get(n) != "banned"]
        for node in self._credits.failed(culprits):
            self.ban(node, self._ban_period, f"it kept {self._credits.limit} takeover runs in a row from "
                                             f"completing (the last: run {run_id})")

    def run_completed(self) -> None:
        self._credits.succeeded()

    def end_bans(self) -> list[str]:
        """Bans end by themselves: the node is back in the next run, with its share (rebalance)."""
        ended = expired(self.bans(), self._clock())
        if ended:
            self._store.clear_overrides("ban", ended)
            self._rebalance.update(ended)
            log.warning("Ban of %s ended: takeover run to give %s back", ", ".join(ended),
                        "it its share" if len(ended) == 1 else "them their share")
            self._requests.ask(f"ban of {', '.join(ended)} ended")
        return ended

    def health_report(self, node: str, health: protocol.Health) -> str | None:
        """A node's monitor verdict, from its heartbeat; a change (returned, for a replan) asks for a run."""
        was = self._health.get(node, {}).get("ok")
        self._health[node] = {"ok": health.ok, "hook": health.hook, "message": health.message}
        if (was is None and health.ok) or was == health.ok:
            return None
        if health.ok:
            log.warning("Node %s is healthy again: takeover run to give it its share", node)
            self._rebalance.add(node)
        else:
            log.warning("Node %s is UNHEALTHY (monitor hook %s: %s): takeover run to move its IPs away", node,
                        self._health[node]["hook"] or "?", self._health[node]["message"] or "failed")
        self._requests.ask(f"node {node} {'healthy' if health.ok else 'unhealthy'}")
        return f"node {node} is {'healthy again' if health.ok else 'UNHEALTHY'}"

    # --- stepping down -------------------------------------------------------------------------------------------
    def step_down(self, node: str, live: set[str]) -> str | None:
        """Why NODE must hold no public IP now: banned, or UNHEALTHY while another live node is healthy (CTDB
        hosts on unhealthy nodes when all are)."""
        state = self.effective(live).get(node)
        why = None
        if state == "banned":
            why = "banned"
        elif state == "unhealthy" and live - self.unhealthy(live) - {node}:
            why = "unhealthy"
        if why is None:
            self._stepping.pop(node, None)
        elif self._stepping.get(node, ("",))[0] != why:
            self._stepping[node] = (why, self._monotonic(), False)
        return why

    def stepping(self) -> set[str]:
        return set(self._stepping)

    def to_hand_over(self, node: str, holds: list[str] | None, tick: float) -> str | None:
        """NODE stepping down said, in a heartbeat made after it was told (TICK), that it holds nothing (HOLDS):
        why, once; its IPs go to the others now."""
        if node not in self._stepping:
            return None
        why, since, done = self._stepping[node]
        if done or holds is None or holds or tick < since:
            return None
        self._stepping[node] = (why, since, True)
        return why
