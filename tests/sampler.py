"""Sample one namespace's public IPs every INTERVAL seconds (run inside the namespace).

Usage: python sampler.py INTERVAL IP [IP...]
Prints a JSON line {"t": CLOCK_MONOTONIC, "held": [...]} at start and at every change;
an address counts as held when it is on an interface with link up (carrier).
Stops on SIGTERM, printing a last line.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collection"))
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import rtdump

running = True


def stop(*_args: object) -> None:
    global running
    running = False


def held(public: set[str]) -> list[str]:
    links, addrs = rtdump.read_links_and_addresses()
    up = {index for index, _name, flags, _mac in links if flags & rtdump.IFF_UP and flags & rtdump.IFF_LOWER_UP}
    return sorted(a for index, _f, a, _p, _s in addrs if index in up and a in public)


def main() -> None:
    interval = float(sys.argv[1])
    public = {ip.split("/")[0] for ip in sys.argv[2:]}
    signal.signal(signal.SIGTERM, stop)
    last = None
    samples = 0
    while running:
        now = held(public)
        samples += 1
        if now != last:
            print(json.dumps({"t": time.monotonic(), "held": now}), flush=True)
            last = now
        time.sleep(interval)
    print(json.dumps({"t": time.monotonic(), "held": last, "end": True, "samples": samples}), flush=True)


if __name__ == "__main__":
    main()
