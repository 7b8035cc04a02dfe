"""Helpers for tests that build labs: unique names, teardown, the controller."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SUPPORT = ROOT / "tests" / "support"  # helpers that tests start as programs
PUBIP = [sys.executable, "-m", "pubip.cli"]
_counter = itertools.count()


def copy_checkout(dest: Path) -> Path:
    """This checkout's files (tracked and new, not ignored) copied to DEST, their mtimes kept: a wheel built from
    the copy builds in its own build/ (two builds in this tree at once collide there)."""
    import shutil

    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, text=True,
                           capture_output=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


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


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that mention TEXT (a lab directory, say)."""
    found = []
    for pid in live_pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmd and pid != os.getpid():
            found.append(cmd)
    return found


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

    def cut(self, host: str) -> None:
        from pubip import lab

        lab.cut_host(self.info, host)

    def revive(self, host: str) -> None:
        from pubip import lab

        lab.revive_host(self.info, host)

    def set_host_var(self, host: str, key: str, value: Any) -> None:
        doc = self.inventory_doc()
        doc["all"]["children"]["pubip_nodes"]["hosts"][host][key] = value
        self.write_inventory(doc)

    def set_group_var(self, key: str, value: Any) -> None:
        doc = self.inventory_doc()
        doc["all"]["children"]["pubip_nodes"]["vars"][key] = value
        self.write_inventory(doc)

    def inventory_doc(self) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(Path(self.inventory).read_text())

    def write_inventory(self, doc: dict[str, Any]) -> None:
        Path(self.inventory).write_text("---\n" + json.dumps(doc, indent=2) + "\n")

    def takeover_run(self, *extra: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return self.playbook("playbooks/takeover_run.yml", *extra, timeout=timeout)

    def holders(self) -> dict[str, list[str]]:
        """public IP -> hosts whose kernel holds it on a link with carrier."""
        from pubip import lab

        result: dict[str, list[str]] = {ip: [] for ip in self.info["public_ips"]}
        for h in self.hosts:
            for ip in lab.public_by_carrier(self.info, h["netns"], check=False)[0]:
                result[ip].append(h["name"])
        return result

    def count_by_host(self) -> dict[str, int]:
        counts = {h["name"]: 0 for h in self.hosts}
        for holders in self.holders().values():
            for name in holders:
                counts[name] += 1
        return counts


def lab_up(name: str, *args: str) -> LabHandle:
    proc = pubip("lab", "up", "--name", name, *args)
    path = proc.stdout.strip().splitlines()[-1]
    return LabHandle(json.loads(Path(path).read_text()))


def lab_down(name: str) -> None:
    """Remove lab NAME; once more if anything of it is left, and loudly if that fails too (a lab left behind
    would keep its processes and namespaces after the suite)."""
    for _attempt in range(2):
        proc = pubip("lab", "down", "--name", name, check=False)
        left = sorted(ns for ns in netns_list() if ns.startswith(f"pubip-{name}-"))
        if not left and not (Path("/run/pubip/labs") / name).exists():
            return
    raise AssertionError(f"lab {name} not removed (namespaces left: {', '.join(left) or 'none'}):\n"
                         f"{proc.stdout}\n{proc.stderr}")


def own_labs() -> list[str]:
    """The labs this test process made (unique_name) that still exist."""
    mine = re.compile(rf"^[a-z]+{os.getpid() % 100000}x\d+$")
    labs = Path("/run/pubip/labs")
    return sorted(p.name for p in labs.iterdir() if mine.match(p.name)) if labs.is_dir() else []


def run_module(handle: LabHandle, host: str, module: str, args: dict[str, Any], *flags: str,
               timeout: float = 120) -> dict[str, Any]:
    """Run one module on one lab host over SSH (ad-hoc), return its result."""
    bin_dir = Path(sys.executable).parent
    env_extra = {"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_STDOUT_CALLBACK": "minimal",
                 "ANSIBLE_NOCOLOR": "1", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"}
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


class Sampler:
    """Follows every host's kernel (a process per namespace: a read on every rtnetlink link or address event,
    and every INTERVAL seconds at least) and finds double holding."""

    def __init__(self, handle: LabHandle, interval: float = 1.0):
        self.handle = handle
        self.procs: dict[str, subprocess.Popen[str]] = {}
        for h in handle.hosts:
            self.procs[h["name"]] = subprocess.Popen(
                ["ip", "netns", "exec", h["netns"], sys.executable, str(SUPPORT / "sampler.py"), str(interval),
                 *handle.info["public_ips"]], stdout=subprocess.PIPE, text=True)

    def __enter__(self) -> Sampler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> dict[str, list[dict[str, Any]]]:
        if not hasattr(self, "events"):
            self.events: dict[str, list[dict[str, Any]]] = {}
            for name, proc in self.procs.items():
                proc.terminate()
                out, _ = proc.communicate(timeout=10)
                self.events[name] = [json.loads(line) for line in out.splitlines() if line.strip()]
        return self.events

    def intervals(self) -> dict[str, list[tuple[str, float, float]]]:
        """ip -> [(host, seen_from, seen_until)]."""
        spans: dict[str, list[tuple[str, float, float]]] = {}
        for host, events in self.stop().items():
            for i, ev in enumerate(events):
                end = events[i + 1]["t"] if i + 1 < len(events) else ev["t"]
                for ip in ev["held"] or []:
                    spans.setdefault(ip, []).append((host, ev["t"], end))
        return spans

    def double_holdings(self) -> list[str]:
        found = []
        for ip, spans in self.intervals().items():
            for i, (h1, a1, b1) in enumerate(spans):
                for h2, a2, b2 in spans[i + 1:]:
                    if h1 != h2 and a1 < b2 and a2 < b1:
                        found.append(f"{ip} on {h1} and {h2} ({max(a1, a2):.3f}-{min(b1, b2):.3f})")
        return found

    def samples(self) -> int:
        return sum(ev[-1].get("samples", 0) for ev in self.stop().values() if ev)

    def unheld(self, start: float, end: float, min_gap: float = 0.0) -> list[str]:
        """Stretches within [START, END] (monotonic seconds) in which a public IP was held by no host."""
        found = []
        spans = self.intervals()
        firsts = [ev[0]["t"] for ev in self.stop().values() if ev]
        start = max([start, *firsts])  # from the moment every sampler runs
        for ip in self.handle.info["public_ips"]:
            covered = sorted((a, b) for _h, a, b in spans.get(ip.split("/", 1)[0], []))
            at = start
            for a, b in covered:
                if a > at and min(a, end) - at > min_gap:
                    found.append(f"{ip} unheld {at:.3f}-{min(a, end):.3f}")
                at = max(at, b)
                if at >= end:
                    break
            if at < end and end - at > min_gap:
                found.append(f"{ip} unheld {at:.3f}-{end:.3f}")
        return found
