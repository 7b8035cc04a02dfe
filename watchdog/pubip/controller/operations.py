"""The listener's operations (`pubip disable / enable / stop / continue / ban / unban / moveip / reloadips /
cancel / ipinfo / tickle / gratarp`, POST /v1/admin): checked here, stored as overrides, carried out by a
takeover run - or, with --check, previewed by a check-mode run."""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from .. import protocol
from . import nodestates
from .auth import Auth
from .holdings import Holdings
from .nodestates import NodeStates
from .nodeview import NodeView
from .placement import LastPlacement
from .runqueue import RunQueue
from .statusview import StatusView
from .store import Store

log = logging.getLogger("pubip.listener")
OPS = ("disable", "enable", "stop", "continue", "ban", "unban", "moveip", "reloadips", "cancel", "ipinfo", "tickle",
       "gratarp")
NODE_OPS = ("disable", "enable", "stop", "continue", "ban", "unban", "moveip")
UNDO = {"enable": "disabled", "continue": "stopped"}  # the state an operation clears


class Operations:
    def __init__(self, *, auth: Auth, placement: LastPlacement, holdings: Holdings, view: NodeView,
                 states: NodeStates, store: Store, queue: RunQueue, status: StatusView) -> None:
        self._auth, self._placement, self._holdings, self._view = auth, placement, holdings, view
        self._states, self._store, self._queue, self._status = states, store, queue, status
        self._gratarp: dict[str, set[str]] = {}  # node -> IPs to announce again (pubip gratarp)

    def gratarp_for(self, node: str) -> list[str]:
        """The IPs NODE must announce again (its heartbeat answer), once."""
        return sorted(self._gratarp.pop(node, set()))

    def operation(self, payload: dict[str, Any]) -> dict[str, Any]:
        """pubip disable / enable / stop / continue / ban / unban / moveip / reloadips: a takeover run under the
        hood, with check a preview; cancel and ipinfo run nothing."""
        op = payload.get("op")
        if op not in OPS:
            raise protocol.Rejected(400, f"unknown operation {op!r}: use one of {', '.join(OPS)}")
        node, ip = str(payload.get("node") or ""), str(payload.get("ip") or "")
        check = bool(payload.get("check"))
        if op in NODE_OPS and node not in self._auth.nodes():
            raise protocol.Rejected(400, f"{op}: {node!r} is not a node of this cluster")
        if op in ("moveip", "ipinfo", "tickle", "gratarp"):
            if not ip:
                raise protocol.Rejected(400, f"{op} needs an ip")
            ip = self.known_public_ip(ip, op)
        raw_seconds = payload.get("seconds")
        seconds = float(raw_seconds) if protocol.is_number(raw_seconds) else 0.0
        if op == "ban" and not 0 < seconds <= 86400 * 365:
            raise protocol.Rejected(400, f"ban: --for {raw_seconds!r} is not a number of seconds (1 to a year)")
        if op == "ipinfo":
            return {"op": op, "success": True, **self.ipinfo(ip)}
        if op == "tickle":
            holder, conns = self._holdings.connections().get(ip, (None, []))
            return {"op": op, "success": True, "ip": ip, "node": holder,
                    "connections": [{"port": c[0], "client": c[1], "client_port": c[2]} for c in conns]}
        if op == "gratarp":
            holders = next(e["holders"] for e in self._status.where_now(time.monotonic()) if e["ip"] == ip)
            for holder in holders:
                self._gratarp.setdefault(holder, set()).add(ip)
            log.info("Operation gratarp %s: %s announces it again", ip, " and ".join(holders) or "nobody")
            return {"op": op, "success": bool(holders), "ip": ip, "nodes": holders,
                    "detail": "" if holders else f"{ip} is held by no node"}
        if op == "cancel":
            dropped = dict(self._store.overrides("moveip"))
            if dropped and not check:
                self._store.clear_overrides("moveip", list(dropped))
                log.warning("Operation cancel: dropped pending moveip %s",
                            ", ".join(f"{i} -> {n}" for i, n in dropped.items()))
            return {"op": op, "check": check, "success": True, "dropped": dropped}
        states, bans = dict(self._store.overrides("state")), self._states.bans()
        moves = dict(self._store.overrides("moveip"))
        if op in ("disable", "stop"):
            states[node] = "disabled" if op == "disable" else "stopped"
        elif op in UNDO and states.get(node) == UNDO[op]:
            states.pop(node)
        elif op == "ban":
            bans[node] = time.time() + seconds
        elif op == "unban":
            bans.pop(node, None)
        elif op == "moveip":
            moves[ip] = node
        if check:
            live = self._view.live()
            planned = nodestates.effective(states, bans, self._states.unhealthy(live), time.time())
            ok, detail, plan = self._queue.check_run(moves, planned)
            return {"op": op, "check": True, "success": ok, "moves": plan.get("moves", []),
                    "summary": plan.get("summary", ""), "detail": detail}
        if op in ("disable", "stop", "enable", "continue"):
            self._store.set_override("state", node, states.get(node))
        elif op in ("ban", "unban"):
            self._store.set_override("ban", node, repr(bans[node]) if node in bans else None)
        elif op == "moveip":
            self._store.set_override("moveip", ip, node)
        if op in ("enable", "continue", "unban"):
            self._states.give_back(node)
        log.info("Operation %s%s%s%s: takeover run", op, f" {ip}" if ip else "", f" {node}" if node else "",
                 f" for {seconds:g}s" if op == "ban" else "")
        result, plan = self._queue.request_and_wait(f"pubip {op}")
        return {"op": op, "check": False, **result, "moves": plan.get("moves", []),
                "summary": plan.get("summary", "")}

    def ipinfo(self, ip: str) -> dict[str, Any]:
        """pubip ipinfo: where IP is now and by plan, who may host it, its interfaces, its last move."""
        now = next((e for e in self._status.where_now(time.monotonic()) if e["ip"] == ip), {})
        p = self._placement.get()
        entry: dict[str, Any] = next((e for e in p.public_ips if e["ip"] == ip), {})
        allowed = (p.allowed or {}).get(ip)
        known = sorted(allowed if allowed is not None else self._auth.nodes())
        states = self._states.effective(self._view.live())
        return {"ip": ip, "holders": now.get("holders", []), "planned": now.get("planned"),
                "known_on": known,
                "available_on": [n for n in known if self._view.alive(n) and n not in states],
                "interfaces": entry.get("interfaces", []), "generation": p.generation,
                "last_move": self._queue.last_move(ip)}

    def known_public_ip(self, ip: str, op: str = "moveip") -> str:
        """IP as the last placement names it (address or CIDR in), or a 400 naming it: an operation on an IP that
        is not public is refused at once, never stored (it would fail every run after)."""
        try:
            address = ipaddress.ip_address(ip.split("/", 1)[0].strip())
        except ValueError:
            raise protocol.Rejected(400, f"{op}: {ip!r} is not an IP address") from None
        known = {ipaddress.ip_address(e["ip"].split("/", 1)[0]): e["ip"] for e in self._placement.get().public_ips}
        if address not in known:
            listed = ", ".join(sorted(known.values())) or "none yet: no takeover run has completed"
            raise protocol.Rejected(400, f"{op}: {ip} is not a public IP of this cluster (public IPs: {listed})")
        return known[address]
