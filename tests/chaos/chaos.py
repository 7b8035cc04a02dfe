"""`make chaos`: random faults on a running cluster, while a sampler watches every host's kernel.

A lab of 5 hosts with 10 IPv4 and 4 IPv6 public IPs, watchdogs and the listener running.
For a bounded time (default 10 min) or a number of faults, one fault at a time: inject it,
hold it, undo it, pause. A sampler reads every host's public IPs on every netlink event throughout.

Report (table + JSON under .bench/): faults by kind; moments with an IP on two hosts (must be 0;
a foreign IP added by hand is excused until it has one holder again); the longest time any IP
was unheld; time to converge after the last fault (target <= 5 s): when the hosts' public IPs last
changed, the end state being every IP on exactly one host, and when the listener was idle again;
runs started; requests coalesced. Exit 1 when an IP was ever on two hosts or the cluster did not
converge. The watchdogs run with the fast path on (--no-fast-retake: off).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import shutil
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "watchdog"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests/bench"))
from _report import report  # noqa: E402

from pubip import lab  # noqa: E402
from pubip.lab import base as labbase  # noqa: E402
from pubip.lab import etcd as labetcd  # noqa: E402
from pubip.lab import observe as labobserve  # noqa: E402
from tests.support import labkit  # noqa: E402

CONVERGE_TARGET = 5.0
UNHELD_TARGET = 10.0  # issue 14: no IP unheld longer while a live host could serve it


class Chaos:
    def __init__(self, info: dict[str, Any], rng: random.Random, log: Callable[[str], None]):
        self.info = info
        self.rng = rng
        self.log = log
        self.handle = labkit.LabHandle(info)
        self.excused: list[tuple[str, float]] = []  # (ip, injected at): a foreign IP added by hand
        self.events: list[dict[str, Any]] = []  # every fault: kind, where, injected and undone (monotonic)
        self.kinds = {
            "flush": self.flush, "link_flap": self.link_flap, "watchdog_restart": self.watchdog_restart,
            "cut_off": self.cut_off, "listener_restart": self.listener_restart, "foreign_ip": self.foreign_ip,
            "partition": self.partition, "sshd_death": self.sshd_death, "host_death": self.host_death,
        }
        self.listeners = [c["name"] for c in info.get("controllers", []) if c.get("ports")]
        if self.listeners:  # HA listeners: their hosts die, the leader is isolated, etcd members die
            self.kinds.pop("listener_restart")
            self.kinds.update({"listener_host_death": self.listener_host_death,
                               "leader_isolated": self.leader_isolated, "etcd_member_death": self.etcd_member_death})

    def host(self) -> dict[str, Any]:
        return self.rng.choice(self.info["hosts"])

    # --- the faults: each injects, holds, and undoes ------------------------------------------
    def flush(self) -> str:
        h = self.host()  # the seed's networking restart
        lab.run(["ip", "-n", h["netns"], "addr", "flush", "dev", "eth0"])
        lab.run(["ip", "-n", h["netns"], "addr", "add", f"{h['address']}/24", "dev", "eth0"])
        return h["name"]

    def link_flap(self) -> str:
        h = self.host()
        lab.run(["ip", "-n", h["netns"], "link", "set", "eth0", "down"])
        time.sleep(self.rng.uniform(0.5, 3.0))
        lab.run(["ip", "-n", h["netns"], "link", "set", "eth0", "up"])
        return h["name"]

    def watchdog_restart(self) -> str:
        h = self.host()
        lab.stop_watchdog(self.info, h["name"])
        time.sleep(self.rng.uniform(0.5, 3.0))
        lab.start_watchdog(self.info, h["name"])
        return h["name"]

    def cut_off(self) -> str:
        h = self.host()
        lab.set_host_links(self.info, h["name"], up=False)
        time.sleep(self.rng.uniform(3.0, 6.0))
        lab.set_host_links(self.info, h["name"], up=True)
        return h["name"]

    def partition(self) -> str:
        """A split that keeps carrier (blackhole routes): one host alone, or the cluster in two, the listener
        (each listener host and etcd host) on a random side; 3-7 s."""
        names = [h["name"] for h in self.info["hosts"]]
        self.rng.shuffle(names)
        cut = 1 if self.rng.random() < 0.5 else self.rng.randint(1, len(names) // 2)
        a, b = names[:cut], names[cut:]
        for member in [h["name"] for h in labbase.ha_hosts(self.info)] or ["listener"]:
            (a if self.rng.random() < 0.3 else b).append(member)
        lab.partition(self.info, a, b)
        time.sleep(self.rng.uniform(3.0, 7.0))
        lab.heal(self.info)
        return f"{','.join(sorted(a))} | {','.join(sorted(b))}"

    def sshd_death(self) -> str:
        h = self.host()  # the host and its watchdog live on; runs cannot reach it
        lab.stop_sshd(self.info, h["name"])
        time.sleep(self.rng.uniform(2.0, 5.0))
        lab.start_sshd(self.info, h["name"])
        return h["name"]

    def host_death(self) -> str:
        h = self.host()
        # as lab.cut_host, but the sampler in its namespace lives on: the analysis must see it after revival
        for pid in (h.get("watchdog_pid"),):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        lab.stop_sshd(self.info, h["name"])
        lab.set_host_links(self.info, h["name"], up=False)
        time.sleep(self.rng.uniform(3.0, 6.0))
        lab.revive_host(self.info, h["name"])
        lab.start_watchdog(self.info, h["name"])
        return h["name"]

    def listener_restart(self) -> str:
        lab.stop_listener(self.info)  # SIGKILL, maybe mid-run
        time.sleep(self.rng.uniform(0.2, 2.0))
        lab.start_listener(self.info)
        return "listener"

    def leader(self) -> str:
        c = labobserve.leading_controller(self.info)
        return str(c["name"])

    def listener_host_death(self) -> str:
        """A listener host dies (its listener and etcd member with it) and boots again 3-6 s later."""
        name = self.rng.choice(self.listeners)
        lab.cut_host(self.info, name)
        time.sleep(self.rng.uniform(3.0, 6.0))
        lab.revive_host(self.info, name)
        return name

    def leader_isolated(self) -> str:
        """The leader's host cut off with carrier: from everyone (its etcd member too), or from the nodes only
        (it still reaches etcd and the other listeners); 3-7 s."""
        leader = self.leader()
        nodes = [h["name"] for h in self.info["hosts"]]
        others = [h["name"] for h in labbase.ha_hosts(self.info) if h["name"] != leader]
        whole = self.rng.random() < 0.5
        lab.partition(self.info, [leader], nodes + (others if whole else []))
        time.sleep(self.rng.uniform(3.0, 7.0))
        lab.heal(self.info)
        return f"{leader} from {'all' if whole else 'the nodes'}"

    def etcd_member_death(self) -> str:
        """One etcd member is killed and started again 2-5 s later."""
        member = self.rng.choice(self.info["etcd"])
        entry = lab.host_entry(self.info, member["name"])
        pid = entry.get("etcd_pid") or member.get("etcd_pid")
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(self.rng.uniform(2.0, 5.0))
        if not entry.get("dead"):
            labetcd.start_member(entry, self.info["etcd"], state="existing")
            member["etcd_pid"] = entry["etcd_pid"]
        return member["name"]

    def foreign_ip(self) -> str:
        holders = self.handle.holders()
        ip = self.rng.choice(sorted(holders))
        wrong = self.rng.choice([h for h in self.info["hosts"] if h["name"] not in holders[ip]])
        self.excused.append((ip.split("/", 1)[0], time.monotonic()))
        lab.run(["ip", "-n", wrong["netns"], "addr", "add", ip, "dev", "eth0"], check=False)
        return f"{ip} on {wrong['name']}"

    def inject(self) -> str:
        kind = self.rng.choice(sorted(self.kinds))
        started = time.monotonic()
        where = self.kinds[kind]()
        lab.save(self.info)
        self.events.append({"kind": kind, "where": where, "t": started, "undone": time.monotonic()})
        self.log(f"fault {kind}: {where}")
        return kind

    # --- convergence ---------------------------------------------------------------------------
    def converged(self) -> bool:
        holders = self.handle.holders()
        if any(len(hs) != 1 for hs in holders.values()):
            return False
        st = lab.listener_status(self.info)
        return bool(st) and st["pending_requests"] == 0 and st["running"] is None


def unheld_gaps(spans: dict[str, list[tuple[str, float, float]]], ips: list[str], start: float, end: float
                ) -> dict[str, tuple[float, float]]:
    """For every IP (address without prefix, as the sampler reports it), the longest stretch within
    [start, end] that no host held it: (from, until)."""
    longest = {}
    for ip in ips:
        covered = sorted((a, b) for _h, a, b in spans.get(ip, []))
        gap, at = (start, start), start
        for a, b in covered:
            if a > at and a - at > gap[1] - gap[0]:
                gap = (at, a)
            at = max(at, b)
        if at < end and end - at > gap[1] - gap[0]:
            gap = (at, end)
        longest[ip] = gap
    return longest


def double_holdings(spans: dict[str, list[tuple[str, float, float]]], excused: list[tuple[str, float]]
                    ) -> list[dict[str, Any]]:
    """Overlaps of two hosts on one IP, less those a foreign-IP fault made until the IP had one holder again."""
    found = []
    for ip, ss in spans.items():
        for i, (h1, a1, b1) in enumerate(ss):
            for h2, a2, b2 in ss[i + 1:]:
                if h1 == h2 or not (a1 < b2 and a2 < b1):
                    continue
                lo, hi = max(a1, a2), min(b1, b2)
                if any(eip == ip and t <= lo + 0.001 and hi <= single_again(ss, t) for eip, t in excused):
                    continue
                found.append({"ip": ip, "hosts": sorted([h1, h2]), "from": lo, "until": hi})
    return found


def single_again(spans: list[tuple[str, float, float]], since: float) -> float:
    """The end of the first stretch of two or more holders that starts at or after SINCE."""
    points = sorted({since} | {t for _h, a, b in spans for t in (a, b) if t >= since})
    doubled = False
    for t in points:
        holders = sum(1 for _h, a, b in spans if a <= t < b)
        if holders >= 2:
            doubled = True
        elif doubled:
            return t
    return float("inf")


def all_gaps(spans: dict[str, list[tuple[str, float, float]]], ips: list[str], start: float, end: float
             ) -> list[tuple[str, float, float]]:
    """Every stretch within [start, end] in which no host held an IP: (ip, from, until)."""
    out = []
    for ip in ips:
        at = start
        for a, b in sorted((a, b) for _h, a, b in spans.get(ip, [])):
            if a > at:
                out.append((ip, at, min(a, end)))
            at = max(at, b)
            if at >= end:
                break
        if at < end:
            out.append((ip, at, end))
    return [g for g in out if g[2] > g[1]]


def by_kind(events: list[dict[str, Any]], doubles: list[dict[str, Any]],
            spans: dict[str, list[tuple[str, float, float]]], ips: list[str], end: float) -> dict[str, dict[str, Any]]:
    """Per fault kind: how many, double holdings that began while one of its faults was on (or in the 5 s after,
    until the next fault), and the longest stretch an IP was unheld that began in that window."""
    out: dict[str, dict[str, Any]] = {}
    gaps = all_gaps(spans, ips, events[0]["t"] if events else 0.0, end)
    for i, e in enumerate(events):
        until = min(e["undone"] + 5.0, events[i + 1]["t"] if i + 1 < len(events) else end)
        row = out.setdefault(e["kind"], {"faults": 0, "double_holdings": 0, "longest_unheld_s": 0.0})
        row["faults"] += 1
        row["double_holdings"] += sum(1 for d in doubles if e["t"] <= d["from"] < until)
        row["longest_unheld_s"] = max([row["longest_unheld_s"], *(b - a for _ip, a, b in gaps if e["t"] <= a < until)])
    return out


def coalescing(info: dict[str, Any]) -> tuple[int, int, int]:
    """(runs started, requests, requests covered by a run that also covered an earlier one)."""
    dirs = [Path(c["dir"]) for c in info.get("controllers", []) if c.get("ports")] or [Path(info["dir"])]
    runs = requests = coalesced = 0
    for d in dirs:  # HA: each listener's own
        db = sqlite3.connect(d / "listener" / "listener.sqlite")
        try:
            runs += db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]
            requests += db.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
            per_run = db.execute("SELECT COUNT(*) FROM requests WHERE run_id IS NOT NULL GROUP BY run_id").fetchall()
        finally:
            db.close()
        coalesced += sum(max(0, n - 1) for (n,) in per_run)
    return runs, requests, coalesced


def keep_logs(name: str, seed: int) -> Path:
    """The listener's and every watchdog's log, and what Ansible printed for the last takeover runs (ansible-runner
    keeps ten), kept under .bench/ when the lab goes (a double holding, an IP unheld longer than the target, or a
    convergence slower than its target)."""
    out = ROOT / ".bench" / f"chaos-logs-{seed}"
    src = lab.lab_dir(name)
    for log in [*src.glob("*.log"), *src.glob("hosts/*/*.log"), *src.glob("listener/runner/artifacts/*/stdout")]:
        dest = out / log.relative_to(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, dest)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of faults (default 10 min)")
    ap.add_argument("--faults", type=int, default=None, help="stop after this many faults instead")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--hosts", type=int, default=5)
    ap.add_argument("--vips", type=int, default=10)
    ap.add_argument("--vips6", type=int, default=4)
    ap.add_argument("--name", default=None)
    ap.add_argument("--keep", action="store_true", help="leave the lab up afterwards (pubip lab down removes it)")
    ap.add_argument("--no-fast-retake", action="store_true", help="run the watchdogs without the fast path")
    ap.add_argument("--listeners", type=int, default=1, help="HA listeners (2 or 3) with a 3-member etcd")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    name = args.name or f"chaos{random.randrange(10000)}"
    t_begin = time.monotonic()
    doubles: list[dict[str, Any]] = []
    worst = 0.0
    settled: float | None = 0.0

    def say(line: str) -> None:
        print(f"[{time.monotonic() - t_begin:7.1f}s] {line}", flush=True)

    say(f"chaos: seed {seed}; lab {name}: {args.hosts} hosts, {args.vips} IPv4 + {args.vips6} IPv6 public IPs")
    try:
        info = lab.Lab(name, args.hosts, args.vips, ipv6=args.vips6 > 0, vips6=args.vips6,
                       fast_retake=not args.no_fast_retake, listeners=args.listeners).up(progress=say)
        if not lab.start_services(info, progress=say):
            raise SystemExit("chaos: the first takeover run failed")
        chaos = Chaos(info, rng, say)
        deadline = time.monotonic() + 60
        while not chaos.converged():  # the listener's first run, the watchdogs' first heartbeats
            if time.monotonic() > deadline:
                raise SystemExit("chaos: the cluster did not settle before the faults")
            time.sleep(0.2)
        time.sleep(2.0)
        kinds: Counter[str] = Counter()
        with labkit.Sampler(chaos.handle) as sampler:
            t_start = time.monotonic()
            end = t_start + args.duration
            while (len(list(kinds.elements())) < args.faults) if args.faults else time.monotonic() < end:
                kinds[chaos.inject()] += 1
                time.sleep(rng.uniform(0.5, 3.0))
            t_last = time.monotonic()
            say(f"last fault undone after {sum(kinds.values())} faults; waiting for convergence")
            idle = None  # the listener has nothing pending or running, every IP on one host, for 2 s
            quiet_since = None
            while time.monotonic() - t_last < 120:
                if chaos.converged():
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= 2.0:
                        idle = quiet_since - t_last
                        break
                else:
                    quiet_since = None
                time.sleep(0.05)
            t_end = time.monotonic()
        spans = sampler.intervals()
        # Settled: the last change of any host's public IPs after the last fault, when the end state is
        # every IP on exactly one host (what clients see; verification runs that change nothing do not count).
        settled = None
        if idle is not None:
            changes = [t for ss in spans.values() for _h, a, b in ss for t in (a, b) if t_last <= t < t_end - 0.5]
            settled = max(changes, default=t_last) - t_last
        doubles = double_holdings(spans, chaos.excused)
        gaps = unheld_gaps(spans, [ip.split("/", 1)[0] for ip in info["public_ips"]], t_start, t_end)
        worst_ip = max(gaps, key=lambda ip: gaps[ip][1] - gaps[ip][0])
        worst = gaps[worst_ip][1] - gaps[worst_ip][0]
        kinds_table = by_kind(chaos.events, doubles, spans, [ip.split("/", 1)[0] for ip in info["public_ips"]], t_end)
        runs, requests, coalesced = coalescing(info)
        samples = sampler.samples()
    finally:
        slow = settled is None or settled > CONVERGE_TARGET
        if doubles or worst > UNHELD_TARGET or slow:
            kept = keep_logs(name, seed)
            why = "a double holding" if doubles else f"an IP unheld {worst:.1f} s" if worst > UNHELD_TARGET \
                else "no convergence" if settled is None else f"settled {settled:.1f} s after the last fault"
            print(f"chaos: {why}; the lab's logs are in {kept}", file=sys.stderr)
        if not args.keep:
            lab.down(name)

    rows = [[f"faults: {k}", v, f"double holdings {kinds_table[k]['double_holdings']}, longest unheld "
             f"{kinds_table[k]['longest_unheld_s']:.2f}s"] for k, v in sorted(kinds.items())]
    rows += [
        ["faults in all", sum(kinds.values()), ""],
        ["IP on two hosts (moments)", len(doubles), "must be 0"],
        ["longest unheld (s)", f"{worst:.3f} ({worst_ip}, from {gaps[worst_ip][0] - t_start:.1f} s)",
         f"<= {UNHELD_TARGET}"],
        ["IPs settled after last fault (s)", "never" if settled is None else f"{settled:.3f}",
         f"<= {CONVERGE_TARGET}"],
        ["listener idle after last fault (s)", "never" if idle is None else f"{idle:.3f}", ""],
        ["takeover runs started", runs, ""],
        ["requests", requests, ""],
        ["requests coalesced", coalesced, ""],
        ["sampler reads (on netlink events, all hosts)", samples, ""],
    ]
    record = {"seed": seed, "hosts": args.hosts, "public_ips": info["public_ips"], "faults": dict(kinds),
              "double_holdings": doubles, "longest_unheld_s": worst, "by_kind": kinds_table,
              "longest_unheld_ip": worst_ip,
              "longest_unheld_from": gaps[worst_ip][0] - t_start,
              "unheld_by_ip_s": {ip: g[1] - g[0] for ip, g in gaps.items()},
              "fault_log": [{**e, "t": e["t"] - t_start, "undone": e["undone"] - t_start} for e in chaos.events],
              "converge_s": settled, "listener_idle_s": idle, "converge_target_s": CONVERGE_TARGET,
              "runs": runs, "requests": requests, "requests_coalesced": coalesced, "samples": samples,
              "duration_s": t_end - t_start}
    report("chaos", ["measure", "value", "target"], rows, [record])
    if doubles:
        for d in doubles:
            at = time.strftime("%H:%M:%S", time.localtime(time.time() - (time.monotonic() - d["from"])))
            print(f"DOUBLE HOLDING: {d['ip']} on {' and '.join(d['hosts'])} "
                  f"({d['until'] - d['from']:.3f}s, from {at})", file=sys.stderr)
    return 1 if doubles or settled is None else 0


if __name__ == "__main__":
    sys.exit(main())
