"""pubip disable / enable / moveip / reloadips through the listener, with check-mode previews."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_listener import wait_idle
from tests.support import labkit

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


def test_a_public_ip_added_by_hand_during_a_run_leaves_before_the_run_ends(lab: labkit.LabHandle) -> None:
    """A node the run has marked skips its checks, but what the run does not give it is foreign at once: an IP
    added there by hand while the run takes elsewhere would otherwise stay until the run ends - and meanwhile a
    fast takeover order could give it to another node too."""
    wait_idle(lab)
    holders = lab.holders()
    moving = next(ip for ip, hs in holders.items() if hs == ["node2"])
    foreign = next(ip for ip, hs in holders.items() if hs == ["node3"])
    hook = Path(lab.hosts[0]["dir"]) / "hooks" / "10.slow-take"
    hook.write_text('#!/bin/sh\n[ "$1" = takeip ] && sleep 6\nexit 0\n')  # the run's take on node1 lasts 6 s
    hook.chmod(0o755)
    move = subprocess.Popen([*labkit.PUBIP, "moveip", moving, "node1", "--lab", lab.name, "--json"],
                            cwd=labkit.ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while lab.holders()[moving] == ["node2"] and time.monotonic() < deadline:
            time.sleep(0.05)  # until the run's release on node2: node2 is marked, the take on node1 sleeps
        assert lab.holders()[moving] == [], lab.holders()
        assert lab.in_host("node2", "ip", "addr", "add", foreign, "dev", "eth0").returncode == 0
        added = time.monotonic()
        while "node2" in lab.holders()[foreign] and time.monotonic() - added < 10:
            time.sleep(0.05)
        gone = time.monotonic() - added
        assert lab.holders()[foreign] == ["node3"], lab.holders()
        assert move.poll() is None, "the run ended before the test could look"
        assert gone < 2.0, f"node2 dropped the IP added by hand after {gone:.2f}s"
        out, err = move.communicate(timeout=120)
    finally:
        if move.poll() is None:
            move.kill()
    assert move.returncode == 0 and json.loads(out)["success"] is True, out + err
    assert lab.holders()[moving] == ["node1"] and lab.holders()[foreign] == ["node3"]
    log = (Path(lab.hosts[1]["dir"]) / "watchdog.log").read_text()
    assert f"We are still serving a public IP '{foreign}' that we should not be serving (takeover run" in log
    # released by its watchdog, not asked for: the run changing node2 records the outcome
    assert "Takeover run requested by node2" not in (lab.dir / "listener.log").read_text()
