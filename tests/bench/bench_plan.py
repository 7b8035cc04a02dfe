"""`make bench-plan`: the whole `pubip plan` process on large seeded clusters.

Shapes as CTDB's own timings were taken: 1/16 of the nodes unhealthy, one
stopped, one new and empty, 2 % of the IPs unassigned. Addresses are data only
(nothing is configured): IPv4 from the benchmarking range 198.18.0.0/15, IPv6
from 2001:db8::/32.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report

PUBIP = [sys.executable, "-m", "pubip.cli"]
SHAPES = [(16, 256), (64, 1024), (128, 4096)]
TARGETS = {("lcp2", 64, 1024): 0.5, ("lcp2", 128, 4096): 10.0, ("nondet", 64, 1024): 0.2}


def cluster(algorithm: str, n_nodes: int, n_ips: int, ipv6: bool, seed: int) -> dict:
    rnd = random.Random(seed)
    unhealthy = set(rnd.sample(range(n_nodes), max(1, n_nodes // 16)))
    rest = [n for n in range(n_nodes) if n not in unhealthy]
    stopped, new = rest[0], rest[1]
    nodes = [{"pnn": n, "flags": 0x02 if n in unhealthy else 0x20 if n == stopped else 0, "runstate": 5}
             for n in range(n_nodes)]
    holders = [n for n in range(n_nodes) if n != new]
    base = int(ipaddress.ip_address("2001:db8::")) if ipv6 else int(ipaddress.ip_address("198.18.0.0"))
    offsets = rnd.sample(range(1, 1 << 17), n_ips)
    public = []
    for off in offsets:
        ip = str(ipaddress.ip_address(base + (off << 40 if ipv6 else off)))
        current = -1 if rnd.random() < 0.02 else rnd.choice(holders)
        public.append({"ip": ip, "current_pnn": current, "known_on": list(range(n_nodes))})
    return {"algorithm": algorithm, "nodes": nodes, "options": {}, "public_ips": public}


def time_plan(doc: dict) -> tuple[float, float, list]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(doc, f)
    try:
        start = time.perf_counter()
        proc = subprocess.Popen([*PUBIP, "plan", "--input", f.name], stdout=subprocess.PIPE)
        out = proc.stdout.read() if proc.stdout else b""
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if status != 0:
            raise SystemExit(f"pubip plan failed with status {status}")
        return wall, usage.ru_maxrss / 1024.0, json.loads(out)["assignments"]
    finally:
        os.unlink(f.name)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip 128 x 4096")
    ap.add_argument("--seed", type=int, default=2026)
    args = ap.parse_args()
    rows, records = [], []
    for n_nodes, n_ips in SHAPES:
        if args.quick and n_ips > 1024:
            continue
        for algorithm in ("lcp2", "det", "nondet"):
            for ipv6 in (False, True):
                doc = cluster(algorithm, n_nodes, n_ips, ipv6, args.seed)
                wall, rss, assignments = time_plan(doc)
                unassigned = sum(1 for a in assignments if a["pnn"] < 0)
                target = TARGETS.get((algorithm, n_nodes, n_ips))
                verdict = "" if target is None else ("ok" if wall <= target else "MISSED")
                rows.append([algorithm, f"{n_nodes} x {n_ips}", "IPv6" if ipv6 else "IPv4", f"{wall:.3f}",
                             f"{rss:.0f}", unassigned, f"<= {target}" if target else "", verdict])
                records.append({"algorithm": algorithm, "nodes": n_nodes, "ips": n_ips, "ipv6": ipv6,
                                "seconds": round(wall, 4), "peak_rss_mib": round(rss, 1),
                                "unassigned": unassigned, "target_seconds": target})
    report("plan", ["algorithm", "nodes x IPs", "family", "seconds", "peak RSS MiB", "unassigned", "target",
                    ""], rows, records)


if __name__ == "__main__":
    main()
