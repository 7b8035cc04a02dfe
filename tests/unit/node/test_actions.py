"""Which fast takeover orders a watchdog carries out (actions.take_ordered): the generation its record
is, or the takeover run that marked its record - never under another run's mark, or a mark past its
deadline."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from pubip.node import actions
from pubip.node.config import Config

IP = "198.51.100.3/24"


def record(generation: int = 4, **over: Any) -> dict[str, Any]:
    rec = {"version": 1, "generation": generation, "node": "node1", "nodes": {},
           "public_ips": [{"ip": IP, "node": "node3", "interfaces": ["eth0"]}],
           "this_node": [], "run_started": 1.0, "run_finished": 2.0}
    rec.update(over)
    return rec


def marked(run_id: str, left: float = 30.0) -> dict[str, Any]:
    return record(run_started=3.0, run_id=run_id, run_deadline={"boot_id": actions._record._lease.boot_id(),
                                                                 "monotonic": time.monotonic() + left})


@pytest.fixture
def carry_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    cfg = Config(node="node1", record_path=str(tmp_path / "record.json"), lock_path=str(tmp_path / "lock"))
    taken: list[str] = []

    class Act:
        error, kind, message = None, "take", f"Takeover of IP {IP} on interface eth0"
        pip = type("Pip", (), {"cidr": IP})

    def took(cfg: Any, nl: Any, rec: Any, specs: Any, tickles: Any = None) -> list[Act]:
        taken.append(IP)
        return [Act()]

    monkeypatch.setattr(actions, "take", took)

    def run(rec: dict[str, Any], order: dict[str, Any]) -> dict[str, Any]:
        actions._record.write(cfg.record_path, rec)
        taken.clear()
        out = actions.take_ordered(cfg, None, {"id": 1, "ips": [{"ip": IP, "interfaces": ["eth0"]}], **order},
                                   time.monotonic())
        assert (out["taken"] == [IP]) == bool(taken) == (out["refused"] is None), out
        return out
    return run


def test_an_order_of_the_records_generation_is_carried_out(carry_out: Any) -> None:
    assert carry_out(record(4), {"generation": 4})["taken"] == [IP]
    assert "the record is generation 4, the order 5" in carry_out(record(4), {"generation": 5})["refused"]


def test_under_a_runs_mark_only_that_runs_orders_are_carried_out(carry_out: Any) -> None:
    assert carry_out(marked("run-5"), {"generation": 5, "run_id": "run-5"})["taken"] == [IP]
    assert carry_out(marked("run-5"), {"generation": 4})["refused"] == "a takeover run is in progress"
    assert carry_out(marked("run-6"), {"generation": 5, "run_id": "run-5"})["refused"] == \
        "a takeover run is in progress"
    # that run died mid-way: it may have placed IPs it never recorded
    assert carry_out(marked("run-5", left=-1), {"generation": 5, "run_id": "run-5"})["refused"]


def test_once_the_run_recorded_here_its_orders_go_by_the_generation(carry_out: Any) -> None:
    assert carry_out(record(5), {"generation": 5, "run_id": "run-5"})["taken"] == [IP]
    assert carry_out(record(6), {"generation": 5, "run_id": "run-5"})["refused"]


@pytest.fixture
def release(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """actions.release_foreign against a record on disk; returns the IPs it released."""
    cfg = Config(node="node1", record_path=str(tmp_path / "record.json"), lock_path=str(tmp_path / "lock"))

    class Nl:
        def interfaces(self) -> dict[str, Any]:
            return {}

    class Act:
        error, kind, message = None, "release", "Release of IP"

        def __init__(self, cidr: str) -> None:
            self.pip = type("Pip", (), {"cidr": cidr})

    monkeypatch.setattr(actions._host, "plan_release", lambda ifaces, specs: specs)
    monkeypatch.setattr(actions._host, "apply_actions", lambda nl, specs, conf: [Act(s.cidr) for s in specs])

    def run(on_disk: dict[str, Any], checked: dict[str, Any], spare: set[str] | None = None) -> list[str]:
        actions._record.write(cfg.record_path, on_disk)
        return actions.release_foreign(cfg, Nl(), checked, [IP], spare=lambda: spare or set())
    return run


def test_under_a_runs_mark_what_that_run_does_not_give_here_is_released(release: Any) -> None:
    def with_plan(run_id: str, after: list[str]) -> dict[str, Any]:
        return {**marked(run_id), "run_after": after}
    assert release(with_plan("run-5", []), with_plan("run-5", [])) == [IP]
    assert release(with_plan("run-5", [IP]), with_plan("run-5", [])) == []  # the run takes it here after all
    assert release(with_plan("run-6", []), with_plan("run-5", [])) == []  # another run's mark: it decides
    assert release(marked("run-5"), with_plan("run-5", [])) == []  # a mark without this node's plan
    assert release(with_plan("run-5", []), with_plan("run-5", []), spare={IP}) == []  # taken on an order meanwhile
    assert release(record(4), with_plan("run-5", [])) == []  # that run is over: the next check sees its record
    assert release(record(4), record(4)) == [IP]  # no run: the record gives it to node3


def test_a_mark_past_its_deadline_does_not_keep_a_foreign_ip(release: Any) -> None:
    dead_run = {**marked("run-5", left=-1), "run_after": []}  # its run died mid-way: the record speaks
    assert release(dead_run, dead_run) == [IP]


def test_a_deposed_leaders_order_replayed_with_its_old_term_is_refused(carry_out: Any) -> None:
    """Fencing: a node whose record has seen term 7 (a newer leader) carries out no order of term 6 - one a
    deposed leader sent, replayed or late - and the orders of term 7 and later as usual."""
    assert carry_out(record(4, term=7), {"generation": 4, "term": 7})["taken"] == [IP]
    assert carry_out(record(4, term=7), {"generation": 4, "term": 8})["taken"] == [IP]
    refused = carry_out(record(4, term=7), {"generation": 4, "term": 6})["refused"]
    assert refused == "fenced: term 6 is older than term 7, the newest this node has seen: a newer listener leads"
    assert carry_out(record(4, term=7), {"generation": 4})["refused"].startswith("fenced: term 0")
    assert carry_out(record(4), {"generation": 4})["taken"] == [IP]  # a single listener: term 0 throughout
