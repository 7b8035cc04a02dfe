# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A takeover run's word with the listener that started it, on the controller (the pubip_run_state file).

The listener may cancel a run only before any host changes: the first release of the run and the
cancellation take the same lock, so exactly one of them wins. A cancelled run releases and takes nothing,
so the listener's fast takeover goes ahead at once. The listener also names the nodes it declares dead
during the run (their leases are gone: they hold nothing); the run skips them from then on.

    {"cancelled": false, "changing": true, "dead": ["node3"]}
"""

from __future__ import annotations

import json

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import files as _files
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.locking import InterfaceLock

EMPTY = {"cancelled": False, "changing": False, "dead": []}


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
    return {"cancelled": data.get("cancelled") is True, "changing": data.get("changing") is True,
            "dead": sorted(str(n) for n in dead) if isinstance(dead, list) else []}


def _update(path, change):
    with InterfaceLock(path + ".lock", timeout=10.0):
        state = read(path)
        answer = change(state)
        _files.write_json(path, state, ".runstate.", durable=False)
        return answer, state


def begin_changes(path):
    """Called before a host changes: (may go on, the state). False once the listener cancelled the run."""
    if not path:
        return True, dict(EMPTY)

    def change(state):
        if state["cancelled"]:
            return False
        state["changing"] = True
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
