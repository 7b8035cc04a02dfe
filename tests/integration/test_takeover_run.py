"""playbooks/takeover_run.yml on lab hosts over real SSH, with a sampler watching every kernel."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import labkit

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(lab_factory) -> Iterator[labkit.LabHandle]:  # type: ignore[no-untyped-def]
    yield lab_factory("--nodes", "3", "--vips", "6", "--no-watchdog", "--no-takeover")


@pytest.fixture(scope="module")
def settled() -> Iterator[labkit.LabHandle]:
    """One settled lab for the tests that must leave it as they found it (each checks it did)."""
    name = labkit.unique_name("s")
    try:
        handle = labkit.lab_up(name, "--nodes", "3", "--vips", "6", "--no-watchdog", "--no-takeover")
        run_ok(handle)
        yield handle
    finally:
        labkit.lab_down(name)


def run_ok(lab: labkit.LabHandle, *extra: str) -> str:
    proc = lab.takeover_run(*extra)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout


def recap_changed(stdout: str) -> dict[str, int]:
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", stdout, re.M)}


def every_ip_on_one_host(lab: labkit.LabHandle) -> dict[str, str]:
    holders = lab.holders()
    assert all(len(h) == 1 for h in holders.values()), holders
    return {ip: h[0] for ip, h in holders.items()}


def test_first_run_spreads_evenly_and_second_run_changes_nothing(lab: labkit.LabHandle) -> None:
    with labkit.Sampler(lab) as sampler:
        first = run_ok(lab)
        placed = every_ip_on_one_host(lab)
        assert lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}
        assert "6 moved, 0 kept, 0 unassigned" in first
        second = run_ok(lab)
        assert every_ip_on_one_host(lab) == placed
        assert "0 moved, 6 kept, 0 unassigned" in second
        assert set(recap_changed(second).values()) == {0}
    assert sampler.double_holdings() == []
    assert sampler.samples() > 20
    # Every host recorded the same generation, and knows its own IPs.
    for h in lab.hosts:
        rec = labkit.json.loads((Path(h["dir"]) / "record.json").read_text())
        assert rec["generation"] == 1 and rec["run_finished"] >= rec["run_started"]
        assert sorted(rec["this_node"]) == sorted(ip for ip, n in placed.items() if n == h["name"])


DEAD_NODE3 = ("-e", '{"pubip_dead_nodes": ["node3"]}')


@pytest.mark.slow
def test_unreachable_host_keeps_its_ips_until_named_dead(lab: labkit.LabHandle) -> None:
    run_ok(lab)
    held = lab.count_by_host()
    lab.cut("node3")
    proc = lab.takeover_run()
    assert proc.returncode != 0
    assert "node3 could not be gathered" in proc.stdout and "stay with it" in proc.stdout
    assert "pinned (not reached, IPs kept): node3" in proc.stdout
    assert {h: n for h, n in lab.count_by_host().items() if h != "node3"} == \
        {h: n for h, n in held.items() if h != "node3"}  # nothing of node3's went anywhere
    lab.set_group_var("pubip_unreachable_is_dead", True)  # CTDB's old rule, for clusters without watchdogs
    out = run_ok(lab)
    assert "disconnected: node3" in out and lab.count_by_host() == {"node1": 3, "node2": 3, "node3": 0}


def test_unreachable_host_loses_its_ips_and_gets_them_back_with_lcp2(lab: labkit.LabHandle) -> None:
    run_ok(lab)
    with labkit.Sampler(lab) as sampler:
        lab.cut("node3")
        out = run_ok(lab, *DEAD_NODE3)
        assert "disconnected: node3" in out
        assert lab.count_by_host() == {"node1": 3, "node2": 3, "node3": 0}
        every_ip_on_one_host(lab)
        lab.revive("node3")
        run_ok(lab)
        assert lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}
        every_ip_on_one_host(lab)
    assert sampler.double_holdings() == []


def test_no_ip_failback_keeps_ips_where_they_are(lab: labkit.LabHandle) -> None:
    lab.set_group_var("pubip_no_ip_failback", True)
    run_ok(lab)
    with labkit.Sampler(lab) as sampler:
        lab.cut("node3")
        run_ok(lab, *DEAD_NODE3)
        placed = every_ip_on_one_host(lab)
        lab.revive("node3")
        out = run_ok(lab)
        assert every_ip_on_one_host(lab) == placed
        assert lab.count_by_host()["node3"] == 0
        assert "0 moved, 6 kept" in out
    assert sampler.double_holdings() == []


def test_disabled_host_gives_up_its_ips(lab: labkit.LabHandle) -> None:
    run_ok(lab)
    with labkit.Sampler(lab) as sampler:
        lab.set_host_var("node2", "pubip_state", "disabled")
        out = run_ok(lab)
        assert lab.count_by_host() == {"node1": 3, "node2": 0, "node3": 3}
        every_ip_on_one_host(lab)
        assert "2 moved, 4 kept" in out
    assert sampler.double_holdings() == []


def test_check_mode_prints_moves_and_changes_nothing(lab: labkit.LabHandle) -> None:
    proc = lab.takeover_run("--check", "--diff")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "Check mode: planned, nothing changed." in proc.stdout
    assert "Move 198.51.100.1/24: - -> node3" in proc.stdout
    assert "+198.51.100.1/24 node3" in proc.stdout
    assert all(h == [] for h in lab.holders().values())
    assert not any((Path(h["dir"]) / "record.json").exists() for h in lab.hosts)


@pytest.mark.parametrize("change, culprit", [
    (("pubip_public_ips", [{"ip": "198.51.100.1/24", "interfaces": ["eth0"]},
                           {"ip": "198.51.100.1/24", "interfaces": ["eth0"]}]), "198.51.100.1 is listed twice"),
    (("pubip_public_ips", [{"ip": "198.51.100.1/40", "interfaces": ["eth0"]}]), "prefix '40' is invalid"),
    (("pubip_public_ips", [{"ip": "198.51.100.1/24", "interfaces": ["eth7"]}]), "interface eth7 exists on no node"),
    (("pubip_public_ips", [{"ip": "198.51.100.1/24", "interfaces": ["eth0"], "nodes": ["node9"]}]),
     "nodes names 'node9'"),
    (("pubip_algorithm", "roundrobin"), "pubip_algorithm 'roundrobin' is unknown"),
])
def test_bad_inventory_stops_before_any_host_changes(settled: labkit.LabHandle, change, culprit) -> None:  # type: ignore
    lab = settled
    before = lab.holders()
    records = {h["name"]: (Path(h["dir"]) / "record.json").read_text() for h in lab.hosts}
    good = lab.inventory_doc()
    lab.set_group_var(*change)
    try:
        proc = lab.takeover_run()
    finally:
        lab.write_inventory(good)
    assert proc.returncode != 0
    assert "Takeover run stopped before any host changed" in proc.stdout
    assert culprit in proc.stdout
    assert lab.holders() == before
    assert {h["name"]: (Path(h["dir"]) / "record.json").read_text() for h in lab.hosts} == records


def test_failed_release_keeps_the_ip_off_every_other_host(lab: labkit.LabHandle) -> None:
    run_ok(lab)
    placed = every_ip_on_one_host(lab)
    stuck = sorted(ip for ip, n in placed.items() if n == "node1")
    hook = Path(lab.hosts[0]["dir"]) / "hooks" / "10.refuse"
    hook.write_text('#!/bin/sh\n[ "$1" = releaseip ] && { echo "clients still attached to $3" >&2; exit 1; }\nexit 0\n')
    hook.chmod(0o755)
    lab.set_host_var("node1", "pubip_state", "disabled")
    with labkit.Sampler(lab) as sampler:
        proc = lab.takeover_run()
    assert proc.returncode != 0
    for ip in stuck:
        assert f"Release of IP {ip.split('/')[0]}" in proc.stdout or ip in proc.stdout
    assert "on node1 failed, so no other node took it" in proc.stdout
    assert "clients still attached to" in proc.stdout
    for ip in stuck:
        assert lab.holders()[ip] == ["node1"]
    assert sampler.double_holdings() == []


def test_a_host_lost_during_a_run_is_named_and_the_run_says_where_it_left_the_ips(lab: labkit.LabHandle) -> None:
    """Chaos: sshd died on node1 during a run. The summary task, run once on node1, read node1's record result -
    an unreachable host's has no summary - and failed the play before the finish phase: the run ended without
    naming the node that kept it from completing or saying where it left the IPs, and the listener issued no
    fast takeover orders until a run completed (15.9 s unheld)."""
    import threading
    import time

    from pubip import lab as labmod

    run_ok(lab)
    ip = sorted(ip for ip, n in every_ip_on_one_host(lab).items() if n == "node2")[0]
    started = Path(lab.hosts[1]["dir"]) / "take-started"
    hook = Path(lab.hosts[1]["dir"]) / "hooks" / "10.slow"
    hook.write_text(f'#!/bin/sh\n[ "$1" = takeip ] && {{ touch {started}; sleep 3; }}\nexit 0\n')
    hook.chmod(0o755)
    assert lab.in_host("node2", "ip", "addr", "del", ip, "dev", "eth0").returncode == 0
    out: list[labkit.subprocess.CompletedProcess[str]] = []
    run = threading.Thread(target=lambda: out.append(lab.takeover_run()))
    run.start()
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert started.exists(), "the take never began"
    labmod.stop_sshd(lab.info, "node1")  # node2 is taking its IP back; node1's record task comes next
    run.join(120)
    (proc,) = out
    assert proc.returncode != 0
    assert "has no attribute 'summary'" not in proc.stdout, proc.stdout[-3000:]
    finish = proc.stdout.split("TASK [pubip.cluster.takeover : Fail for every node that kept the run", 1)[-1]
    assert "incomplete: node1 was unreachable in the record phase" in finish, proc.stdout[-3000:]
    assert re.search(r"recorded_on:\s+- node2\s+- node3", finish)  # where it left the IPs, for the listener
    assert lab.holders()[ip] == ["node2"]


def test_ipv6_lab_works_the_same(lab_factory) -> None:  # type: ignore[no-untyped-def]
    lab6 = lab_factory("--nodes", "3", "--vips", "3", "--ipv6", "--no-watchdog", "--no-takeover")
    with labkit.Sampler(lab6) as sampler:
        run_ok(lab6)
        every_ip_on_one_host(lab6)
        assert lab6.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}
        v6 = [ip for ip in lab6.info["public_ips"] if ":" in ip]
        assert len(v6) == 3 and all(len(lab6.holders()[ip]) == 1 for ip in v6)
        lab6.cut("node1")
        run_ok(lab6, "-e", '{"pubip_dead_nodes": ["node1"]}')
        every_ip_on_one_host(lab6)
        assert lab6.count_by_host()["node1"] == 0
        out = run_ok(lab6, "-e", '{"pubip_dead_nodes": ["node1"]}')
        assert "0 moved, 6 kept" in out
    assert sampler.double_holdings() == []
