"""The lab's services: its watchdogs, its listener (or HA listeners with their etcd), started as processes in
the hosts' namespaces (no systemd in the lab), stopped, and started again where missing."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from .base import CONTROLLER_ADDR, LISTENER_PORT, LabError, alive, connect_in, host_entry, save
from .build import render_inventory, run_playbook
from .observe import await_first_run


def start_watchdog(info: dict[str, Any], host: str) -> int:
    """Start HOST's watchdog as a process inside its namespace (no systemd in the lab)."""
    h = host_entry(info, host)
    log = open(Path(h["dir"]) / "watchdog.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", h["netns"], info["python"], "-m", "pubip.node.main",
                             "--config", h["watchdog_config"]], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    h["watchdog_pid"] = proc.pid
    return proc.pid


def start_listener(info: dict[str, Any], host: str | None = None) -> int:
    """Start the listener in the controller namespace, on the lab's inventory and secrets; in an HA lab, the one
    on listener host HOST (default: each whose host is up and runs none), with the lab's etcd."""
    ha = [c for c in info.get("controllers", []) if c.get("ports")]
    if ha:
        pids = [_start_ha_listener(info, c) for c in ha if (host is None and not running(c, "listener_pid")
                                                            and not c.get("dead")) or c["name"] == host]
        info["listener_pid"] = ha[0].get("listener_pid")
        return pids[0] if pids else 0
    d = Path(info["dir"])
    log = open(d / "listener.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", info["controller"]["netns"], info["python"], "-m", "pubip.cli",
                             "listen", "--inventory", info["inventory"], "--secrets", str(d / "listener-secrets.json"),
                             "--state-dir", str(d / "listener"), "--bind", CONTROLLER_ADDR,
                             "--port", str(LISTENER_PORT), "--log-file", str(d / "listener.log")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    info["listener_pid"] = proc.pid
    _await_port(info["controller"]["netns"], CONTROLLER_ADDR, d / "listener.out")
    return proc.pid


def running(entry: dict[str, Any], key: str) -> bool:
    return bool(entry.get(key)) and alive(entry[key])


def _start_ha_listener(info: dict[str, Any], c: dict[str, Any]) -> int:
    """One HA listener on its host: its own state, inventory (its own SSH control sockets and run lock, as on a
    host of its own) and log; the lab's etcd."""
    from . import etcd

    d = Path(c["dir"])
    inventory = d / "inventory.yml"
    if not inventory.exists():
        inventory.write_text(render_inventory(info, controller=c))
    log = open(d / "listener.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", c["netns"], info["python"], "-m", "pubip.cli", "listen",
                             "--inventory", str(inventory),
                             "--secrets", str(Path(info["dir"]) / "listener-secrets.json"),
                             "--state-dir", str(d / "listener"), "--bind", c["address"], "--port", str(LISTENER_PORT),
                             "--log-file", str(d / "listener.log"), "--name", c["name"],
                             "--etcd", ",".join(etcd.endpoints(info["etcd"])), "--cluster", info["name"]],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    c["listener_pid"] = proc.pid
    _await_port(c["netns"], c["address"], d / "listener.out")
    return proc.pid


def _await_port(netns: str, address: str, out: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # ready when the port answers
        with contextlib.suppress(OSError):
            connect_in(netns, (address, LISTENER_PORT), 1).close()
            return
        time.sleep(0.1)
    raise LabError(f"the listener did not start: see {out}")


def start_etcd(info: dict[str, Any]) -> None:
    """An HA lab's 3-member etcd, before its listeners."""
    from . import etcd

    if info.get("etcd"):
        etcd.start_cluster(info["etcd"])


def stop(owner: dict[str, Any], key: str, sig: int) -> None:
    """Signal the process whose pid OWNER[KEY] holds and wait (3 s at most) until it is gone."""
    pid = owner.get(key)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        owner[key] = None


def stop_listener(info: dict[str, Any]) -> None:
    """SIGKILL: the listener dies as a crash would (tests check that it recovers)."""
    stop(info, "listener_pid", signal.SIGKILL)


def stop_watchdog(info: dict[str, Any], host: str) -> None:
    stop(host_entry(info, host), "watchdog_pid", signal.SIGTERM)


def start_missing(info: dict[str, Any]) -> list[str]:
    """Start the listener and every live host's watchdog that is not running; returns what was started."""
    started = []
    ha = [c for c in info.get("controllers", []) if c.get("ports")]
    for c in ha:
        if not running(c, "listener_pid") and not c.get("dead"):
            start_listener(info, c["name"])
            started.append(f"listener {c['name']}")
    if not ha and not (info.get("listener_pid") and alive(info["listener_pid"])):
        start_listener(info)
        started.append("listener")
    for h in info["hosts"]:
        if not (h.get("sshd_pid") and alive(h["sshd_pid"])):
            continue  # a dead host runs nothing
        if not (h.get("watchdog_pid") and alive(h["watchdog_pid"])):
            start_watchdog(info, h["name"])
            started.append(f"watchdog {h['name']}")
    save(info)
    return started


def start_services(info: dict[str, Any], *, watchdogs: bool = True, listener: bool = True, takeover: bool = True,
                   progress: Any = print) -> bool:
    """Start the lab's watchdogs and listener, as `lab up` does, and see the first takeover run done. With the
    listener, the first takeover run is its start-up run, which lab up waits for (the main job run here as
    well would be a second run straight after it, changing nothing); without it, the main job here, first.
    False: the first takeover run failed (the lab stays up)."""
    first = takeover and bool(info["public_ips"])
    ok = True
    if first and not (watchdogs and listener):
        progress(f"lab {info['name']}: first takeover run")
        ok = run_playbook(info, "takeover_run.yml") == 0
    if not watchdogs:
        return ok
    if listener and info.get("etcd"):
        start_etcd(info)
        progress(f"lab {info['name']}: etcd on {', '.join(m['name'] for m in info['etcd'])}")
    if listener:
        start_listener(info)
        where = [c["address"] for c in info.get("controllers", []) if c.get("ports")] or [CONTROLLER_ADDR]
        progress(f"lab {info['name']}: listener{'s' if len(where) > 1 else ''} on {', '.join(where)}:{LISTENER_PORT}")
    for h in info["hosts"]:
        start_watchdog(info, h["name"])
    save(info)
    progress(f"lab {info['name']}: watchdogs started (fast retake {'on' if info.get('fast_retake', True) else 'off'})")
    if first and listener:
        progress(f"lab {info['name']}: first takeover run (the listener's start-up run)")
        ok = await_first_run(info) is not None
    return ok
