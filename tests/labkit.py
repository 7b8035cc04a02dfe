"""Helpers for tests that build labs: unique names, teardown, the controller."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PUBIP = [sys.executable, "-m", "pubip.cli"]
_counter = itertools.count()


def unique_name(tag: str = "t") -> str:
    return f"{tag}{os.getpid() % 100000}x{next(_counter)}"


def pubip(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*PUBIP, *args], text=True, capture_output=True, timeout=timeout, cwd=ROOT)
    if check and proc.returncode != 0:
        raise AssertionError(f"pubip {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def netns_list() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], text=True, capture_output=True).stdout.strip()
    return {e["name"] for e in json.loads(out)} if out else set()


def live_pids() -> set[int]:
    """Pids of processes that are not zombies."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "stat").read_text().split(") ", 1)[1][0] != "Z":
                    pids.add(int(entry.name))
            except (OSError, IndexError):
                pass
    return pids


class LabHandle:
    def __init__(self, info: dict[str, Any]):
        self.info = info
        self.name: str = info["name"]
        self.dir = Path(info["dir"])
        self.inventory: str = info["inventory"]
        self.ctl: str = info["controller"]["netns"]
        self.hosts: list[dict[str, Any]] = info["hosts"]

    def env(self) -> dict[str, str]:
        from pubip import lab

        return lab.controller_env(self.info)

    def in_controller(self, *cmd: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["ip", "netns", "exec", self.ctl, *cmd], text=True, capture_output=True,
                              env=self.env(), timeout=timeout, cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def playbook(self, playbook: str, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        bin_dir = Path(sys.executable).parent
        return self.in_controller(str(bin_dir / "ansible-playbook"), str(ROOT / playbook), *extra, timeout=timeout)

    def in_host(self, host: str, *cmd: str) -> subprocess.CompletedProcess[str]:
        netns = next(h["netns"] for h in self.hosts if h["name"] == host)
        return subprocess.run(["ip", "netns", "exec", netns, *cmd], text=True, capture_output=True, timeout=60)

    def addresses(self, host: str) -> dict[str, list[str]]:
        from pubip import lab

        netns = next(h["netns"] for h in self.hosts if h["name"] == host)
        return lab.kernel_addresses(netns)

    def holders(self) -> dict[str, list[str]]:
        """public IP -> hosts whose kernel holds it."""
        result: dict[str, list[str]] = {ip: [] for ip in self.info["public_ips"]}
        for h in self.hosts:
            for ips in self.addresses(h["name"]).values():
                for ip in ips:
                    if ip in result:
                        result[ip].append(h["name"])
        return result


def lab_up(name: str, *args: str) -> LabHandle:
    proc = pubip("lab", "up", "--name", name, *args)
    path = proc.stdout.strip().splitlines()[-1]
    return LabHandle(json.loads(Path(path).read_text()))


def lab_down(name: str) -> None:
    pubip("lab", "down", "--name", name, check=False)


def run_module(handle: LabHandle, host: str, module: str, args: dict[str, Any], *flags: str,
               timeout: float = 120) -> dict[str, Any]:
    """Run one module on one lab host over SSH (ad-hoc), return its result."""
    bin_dir = Path(sys.executable).parent
    env_extra = {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "minimal",
                 "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run(
        ["ip", "netns", "exec", handle.ctl, str(bin_dir / "ansible"), host, "-m", module, "-a", json.dumps(args),
         *flags],
        text=True, capture_output=True, env={**handle.env(), **env_extra},
        timeout=timeout, cwd=ROOT)
    # minimal callback: a diff (with --diff), then "HOST | STATUS => {json}"
    start = proc.stdout.find(f"{host} | ")
    diff_text, rest = (proc.stdout[:start], proc.stdout[start:]) if start >= 0 else ("", proc.stdout)
    _head, sep, body = rest.partition(" => ")
    try:
        result = json.loads(body) if sep else None
    except json.JSONDecodeError:
        result = None
    if not isinstance(result, dict):
        raise AssertionError(f"ansible gave no result ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result.setdefault("failed", proc.returncode != 0 and "UNREACHABLE" not in _head)
    result["diff_text"] = diff_text
    return result
