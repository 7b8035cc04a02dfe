"""What the listener shows: `pubip status` (GET /v1/status) - nodes, where each public IP is now and by plan,
runs, orders - and Prometheus metrics (GET /metrics). Reads the parts; changes nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from ..membership import Timing
from .auth import Auth
from .holdings import Holdings
from .leadership import View
from .nodestates import NodeStates
from .nodeview import NodeView
from .ordering import OrderPolicy
from .placement import LastPlacement
from .runs import CurrentRun
from .store import Store


class StatusView:
    def __init__(self, *, auth: Auth, placement: LastPlacement, holdings: Holdings, view: NodeView,
                 states: NodeStates, store: Store, run: CurrentRun, policy: OrderPolicy, timing: Timing,
                 accepted: Callable[[], int], leadership: Callable[[], View],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._auth, self._placement, self._holdings, self._view = auth, placement, holdings, view
        self._states, self._store, self._run, self._policy = states, store, run, policy
        self._timing, self._accepted, self._clock = timing, accepted, clock
        self._leadership = leadership

    def status(self) -> protocol.Status:
        now = self._clock()
        nodes = {}
        p = self._placement.get()
        known = p.nodes or {}
        live = self._view.live()
        states, bans, wall = self._states.effective(live), self._states.bans(), time.time()
        dead_after = self._holdings.timing().dead_after
        for node in self._auth.nodes():
            seen = self._holdings.last_seen(node)
            report = self._holdings.report_of(node)
            left = self._holdings.lease_left(node, now)
            silent = sorted(peer for peer, ago in (report.hears if report else {}).items()
                            if ago >= self._timing.suspect_after)
            liveness = self._view.liveness(node, now, dead_after)
            nodes[node] = {"alive": liveness == "alive", "liveness": liveness,
                           "pnn": (known.get(node) or {}).get("pnn"),
                           "state": (known.get(node) or {}).get("state"),
                           "last_heartbeat_ago": round(now - seen, 3) if seen is not None else None,
                           "lease_left": round(left, 3) if left is not None else None,
                           "does_not_hear": silent,
                           "runtime_state": states.get(node, "enabled"),
                           "banned_for": round(bans[node] - wall, 1) if bans.get(node, 0) > wall else None,
                           "health": self._states.health_of(node), "ban_credits": self._states.credits_of(node)}
        lead = self._leadership()
        return protocol.Status(nodes=nodes, public_ips=self.where_now(now), failover=self._holdings.failover(),
                               generation=p.generation,
                               pending_requests=len(self._store.pending()), running=self._run.running(),
                               runs=self._store.last_runs(5), accepted_requests=self._accepted(),
                               rejections=self._auth.rejections(), fast_takeover_orders=self._policy.recent(),
                               leader=lead.leader, term=lead.term, role=lead.role, leadership=lead.why)

    def where_now(self, now: float, fresh: float = 2.0) -> list[dict[str, Any]]:
        """Each public IP of the last placement: where it is now (`node`, `holders`: what live nodes said they
        hold in their last heartbeats, at most FRESH seconds old), and the plan for it (`planned`). A node
        without a fresh heartbeat is taken at the plan's word (`from_plan`)."""
        holds = self._holdings.holds()
        reporting = set()
        for n in self._view.live():
            seen = self._holdings.last_seen(n)
            if n in holds and now - (seen if seen is not None else float("-inf")) <= fresh:
                reporting.add(n)
        held: dict[str, list[str]] = {}
        for node in sorted(reporting):
            for ip in holds[node][0]:
                held.setdefault(ip, []).append(node)
        out = []
        for ip, planned in self._placement.get().assignment.items():
            holders = list(held.get(ip, []))
            guessed = planned is not None and planned not in reporting and self._view.alive(planned)
            if planned is not None and guessed and planned not in holders:
                holders.append(planned)
            out.append({"ip": ip, "node": holders[0] if len(holders) == 1 else None,  # None: unheld, or held twice
                        "holders": holders, "planned": planned, "from_plan": bool(guessed)})
        return out

    def metrics(self) -> str:
        st = self.status().wire()
        lines = [
            "# TYPE pubip_listener_requests_accepted_total counter",
            f"pubip_listener_requests_accepted_total {self._accepted()}",
            "# TYPE pubip_listener_rejections_total counter",
            *[f'pubip_listener_rejections_total{{reason="{k}"}} {v}' for k, v in sorted(st["rejections"].items())],
            "# TYPE pubip_listener_runs_total counter",
            f"pubip_listener_runs_total {self._store.count_runs()}",
            "# TYPE pubip_listener_nodes_alive gauge",
            f"pubip_listener_nodes_alive {sum(1 for n in st['nodes'].values() if n['alive'])}",
            "# TYPE pubip_listener_pending_requests gauge",
            f"pubip_listener_pending_requests {st['pending_requests']}",
        ]
        last = next((r for r in st["runs"] if r["duration"] is not None), None)
        if last:
            lines += ["# TYPE pubip_listener_last_run_seconds gauge",
                      f"pubip_listener_last_run_seconds {last['duration']:.3f}"]
        return "\n".join(lines) + "\n"
