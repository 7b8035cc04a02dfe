# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Take, release, move and report public IPs on this host.

The host side of CTDB's TAKEOVER_IP / RELEASE_IP controls and its
10.interface event script, made idempotent. Planning (what to do) is pure and
works on a snapshot of the interfaces; applying does the netlink work under
the interface lock. The public_ip module and the watchdog's fast path both
call this code.
"""

from __future__ import annotations

import time

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import announce as _announce
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import hooks as _hooks
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import netlink as _netlink
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import record as _record
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import tickle as _tickle
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.addresses import SpecError, parse_specs


class Settings(object):
    """Per-host paths and knobs (lab hosts share one filesystem: all configurable)."""

    def __init__(self, node=None, hook_dir=None, hook_timeout=30.0, announce_count=3, announce_interval=0.05,
                 record_path="/var/lib/pubip/record.json", lock_path="/run/pubip/interfaces.lock",
                 lock_timeout=30.0, adopt=False, kill_connections=True, tickles=None, hook_sandbox=False):
        self.node = node
        self.hook_dir = hook_dir
        self.hook_timeout = hook_timeout
        self.hook_sandbox = hook_sandbox  # True outside the watchdog's unit: hooks.run_hooks(sandboxed=True)
        self.announce_count = announce_count
        self.announce_interval = announce_interval
        self.record_path = record_path
        self.lock_path = lock_path
        self.lock_timeout = lock_timeout
        self.adopt = adopt
        self.kill_connections = kill_connections
        # address -> [[port, client address, client port]]: the connections the IP's last holder had; whoever
        # takes the IP tickles them (tickle.py)
        self.tickles = tickles or {}


class Action(object):
    """One planned step for one public IP."""

    __slots__ = ("kind", "pip", "iface", "old_iface", "bring_up", "prefixlen", "message", "error")

    def __init__(self, kind, pip, iface=None, old_iface=None, bring_up=False, prefixlen=None, message="",
                 error=None):
        self.kind = kind  # take | move | release | redundant_take | redundant_release | fail
        self.pip = pip
        self.iface = iface
        self.old_iface = old_iface
        self.bring_up = bring_up
        self.prefixlen = prefixlen
        self.message = message
        self.error = error

    @property
    def changes(self):
        return self.kind in ("take", "move", "release")

    def as_dict(self):
        out = {"ip": self.pip.cidr, "action": self.kind, "message": self.message}
        if self.iface is not None:
            out["interface"] = self.iface.name
        if self.old_iface is not None:
            out["from_interface"] = self.old_iface.name
        if self.error:
            out["error"] = self.error
        return out


def held_on(ifaces, address):
    """(Interface, prefixlen) holding ADDRESS, or (None, None)."""
    for iface in ifaces.values():
        for addr, prefixlen, _version in iface.addresses:
            if addr == address:
                return iface, prefixlen
    return None, None


def public_count(iface, public_addresses):
    return sum(1 for addr, _p, _v in iface.addresses if addr in public_addresses)


def validate_interfaces(ifaces, specs):
    """Fail on an IP none of whose interfaces exists; name the culprit."""
    for pip in specs:
        if not any(name in ifaces for name in pip.interfaces):
            missing = ", ".join(pip.interfaces)
            if len(pip.interfaces) == 1:
                raise SpecError("public IP %s: interface %s does not exist on this host" % (pip.cidr, missing))
            raise SpecError("public IP %s is allowed on no existing interface (%s)" % (pip.cidr, missing))


def best_interface(ifaces, pip, counts, exclude=None):
    """CTDB's choice: link up first, then the fewest public IPs; admin-down links may be brought up."""
    ranked = []
    for pos, name in enumerate(pip.interfaces):
        iface = ifaces.get(name)
        if iface is None or iface is exclude:
            continue
        if iface.usable:
            ranked.append((0, counts.get(name, 0), pos, iface, False))
        elif not iface.admin_up:
            ranked.append((1, counts.get(name, 0), pos, iface, True))
    if not ranked:
        return None, False
    ranked.sort(key=lambda r: r[:3])
    return ranked[0][3], ranked[0][4]


def conflict_for(record, node, pip):
    """The other node the record assigns PIP to, if it is not this one."""
    assigned = _record.assigned_node(record, pip.cidr)
    if assigned is not None and node is not None and assigned != node:
        return assigned
    return None


def plan_take(ifaces, specs, record, settings, public_addresses):
    actions = []
    counts = {name: public_count(iface, public_addresses) for name, iface in ifaces.items()}
    for pip in specs:
        iface, _prefixlen = held_on(ifaces, pip.address)
        if iface is not None:
            other = conflict_for(record, settings.node, pip)
            if other and not settings.adopt:
                actions.append(Action("fail", pip, iface, message=(
                    "Conflict: IP %s is held on interface %s of %s, but the assignment record gives it to %s "
                    "(adopt: true takes it over)" % (pip.cidr, iface.name, settings.node, other)), error="conflict"))
                continue
            if iface.usable:
                actions.append(Action("redundant_take", pip, iface, message=(
                    "Redundant takeover of IP %s on interface %s (ip already held)" % (pip.cidr, iface.name))))
                continue
            target, bring_up = best_interface(ifaces, pip, counts, exclude=iface)
            if target is None:
                actions.append(Action("fail", pip, iface, message=(
                    "IP %s is held on interface %s whose link is down, and no other allowed interface is usable"
                    % (pip.cidr, iface.name)), error="no usable interface"))
                continue
            counts[target.name] = counts.get(target.name, 0) + 1
            counts[iface.name] = counts.get(iface.name, 0) - 1
            actions.append(Action("move", pip, target, old_iface=iface, bring_up=bring_up, message=(
                "Update of IP %s from interface %s to %s (link down)" % (pip.cidr, iface.name, target.name))))
            continue
        target, bring_up = best_interface(ifaces, pip, counts)
        if target is None:
            states = ", ".join("%s: %s" % (n, "no carrier" if n in ifaces else "missing") for n in pip.interfaces)
            actions.append(Action("fail", pip, message="No usable interface for IP %s (%s)" % (pip.cidr, states),
                                  error="no usable interface"))
            continue
        counts[target.name] = counts.get(target.name, 0) + 1
        actions.append(Action("take", pip, target, bring_up=bring_up, message=(
            "Takeover of IP %s on interface %s" % (pip.cidr, target.name))))
    return actions


def plan_release(ifaces, specs):
    actions = []
    for pip in specs:
        iface, prefixlen = held_on(ifaces, pip.address)
        if iface is None:
            actions.append(Action("redundant_release", pip, message=(
                "Redundant release of IP %s (ip not held)" % pip.cidr)))
        else:
            actions.append(Action("release", pip, iface, prefixlen=prefixlen, message=(
                "Release of IP %s on interface %s" % (pip.cidr, iface.name))))
    return actions


def unkept(ifaces, record, keep, specs):
    """Public IPs of RECORD held here that are neither in KEEP (what this host holds after the run) nor
    already in SPECS: a takeover run releases them too, since a fast retake or order may have added them
    after the run gathered this host."""
    keep = {k.split("/", 1)[0] for k in keep}
    listed = {pip.address for pip in specs}
    entries = [e["ip"] for e in (record or {}).get("public_ips") or []]
    extra = [ip for ip in entries if ip.split("/", 1)[0] not in keep | listed
             and held_on(ifaces, ip.split("/", 1)[0])[0] is not None]
    return parse_specs(extra, need_interfaces=False)


def apply_actions(nl, actions, settings):
    """Carry out planned actions; one IP's failure does not stop the others.

    Releases first; then every taken IP is added before any is announced, and the
    announcement rounds go over all of them, so the last IP is not held back by
    the first one's repeats; hooks run last.
    """
    for act in actions:
        if act.changes and act.kind == "release":
            _guard(act, _release, nl, settings)
    placed = [act for act in actions if act.changes and act.kind != "release" and _guard(act, _place, nl, settings)]
    _announce_all(placed, settings)
    _tickle_all(placed, settings)
    for act in placed:
        _guard(act, _take_hooks, nl, settings)
    return actions


def _tickle_all(placed, settings):
    for act in placed:
        conns = settings.tickles.get(act.pip.address) or []
        if act.kind == "move" or not conns:
            continue  # a move between this host's interfaces keeps its connections
        try:
            sent = _tickle.send([(act.pip.address, c[0], c[1], c[2]) for c in conns])
            act.message += ", %d connection%s tickled" % (sent, "" if sent == 1 else "s")
        except (OSError, ValueError, TypeError, IndexError) as exc:
            act.message += " (tickle ACKs failed: %s)" % exc


def _guard(act, step, nl, settings):
    try:
        step(nl, act, settings)
        return True
    except _hooks.HookError as exc:
        act.error = "hook failed"
        act.message = "%s: %s (hook %s, stderr: %s)" % (act.message, exc, exc.hook, exc.detail)
    except (_netlink.NetlinkError, OSError) as exc:
        act.error = "netlink error"
        act.message = "%s: failed: %s" % (act.message, exc)
    return False


def _place(nl, act, settings):
    pip, iface = act.pip, act.iface
    if act.bring_up:
        nl.link_up(iface)
        act.message += " (link %s brought up)" % iface.name
    nl.add_address(iface, pip)
    if act.old_iface is not None:
        nl.delete_address(act.old_iface, pip.address, pip.prefixlen)


def _announce_all(placed, settings):
    sent = dict((id(act), 0) for act in placed)
    for round_ in range(settings.announce_count):
        if round_:
            time.sleep(settings.announce_interval)
        for act in placed:
            try:
                sent[id(act)] += _announce.announce(act.iface.name, act.iface.index, act.iface.mac,
                                                    act.pip.address, act.pip.version, 1, 0)
            except OSError as exc:  # the IP is held; a lost announcement is reported, not fatal
                act.message += " (announcement failed: %s)" % exc
    for act in placed:
        act.message += ", announced (%d packets)" % sent[id(act)]


def _take_hooks(nl, act, settings):
    pip, iface = act.pip, act.iface
    try:
        if act.old_iface is not None:
            _hooks.run_hooks(settings.hook_dir, "updateip",
                             [act.old_iface.name, iface.name, pip.address, pip.prefixlen], settings.hook_timeout,
                             settings.hook_sandbox)
        else:
            _hooks.run_hooks(settings.hook_dir, "takeip", [iface.name, pip.address, pip.prefixlen],
                             settings.hook_timeout, settings.hook_sandbox)
    except _hooks.HookError:
        if act.old_iface is None:
            nl.delete_address(iface, pip.address, pip.prefixlen)  # do not hold an IP whose services failed
        raise


def _release(nl, act, settings):
    pip, iface = act.pip, act.iface
    _hooks.run_hooks(settings.hook_dir, "releaseip", [iface.name, pip.address, act.prefixlen], settings.hook_timeout,
                     settings.hook_sandbox)
    killed = _netlink.kill_tcp(pip.address, pip.version) if settings.kill_connections else 0
    nl.delete_address(iface, pip.address, act.prefixlen)
    if settings.kill_connections:
        killed += _netlink.kill_tcp(pip.address, pip.version)  # any accepted just before the delete
    act.message += " (%d connections killed)" % killed


def report(ifaces, specs, record, settings):
    """What state=query returns: interfaces, held public IPs, conflicts, what this host can serve."""
    known = {pip.address: pip for pip in specs}
    for entry in (record or {}).get("public_ips", []):
        address = entry["ip"].split("/", 1)[0]
        if address not in known:
            known[address] = parse_specs([{"ip": entry["ip"], "interfaces": entry.get("interfaces") or []}],
                                         need_interfaces=False)[0]
    interfaces, held, conflicts = [], [], []
    for iface in sorted(ifaces.values(), key=lambda i: i.index):
        info = iface.as_dict()
        info["public_ips"] = sorted("%s/%d" % (a, p) for a, p, _v in iface.addresses if a in known)
        interfaces.append(info)
        for addr, prefixlen, _v in iface.addresses:
            if addr in known:
                cidr = "%s/%d" % (addr, prefixlen)
                held.append({"ip": cidr, "interface": iface.name, "link": info["link"]})
                other = conflict_for(record, settings.node, known[addr])
                if other:
                    conflicts.append({"ip": cidr, "interface": iface.name, "node": settings.node, "assigned": other})
    can_host = [pip.cidr for pip in specs if any(ifaces.get(n) is not None and (ifaces[n].usable or not
                                                                              ifaces[n].admin_up)
                                                 for n in pip.interfaces)]
    return {"interfaces": interfaces, "public_ips": held, "conflicts": conflicts, "can_host": can_host,
            "record": record, "time": time.time()}


def diff_lists(ifaces, actions, public_addresses):
    """Sorted before/after lists of the public IPs held, as 'ip@interface', for diff mode."""
    before = sorted("%s/%d@%s" % (a, p, i.name) for i in ifaces.values() for a, p, _v in i.addresses
                    if a in public_addresses)
    after = set(before)
    for act in actions:
        if not act.changes or act.error:
            continue
        if act.kind == "release":
            after.discard("%s/%d@%s" % (act.pip.address, act.prefixlen, act.iface.name))
            continue
        if act.old_iface is not None:
            after.discard("%s@%s" % (act.pip.cidr, act.old_iface.name))
        after.add("%s@%s" % (act.pip.cidr, act.iface.name))
    return before, sorted(after)
