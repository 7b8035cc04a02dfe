# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The takeover run's plan: inventory + what every node reported -> who releases and who takes.

Pure: plain data in, plain data out, no I/O and no Ansible imports; the action
plugin and the tests call it.
"""

from __future__ import annotations

from ansible_collections.pubip.cluster.plugins.module_utils import ipalloc
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import record as _record
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.addresses import SpecError, parse_ip

NODE_STATES = {"enabled": 0, "disabled": ipalloc.NODE_FLAGS["PERMANENTLY_DISABLED"],
               "stopped": ipalloc.NODE_FLAGS["STOPPED"], "banned": ipalloc.NODE_FLAGS["BANNED"],
               "unhealthy": ipalloc.NODE_FLAGS["UNHEALTHY"]}
DISCONNECTED = ipalloc.NODE_FLAGS["DISCONNECTED"]


class InventoryError(ValueError):
    """The inventory cannot describe a cluster; the message names the culprit."""


def validate_inventory(hosts, public_ips, algorithm, host_vars, in_use=None):
    """Check the inventory contract before any host is touched.

    ``hosts``: group members in inventory order; ``host_vars``: host -> {pubip_pnn?, pubip_state?}.
    ``in_use``: address -> whose it is (a host's ansible_host, the listener's): no public IP may be one.
    Returns (nodes, ips): nodes = [{name, pnn, state}] sorted by pnn; ips = [{ip, address, interfaces, nodes}].
    """
    if algorithm not in ipalloc.ALGORITHMS:
        raise InventoryError("pubip_algorithm %r is unknown: use one of %s"
                             % (algorithm, ", ".join(ipalloc.ALGORITHMS)))
    if not hosts:
        raise InventoryError("the node group has no hosts")
    nodes, pnns = [], {}
    for pos, host in enumerate(hosts):
        hv = host_vars.get(host, {})
        pnn = hv.get("pubip_pnn", pos)
        if isinstance(pnn, bool) or not isinstance(pnn, int) or pnn < 0:
            raise InventoryError("host %s: pubip_pnn %r is not a non-negative integer" % (host, pnn))
        if pnn in pnns:
            raise InventoryError("host %s: pubip_pnn %d is already host %s's" % (host, pnn, pnns[pnn]))
        pnns[pnn] = host
        state = hv.get("pubip_state", "enabled")
        if state not in NODE_STATES:
            raise InventoryError("host %s: pubip_state %r is unknown: use one of %s"
                                 % (host, state, ", ".join(NODE_STATES)))
        nodes.append({"name": host, "pnn": pnn, "state": state})
    nodes.sort(key=lambda n: n["pnn"])
    if not isinstance(public_ips, list):
        raise InventoryError("pubip_public_ips must be a list of {ip, interfaces, nodes}")
    seen, ips = {}, []
    for pos, entry in enumerate(public_ips):
        if not isinstance(entry, dict) or "ip" not in entry:
            raise InventoryError("pubip_public_ips[%d] must be a mapping with an ip: %r" % (pos, entry))
        try:
            address, prefixlen, _version = parse_ip(str(entry["ip"]))
        except SpecError as exc:
            raise InventoryError("pubip_public_ips[%d]: %s" % (pos, exc))
        if address in seen:
            raise InventoryError("public IP %s is listed twice (pubip_public_ips[%d] and [%d])"
                                 % (address, seen[address], pos))
        if address in (in_use or {}):
            raise InventoryError("public IP %s (pubip_public_ips[%d]) is %s: moving it would take that address "
                                 "away" % (address, pos, in_use[address]))
        seen[address] = pos
        interfaces = entry.get("interfaces")
        if not isinstance(interfaces, list) or not interfaces or not all(isinstance(i, str) for i in interfaces):
            raise InventoryError("public IP %s: interfaces must be a non-empty list of names" % entry["ip"])
        allowed = entry.get("nodes")
        if allowed is not None:
            if not isinstance(allowed, list):
                raise InventoryError("public IP %s: nodes must be a list of host names" % entry["ip"])
            for name in allowed:
                if name not in host_vars and name not in hosts:
                    raise InventoryError("public IP %s: nodes names %r, which is not a host of the node group"
                                         % (entry["ip"], name))
        ips.append({"ip": "%s/%d" % (address, prefixlen), "address": address, "interfaces": list(interfaces),
                    "nodes": list(allowed) if allowed is not None else None})
    return nodes, ips


def plan(nodes, ips, gathered, algorithm="lcp2", no_ip_failback=False, no_ip_takeover=False, now=0.0,
         move_requests=None, pinned=None, reported=None, rebalance=None, generation_floor=0, may_hold=None):
    """Compute the takeover run.

    ``gathered``: host -> public_ip query result (interfaces, public_ips, can_host, record, lease) for every
    connected node; a node missing from it is DISCONNECTED. ``pinned``: host -> why it could not be
    gathered, for nodes that are alive as far as anyone knows (unreachable is not dead): the IPs the newest
    record gives them stay theirs, counted as held, and they get nothing new. A node whose lease has run out
    (lease "expired": it lost the cluster) hosts nothing. ``move_requests``: ip -> node, CTDB's moveip: the
    engine starts as if that node held the IP, so it stays there when the node can host it. ``reported``:
    host -> the public IPs its watchdog said it holds in a heartbeat made after this run closed the fast paths
    for it (the listener's extra var: no order, and no retake on a node the run has not gathered): a pinned
    node with such a report keeps exactly those - recorded or not, a fast retake or order may have put them
    there - and one without keeps what the newest record gives it, and what ``may_hold`` says it may hold (the
    listener's word for nodes without such a report: what they last reported, and what fast takeover orders put
    on them - no record has those yet). ``rebalance``:
    nodes that came back (revived, enabled, continued, unbanned, healthy again): CTDB's force_rebalance_nodes,
    so they get their share back - unless no_ip_failback. ``generation_floor``: the newest generation any
    host may have recorded (the listener's word; hosts not gathered here included): a run that changes
    anything records a newer one.
    """
    pinned = dict(pinned or {})
    connected = [n["name"] for n in nodes if n["name"] in gathered]
    unleased = sorted(h for h in connected if gathered[h].get("lease") == "expired")
    newest = max((gathered[h].get("record") or {} for h in connected),
                 key=lambda r: int(r.get("generation") or 0), default={})
    owner = {e["ip"].split("/", 1)[0]: e.get("node") for e in newest.get("public_ips") or []}
    reported = reported or {}
    # A pinned node keeps exactly what it reported after the run closed the fast paths for it (the listener
    # allows no fast retake on a node its run has not gathered), else what the newest record gives it.
    pinned_ips = {ip["address"]: owner[ip["address"]] for ip in ips
                  if owner.get(ip["address"]) in pinned and owner[ip["address"]] not in reported}
    for name in sorted(pinned):
        # without a report, a node the run cannot reach may still hold IPs taken on orders that no record gives
        # it (chaos: such an IP was planned to another node beside it)
        for held in reported[name] if name in reported else (may_hold or {}).get(name) or []:
            pinned_ips.setdefault(str(held).split("/", 1)[0], name)
    pinned_ips = {a: n for a, n in pinned_ips.items() if a in {ip["address"] for ip in ips}}
    _check_interfaces(ips, gathered)
    index = {n["name"]: i for i, n in enumerate(nodes)}  # engine pnn = rank by pubip_pnn
    by_address = {ip["address"]: ip for ip in ips}

    holders = {}  # address -> [hosts holding it], in engine pnn order
    stray = {}  # host -> [cidr] held but no longer public IPs
    for node in nodes:
        for held in gathered.get(node["name"], {}).get("public_ips", []):
            address = held["ip"].split("/", 1)[0]
            if address in by_address:
                holders.setdefault(address, []).append(node["name"])
            else:
                stray.setdefault(node["name"], []).append(held["ip"])

    engine_nodes = []
    for node in nodes:
        flags = NODE_STATES[node["state"]] | (0 if node["name"] in gathered else DISCONNECTED)
        engine_nodes.append({"pnn": index[node["name"]], "flags": flags, "runstate": ipalloc.RUNSTATE_RUNNING})
    wanted_moves = {}
    for ip_text, node in (move_requests or {}).items():
        address = ip_text.split("/", 1)[0]
        if address not in by_address:
            raise InventoryError("moveip: %s is not a public IP" % ip_text)
        if node not in index:
            raise InventoryError("moveip: %s is not a node" % node)
        wanted_moves[address] = node
    engine_ips = []
    for ip in ips:
        if ip["address"] in pinned_ips:
            continue  # stays where it is: the engine neither moves it nor counts it
        allowed = ip["nodes"] if ip["nodes"] is not None else [n["name"] for n in nodes]
        able = [index[h] for h in allowed if ip["ip"] in gathered.get(h, {}).get("can_host", [])
                and h not in unleased]
        current = holders.get(ip["address"], [])
        if ip["address"] in wanted_moves:
            current = [wanted_moves[ip["address"]]]
        # CTDB's merge rule: the highest-numbered node claiming it is the holder.
        engine_ips.append({"ip": ip["ip"], "current_pnn": index[current[-1]] if current else -1,
                           "known_on": [index[h] for h in allowed], "available_on": sorted(able)})
    engine_options = {"no_ip_failback": bool(no_ip_failback), "no_ip_takeover": bool(no_ip_takeover)}
    if rebalance and not no_ip_failback:
        engine_options["force_rebalance_nodes"] = sorted(index[n] for n in rebalance if n in index)
    result = ipalloc.allocate(engine_nodes, engine_ips, algorithm, engine_options)
    name_of = {i: n["name"] for n, i in ((n, index[n["name"]]) for n in nodes)}
    assignment = {a["ip"]: (name_of[a["pnn"]] if a["pnn"] >= 0 else None) for a in result["assignments"]}
    if pinned_ips:  # back in, in CTDB's order (descending address)
        for ip in ips:
            if ip["address"] in pinned_ips:
                assignment[ip["ip"]] = pinned_ips[ip["address"]]
        assignment = {ip["ip"]: assignment[ip["ip"]]
                      for ip in sorted(ips, key=lambda i: ipalloc.ip_key(i["ip"]), reverse=True)}

    release = {h: sorted(stray.get(h, [])) for h in connected}
    take = {h: [] for h in connected}
    moves, kept = [], 0
    for ip in ips:
        new = assignment[ip["ip"]]
        current = holders.get(ip["address"], [])
        for h in current:
            if h != new:
                release[h].append(ip["ip"])
        if new is not None and new in take:
            take[new].append({"ip": ip["ip"], "interfaces": ip["interfaces"]})
        was = current[-1] if current else None
        if current == [new] or (ip["address"] in pinned_ips and not current):
            kept += 1
        else:
            moves.append({"ip": ip["ip"], "from": was, "to": new, "also_held_by": current[:-1]})
    for h in release:
        release[h].sort()

    previous = [gathered[h].get("record") or {} for h in connected]
    last_generation = max([int(r.get("generation") or 0) for r in previous] or [0])
    public_record = [{"ip": ip["ip"], "node": assignment[ip["ip"]], "interfaces": ip["interfaces"]} for ip in ips]
    node_record = {n["name"]: {"pnn": n["pnn"], "state": n["state"],
                               "connected": n["name"] in gathered} for n in nodes}
    for name in pinned:
        node_record[name]["pinned"] = True
    wanted = sorted(public_record, key=lambda e: e["ip"])
    # GENERATION_FLOOR: the newest generation any host may have recorded, as far as the caller knows (the
    # listener: hosts it did not gather here, a run cut short) - a changing run's generation is newer, so no
    # two different assignments ever share one (a fast retake trusts a record of the newest generation)
    floor = int(generation_floor or 0)
    stale = floor > last_generation or any(sorted(r.get("public_ips") or [], key=lambda e: e["ip"]) != wanted
                or r.get("nodes") != node_record or int(r.get("generation") or 0) != last_generation
                or float(r.get("run_started") or 0) > float(r.get("run_finished") or 0)
                for r in previous)
    moving = bool(moves) or any(release.values())
    started = min([float(gathered[h].get("time") or now) for h in connected] or [now])
    return {
        "algorithm": algorithm,
        "options": {"no_ip_failback": bool(no_ip_failback), "no_ip_takeover": bool(no_ip_takeover)},
        # Which nodes may serve a restricted IP: with the record, what a fast takeover needs to plan.
        "allowed": {ip["ip"]: ip["nodes"] for ip in ips if ip["nodes"] is not None},
        "connected": connected,
        "disconnected": [n["name"] for n in nodes if n["name"] not in gathered and n["name"] not in pinned],
        "pinned": {name: {"reason": why, "ips": sorted(ip["ip"] for ip in ips if pinned_ips.get(ip["address"]) == name)}
                   for name, why in sorted(pinned.items())},
        "unleased": unleased,
        "assignment": assignment,
        "release": release,
        "take": take,
        "moves": moves,
        "counts": {"moved": len([m for m in moves if m["to"] is not None]), "kept": kept,
                   "unassigned": len([ip for ip in ips if assignment[ip["ip"]] is None])},
        "changed": moving or stale,
        "moving": moving,
        "generation": max(last_generation, floor) + 1 if (moving or stale) else last_generation,
        "run_started": started,
        "record": {"public_ips": public_record, "nodes": node_record},
        "log": [line for _level, line in result["log"]],
    }


def failed_releases(plan, release_results, recorded=None, dead=()):
    """Connected host -> the IPs it may still hold after the release phase: those it reported failing,
    or, when it did not say which (unreachable, no result, skipped, a task that failed before the release
    phase could answer - ansible-core 2.19 reports a connection lost mid-call as "Task failed"), all it had
    to release and all its record gives it (RECORDED: host -> IPs; its watchdog may have retaken one since the
    gather). A host in DEAD (declared dead by the listener's quorum during the run: its lease is gone) holds
    nothing."""
    out = {}
    recorded = recorded or {}
    for name in plan["connected"]:
        if name in dead:
            continue
        mine = plan["release"].get(name, [])
        rel = release_results.get(name)
        if not rel or rel.get("unreachable") or "failed_ips" not in rel:
            stuck = sorted(set(mine) | set(recorded.get(name) or []))
        else:
            stuck = list(rel.get("failed_ips") or [])
        if stuck:
            out[name] = stuck
    return out


def achieved(plan, stuck, untaken=None):
    """The record's public IPs after the take phase: the plan's, except that an IP whose holder failed to
    release it (STUCK: host -> IPs, from failed_releases) stays with that holder - nobody else took it - and
    an IP its taker refused before changing anything (UNTAKEN: host -> IPs, from untaken_ips) is held by
    nobody: the listener may order it to another node at once rather than leave it unheld until a run."""
    holder = {}
    for _name, ips in (untaken or {}).items():
        for ip in ips:
            holder[ip] = None
    for name, ips in stuck.items():
        for ip in ips:
            holder[ip] = name
    return [dict(e, node=holder[e["ip"]]) if e["ip"] in holder and e.get("node") != holder[e["ip"]] else dict(e)
            for e in plan["record"]["public_ips"]]


def untaken_ips(wanted, take_result, record, host):
    """The IPs of WANTED (HOST's take specs) that HOST's failed take surely left untaken: only a take the
    module refused before changing anything says what the host held then, read under the interface lock
    (a host without a lease: its watchdog takes nothing either); any other failure may have taken any of them.
    Never counted: what its watchdog may still retake - under the run's mark (the record the refusal read, under
    the lock) the IPs the run keeps there (the module took from them those it did not hold), else the IPs its
    record (that one, or RECORD, the gathered one) gives HOST."""
    res = take_result or {}
    if not res.get("failed") or not res.get("refused_before_change") or "public_ips" not in res:
        return []
    held = {h["ip"] for h in res.get("public_ips") or []}
    now = res.get("record") if "record" in res else record
    retakable = _record.kept(now) if _record.marked(now) else recorded_ips(now, host)
    return sorted({t["ip"] for t in wanted} - held - set(retakable))


def recorded_ips(record, node):
    """The public IPs RECORD (a gathered record) gives NODE."""
    return sorted(e["ip"] for e in (record or {}).get("public_ips") or [] if e.get("node") == node)


def kept_ips(plan, host, record):
    """The IPs HOST holds both before (its record) and after the run (the plan): no host is given them by
    this run, so its watchdog may retake them while the run's mark is on its record."""
    after = {t["ip"] for t in plan["take"].get(host, [])}
    return sorted(after & set(recorded_ips(record, host)))


def finish(plan, results, dead=()):
    """Why the run failed, host by host (empty: it did not), after every phase: [(host, problem)].

    ``results``: host -> {phase: registered result}; pinned nodes are failures too (unreachable is not dead).
    ``dead``: hosts the listener declared dead during the run (their phases were skipped).
    """
    problems = []
    for name, info in sorted((plan.get("pinned") or {}).items()):
        problems.append((name, "%s could not be gathered (%s); its public IPs %s stay with it"
                         % (name, info["reason"], ", ".join(info["ips"]) or "(none)")))
    for name in plan["connected"]:
        if name in dead:
            problems.append((name, "%s was declared dead during the run (no heartbeats): skipped" % name))
            continue
        for phase in ("release", "take", "record"):
            res = (results.get(name) or {}).get(phase)
            if res is None:
                continue
            if res.get("unreachable"):
                problems.append((name, "%s was unreachable in the %s phase: %s" % (name, phase, res.get("msg", ""))))
                break
            if res.get("failed"):
                problems.append((name, "%s failed in the %s phase: %s" % (name, phase, res.get("msg", ""))))
                break
            if phase == "release" and res.get("failed_ips"):
                problems.append((name, "%s failed to release %s" % (name, ", ".join(res["failed_ips"]))))
                break
    return problems


def take_phase(plan, host, failed_releases, held_with_link):
    """What HOST does in the take phase, from the plan and the release phase's results.

    ``failed_releases``: connected host -> IPs it failed to release; ``held_with_link``: IPs HOST held
    at gather on a link with carrier. An IP whose holder failed to release it is taken by nobody else
    (it would be on two hosts). Returns {wanted: the take specs to hand to the module, todo: those that
    change something, own_stuck: IPs HOST itself failed to release, not_taken: IPs of HOST's plan held
    back because another host failed to release them}.
    """
    stuck = {}
    for name in plan["connected"]:
        for ip in failed_releases.get(name) or []:
            stuck[ip] = name
    mine = plan["take"].get(host, [])
    wanted = [t for t in mine if t["ip"] not in stuck or stuck[t["ip"]] == host]
    released_here = plan["release"].get(host, [])
    todo = [t for t in wanted if t["ip"] not in held_with_link or t["ip"] in released_here]
    return {"wanted": wanted, "todo": todo,
            "own_stuck": sorted(ip for ip, name in stuck.items() if name == host),
            "not_taken": sorted(ip for ip, name in stuck.items() if name != host and any(t["ip"] == ip for t in mine))}


def _check_interfaces(ips, gathered):
    """An IP whose interfaces exist on no connected node is an inventory error."""
    if not gathered:
        return
    present = set()
    for report in gathered.values():
        present.update(i["name"] for i in report.get("interfaces", []))
    for ip in ips:
        if not any(name in present for name in ip["interfaces"]):
            raise InventoryError("public IP %s: interface %s exists on no node"
                                 % (ip["ip"], ", ".join(ip["interfaces"])))


def summary(result, nodes):
    """A `ctdb ip`-like table and the counts, as printed at the end of every run."""
    pnn = {n["name"]: n["pnn"] for n in nodes}
    moved_from = {m["ip"]: m["from"] for m in result["moves"]}
    rows = [("Public IP", "Node", "PNN", "Was")]
    for ip, node in sorted(result["assignment"].items(), key=lambda kv: ipalloc.ip_key(kv[0])):
        was = (moved_from[ip] or "-") if ip in moved_from else ""
        rows.append((ip, node or "-", str(pnn[node]) if node else "-1", was))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    c = result["counts"]
    head = "Takeover run generation %d (%s): %d moved, %d kept, %d unassigned" % (
        result["generation"], result["algorithm"], c["moved"], c["kept"], c["unassigned"])
    if result["disconnected"]:
        head += "; disconnected: %s" % ", ".join(result["disconnected"])
    if result.get("pinned"):
        head += "; pinned (not reached, IPs kept): %s" % ", ".join(result["pinned"])
    if result.get("unleased"):
        head += "; without lease: %s" % ", ".join(result["unleased"])
    moves = ["Move %s: %s -> %s" % (m["ip"], m["from"] or "-", m["to"] or "-") for m in result["moves"]]
    return "\n".join([head] + lines + moves)
