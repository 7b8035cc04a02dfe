"""One takeover run at a time per cluster: the lock names a live process; a dead one's is taken over."""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runlock


def test_a_second_run_stops_while_the_first_runs_and_goes_on_once_it_is_gone(tmp_path):
    path = runlock.path_for("inv|pubip_nodes|n1,n2", str(tmp_path))
    first = subprocess.Popen(["sleep", "30"])  # stands for the first run's ansible-playbook process
    try:
        assert runlock.acquire(path, "run-a", pid=first.pid)
        assert runlock.acquire(path, "run-a", pid=first.pid)  # the same run again (another phase, worker)
        with pytest.raises(runlock.RunLocked, match=r"another takeover run of this cluster is running \(run run-a"):
            runlock.acquire(path, "run-b")
    finally:
        first.kill()
        first.wait()
    assert runlock.acquire(path, "run-b")  # its process is gone: the lock is stale


def test_clusters_have_their_own_locks(tmp_path):
    assert runlock.path_for("a|g|n1", str(tmp_path)) != runlock.path_for("b|g|n1", str(tmp_path))
