"""Leadership among several listeners: one leads at a time, through a lease in a coordination service (etcd,
etcdelector.py); the others are standbys. No consensus of our own: etcd decides who holds the leader key.

The term is the leader key's create revision, which only grows: every order and takeover run a leader issues
carries it, and a node refuses a term lower than the highest it has seen (fencing).

Sizing, as Patroni's loop_wait + 2 * retry_timeout <= ttl: the leader renews every RENEW seconds, a request
gives up after TIMEOUT, and it counts its lease from the *send* time of its last renewal that succeeded. It
may order only until MARGIN before the lease could have ended by its own clock, so a leader that cannot renew
stops ordering before etcd can hand the key to another:

    renew + 2 * timeout <= ttl - margin        0.4 + 2 * 0.5 = 1.4 <= 2 - 0.3

so two renewals may fail in a row without a leader change. A standby campaigns every CAMPAIGN seconds; after
the leader's host dies the key goes at most TTL after its last renewal (plus etcd's expiry check, 0.5 s), and a
standby wins within CAMPAIGN after that: 2 + 0.5 + 0.2 < 3 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import PubipError

log = logging.getLogger("pubip.listener")

LEADER, STANDBY, UNKNOWN = "leader", "standby", "unknown"


@dataclass(frozen=True)
class Timing:
    ttl: int = 2             # the etcd lease, whole seconds
    renew: float = 0.4
    timeout: float = 0.5     # one request to etcd
    margin: float = 0.3
    campaign: float = 0.2

    def check(self) -> None:
        if self.ttl < 1 or self.renew <= 0 or self.timeout <= 0 or self.margin < 0 or self.campaign <= 0:
            raise PubipError(f"leadership timing {self} has a value out of range")
        if self.renew + 2 * self.timeout > self.ttl - self.margin:
            raise PubipError(f"leadership timing: renew {self.renew} + 2 * timeout {self.timeout} must not exceed "
                             f"ttl {self.ttl} - margin {self.margin}: two failed renewals would end the lease")


@dataclass(frozen=True)
class View:
    """What a listener knows of the leadership: its role, the leader's name and term, and why (for status)."""

    role: str
    leader: str | None
    term: int | None
    why: str = ""


def may_lead(now: float, renewed_at: float | None, timing: Timing) -> bool:
    """A leader may order while its lease, counted from the send time of its last renewal, has MARGIN left."""
    return renewed_at is not None and now < renewed_at + timing.ttl - timing.margin


class Elector(Protocol):
    """One listener's side of the election in the coordination service. Each call raises OSError (or a
    subclass) when the service cannot be asked."""

    def campaign(self, name: str, ttl: int) -> tuple[str | None, int | None]:
        """Take the leader key if nobody holds it; returns (the holder, its term) after the attempt."""

    def renew(self, term: int) -> bool:
        """Keep our lease; False when the key is no longer ours (the term ended)."""

    def resign(self, term: int) -> None:
        """Give the key up (a clean stop): a standby wins at once instead of after the lease."""


class Leadership:
    """The part: campaigns and renews in its own thread (run), answers view() and leading() to the others,
    and tells ON_CHANGE(view) when the role or the term changes."""

    def __init__(self, name: str, elector: Elector | None, timing: Timing = Timing(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        timing.check()
        self._name = name
        self._elector = elector
        self._timing = timing
        self._clock = clock
        self._lock = threading.Lock()
        self._renewed_at: float | None = None
        self._view = View(LEADER, name, 0, "the only listener") if elector is None else \
            View(UNKNOWN, None, None, "not asked etcd yet")
        self._listeners: list[Callable[[View], None]] = []
        self._aside_until = -1.0  # no campaign before this moment: this listener stepped aside

    @classmethod
    def alone(cls, name: str) -> Leadership:
        """The embedded default: one listener, always the leader, term 0."""
        return cls(name, None)

    def on_change(self, callback: Callable[[View], None]) -> None:
        self._listeners.append(callback)

    def view(self) -> View:
        with self._lock:
            if self._elector is None:
                return self._view
            if self._view.role == LEADER and not may_lead(self._clock(), self._renewed_at, self._timing):
                return View(UNKNOWN, None, None, "could not renew the leader lease in etcd")
            return self._view

    def leading_until(self) -> float | None:
        """While leading: the moment (this part's clock) it stops ordering unless a renewal succeeds before."""
        with self._lock:
            if self._elector is None or self._renewed_at is None:
                return None
            return self._renewed_at + self._timing.ttl - self._timing.margin

    def leading(self) -> int | None:
        """The term while this listener may order and run, else None."""
        v = self.view()
        return v.term if v.role == LEADER else None

    # --- the loop ---------------------------------------------------------------------------------------
    def run(self, stopping: threading.Event) -> None:
        """Campaign and renew until STOPPING; then resign if leading."""
        if self._elector is None:
            stopping.wait()
            return
        while not stopping.is_set():
            self.step()
            view = self.view()
            stopping.wait(self._timing.renew if view.role == LEADER else self._timing.campaign)
        self.resign()

    def step(self) -> None:
        """One round: a leader renews, the others campaign."""
        assert self._elector is not None
        before = self.view()
        sent = self._clock()
        if before.role == LEADER and before.term is not None:
            try:
                ours = self._elector.renew(before.term)
            except OSError as exc:
                self._set_failed(f"etcd unreachable: {exc}")
                return
            if ours:
                with self._lock:
                    self._renewed_at = sent
            else:
                self._set(View(STANDBY, None, None, f"term {before.term} ended: the leader key is not ours"))
            return
        if sent < self._aside_until:
            return
        try:
            holder, term = self._elector.campaign(self._name, self._timing.ttl)
        except OSError as exc:
            self._set(View(UNKNOWN, None, None, f"etcd unreachable: {exc}"))
            return
        if holder == self._name and term is not None:
            with self._lock:
                self._renewed_at = sent
            self._set(View(LEADER, self._name, term, "won the leader key in etcd"))
        else:
            self._set(View(STANDBY, holder, term, f"{holder} leads" if holder else "no leader yet"))

    def step_aside(self, seconds: float, why: str) -> None:
        """Give the leadership up and campaign for none for SECONDS: a leader that hears no quorum of the nodes
        lets a standby that does lead (as Raft's CheckQuorum)."""
        if self.leading() is None:
            return
        log.warning("Stepping aside as the leader for %.0fs: %s", seconds, why)
        self._aside_until = self._clock() + seconds
        self.resign()

    def resign(self) -> None:
        term = self.leading()
        if self._elector is not None and term is not None:
            try:
                self._elector.resign(term)
            except OSError as exc:
                log.warning("Could not resign term %d in etcd (the lease ends by itself): %s", term, exc)
            self._set(View(STANDBY, None, None, "resigned"))

    def _set_failed(self, why: str) -> None:
        """A renewal failed: the view turns UNKNOWN by itself once the margin is reached (view())."""
        log.warning("Leader lease renewal failed: %s", why)
        if not may_lead(self._clock(), self._renewed_at, self._timing):
            self._set(View(UNKNOWN, None, None, why))

    def _set(self, view: View) -> None:
        with self._lock:
            old = self._view
            self._view = view
            if view.role != LEADER:
                self._renewed_at = None
        if (old.role, old.term, old.leader) != (view.role, view.term, view.leader):
            if view.role == LEADER:
                log.info("Leading as %s, term %s", self._name, view.term)
            elif old.role == LEADER:
                log.warning("No longer leading (term %s): %s", old.term, view.why)
            for callback in self._listeners:
                callback(view)
