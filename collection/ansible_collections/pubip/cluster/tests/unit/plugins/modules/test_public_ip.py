"""public_ip as Ansible runs it: arguments through patch_module_args, the result from exit_json/fail_json.

Only states that touch no address run here (query, record, bad input); take and release over real
netlink are tested on lab hosts (tests/integration/test_public_ip.py).
"""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args

from ansible_collections.pubip.cluster.plugins.modules import public_ip


class Exit(Exception):
    def __init__(self, result, failed):
        super().__init__(result.get("msg"))
        self.result = result
        self.failed = failed


@pytest.fixture
def run_module(monkeypatch):
    def exit_json(_self, **kwargs):
        raise Exit(kwargs, False)

    def fail_json(_self, **kwargs):
        raise Exit(kwargs, True)

    monkeypatch.setattr(public_ip.AnsibleModule, "exit_json", exit_json)
    monkeypatch.setattr(public_ip.AnsibleModule, "fail_json", fail_json)

    def run(args):
        with patch_module_args(args), pytest.raises(Exit) as info:
            public_ip.main()
        return info.value

    return run


def paths(tmp_path):
    (tmp_path / "hooks").mkdir()
    return {"record_path": str(tmp_path / "record.json"), "lock_path": str(tmp_path / "lock"),
            "hook_dir": str(tmp_path / "hooks")}


RECORD = {"generation": 3, "nodes": {"n1": {"pnn": 0, "state": "enabled"}}, "run_started": 10.0, "run_finished": 11.0,
          "public_ips": [{"ip": "198.51.100.2/24", "node": "n1", "interfaces": ["eth0"]},
                         {"ip": "198.51.100.1/24", "node": None, "interfaces": ["eth0"]}]}


def test_record_is_written_once_and_then_unchanged(run_module, tmp_path):
    args = dict(paths(tmp_path), state="record", node="n1", record=RECORD)
    first = run_module(args)
    assert not first.failed and first.result["changed"]
    written = json.loads((tmp_path / "record.json").read_text())
    assert written["generation"] == 3 and written["this_node"] == ["198.51.100.2/24"]
    assert [e["ip"] for e in written["public_ips"]] == ["198.51.100.1/24", "198.51.100.2/24"]
    again = run_module(args)
    assert not again.failed and not again.result["changed"]


def test_record_in_check_mode_writes_nothing_and_shows_the_diff(run_module, tmp_path):
    args = dict(paths(tmp_path), state="record", node="n1", record=RECORD, _ansible_check_mode=True,
                _ansible_diff=True)
    out = run_module(args)
    assert out.result["changed"] and not (tmp_path / "record.json").exists()
    assert '"generation": 3' in out.result["diff"]["after"] and out.result["diff"]["before"] == ""


def test_query_reports_interfaces_and_changes_nothing(run_module, tmp_path):
    out = run_module(dict(paths(tmp_path), state="query", addresses=[{"ip": "198.51.100.9/24", "interfaces": ["lo"]}]))
    assert not out.failed and out.result["changed"] is False
    assert "lo" in [i["name"] for i in out.result["interfaces"]]
    assert not (tmp_path / "record.json").exists()


@pytest.mark.parametrize(("addresses", "culprit"), [
    ([{"ip": "198.51.100.300/24", "interfaces": ["eth0"]}], "198.51.100.300/24"),
    ([{"ip": "not-an-ip", "interfaces": ["eth0"]}], "not-an-ip"),
])
def test_malformed_address_fails_naming_it(run_module, tmp_path, addresses, culprit):
    out = run_module(dict(paths(tmp_path), state="query", addresses=addresses))
    assert out.failed and culprit in out.result["msg"]


def test_record_state_needs_a_record(run_module, tmp_path):
    out = run_module(dict(paths(tmp_path), state="record"))
    assert out.failed and "record" in out.result["msg"]


def test_a_corrupt_record_is_an_error_not_an_empty_one(run_module, tmp_path):
    (tmp_path / "record.json").write_text('{"version": 99}')
    out = run_module(dict(paths(tmp_path), state="query"))
    assert out.failed and "record.json" in out.result["msg"]


def test_a_take_without_a_lease_is_refused_before_any_change_and_says_what_the_host_holds(run_module, tmp_path):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import leasefile as lease

    lease.write(str(tmp_path / "lease.json"), "n1", 0.0)  # ran out long ago: this node lost the cluster
    out = run_module(dict(paths(tmp_path), state="present", node="n1", lease_path=str(tmp_path / "lease.json"),
                          addresses=[{"ip": "198.51.100.1/24", "interfaces": ["lo"]}]))
    assert out.failed and "has no lease" in out.result["msg"]
    assert out.result["refused_before_change"] is True and out.result["public_ips"] == []  # the run counts on it


def test_a_take_without_a_lease_takes_back_what_the_run_kept_here_so_the_watchdog_retakes_none_of_it(
        run_module, tmp_path):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import leasefile as lease, record

    lease.write(str(tmp_path / "lease.json"), "n1", 0.0)
    marked = record.mark(record.from_run(RECORD, "n1"), "n1", 20.0, "run-4", 600.0, keep=["198.51.100.2/24"])
    assert record.kept(marked) == ["198.51.100.2/24"]  # the release phase said the watchdog may retake it
    record.write(str(tmp_path / "record.json"), marked)
    take = dict(paths(tmp_path), state="present", node="n1", lease_path=str(tmp_path / "lease.json"),
                addresses=[{"ip": "198.51.100.2/24", "interfaces": ["lo"]}], run_started=20.0, run_id="run-4")
    out = run_module(take)
    assert out.failed and out.result.get("refused_before_change") is True, out.result["msg"]
    assert record.kept(out.result["record"]) == []
    assert record.kept(record.read(str(tmp_path / "record.json"))) == []  # what the watchdog reads, under the lock
    # another run's take leaves this run's mark alone
    record.write(str(tmp_path / "record.json"), marked)
    run_module(dict(take, run_id="run-5"))
    assert record.kept(record.read(str(tmp_path / "record.json"))) == ["198.51.100.2/24"]


def test_a_run_of_an_older_term_changes_nothing_and_a_run_records_its_term(run_module, tmp_path):
    """Fencing (HA listeners): a node whose record has seen term 7 refuses a deposed leader's run of term 6 -
    nothing written - and keeps the newest term through every later run."""
    args = dict(paths(tmp_path), state="record", node="n1", record=RECORD)
    assert not run_module(dict(args, term=7)).failed
    assert json.loads((tmp_path / "record.json").read_text())["term"] == 7
    newer = dict(RECORD, generation=4)
    stale = run_module(dict(args, record=newer, term=6))
    assert stale.failed and stale.result["fenced"]
    assert stale.result["msg"] == ("Takeover run refused on n1: term 6 is older than term 7, the newest this node "
                                   "has seen: a newer listener leads")
    assert json.loads((tmp_path / "record.json").read_text())["generation"] == 3
    assert not run_module(dict(args, record=newer, term=8)).failed
    assert not run_module(dict(args, record=dict(RECORD, generation=5))).failed  # an operator's run: not fenced
    written = json.loads((tmp_path / "record.json").read_text())
    assert (written["generation"], written["term"]) == (5, 8)
