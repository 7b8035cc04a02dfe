"""Start-up recovery: runs a listener restart cut short. Their run state files are cancelled where no host has
changed yet (`cancel_cut_short`, I/O); what the rest leaves behind is decided by `plan` (pure):

- a run that changed no host is redone, and the last placement stands;
- a run whose takes were all done left every IP where its run state file says: that is the last placement, with
  orders only to the nodes it released;
- any other is redone, and until a run completes no fast retake from an older record - except on the nodes it
  gathered and did not declare dead (it moved none of their IPs elsewhere) - and orders start from its plan.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _collection
from .decisions import untaken
from .placement import Placement

_runstate = _collection.module_utils("runstate")


def cancel_cut_short(runner_dir: Path) -> tuple[bool, dict[str, Any] | None]:
    """Cancel what runs a restart cut short left (their ansible-playbook may still run). (True, None) when they
    changed no host and now never will - the cancel and a run's first release take one lock; (False, its state)
    once a host may have changed; (False, None) without such a file (AWX)."""
    leftovers = sorted(runner_dir.glob("runstate-*.json"))
    unchanged = bool(leftovers) and all([_runstate.cancel(str(p)) for p in leftovers])
    changing = [run_state for p in leftovers if not (run_state := _runstate.read(str(p)))["cancelled"]]
    for path in leftovers:  # a cancelled file stays a while: a run still going finds it and changes nothing
        if not _runstate.read(str(path))["cancelled"] or time.time() - path.stat().st_mtime > 86400:
            for leftover in (path, Path(f"{path}.lock")):
                leftover.unlink(missing_ok=True)
    return unchanged, (changing[0] if len(changing) == 1 else None)


@dataclass
class Recovery:
    redo: list[tuple[int, str]] = field(default_factory=list)  # (run id, what its redo knows: for the log)
    placement: Placement | None = None  # the last placement, changed (None: as it was)
    adopt: dict[str, Any] | None = None  # where a run whose takes were all done left every IP
    recorded_on: list[str] = field(default_factory=list)  # the nodes that run released (marked)
    untaken: list[str] = field(default_factory=list)  # IPs its takers refused: held by nobody
    skipped: list[str] = field(default_factory=list)  # the deaths it skipped: their IPs are ordered


def plan(cut_short: list[int], unchanged: bool, run_state: dict[str, Any] | None, placement: Placement
         ) -> Recovery:
    """What runs CUT_SHORT leave: UNCHANGED and RUN_STATE as cancel_cut_short returned them."""
    out = Recovery()
    taken = (run_state or {}).get("taken")
    if not isinstance(taken, dict) or not isinstance(taken.get("public_ips"), list) or \
            not isinstance(taken.get("generation"), int) or taken["generation"] <= int(placement.newest() or 0):
        taken = None
    p = copy.deepcopy(placement)
    for run_id in cut_short:
        if unchanged:
            out.redo.append((run_id, "cancelled: it had changed no host"))
            continue
        if taken is not None:
            out.redo.append((run_id, f"its takes were all done: where it left the IPs, generation "
                                     f"{taken['generation']}, stands until a run completes"))
            continue
        out.redo.append((run_id, ""))  # it may have changed hosts
        # It may have changed hosts and recorded a newer generation on some: no fast takeover from the last
        # placement, and no retake from an older record, until a run completes (as after a failed run)
        settled = int(p.planned_generation or 0) <= int(p.generation or 0)
        p.planned_generation = max(int(p.planned_generation or 0), int(p.generation or 0) + 1)
        run_plan = (run_state or {}).get("plan") or {}
        if run_state is not None and settled and isinstance(run_plan.get("generation"), int) and \
                isinstance(run_plan.get("connected"), list):
            # Its nodes (but those it declared dead) may still retake from their records: it gathered them, so it
            # releases on each (marking it) before any take, and takes nothing a node failed to release. Its
            # plan's generation is on no host before its takes are all done.
            p.cut_short = {"generation": p.newest(), "retake_ok": sorted(set(map(str, run_plan["connected"]))
                                                                           - set(run_state["dead"])),
                           "plan": run_plan, "released": run_state["released"], "dead": run_state["dead"]}
        out.placement = p
    if taken is not None and run_state is not None:
        # As a run that failed after its takes: its hosts record where its takes left every IP, and it takes
        # nothing more. Its orders go to the nodes it released; the deaths it skipped are ordered.
        out.adopt = {"generation": taken["generation"], "algorithm": taken.get("algorithm"),
                     "options": taken.get("options"), "allowed": taken.get("allowed"),
                     "record": {"nodes": taken.get("nodes"), "public_ips": taken["public_ips"]}}
        out.recorded_on = sorted(set(run_state["released"]) - set(run_state["dead"]))
        out.untaken = untaken((run_state.get("plan") or {}).get("public_ips"), taken["public_ips"])
        out.skipped = list(run_state["dead"])
    return out
