"""The listener's side of the retake gate: what a heartbeat answer tells a node that asks to retake IPs from its
record (fast retake), and what the listener notes from its own answer. The node decides by
protocol.retake_refused over the answer; the listener computes the same verdict, so the IPs a node asks for
count as held by it exactly when it may go ahead.

Rules:
- while a run has not gathered the node, only a retake of what the run's snapshot pins to it goes ahead;
- never beside a node whose kernel holds the IP (its latest heartbeat);
- a refused retake's IPs are not held, whatever the heartbeat that asked reported;
- an ask held back only by the starting run counts for that run's snapshot (runqueue.asked_to_pin).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .. import protocol
from . import decisions
from .holdings import Holdings
from .nodeview import NodeView
from .runners import Runner
from .runs import CurrentRun


class RetakeGate:
    def __init__(self, holdings: Holdings, view: NodeView, run: CurrentRun, runner: Runner) -> None:
        self._holdings, self._view, self._run, self._runner = holdings, view, run, runner

    def waits(self, node: str, wanted: Any) -> bool:
        """The answer's retake_wait: a retake of WANTED waits for the running run."""
        return decisions.retake_wait(self._run.running() is not None, node in self._runner.gathered,
                                     self._holdings.pinned(node), wanted)

    def held_elsewhere(self, node: str, wanted: Any) -> dict[str, str]:
        """The IPs NODE asks to retake that another live node's heartbeat says it holds: it may not."""
        if not isinstance(wanted, list) or not wanted:
            return {}
        others = self._holdings.held_by_others(node, self._view.live())
        return {str(ip): others[str(ip)] for ip in wanted if str(ip) in others}

    def answered(self, node: str, beat: protocol.Heartbeat, answer: protocol.HeartbeatAnswer) -> None:
        """After the answer to NODE's heartbeat BEAT: drop what a refused retake reported held, and remember an ask
        that only the starting run held back."""
        record, wanted = beat.record, beat.retake
        if record is None or wanted is None:
            return
        if protocol.retake_refused(answer, record.generation) is not None:
            drop = set(beat.taking) & set(wanted)
            if drop and beat.membership is not None and beat.holds is not None:
                self._holdings.drop_refused(node, beat.membership.tick, beat.holds, drop)
        if answer.retake_wait and wanted and \
                protocol.retake_refused(replace(answer, retake_wait=False), record.generation) is None:
            self._holdings.note_ask(node, wanted, record.generation)
