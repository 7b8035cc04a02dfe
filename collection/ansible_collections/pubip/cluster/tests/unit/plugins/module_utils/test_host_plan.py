"""Planning takes and releases on a host snapshot: pure, no netlink."""

from __future__ import annotations

import pytest

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import host
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.addresses import SpecError, parse_specs
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.netlink import Interface


def snapshot(**links):
    """links: name=(admin_up, carrier, [addresses])"""
    ifaces = {}
    for index, (name, (admin, carrier, addrs)) in enumerate(sorted(links.items()), start=2):
        iface = Interface(name, index, admin, carrier, "02:00:00:00:00:%02x" % index)
        for a in addrs:
            address, prefix = a.split("/")
            iface.addresses.append((address, int(prefix), 6 if ":" in address else 4))
        ifaces[name] = iface
    return ifaces


def specs(*entries):
    return parse_specs([{"ip": ip, "interfaces": list(ifs)} for ip, ifs in entries])


def test_take_prefers_link_up_then_fewest_public_ips():
    ifaces = snapshot(eth0=(True, True, ["198.51.100.9/24"]), eth1=(True, True, []), eth2=(True, False, []))
    public = {"198.51.100.9", "198.51.100.1", "198.51.100.2"}
    acts = host.plan_take(ifaces, specs(("198.51.100.1/24", ["eth2", "eth0", "eth1"]),
                                        ("198.51.100.2/24", ["eth0", "eth1"])), None, host.Settings(node="n1"), public)
    assert [(a.kind, a.iface.name) for a in acts] == [("take", "eth1"), ("take", "eth0")]


def test_admin_down_link_is_brought_up_when_nothing_better():
    ifaces = snapshot(eth0=(False, False, []))
    acts = host.plan_take(ifaces, specs(("198.51.100.1/24", ["eth0"])), None, host.Settings(), set())
    assert acts[0].kind == "take" and acts[0].bring_up


def test_held_on_downed_link_moves_and_redundant_stays():
    ifaces = snapshot(eth0=(True, False, ["198.51.100.1/24"]), eth1=(True, True, ["198.51.100.2/24"]))
    acts = host.plan_take(ifaces, specs(("198.51.100.1/24", ["eth0", "eth1"]), ("198.51.100.2/24", ["eth1"])),
                          None, host.Settings(), {"198.51.100.1", "198.51.100.2"})
    assert [(a.kind, a.iface.name) for a in acts] == [("move", "eth1"), ("redundant_take", "eth1")]
    assert acts[0].message == "Update of IP 198.51.100.1/24 from interface eth0 to eth1 (link down)"
    assert acts[1].message == "Redundant takeover of IP 198.51.100.2/24 on interface eth1 (ip already held)"


def test_conflict_with_record_unless_adopt():
    record = {"public_ips": [{"ip": "198.51.100.1/24", "node": "n2"}]}
    ifaces = snapshot(eth0=(True, True, ["198.51.100.1/24"]))
    spec = specs(("198.51.100.1/24", ["eth0"]))
    acts = host.plan_take(ifaces, spec, record, host.Settings(node="n1"), {"198.51.100.1"})
    assert acts[0].kind == "fail" and "gives it to n2" in acts[0].message
    acts = host.plan_take(ifaces, spec, record, host.Settings(node="n1", adopt=True), {"198.51.100.1"})
    assert acts[0].kind == "redundant_take"


def test_release_and_redundant_release():
    ifaces = snapshot(eth0=(True, True, ["198.51.100.1/24"]))
    acts = host.plan_release(ifaces, parse_specs([{"ip": "198.51.100.1/24"}, {"ip": "198.51.100.2/24"}],
                                                 need_interfaces=False))
    assert [a.kind for a in acts] == ["release", "redundant_release"]
    assert acts[1].message == "Redundant release of IP 198.51.100.2/24 (ip not held)"


def test_unknown_interface_is_named():
    with pytest.raises(SpecError, match="interface eth9 does not exist"):
        host.validate_interfaces(snapshot(eth0=(True, True, [])), specs(("198.51.100.1/24", ["eth9"])))


@pytest.mark.parametrize("entry, culprit", [
    ({"ip": "198.51.100.1"}, "has no prefix"),
    ({"ip": "198.51.100.1/0"}, "prefix '0' is invalid"),
    ({"ip": "2001:db8::1/129"}, "prefix '129' is invalid"),
    ({"ip": "fe80::/64x"}, "prefix '64x' is invalid"),
    ({"ip": "224.0.0.1/4"}, "multicast"),
    ({"ip": "198.51.100.1/24", "interfaces": ["bad name"]}, "not a valid interface name"),
])
def test_spec_errors(entry, culprit):
    entry.setdefault("interfaces", ["eth0"])
    with pytest.raises(SpecError, match=None) as info:
        parse_specs([entry])
    assert culprit in str(info.value)


def test_diff_lists_show_moves():
    ifaces = snapshot(eth0=(True, False, ["198.51.100.1/24"]), eth1=(True, True, []))
    acts = host.plan_take(ifaces, specs(("198.51.100.1/24", ["eth0", "eth1"]), ("198.51.100.2/24", ["eth1"])),
                          None, host.Settings(), {"198.51.100.1", "198.51.100.2"})
    before, after = host.diff_lists(ifaces, acts, {"198.51.100.1", "198.51.100.2"})
    assert before == ["198.51.100.1/24@eth0"]
    assert after == ["198.51.100.1/24@eth1", "198.51.100.2/24@eth1"]
