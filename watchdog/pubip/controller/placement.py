"""The last placement: where the last completed takeover run (or the run the listener adopted) put every public
IP, and the generations that bound what a host may have recorded since. Kept in the state directory.

`Placement` is the value (pure); `LastPlacement` owns it: load, save, and every change, under its own lock.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("pubip.listener")
FILE = "placement.json"


@dataclass
class Placement:
    generation: int | None = None  # the completed run's generation
    assignment: dict[str, str | None] = field(default_factory=dict)  # public IP -> node
    nodes: dict[str, Any] | None = None  # node -> {pnn, state} as the run saw them
    public_ips: list[dict[str, Any]] = field(default_factory=list)  # {ip, node, interfaces}
    algorithm: str | None = None
    options: dict[str, Any] | None = None
    allowed: dict[str, Any] | None = None  # public IP -> the nodes that may host it
    recorded_on: list[str] | None = None  # a failed run's: the nodes that recorded it (None: all)
    untaken: list[str] = field(default_factory=list)  # a failed run's IPs whose takers refused them
    orders_issued_for: int | None = None  # the generation of the last batch of orders
    declared_dead: dict[str, int] = field(default_factory=dict)  # node -> generation its IPs were given away under
    planned_generation: int | None = None  # a later run that failed after it may have changed hosts
    cut_short: dict[str, Any] | None = None  # a run cut short by a listener restart (recovery.py)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Placement:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and v is not None})

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def newest(self) -> int | None:
        """The newest generation any host may have recorded: the completed run's, or a later failed run's
        that got as far as changing hosts. A record older than this is no ground for a fast retake."""
        gens = [g for g in (self.generation, self.planned_generation) if g is not None]
        return max(gens) if gens else None

    def retake_generation(self, node: str) -> int | None:
        """The generation NODE's record must have for a fast retake: newest(), but after a run cut short between
        its first release and its last take, the completed run's for the nodes that run gathered and did not
        declare dead - it moved none of their IPs elsewhere - until a run records again."""
        newest = self.newest()
        cut = self.cut_short
        if isinstance(cut, dict) and newest == cut.get("generation") and node in (cut.get("retake_ok") or []):
            return self.generation
        return newest

    def holders(self) -> dict[str, str]:
        return {str(e.get("ip")): str(e.get("node")) for e in self.public_ips if isinstance(e, dict)}

    def ips(self) -> list[str]:
        return [str(e.get("ip")) for e in self.public_ips if isinstance(e, dict)]

    def plan(self) -> dict[str, Any]:
        """What the fast takeover planner starts from (fasttakeover.orders)."""
        return {"generation": self.generation, "public_ips": self.public_ips, "nodes": self.nodes,
                "algorithm": self.algorithm, "options": self.options, "allowed": self.allowed,
                **({"untaken": self.untaken} if self.untaken else {})}


class LastPlacement:
    """The last placement, saved on every change. Its lock is a leaf: held only inside these methods."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / FILE
        self._lock = threading.Lock()
        self._p = Placement.from_json(read(self._path))

    def get(self) -> Placement:
        """A copy to read at leisure (the liveness loop asks every tick: not a deep one). Only declared_dead is
        changed in place here, so only it is copied; a new placement replaces every other container whole."""
        with self._lock:
            return replace(self._p, declared_dead=dict(self._p.declared_dead))

    def set(self, placement: Placement) -> None:
        with self._lock:
            self._p = copy.deepcopy(placement)
            self._save()

    def newest(self) -> int | None:
        with self._lock:
            return self._p.newest()

    def completed(self) -> int | None:
        with self._lock:
            return self._p.generation

    def retake_generation(self, node: str) -> int | None:
        with self._lock:
            return self._p.retake_generation(node)

    def declared_dead(self, node: str) -> int | None:
        with self._lock:
            return self._p.declared_dead.get(node)

    def holders(self) -> dict[str, str]:
        with self._lock:
            return self._p.holders()

    def give_away(self, given: dict[str, int], orders_issued_for: int | None = None) -> None:
        """NODE -> GENERATION: its IPs went to others under that generation (a death, or orders): no fast retake
        from a record of it or older (the heartbeat answer's declared_dead)."""
        with self._lock:
            for node, generation in given.items():
                self._p.declared_dead[node] = max(int(self._p.declared_dead.get(node) or 0), int(generation))
            if orders_issued_for is not None:
                self._p.orders_issued_for = orders_issued_for
            self._save()

    def declare_dead(self, node: str, recorded: int) -> None:
        """NODE is dead: no retake from its record, nor from one RECORDED (its last report) or older."""
        with self._lock:
            floor = max(self._p.newest() or 0, int(recorded or 0))
            self._p.declared_dead[node] = max(int(self._p.declared_dead.get(node) or 0), floor)
            self._save()

    def adopt(self, plan: dict[str, Any], orders_issued_for: int | None, recorded_on: list[str] | None = None,
              untaken: list[str] | None = None) -> None:
        """A run's plan is the last placement. RECORDED_ON: a failed run's, the nodes that recorded it (only they
        take its generation's orders); UNTAKEN: its IPs whose takers refused them before changing anything."""
        record = plan.get("record") or {}
        assignment = {e["ip"]: e.get("node") for e in record.get("public_ips") or []} if recorded_on is not None \
            else plan.get("assignment")
        with self._lock:
            self._p = Placement(generation=plan.get("generation"), assignment=dict(assignment or {}),
                                nodes=record.get("nodes"), public_ips=list(record.get("public_ips") or []),
                                algorithm=plan.get("algorithm"), options=plan.get("options"),
                                allowed=plan.get("allowed"), recorded_on=recorded_on, untaken=list(untaken or []),
                                orders_issued_for=orders_issued_for, declared_dead=self._p.declared_dead,
                                planned_generation=self._p.planned_generation)
            self._save()

    def adopt_record(self, generation: int, public_ips: list[dict[str, Any]], nodes: Any,
                     orders_issued_for: int | None) -> None:
        """A run the listener did not start, recorded by every live node, is the last placement."""
        with self._lock:
            p = self._p
            self._p = Placement(generation=generation, assignment={e["ip"]: e["node"] for e in public_ips},
                                nodes=nodes, public_ips=public_ips, algorithm=p.algorithm, options=p.options,
                                allowed=p.allowed, orders_issued_for=orders_issued_for,
                                declared_dead=p.declared_dead, planned_generation=p.planned_generation)
            self._save()

    def note_planned(self, generation: int) -> None:
        """A run of GENERATION failed after planning: some hosts may have recorded it."""
        with self._lock:
            self._p.planned_generation = max(int(generation or 0), int(self._p.planned_generation or 0))
            self._save()

    def _save(self) -> None:
        self._path.write_text(json.dumps(self._p.to_json()))


def set_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(aside)
    log.error("%s is corrupt (%s): moved to %s; starting without it (the start-up takeover run learns the "
              "cluster again)", path, why, aside)


def read(path: Path) -> dict[str, Any]:
    """The saved placement; a corrupt file is set aside, loudly, not silently ignored."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        set_aside(path, str(exc))
        return {}
    if not isinstance(data, dict):
        set_aside(path, "not a JSON object")
        return {}
    return data
