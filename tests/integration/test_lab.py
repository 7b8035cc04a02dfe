"""The local lab: real namespaces, real sshd, reached by Ansible over SSH."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest

from tests.support import labkit

pytestmark = pytest.mark.lab

DOC_RANGES = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")]


def _ping_all(handle: labkit.LabHandle) -> dict[str, str]:
    proc = handle.in_controller("ansible", "pubip_nodes", "-m", "ansible.builtin.ping", timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # what a user reads: not cryptography's "DSA is deprecated" from ansible-core's imports (_collection.RUN_ENV)
    assert "Warning" not in proc.stderr, proc.stderr
    return {h["name"]: "pong" for h in handle.hosts if f"{h['name']} | SUCCESS" in proc.stdout}


def test_up_down_leaves_no_residue() -> None:
    name = labkit.unique_name("r")
    try:
        handle = labkit.lab_up(name, "--nodes", "2", "--vips", "2", "--no-watchdog", "--no-takeover")
        sshd_pids = {h["sshd_pid"] for h in handle.hosts}
        assert sshd_pids <= labkit.live_pids()
        assert {h["netns"] for h in handle.hosts} <= labkit.netns_list()
        assert handle.dir.is_dir()
    finally:
        labkit.lab_down(name)
    # only this lab's: other labs of parallel test workers come and go meanwhile
    assert {ns for ns in labkit.netns_list() if ns.startswith(f"pubip-{name}-")} == set()
    assert not (sshd_pids & labkit.live_pids())
    assert labkit.processes_mentioning(str(handle.dir)) == []
    assert not handle.dir.exists()
    # Running it twice is fine.
    assert labkit.pubip("lab", "down", "--name", name).returncode == 0



def test_lab_json_contract_and_ansible_reaches_every_host(lab3: labkit.LabHandle) -> None:
    info = lab3.info
    lab_json = Path(info["dir"]) / "lab.json"
    assert json.loads(lab_json.read_text()) == info
    assert set(info) >= {"name", "dir", "inventory", "controller", "hosts", "public_ips"}
    assert info["controller"]["address"] == "192.0.2.254"
    assert [h["name"] for h in info["hosts"]] == ["node1", "node2", "node3"]
    assert [h["pnn"] for h in info["hosts"]] == [0, 1, 2]
    assert all(h["interfaces"] == ["eth0"] for h in info["hosts"])
    assert len(info["public_ips"]) == 6
    for h in info["hosts"]:
        addrs = lab3.addresses(h["name"])
        assert f"{h['address']}/24" in addrs["eth0"]
    assert _ping_all(lab3) == {"node1": "pong", "node2": "pong", "node3": "pong"}


def test_every_configured_address_is_in_documentation_ranges(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "2", "--vips", "2", "--ipv6", "--eth1", "--no-watchdog", "--no-takeover")
    for ip in handle.info["public_ips"]:
        assert any(ipaddress.ip_interface(ip).ip in net for net in DOC_RANGES), ip
    for h in handle.hosts:
        assert h["interfaces"] == ["eth0", "eth1"]
        for ifname, ips in handle.addresses(h["name"]).items():
            for ip in ips:
                addr = ipaddress.ip_interface(ip).ip
                assert addr.is_loopback or any(addr in net for net in DOC_RANGES), (ifname, ip)


def test_two_labs_coexist(lab_factory) -> None:  # type: ignore[no-untyped-def]
    first = lab_factory("--nodes", "2", "--vips", "2", "--no-watchdog", "--no-takeover")
    second = lab_factory("--nodes", "2", "--vips", "2", "--no-watchdog", "--no-takeover")
    assert {h["netns"] for h in first.hosts}.isdisjoint({h["netns"] for h in second.hosts})
    assert _ping_all(first) == {"node1": "pong", "node2": "pong"}
    assert _ping_all(second) == {"node1": "pong", "node2": "pong"}
    labkit.lab_down(first.name)
    assert _ping_all(second) == {"node1": "pong", "node2": "pong"}


@pytest.mark.parametrize("args, culprit", [
    (["--nodes", "0"], "--nodes 0"),
    (["--nodes", "300"], "--nodes 300"),
    (["--name", "has space"], "'has space'"),
    (["--vips", "-1"], "--vips -1"),
])
def test_bad_arguments_create_nothing(args: list[str], culprit: str) -> None:
    name = args[args.index("--name") + 1] if "--name" in args else labkit.unique_name("b")
    argv = ["lab", "up", *args] if "--name" in args else ["lab", "up", "--name", name, *args]
    proc = labkit.pubip(*argv, check=False)
    assert proc.returncode == 2
    assert culprit in proc.stderr
    # only this lab's namespaces: other tests build and remove their labs meanwhile (pytest -n)
    assert not [ns for ns in labkit.netns_list() if name in ns]


def test_down_cleans_up_after_a_crashed_up() -> None:
    name = labkit.unique_name("c")
    try:
        handle = labkit.lab_up(name, "--nodes", "2", "--vips", "0", "--no-watchdog", "--no-takeover")
        (handle.dir / "lab.json").unlink()  # what a crash before the end leaves
        sshd = {h["sshd_pid"] for h in handle.hosts}
    finally:
        labkit.lab_down(name)
    assert not any(ns.startswith(f"pubip-{name}-") for ns in labkit.netns_list())
    assert not (sshd & labkit.live_pids())
    assert not handle.dir.exists()


def test_status_reads_the_kernel(lab3: labkit.LabHandle) -> None:
    ip = lab3.info["public_ips"][0]
    lab3.in_host("node2", "ip", "addr", "add", ip, "dev", "eth0")
    rows = json.loads(labkit.pubip("lab", "status", "--name", lab3.name, "--json").stdout)
    assert {r["name"]: r["public_ips"] for r in rows} == {"node1": [], "node2": [ip], "node3": []}
    text = labkit.pubip("lab", "status", "--name", lab3.name).stdout
    assert "node2" in text and ip in text


def test_up_runs_the_first_takeover_run(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "3", "--vips", "6", "--no-watchdog")
    holders = handle.holders()
    assert sorted(len(h) for h in holders.values()) == [1] * 6
    assert handle.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}
