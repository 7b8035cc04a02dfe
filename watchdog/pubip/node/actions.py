"""What a watchdog changes on its own host without a takeover run, always under the interface lock.

- take_ordered: the listener's signed fast takeover order (a dead node's IPs), carried out
  only while the record is still the generation the order was planned from and no run is
  in progress - or the run in progress is the one the order names (the listener orders only
  what that run no longer takes, runstate.py) - and only within `order_max_age` of its
  arrival (orders.py says why).
- release_foreign: public IPs held here that the record gives to another node (or to none) are
  released at once, as CTDB's recovery daemon does ("... that we should not be serving.
  Removing it"); the takeover run that is still asked for puts them where they belong.
- release_stranded: public IPs on an interface that lost its carrier are released (or moved
  to another usable interface the record allows, when they are ours). Nobody reaches them
  there, and a host cut off from the cluster must not bring them back when its link
  returns while the survivors hold them: CTDB's node releases its IPs too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from .._collection import module_utils
from .config import Config

_addresses = module_utils("addresses")
_announce = module_utils("announce")
_host = module_utils("host")
_locking = module_utils("locking")
_netlink = module_utils("netlink")
_record = module_utils("record")
log = logging.getLogger("pubip.watchdog")
LOCK_TIMEOUT = 0.5


def settings(cfg: Config) -> Any:
    return _host.Settings(node=cfg.node, hook_dir=cfg.hook_dir, announce_count=cfg.announce_count,
                          announce_interval=cfg.announce_interval, record_path=cfg.record_path,
                          lock_path=cfg.lock_path)


def specs_of(record: dict[str, Any], ips: list[str]) -> list[Any]:
    """The record's public IPs IPS, with the interfaces it allows them on."""
    by_ip = {e["ip"]: e for e in record["public_ips"]}
    return list(_addresses.parse_specs([{"ip": ip, "interfaces": by_ip[ip]["interfaces"]} for ip in ips]))


def public_addresses(record: dict[str, Any]) -> set[str]:
    return {e["ip"].split("/", 1)[0] for e in record["public_ips"]}


def take(cfg: Config, nl: Any, record: dict[str, Any], specs: list[Any],
         tickles: dict[str, Any] | None = None) -> list[Any]:
    """Plan and carry out the takeover of SPECS on this host (the caller holds the interface lock); TICKLES:
    IP -> the connections its last holder had, tickled once it is here."""
    conf = settings(cfg)
    conf.tickles = {str(ip).split("/", 1)[0]: conns for ip, conns in (tickles or {}).items()
                    if isinstance(conns, list)}
    return list(_host.apply_actions(nl, _host.plan_take(nl.interfaces(), specs, record, conf,
                                                        public_addresses(record)), conf))


def ordered_by_marking_run(record: dict[str, Any], order: dict[str, Any]) -> bool:
    """ORDER came from the listener while the takeover run that marked RECORD records its result: that run
    takes nothing more (runstate.takes_done), so the order may be carried out under its mark."""
    return (order.get("run_id") is not None and record.get("run_id") == order.get("run_id")
            and _record.in_progress(record))


def take_ordered(cfg: Config, nl: Any, order: dict[str, Any], received: float) -> dict[str, Any]:
    """Carry out one fast takeover order; the answer goes back to the listener with the next heartbeat."""
    out: dict[str, Any] = {"id": order.get("id"), "taken": [], "errors": [], "refused": None}
    try:
        with _locking.InterfaceLock(cfg.lock_path, timeout=LOCK_TIMEOUT):
            age = time.monotonic() - received
            record = _record.read(cfg.record_path)
            generation = (record or {}).get("generation")
            if age > cfg.order_max_age:
                out["refused"] = f"order {order.get('id')} arrived {age:.2f}s ago (limit {cfg.order_max_age}s)"
            elif record is None:
                out["refused"] = "no assignment record"
            elif _record.stale_term(record, order.get("term", 0)):
                out["refused"] = f"fenced: {_record.stale_term(record, order.get('term', 0))}"
            elif _record.marked(record) and not ordered_by_marking_run(record, order):
                # a mark past its deadline too: that run died mid-way and may have placed IPs it never recorded
                out["refused"] = "a takeover run is in progress"
            elif not _record.marked(record) and generation != order.get("generation"):
                out["refused"] = f"the record is generation {generation}, the order {order.get('generation')}"
            if out["refused"]:
                return out
            specs = _addresses.parse_specs([{"ip": e["ip"], "interfaces": e["interfaces"]} for e in order["ips"]])
            tickles = {e["ip"]: e.get("tickles") for e in order["ips"] if e.get("tickles")}
            for act in take(cfg, nl, record, specs, tickles):
                if act.error:
                    out["errors"].append(act.message)
                    log.error("Fast takeover failed: %s", act.message)
                else:
                    if act.kind in ("take", "move", "redundant_take"):
                        out["taken"].append(act.pip.cidr)
                    log.warning("Fast takeover (order %s): %s", order.get("id"), act.message)
    except _locking.LockTimeout:
        out["refused"] = "interface lock busy (a takeover run is changing this node)"
    except (_addresses.SpecError, KeyError, TypeError) as exc:
        out["refused"] = f"malformed order: {exc}"
    if out["refused"]:
        log.warning("Fast takeover order %s refused: %s", order.get("id"), out["refused"])
    return out


def connections(cfg: Config, record: dict[str, Any] | None, limit: int = 2000) -> dict[str, list[list[Any]]]:
    """The established TCP connections to the public IPs held here: IP -> [[port, client, client port]]
    (CTDB's tcp list, sent to the listener for whoever takes an IP next)."""
    public = {e["ip"].split("/", 1)[0]: e["ip"] for e in (record or {}).get("public_ips") or []}
    out: dict[str, list[list[Any]]] = {}
    for local, lport, remote, rport in _netlink.tcp_connections(list(public)):
        conns = out.setdefault(public[local], [])
        if len(conns) < limit:
            conns.append([lport, remote, rport])
    return out


def announce(cfg: Config, nl: Any, record: dict[str, Any] | None, ips: list[str] | None = None) -> list[str]:
    """Gratuitous ARP / unsolicited NA for the public IPs held here (IPS: only those); one round each."""
    public = {e["ip"].split("/", 1)[0]: e["ip"] for e in (record or {}).get("public_ips") or []}
    wanted = {ip.split("/", 1)[0] for ip in ips} if ips is not None else set(public)
    done = []
    for iface in nl.interfaces().values():
        for address, _prefixlen, version in iface.addresses:
            if address in public and address in wanted:
                try:
                    _announce.announce(iface.name, iface.index, iface.mac, address, version, 1, 0)
                    done.append(public[address])
                except OSError as exc:
                    log.warning("Announcing %s on %s failed: %s", public[address], iface.name, exc)
    return sorted(done)


def release_foreign(cfg: Config, nl: Any, record: dict[str, Any], ips: list[str],
                    spare: Callable[[], set[str]] = set) -> list[str]:
    """Release IPs held here that the record (re-read under the lock) gives elsewhere - or, under a takeover
    run's mark, that this run does not give this node (its ``run_after``). SPARE: addresses a fast path took
    here meanwhile (asked under the lock, so an order carried out after the check is not undone)."""
    done: list[str] = []
    try:
        with _locking.InterfaceLock(cfg.lock_path, timeout=LOCK_TIMEOUT):
            current = _record.read(cfg.record_path)
            if current is None or current.get("generation") != record.get("generation"):
                return done  # a run has just changed the record: it decides
            owner = {e["ip"]: e.get("node") for e in current["public_ips"]}
            if _record.in_progress(current):
                if "run_after" not in current or _record.mark_key(current) != _record.mark_key(record):
                    return done  # another run's mark, or one without this node's plan: that run decides
                after = {ip.split("/", 1)[0] for ip in current["run_after"]}
                wanted = [ip for ip in ips if ip in owner and ip.split("/", 1)[0] not in after]
            elif _record.in_progress(record):
                return done  # the run that marked the check's record is over: the next check sees its record
            else:
                wanted = [ip for ip in ips if ip in owner and owner[ip] != cfg.node]
            busy = {ip.split("/", 1)[0] for ip in spare()}
            specs = specs_of(current, [ip for ip in wanted if ip.split("/", 1)[0] not in busy])
            for act in _host.apply_actions(nl, _host.plan_release(nl.interfaces(), specs), settings(cfg)):
                if act.error:
                    log.error("Removing a public IP we should not serve failed: %s", act.message)
                elif act.kind == "release":
                    done.append(act.pip.cidr)
                    log.warning("We are still serving a public IP '%s' that we should not be serving. Removing it: "
                                "%s", act.pip.cidr, act.message)
    except _locking.LockTimeout:
        log.info("Foreign IPs: interface lock busy, the release waits for the next check")
    return done


def release_all(cfg: Config, nl: Any, record: dict[str, Any] | None, why: str = "Lost the cluster") -> list[str]:
    """Lost the cluster (or banned, or leaving): release every public IP of the record held here, at once - no
    hooks, and no waiting on a takeover run's interface lock (the release must finish within the lease's release
    bound). WHY starts each log line."""
    if not record:
        return []
    public = {e["ip"].split("/", 1)[0]: e for e in record.get("public_ips") or []}
    ifaces = nl.interfaces()
    held = sorted({public[a]["ip"] for i in ifaces.values() for a, _p, _v in i.addresses if a in public})
    if not held:
        return []
    conf = settings(cfg)
    conf.hook_dir = None
    done = []
    for act in _host.apply_actions(nl, _host.plan_release(ifaces, specs_of(record, held)), conf):
        if act.error:
            log.error("%s: %s", why, act.message)
        elif act.kind == "release":
            done.append(act.pip.cidr)
            log.warning("%s: %s", why, act.message)
    return done


def stranded(record: dict[str, Any] | None, ifaces: dict[str, Any]) -> list[str]:
    """Public IPs of the record held on an interface that cannot carry traffic."""
    public = {e["ip"].split("/", 1)[0]: e["ip"] for e in (record or {}).get("public_ips") or []}
    return sorted(public[address] for iface in ifaces.values() if not iface.usable
                  for address, _prefixlen, _version in iface.addresses if address in public)


def release_stranded(cfg: Config, nl: Any, record: dict[str, Any]) -> list[str]:
    """Release (or move, when ours and another allowed interface is usable) public IPs on dead links."""
    done: list[str] = []
    try:
        with _locking.InterfaceLock(cfg.lock_path, timeout=LOCK_TIMEOUT):
            ifaces = nl.interfaces()  # again, under the lock
            ips = stranded(record, ifaces)
            if not ips:
                return done
            owner = {e["ip"]: e.get("node") for e in record["public_ips"]}
            specs = specs_of(record, ips)
            ours = [p for p in specs if owner[p.cidr] == cfg.node]
            moves = [a for a in _host.plan_take(ifaces, ours, record, settings(cfg), public_addresses(record))
                     if a.kind == "move"]
            moved = {a.pip.cidr for a in moves}
            releases = _host.plan_release(ifaces, [p for p in specs if p.cidr not in moved])
            for act in _host.apply_actions(nl, moves + releases, settings(cfg)):
                if act.error:
                    log.error("Link loss: %s", act.message)
                else:
                    done.append(act.pip.cidr)
                    log.warning("Link loss: %s", act.message)
    except _locking.LockTimeout:
        log.info("Link loss: interface lock busy, the release waits for the next check")
    return done
