"""Node states at run time, CTDB's flags: disabled and stopped (operations), banned until a moment (an operation,
or ban credits), unhealthy (a failing `monitor` hook); and the ban credits of nodes that keep runs from completing.

Pure: the listener keeps the facts (store overrides, heartbeats) and asks here what they mean for a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
