"""The chaos report's arithmetic: double holdings (a hand-made foreign IP excused), unheld stretches."""

from __future__ import annotations

from tests.chaos import chaos


def test_overlapping_holders_are_a_double_holding() -> None:
    spans = {"198.51.100.1": [("node1", 0.0, 5.0), ("node2", 4.0, 6.0)]}
    assert chaos.double_holdings(spans, []) == [
        {"ip": "198.51.100.1", "hosts": ["node1", "node2"], "from": 4.0, "until": 5.0}]


def test_a_foreign_ip_is_excused_until_it_has_one_holder_again_but_not_after() -> None:
    spans = {"198.51.100.1": [("node1", 0.0, 10.0), ("node2", 2.0, 3.0), ("node3", 7.0, 8.0)]}
    found = chaos.double_holdings(spans, [("198.51.100.1", 1.9)])
    assert [(d["hosts"], d["from"], d["until"]) for d in found] == [(["node1", "node3"], 7.0, 8.0)]
    assert chaos.double_holdings(spans, [("198.51.100.2", 1.9)]) != []  # another IP's excuse does not count


def test_back_to_back_spans_of_one_host_are_not_a_double_holding() -> None:
    spans = {"198.51.100.1": [("node1", 0.0, 1.0), ("node1", 1.0, 2.0), ("node2", 2.0, 3.0)]}
    assert chaos.double_holdings(spans, []) == []


def test_longest_unheld_stretch() -> None:
    spans = {"198.51.100.1": [("node1", 0.0, 1.0), ("node2", 1.5, 2.0), ("node3", 4.0, 9.0)]}
    gaps = chaos.unheld_gaps(spans, ["198.51.100.1", "198.51.100.2"], 0.0, 10.0)
    assert gaps["198.51.100.1"] == (2.0, 4.0)
    assert gaps["198.51.100.2"] == (0.0, 10.0)  # never held


def test_report_per_fault_kind() -> None:
    events = [{"kind": "partition", "where": "n1 | n2", "t": 10.0, "undone": 15.0},
              {"kind": "flush", "where": "n2", "t": 30.0, "undone": 30.1}]
    spans = {"198.51.100.1": [("n1", 0.0, 12.0), ("n2", 13.5, 40.0)],
             "198.51.100.2": [("n2", 0.0, 31.0), ("n2", 31.4, 40.0)]}
    doubles = [{"ip": "198.51.100.1", "hosts": ["n1", "n2"], "from": 31.0, "until": 31.1}]
    table = chaos.by_kind(events, doubles, spans, ["198.51.100.1", "198.51.100.2"], 40.0)
    assert table["partition"]["faults"] == 1 and table["partition"]["double_holdings"] == 0
    assert abs(table["partition"]["longest_unheld_s"] - 1.5) < 1e-9
    assert table["flush"]["double_holdings"] == 1 and abs(table["flush"]["longest_unheld_s"] - 0.4) < 1e-9


def test_a_long_gap_counts_for_the_fault_it_began_under_only() -> None:
    events = [{"kind": "cut_off", "where": "n1", "t": 10.0, "undone": 12.0},
              {"kind": "flush", "where": "n2", "t": 20.0, "undone": 20.1}]
    spans = {"198.51.100.1": [("n1", 0.0, 10.5), ("n2", 40.0, 50.0)], "198.51.100.2": [("n2", 0.0, 50.0)]}
    table = chaos.by_kind(events, [], spans, ["198.51.100.1", "198.51.100.2"], 50.0)
    assert abs(table["cut_off"]["longest_unheld_s"] - 29.5) < 1e-9
    assert table["flush"]["longest_unheld_s"] == 0.0
