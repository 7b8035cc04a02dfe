"""The allocation engine against CTDB's own test cases, and its properties."""

from __future__ import annotations

import ipaddress
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.pubip.cluster.plugins.module_utils import ipalloc

VECTORS_FILE = Path(__file__).resolve().parent / "fixtures" / "ctdb-vectors.json"
VECTORS = json.loads(VECTORS_FILE.read_text())


@pytest.mark.parametrize("vector", VECTORS, ids=[v["id"] for v in VECTORS])
def test_ctdb_vector(vector: dict) -> None:
    result = ipalloc.allocate(vector["nodes"], vector["public_ips"], vector["algorithm"], vector["options"])
    assert result["assignments"] == vector["expected"]
    # Every line we log at or above INFO is one CTDB logged too, in the same order.
    ours = [line for level, line in result["log"] if level <= min(vector["log_level"], ipalloc.LOG_INFO)
            and "Could not find" not in line]
    theirs = [line for line in vector["expected_log_lines"] if line in set(ours)]
    assert ours == theirs


def test_vector_count() -> None:
    assert len(VECTORS) == 53


# --- properties ---------------------------------------------------------------

def _cluster(draw, max_nodes=8, max_ips=40, ipv6=None):
    n = draw(st.integers(1, max_nodes))
    flags = draw(st.lists(st.sampled_from([0, 0, 0, 0x02, 0x04, 0x20, 0x01]), min_size=n, max_size=n))
    v6 = draw(st.booleans()) if ipv6 is None else ipv6
    count = draw(st.integers(0, max_ips))
    raw = draw(st.lists(st.integers(0, 2**16 - 1), min_size=count, max_size=count, unique=True))
    ips = []
    for value in raw:
        if v6 and value % 2:
            ips.append(str(ipaddress.IPv6Address((0x20010DB8 << 96) | (value << 32) | value)))
        else:
            ips.append(str(ipaddress.IPv4Address((198 << 24) | (51 << 16) | value)))
    public = []
    for ip in ips:
        current = draw(st.integers(-1, n - 1))
        known = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1))) if draw(st.booleans()) else list(range(n))
        public.append({"ip": ip, "current_pnn": current, "known_on": known})
    nodes = [{"pnn": i, "flags": f, "runstate": 5} for i, f in enumerate(flags)]
    return nodes, public


clusters = st.composite(_cluster)
algorithms = st.sampled_from(ipalloc.ALGORITHMS)


@settings(max_examples=80, deadline=None)
@given(clusters(), algorithms)
def test_every_ip_goes_to_a_node_allowed_and_able_to_host_it(cluster, algorithm) -> None:
    nodes, public = cluster
    result = ipalloc.allocate(nodes, public, algorithm)
    by_ip = {p["ip"]: p for p in public}
    assert sorted(a["ip"] for a in result["assignments"]) == sorted(by_ip)
    for a in result["assignments"]:
        entry = by_ip[a["ip"]]
        able = [n["pnn"] for n in nodes if ipalloc.node_can_host(n) and n["pnn"] in entry["known_on"]]
        if a["pnn"] == -1:
            assert a["ip"] in result["unassigned"]
            assert not able
        else:
            assert a["pnn"] in able  # never an inactive or disabled node


@settings(max_examples=60, deadline=None)
@given(clusters(), algorithms, st.randoms(use_true_random=False))
def test_result_does_not_depend_on_input_order(cluster, algorithm, rnd) -> None:
    nodes, public = cluster
    shuffled_ips, shuffled_nodes = list(public), list(nodes)
    rnd.shuffle(shuffled_ips)
    rnd.shuffle(shuffled_nodes)
    assert ipalloc.allocate(nodes, public, algorithm) == ipalloc.allocate(shuffled_nodes, shuffled_ips, algorithm)


@settings(max_examples=60, deadline=None)
@given(clusters(max_ips=60))
def test_nondet_balances_when_nothing_restricts_it(cluster) -> None:
    nodes, public = cluster
    for p in public:
        p["known_on"] = [n["pnn"] for n in nodes]
    result = ipalloc.allocate(nodes, public, "nondet")
    healthy = [n["pnn"] for n in nodes if ipalloc.node_can_host(n)]
    counts = [sum(1 for a in result["assignments"] if a["pnn"] == pnn) for pnn in healthy]
    if healthy:
        assert max(counts) - min(counts) <= 1
        assert not result["unassigned"]


@settings(max_examples=80, deadline=None)
@given(clusters())
def test_lcp2_moves_a_healthy_holders_ip_only_to_a_node_that_had_none(cluster) -> None:
    nodes, public = cluster
    result = ipalloc.allocate(nodes, public, "lcp2")
    by_ip = {p["ip"]: p for p in public}

    def keeps(p):  # the holder may still host it: CTDB's unassign_unsuitable leaves it
        return p["current_pnn"] >= 0 and ipalloc.node_can_host(nodes[p["current_pnn"]]) \
            and p["current_pnn"] in p["known_on"]

    holding_before = {p["current_pnn"] for p in public if keeps(p)}
    for a in result["assignments"]:
        before = by_ip[a["ip"]]["current_pnn"]
        if keeps(by_ip[a["ip"]]) and a["pnn"] != before:
            assert a["pnn"] not in holding_before


def test_no_ip_failback_keeps_current_holders() -> None:
    nodes = [{"pnn": i, "flags": 0, "runstate": 5} for i in range(3)]
    public = [{"ip": f"198.51.100.{i}", "current_pnn": i % 2} for i in range(1, 7)]
    for algorithm in ("lcp2", "nondet"):
        kept = ipalloc.allocate(nodes, public, algorithm, {"no_ip_failback": True})
        assert all(a["pnn"] in (0, 1) for a in kept["assignments"])
        rebalanced = ipalloc.allocate(nodes, public, algorithm)
        assert any(a["pnn"] == 2 for a in rebalanced["assignments"])


def test_ipv4_and_ipv6_with_prefixes_keep_their_labels() -> None:
    nodes = [{"pnn": i, "flags": 0, "runstate": 5} for i in range(2)]
    public = [{"ip": "198.51.100.7/24", "current_pnn": -1}, {"ip": "2001:db8:100::7/64", "current_pnn": -1}]
    result = ipalloc.allocate(nodes, public)
    assert [a["ip"] for a in result["assignments"]] == ["2001:db8:100::7/64", "198.51.100.7/24"]
    assert sorted(a["pnn"] for a in result["assignments"]) == [0, 1]


@pytest.mark.parametrize("nodes, public, algorithm, options, culprit", [
    ([{"pnn": 0}], [{"ip": "198.51.100.300"}], "lcp2", {}, "'198.51.100.300'"),
    ([{"pnn": 0}], [{"ip": "198.51.100.1"}, {"ip": "198.51.100.1"}], "lcp2", {}, "duplicate public IP 198.51.100.1"),
    ([{"pnn": 0}], [{"ip": "::ffff:198.51.100.1"}, {"ip": "198.51.100.1"}], "lcp2", {}, "duplicate"),
    ([{"pnn": 0}, {"pnn": 0}], [], "lcp2", {}, "node pnn 0 is duplicated"),
    ([{"pnn": 5}], [], "lcp2", {}, "node pnn 5 out of range"),
    ([{"pnn": 0}], [], "best", {}, "unknown algorithm 'best'"),
    ([{"pnn": 0}], [], "lcp2", {"no_ip_fallback": True}, "unknown option 'no_ip_fallback'"),
    ([{"pnn": 0}], [{"ip": "198.51.100.1", "known_on": [0, 3]}], "lcp2", {}, "known_on names node 3"),
    ([{"pnn": 0}], [{"ip": "198.51.100.1", "current_pnn": 4}], "lcp2", {}, "current_pnn 4"),
])
def test_bad_input_names_the_culprit(nodes, public, algorithm, options, culprit) -> None:
    with pytest.raises(ipalloc.AllocationInputError, match=None) as info:
        ipalloc.allocate(nodes, public, algorithm, options)
    assert culprit in str(info.value)


def test_lcp2_spreads_a_fresh_cluster_evenly() -> None:
    rnd = random.Random(7)
    nodes = [{"pnn": i, "flags": 0, "runstate": 5} for i in range(5)]
    public = [{"ip": f"198.51.100.{i}", "current_pnn": -1} for i in rnd.sample(range(1, 255), 40)]
    result = ipalloc.allocate(nodes, public)
    counts = [sum(1 for a in result["assignments"] if a["pnn"] == n) for n in range(5)]
    assert counts == [8] * 5
