"""HA listeners on lab hosts (`pubip lab up --listeners 2`): two listeners, one leading through a lease in a
3-member etcd. The leader's host and a node die at the same moment: a standby leads with a newer term, its
view already warm, and orders the node's IPs to the survivors; no IP is ever on two hosts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pubip import lab
from pubip.lab.observe import status_of
from tests.support import labkit

pytestmark = pytest.mark.lab


def leader(handle: labkit.LabHandle) -> tuple[str | None, int | None]:
    st = lab.listener_status(handle.info)
    return (st.get("leader"), st.get("term")) if st and st.get("role") == "leader" else (None, None)


@pytest.mark.slow
def test_the_leaders_host_and_a_node_die_together_and_the_survivors_hold_its_ips(lab_factory: Any) -> None:
    handle = lab_factory("--nodes", "3", "--vips", "6", "--listeners", "2")
    info = handle.info
    assert [c["name"] for c in info["controllers"]] == ["listener1", "listener2"]
    assert info["controller"]["netns"] == info["controllers"][0]["netns"]
    assert [m["name"] for m in info["etcd"]] == ["listener1", "listener2", "etcd3"]
    first, term1 = leader(handle)
    assert first in ("listener1", "listener2") and term1
    standby = "listener2" if first == "listener1" else "listener1"
    lab.wait_listener_idle(info)
    # warm: the standby has adopted the leader's placement from the nodes' records
    leading = lab.host_entry(info, first)
    waiting = lab.host_entry(info, standby)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        a = status_of(info, leading["netns"], leading["address"])
        b = status_of(info, waiting["netns"], waiting["address"])
        if a and b and a["generation"] is not None and b["generation"] == a["generation"]:
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the standby did not adopt the placement: {a and a['generation']}, "
                             f"{b and b['generation']}")
    lost = [ip for ip, hs in handle.holders().items() if hs == ["node3"]]
    assert lost
    with labkit.Sampler(handle) as sampler:
        t0 = time.monotonic()
        lab.cut_host(info, first)
        lab.cut_host(info, "node3")
        lab.save(info)
        held_at = None
        while time.monotonic() - t0 < 30 and held_at is None:
            holders = handle.holders()
            if all(set(holders[ip]) & {"node1", "node2"} for ip in lost):
                held_at = time.monotonic() - t0
            time.sleep(0.02)
        assert held_at is not None, handle.holders()
        now, term2 = leader(handle)
    print(f"{first} and node3 killed: {standby} leads (term {term1} -> {term2}); node3's IPs held by the survivors "
          f"{held_at:.2f}s after")
    text = Path(lab.host_entry(info, standby)["dir"], "listener.log").read_text()
    assert now == standby and term2 is not None and term2 > term1
    assert held_at <= 8.0, text[-3000:]
    assert sampler.double_holdings() == []
    assert f"Leading as {standby}, term {term2}" in text and "Fast takeover order" in text
