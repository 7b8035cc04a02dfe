"""The two long jobs of `make test` (Molecule's scenarios, chaos-short) as tests, so that the
workers run them beside the lab tests instead of after them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.labkit import ROOT

BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.lab, pytest.mark.slow]


# chaos-short measures how long IPs stay unheld, so its cluster gets the CPU a cluster's own hosts would have:
# on a 2-core machine the other workers' labs (other clusters) would starve its takeover runs and it would
# measure the test harness. Its watchdogs run real-time anyway; this covers its listener, runs and sshds.
CHAOS_NICE = -10


def _run(cmd: list[str], timeout: float, nice: int = 0, **env_vars: str) -> None:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}", **env_vars)
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True, timeout=timeout,
                          preexec_fn=(lambda: os.nice(nice)) if nice else None)
    # The table (chaos) or the scenario log (Molecule) is what a developer reads when it fails.
    print(proc.stdout[-20000:])
    print(proc.stderr[-5000:], file=sys.stderr)
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}"


def test_molecule_scenarios_pass(tmp_path: Path) -> None:
    # Molecule keeps each scenario's working directory (state.yml, inventory) under ANSIBLE_HOME after
    # `molecule test` has destroyed its hosts; the test's own, removed with tmp_path, not ~/.ansible.
    _run([str(BIN / "molecule"), "test", "--all"], timeout=1200, ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    assert sorted(p.name.rsplit(".", 1)[-1] for p in (tmp_path / "ansible-home" / "tmp").glob("molecule.*")) \
        == sorted(p.name for p in (ROOT / "molecule").iterdir() if (p / "molecule.yml").is_file())


def test_chaos_short_has_no_double_holding_and_settles() -> None:
    _run([sys.executable, "tests/chaos/chaos.py", "--faults", "30"], timeout=1200, nice=CHAOS_NICE)
