"""One watchdog check: the kernel against the assignment record (CTDB's verify_local_ip_allocation).

Pure: the record and an interface snapshot in, findings out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MISSING = "missing"  # assigned here, not held
FOREIGN = "foreign"  # held here, assigned to another node (or to none)
UNASSIGNED = "unassigned"  # assigned to no node, and this healthy node could serve it
LINK = "link"  # an interface carrying or allowed to carry public IPs changed link state
RULES = (MISSING, FOREIGN, UNASSIGNED, LINK)


@dataclass
class Finding:
    rule: str
    ip: str
    message: str
    interface: str | None = None


@dataclass
class Result:
    findings: list[Finding] = field(default_factory=list)
    skipped: str | None = None
    links: dict[str, bool] = field(default_factory=dict)
    fast_retake: list[str] = field(default_factory=list)  # missing IPs with a usable interface here


def record_key(record: dict[str, Any] | None) -> tuple[Any, ...]:
    if not record:
        return (None,)
    return (record.get("generation"), record.get("run_started"), record.get("run_finished"))


def check(record: dict[str, Any] | None, record_again: dict[str, Any] | None, ifaces: dict[str, Any], node: str,
          previous_links: dict[str, bool] | None, in_progress: bool | None = None) -> Result:
    """ifaces: name -> object with .usable, .admin_up and .addresses [(address, prefixlen, version)].
    IN_PROGRESS: whether a takeover run is changing this host - the record's mark, less one past its deadline
    (the caller asks record.in_progress); None: the mark alone."""
    result = Result()
    if not record or not record.get("public_ips"):
        result.skipped = "no assignment record yet"
        return result
    if in_progress is None:
        in_progress = float(record.get("run_started") or 0) > float(record.get("run_finished") or 0)
    if record_key(record) != record_key(record_again):
        result.skipped = "assignment record changed while reading"
        return result
    if in_progress:
        result.skipped = "takeover run in progress"
        # What the run keeps here (record.mark's run_keep) is nobody else's meanwhile: retaken if it vanished.
        result.fast_retake = _kept_missing(record, ifaces)
        # What the run does not give this node is foreign now: the run never takes it here, and a fast takeover
        # order during the run may give it to another node (the caller spares what it took on such an order).
        result.findings = _not_given_by_run(record, ifaces)
        return result

    held: dict[str, str] = {}
    for name, iface in ifaces.items():
        for address, _prefixlen, _version in iface.addresses:
            held[address] = name
    watched = sorted({i for e in record["public_ips"] for i in e.get("interfaces") or [] if i in ifaces})
    result.links = {name: bool(ifaces[name].usable) for name in watched}
    me = (record.get("nodes") or {}).get(node) or {}
    healthy = me.get("state", "enabled") == "enabled"

    for entry in record["public_ips"]:
        ip = entry["ip"]
        address = ip.split("/", 1)[0]
        owner = entry.get("node")
        usable = [i for i in entry.get("interfaces") or [] if i in ifaces and ifaces[i].usable]
        on = held.get(address)
        if owner == node and on is None:
            result.findings.append(Finding(MISSING, ip, f"Public address '{ip}' is missing and we should serve "
                                                         f"this ip"))
            if usable:
                result.fast_retake.append(ip)
        elif owner != node and on is not None:
            whose = f"assigned to {owner}" if owner else "assigned to no node"
            result.findings.append(Finding(FOREIGN, ip, f"We are still serving a public IP '{ip}' that we should "
                                                         f"not be serving ({whose}), on interface {on}", on))
        elif owner is None and on is None and healthy and usable:
            result.findings.append(Finding(UNASSIGNED, ip, f"Public address '{ip}' is unassigned and we could "
                                                            f"serve it"))
    if previous_links is not None:
        for name, up in result.links.items():
            if name in previous_links and previous_links[name] != up:
                result.findings.append(Finding(LINK, "-", f"Interface {name} link went {'up' if up else 'down'}",
                                               name))
    return result


def _not_given_by_run(record: dict[str, Any], ifaces: dict[str, Any]) -> list[Finding]:
    if "run_after" not in record:
        return []  # a mark without the run's plan for this node: the run decides alone
    after = {ip.split("/", 1)[0] for ip in record["run_after"]}
    held = {address: name for name, iface in ifaces.items() for address, _p, _v in iface.addresses}
    run = record.get("run_id") or "?"
    return [Finding(FOREIGN, e["ip"], f"We are still serving a public IP '{e['ip']}' that we should not be serving "
                                      f"(takeover run {run} does not give it to us), on interface {held[address]}",
                    held[address])
            for e in record["public_ips"] for address in [e["ip"].split("/", 1)[0]]
            if address in held and address not in after]


def _kept_missing(record: dict[str, Any], ifaces: dict[str, Any]) -> list[str]:
    held = {address for iface in ifaces.values() for address, _p, _v in iface.addresses}
    interfaces = {e["ip"]: e.get("interfaces") or [] for e in record["public_ips"]}
    return [ip for ip in record.get("run_keep") or [] if ip in interfaces and ip.split("/", 1)[0] not in held
            and any(i in ifaces and ifaces[i].usable for i in interfaces[ip])]
