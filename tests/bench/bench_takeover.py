"""`make bench-takeover`: wall time of takeover runs on 3, 10 and 30 lab hosts.

For each size: a one-task `command: true` playbook on the same hosts (the
baseline: what Ansible itself costs), a no-op takeover run (everything already
in place), and a run that moves every public IP (every host's public IPs
flushed first, as a network restart would). Median of --repeat runs each.
Targets: no-op on 3 hosts <= 1.3 x the baseline; no-op on 30 hosts < 5 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "watchdog"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import report  # noqa: E402

from pubip import lab  # noqa: E402

ONE_TASK = str(ROOT / "tests/bench/one_task.yml")


def timed(info: dict, playbook: str) -> float:
    cmd = [str(Path(info["python"]).parent / "ansible-playbook"), playbook]
    start = time.perf_counter()
    proc = subprocess.run(["ip", "netns", "exec", info["controller"]["netns"], *cmd], env=lab.controller_env(info),
                          capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{playbook} failed:\n{proc.stdout[-3000:]}")
    return took


def flush_public_ips(info: dict) -> None:
    public = set(info["public_ips"])
    for h in info["hosts"]:
        lines = [f"addr del {ip} dev {ifname}" for ifname, ips in lab.kernel_addresses(h["netns"]).items()
                 for ip in ips if ip in public]
        if lines:
            subprocess.run(["ip", "-force", "-n", h["netns"], "-batch", "-"], input="\n".join(lines) + "\n",
                           text=True, capture_output=True, check=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="3,10,30")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    playbook = str(lab_playbook())
    rows, records = [], []
    for n in (int(x) for x in args.sizes.split(",")):
        name = f"bench{os.getpid() % 10000}n{n}"
        try:
            info = lab.Lab(name, n, 2 * n, watchdog=False).up(progress=lambda _line: None)
            timed(info, playbook)  # first run: places every IP, warms SSH connections
            base = [timed(info, ONE_TASK) for _ in range(args.repeat)]
            noop = [timed(info, playbook) for _ in range(args.repeat)]
            moving = []
            for _ in range(args.repeat):
                flush_public_ips(info)
                moving.append(timed(info, playbook))
        finally:
            lab.down(name)
        b, o, m = (statistics.median(x) for x in (base, noop, moving))
        ratio = o / b
        target = "<= 1.3x" if n == 3 else ("< 5 s" if n == 30 else "")
        ok = {3: ratio <= 1.3, 30: o < 5.0}.get(n)
        rows.append([n, 2 * n, f"{b:.2f}", f"{o:.2f}", f"{ratio:.2f}", f"{m:.2f}", target,
                     "" if ok is None else ("ok" if ok else "MISSED")])
        records.append({"hosts": n, "public_ips": 2 * n, "one_task_s": base, "noop_run_s": noop,
                        "move_all_run_s": moving, "median_one_task_s": round(b, 3), "median_noop_s": round(o, 3),
                        "median_move_all_s": round(m, 3), "noop_over_one_task": round(ratio, 3)})
    report("takeover", ["hosts", "IPs", "one-task s", "no-op run s", "no-op/one-task", "move-all run s", "target",
                        ""], rows, records)


def lab_playbook() -> Path:
    return ROOT / "playbooks/takeover_run.yml"


if __name__ == "__main__":
    main()
