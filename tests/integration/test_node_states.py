"""CTDB's node states at run time on a 3-host lab with the defaults: a failing `monitor` hook (UNHEALTHY),
`pubip ban` (and its end), ban credits for a node that fails every release, `pubip stop`/`continue`,
`pubip ipinfo`. Every test samples the kernels: never an IP on two hosts."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pubip.node import realtime
from tests.integration.test_listener import status, wait_idle, wait_until
from tests.support import labkit

pytestmark = pytest.mark.lab
MONITOR_INTERVAL = 5.0  # the watchdog's default


@pytest.fixture
def lab(lab_factory) -> Iterator[labkit.LabHandle]:  # type: ignore[no-untyped-def]
    yield lab_factory("--nodes", "3", "--vips", "6")


def hook(lab: labkit.LabHandle, host: str, name: str, body: str) -> Path:
    path = Path(next(h["dir"] for h in lab.hosts if h["name"] == host)) / "hooks" / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def op(lab: labkit.LabHandle, *args: str) -> dict[str, Any]:
    proc = labkit.pubip(*args, "--lab", lab.name, "--json", check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(json.loads(proc.stdout))


def test_a_failing_monitor_hook_moves_the_nodes_ips_away_and_back(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    flag = Path(lab.hosts[1]["dir"]) / "nfs-down"
    hook(lab, "node2", "50.nfs", f'[ "$1" = monitor ] || exit 0\n'
                                 f'[ -e {flag} ] && {{ echo "nfsd is not running" >&2; exit 1; }}\nexit 0\n')
    with labkit.Sampler(lab) as sampler:
        flag.touch()
        away = wait_until(lambda: lab.count_by_host() == {"node1": 3, "node2": 0, "node3": 3}, 60, lab)
        st = status(lab)
        table = labkit.pubip("status", "--lab", lab.name).stdout
        flag.unlink()
        back = wait_until(lambda: lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}, 60, lab)
        wait_idle(lab)
    assert sampler.double_holdings() == []
    assert st["nodes"]["node2"]["runtime_state"] == "unhealthy"
    assert st["nodes"]["node2"]["health"] == {"ok": False, "hook": "50.nfs", "message": "exit 1: nfsd is not running"}
    assert "UNHEALTHY: 50.nfs: exit 1: nfsd is not running" in table
    assert away <= MONITOR_INTERVAL + 5.0, f"IPs moved away after {away:.1f}s"
    logs = (lab.dir / "listener.log").read_text()[-4000:] + (Path(lab.hosts[1]["dir"]) / "watchdog.log").read_text()
    assert back <= MONITOR_INTERVAL + 10.0, f"IPs came back after {back:.1f}s\n{logs[-6000:]}"
    print(f"away after {away:.1f}s, back after {back:.1f}s")


@pytest.mark.slow
def test_a_ban_moves_the_nodes_ips_away_and_they_come_back_when_it_ends(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    preview = op(lab, "ban", "node2", "--for", "20", "--check")
    assert preview["check"] is True and sorted(m["from"] for m in preview["moves"]) == ["node2", "node2"]
    assert lab.count_by_host()["node2"] == 2  # a preview changes nothing
    wait_idle(lab)
    with labkit.Sampler(lab) as sampler:
        t0 = time.monotonic()
        banning = subprocess.Popen([*labkit.PUBIP, "ban", "node2", "--for", "20", "--lab", lab.name, "--json"],
                                   stdout=subprocess.PIPE, text=True, cwd=labkit.ROOT)
        took = wait_until(lambda: lab.count_by_host() == {"node1": 3, "node2": 0, "node3": 3}, 30, lab)
        st = status(lab)
        out, _err = banning.communicate(timeout=120)
        assert banning.returncode == 0 and json.loads(out)["success"] is True, \
            out + (lab.dir / "listener.log").read_text()[-3000:]
        wait_until(lambda: lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}, 60, lab)
        ended = time.monotonic() - t0
        wait_idle(lab)
    assert sampler.double_holdings() == []
    assert st["nodes"]["node2"]["runtime_state"] == "banned" and 5 < st["nodes"]["node2"]["banned_for"] <= 20
    assert took <= 5.0, f"node2's IPs moved {took:.1f}s after the ban"
    assert 20.0 <= ended <= 20.0 + 25.0, f"IPs back {ended:.1f}s after the ban"  # the ban, then one run
    assert "Ban of node2 ended" in (lab.dir / "listener.log").read_text()
    print(f"ban: IPs away after {took:.2f}s, back {ended:.1f}s after it")


@pytest.mark.slow
def test_a_node_that_fails_every_release_is_banned_and_runs_go_on(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    hook(lab, "node2", "10.broken", '[ "$1" = releaseip ] && { echo "cannot unexport" >&2; exit 1; }\nexit 0\n')
    ip = next(ip for ip, hs in lab.holders().items() if hs == ["node2"])
    with labkit.Sampler(lab) as sampler:
        proc = labkit.pubip("moveip", ip, "node1", "--lab", lab.name, "--json", check=False, timeout=600)
        moved = json.loads(proc.stdout)  # node2 must release it: it cannot
        assert proc.returncode == 1 and moved["success"] is False and "cannot unexport" in moved["detail"]
        wait_until(lambda: status(lab)["nodes"]["node2"]["runtime_state"] == "banned", 120, lab)
        wait_until(lambda: lab.count_by_host()["node2"] == 0 and status(lab)["runs"][0]["success"] is True, 60, lab)
        st = wait_idle(lab)
    assert sampler.double_holdings() == []
    assert st["runs"][0]["success"] is True and all(len(hs) == 1 for hs in lab.holders().values())
    log = (lab.dir / "listener.log").read_text()
    assert "Banning node node2 for 300s: it kept 3 takeover runs in a row from completing" in log
    # without node2 the next run can succeed: it starts at once, not after the failed run's backoff
    after_ban = log.split("Banning node node2", 1)[1].splitlines()
    failed = next(i for i, line in enumerate(after_ban) if re.search(r"Takeover run \d+ failed: .*retrying in", line))
    assert "retrying now, a node died, came back or was banned" in after_ban[failed + 1], after_ban[:failed + 2]
    assert "Banned by the listener: releasing all public IPs" in (Path(lab.hosts[1]["dir"]) / "watchdog.log"
                                                                 ).read_text()


def test_stop_continue_and_ipinfo(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    ip = next(ip for ip, hs in lab.holders().items() if hs == ["node3"])
    with labkit.Sampler(lab) as sampler:
        assert op(lab, "stop", "node3")["success"] is True
        assert lab.count_by_host()["node3"] == 0 and status(lab)["nodes"]["node3"]["runtime_state"] == "stopped"
        info = op(lab, "ipinfo", ip)
        assert info["holders"] == [info["planned"]] and info["planned"] in ("node1", "node2")
        assert info["last_move"]["from"] == "node3" and info["available_on"] == ["node1", "node2"]
        assert op(lab, "continue", "node3")["success"] is True
        assert lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}  # rebalanced: its share back
    assert sampler.double_holdings() == []
    text = labkit.pubip("ipinfo", ip, "--lab", lab.name).stdout
    assert f"Public IP     {ip}" in text and "Last move" in text


def test_a_graceful_shutdown_hands_the_ips_over_at_once_and_a_watchdog_restart_moves_nothing(
        lab: labkit.LabHandle) -> None:
    from pubip import lab as labmod

    wait_idle(lab)
    before = lab.holders()
    with labkit.Sampler(lab) as sampler:
        t0 = time.monotonic()
        labmod.stop_watchdog(lab.info, "node1")  # a plain restart of the watchdog service
        labmod.start_watchdog(lab.info, "node1")
        time.sleep(3.0)
        restarted = time.monotonic()
    assert lab.holders() == before and sampler.unheld(t0, restarted) == [] and sampler.double_holdings() == []

    h = lab.hosts[2]
    lost = sorted(ip for ip, hs in before.items() if hs == ["node3"])
    with labkit.Sampler(lab) as sampler:
        t0 = time.monotonic()
        left = lab.in_host("node3", sys.executable, "-m", "pubip.node.main", "--leave", "--config",
                           h["watchdog_config"])
        t1 = time.monotonic()
        time.sleep(0.5)
        t2 = time.monotonic()
    assert left.returncode == 0, left.stdout + left.stderr
    assert all(lab.holders()[ip] in (["node1"], ["node2"]) for ip in lost)
    assert sampler.double_holdings() == []
    assert sampler.unheld(t0, t2, min_gap=0.5) == [], sampler.unheld(t0, t2)  # each IP unheld 0.5 s at most
    assert t1 - t0 < 5.0
    gaps = [float(b) - float(a) for a, b in (g.rsplit(" ", 1)[1].split("-") for g in sampler.unheld(t0, t2))]
    print(f"graceful leave: IPs unheld at most {max(gaps, default=0.0):.3f}s; --leave returned after {t1 - t0:.2f}s")
    log = (lab.dir / "listener.log").read_text()
    assert "Node node3 is leaving (graceful shutdown)" in log and "Node node3 is gone (it left gracefully" in log
    time.sleep(1.0)
    assert status(lab)["nodes"]["node3"]["alive"] is False  # its watchdog still runs, leaving: not back
    # the host comes back: a new watchdog process, and node3 gets its share again
    labmod.stop_watchdog(lab.info, "node3")
    labmod.start_watchdog(lab.info, "node3")
    wait_until(lambda: lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}, 60, lab)


def test_the_watchdog_runs_real_time_and_its_hooks_as_normal_processes(lab: labkit.LabHandle) -> None:
    """CTDB's SCHED_FIFO 1: every thread of the watchdog; a hook it runs goes back to SCHED_OTHER."""
    host = lab.hosts[0]
    seen = Path(host["dir"]) / "hook-policy"
    hook(lab, "node1", "10.policy", f'[ "$1" = monitor ] || exit 0\nchrt -p $$ > {seen}.tmp && mv {seen}.tmp {seen}\n')
    log = Path(host["dir"]) / "watchdog.log"
    wait_until(lambda: log.exists() and "Watchdog started" in log.read_text(), 30, lab)  # its threads run from then on
    assert "scheduling SCHED_FIFO" in log.read_text()
    threads = {int(t.name) for t in Path(f"/proc/{host['watchdog_pid']}/task").iterdir()}
    assert len(threads) >= 4 and {realtime.policy(t) for t in threads} == {"SCHED_FIFO"}
    wait_until(seen.exists, MONITOR_INTERVAL + 10, lab)
    assert "SCHED_OTHER" in seen.read_text(), seen.read_text()
