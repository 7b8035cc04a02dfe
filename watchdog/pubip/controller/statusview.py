"""What the listener shows: `pubip status` (GET /v1/status) - nodes, where each public IP is now and by plan,
runs, orders - and Prometheus metrics (GET /metrics). Functions over the Listener's state."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .listener import Listener


def status(lst: Listener) -> dict[str, Any]:
    now = time.monotonic()
    nodes = {}
    known = lst.last_run.get("nodes") or {}
    states, bans, wall = lst.node_states(), lst.bans(), time.time()
    for node in sorted(lst.secrets):
        seen = lst.last_seen.get(node)
        with lst.ears_lock:
            report = lst.reports.get(node)
            left = lst.lease_left.get(node)
        silent = sorted(p for p, ago in (report.hears if report else {}).items()
                        if ago >= lst.timing.suspect_after)
        nodes[node] = {"alive": lst.alive.get(node, True), "pnn": (known.get(node) or {}).get("pnn"),
                       "state": (known.get(node) or {}).get("state"),
                       "last_heartbeat_ago": round(now - seen, 3) if seen is not None else None,
                       "lease_left": round(max(0.0, left[0] - (now - left[1])), 3) if left else None,
                       "does_not_hear": silent,
                       "runtime_state": states.get(node, "enabled"),
                       "banned_for": round(bans[node] - wall, 1) if bans.get(node, 0) > wall else None,
                       "health": lst.health.get(node), "ban_credits": lst.credits.held.get(node, 0)}
    return {"nodes": nodes, "generation": lst.last_run.get("generation"), "public_ips": lst.where_now(now),
            "pending_requests": len(lst.store.pending()), "running": lst.running_run,
            "runs": lst.store.last_runs(5), "accepted_requests": lst.accepted, "rejections": lst.rejections,
            "fast_takeover_orders": lst.orders.recent()}


def where_now(lst: Listener, now: float, fresh: float = 2.0) -> list[dict[str, Any]]:
    """Each public IP of the last run: where it is now (`node`, `holders`: what live nodes said they hold
    in their last heartbeats, at most FRESH seconds old), and the last run's plan for it (`planned`).
    A node without a fresh heartbeat is taken at the plan's word (`from_plan`)."""
    with lst.ears_lock:
        holds = dict(lst.holds)
    reporting = {n for n in lst.secrets if lst.alive.get(n, True) and n in holds
                 and now - lst.last_seen.get(n, float("-inf")) <= fresh}
    held: dict[str, list[str]] = {}
    for node in sorted(reporting):
        for ip in holds[node][0]:
            held.setdefault(ip, []).append(node)
    out = []
    for ip, planned in (lst.last_run.get("assignment") or {}).items():
        holders = list(held.get(ip, []))
        guessed = planned is not None and planned not in reporting and lst.alive.get(planned, True)
        if guessed and planned not in holders:
            holders.append(planned)
        out.append({"ip": ip, "node": holders[0] if len(holders) == 1 else None,  # None: unheld, or held twice
                    "holders": holders, "planned": planned, "from_plan": bool(guessed)})
    return out


def metrics(lst: Listener) -> str:
    st = lst.status()
    lines = [
        "# TYPE pubip_listener_requests_accepted_total counter",
        f"pubip_listener_requests_accepted_total {lst.accepted}",
        "# TYPE pubip_listener_rejections_total counter",
        *[f'pubip_listener_rejections_total{{reason="{k}"}} {v}' for k, v in sorted(lst.rejections.items())],
        "# TYPE pubip_listener_runs_total counter",
        f"pubip_listener_runs_total {lst.store.count_runs()}",
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
