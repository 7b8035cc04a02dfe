"""The listener's parts on their own - no listener, no sqlite, no threads: what heartbeats say (Holdings), the
last placement (LastPlacement), who may talk (Auth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubip import protocol
from pubip.controller.auth import Auth
from pubip.controller.holdings import Holdings
from pubip.controller.placement import FILE, LastPlacement, Placement
from pubip.membership import Timing

IP1, IP2, IP3 = "198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"
NODES = ["node1", "node2", "node3"]


def beat(node: str, tick: float | None, holds: list[str] | None, **more: object) -> protocol.Heartbeat:
    return protocol.Heartbeat.parse({"node": node, "version": protocol.VERSION, "holds": holds,
                                     "membership": {"tick": tick, "hears": {}, "shuns": {}}, **more})


@pytest.fixture
def holdings() -> Holdings:
    now = [100.0]
    return Holdings(NODES, Timing(lease=1.0), clock=lambda: now[0])


def test_holdings_know_what_each_node_holds_and_since_which_tick(holdings: Holdings) -> None:
    holdings.report("node1", beat("node1", 5.0, [IP2, IP1], held=[IP1]))
    assert holdings.holds_of("node1") == ([IP1, IP2], 5.0)
    assert holdings.holds_of("node2") == (None, 0.0)  # never reported
    assert holdings.reported(NODES) == ["node2", "node3"] and holdings.reported(["node1"], since=6.0) == ["node1"]
    # what its kernel holds, no more: IP2 is only being added
    assert holdings.held_by_others("node2", {"node1", "node2"}) == {IP1: "node1"}
    assert holdings.held_by_others("node2", {"node2"}) == {}  # node1 is not alive: its word counts for nothing


def test_an_ip_is_unheld_only_once_every_live_node_has_reported(holdings: Holdings) -> None:
    holdings.report("node1", beat("node1", 1.0, [IP1]))
    assert holdings.unheld([IP1, IP2], ["node1", "node2"]) == []  # node2 has not reported
    holdings.report("node2", beat("node2", 1.0, []))
    assert holdings.unheld([IP1, IP2], ["node1", "node2"]) == [IP2]


def test_the_starting_runs_pin_holds_the_reports_made_after_its_mark_and_the_asks_it_allows(
        holdings: Holdings) -> None:
    holdings.report("node1", beat("node1", 3.0, [IP1]))
    holdings.report("node2", beat("node2", 1.0, [IP2]))  # made before the mark: not in the snapshot
    assert holdings.pinned("node1") is None
    assert holdings.pin(since=2.0, asked={"node1": frozenset({IP3})}) == {"node1": [IP1, IP3]}
    assert holdings.pinned("node1") == frozenset({IP1, IP3}) and holdings.pinned("node2") is None
    holdings.unpin()
    assert holdings.pinned("node1") is None


def test_a_refused_retake_is_dropped_only_from_the_report_that_asked(holdings: Holdings) -> None:
    holdings.report("node1", beat("node1", 3.0, [IP1, IP2], taking=[IP2]))
    holdings.drop_refused("node1", 2.0, [IP1, IP2], {IP2})  # an older report's: nothing changes
    assert holdings.holds_of("node1")[0] == [IP1, IP2]
    holdings.drop_refused("node1", 3.0, [IP1, IP2], {IP2})
    assert holdings.holds_of("node1")[0] == [IP1]


def test_a_watchdog_in_its_start_up_grace_is_not_dead_before_it_and_its_release_end(holdings: Holdings) -> None:
    holdings.report("node3", beat("node3", None, None, membership={"grace": 2.5, "hears": {}, "shuns": {}}))
    t = Timing(lease=1.0)
    assert holdings.grace_left("node3", 100.0) >= 2.5 + t.release_bound + t.margin
    assert holdings.start_grace("node1") >= t.start_grace


def test_the_longest_lease_a_node_runs_with_sets_the_timing(holdings: Holdings) -> None:
    assert not holdings.leases_on() and holdings.timing().lease == 1.0
    holdings.report("node2", beat("node2", None, None, membership={"lease": 3.0, "hears": {}, "shuns": {}}))
    assert holdings.leases_on() and holdings.timing().lease == 3.0


def test_the_last_placement_survives_a_restart_and_keeps_its_deaths_across_runs(tmp_path: Path) -> None:
    placement = LastPlacement(tmp_path)
    assert placement.get() == Placement() and placement.newest() is None
    plan = {"generation": 4, "assignment": {IP1: "node1"}, "record": {"nodes": {}, "public_ips": [
        {"ip": IP1, "node": "node1", "interfaces": ["eth0"]}]}}
    placement.adopt(plan, orders_issued_for=None)
    placement.declare_dead("node3", recorded=6)  # its own record was newer than any run the listener knew
    placement.note_planned(5)
    again = LastPlacement(tmp_path)  # a restart
    assert again.completed() == 4 and again.newest() == 5 and again.declared_dead("node3") == 6
    again.adopt({**plan, "generation": 7}, orders_issued_for=4)
    assert again.declared_dead("node3") == 6 and again.holders() == {IP1: "node1"}  # kept by a new run


def test_a_corrupt_placement_file_is_set_aside_and_the_listener_starts_without_it(tmp_path: Path) -> None:
    (tmp_path / FILE).write_text("{half")
    assert LastPlacement(tmp_path).get() == Placement()
    assert [p.name.split(".corrupt-")[0] for p in tmp_path.iterdir() if ".corrupt-" in p.name] == [FILE]


def test_auth_takes_a_signed_request_once_and_names_what_is_wrong() -> None:
    used: set[str] = set()

    def use_nonce(nonce: str, _window: float) -> bool:
        fresh = nonce not in used
        used.add(nonce)
        return fresh

    auth = Auth({"node1": "s" * 32, protocol.ADMIN: "a" * 32}, 30.0, use_nonce, read_token="r" * 32)
    assert auth.nodes() == ["node1"]
    headers = protocol.sign("s" * 32, "node1", b"{}", protocol.HEARTBEAT_PATH)
    assert auth.authenticate(headers, b"{}", protocol.HEARTBEAT_PATH) == "node1"
    beat, admin = protocol.HEARTBEAT_PATH, protocol.ADMIN_PATH
    for bad, path, why in ((headers, beat, "replayed nonce from node node1"),
                           (protocol.sign("x" * 32, "node1", b"{}", beat), beat, "bad signature for node node1"),
                           (protocol.sign("s" * 32, "node9", b"{}", beat), beat, "unknown node 'node9'"),
                           (protocol.sign("s" * 32, "node1", b"{}", admin), admin, "unknown node 'node1'")):
        with pytest.raises(protocol.Rejected, match=why):
            auth.authenticate(bad, b"{}", path)
    auth.authorize_read({"Authorization": "Bearer " + "r" * 32}, protocol.STATUS_PATH)
    with pytest.raises(protocol.Rejected, match="wrong read token"):
        auth.authorize_read({"Authorization": "Bearer nope"}, protocol.STATUS_PATH)
    auth.reject("192.0.2.9", protocol.Rejected(401, "bad signature for node node1"))
    assert auth.rejections() == {"bad": 1}
