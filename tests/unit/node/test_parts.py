"""The watchdog's parts without threads: the gate shared by retakes and orders, the heartbeat a watchdog sends
(exchange.heartbeat_payload, pure), its health from the monitor hooks, and what its lease keeper reports."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from pubip import protocol
from pubip.membership import Timing
from pubip.node import gate
from pubip.node.config import Config, PeersConfig
from pubip.node.exchange import heartbeat_payload
from pubip.node.health import Health
from pubip.node.leasekeeper import LeaseKeeper

IP1, IP2, IP3 = "198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"


def test_one_gate_says_why_a_node_takes_nothing_now() -> None:
    assert gate.blocker(True, None, True) is None
    assert gate.blocker(False, "banned", False) == "this node has no lease (it lost the cluster)"  # the first reason
    assert gate.blocker(True, "banned", True) == "this node is banned"
    assert gate.blocker(True, None, False) == "this node is UNHEALTHY: its IPs move away"


def test_a_heartbeat_reports_the_kernel_and_what_a_retake_or_an_order_adds() -> None:
    beat = heartbeat_payload("node1", protocol.Membership(tick=5.0), {IP1}, {IP2}, {IP3},
                             [protocol.OrderResult(1, [IP3])], protocol.RecordReport(4), protocol.Health(True), False,
                             None)
    assert beat.holds == [IP1, IP2, IP3] and beat.held == [IP1] and beat.taking == [IP2]
    wire = beat.wire()
    assert wire["done"] == [{"id": 1, "taken": [IP3], "errors": [], "refused": None}]
    assert wire["record"]["generation"] == 4 and wire["version"] == protocol.VERSION
    assert "leaving" not in wire and "connections" not in wire
    assert protocol.Heartbeat.parse(wire) == beat  # the listener reads what the watchdog wrote


def test_a_heartbeat_with_a_whole_record_reads_back_as_the_watchdog_wrote_it() -> None:
    """A lab found it: run_started is a wall-clock time, beyond the bound the heartbeat's small numbers have; the
    listener refused every heartbeat carrying a whole record."""
    record = protocol.RecordReport(5, public_ips=[{"ip": IP1, "node": "node1", "interfaces": ["eth0"]}], nodes={},
                                   run_started=time.time() - 2, run_finished=time.time())
    beat = heartbeat_payload("node1", protocol.Membership(tick=1.5, lease=1.0, lease_left=0.8), {IP1}, set(), set(),
                             [], record, None, False, None)
    assert protocol.Heartbeat.parse(beat.wire()) == beat


def test_a_heartbeat_without_a_kernel_reading_claims_nothing() -> None:
    beat = heartbeat_payload("node1", protocol.Membership(), None, {IP2}, set(), [], None, None, True, {IP1: []},
                             [IP2]).wire()
    assert beat["holds"] is None and "held" not in beat and "taking" not in beat and "done" not in beat
    assert beat["leaving"] is True and beat["connections"] == {IP1: []} and beat["retake"] == [IP2]


def hook(directory: Path, code: int) -> None:
    path = directory / "50.check"
    path.write_text(f"#!/bin/sh\n[ \"$1\" = monitor ] && exit {code}\nexit 0\n")
    os.chmod(path, 0o755)


def test_monitor_failures_in_a_row_make_the_node_unhealthy_and_one_success_heals_it(tmp_path: Path) -> None:
    cfg = Config(node="node1", hook_dir=str(tmp_path), monitor_failures=2, monitor_timeout=5.0)
    health = Health(cfg)
    hook(tmp_path, 1)
    health.run_hooks()
    assert health.ok()  # one failure of two
    health.run_hooks()
    assert not health.ok() and health.report().hook == "50.check"
    hook(tmp_path, 0)
    health.run_hooks()
    assert health.ok() and health.report() == protocol.Health(True)


def test_the_lease_keeper_reports_its_start_up_grace_and_no_lease_without_acks(tmp_path: Path) -> None:
    now = [100.0]
    cfg = Config(node="node1", lease=1.0, lease_path=str(tmp_path / "lease.json"),
                 peers=PeersConfig(secret="s" * 32, nodes={"node2": "192.0.2.2"}))
    keeper = LeaseKeeper(cfg, clock=lambda: now[0])
    assert keeper.on() and not keeper.has_lease()
    report = keeper.report(7.0)
    assert report.tick == 7.0 and report.lease_left == 0.0
    assert report.grace is not None and math.isclose(report.grace, Timing(lease=1.0).start_grace)
    keeper.acknowledged("_listener", now[0])  # the listener and this node: 2 of 3 voters
    assert keeper.has_lease() and keeper.report(None).lease_left == 1.0
    now[0] += Timing(lease=1.0).start_grace
    assert keeper.report(None).grace is None and not keeper.has_lease()
