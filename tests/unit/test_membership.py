"""Leases, shuns and death with quorum, on a simulated cluster: the cases of shared/notes/membership.md.

Every node runs the real Lease and Ears (node/lease.py), the listener the real verdict (controller/death.py),
on one simulated clock with the real heartbeat interval. Every step checks the one-holder invariant: when
the listener declares a node dead, that node's lease ran out at least the release bound earlier.
"""

from __future__ import annotations

import math

import pytest

from pubip.controller.death import Report, verdict
from pubip.membership import LISTENER, Ears, Timing, majority, quorum
from pubip.node.lease import Lease, file_due

T = Timing()
STEP = 0.05


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    def __init__(self, n: int) -> None:
        self.clock = Clock()
        self.nodes = [f"n{i}" for i in range(1, n + 1)]
        voters = {*self.nodes, LISTENER}
        self.lease = {x: Lease(x, voters, T.lease, self.clock) for x in self.nodes}
        self.ears = {x: Ears([p for p in self.nodes if p != x], T, self.clock) for x in self.nodes}
        self.sides: list[set[str]] = [{*self.nodes, LISTENER}]
        self.restart_listener()
        self.dead: dict[str, float] = {}
        self.ticks: dict[str, float | None] = {x: None for x in self.nodes}
        self.next_beat = self.clock.now
        self.next_report = self.clock.now + T.heartbeat / 2

    def restart_listener(self) -> None:
        self.listener_ears = Ears(self.nodes, T, self.clock)
        self.reports: dict[str, Report] = {}
        self.dead = {}

    def connected(self, a: str, b: str) -> bool:
        return any(a in side and b in side for side in self.sides)

    def split(self, *sides: set[str]) -> None:
        self.sides = [set(s) for s in sides]

    def beat_peers(self) -> None:
        now = self.clock.now
        for x in self.nodes:
            for p in self.nodes:
                if p != x and self.connected(x, p):
                    self.ears[p].hear(x)
                    if not self.ears[p].shuns(x):
                        self.lease[x].acknowledged(p, now)

    def beat_listener(self) -> None:
        # half a heartbeat after the peers' beat: peers and listener hear a node at different moments
        now = self.clock.now
        for x in self.nodes:
            if self.connected(x, LISTENER):
                self.listener_ears.hear(x)
                self.reports[x] = Report(now, self.ticks[x], **self.ears[x].report())
                if not self.listener_ears.shuns(x):
                    self.lease[x].acknowledged(LISTENER, now)
                self.ticks[x] = now

    def run(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while self.clock.now < end:
            if self.clock.now >= self.next_beat:
                self.beat_peers()
                self.next_beat += T.heartbeat
            if self.clock.now >= self.next_report:
                self.beat_listener()
                self.next_report += T.heartbeat
            for x in self.nodes:
                if x in self.dead:
                    continue
                v = verdict(x, self.clock.now, self.nodes, self.listener_ears.heard[x], self.reports, T)
                if v.dead:
                    # the invariant: its lease ran out, and it had time to release, before anyone takes
                    assert self.lease[x].expiry() + T.release_bound <= self.clock.now, (x, v.why)
                    self.dead[x] = self.clock.now
            self.clock.now = round(self.clock.now + STEP, 6)

    def leased(self) -> set[str]:
        return {x for x in self.nodes if self.lease[x].valid()}


def settled(n: int) -> Cluster:
    c = Cluster(n)
    c.run(3.0)
    assert c.leased() == set(c.nodes) and c.dead == {}
    return c


def test_quorum_rule_and_tie_break() -> None:
    assert quorum({"a", "b"}, {"a", "b", "c"}) and not quorum({"a"}, {"a", "b", "c"})
    assert quorum({"a", LISTENER}, {"a", "b", "c", LISTENER})  # half, with the listener
    assert not quorum({"a", "b"}, {"a", "b", "c", LISTENER})  # half, without it
    assert majority(6) == 4


def test_one_node_cluster_always_has_its_lease() -> None:
    lease = Lease("n1", {"n1", LISTENER}, 1.0, Clock())
    assert lease.valid() and lease.expiry() == math.inf


def test_a_node_without_acknowledgements_has_no_lease() -> None:
    clock = Clock()
    lease = Lease("n1", {"n1", "n2", "n3", LISTENER}, 1.0, clock)
    assert not lease.valid()
    lease.acknowledged("n2", clock.now)
    assert not lease.valid()  # 2 of 4: half, without the listener
    lease.acknowledged(LISTENER, clock.now - 0.5)
    assert lease.valid() and lease.expiry() == pytest.approx(clock.now + 0.5)


@pytest.mark.parametrize("n", [3, 5])
def test_node_cut_off_from_all_with_carrier(n: int) -> None:
    c = settled(n)
    t0 = c.clock.now
    c.split({"n1"}, set(c.nodes[1:]) | {LISTENER})
    c.run(4.0)
    assert "n1" not in c.leased() and set(c.dead) == {"n1"}
    assert c.dead["n1"] - t0 <= T.dead_after + 0.3  # its IPs can move about 1.5 s after the cut
    c.split({*c.nodes, LISTENER})
    c.run(3.0)
    assert c.leased() == set(c.nodes)  # back: a lease again (its IPs come back only through a run)


def test_node_cut_off_from_the_listener_only_keeps_its_lease() -> None:
    c = settled(3)
    c.split({"n1", "n2", "n3"}, {"n2", "n3", LISTENER})
    c.run(5.0)
    assert c.leased() == {"n1", "n2", "n3"} and c.dead == {}


def test_listener_gone_nobody_drops_and_nobody_dies() -> None:
    c = settled(3)
    c.split(set(c.nodes), {LISTENER})
    c.run(60.0)
    assert c.leased() == set(c.nodes) and c.dead == {}


def test_listener_restart_moves_nothing() -> None:
    c = settled(3)
    c.restart_listener()
    c.run(5.0)
    assert c.leased() == set(c.nodes) and c.dead == {}


@pytest.mark.parametrize(("with_listener", "losers"), [("big", {"n4", "n5"}), ("small", {"n1", "n2", "n3"})])
def test_five_nodes_split_three_two(with_listener: str, losers: set[str]) -> None:
    c = settled(5)
    big, small = {"n1", "n2", "n3"}, {"n4", "n5"}
    (big if with_listener == "big" else small).add(LISTENER)
    c.split(big, small)
    c.run(5.0)
    assert c.leased() == set(c.nodes) - losers and set(c.dead) == losers


def test_four_nodes_split_two_two() -> None:
    c = settled(4)
    c.split({"n1", "n2", LISTENER}, {"n3", "n4"})
    c.run(5.0)
    assert c.leased() == {"n1", "n2"} and set(c.dead) == {"n3", "n4"}


def test_two_nodes_split_one_one() -> None:
    c = settled(2)
    c.split({"n1", LISTENER}, {"n2"})
    c.run(5.0)
    assert c.leased() == {"n1"} and set(c.dead) == {"n2"}


def test_a_short_flap_kills_nobody() -> None:
    c = settled(3)
    c.split({"n1"}, {"n2", "n3", LISTENER})
    c.run(0.4)
    c.split({*c.nodes, LISTENER})
    c.run(5.0)
    assert c.dead == {} and c.leased() == set(c.nodes)


def test_a_stale_vote_does_not_count() -> None:
    timing = Timing()
    now = 200.0
    # n2 shuns n1, but its report is older than suspect_after: only the listener is against n1
    reports = {"n2": Report(now - 1.0, now - 1.2, {"n1": 3.0}, {"n1": 1.5}),
               "n3": Report(now - 0.1, now - 0.3, {"n1": 0.1}, {})}
    v = verdict("n1", now, ["n1", "n2", "n3"], now - 5.0, reports, timing)
    assert not v.dead and "no quorum" in v.why and "n2" in v.why


def test_a_shun_binds_a_node_that_returns_to_its_peers_before_the_decision() -> None:
    # n1 is cut off, then comes back to its peers (not the listener) before the listener decides: the peers
    # already voted against it and keep shunning it for shun_hold, so it cannot renew its lease with them
    # while their votes may count. In the end it is a node cut off from the listener only: leased, alive.
    c = settled(3)
    c.split({"n1"}, {"n2", "n3", LISTENER})
    c.run(1.4)  # the peers' last reports said they shun n1; the listener decides before their next ones
    c.split({"n1", "n2", "n3"}, {"n2", "n3", LISTENER})
    shunned = []
    for _ in range(40):
        c.run(STEP)
        shunned.append(c.ears["n2"].shuns("n1") and "n1" not in c.leased())
    assert shunned[0] and set(c.dead) == {"n1"}  # dead, its lease long gone (checked at the decision)
    c.run(5.0)
    assert c.leased() == set(c.nodes)  # later, as a node cut off from the listener only, it has a lease


def test_the_lease_file_follows_the_lease_in_steps_and_never_says_more() -> None:
    """What the watchdog writes for public_ip (node/leasekeeper.py, every STEP) while its five voters'
    acks arrive at different moments, then stop (cut off): never a later expiry than the lease's, less than a
    heartbeat behind it, and at most one write a heartbeat although the expiry moves with every ack."""
    clock = Clock()
    voters = ["n2", "n3", "n4", "n5", LISTENER]
    lease = Lease("n1", {"n1", *voters}, T.lease, clock)
    written: float | None = None
    writes = moves = 0
    before = lease.expiry()
    for i in range(round(6.0 / STEP)):
        if clock.now < 104.0:  # each STEP another voter's ack: heartbeats are not in step
            lease.acknowledged(voters[i % len(voters)], clock.now)
        expiry = lease.expiry()
        moves += expiry != before
        before = expiry
        if file_due(written, expiry, T.heartbeat):
            written = expiry
            writes += 1
        assert written is not None and written <= expiry, clock.now
        assert expiry == written or expiry - written < T.heartbeat, clock.now
        clock.now = round(clock.now + STEP, 6)
    assert not lease.valid() and written is not None and written <= clock.now
    assert writes <= 6.0 / T.heartbeat + 1 < moves, (writes, moves)

