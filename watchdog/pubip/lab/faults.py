"""Faults the lab injects: a host dies, is cut off, boots again, restarts its network."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .base import LabError, host_entry, ip_batch, kill_netns_processes, run, save
from .build import SSHD, wait_pidfile
from .observe import kernel_addresses, public_held, wait_listener_idle


def bridge_ports(info: dict[str, Any], h: dict[str, Any]) -> list[str]:
    i = h["pnn"] + 1
    return [f"h{i}e{idx}" for idx in range(len(h["interfaces"]))]


def cut_host(info: dict[str, Any], host: str) -> None:
    """A host dies: every process in its namespace stops and its links lose carrier."""
    h = host_entry(info, host)
    kill_netns_processes(h["netns"])
    set_host_links(info, host, up=False)


def set_host_links(info: dict[str, Any], host: str, up: bool) -> None:
    """Cut a host off (its links lose carrier, its processes keep running) or plug it back in."""
    ip_batch(info["bridge_netns"], [f"link set {port} {'up' if up else 'down'}"
                                    for port in bridge_ports(info, host_entry(info, host))])


def revive_host(info: dict[str, Any], host: str) -> int:
    """The host boots again: no public IPs, links up, sshd started. Returns sshd's pid."""
    h = host_entry(info, host)
    public = set(info["public_ips"])
    lines = [f"addr del {ip} dev {ifname}" for ifname, ips in kernel_addresses(h["netns"]).items()
             for ip in ips if ip in public]
    if lines:  # -force: deleting a primary may already have taken its secondaries
        run(["ip", "-force", "-n", h["netns"], "-batch", "-"], input="\n".join(lines) + "\n", check=False)
    set_host_links(info, host, up=True)
    hdir = Path(h["dir"])
    (hdir / "sshd.pid").unlink(missing_ok=True)
    run(["ip", "netns", "exec", h["netns"], SSHD, "-f", str(Path(info["dir"]) / "sshd_config"),
         "-o", f"ListenAddress={h['address']}", "-o", f"HostKey={hdir / 'ssh_host_ed25519_key'}",
         "-o", f"PidFile={hdir / 'sshd.pid'}", "-E", str(hdir / "sshd.log")])
    h["sshd_pid"] = wait_pidfile(hdir / "sshd.pid")
    save(info)
    return int(h["sshd_pid"])


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
