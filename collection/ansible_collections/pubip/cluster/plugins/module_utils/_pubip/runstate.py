# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A takeover run's word with the listener that started it, on the controller (the pubip_run_state file).

The listener may cancel a run only before any host changes: the first release of the run and the
cancellation take the same lock, so exactly one of them wins. A cancelled run releases and takes nothing,
so the listener's fast takeover goes ahead at once. The listener also names the nodes it declares dead
during the run (their leases are gone: they hold nothing); the run skips them from then on.
With its first change the run leaves its plan (``plan``: where it puts each IP, and the IPs it moves);
once every take of it is done (its record phase begins: Ansible's barrier between tasks), where it left
each IP (``taken``). A run takes only the IPs it moves: so the listener may order a dead node's IPs that
the run does not move to the others at once, and the rest once its takes are done, under the run's
generation and id, without waiting for the run to end - to the nodes whose release is done (``released``):
their records carry the run's mark, under which a watchdog accepts the run's orders.

    {"cancelled": false, "changing": true, "dead": ["node3"], "released": ["node1", "node2"],
     "plan": {"generation": 8, "run_id": "...", "public_ips": [...], "moving": ["198.51.100.3/24"], ...},
     "taken": {"generation": 8, "run_id": "...", "public_ips": [...], "nodes": {...}, "connected": [...],
               "algorithm": "lcp2", "options": {...}, "allowed": {...}}}
"""

from __future__ import annotations

import json

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import files as _files
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.locking import InterfaceLock

EMPTY = {"cancelled": False, "changing": False, "dead": [], "released": [], "plan": None, "taken": None}


def read(path):
    """The run's state; a missing or unreadable file is the empty state (nothing said)."""
    if not path:
        return dict(EMPTY)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return dict(EMPTY)
    if not isinstance(data, dict):
        return dict(EMPTY)
    dead = data.get("dead")
    plan, taken, released = data.get("plan"), data.get("taken"), data.get("released")
    return {"cancelled": data.get("cancelled") is True, "changing": data.get("changing") is True,
            "dead": sorted(str(n) for n in dead) if isinstance(dead, list) else [],
            "released": sorted(str(n) for n in released) if isinstance(released, list) else [],
            "plan": plan if isinstance(plan, dict) else None, "taken": taken if isinstance(taken, dict) else None}


def _update(path, change):
    with InterfaceLock(path + ".lock", timeout=10.0):
        state = read(path)
        answer = change(state)
        _files.write_json(path, state, ".runstate.", durable=False)
        return answer, state


def create(path):
    """The listener's file for a run about to start, before it starts: a listener restarted while the run runs
    finds it (a run killed with its listener), and cancels it unless a host may have changed."""
    _update(path, lambda state: None)


def begin_changes(path, plan=None):
    """Called before a host changes: (may go on, the state). False once the listener cancelled the run.
    PLAN: the run's plan (kept by the first caller)."""
    if not path:
        return True, dict(EMPTY)

    def change(state):
        if state["cancelled"]:
            return False
        state["changing"] = True
        if state["plan"] is None and plan is not None:
            state["plan"] = plan
        return True
    return _update(path, change)


def cancel(path):
    """The listener cancels the run: True unless a host may already have changed (too late)."""
    def change(state):
        if state["changing"]:
            return False
        state["cancelled"] = True
        return True
    return _update(path, change)[0]


def declare_dead(path, nodes):
    """The listener declared NODES dead during the run."""
    def change(state):
        state["dead"] = sorted(set(state["dead"]) | set(nodes))
    _update(path, change)


def takes_done(path, taken):
    """The run's takes are all done (called before each record): TAKEN, where it left the IPs, is kept by the
    first caller, and returned to every caller: each host's record, and the listener's orders, use that one
    (a node declared dead between two callers would otherwise make their records disagree). The run takes
    nothing from now on. Without a path: TAKEN."""
    if not path:
        return taken

    def change(state):
        if state["taken"] is None:
            state["taken"] = taken
        return state["taken"]
    return _update(path, change)[0]


def released(path, node):
    """NODE's release is done: its record carries the run's mark."""
    if not path:
        return

    def change(state):
        state["released"] = sorted(set(state["released"]) | {node})
    _update(path, change)
