"""`make bench-watchdog`: how fast a vanished public IP is reported, and what an idle watchdog costs.

Lab of 2 hosts; a stand-in listener (tests/support/fake_controller.py) in the controller
namespace timestamps each request with CLOCK_MONOTONIC, the clock the flush is
timed with. Trials: the seed's network restart on node1 (flush eth0, re-add the
host address), then the IPs are put back and the watchdog settles. With netlink
on (default) and off (interval 1 s only). Then the idle daemon's RSS and CPU
over --idle seconds. Targets: p95 <= 50 ms with netlink, <= interval without;
RSS <= 30 MB, CPU <= 0.5 % of a core.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "watchdog"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import p95, report  # noqa: E402

from pubip import lab  # noqa: E402


def requests(out: Path) -> list[dict]:
    return [json.loads(line) for line in out.read_text().splitlines() if line.strip()]


def trial(info: dict, out: Path, host: dict) -> float:
    ns = host["netns"]
    before = len(requests(out))
    public = [ip for ifname, ips in lab.kernel_addresses(ns).items() for ip in ips if ip in info["public_ips"]]
    subprocess.run(["ip", "-n", ns, "addr", "flush", "dev", "eth0"], check=True)
    t0 = time.monotonic()
    subprocess.run(["ip", "-n", ns, "addr", "add", f"{host['address']}/24", "dev", "eth0"], check=True)
    deadline = t0 + 5
    while len(requests(out)) <= before and time.monotonic() < deadline:
        time.sleep(0.005)
    got = requests(out)[before:]
    if not got:
        raise SystemExit("no request reached the listener within 5 s")
    for ip in public:  # put them back, as the takeover run would
        subprocess.run(["ip", "-n", ns, "addr", "add", ip, "dev", "eth0"], check=False, capture_output=True)
    time.sleep(1.3)  # the watchdog sees a clean state again
    return got[0]["t"] - t0


def idle_cost(pid: int, seconds: float) -> tuple[float, float]:
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    c0, t0 = cpu(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = cpu(), time.monotonic()
    rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if line.startswith("VmRSS:"))
    return rss_kb / 1024.0, 100.0 * (c1 - c0) / (t1 - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--idle", type=float, default=60.0)
    args = ap.parse_args()
    name = f"benchwd{os.getpid() % 10000}"
    rows, records = [], []
    try:
        info = lab.Lab(name, 2, 4).up(progress=lambda _l: None)
        lab.run_playbook(info, "takeover_run.yml")
        out = Path(info["dir"]) / "requests.jsonl"
        out.write_text("")
        fake = subprocess.Popen(["ip", "netns", "exec", info["controller"]["netns"], sys.executable,
                                 str(ROOT / "tests/support/fake_controller.py"), "listener",
                                 str(lab.LISTENER_PORT), str(out),
                                 "--secrets", str(Path(info["dir"]) / "listener-secrets.json")],
                                stderr=subprocess.PIPE, text=True)
        assert fake.stderr is not None and fake.stderr.readline().strip() == "ready"
        host = info["hosts"][0]
        for mode in ("netlink", "interval only"):
            cfg = Path(host["watchdog_config"])
            text = cfg.read_text().replace("\nnetlink: false", "")
            cfg.write_text(text + ("netlink: false\n" if mode != "netlink" else ""))
            lab.stop_watchdog(info, host["name"])
            lab.start_watchdog(info, host["name"])
            time.sleep(1.5)
            times = [trial(info, out, host) for _ in range(args.trials)]
            target = 0.050 if mode == "netlink" else 1.0
            p = p95(times)
            rows.append([f"flush -> request ({mode})", len(times), f"{statistics.median(times) * 1000:.1f} ms",
                         f"{p * 1000:.1f} ms", f"<= {target * 1000:.0f} ms", "ok" if p <= target else "MISSED"])
            records.append({"measure": f"flush_to_request_{mode.replace(' ', '_')}", "trials": times,
                            "p50_s": statistics.median(times), "p95_s": p, "target_s": target})
        cfg.write_text(cfg.read_text().replace("\nnetlink: false", ""))
        lab.stop_watchdog(info, host["name"])
        pid = lab.start_watchdog(info, host["name"])
        time.sleep(3)
        rss, cpu = idle_cost(pid, args.idle)
        rows.append([f"idle daemon RSS over {args.idle:.0f} s", 1, f"{rss:.1f} MB", "", "<= 30 MB",
                     "ok" if rss <= 30 else "MISSED"])
        rows.append([f"idle daemon CPU over {args.idle:.0f} s", 1, f"{cpu:.2f} %", "", "<= 0.5 %",
                     "ok" if cpu <= 0.5 else "MISSED"])
        records.append({"measure": "idle", "seconds": args.idle, "rss_mb": rss, "cpu_percent": cpu})
        fake.kill()
    finally:
        lab.down(name)
    report("watchdog", ["measure", "n", "p50 / value", "p95", "target", ""], rows, records)


if __name__ == "__main__":
    main()
