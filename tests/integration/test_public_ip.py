"""pubip.cluster.public_ip over real SSH into lab hosts, checked against their kernels."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import labkit

pytestmark = pytest.mark.lab
MODULE = "pubip.cluster.public_ip"
VIP = "198.51.100.1/24"
VIP2 = "198.51.100.2/24"
VIP6 = "2001:db8:100::1/64"


@pytest.fixture
def lab(lab_factory) -> labkit.LabHandle:  # type: ignore[no-untyped-def]
    return lab_factory("--nodes", "2", "--vips", "2", "--ipv6", "--eth1", "--no-watchdog", "--no-takeover")


def paths(lab: labkit.LabHandle, host: str = "node1") -> dict[str, Any]:
    d = next(h["dir"] for h in lab.hosts if h["name"] == host)
    return {"record_path": f"{d}/record.json", "lock_path": f"{d}/lock", "hook_dir": f"{d}/hooks", "node": host}


def call(lab: labkit.LabHandle, host: str = "node1", *flags: str, **args: Any) -> dict[str, Any]:
    return labkit.run_module(lab, host, MODULE, {**paths(lab, host), **args}, *flags)


def where(lab: labkit.LabHandle, host: str, ip: str) -> list[str]:
    return [ifname for ifname, ips in lab.addresses(host).items() if ip in ips]


def write_hook(lab: labkit.LabHandle, host: str, name: str, body: str) -> Path:
    hook = Path(paths(lab, host)["hook_dir"]) / name
    hook.write_text("#!/bin/sh\n" + body)
    hook.chmod(0o755)
    return hook


def test_take_release_and_redundant_both_ways(lab: labkit.LabHandle) -> None:
    spec = [{"ip": VIP, "interfaces": ["eth0", "eth1"]}]
    first = call(lab, state="present", addresses=spec)
    assert first["changed"] is True
    assert first["messages"][0].startswith(f"Takeover of IP {VIP} on interface eth0")
    assert where(lab, "node1", VIP) == ["eth0"]
    again = call(lab, state="present", addresses=spec)
    assert again["changed"] is False
    assert again["messages"] == [f"Redundant takeover of IP {VIP} on interface eth0 (ip already held)"]
    released = call(lab, state="absent", addresses=[{"ip": VIP}])
    assert released["changed"] is True
    assert released["messages"][0].startswith(f"Release of IP {VIP} on interface eth0")
    assert where(lab, "node1", VIP) == []
    redundant = call(lab, state="absent", addresses=[{"ip": VIP}])
    assert redundant["changed"] is False
    assert redundant["messages"] == [f"Redundant release of IP {VIP} (ip not held)"]


def test_fewest_public_ips_then_ipv6(lab: labkit.LabHandle) -> None:
    spec = [{"ip": VIP, "interfaces": ["eth0", "eth1"]}, {"ip": VIP2, "interfaces": ["eth0", "eth1"]},
            {"ip": VIP6, "interfaces": ["eth0"]}]
    result = call(lab, state="present", addresses=spec)
    assert result["changed"] is True
    assert where(lab, "node1", VIP) == ["eth0"]
    assert where(lab, "node1", VIP2) == ["eth1"]  # eth0 already carries one public IP
    assert where(lab, "node1", VIP6) == ["eth0"]
    # nodad: usable at once, not tentative
    out = lab.in_host("node1", "ip", "-6", "-o", "addr", "show", "dev", "eth0").stdout
    ours = [line for line in out.splitlines() if "2001:db8:100::1/64" in line]
    assert ours and "tentative" not in ours[0]  # the link-local address may still be, under load
    assert call(lab, state="present", addresses=spec)["changed"] is False


def test_move_off_a_downed_link_runs_updateip(lab: labkit.LabHandle) -> None:
    log = Path(paths(lab)["hook_dir"]).parent / "hooks.log"
    write_hook(lab, "node1", "10.log", f'echo "$@" >> {log}\n')
    spec = [{"ip": VIP, "interfaces": ["eth1", "eth0"]}]
    call(lab, state="present", addresses=spec)
    assert where(lab, "node1", VIP) == ["eth1"]
    # Cut eth1's carrier from the bridge side, as a pulled cable would (SSH runs over eth0).
    subprocess.run(["ip", "-n", lab.info["bridge_netns"], "link", "set", "h1e1", "down"], check=True)
    assert call(lab, state="query", addresses=spec)["public_ips"] == [{"ip": VIP, "interface": "eth1", "link": "down"}]
    moved = call(lab, state="present", addresses=spec)
    assert moved["changed"] is True
    assert moved["messages"][0].startswith(f"Update of IP {VIP} from interface eth1 to eth0 (link down)")
    assert where(lab, "node1", VIP) == ["eth0"]
    assert log.read_text().splitlines() == ["takeip eth1 198.51.100.1 24", "updateip eth1 eth0 198.51.100.1 24"]


def test_conflict_with_the_record_fails_unless_adopted(lab: labkit.LabHandle) -> None:
    record = {"generation": 4, "run_started": 1.0, "run_finished": 2.0,
              "public_ips": [{"ip": VIP, "node": "node2", "interfaces": ["eth0"]}], "nodes": {}}
    assert call(lab, state="record", record=record)["changed"] is True
    lab.in_host("node1", "ip", "addr", "add", VIP, "dev", "eth0")
    query = call(lab, state="query")
    assert query["conflicts"] == [{"ip": VIP, "interface": "eth0", "node": "node1", "assigned": "node2"}]
    failed = call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    assert failed["failed"] is True
    assert f"IP {VIP} is held on interface eth0 of node1, but the assignment record gives it to node2" in failed["msg"]
    adopted = call(lab, state="present", adopt=True, addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    assert adopted.get("failed") is False and adopted["changed"] is False


def test_hooks_get_ctdb_argv_and_a_failing_hook_names_itself(lab: labkit.LabHandle) -> None:
    log = Path(paths(lab)["hook_dir"]).parent / "hooks.log"
    write_hook(lab, "node1", "10.first", f'echo "first $@" >> {log}\n')
    write_hook(lab, "node1", "20.second", f'echo "second $@" >> {log}\n')
    call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    call(lab, state="absent", addresses=[{"ip": VIP}])
    assert log.read_text().splitlines() == [
        "first takeip eth0 198.51.100.1 24", "second takeip eth0 198.51.100.1 24",
        "first releaseip eth0 198.51.100.1 24", "second releaseip eth0 198.51.100.1 24"]
    # the shipped per-IP policy routing hook: the IP's own table and rule while it is held here, none after
    hook_dir = Path(paths(lab)["hook_dir"])
    routing = hook_dir / "11.routing"
    routing.write_text((labkit.ROOT / "collection/ansible_collections/pubip/cluster/extensions/hooks/11.routing")
                       .read_text())
    routing.chmod(0o755)
    (hook_dir / "policy_routing").write_text("# public IP, destination, gateway\n198.51.100.1 0.0.0.0/0 192.0.2.254\n"
                                             "198.51.100.1 203.0.113.0/24\n")
    call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    rule = re.search(r"from 198\.51\.100\.1 lookup (\d+)", lab.in_host("node1", "ip", "-4", "rule").stdout)
    assert rule is not None
    table = lab.in_host("node1", "ip", "-4", "route", "show", "table", rule.group(1)).stdout
    assert "default via 192.0.2.254 dev eth0" in table and "203.0.113.0/24 dev eth0" in table
    assert table.count("src 198.51.100.1") == 2
    call(lab, state="absent", addresses=[{"ip": VIP}])
    assert "198.51.100.1" not in lab.in_host("node1", "ip", "-4", "rule").stdout
    assert lab.in_host("node1", "ip", "-4", "route", "show", "table", rule.group(1)).stdout.strip() == ""
    routing.unlink()
    bad = write_hook(lab, "node1", "30.broken", 'echo "service refused $3" >&2\nexit 3\n')
    failed = call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    assert failed["failed"] is True
    assert str(bad) in failed["msg"] and "exit 3" in failed["msg"] and "service refused 198.51.100.1" in failed["msg"]
    assert where(lab, "node1", VIP) == []  # not held with its services failed


def test_check_and_diff_mode_change_nothing(lab: labkit.LabHandle) -> None:
    spec = [{"ip": VIP, "interfaces": ["eth0"]}, {"ip": VIP6, "interfaces": ["eth0"]}]
    before = lab.addresses("node1")
    planned = call(lab, "node1", "--check", "--diff", state="present", addresses=spec)
    assert planned["changed"] is True
    assert [a["action"] for a in planned["actions"]] == ["take", "take"]
    added = sorted(line[1:] for line in planned["diff_text"].splitlines() if line.startswith("+") and
                   not line.startswith("+++"))
    removed = [line for line in planned["diff_text"].splitlines() if line.startswith("-") and
               not line.startswith("---")]
    assert added == sorted([f"{VIP}@eth0", f"{VIP6}@eth0"]) and removed == []
    assert lab.addresses("node1") == before
    call(lab, state="present", addresses=spec)
    planned = call(lab, "node1", "--check", state="absent", addresses=[{"ip": VIP}])
    assert planned["changed"] is True and where(lab, "node1", VIP) == ["eth0"]
    assert not Path(paths(lab)["record_path"]).exists()


@pytest.mark.parametrize("addresses, culprit", [
    ([{"ip": "198.51.100.300/24", "interfaces": ["eth0"]}], "'198.51.100.300'"),
    ([{"ip": "198.51.100.1/33", "interfaces": ["eth0"]}], "prefix '33' is invalid"),
    ([{"ip": "198.51.100.1", "interfaces": ["eth0"]}], "198.51.100.1 has no prefix"),
    ([{"ip": "198.51.100.1/24", "interfaces": ["eth9"]}], "interface eth9 does not exist"),
    ([{"ip": "198.51.100.1/24", "interfaces": ["eth8", "eth9"]}], "allowed on no existing interface (eth8, eth9)"),
    ([{"ip": "198.51.100.2/24", "interfaces": ["eth0"]}, {"ip": "198.51.100.2/25", "interfaces": ["eth0"]}],
     "listed with two prefixes"),
])
def test_bad_input_fails_naming_the_culprit_and_changes_nothing(lab, addresses, culprit) -> None:  # type: ignore
    ok = [{"ip": "198.51.100.9/24", "interfaces": ["eth0"]}]  # a valid IP in the same call is not taken either
    before = lab.addresses("node1")
    result = call(lab, state="present", addresses=ok + addresses)
    assert result["failed"] is True
    assert culprit in result["msg"]
    assert lab.addresses("node1") == before


def test_record_is_written_atomically_and_read_back(lab: labkit.LabHandle) -> None:
    record = {"generation": 7, "run_started": 10.0, "run_finished": 11.5, "nodes": {"node1": {"pnn": 0}},
              "public_ips": [{"ip": VIP, "node": "node1", "interfaces": ["eth0"]},
                             {"ip": VIP2, "node": "node2", "interfaces": ["eth0"]}]}
    first = call(lab, state="record", record=record)
    assert first["changed"] is True
    data = json.loads(Path(paths(lab)["record_path"]).read_text())
    assert data["generation"] == 7 and data["this_node"] == [VIP] and data["node"] == "node1"
    assert data["run_started"] == 10.0 and data["run_finished"] == 11.5
    assert call(lab, state="record", record=record)["changed"] is False
    assert call(lab, state="query")["record"]["generation"] == 7
    assert not [p for p in Path(paths(lab)["record_path"]).parent.iterdir() if p.name.startswith(".record.")]


def test_a_run_releases_what_it_does_not_keep_and_marks_what_it_keeps(lab: labkit.LabHandle) -> None:
    # node1's record gives it VIP and VIP2; a run that gathered it without VIP2 (then retaken by its watchdog)
    # keeps only VIP there: its release takes VIP2 away too, though it was not in the release list
    record = {"generation": 4, "run_started": 10.0, "run_finished": 11.5, "nodes": {"node1": {"pnn": 0}},
              "public_ips": [{"ip": VIP, "node": "node1", "interfaces": ["eth0"]},
                             {"ip": VIP2, "node": "node1", "interfaces": ["eth0"]}]}
    call(lab, state="record", record=record)
    call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}, {"ip": VIP2, "interfaces": ["eth0"]}])
    out = call(lab, state="absent", addresses=[], keep=[VIP], run_started=20.0, run_id="r1")
    assert out["changed"] is True and len(out["messages"]) == 1
    assert out["messages"][0].startswith(f"Release of IP {VIP2} on interface eth0")
    assert where(lab, "node1", VIP) == ["eth0"] and where(lab, "node1", VIP2) == []
    data = json.loads(Path(paths(lab)["record_path"]).read_text())
    assert data["run_id"] == "r1" and data["run_keep"] == [VIP]  # the watchdog may retake VIP meanwhile


def _capture(lab: labkit.LabHandle, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(["ip", "netns", "exec", lab.ctl, sys.executable, str(labkit.SUPPORT / "capture.py"),
                             "eth0", str(seconds)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stderr.readline().strip() == "ready"
    return proc


def test_announcements_carry_the_right_addresses_and_mac(lab: labkit.LabHandle) -> None:
    mac = json.loads(lab.in_host("node1", "ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    cap = _capture(lab, 12.0)
    try:
        call(lab, state="present", announce_count=2,
             addresses=[{"ip": VIP, "interfaces": ["eth0"]}, {"ip": VIP6, "interfaces": ["eth0"]}])
    finally:
        time.sleep(0.3)
        cap.terminate()
    packets = [json.loads(line) for line in (cap.stdout.read() if cap.stdout else "").splitlines()]
    arps = [p for p in packets if p["kind"] == "arp" and p["sender_ip"] == "198.51.100.1"]
    assert sorted(p["op"] for p in arps) == [1, 1, 2, 2]
    for p in arps:
        assert p["target_ip"] == "198.51.100.1" and p["sender_mac"] == mac and p["eth_src"] == mac
        assert p["eth_dst"] == "ff:ff:ff:ff:ff:ff"
        assert p["target_mac"] == ("00:00:00:00:00:00" if p["op"] == 1 else mac)
    nas = [p for p in packets if p["kind"] == "na" and p["target"] == "2001:db8:100::1"]
    assert len(nas) == 2
    for p in nas:
        assert p["override"] and not p["solicited"] and p["target_mac"] == mac
        assert p["dst"] == "ff02::1" and p["hop_limit"] == 255


def test_release_resets_tcp_connections(lab: labkit.LabHandle) -> None:
    call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.hosts[0]["netns"], sys.executable, "-c",
         "import socket,sys,time\n"
         "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
         "s.bind(('198.51.100.1', 4455)); s.listen(); print('listening', flush=True)\n"
         "c,_=s.accept(); time.sleep(30)\n"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
        client = subprocess.Popen(
            ["ip", "netns", "exec", lab.ctl, sys.executable, "-c",
             "import socket,sys\n"
             "c=socket.create_connection(('198.51.100.1', 4455), timeout=5); print('connected', flush=True)\n"
             "c.settimeout(20)\n"
             "try:\n    data=c.recv(10); print('eof' if not data else 'data', flush=True)\n"
             "except ConnectionResetError: print('reset', flush=True)\n"
             "except socket.timeout: print('timeout', flush=True)\n"], stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None and client.stdout.readline().strip() == "connected"
        released = call(lab, state="absent", addresses=[{"ip": VIP}])
        assert "(1 connections killed)" in released["messages"][0]
        assert client.stdout.readline().strip() == "reset"
        client.wait(timeout=10)
    finally:
        server.kill()
        server.wait()


def test_connections_to_other_addresses_survive(lab: labkit.LabHandle) -> None:
    # The host's own SSH connection (ControlPersist) carries on after a release.
    call(lab, state="present", addresses=[{"ip": VIP, "interfaces": ["eth0"]}])
    call(lab, state="absent", addresses=[{"ip": VIP}])
    assert call(lab, state="query")["changed"] is False


def test_socket_family_support() -> None:
    assert socket.has_ipv6


def test_releasing_the_first_ip_of_a_subnet_keeps_the_others(lab: labkit.LabHandle) -> None:
    spec = [{"ip": VIP, "interfaces": ["eth0"]}, {"ip": VIP2, "interfaces": ["eth0"]}]
    call(lab, state="present", addresses=spec)
    call(lab, state="absent", addresses=[{"ip": VIP}])  # VIP is the subnet's primary address
    assert where(lab, "node1", VIP) == [] and where(lab, "node1", VIP2) == ["eth0"]
