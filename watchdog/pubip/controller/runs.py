"""The takeover run in progress (`CurrentRun`: its id, its run state file, the nodes it started without, the
moment it was marked) and the queue of requests for runs (`Requests`: in the store, with the events that wake
the run loop). The run state file (runstate.py) is how the listener cancels a run that has changed no host yet,
and tells a changing run which nodes died.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .. import _collection
from .store import Store

_runstate = _collection.module_utils("runstate")


class CurrentRun:
    """Changed under the listener's order lock only (listener.py: the lock order); read anywhere."""

    def __init__(self) -> None:
        self._id: int | None = None  # 0: a run is starting (marked), no id yet
        self._state: str | None = None  # its run state file, when the runner shares it
        self._dead: frozenset[str] = frozenset()  # the nodes it was started without (dead then)
        self._marked = 0.0  # when it was marked running: reports made after it count

    def running(self) -> int | None:
        return self._id

    def state_file(self) -> str | None:
        return self._state

    def marked(self) -> float:
        return self._marked

    def started_without(self, node: str) -> bool:
        return node in self._dead

    def mark(self, state_dir: Path | None) -> None:
        """A run is starting: no fast retake or order from now on. STATE_DIR: where its run state file goes
        (None: the runner does not share one)."""
        self._id = 0
        self._state = None
        if state_dir is not None:  # cancellable from now until it changes a host
            self._state = str(state_dir / f"runstate-{time.time_ns()}.json")
            _runstate.create(self._state)  # on disk before the run is (recovery.py)

    def set_marked(self, when: float) -> None:
        self._marked = when

    def set(self, run_id: int | None, state: str | None, dead: Iterable[str] = ()) -> None:
        """The run in progress, as a whole (a test's starting state)."""
        self._id, self._state, self._dead = run_id, state, frozenset(dead)

    def begin(self, run_id: int, dead: list[str]) -> None:
        self._id, self._dead = run_id, frozenset(dead)

    def end(self) -> None:
        self._id, self._state, self._dead = None, None, frozenset()

    def read(self) -> dict[str, Any]:
        """What its run state file says (EMPTY without one)."""
        return _runstate.read(self._state) if self._state else dict(_runstate.EMPTY)

    def cancel(self) -> bool:
        """Cancel it if it has changed no host yet: True when it is cancelled (now or before)."""
        return bool(self._state) and _runstate.cancel(self._state)

    def declare_dead(self, dead: list[str]) -> None:
        if self._state:
            _runstate.declare_dead(self._state, dead)

    def remove_file(self, state: str | None) -> None:
        if state:
            for leftover in (state, state + ".lock"):
                Path(leftover).unlink(missing_ok=True)


class Requests:
    """Requests for takeover runs, and the two events of the run loop: wake (a request came) and news (a node
    died, came back or was banned: a failed run is retried at once)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._wake = threading.Event()
        self._news = threading.Event()

    def ask(self, reason: str, node: str = "listener", news: bool = False) -> int:
        request_id = self._store.add_request(node, reason)
        if news:
            self._news.set()
        self._wake.set()
        return request_id

    def news(self) -> None:
        self._news.set()

    def poke(self) -> None:
        self._wake.set()

    def wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
        self._wake.clear()

    def clear_news(self) -> None:
        self._news.clear()

    def wait_news(self, timeout: float) -> bool:
        return self._news.wait(timeout)
