# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One takeover run at a time per cluster on a controller, whoever starts it (the listener, an operator's
ansible-playbook): the plan phase takes a lock file naming the ansible-playbook process; a second run stops
there, before any host changes. The lock needs no release: it is stale once that process is gone (a run
killed mid-way leaves nothing behind). Runs from two controllers (an AWX job beside a listener elsewhere)
are not covered here; the AWX runner waits for the job template's active job instead.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile

RUNS_DIR = "/run/pubip/runs"


class RunLocked(Exception):
    """Another takeover run of this cluster is running; the message names it."""


def path_for(cluster_key, directory=None):
    """The lock file of the cluster whose identity is CLUSTER_KEY (inventory, group, hosts)."""
    digest = hashlib.sha256(cluster_key.encode()).hexdigest()[:16]
    if directory is None:  # shared by root's runs and the listener's user (its unit's RuntimeDirectory)
        shared = os.access(RUNS_DIR, os.W_OK) or (not os.path.exists(RUNS_DIR) and os.access("/run", os.W_OK))
        directory = RUNS_DIR if shared else tempfile.gettempdir()
    return os.path.join(directory, "takeover-run-%s.lock" % digest)


def _started(pid):
    """The process's start time (clock ticks since boot), to tell a live holder from a reused pid."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def playbook_pid():
    """The ansible-playbook process this worker was forked from. Not os.getppid(): once that process is gone
    (a cancelled run is terminated while its worker still plans) the worker is reparented, to init - a lock
    naming pid 1 would never go stale and stop every later run. Raises RunLocked when it is gone."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:  # not a multiprocessing worker: its parent process is the run's
        return os.getppid()
    if not parent.is_alive():
        raise RunLocked("the ansible-playbook process of this run is gone (the run was stopped)")
    return parent.pid


def acquire(path, run_id, pid=None):
    """Take the lock for run RUN_ID of process PID (the ansible-playbook process: playbook_pid()).
    Returns True; raises RunLocked while another live process holds it. The same process may take it again."""
    pid = playbook_pid() if pid is None else pid
    mine = {"pid": pid, "started": _started(pid), "run_id": run_id}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    for _attempt in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
            try:
                with open(path) as f:
                    holder = json.load(f)
            except (OSError, ValueError):
                holder = {}
            alive = isinstance(holder.get("pid"), int) and _started(holder["pid"]) is not None and \
                _started(holder["pid"]) == holder.get("started")
            if alive and holder["pid"] != pid:
                raise RunLocked("another takeover run of this cluster is running (run %s, process %d); this one "
                                "stops before any host changed" % (holder.get("run_id"), holder["pid"]))
            try:  # stale (its process is gone) or ours: take it over
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(mine, f)
        return True
    raise RunLocked("could not take the takeover run lock %s" % path)
