"""Follow one namespace's public IPs (run inside the namespace): read them at start, on every rtnetlink link
or address event, and every INTERVAL seconds at least.

Usage: python sampler.py INTERVAL IP [IP...]
Prints a JSON line {"t": CLOCK_MONOTONIC, "held": [...]} at start and at every change, timed when the read
that saw it ended; an address counts as held when it is on an interface with link up (carrier).
Stops on SIGTERM, printing a last line with the number of reads.
"""

from __future__ import annotations

import json
import select
import signal
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "collection"))
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import rtdump

running = True


def stop(*_args: object) -> None:
    global running
    running = False


def held(public: set[str]) -> list[str]:
    links, addrs = rtdump.read_links_and_addresses()
    up = {index for index, _name, flags, _mac in links if flags & rtdump.IFF_UP and flags & rtdump.IFF_LOWER_UP}
    return sorted(a for index, _f, a, _p, _s in addrs if index in up and a in public)


def drain(events: socket.socket) -> None:
    """Every event queued: one read covers them all (an overflow, ENOBUFS, is an event too)."""
    while True:
        try:
            rtdump.wait_event(events)
        except BlockingIOError:
            return


def main() -> None:
    interval = float(sys.argv[1])
    public = {ip.split("/")[0] for ip in sys.argv[2:]}
    events = rtdump.subscribe()  # before the first read: no change falls between the two
    events.setblocking(False)
    wake_r, wake_w = socket.socketpair()  # SIGTERM wakes the select at once
    for s in (wake_r, wake_w):
        s.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGTERM, stop)
    last = None
    reads = 0
    while running:
        now = held(public)
        reads += 1
        if now != last:
            print(json.dumps({"t": time.monotonic(), "held": now}), flush=True)
            last = now
        ready, _, _ = select.select([events, wake_r], [], [], interval)
        if events in ready:
            drain(events)
    print(json.dumps({"t": time.monotonic(), "held": last, "end": True, "samples": reads}), flush=True)


if __name__ == "__main__":
    main()
