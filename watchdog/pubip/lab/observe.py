"""What the lab sees: public IPs in each host's kernel, ARP answers, the listener's status."""

from __future__ import annotations

import http.client
import json
import socket
import time
from pathlib import Path
from typing import Any

from .. import _collection, protocol
from .base import CONTROLLER_ADDR, LISTENER_PORT, LabError, alive, connect_in, host_entry, load, run, socket_in

_KNOCK = """import socket, sys, time
for ip in sys.argv[1:]:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"pubip", (ip, 9))
        except OSError:
            pass
time.sleep(0.5)
"""


def arp_answers(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Ask, from the controller namespace, who answers ARP / neighbour solicitation for each public IP:
    public IP -> {mac, holder} (holder: the lab host whose interface has that MAC; None: no answer)."""
    ctl = info["controller"]["netns"]
    ips = [ip.split("/", 1)[0] for ip in info["public_ips"]]
    for ip in ips:  # forget what was learnt before: only a fresh answer counts
        run(["ip", "-n", ctl, "neigh", "flush", "to", ip], check=False)
    run(["ip", "netns", "exec", ctl, info["python"], "-c", _KNOCK, *ips])
    macs = {}
    for h in info["hosts"]:
        for link in json.loads(run(["ip", "-n", h["netns"], "-j", "link", "show"]).stdout or "[]"):
            if link.get("address") and link.get("ifname") != "lo":
                macs[link["address"]] = h["name"]
    answers = {}
    for cidr, ip in zip(info["public_ips"], ips, strict=True):
        entries = json.loads(run(["ip", "-n", ctl, "-j", "neigh", "show", "to", ip]).stdout or "[]")
        mac = next((e.get("lladdr") for e in entries if e.get("lladdr") and
                    not set(e.get("state") or []) & {"FAILED", "INCOMPLETE"}), None)
        answers[cidr] = {"mac": mac, "holder": macs.get(mac) if mac else None}
    return answers


def public_by_carrier(info: dict[str, Any], netns: str, check: bool = True) -> tuple[list[str], list[str]]:
    """The lab's public IPs in NETNS's kernel: (on a link with carrier, on a link without). Read with a
    netlink socket made in the namespace (tests poll this every 20 ms on every host)."""
    rtdump = _collection.module_utils("rtdump")
    try:
        links, addrs = rtdump.read_links_and_addresses(
            socket_in(netns, socket.AF_NETLINK, socket.SOCK_RAW, rtdump.NETLINK_ROUTE))
    except OSError as exc:
        if check:
            raise LabError(f"cannot read the addresses of namespace {netns}: {exc}") from exc
        return [], []
    carrier = {index for index, _name, flags, _mac in links if flags & rtdump.IFF_LOWER_UP}
    public = set(info["public_ips"])
    held: list[str] = []
    stranded: list[str] = []
    for index, _family, address, prefixlen, _scope in addrs:
        ip = f"{address}/{prefixlen}"
        if ip in public:
            (held if index in carrier else stranded).append(ip)
    return sorted(held), sorted(stranded)


def public_held(info: dict[str, Any], host: str) -> list[str]:
    """Public IPs HOST holds on a link with carrier, read from its kernel."""
    return public_by_carrier(info, host_entry(info, host)["netns"])[0]


def leading_controller(info: dict[str, Any]) -> dict[str, Any]:
    """The controller whose listener leads (HA), else the first that answers, else the first."""
    controllers = [c for c in info.get("controllers", []) if c.get("ports")]
    if not controllers:
        return {"name": "controller", "netns": info["controller"]["netns"], "address": CONTROLLER_ADDR}
    answered = []
    for c in controllers:
        st = status_of(info, c["netns"], c["address"], timeout=1)
        if st is not None and st.get("role") == "leader":
            return c
        if st is not None:
            answered.append(c)
    return (answered or controllers)[0]


def listener_status(info: dict[str, Any]) -> dict[str, Any] | None:
    """The lab listener's /v1/status (HA: the leader's), asked from its host's namespace (None: no answer)."""
    c = leading_controller(info)
    return status_of(info, c["netns"], c["address"])


def status_of(info: dict[str, Any], netns: str, address: str, timeout: float = 2) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(address, LISTENER_PORT, timeout=timeout)
    try:
        headers = protocol.read_headers(json.loads((Path(info["dir"]) / "listener-secrets.json").read_text()),
                                        protocol.STATUS_PATH)
        conn.sock = connect_in(netns, (address, LISTENER_PORT), timeout)
        conn.request("GET", protocol.STATUS_PATH, headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        return json.loads(body) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def wait_listener_idle(info: dict[str, Any], timeout: float = 60.0) -> None:
    """Until the listener has no takeover run running or pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = listener_status(info)
        if st and st["running"] is None and st["pending_requests"] == 0:
            return
        time.sleep(0.2)
    raise LabError(f"the listener of lab {info['name']} was still busy after {timeout:.0f}s")


def await_first_run(info: dict[str, Any], timeout: float = 120.0) -> dict[str, Any] | None:
    """The listener's first successful takeover run (its status row), once it has finished; None if there
    was none within TIMEOUT (the listener retries a failed run meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = listener_status(info)
        done = [r for r in (st or {}).get("runs") or [] if r.get("success")]
        if done:
            return done[-1]
        time.sleep(0.1)
    return None


def kernel_addresses(netns: str) -> dict[str, list[str]]:
    """Addresses per interface, read from the namespace's kernel."""
    out = run(["ip", "-n", netns, "-j", "addr", "show"]).stdout
    result: dict[str, list[str]] = {}
    for link in json.loads(out or "[]"):
        result[link["ifname"]] = [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])
                                  if a.get("scope") != "link" and a["family"] in ("inet", "inet6")]
    return result


def status(name: str) -> list[dict[str, Any]]:
    """Every host's public IPs from its kernel: on a link with carrier (public_ips: what clients reach)
    and on a link without (stranded)."""
    info = load(name)
    rows = []
    for h in info["hosts"]:
        held, stranded = public_by_carrier(info, h["netns"], check=False)
        rows.append({"name": h["name"], "pnn": h["pnn"], "netns": h["netns"], "address": h["address"],
                     "sshd": alive(h["sshd_pid"]), "public_ips": held, "stranded": stranded})
    return rows
