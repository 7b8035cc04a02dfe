"""`make bench-listener` (second part): what a heartbeat costs the listener end to end, over real HTTP.

A real listener (the HTTP front, authentication, the state database, the signed answer) on 127.0.0.1, and
one client process speaking for N nodes with the watchdog's own code (requester.listener_exchange), round
robin: each heartbeat on a kept connection (the watchdog's Channel, today's default) or on a new connection
(the watchdog before keep-alive: a TCP - and TLS - handshake and a listener thread per heartbeat), over
http and https. Measured: the listener process's CPU per heartbeat, its share of a core at 5 heartbeats a
second per node, and the heartbeat's round trip seen by the node. Target: kept connections <= 10 % of a
core at 64 nodes, over http and https.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from _report import p95, report

from pubip import protocol
from pubip.controller import http
from pubip.controller.listener import Listener

HEARTBEATS_PER_S = 5  # per node: heartbeat_interval 0.2 s
SIZES = (3, 16, 64)


def secret(i: int) -> str:
    return f"{i:032d}"


def client(url: str, nodes: int, beats: int, kept: bool, ca_file: str | None) -> None:
    """The nodes' side, in its own process: prints the round trips (seconds) as JSON."""
    from pubip.node.config import ListenerBackend
    from pubip.node.requester import Channel, listener_exchange, signed_answer

    backends = [ListenerBackend(url=url, secret=secret(i), ca_file=ca_file) for i in range(nodes)]
    channels = [Channel(b.url, b.timeout, ca_file) if kept else None for b in backends]
    trips = []
    for n in range(beats):
        i = n % nodes
        ip = f"198.51.100.{i + 1}/24"
        payload = protocol.Heartbeat(f"node{i}", holds=[ip], held=[ip], record=protocol.RecordReport(3),
                                     membership=protocol.Membership(
                                         tick=1.0, lease=1.0, lease_left=0.9,
                                         hears={f"node{j}": 0.1 for j in range(min(nodes, 8))})).wire()
        t = time.perf_counter()
        _status, answer, signed, path = listener_exchange(backends[i], f"node{i}", payload,
                                                          protocol.HEARTBEAT_PATH, channels[i])
        trips.append(time.perf_counter() - t)
        signed_answer(backends[i], answer, signed, path)
    print(json.dumps(trips))


def measure(d: Path, nodes: int, beats: int, kept: bool, cert: tuple[str, str] | None) -> dict[str, Any]:
    inventory = d / "inventory.yml"
    inventory.write_text("all: {}\n")
    secrets = {f"node{i}": secret(i) for i in range(nodes)}
    listener = Listener(str(inventory), secrets, str(d / f"state-{nodes}-{kept}-{bool(cert)}"), fast_takeover=False)
    server = http.Server(("127.0.0.1", 0), http.Handler, max_connections=http.connection_slots(nodes),
                         tls=http.tls_context(*cert) if cert else None)
    server.listener = listener
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    url = f"{'https' if cert else 'http'}://127.0.0.1:{server.server_address[1]}{protocol.TAKEOVER_RUN_PATH}"
    try:
        cpu0 = time.process_time()  # this process is the listener: the client runs in its own
        done = subprocess.run([sys.executable, __file__, "--client", url, str(nodes), str(beats), str(int(kept)),
                               cert[0] if cert else ""], capture_output=True, text=True, check=True)
        cpu = (time.process_time() - cpu0) / beats
    finally:
        server.shutdown()
        server.server_close()
        listener.store.db.close()
    trips = json.loads(done.stdout)
    return {"nodes": nodes, "transport": "https" if cert else "http", "connection": "kept" if kept else "new",
            "cpu_ms": cpu * 1000, "core_share_pct": cpu * nodes * HEARTBEATS_PER_S * 100,
            "trip_p50_ms": sorted(trips)[len(trips) // 2] * 1000, "trip_p95_ms": p95(trips) * 1000}


def main() -> None:
    if sys.argv[1:2] == ["--client"]:
        url, how_many, beats, keep, ca = sys.argv[2:7]
        return client(url, int(how_many), int(beats), keep == "1", ca or None)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--beats", type=int, default=1500, help="heartbeats per cell")
    ap.add_argument("--dir", default="/var/tmp", help="where the state database goes (a disk, not tmpfs)")
    args = ap.parse_args()
    from tests.support.tlscert import self_signed

    records = []
    with tempfile.TemporaryDirectory(prefix="pubip-bench-", dir=args.dir) as tmp:
        d = Path(tmp)
        cert = self_signed(d)
        for tls in (None, cert):
            for nodes in SIZES:
                for kept in (False, True):
                    records.append(measure(d, nodes, args.beats, kept, tls))
    rows = [[r["transport"], r["nodes"], r["connection"], f"{r['cpu_ms']:.3f}", f"{r['core_share_pct']:.1f} %",
             f"{r['trip_p50_ms']:.2f}", f"{r['trip_p95_ms']:.2f}"] for r in records]
    worst = max(r["core_share_pct"] for r in records if r["connection"] == "kept" and r["nodes"] == SIZES[-1])
    rows.append(["target", "", "", "", f"kept, {SIZES[-1]} nodes: <= 10 %: {'met' if worst <= 10.0 else 'NOT met'}",
                 "", ""])
    report("listener_http", ["transport", "nodes", "connection", "listener CPU ms / heartbeat",
                             "listener core share", "trip p50 ms", "trip p95 ms"], rows, records)


if __name__ == "__main__":
    main()
