"""A 3-member etcd for the lab's HA listeners: Debian's etcd-server, one member per lab host, started in that
host's namespace like its sshd (and killed with it). Fast timings for a LAN: a 100 ms heartbeat and a 500 ms
election timeout, so that etcd's shortest lease is 1 s and a member's death costs well under a second."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from .base import LabError, run

CLIENT_PORT, PEER_PORT = 2379, 2380
ETCD, ETCDCTL = "/usr/bin/etcd", "/usr/bin/etcdctl"


def endpoints(members: list[dict[str, Any]]) -> list[str]:
    return [f"http://{m['address']}:{CLIENT_PORT}" for m in members]


def start_member(member: dict[str, Any], members: list[dict[str, Any]], state: str = "new") -> int:
    """Start MEMBER ({name, netns, address, dir}) of the cluster MEMBERS; returns its pid."""
    if not Path(ETCD).exists():
        raise LabError("etcd is not installed: apt-get install etcd-server (make deps does)")
    d = Path(member["dir"])
    d.mkdir(parents=True, exist_ok=True)
    cluster = ",".join(f"{m['name']}=http://{m['address']}:{PEER_PORT}" for m in members)
    log = open(d / "etcd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["ip", "netns", "exec", member["netns"], ETCD, "--name", member["name"], "--data-dir", str(d / "etcd"),
         "--listen-client-urls", f"http://{member['address']}:{CLIENT_PORT}",
         "--advertise-client-urls", f"http://{member['address']}:{CLIENT_PORT}",
         "--listen-peer-urls", f"http://{member['address']}:{PEER_PORT}",
         "--initial-advertise-peer-urls", f"http://{member['address']}:{PEER_PORT}",
         "--initial-cluster", cluster, "--initial-cluster-state", state, "--initial-cluster-token", "pubip-lab",
         "--heartbeat-interval", "100", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    member["etcd_pid"] = proc.pid
    return proc.pid


def start_cluster(members: list[dict[str, Any]], timeout: float = 20.0) -> None:
    for m in members:
        start_member(m, members)
    wait_healthy(members, timeout)


def wait_healthy(members: list[dict[str, Any]], timeout: float = 20.0) -> None:
    """Until the cluster answers a linearizable read through the first member."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        proc = run(["ip", "netns", "exec", members[0]["netns"], ETCDCTL, "--endpoints", ",".join(endpoints(members)),
                    "--command-timeout", "1s", "endpoint", "health", "--cluster"], check=False)
        last = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"the lab's etcd is not healthy after {timeout:.0f}s: {last.strip()[-500:]}")
