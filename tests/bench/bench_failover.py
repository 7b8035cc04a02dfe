"""`make bench-failover`: the whole loop, timed on a 3-host lab with watchdogs and the listener, with the defaults
a user gets, at random moments - not only from an idle cluster.

Moments: `after lab up` (the first trial, while the listener's start-up run runs), `during a run` (the
listener restarted - it starts with a takeover run - and the fault 0.2-4 s later), `1 s after the previous
trial` (its verifying run, if any, is running) and `idle` (no run running or pending).
1. The seed scenario: `networking restart` on node1 (flush eth0, re-add its address) until node1
   holds its public IPs again - with the defaults (fast retake on), and with fast retake off.
2. Host death: node3's processes stop and its links lose carrier, until every one of its public
   IPs is held by a survivor; then it is revived and the cluster rebalanced before the next trial.
   Also at the moment `during a run changing hosts`: a moveip between node1 and node2 through the
   listener, and the death 0-1.5 s after that run began changing hosts (releasing, taking, recording).
3. Partition with carrier: node3 cut off from the others and the listener by blackhole routes (alive,
   links up), until the survivors hold its IPs - after its lease ran out and it let go; then healed.
4. HA listeners (a 3-host lab with `--listeners 2`): the leader's host and node3 killed at the same moment,
   until the survivors hold node3's IPs; the leader's host alone, until the standby leads (its status says
   so). Then both hosts are revived before the next trial.
5. A single listener SIGKILLed, node3 killed meanwhile (0.5-3 s later), the listener restarted 1 s after the
   death: from the restart until the survivors hold node3's IPs.
Targets: seed scenario p95 <= 0.3 s; host death p95 <= 2.5 s; partition p95 <= 3 s (from idle); leader and
node killed p95 <= 5 s; a new leader p95 <= 3 s; after a listener restart p95 <= 2 s.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "watchdog"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import p95, report  # noqa: E402

from pubip import lab  # noqa: E402


def settle(info: dict, seconds: float = 2.0) -> None:
    time.sleep(seconds)


MOMENTS = ("idle", "during a run", "1 s after the previous trial")
BACKGROUND: list[subprocess.Popen[bytes]] = []  # operations a moment started, reaped after the trial


@contextlib.contextmanager
def running_lab(name: str, fast: bool = True) -> Iterator[dict]:
    """A 3-host lab right after `lab up`: first run done, the listener (starting with its own run) and the
    watchdogs just started; removed after."""
    try:
        info = lab.Lab(name, 3, 6, fast_retake=fast).up(progress=lambda _l: None)
        lab.run_playbook(info, "takeover_run.yml")
        lab.start_listener(info)
        for h in info["hosts"]:
            lab.start_watchdog(info, h["name"])
        time.sleep(0.5)  # the watchdogs' first check and heartbeats
        yield info
    finally:
        lab.down(name)


def reach(info: dict, moment: str, rng: random.Random) -> None:
    """Bring the lab to MOMENT before a fault."""
    if moment == "idle":
        lab.wait_listener_idle(info)
        time.sleep(rng.uniform(0.5, 1.5))
    elif moment == "during a run":
        lab.wait_listener_idle(info)
        lab.stop_listener(info)  # idle: nothing cut short
        lab.start_listener(info)  # it starts with a takeover run (4-8 s here)
        time.sleep(rng.uniform(0.2, 4.0))
    elif moment == "1 s after the previous trial":
        time.sleep(1.0)
    elif moment == "during a run changing hosts":
        lab.wait_listener_idle(info)
        one, two = sorted(("node1", "node2"), key=lambda h: -len(lab.public_held(info, h)))
        ip = rng.choice(lab.public_held(info, one))
        runs = Path(info["dir"]) / "listener" / "runner"
        before = set(runs.glob("runstate-*.json"))
        BACKGROUND.append(subprocess.Popen([sys.executable, "-m", "pubip.cli", "moveip", ip, two, "--lab",
                                            info["name"]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
                b'"changing": true' in f.read_bytes() for f in set(runs.glob("runstate-*.json")) - before):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 1.5))


def reap() -> None:
    while BACKGROUND:
        BACKGROUND.pop().wait(300)


def seed_trials(fast: bool, trials: int, rng: random.Random) -> list[tuple[str, float]]:
    with running_lab(f"bfo{os.getpid() % 10000}{'f' if fast else 's'}", fast) as info:
        out = []
        for i in range(trials):
            moment = "after lab up" if i == 0 else MOMENTS[i % len(MOMENTS)]
            reach(info, moment, rng)
            _ips, took = lab.restart_network(info, "node1", 60)
            out.append((moment, took))
        return out


def fault_trials(tag: str, trials: int, fault: Callable[[dict], object], undo: Callable[[dict], object],
                 rng: random.Random, moments: tuple[str, ...]) -> list[tuple[str, float]]:
    """Seconds from FAULT on node3 until node1 and node2 hold every public IP node3 held, at the MOMENTS in
    turn; after each trial UNDO, and node3 gets its IPs back (a run) before the next one."""
    out = []
    with running_lab(f"{tag}{os.getpid() % 10000}") as info:
        lab.wait_listener_idle(info)
        seen_during = 0
        for i in range(trials):
            moment = moments[i % len(moments)]
            reach(info, moment, rng)
            lost = lab.public_held(info, "node3")
            t0 = time.monotonic()
            fault(info)
            while time.monotonic() - t0 < 60:
                held = set(lab.public_held(info, "node1")) | set(lab.public_held(info, "node2"))
                if set(lost) <= held:
                    break
                time.sleep(0.01)
            out.append((moment, time.monotonic() - t0))
            log = (Path(info["dir"]) / "listener.log").read_text()
            during = log.count(" during takeover run ") - seen_during
            seen_during += during
            print(f"{tag} trial {i + 1} ({moment}): {out[-1][1]:.2f}s"
                  + (f"; {during} orders during a run changing hosts" if during else ""), flush=True)
            undo(info)
            reap()
            deadline = time.monotonic() + 60
            while len(lab.public_held(info, "node3")) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)  # heartbeats and its lease return, a run gives node3 its IPs back
            lab.wait_listener_idle(info)
    return out


def death_trials(trials: int, rng: random.Random) -> list[tuple[str, float]]:
    def revive(info: dict) -> None:
        lab.revive_host(info, "node3")
        lab.start_watchdog(info, "node3")

    return fault_trials("bfod", trials, lambda info: lab.cut_host(info, "node3"), revive, rng,
                        ("idle", "during a run", "during a run changing hosts"))


def partition_trials(trials: int, rng: random.Random) -> list[tuple[str, float]]:
    return fault_trials("bfop", trials, lambda info: lab.partition(info, ["node3"], ["node1", "node2", "listener"]),
                        lab.heal, rng, ("idle",))


def leader_of(info: dict) -> tuple[dict | None, dict | None]:
    """(the leading controller, a standby) of an HA lab, by their own status."""
    from pubip.lab.observe import status_of

    lead, stand = None, None
    for c in info["controllers"]:
        st = status_of(info, c["netns"], c["address"], timeout=1)
        if st and st.get("role") == "leader":
            lead = c
        elif st:
            stand = c
    return lead, stand


def ha_trials(tag: str, trials: int, with_node: bool, rng: random.Random) -> list[tuple[str, float]]:
    """WITH_NODE: seconds from killing the leader's host and node3 until the survivors hold node3's IPs; else
    from killing the leader's host until the standby says it leads."""
    from pubip.lab.observe import status_of

    out = []
    name = f"{tag}{os.getpid() % 10000}"
    try:
        info = lab.Lab(name, 3, 6, listeners=2).up(progress=lambda _l: None)
        lab.start_services(info, progress=lambda _l: None)
        for i in range(trials):
            moment = "idle" if i % 2 == 0 else "1 s after the previous trial"
            if moment == "idle":
                lab.wait_listener_idle(info)
                time.sleep(rng.uniform(0.3, 1.5))
            else:
                time.sleep(1.0)
            lead, stand = leader_of(info)
            if lead is None or stand is None:
                time.sleep(2.0)
                lead, stand = leader_of(info)
            assert lead is not None and stand is not None, "no leader and standby"
            lost = lab.public_held(info, "node3")
            t0 = time.monotonic()
            lab.cut_host(info, lead["name"])
            if with_node:
                lab.cut_host(info, "node3")
            while time.monotonic() - t0 < 60:
                if with_node:
                    held = set(lab.public_held(info, "node1")) | set(lab.public_held(info, "node2"))
                    if set(lost) <= held:
                        break
                else:
                    st = status_of(info, stand["netns"], stand["address"], timeout=0.3)
                    if st and st.get("role") == "leader":
                        break
                time.sleep(0.01)
            out.append((moment, time.monotonic() - t0))
            print(f"{tag} trial {i + 1} ({moment}): {out[-1][1]:.2f}s", flush=True)
            lab.revive_host(info, lead["name"])
            if with_node:
                lab.revive_host(info, "node3")
                lab.start_watchdog(info, "node3")
            lab.save(info)
            deadline = time.monotonic() + 60
            while len(lab.public_held(info, "node3")) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        lab.down(name)
    return out


def restart_trials(trials: int, rng: random.Random) -> list[tuple[str, float]]:
    """Seconds from a listener restart until the survivors hold node3's IPs: the listener SIGKILLed, node3
    killed 0.5-3 s later, the listener started 1 s after the death."""
    out = []
    with running_lab(f"bfor{os.getpid() % 10000}") as info:
        for i in range(trials):
            lab.wait_listener_idle(info)
            lost = lab.public_held(info, "node3")
            lab.stop_listener(info)
            time.sleep(rng.uniform(0.5, 3.0))
            lab.cut_host(info, "node3")
            time.sleep(1.0)
            lab.start_listener(info)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                if set(lost) <= set(lab.public_held(info, "node1")) | set(lab.public_held(info, "node2")):
                    break
                time.sleep(0.01)
            out.append(("listener restarted", time.monotonic() - t0))
            print(f"restart trial {i + 1}: {out[-1][1]:.2f}s", flush=True)
            lab.revive_host(info, "node3")
            lab.start_watchdog(info, "node3")
            deadline = time.monotonic() + 60
            while len(lab.public_held(info, "node3")) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--death-trials", type=int, default=12)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=["seed", "death", "partition", "ha", "restart"],
                    help="one scenario (the seed: both; ha: both HA rows)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows, records = [], []
    scenarios = (
        ("seed", "network restart, defaults (fast retake)", lambda: seed_trials(True, args.trials, rng), 0.3),
        ("seed", "network restart, fast retake off", lambda: seed_trials(False, max(4, args.trials // 4), rng),
         None),
        ("death", "host death (3 hosts)", lambda: death_trials(args.death_trials, rng), 2.5),
        ("partition", "partition with carrier (3 hosts)",
         lambda: partition_trials(max(3, args.death_trials // 2), rng), 3.0),
        ("ha", "leader's host and a node killed (2 listeners)", lambda: ha_trials("bfoh", args.trials, True, rng),
         5.0),
        ("ha", "leader's host killed: a new leader (2 listeners)",
         lambda: ha_trials("bfol", args.trials, False, rng), 3.0),
        ("restart", "listener restarted after a node died meanwhile", lambda: restart_trials(args.trials, rng), 2.0),
    )
    for kind, label, run, target in scenarios:
        if args.only and kind != args.only:
            continue
        trials = run()
        times = [t for _m, t in trials]
        p = p95(times)
        worst = max(trials, key=lambda mt: mt[1])
        rows.append([label, len(times), f"{statistics.median(times):.3f}", f"{p:.3f}",
                     f"{worst[1]:.3f} ({worst[0]})", f"<= {target}" if target else "as low as Ansible allows",
                     "" if target is None else ("ok" if p <= target else "MISSED")])
        by_moment: dict[str, list[float]] = {}
        for moment, t in trials:
            by_moment.setdefault(moment, []).append(t)
        records.append({"measure": label, "trials": [{"moment": m, "s": t} for m, t in trials],
                        "p50_s": statistics.median(times), "p95_s": p, "target_s": target,
                        "max_by_moment_s": {m: max(ts) for m, ts in by_moment.items()}})
    report("failover", ["scenario", "n", "p50 s", "p95 s", "worst s (moment)", "target", ""], rows, records)


if __name__ == "__main__":
    main()
