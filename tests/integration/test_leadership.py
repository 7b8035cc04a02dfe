"""Leadership (controller/leadership.py) through a real 3-member etcd on lab hosts: one leader at a time, terms
that only grow, a leader cut off from etcd stops leading before another can win, no leader without etcd
quorum and one again once it is back."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from pubip.controller import leadership
from pubip.controller.etcdelector import EtcdElector
from pubip.lab import etcd
from pubip.lab.faults import set_host_links
from tests.support import labkit

pytestmark = pytest.mark.lab
TIMING = leadership.Timing()


@dataclass
class Candidate:
    """A Leadership whose thread lives in a lab host's network namespace, as a listener there would."""

    part: leadership.Leadership
    stopping: threading.Event
    thread: threading.Thread
    seen: list[tuple[float, leadership.View]]


def candidate(name: str, netns: str, members: list[dict[str, Any]], tls: dict[str, str] | None = None,
              cert: bool = True) -> Candidate:
    seen: list[tuple[float, leadership.View]] = []
    elector = EtcdElector(etcd.endpoints(members, tls), "lab", TIMING.timeout, *(
        (tls["ca"], tls["cert"] if cert else None, tls["key"] if cert else None) if tls else ()))
    part = leadership.Leadership(name, elector, TIMING)
    part.on_change(lambda view: seen.append((time.monotonic(), view)))
    stopping = threading.Event()

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/run/netns/{netns}", "rb") as ns:
            assert libc.setns(ns.fileno(), 0x40000000) == 0
        part.run(stopping)

    thread = threading.Thread(target=run, name=f"leadership {name}", daemon=True)
    thread.start()
    return Candidate(part, stopping, thread, seen)


def wait_for(check: Any, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{what} not within {timeout}s")


@pytest.fixture
def cluster(lab_factory: Any) -> Iterator[tuple[labkit.LabHandle, list[dict[str, Any]]]]:
    handle = lab_factory("--nodes", "5", "--vips", "0", "--no-watchdog", "--no-takeover")
    members = [{"name": h["name"], "netns": h["netns"], "address": h["address"], "dir": h["dir"]}
               for h in handle.hosts[:3]]
    etcd.start_cluster(members)
    yield handle, members


def test_one_leader_terms_grow_and_a_cut_off_leader_stops_before_another_wins(cluster: Any) -> None:
    handle, members = cluster
    a = candidate("listener1", handle.hosts[3]["netns"], members)
    wait_for(lambda: a.part.leading() is not None, 5, "listener1 leading")
    b = candidate("listener2", handle.hosts[4]["netns"], members)
    try:
        wait_for(lambda: b.part.view().role == leadership.STANDBY, 5, "listener2 a standby")
        term1 = a.part.leading()
        assert b.part.view() == leadership.View(leadership.STANDBY, "listener1", term1, "listener1 leads")
        time.sleep(2 * TIMING.ttl)  # renewals keep it: nothing changes
        assert a.part.leading() == term1 and b.part.leading() is None

        # listener1's host loses its links: it cannot renew; it must stop leading before listener2 wins
        set_host_links(handle.info, "node4", up=False)
        t_cut = time.monotonic()
        believed: list[float] = []  # until when listener1 may order, as it sees it
        def led() -> bool:
            until = a.part.leading_until()
            if until is not None:
                believed.append(until)
            return b.part.leading() is not None
        wait_for(led, 10, "listener2 leading after listener1 was cut off")
        t_won = next(t for t, v in b.seen if v.role == leadership.LEADER)
        term2 = b.part.leading()
        assert term2 is not None and term1 is not None and term2 > term1
        # listener1 stopped ordering (its last renewal + ttl - margin) before listener2 won
        assert a.part.leading() is None and believed and max(believed) < t_won, (t_won - t_cut)
        print(f"listener1 stopped ordering {t_won - max(believed):.2f}s before listener2 won")
        print(f"listener2 led {t_won - t_cut:.2f}s after listener1 was cut off from etcd")

        # listener1 back: a standby of term2
        set_host_links(handle.info, "node4", up=True)
        wait_for(lambda: a.part.view().role == leadership.STANDBY and a.part.view().term == term2, 5,
                 "listener1 a standby of term2")

        # a clean stop resigns: the standby wins at once
        b.stopping.set()
        b.thread.join(5)
        took = wait_for(lambda: a.part.leading() is not None, 3, "listener1 leading after listener2 resigned")
        term3 = a.part.leading()
        assert term3 is not None and term3 > term2 and took < 1.0
    finally:
        for c in (a, b):
            c.stopping.set()
            c.thread.join(5)


def test_no_leader_without_etcd_quorum_and_one_again_when_it_is_back(cluster: Any) -> None:
    handle, members = cluster
    a = candidate("listener1", handle.hosts[3]["netns"], members)
    try:
        wait_for(lambda: a.part.leading() is not None, 5, "listener1 leading")
        for m in members[1:]:  # two of three members stop: no quorum
            os.kill(m["etcd_pid"], signal.SIGSTOP)
        t0 = time.monotonic()
        wait_for(lambda: a.part.leading() is None, TIMING.ttl, "listener1 no longer leading")
        assert time.monotonic() - t0 <= TIMING.ttl - TIMING.margin + TIMING.renew + 0.1
        time.sleep(1.0)
        view = a.part.view()
        assert view.role == leadership.UNKNOWN and "etcd" in view.why, view
        for m in members[1:]:
            os.kill(m["etcd_pid"], signal.SIGCONT)
        wait_for(lambda: a.part.leading() is not None, 10, "a leader again once etcd has quorum")
    finally:
        for m in members[1:]:
            os.kill(m["etcd_pid"], signal.SIGCONT)
        a.stopping.set()
        a.thread.join(5)


def test_over_tls_with_a_client_certificate_it_leads_and_without_one_etcd_refuses(lab_factory: Any,
                                                                                   tmp_path: Any) -> None:
    """etcd with TLS everywhere (a CA, member certificates, client certificates required), as the install
    guide sets it up: a listener with its client certificate leads; one without is refused, and says so."""
    handle = lab_factory("--nodes", "4", "--vips", "0", "--no-watchdog", "--no-takeover")
    members = [{"name": h["name"], "netns": h["netns"], "address": h["address"], "dir": h["dir"]}
               for h in handle.hosts[:3]]
    tls = etcd.make_tls(tmp_path / "tls", members)
    etcd.start_cluster(members)
    a = candidate("listener1", handle.hosts[3]["netns"], members, tls)
    b = candidate("listener2", handle.hosts[3]["netns"], members, tls, cert=False)
    try:
        wait_for(lambda: a.part.leading() is not None, 5, "listener1 leading over TLS")
        wait_for(lambda: "etcd" in b.part.view().why and b.part.view().role == leadership.UNKNOWN, 5,
                 "listener2 refused without a client certificate")
        assert b.part.leading() is None
    finally:
        for c in (a, b):
            c.stopping.set()
            c.thread.join(5)
