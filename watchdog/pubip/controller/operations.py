"""The listener's operations (`pubip disable / enable / stop / continue / ban / unban / moveip / reloadips /
cancel / ipinfo / tickle / gratarp`, POST /v1/admin): checked here, stored as overrides, carried out by a
takeover run - or, with --check, previewed by a check-mode run. Functions over the Listener's state."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from .. import protocol
from . import nodestates

if TYPE_CHECKING:
    from .listener import Listener

log = logging.getLogger("pubip.listener")
OPS = ("disable", "enable", "stop", "continue", "ban", "unban", "moveip", "reloadips", "cancel", "ipinfo", "tickle",
       "gratarp")
NODE_OPS = ("disable", "enable", "stop", "continue", "ban", "unban", "moveip")
UNDO = {"enable": "disabled", "continue": "stopped"}  # the state an operation clears


def operation(lst: Listener, payload: dict[str, Any]) -> dict[str, Any]:
    """pubip disable / enable / stop / continue / ban / unban / moveip / reloadips: a takeover run under the
    hood, with check a preview; cancel and ipinfo run nothing."""
    op = payload.get("op")
    if op not in OPS:
        raise protocol.Rejected(400, f"unknown operation {op!r}: use one of {', '.join(OPS)}")
    node, ip = str(payload.get("node") or ""), str(payload.get("ip") or "")
    check = bool(payload.get("check"))
    if op in NODE_OPS and node not in lst.secrets:
        raise protocol.Rejected(400, f"{op}: {node!r} is not a node of this cluster")
    if op in ("moveip", "ipinfo", "tickle", "gratarp"):
        if not ip:
            raise protocol.Rejected(400, f"{op} needs an ip")
        ip = lst.known_public_ip(ip, op)
    raw_seconds = payload.get("seconds")
    seconds = float(raw_seconds) if protocol.is_number(raw_seconds) else 0.0
    if op == "ban" and not 0 < seconds <= 86400 * 365:
        raise protocol.Rejected(400, f"ban: --for {raw_seconds!r} is not a number of seconds (1 to a year)")
    if op == "ipinfo":
        return {"op": op, "success": True, **lst.ipinfo(ip)}
    if op == "tickle":
        holder, conns = lst.connections.get(ip, (None, []))
        return {"op": op, "success": True, "ip": ip, "node": holder,
                "connections": [{"port": c[0], "client": c[1], "client_port": c[2]} for c in conns]}
    if op == "gratarp":
        holders = next(e["holders"] for e in lst.where_now(time.monotonic()) if e["ip"] == ip)
        for holder in holders:
            lst.gratarp.setdefault(holder, set()).add(ip)
        log.info("Operation gratarp %s: %s announces it again", ip, " and ".join(holders) or "nobody")
        return {"op": op, "success": bool(holders), "ip": ip, "nodes": holders,
                "detail": "" if holders else f"{ip} is held by no node"}
    if op == "cancel":
        dropped = dict(lst.store.overrides("moveip"))
        if dropped and not check:
            lst.store.clear_overrides("moveip", list(dropped))
            log.warning("Operation cancel: dropped pending moveip %s",
                        ", ".join(f"{i} -> {n}" for i, n in dropped.items()))
        return {"op": op, "check": check, "success": True, "dropped": dropped}
    states, bans = dict(lst.store.overrides("state")), lst.bans()
    moves = dict(lst.store.overrides("moveip"))
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
        planned = nodestates.effective(states, bans, lst.unhealthy(), time.time())
        with lst.run_lock:
            ok, _gen, detail = lst.run(0, lst.dead_nodes(), lst.extravars(lst.dead_nodes(), moves, planned),
                                        check=True)
        plan = lst.last_found.get("plan") or {}
        return {"op": op, "check": True, "success": ok, "moves": plan.get("moves", []),
                "summary": plan.get("summary", ""), "detail": detail}
    if op in ("disable", "stop", "enable", "continue"):
        lst.store.set_override("state", node, states.get(node))
    elif op in ("ban", "unban"):
        lst.store.set_override("ban", node, repr(bans[node]) if node in bans else None)
    elif op == "moveip":
        lst.store.set_override("moveip", ip, node)
    if op in ("enable", "continue", "unban"):
        lst.rebalance.add(node)
    log.info("Operation %s%s%s%s: takeover run", op, f" {ip}" if ip else "", f" {node}" if node else "",
             f" for {seconds:g}s" if op == "ban" else "")
    request_id = lst.store.add_request(protocol.ADMIN, f"pubip {op}")
    lst.awaited.add(request_id)
    lst.wake.set()
    deadline = time.monotonic() + 600
    while request_id not in lst.attempts and time.monotonic() < deadline and not lst.stopping.is_set():
        time.sleep(0.05)
    lst.awaited.discard(request_id)
    result = lst.attempts.pop(request_id, None) or lst.wait_for(request_id, 0)
    plan = lst.last_found.get("plan") or {}
    return {"op": op, "check": False, **result, "moves": plan.get("moves", []),
            "summary": plan.get("summary", "")}


def ipinfo(lst: Listener, ip: str) -> dict[str, Any]:
    """pubip ipinfo: where IP is now and by plan, who may host it, its interfaces, its last move."""
    now = next((e for e in lst.where_now(time.monotonic()) if e["ip"] == ip), {})
    entry: dict[str, Any] = next((e for e in lst.last_run.get("public_ips") or [] if e["ip"] == ip), {})
    allowed = (lst.last_run.get("allowed") or {}).get(ip)
    known = sorted(allowed if allowed is not None else lst.secrets)
    states = lst.node_states()
    return {"ip": ip, "holders": now.get("holders", []), "planned": now.get("planned"),
            "known_on": known,
            "available_on": [n for n in known if lst.alive.get(n, True) and n not in states],
            "interfaces": entry.get("interfaces", []), "generation": lst.last_run.get("generation"),
            "last_move": lst.moved.get(ip)}


def known_public_ip(lst: Listener, ip: str, op: str = "moveip") -> str:
    """IP as the last run names it (address or CIDR in), or a 400 naming it: an operation on an IP that
    is not public is refused at once, never stored (it would fail every run after)."""
    import ipaddress

    try:
        address = ipaddress.ip_address(ip.split("/", 1)[0].strip())
    except ValueError:
        raise protocol.Rejected(400, f"{op}: {ip!r} is not an IP address") from None
    known = {ipaddress.ip_address(e["ip"].split("/", 1)[0]): e["ip"] for e in lst.last_run.get("public_ips") or []}
    if address not in known:
        listed = ", ".join(sorted(known.values())) or "none yet: no takeover run has completed"
        raise protocol.Rejected(400, f"{op}: {ip} is not a public IP of this cluster (public IPs: {listed})")
    return known[address]
