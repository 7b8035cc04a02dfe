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


def settled(nodes, ips, generation):
    """Every host holds what a first run gave it and has recorded it as GENERATION."""
    first = takeover.plan(nodes, ips, {h: report() for h in HOSTS})
    held = {h: [t["ip"] for t in first["take"][h]] for h in HOSTS}
    rec = {"generation": generation, "public_ips": first["record"]["public_ips"], "nodes": first["record"]["nodes"],
           "run_started": 1.0, "run_finished": 2.0}
    return {h: dict(report(held[h]), record=rec) for h in HOSTS}


def test_noop_when_everything_is_in_place_and_recorded():
    nodes, ips = cluster()
    gathered = settled(nodes, ips, generation=1)
    again = takeover.plan(nodes, ips, gathered)
    assert not again["changed"] and again["moves"] == [] and again["generation"] == 1


def test_a_run_records_a_generation_newer_than_any_host_may_have():
    """Chaos found it: a run cut short (a listener restart) recorded generation 7 on node1 only; the next run
    did not gather node1 (dead) and, from the others' records, recorded a different generation 7 - node1 then
    came back and fast-retook its IPs from "its" generation 7 beside their new holders. The listener's floor
    (what heartbeats said every record is) makes the next changing run generation 8."""
    nodes, ips = cluster()
    gathered = settled(nodes, ips, generation=5)
    assert takeover.plan(nodes, ips, gathered, generation_floor=5)["generation"] == 5  # nothing to change
    newer = takeover.plan(nodes, ips, gathered, generation_floor=7)
    assert newer["changed"] and newer["generation"] == 8 and newer["moves"] == []  # recorded anew, nothing moved
    moving = takeover.plan(nodes, ips, {**gathered, "n3": report(generation=5)}, generation_floor=7)
    assert moving["moves"] and moving["generation"] == 8


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
    ([{"ip": "198.51.100.0/24", "interfaces": ["eth0"]}], {}, "lcp2", "is the network address of 198.51.100.0/24"),
    ([{"ip": "198.51.100.255/24", "interfaces": ["eth0"]}], {}, "lcp2", "is the broadcast address"),
    ([{"ip": "169.254.1.1/16", "interfaces": ["eth0"]}], {}, "lcp2", "is a link-local address"),
    ([{"ip": "fe80::1/64", "interfaces": ["eth0"]}], {}, "lcp2", "is a link-local address"),
    ([{"ip": "2001:db8::5%eth0/64", "interfaces": ["eth0"]}], {}, "lcp2", "is a scoped IPv6 address"),
    ([{"ip": "::ffff:198.51.100.1/120", "interfaces": ["eth0"]}], {}, "lcp2", "write it as 198.51.100.1"),
    ([{"ip": "198.51.100.1/4", "interfaces": ["eth0"]}], {}, "lcp2", "prefix /4 is wider than /8"),
    ([{"ip": "2001:db8::1/12", "interfaces": ["eth0"]}], {}, "lcp2", "prefix /12 is wider than /16"),
    ([{"ip": "2001:db8::/64", "interfaces": ["eth0"]}], {}, "lcp2", "is the network address of 2001:db8::/64"),
])
def test_inventory_errors_name_the_culprit(ips, host_vars, algorithm, culprit):
    with pytest.raises(takeover.InventoryError) as info:
        takeover.validate_inventory(HOSTS, ips, algorithm, host_vars)
    assert culprit in str(info.value)


def test_a_public_ip_that_is_a_hosts_own_address_is_an_inventory_error():
    with pytest.raises(takeover.InventoryError, match=r"198.51.100.2 \(pubip_public_ips\[1\]\) is n2's ansible_host"):
        takeover.validate_inventory(HOSTS, IPS, "lcp2", {}, in_use={"198.51.100.2": "n2's ansible_host"})


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


def settled_record():
    """Generation 1 as a run left it: n1 .1 .2, n2 .3 .4, n3 .5 .6."""
    owners = {1: "n1", 2: "n1", 3: "n2", 4: "n2", 5: "n3", 6: "n3"}
    return {"generation": 1, "run_started": 1.0, "run_finished": 2.0,
            "public_ips": [{"ip": "198.51.100.%d/24" % i, "node": owners[i], "interfaces": ["eth0"]} for i in owners],
            "nodes": {}}


def test_an_unreachable_node_is_pinned_not_disconnected():
    nodes, ips = cluster()
    rec = settled_record()
    gathered = {"n2": dict(report(["198.51.100.3/24", "198.51.100.4/24"]), record=rec),
                "n3": dict(report(["198.51.100.5/24", "198.51.100.6/24"]), record=rec)}
    plan = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"})
    assert plan["assignment"]["198.51.100.1/24"] == "n1" and plan["assignment"]["198.51.100.2/24"] == "n1"
    assert plan["pinned"] == {"n1": {"reason": "unreachable", "ips": ["198.51.100.1/24", "198.51.100.2/24"]}}
    assert plan["disconnected"] == [] and "n1" not in plan["take"] and not plan["moves"]
    assert all(e["node"] == "n1" for e in plan["record"]["public_ips"] if e["ip"] in plan["pinned"]["n1"]["ips"])
    # the same node named dead: DISCONNECTED, its IPs move
    dead = takeover.plan(nodes, ips, gathered)
    assert {dead["assignment"]["198.51.100.1/24"], dead["assignment"]["198.51.100.2/24"]} <= {"n2", "n3"}


def test_a_pinned_ip_someone_else_also_holds_is_released_there():
    nodes, ips = cluster()
    rec = settled_record()
    gathered = {"n2": dict(report(["198.51.100.1/24", "198.51.100.3/24", "198.51.100.4/24"]), record=rec),
                "n3": dict(report(["198.51.100.5/24", "198.51.100.6/24"]), record=rec)}
    plan = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"})
    assert plan["release"]["n2"] == ["198.51.100.1/24"] and plan["assignment"]["198.51.100.1/24"] == "n1"


def test_a_node_without_lease_hosts_nothing():
    nodes, ips = cluster()
    gathered = {h: report() for h in HOSTS}
    gathered["n1"] = dict(report(["198.51.100.1/24"]), lease="expired")
    plan = takeover.plan(nodes, ips, gathered)
    assert "n1" not in plan["assignment"].values() and plan["release"]["n1"] == ["198.51.100.1/24"]
    assert plan["unleased"] == ["n1"] and "without lease: n1" in takeover.summary(plan, nodes)


def test_a_release_without_an_answer_counts_as_failed_for_every_ip():
    plan = {"connected": ["n1", "n2"], "release": {"n1": ["198.51.100.1/24"], "n2": ["198.51.100.2/24"]}}
    failed = takeover.failed_releases(plan, {"n1": {"unreachable": True, "msg": "timeout"},
                                             "n2": {"failed_ips": [], "released": ["198.51.100.2/24"]}})
    assert failed == {"n1": ["198.51.100.1/24"]}
    assert takeover.failed_releases(plan, {})["n2"] == ["198.51.100.2/24"]  # no result at all
    # the connection lost mid-call, reported by ansible-core 2.19 as a failed task (no failed_ips: the release
    # phase never answered): nothing it had to release may be taken elsewhere
    lost = {"failed": True, "msg": "Task failed: Data could not be sent to remote host \"192.0.2.1\""}
    assert takeover.failed_releases(plan, {"n1": lost, "n2": {"failed_ips": []}}) == {"n1": ["198.51.100.1/24"]}


def test_a_silent_release_also_holds_back_what_the_record_gives_that_host():
    # n1's watchdog may have retaken .3 (its own by the record) after the gather saw it missing: nobody takes it
    plan = {"connected": ["n1", "n2"], "release": {"n1": [], "n2": []}}
    failed = takeover.failed_releases(plan, {"n1": {"unreachable": True}, "n2": {"failed_ips": []}},
                                      recorded={"n1": ["198.51.100.3/24"], "n2": ["198.51.100.4/24"]})
    assert failed == {"n1": ["198.51.100.3/24"]}
    # a host the listener declared dead during the run holds nothing (its lease is gone)
    assert takeover.failed_releases(plan, {}, recorded={"n1": ["198.51.100.3/24"]}, dead=["n1"]) == {}


def test_kept_ips_are_those_a_host_holds_before_and_after_the_run():
    rec = settled_record()
    plan = {"take": {"n1": [{"ip": "198.51.100.1/24"}, {"ip": "198.51.100.5/24"}]}}
    assert takeover.recorded_ips(rec, "n1") == ["198.51.100.1/24", "198.51.100.2/24"]
    assert takeover.kept_ips(plan, "n1", rec) == ["198.51.100.1/24"]
    assert takeover.kept_ips(plan, "n2", rec) == []


def test_finish_names_every_host_that_kept_the_run_from_completing():
    plan = {"connected": ["n2", "n3", "n4"],
            "pinned": {"n1": {"reason": "ssh: connect refused", "ips": ["198.51.100.1/24"]}}}
    results = {"n2": {"release": {"failed_ips": []}, "take": {"unreachable": True, "msg": "gone"}, "record": None},
               "n3": {"release": {"failed_ips": []}, "take": {}, "record": {}}}
    problems = takeover.finish(plan, results, dead=["n4"])
    assert [name for name, _why in problems] == ["n1", "n2", "n4"]
    assert "n1 could not be gathered (ssh: connect refused)" in problems[0][1] and "198.51.100.1/24" in problems[0][1]
    assert "n2 was unreachable in the take phase" in problems[1][1]
    assert "n4 was declared dead during the run" in problems[2][1]
    assert takeover.finish({"connected": ["n3"], "pinned": {}}, {"n3": {"release": {}, "take": {}}}) == []


def test_a_pinned_node_keeps_exactly_what_its_watchdog_reported_holding():
    # n1 took .5 on a fast takeover order (not in any record yet) and lost .2 (a link flap), then its sshd died:
    # its watchdog's report after the run closed the fast paths says .1 and .5 - those stay, .2 can move (the
    # listener allows no retake on a node the run has not gathered, so n1 cannot put .2 back meanwhile)
    nodes, ips = cluster()
    rec = settled_record()
    gathered = {"n2": dict(report(["198.51.100.3/24", "198.51.100.4/24"]), record=rec),
                "n3": dict(report(["198.51.100.6/24"]), record=rec)}
    plan = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"},
                         reported={"n1": ["198.51.100.1/24", "198.51.100.5/24"],
                                   "n2": ["198.51.100.6/24"]})  # only a pinned node's report counts
    assert plan["pinned"]["n1"]["ips"] == ["198.51.100.1/24", "198.51.100.5/24"]
    assert plan["assignment"]["198.51.100.5/24"] == "n1" and plan["assignment"]["198.51.100.6/24"] == "n3"
    assert plan["assignment"]["198.51.100.2/24"] in ("n2", "n3")  # unheld, and n1 said so: it moves
    assert all(t["ip"] != "198.51.100.5/24" for takes in plan["take"].values() for t in takes)
    # without a report, the record speaks: .1 and .2 stay n1's
    blind = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"})
    assert blind["pinned"]["n1"]["ips"] == ["198.51.100.1/24", "198.51.100.2/24"]


def test_a_pinned_node_without_a_report_keeps_what_the_listener_says_it_may_hold():
    """Chaos (a double holding): n1 took .5 on a fast takeover order (the record still gives it to n3, which
    had lost its lease and dropped it), sent no heartbeat in time after the run closed the fast paths, and could
    not be gathered: from the record alone the run gave .5 back to n3, beside n1. The listener's word on what
    n1 may hold (its last report, the orders it carried out) pins .5 to n1."""
    nodes, ips = cluster()
    rec = settled_record()
    gathered = {"n2": dict(report(["198.51.100.3/24", "198.51.100.4/24"]), record=rec),
                "n3": dict(report(["198.51.100.6/24"]), record=rec)}  # .5 dropped: no lease for a while
    blind = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"})
    assert any(t["ip"] == "198.51.100.5/24" for takes in blind["take"].values() for t in takes)  # beside n1
    told = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"},
                         may_hold={"n1": ["198.51.100.5/24"], "n2": ["198.51.100.6/24"]})
    assert told["pinned"]["n1"]["ips"] == ["198.51.100.1/24", "198.51.100.2/24", "198.51.100.5/24"]
    assert told["assignment"]["198.51.100.5/24"] == "n1" and told["assignment"]["198.51.100.6/24"] == "n3"
    assert all(t["ip"] != "198.51.100.5/24" for takes in told["take"].values() for t in takes)
    # a fresh report is exact: what may_hold says does not widen it
    reported = takeover.plan(nodes, ips, gathered, pinned={"n1": "unreachable"}, reported={"n1": ["198.51.100.1/24"]},
                             may_hold={"n1": ["198.51.100.5/24"]})
    assert reported["pinned"]["n1"]["ips"] == ["198.51.100.1/24"]


def test_the_record_keeps_an_ip_with_the_holder_that_failed_to_release_it():
    plan = {"record": {"public_ips": [{"ip": "198.51.100.1/24", "node": "n1", "interfaces": ["eth0"]},
                                      {"ip": "198.51.100.2/24", "node": "n1", "interfaces": ["eth0"]}]}}
    got = takeover.achieved(plan, {"n2": ["198.51.100.2/24"]})
    assert [(e["ip"], e["node"]) for e in got] == [("198.51.100.1/24", "n1"), ("198.51.100.2/24", "n2")]
    assert plan["record"]["public_ips"][1]["node"] == "n1"  # the plan itself is left alone


def test_only_a_take_refused_before_any_change_leaves_ips_untaken_and_never_those_the_record_gives_the_host():
    wanted = [{"ip": "198.51.100.1/24"}, {"ip": "198.51.100.2/24"}, {"ip": "198.51.100.3/24"}]
    record = {"public_ips": [{"ip": "198.51.100.3/24", "node": "n2"}]}  # its watchdog may retake that one
    refused = {"failed": True, "refused_before_change": True,
               "public_ips": [{"ip": "198.51.100.2/24", "interface": "eth0", "link": "up"}]}
    assert takeover.untaken_ips(wanted, refused, record, "n2") == ["198.51.100.1/24"]
    assert takeover.untaken_ips(wanted, {"failed": True, "msg": "unreachable"}, record, "n2") == []
    assert takeover.untaken_ips(wanted, {"failed": True, "refused_before_change": True}, record, "n2") == []
    assert takeover.untaken_ips(wanted, {"changed": True, "refused_before_change": True, "public_ips": []},
                                record, "n2") == []


def test_ips_a_run_kept_on_a_host_whose_take_gave_them_up_are_untaken_and_those_it_still_keeps_are_not():
    wanted = [{"ip": "198.51.100.1/24"}, {"ip": "198.51.100.3/24"}]
    gathered = {"public_ips": [{"ip": "198.51.100.3/24", "node": "n2"}]}
    under_mark = {"public_ips": gathered["public_ips"], "run_started": 20.0, "run_finished": 11.0, "run_id": "r"}
    refused = {"failed": True, "refused_before_change": True, "public_ips": []}
    # the module took the kept IP from the mark under the lock: the watchdog retakes nothing now
    assert takeover.untaken_ips(wanted, dict(refused, record=dict(under_mark, run_keep=[])), gathered, "n2") == \
        ["198.51.100.1/24", "198.51.100.3/24"]
    # still kept under the mark (another run's mark, say): its watchdog may retake it
    assert takeover.untaken_ips(wanted, dict(refused, record=dict(under_mark, run_keep=["198.51.100.3/24"])),
                                gathered, "n2") == ["198.51.100.1/24"]
    # no mark: whatever the record gives the host may be retaken
    assert takeover.untaken_ips(wanted, dict(refused, record=gathered), {}, "n2") == ["198.51.100.1/24"]
