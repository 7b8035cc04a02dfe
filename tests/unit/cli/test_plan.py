"""`pubip plan` as a whole process: the DESIGN contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
])
def test_bad_input_exits_2_naming_the_culprit(stdin: str, culprit: str) -> None:
    proc = plan(stdin)
    assert proc.returncode == 2
    assert culprit in proc.stderr
    assert proc.stdout == ""
