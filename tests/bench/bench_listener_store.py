"""`make bench-listener`: what each heartbeat costs the listener's state (sqlite), by cluster size.

Every heartbeat (5 a second per node by default) spends a nonce (replay protection) and marks its node
seen. The nonce table holds the last 2 windows of nonces (60 s: 300 per node), so its upkeep grows with the
cluster. Measured on a steady-state table in a directory on disk (/var/tmp, as /var/lib/pubip would be),
in this process: CPU and wall time per heartbeat, and the share of a core the listener spends on it at
5 heartbeats a second per node. Target: <= 2 % of a core at 64 nodes.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import p95, report

from pubip.controller.store import Store

HEARTBEATS_PER_S = 5  # per node: heartbeat_interval 0.2 s
WINDOW = 30.0  # the listener's default replay window


def measure(directory: str, nodes: int, beats: int) -> dict[str, float]:
    store = Store(str(Path(directory) / f"listener-{nodes}.db"))
    now = time.time()
    kept = int(nodes * HEARTBEATS_PER_S * 2 * WINDOW)
    with store.lock:
        store.db.executemany("INSERT INTO nonces (nonce, seen) VALUES (?, ?)",
                             [(uuid.uuid4().hex, now - 2 * WINDOW + i * 2 * WINDOW / kept) for i in range(kept)])
    walls, cpu0 = [], time.process_time()
    for i in range(beats):
        t = time.perf_counter()
        if not store.use_nonce(uuid.uuid4().hex, WINDOW):
            raise SystemExit("bench-listener: a fresh nonce was refused")
        store.heartbeat(f"node{i % nodes}")
        walls.append(time.perf_counter() - t)
    cpu = (time.process_time() - cpu0) / beats
    store.db.close()
    return {"nodes": nodes, "nonces_kept": kept, "cpu_ms": cpu * 1000, "wall_p50_ms": sorted(walls)[beats // 2] * 1000,
            "wall_p95_ms": p95(walls) * 1000, "core_share_pct": cpu * nodes * HEARTBEATS_PER_S * 100}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beats", type=int, default=2000, help="heartbeats per cluster size")
    ap.add_argument("--dir", default="/var/tmp", help="where the state database goes (a disk, not tmpfs)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pubip-bench-", dir=args.dir) as d:
        records = [measure(d, n, args.beats) for n in (3, 16, 64)]
    rows = [[r["nodes"], r["nonces_kept"], f"{r['cpu_ms']:.3f}", f"{r['wall_p50_ms']:.3f}", f"{r['wall_p95_ms']:.3f}",
             f"{r['core_share_pct']:.1f} %"] for r in records]
    worst = records[-1]["core_share_pct"]
    rows.append(["target", "", "", "", "", f"<= 2 % at 64 nodes: {'met' if worst <= 2.0 else 'NOT met'}"])
    report("listener_store", ["nodes", "nonces kept", "CPU ms / heartbeat", "wall p50 ms", "wall p95 ms",
                              "listener core share"], rows, records)


if __name__ == "__main__":
    main()
