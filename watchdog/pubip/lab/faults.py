"""Faults the lab injects: a host dies, is cut off (links down, or a partition that keeps carrier), boots again,
restarts its network, loses its sshd."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from .base import CONTROLLER_ADDR, LabError, ha_hosts, host_entry, ip_batch, kill_netns_processes, run, save
from .build import SSHD, wait_pidfile
from .observe import kernel_addresses, public_held, wait_listener_idle


def bridge_ports(info: dict[str, Any], h: dict[str, Any]) -> list[str]:
    if h.get("ports"):  # an HA lab's listener or etcd host
        return list(h["ports"])
    i = h["pnn"] + 1
    return [f"h{i}e{idx}" for idx in range(len(h["interfaces"]))]


def cut_host(info: dict[str, Any], host: str) -> None:
    """A host dies: every process in its namespace stops and its links lose carrier."""
    h = host_entry(info, host)
    kill_netns_processes(h["netns"])
    set_host_links(info, host, up=False)
    if h.get("ports"):
        h["dead"] = True


def set_host_links(info: dict[str, Any], host: str, up: bool) -> None:
    """Cut a host off (its links lose carrier, its processes keep running) or plug it back in."""
    ip_batch(info["bridge_netns"], [f"link set {port} {'up' if up else 'down'}"
                                    for port in bridge_ports(info, host_entry(info, host))])


def revive_host(info: dict[str, Any], host: str) -> int:
    """The host boots again: no public IPs, links up, sshd started. Returns sshd's pid. An HA lab's listener or
    etcd host: links up, its etcd member and its listener started (returns the listener's pid, or 0)."""
    h = host_entry(info, host)
    if h.get("ports"):
        from . import etcd
        from .services import start_listener

        set_host_links(info, host, up=True)
        h.pop("dead", None)
        if any(m["name"] == host for m in info.get("etcd", [])):
            etcd.start_member(h, info["etcd"], state="existing")
        return start_listener(info, host) if any(c["name"] == host for c in info.get("controllers", [])) else 0
    public = set(info["public_ips"])
    lines = [f"addr del {ip} dev {ifname}" for ifname, ips in kernel_addresses(h["netns"]).items()
             for ip in ips if ip in public]
    if lines:  # -force: deleting a primary may already have taken its secondaries
        run(["ip", "-force", "-n", h["netns"], "-batch", "-"], input="\n".join(lines) + "\n", check=False)
    set_host_links(info, host, up=True)
    return start_sshd(info, host)


def restart_network(info: dict[str, Any], host: str, timeout: float = 60.0) -> tuple[list[str], float]:
    """The seed's `networking restart` on HOST: flush eth0, put the host's own address back; then wait
    until its public IPs are back. Returns (the IPs, seconds from the flush until all were back)."""
    h = host_entry(info, host)
    before = public_held(info, host)
    if not before:
        raise LabError(f"{host} holds no public IP: nothing to lose")
    t0 = time.monotonic()
    ip_batch(h["netns"], ["addr flush dev eth0", f"addr add {h['address']}/24 dev eth0"])
    while time.monotonic() - t0 < timeout:
        if public_held(info, host) == before:
            return before, time.monotonic() - t0
        time.sleep(0.005)
    raise LabError(f"{host}'s public IPs {', '.join(before)} were not back within {timeout:.0f}s")


def kill_host(info: dict[str, Any], host: str, timeout: float = 60.0) -> tuple[list[str], float]:
    """HOST dies (cut_host) once the listener is idle; then wait until every public IP it held is held
    by another host. Returns (the IPs, seconds from the death until the survivors held them all)."""
    wait_listener_idle(info, timeout)
    lost = public_held(info, host)
    if not lost:
        raise LabError(f"{host} holds no public IP: nothing to move")
    t0 = time.monotonic()
    cut_host(info, host)
    others = [h["name"] for h in info["hosts"] if h["name"] != host]
    while time.monotonic() - t0 < timeout:
        if set(lost) <= {ip for name in others for ip in public_held(info, name)}:
            return lost, time.monotonic() - t0
        time.sleep(0.005)
    raise LabError(f"{host}'s public IPs {', '.join(lost)} were not held by a survivor within {timeout:.0f}s")


def _addresses_of(info: dict[str, Any], member: str) -> list[str]:
    if member == "listener":
        return [CONTROLLER_ADDR]
    return [host_entry(info, member)["address"]]  # all cluster traffic (ssh, heartbeats) goes over eth0


def _netns_of(info: dict[str, Any], member: str) -> str:
    return str(info["controller"]["netns"] if member == "listener" else host_entry(info, member)["netns"])


def partition(info: dict[str, Any], *sides: list[str]) -> None:
    """Split the lab into SIDES (host names, and "listener" for the controller) that cannot reach each other,
    while every link keeps its carrier: blackhole routes in both directions, as a broken switch or firewall
    would. Members left out of every side stay connected to all."""
    for i, side in enumerate(sides):
        others = [m for j, other in enumerate(sides) if j != i for m in other]
        for member in side:
            lines = [f"route add blackhole {addr}/32" for other in others for addr in _addresses_of(info, other)]
            if lines:
                ip_batch(_netns_of(info, member), lines)


def heal(info: dict[str, Any]) -> None:
    """Remove every partition: all blackhole routes in the lab's hosts and controller."""
    for netns in dict.fromkeys([info["controller"]["netns"], *(h["netns"] for h in [*info["hosts"], *ha_hosts(info)])]):
        out = run(["ip", "-n", netns, "-j", "route", "show", "type", "blackhole"], check=False).stdout
        lines = [f"route del blackhole {r['dst']}" for r in json.loads(out or "[]") if r.get("dst")]
        if lines:
            ip_batch(netns, lines)


def stop_sshd(info: dict[str, Any], host: str) -> int:
    """Every sshd process of HOST stops (its other processes, the watchdog too, go on). Returns how many."""
    h = host_entry(info, host)
    pids = [int(p) for p in run(["ip", "netns", "pids", h["netns"]], check=False).stdout.split()]
    mine = []
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
                mine.append(pid)
        except OSError:
            pass
    for pid in mine:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    h["sshd_pid"] = None
    save(info)
    return len(mine)


def start_sshd(info: dict[str, Any], host: str) -> int:
    """Start HOST's sshd again; returns its pid."""
    h = host_entry(info, host)
    hdir = Path(h["dir"])
    (hdir / "sshd.pid").unlink(missing_ok=True)
    run(["ip", "netns", "exec", h["netns"], SSHD, "-f", str(Path(info["dir"]) / "sshd_config"),
         "-o", f"ListenAddress={h['address']}", "-o", f"HostKey={hdir / 'ssh_host_ed25519_key'}",
         "-o", f"PidFile={hdir / 'sshd.pid'}", "-E", str(hdir / "sshd.log")])
    h["sshd_pid"] = wait_pidfile(hdir / "sshd.pid")
    save(info)
    return int(h["sshd_pid"])
