"""Fast takeover: who takes a dead node's public IPs, decided by the listener without an Ansible run.

Pure: the last placement (the last completed takeover run's plan, placement.py) and the
dead nodes in, takeover orders out. It calls the takeover run's own planner
with what that run left behind as the gathered state, the dead nodes missing
(DISCONNECTED), so the verifying run that follows finds every IP already where
it would put it. Only IPs no live node holds are ordered: moves between live
nodes are left to that run, which releases before it takes.
"""

from __future__ import annotations

import contextlib
from typing import Any

from .._collection import module_utils


def preload() -> None:
    """Import the planner (and NumPy for lcp2) ahead of the first death."""
    module_utils("takeover")
    with contextlib.suppress(ImportError):  # only lcp2 needs NumPy, and the planner says so
        import numpy  # noqa: F401


def orders(placement: dict[str, Any], dead: list[str], unavailable: set[str] | frozenset[str] = frozenset()
           ) -> dict[str, list[dict[str, Any]]]:
    """node -> [{ip, interfaces, from}] for every IP of a dead node that a live node should take now, and
    for every IP a failed run's taker left untaken (the placement's "untaken": held by nobody, "from" None).
    UNAVAILABLE: live nodes that get no order (not heard lately: they may have no lease)."""
    takeover = module_utils("takeover")
    records = placement.get("public_ips") or []
    known = placement.get("nodes") or {}
    untaken = {str(ip) for ip in placement.get("untaken") or []
               if any(e["ip"] == ip and e.get("node") is None for e in records)}
    if not records or not known or not (dead or untaken):
        return {}
    allowed = placement.get("allowed") or {}
    nodes = sorted(({"name": name, "pnn": int(n["pnn"]), "state": n["state"]}
                    for name, n in known.items()), key=lambda n: n["pnn"])
    ips = [{"ip": e["ip"], "address": e["ip"].split("/", 1)[0], "interfaces": list(e["interfaces"]),
            "nodes": allowed.get(e["ip"])} for e in records]
    interfaces = [{"name": name} for name in sorted({i for e in records for i in e["interfaces"]})]
    gathered = {}
    for name, n in known.items():
        if name in dead or name in unavailable or not n.get("connected", True):
            continue  # not gathered: the planner treats it as DISCONNECTED
        gathered[name] = {
            "public_ips": [{"ip": e["ip"]} for e in records if e.get("node") == name],
            "can_host": [e["ip"] for e in records if name in (allowed.get(e["ip"]) or known)],
            "interfaces": interfaces,
        }
    if not gathered:
        return {}
    result = takeover.plan(nodes, ips, gathered, algorithm=placement.get("algorithm") or "lcp2",
                           **(placement.get("options") or {}))
    by_ip = {e["ip"]: e for e in records}
    out: dict[str, list[dict[str, Any]]] = {}
    for move in result["moves"]:
        was = by_ip[move["ip"]].get("node")
        if move["to"] is None or move["also_held_by"] or not (was in dead or (was is None and move["ip"] in untaken)):
            continue
        out.setdefault(move["to"], []).append(
            {"ip": move["ip"], "interfaces": by_ip[move["ip"]]["interfaces"], "from": was})
    return out
