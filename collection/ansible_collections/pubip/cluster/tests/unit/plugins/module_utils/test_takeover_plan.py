"""The takeover run's plan from inventory + gathered reports: pure."""

from __future__ import annotations

import pytest

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import takeover

HOSTS = ["n1", "n2", "n3"]
IPS = [{"ip": "198.51.100.%d/24" % i, "interfaces": ["eth0"]} for i in range(1, 7)]


def report(held=(), can_host=None, generation=0, up=True):
    return {"interfaces": [{"name": "eth0", "link": "up" if up else "down"}],
            "public_ips": [{"ip": ip, "interface": "eth0", "link": "up"} for ip in held],
            "can_host": [ip["ip"] for ip in IPS] if can_host is None else can_host,
            "record": {"generation": generation}, "time": 100.0}


def cluster(**host_vars):
    return takeover.validate_inventory(HOSTS, IPS, "lcp2", host_vars)


def test_fresh_cluster_two_each_and_nothing_released():
    nodes, ips = cluster()
    plan = takeover.plan(nodes, ips, {h: report() for h in HOSTS})
    per = {h: len(plan["take"][h]) for h in HOSTS}
    assert per == {"n1": 2, "n2": 2, "n3": 2}
    assert not any(plan["release"].values()) and plan["changed"] and plan["generation"] == 1
    assert plan["counts"] == {"moved": 6, "kept": 0, "unassigned": 0}


def test_noop_when_everything_is_in_place_and_recorded():
    nodes, ips = cluster()
    first = takeover.plan(nodes, ips, {h: report() for h in HOSTS})
    held = {h: [t["ip"] for t in first["take"][h]] for h in HOSTS}
    rec = {"generation": 1, "public_ips": first["record"]["public_ips"], "nodes": first["record"]["nodes"],
           "run_started": 1.0, "run_finished": 2.0}
    gathered = {h: dict(report(held[h]), record=rec) for h in HOSTS}
    again = takeover.plan(nodes, ips, gathered)
    assert not again["changed"] and again["moves"] == [] and again["generation"] == 1


def test_disconnected_node_ips_move_and_double_holding_is_released():
    nodes, ips = cluster()
    gathered = {"n1": report(["198.51.100.1/24"]), "n2": report(["198.51.100.1/24"])}
    plan = takeover.plan(nodes, ips, gathered)
    assert plan["disconnected"] == ["n3"]
    holder = plan["assignment"]["198.51.100.1/24"]
    other = "n1" if holder == "n2" else "n2"
    assert "198.51.100.1/24" in plan["release"][other]
    assert all(v in ("n1", "n2") for v in plan["assignment"].values())


def test_disabled_state_and_nodes_restriction():
    nodes, ips = takeover.validate_inventory(
        HOSTS, [dict(IPS[0], nodes=["n3"])] + IPS[1:], "nondet", {"n2": {"pubip_state": "disabled"}})
    plan = takeover.plan(nodes, ips, {h: report() for h in HOSTS}, algorithm="nondet")
    assert "n2" not in plan["assignment"].values()
    assert plan["assignment"]["198.51.100.1/24"] == "n3"


def test_interface_down_everywhere_leaves_ip_unassigned():
    nodes, ips = cluster()
    gathered = {h: report(can_host=[ip["ip"] for ip in IPS[1:]]) for h in HOSTS}
    plan = takeover.plan(nodes, ips, gathered)
    assert plan["assignment"]["198.51.100.1/24"] is None and plan["counts"]["unassigned"] == 1


@pytest.mark.parametrize("ips, host_vars, algorithm, culprit", [
    (IPS + [IPS[0]], {}, "lcp2", "198.51.100.1 is listed twice"),
    ([{"ip": "198.51.100.1/33", "interfaces": ["eth0"]}], {}, "lcp2", "prefix '33' is invalid"),
    ([{"ip": "198.51.100.1/24", "interfaces": []}], {}, "lcp2", "interfaces must be a non-empty list"),
    ([{"ip": "198.51.100.1/24", "interfaces": ["eth0"], "nodes": ["n9"]}], {}, "lcp2", "nodes names 'n9'"),
    (IPS, {}, "fastest", "pubip_algorithm 'fastest' is unknown"),
    (IPS, {"n2": {"pubip_pnn": 0}}, "lcp2", "pubip_pnn 0 is already host n1's"),
    (IPS, {"n2": {"pubip_state": "sleepy"}}, "lcp2", "pubip_state 'sleepy' is unknown"),
])
def test_inventory_errors_name_the_culprit(ips, host_vars, algorithm, culprit):
    with pytest.raises(takeover.InventoryError) as info:
        takeover.validate_inventory(HOSTS, ips, algorithm, host_vars)
    assert culprit in str(info.value)


def test_interface_on_no_node_is_an_inventory_error():
    nodes, ips = takeover.validate_inventory(HOSTS, [{"ip": "198.51.100.1/24", "interfaces": ["eth7"]}], "lcp2", {})
    with pytest.raises(takeover.InventoryError, match="interface eth7 exists on no node"):
        takeover.plan(nodes, ips, {h: report() for h in HOSTS})


def test_summary_table():
    nodes, ips = cluster()
    plan = takeover.plan(nodes, ips, {h: report() for h in HOSTS})
    text = takeover.summary(plan, nodes)
    assert text.splitlines()[0] == "Takeover run generation 1 (lcp2): 6 moved, 0 kept, 0 unassigned"
    assert "Public IP" in text.splitlines()[1]
    assert len([line for line in text.splitlines() if line.startswith("198.51.100.")]) == 6
