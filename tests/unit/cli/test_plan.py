"""`pubip plan` as a whole process: the DESIGN contract."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pubip._collection import ipalloc
from pubip.cli import plan as planner

ROOT = Path(__file__).resolve().parents[3]
COLLECTION = ROOT / "collection/ansible_collections/pubip/cluster"
VECTORS = COLLECTION / "tests/unit/plugins/module_utils/fixtures/ctdb-vectors.json"


def plan(stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pubip.cli", "plan", "--input", "-", *args], input=stdin,
                          text=True, capture_output=True, cwd=ROOT, check=False)


def test_batch_of_all_vectors_in_one_process() -> None:
    vectors = json.loads(VECTORS.read_text())
    inputs = [{k: v[k] for k in ("algorithm", "nodes", "options", "public_ips")} for v in vectors]
    proc = plan(json.dumps(inputs))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [o["assignments"] for o in out] == [v["expected"] for v in vectors]


def test_single_input_and_explain() -> None:
    doc = {"algorithm": "lcp2", "nodes": [{"pnn": 0, "flags": 0, "runstate": 5}, {"pnn": 1, "flags": 2,
                                                                                   "runstate": 5}],
           "options": {}, "public_ips": [{"ip": "198.51.100.1", "current_pnn": 1, "known_on": [0, 1]}]}
    proc = plan(json.dumps(doc), "--explain")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["assignments"] == [{"ip": "198.51.100.1", "pnn": 0}]
    assert out["moves"] == [{"ip": "198.51.100.1", "from": 1, "to": 0}]
    assert "Unassign IP: 198.51.100.1 from 1" in out["log"]


@pytest.mark.parametrize("stdin, culprit", [
    ("{not json", "malformed JSON"),
    ('{"nodes": [{"pnn": 0}], "public_ips": [{"ip": "198.51.100.999"}]}', "'198.51.100.999'"),
    ('{"nodes": [{"pnn": 0}, {"pnn": 0}], "public_ips": []}', "node pnn 0 is duplicated"),
    ('{"nodes": [{"pnn": 0}], "public_ips": [], "algorithm": "x"}', "unknown algorithm 'x'"),
    ('{"nodes": [{"pnn": 0}], "public_ips": [], "options": {"bogus": 1}}', "unknown option 'bogus'"),
    ('{"nodes": [{"pnn": 0}], "public_ips": [{"ip": "198.51.100.1", "known_on": [2]}]}', "known_on names node 2"),
    ('[{"nodes": [{"pnn": 0}], "public_ips": []}, {"nodes": 3, "public_ips": []}]', "input 1: 'nodes' must be a list"),
    ('{"nodes": [7], "public_ips": []}', "nodes[0] must be an object, got 7"),
    ('{"nodes": [{"pnn": 0, "flags": "2"}], "public_ips": []}', "nodes[0]: 'flags' must be an integer, got '2'"),
    ('{"nodes": [{"pnn": 0}], "public_ips": [{"ip": "198.51.100.1", "known_on": 0}]}',
     "public_ips[0]: 'known_on' must be a list of pnns, got 0"),
    ('{"nodes": [{"pnn": 0}], "public_ips": [], "algorithm": "det", "options": {"home_nodes": 1}}',
     "option 'home_nodes' must be a list"),
])
def test_bad_input_exits_2_naming_the_culprit(stdin: str, culprit: str) -> None:
    proc = plan(stdin)
    assert proc.returncode == 2
    assert culprit in proc.stderr
    assert proc.stdout == ""


JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                    max_leaves=6)
BASE = {"nodes": [{"pnn": 0, "flags": 0, "runstate": 5}, {"pnn": 1, "flags": 2, "runstate": 5}],
        "options": {"no_ip_takeover": False, "no_ip_failback": False, "no_ip_host_on_all_disabled": False,
                    "force_rebalance_nodes": [1], "home_nodes": [{"ip": "198.51.100.1", "pnn": 1}]},
        "public_ips": [{"ip": "198.51.100.1", "current_pnn": 0, "known_on": [0, 1], "available_on": [0]},
                       {"ip": "2001:db8::1/64", "current_pnn": -1}]}


def places(doc: Any, where: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index of DOC, nested."""
    found = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        found.append((*where, key))
        found += places(value, (*where, key))
    return found


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_malformed_input_is_refused_naming_it_never_a_traceback(data: st.DataObject) -> None:
    doc: Any = {**copy.deepcopy(BASE), "algorithm": data.draw(st.sampled_from(["lcp2", "det", "nondet"]))}
    where = data.draw(st.sampled_from(places(doc)))
    parent = doc
    for key in where[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = data.draw(JSON)
    try:
        planner.plan_one(doc, "input", explain=True)
    except ipalloc.AllocationInputError as exc:
        assert str(exc).startswith("input: ")  # a message, not a traceback
