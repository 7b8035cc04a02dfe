"""CTDB's four watchdog rules on plain data."""

from __future__ import annotations

from dataclasses import dataclass, field

from pubip.node import check as wdcheck


@dataclass
class Iface:
    usable: bool = True
    admin_up: bool = True
    addresses: list[tuple[str, int, int]] = field(default_factory=list)


def record(**over: object) -> dict:
    rec = {"generation": 3, "run_started": 1.0, "run_finished": 2.0, "nodes": {"n1": {"state": "enabled"}},
           "public_ips": [{"ip": "198.51.100.1/24", "node": "n1", "interfaces": ["eth0"]},
                          {"ip": "198.51.100.2/24", "node": "n2", "interfaces": ["eth0"]},
                          {"ip": "198.51.100.3/24", "node": None, "interfaces": ["eth0"]}]}
    rec.update(over)
    return rec


def test_all_four_rules() -> None:
    ifaces = {"eth0": Iface(addresses=[("198.51.100.2", 24, 4)])}
    res = wdcheck.check(record(), record(), ifaces, "n1", {"eth0": False})
    assert [(f.rule, f.ip) for f in res.findings] == [
        ("missing", "198.51.100.1/24"), ("foreign", "198.51.100.2/24"), ("unassigned", "198.51.100.3/24"),
        ("link", "-")]
    assert res.fast_retake == ["198.51.100.1/24"]


def test_clean_state_has_no_findings() -> None:
    ifaces = {"eth0": Iface(addresses=[("198.51.100.1", 24, 4)])}
    rec = record(public_ips=record()["public_ips"][:2])
    assert wdcheck.check(rec, rec, ifaces, "n1", {"eth0": True}).findings == []


def test_skips_during_a_run_and_when_the_record_changes() -> None:
    ifaces = {"eth0": Iface()}
    assert wdcheck.check(record(run_started=5.0), record(run_started=5.0), ifaces, "n1", None).skipped == \
        "takeover run in progress"
    assert wdcheck.check(record(), record(generation=4), ifaces, "n1", None).skipped == \
        "assignment record changed while reading"
    assert wdcheck.check(None, None, ifaces, "n1", None).skipped == "no assignment record yet"


def test_a_disabled_node_does_not_ask_for_unassigned_ips_and_no_fast_retake_without_link() -> None:
    ifaces = {"eth0": Iface(usable=False)}
    rec = record(nodes={"n1": {"state": "disabled"}})
    res = wdcheck.check(rec, rec, ifaces, "n1", None)
    assert [f.rule for f in res.findings] == ["missing"] and res.fast_retake == []


def test_during_a_run_only_what_the_run_keeps_here_is_retaken() -> None:
    ifaces = {"eth0": Iface()}
    marked = record(run_started=5.0, run_keep=["198.51.100.1/24"])
    res = wdcheck.check(marked, marked, ifaces, "n1", None)
    assert res.skipped == "takeover run in progress" and res.findings == []
    assert res.fast_retake == ["198.51.100.1/24"]
    held = {"eth0": Iface(addresses=[("198.51.100.1", 24, 4)])}
    assert wdcheck.check(marked, marked, held, "n1", None).fast_retake == []  # not missing
    plain = record(run_started=5.0)
    assert wdcheck.check(plain, plain, ifaces, "n1", None).fast_retake == []  # the run keeps nothing said
    down = {"eth0": Iface(usable=False)}
    assert wdcheck.check(marked, marked, down, "n1", None).fast_retake == []  # no usable interface


def test_during_a_run_what_it_does_not_give_this_node_is_foreign() -> None:
    # A public IP added here while the run's takes ran (by hand, say): the run gives it to nobody here, and a
    # fast takeover order during the run may give it to another node - it must go at once, not after the run.
    held = {"eth0": Iface(addresses=[("198.51.100.1", 24, 4), ("198.51.100.2", 24, 4)])}
    marked = record(run_started=5.0, run_id="r7", run_keep=["198.51.100.1/24"], run_after=["198.51.100.1/24"])
    res = wdcheck.check(marked, marked, held, "n1", None)
    assert res.skipped == "takeover run in progress"
    assert [(f.rule, f.ip, f.interface) for f in res.findings] == [("foreign", "198.51.100.2/24", "eth0")]
    assert "takeover run r7 does not give it to us" in res.findings[0].message
    taking = record(run_started=5.0, run_id="r7", run_keep=[], run_after=["198.51.100.1/24", "198.51.100.2/24"])
    assert wdcheck.check(taking, taking, held, "n1", None).findings == []  # both are the run's to place here
    unsaid = record(run_started=5.0, run_keep=["198.51.100.1/24"])
    assert wdcheck.check(unsaid, unsaid, held, "n1", None).findings == []  # a mark without the plan: the run decides
