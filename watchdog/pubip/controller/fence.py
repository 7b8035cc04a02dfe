"""The term fence of a new leader (HA listeners): it orders and runs only once its term is fenced in - every
live node reports it in its heartbeats (the node wrote it to its record under the interface lock, so no take
of an older term is under way there, and none starts after) - or FENCE_WAIT has passed since it won (an older
leader's last order is past its deadline on every node by then: it stopped ordering before its lease could
end, and a node carries out an order at most order_max_age, 1 s, after it arrived)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger("pubip.listener")
FENCE_WAIT = 1.5  # seconds a new leader waits at most for the live nodes to report its term


class TermFence:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._terms: dict[str, int] = {}  # node -> the newest term its heartbeats report
        self._won: tuple[int, float] | None = None  # (term, when this listener won it)
        self._fenced: int | None = None  # the term found fenced in (logged once)

    def reported(self, node: str, term: int) -> None:
        with self._lock:
            self._terms[node] = term

    def won(self, term: int | None) -> None:
        with self._lock:
            self._won = (term, self._clock()) if term is not None else None

    def fenced(self, term: int | None, live: Iterable[str]) -> tuple[int | None, bool]:
        """TERM, if it is fenced in among the LIVE nodes (else None); and whether it just became so. Term 0 (the
        embedded listener) and None (not leading) pass through."""
        if not term:
            return term, False
        with self._lock:
            won = self._won
            if won is None or won[0] != term:
                return None, False
            behind = sorted(n for n in live if self._terms.get(n, 0) < term)
            waited = self._clock() - won[1]
            if behind and waited < FENCE_WAIT:
                return None, False
            first = self._fenced != term
            self._fenced = term
        if first:
            log.warning("Leading in term %d: %s %.2fs after winning", term,
                        f"{', '.join(behind)} not heard with it" if behind else "every live node reports it", waited)
        return term, first
