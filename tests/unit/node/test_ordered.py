"""A watchdog restart keeps the public IPs its node took on fast takeover orders that no run has recorded
yet (node/ordered.py): the record still gives them to the node they came from, and releasing them as
foreign left them unheld until a later run (chaos, seed 1: 28 s)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pubip import protocol
from pubip.node import actions, daemon, kernel
from pubip.node import check as ipcheck
from pubip.node.config import Config

IP = "198.51.100.3/24"
_netlink = actions._netlink


def record(generation: int) -> dict[str, Any]:
    return {"version": 1, "generation": generation, "node": "node1", "nodes": {},
            "public_ips": [{"ip": IP, "node": "node3", "interfaces": ["eth0"]}],
            "this_node": [], "run_started": 1.0, "run_finished": 2.0}


class KernelWithIP:
    """eth0 holding IP, as the order left it."""

    def interfaces(self) -> dict[str, Any]:
        eth0 = _netlink.Interface("eth0", 2, True, True, "02:00:00:00:00:01")
        eth0.addresses.append(("198.51.100.3", 24, 4))
        return {"eth0": eth0}


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    cfg = Config(node="node1", record_path=str(tmp_path / "record.json"), lock_path=str(tmp_path / "lock"),
                 lease_path=str(tmp_path / "run" / "lease.json"), fast_retake=False)
    actions._record.write(cfg.record_path, record(4))

    class Took:
        error, kind, message = None, "take", f"Takeover of IP {IP} on interface eth0"
        pip = type("Pip", (), {"cidr": IP})

    monkeypatch.setattr(actions, "take", lambda cfg, nl, rec, specs, tickles=None: [Took()])
    return cfg


class Kernel:
    """The public IPs the host's kernel holds, as the test says."""

    def __init__(self, *ips: str) -> None:
        self.ips = set(ips)

    def __call__(self) -> set[str]:
        return set(self.ips)


def restarted(cfg: Config, kernel: Kernel) -> daemon.Watchdog:
    wd = daemon.Watchdog(cfg, kernel=kernel)
    wd.nl = KernelWithIP()
    return wd


@pytest.fixture
def released(cfg: Config, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What the watchdogs release as foreign, after a first watchdog took IP on order 12 (generation 4)."""
    out: list[list[str]] = []
    monkeypatch.setattr(actions, "release_foreign", lambda cfg, nl, rec, ips, spare=set: out.append(ips))
    first = restarted(cfg, Kernel())
    first.orders.carry_out(protocol.Order(12, 4, [{"ip": IP, "interfaces": ["eth0"]}]), time.monotonic(), None)
    assert first.orders.held() == {IP}
    return out


def test_a_restarted_watchdog_keeps_what_it_took_on_an_order_and_does_not_release_it(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, released: list[list[str]]) -> None:

    again = restarted(cfg, Kernel(IP))  # the watchdog restarts; the kernel still holds IP
    assert again.orders.held() == {IP}
    result = again.check()
    assert released == []
    assert not [f for f in result.findings if f.rule == ipcheck.FOREIGN]


def test_a_run_that_records_since_or_an_empty_kernel_ends_what_a_restart_keeps(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, released: list[list[str]]) -> None:
    assert restarted(cfg, Kernel()).orders.held() == set()  # a reboot: nothing held, nothing kept

    actions._record.write(cfg.record_path, record(5))  # a run recorded generation 5, still giving IP to node3
    again = restarted(cfg, Kernel(IP))
    again.check()
    assert again.orders.held() == set()
    assert released == [[IP]]  # the record speaks again
    assert restarted(cfg, Kernel(IP)).orders.held() == set()


def test_a_node_that_lost_the_cluster_forgets_the_ips_it_took_on_orders_with_their_release(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, released: list[list[str]]) -> None:
    """Chaos (seed 7): a node cut off with the listener released an IP it held on an order; its heartbeats still
    reported it held, so nobody saw it unheld and runs that could not reach the node pinned it there: 48 s."""
    kernel = Kernel(IP)
    wd = restarted(cfg, kernel)
    assert wd.orders.held() == {IP}
    monkeypatch.setattr(actions, "release_all", lambda cfg, nl, rec: [IP])
    kernel.ips.clear()  # released
    wd.release_all(wd.nl)
    assert wd.orders.held() == set()
    assert restarted(cfg, Kernel(IP)).orders.held() == set()  # the file forgot it too


def test_a_node_that_lost_the_cluster_also_forgets_ordered_ips_released_before(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, released: list[list[str]]) -> None:
    """An IP taken on an order and released on link loss just before the lease ran out: not among what the
    lost-cluster release releases, and held no more all the same."""
    kernel = Kernel(IP)
    wd = restarted(cfg, kernel)
    monkeypatch.setattr(actions, "release_all", lambda cfg, nl, rec: [])
    wd.release_all(wd.nl)  # the kernel still holds it (a release that failed): kept
    assert wd.orders.held() == {IP}
    kernel.ips.clear()
    wd.release_all(wd.nl)
    assert wd.orders.held() == set()


def test_an_ip_taken_on_an_order_and_gone_from_the_kernel_is_forgotten(
        cfg: Config, monkeypatch: pytest.MonkeyPatch, released: list[list[str]]) -> None:
    """Chaos (seed 21): a network restart flushed an IP a node held on an order; its heartbeats went on reporting
    it held (what it took on orders), so the listener ordered it to nobody and runs planned it there: 20 s."""
    kernel = Kernel(IP)
    wd = restarted(cfg, kernel)
    wd.check()
    assert wd.orders.held() == {IP}  # still held: kept
    kernel.ips.clear()  # flushed
    monkeypatch.setattr(wd.retake, "taking", lambda: {IP})  # a fast path adding it right now: kept
    wd.check()
    assert wd.orders.held() == {IP}
    monkeypatch.setattr(wd.retake, "taking", set)
    wd.check()
    assert wd.orders.held() == set()
    assert restarted(cfg, Kernel(IP)).orders.held() == set()  # the file forgot it too


def test_the_heartbeat_names_the_run_whose_mark_the_record_carries(cfg: Config, monkeypatch: pytest.MonkeyPatch
                                                                   ) -> None:
    """After a listener restart cut a run short, the new listener learns from it which nodes' releases are done
    (drops.cut_short_moves)."""
    assert kernel.record_report(cfg, None) == protocol.RecordReport(4)
    marked = actions._record.mark(record(4), "node1", 10.0, "r5", 300.0)
    actions._record.write(cfg.record_path, marked)
    assert kernel.record_report(cfg, None) == protocol.RecordReport(4, marked=True, run_id="r5")
