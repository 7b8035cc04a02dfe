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


def _orphan_worker(path, answer):
    """A worker whose ansible-playbook process (its multiprocessing parent) is gone when it takes the lock."""
    import multiprocessing
    import os
    import time

    parent = multiprocessing.parent_process()
    while parent.is_alive():
        time.sleep(0.01)
    try:
        runlock.acquire(path, "run-c")
        answer.put(("took", os.getppid()))
    except runlock.RunLocked as exc:
        answer.put(("refused", str(exc)))


def _playbook(path, answer):
    import multiprocessing
    import os

    multiprocessing.get_context("fork").Process(target=_orphan_worker, args=(path, answer)).start()
    os._exit(0)  # gone at once, as a terminated ansible-playbook (no join of its worker)


def test_a_worker_whose_playbook_process_is_gone_takes_no_lock_that_would_never_go_stale(tmp_path):
    """Found in a lab: a run cancelled while its plan phase ran was terminated; its worker, reparented to init,
    took the lock naming pid 1 - alive for ever - and every later run stopped on it."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    answer = ctx.Queue()
    path = runlock.path_for("inv|pubip_nodes|n1,n2", str(tmp_path))
    ctx.Process(target=_playbook, args=(path, answer)).start()
    what, detail = answer.get(timeout=10)
    assert what == "refused" and "gone" in detail
    assert runlock.acquire(path, "run-d")  # nothing left behind
