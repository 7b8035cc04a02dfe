"""The lab's ground floor: names, paths, lab.json, commands in namespaces, processes. No lab is built here."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import PubipError

NETNS_PREFIX = "pubip-"


NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,15}$")


MAX_NODES = 250


MAX_VIPS = 250


HOST_NET = "192.0.2"


ETH1_NET = "203.0.113"


VIP_NET = "198.51.100"


VIP6_NET = "2001:db8:100::"


CONTROLLER_ADDR = f"{HOST_NET}.254"


LISTENER_PORT = 8750


MAX_LISTENERS = 3


SSHD = "/usr/sbin/sshd"


class LabError(PubipError):
    """A lab request that cannot be carried out; the message names the culprit."""


def lab_root() -> Path:
    return Path(os.environ.get("PUBIP_LAB_ROOT", "/run/pubip/labs"))


def lab_dir(name: str) -> Path:
    return lab_root() / name


def ns_name(lab: str, part: str) -> str:
    return f"{NETNS_PREFIX}{lab}-{part}"


def run(argv: list[str], *, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, input=input, text=True, capture_output=True, check=False)
    if check and proc.returncode != 0:
        raise LabError(f"command failed ({proc.returncode}): {' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def ip_batch(netns: str, lines: list[str]) -> None:
    run(["ip", "-n", netns, "-batch", "-"], input="\n".join(lines) + "\n")


def list_netns() -> list[str]:
    out = run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def save(info: dict[str, Any]) -> None:
    (Path(info["dir"]) / "lab.json").write_text(json.dumps(info, indent=2) + "\n")


def load(name: str) -> dict[str, Any]:
    path = lab_dir(name) / "lab.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise LabError(f"no lab {name!r}: {path} does not exist (pubip lab up --name {name} creates it)") from None


def existing_labs() -> list[str]:
    names = {p.name for p in lab_root().iterdir() if p.is_dir()} if lab_root().is_dir() else set()
    for ns in list_netns():
        if ns.startswith(NETNS_PREFIX):
            rest = ns[len(NETNS_PREFIX):]
            names.add(rest.rsplit("-", 1)[0])
    return sorted(names)


def kill_netns_processes(netns: str) -> None:
    pids = [int(p) for p in run(["ip", "netns", "pids", netns], check=False).stdout.split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 2.0
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if alive(p)]
            if pids:
                time.sleep(0.02)
        if not pids:
            return


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (our own child not yet reaped) counts as gone, but only once every thread has exited: a
    # killed process's leader turns zombie first, and its other threads may still hold its sockets open
    # (a listener's port answered for a moment after it was "gone", and a restart probed the dead one).
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:  # gone meanwhile
        return False
    for task in tasks:
        try:
            if (task / "stat").read_text().split(") ", 1)[1][0] not in "ZX":
                return True
        except (OSError, IndexError):  # that thread is gone meanwhile: ENOENT, or ESRCH while it is reaped
            continue
    return False


_CLONE_NEWNET = 0x40000000


def socket_in(netns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket made inside NETNS from this process, without starting one there (a Python or an `ip` in the
    namespace costs 0.1 s or 2 ms of CPU a call, and tests poll): a socket stays in the namespace it was made
    in, and setns(2) moves only the calling thread, so a short-lived thread enters the namespace, makes it,
    and ends."""
    made: dict[str, Any] = {}

    def make() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with open(f"/run/netns/{netns}", "rb") as ns:
                if libc.setns(ns.fileno(), _CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
            made["sock"] = socket.socket(family, kind, proto)
        except OSError as exc:
            made["error"] = exc

    thread = threading.Thread(target=make, name=f"netns {netns}")
    thread.start()
    thread.join()
    if "error" in made:
        raise made["error"]
    sock: socket.socket = made["sock"]
    return sock


def connect_in(netns: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection made inside NETNS from this process (socket_in)."""
    sock = socket_in(netns, socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def host_entry(info: dict[str, Any], host: str) -> dict[str, Any]:
    """A node's entry, or an HA lab's listener or etcd host's (controllers, extra_hosts)."""
    for h in [*info["hosts"], *ha_hosts(info)]:
        if h["name"] == host:
            return h
    raise LabError(f"lab {info['name']} has no host {host!r}")


def ha_hosts(info: dict[str, Any]) -> list[dict[str, Any]]:
    """An HA lab's listener hosts and etcd-only hosts (none in a lab of one listener)."""
    return [c for c in info.get("controllers", []) if c.get("ports")] + list(info.get("extra_hosts", []))


def controller_env(info: dict[str, Any]) -> dict[str, str]:
    """Environment for Ansible run from the controller namespace against the lab."""
    from .. import _collection

    env = dict(os.environ)
    env.update(_collection.RUN_ENV)
    if os.environ.get("PYTHONWARNINGS"):  # the caller's filters too
        env["PYTHONWARNINGS"] = f"{os.environ['PYTHONWARNINGS']},{_collection.RUN_ENV['PYTHONWARNINGS']}"
    env["ANSIBLE_INVENTORY"] = info["inventory"]
    env["PATH"] = f"{Path(info['python']).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    return env
