"""Clients notice a failover at once (CTDB's tickle ACKs): a client in the controller namespace holds an idle
TCP connection to a public IP, blocked in recv() with no timeout; when the IP moves, the new holder tickles it,
the client's connection is reset within a second of the IP being held again, and it reconnects."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pubip import lab as labmod
from pubip.lab.base import host_entry, kill_netns_processes
from tests.integration.test_listener import wait_idle, wait_until
from tests.support import labkit

pytestmark = pytest.mark.lab
PEERS = str(labkit.SUPPORT / "tickle_peers.py")
PORT = 7000
CLIENT6 = "2001:db8:100::fe"  # the controller's own address on the IPv6 public subnet (this lab's namespace)


@pytest.fixture
def lab(lab_factory) -> Iterator[labkit.LabHandle]:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "3", "--vips", "3", "--ipv6")
    subprocess.run(["ip", "-n", handle.ctl, "addr", "add", f"{CLIENT6}/64", "dev", "eth0", "nodad"], check=True)
    servers = [subprocess.Popen(["ip", "netns", "exec", h["netns"], sys.executable, PEERS, "server", str(PORT)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
               for h in handle.hosts]  # a silent server on every host: whoever holds an IP accepts on it
    for server in servers:
        assert server.stdout is not None and server.stdout.readline().strip() == "listening"
    yield handle
    for server in servers:
        assert server.stdout is not None
        server.stdout.close()


class Client:
    def __init__(self, lab: labkit.LabHandle, address: str):
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ctl, sys.executable, PEERS, "client", address,
                                      str(PORT)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.lines = [self.proc.stdout.readline().split()]
        assert self.lines[0][0] == "connected", self.lines
        self.port = int(self.lines[0][1])

    def outcome(self, timeout: float = 30) -> dict[str, float]:
        out, _err = self.proc.communicate(timeout=timeout)
        return {words[0]: float(words[1]) for words in (line.split() for line in out.splitlines()) if len(words) > 1}


def listed(lab: labkit.LabHandle, ip: str, port: int) -> bool:
    """The listener knows the connection (the holder lists them every tickle_interval, 5 s)."""
    out = labkit.pubip("tickle", ip, "--lab", lab.name, check=False).stdout
    return f":{port} -> port {PORT}" in out


def die_without_goodbye(lab: labkit.LabHandle, host: str) -> None:
    """A host death as a power loss: the links go first, so no FIN or RST of its processes gets out."""
    labmod.set_host_links(lab.info, host, up=False)
    kill_netns_processes(host_entry(lab.info, host)["netns"])


def held_again(lab: labkit.LabHandle, ip: str, by: list[str]) -> float:
    wait_until(lambda: lab.holders()[ip] in [[n] for n in by], 60, lab)
    return time.monotonic()


@pytest.mark.parametrize("family", [4, 6])
def test_host_death_resets_the_clients_of_its_ips_and_they_reconnect(lab: labkit.LabHandle, family: int) -> None:
    wait_idle(lab)
    ip = next(ip for ip, hs in lab.holders().items() if hs == ["node2"] and (":" in ip) == (family == 6))
    client = Client(lab, ip.split("/", 1)[0])
    wait_until(lambda: listed(lab, ip, client.port), 15, lab)
    capture = subprocess.Popen(["ip", "netns", "exec", lab.ctl, "tcpdump", "-n", "-S", "-l", "-i", "eth0",
                                f"tcp port {client.port} and tcp[tcpflags] & tcp-ack != 0" if family == 4 else
                                f"ip6 and tcp port {client.port}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        time.sleep(1.0)
        with labkit.Sampler(lab) as sampler:
            die_without_goodbye(lab, "node2")
            held = held_again(lab, ip, ["node1", "node3"])
            got = client.outcome()
    finally:
        time.sleep(0.5)
        capture.terminate()
        dump, _err = capture.communicate(timeout=10)
    assert sampler.double_holdings() == []
    assert "reset" in got, got
    assert got["reset"] - held <= 1.0, f"reset {got['reset'] - held:.2f}s after the IP was held again"
    assert "reconnected" in got
    # CTDB's tickle: from the public IP to the client, a bare ACK (seq 0 - tcpdump prints no seq for an empty
    # segment -, ack 0, window 1234), three of them; the client's own ACK back; the new holder's reset
    me = ip.split("/", 1)[0]
    tickles = [line for line in dump.splitlines() if f"{me}.{PORT} > " in line and
               "Flags [.], ack 0, win 1234, length 0" in line]
    assert len(tickles) >= 3, dump
    print(f"IPv{family}: reset {got['reset'] - held:.3f}s after {ip} was held again; reconnected after "
          f"{got['reconnected'] - held:.3f}s")


def test_moveip_resets_the_clients_and_they_reconnect_to_the_new_holder(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    ip = next(ip for ip, hs in lab.holders().items() if hs == ["node2"] and ":" not in ip)
    client = Client(lab, ip.split("/", 1)[0])
    wait_until(lambda: listed(lab, ip, client.port), 15, lab)
    labkit.pubip("moveip", ip, "node1", "--lab", lab.name, timeout=300)
    held = held_again(lab, ip, ["node1"])
    got = client.outcome()
    assert "reset" in got and got["reset"] - held <= 1.0 and "reconnected" in got, got


def test_gratarp_on_demand_comes_from_the_holder(lab: labkit.LabHandle) -> None:
    import json

    wait_idle(lab)
    ip = next(ip for ip, hs in lab.holders().items() if hs == ["node3"] and ":" not in ip)
    mac = json.loads(lab.in_host("node3", "ip", "-j", "link", "show", "eth0").stdout)[0]["address"]
    cap = subprocess.Popen(["ip", "netns", "exec", lab.ctl, sys.executable, str(labkit.SUPPORT / "capture.py"),
                            "eth0", "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert cap.stderr is not None and cap.stderr.readline().strip() == "ready"
    out = labkit.pubip("gratarp", ip, "--lab", lab.name).stdout
    packets = [json.loads(line) for line in cap.communicate(timeout=20)[0].splitlines()]
    assert f"{ip}: announced again by node3" in out
    arps = [p for p in packets if p["kind"] == "arp" and p["sender_ip"] == ip.split("/", 1)[0]]
    assert arps and all(p["sender_mac"] == mac for p in arps)
