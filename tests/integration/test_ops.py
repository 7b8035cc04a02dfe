"""pubip disable / enable / moveip / reloadips through the listener, with check-mode previews."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests import labkit
from tests.integration.test_listener import wait_idle

pytestmark = pytest.mark.lab


@pytest.fixture
def lab(lab_factory) -> Iterator[labkit.LabHandle]:  # type: ignore[no-untyped-def]
    yield lab_factory("--nodes", "3", "--vips", "6")


def op(lab: labkit.LabHandle, *args: str) -> dict:
    proc = labkit.pubip(*args, "--lab", lab.name, "--json", check=False, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.slow
def test_disable_previews_then_moves_and_enable_brings_back(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    before = lab.holders()
    on_node2 = sorted(ip for ip, hs in before.items() if hs == ["node2"])
    with labkit.Sampler(lab) as sampler:
        preview = op(lab, "disable", "node2", "--check")
        assert preview["check"] is True and preview["success"] is True
        assert sorted(m["ip"] for m in preview["moves"]) == on_node2
        assert all(m["from"] == "node2" for m in preview["moves"])
        assert lab.holders() == before  # nothing changed
        done = op(lab, "disable", "node2")
        assert done["success"] is True
        assert lab.count_by_host()["node2"] == 0, (done, (lab.dir / "listener.log").read_text()[-2500:])
        again = op(lab, "enable", "node2")
        assert again["success"] is True
        assert lab.count_by_host() == {"node1": 2, "node2": 2, "node3": 2}
    assert sampler.double_holdings() == []


@pytest.mark.slow
def test_moveip_moves_one_ip_and_it_stays(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    ip = next(ip for ip, hs in lab.holders().items() if hs == ["node3"])
    others = {k: v for k, v in lab.holders().items() if k != ip}
    result = op(lab, "moveip", ip, "node1")
    assert result["success"] is True
    assert lab.holders()[ip] == ["node1"]
    assert {k: v for k, v in lab.holders().items() if k != ip} == others  # nothing else moved
    op(lab, "reloadips")  # a later run leaves it where it was moved
    assert lab.holders()[ip] == ["node1"]


def test_moveip_of_an_ip_that_is_not_public_is_refused_at_once_and_never_stored(lab: labkit.LabHandle) -> None:
    gen = wait_idle(lab)["generation"]
    before = lab.holders()
    for bad, says in (("10.9.9.9", "is not a public IP of this cluster"), ("nonsense", "is not an IP address")):
        proc = labkit.pubip("moveip", bad, "node2", "--lab", lab.name, check=False, timeout=60)
        assert proc.returncode == 1 and says in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    st = wait_idle(lab)
    assert st["generation"] == gen and lab.holders() == before
    ip = next(iter(before))
    assert op(lab, "moveip", ip, "node2")["success"] is True  # later operations still work
    assert lab.holders()[ip] == ["node2"]


def test_reloadips_adds_and_removes_without_moving_the_rest(lab: labkit.LabHandle) -> None:
    wait_idle(lab)
    before = lab.holders()
    doc = lab.inventory_doc()
    ips = doc["all"]["children"]["pubip_nodes"]["vars"]["pubip_public_ips"]
    removed = ips.pop(0)["ip"]
    ips.append({"ip": "198.51.100.77/24", "interfaces": ["eth0"]})
    lab.write_inventory(doc)
    preview = op(lab, "reloadips", "--check")
    assert {m["ip"] for m in preview["moves"]} == {"198.51.100.77/24"}
    result = op(lab, "reloadips")
    assert result["success"] is True
    after = lab.holders()
    assert after[removed] == []
    lab.info["public_ips"].append("198.51.100.77/24")
    assert len(lab.holders()["198.51.100.77/24"]) == 1
    assert {k: v for k, v in after.items() if k not in (removed,)} == \
        {k: v for k, v in before.items() if k != removed}
