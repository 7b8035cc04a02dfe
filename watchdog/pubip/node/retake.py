"""The fast retake: this node re-adds a public IP its record gives it that went missing (a network restart
flushed it), at once, under the interface lock - when the gate allows it and the listener says yes (no run that
has not gathered this node, the record not older than the last run, the IP not given away, nobody else holding
it). Without the listener's answer there is no fast retake; a takeover run decides.

The IPs being re-added are reported held meanwhile (taking): a run the listener starts after its yes counts them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .. import protocol
from .._collection import module_utils
from . import actions
from . import check as ipcheck
from .config import Config
from .requester import RequestFailed

_locking = module_utils("locking")
_record = module_utils("record")
log = logging.getLogger("pubip.watchdog")


class FastRetake:
    def __init__(self, cfg: Config, nl: Any, on_retake: Callable[[], None], blocked: Callable[[], str | None],
                 ask: Callable[[list[str]], protocol.HeartbeatAnswer], recheck: Callable[[float], None],
                 stopped: threading.Event) -> None:
        self._cfg, self._nl, self._on_retake = cfg, nl, on_retake
        self._blocked, self._ask, self._recheck, self._stopped = blocked, ask, recheck, stopped
        self._taking: set[str] = set()  # IPs a fast retake may be adding now: reported as held meanwhile
        self._refused: str | None = None  # why the last retake was refused (said once while it lasts)

    def taking(self) -> set[str]:
        return set(self._taking)

    def allowed(self, record: dict[str, Any], wanted: list[str]) -> bool:
        """Whether this node may retake WANTED from RECORD now: the gate, a record whose run did not die mid-way,
        and - with the listener - its word: the record alone no longer proves these IPs are still ours."""
        why = self._blocked()
        if why is None and _record.mark_expired(record):
            why = "the last takeover run died mid-way (its mark expired): where its IPs went is unknown"
        elif why is None and self._cfg.backend == "listener":
            self._taking = set(wanted)  # held from before the listener is asked: a run it starts after counts them
            why = self._listener_refuses(int(record.get("generation") or 0), wanted)
            if why:
                self._taking = set()
        if why:
            log.log(logging.DEBUG if why == self._refused else logging.WARNING,
                    "Fast retake refused: %s; a takeover run decides", why)
        self._refused = why
        return why is None

    def _listener_refuses(self, generation: int, wanted: list[str]) -> str | None:
        for attempt in range(3):  # a network restart flushes this host's own address too: it comes back soon
            try:
                answer = self._ask(wanted)
                break
            except RequestFailed as exc:
                if attempt == 2 or self._stopped.wait(0.1):
                    return f"the listener did not answer ({exc})"
        # Once the running run has gathered this node it releases what it does not keep here: no reason to wait.
        # Before that, a retake of IPs its snapshot did not pin here waits, briefly.
        if answer.retake_wait:
            self._recheck(0.1)
        return protocol.retake_refused(answer, generation)

    def retake(self, record: dict[str, Any], wanted: list[str]) -> list[str]:
        """Re-add WANTED on the interface RECORD allows, under the interface lock; returns those now held. A run
        in progress either has not marked the record yet - its release phase (same lock) then releases what it
        does not keep here - or marked it, and then only what it keeps here is retaken."""
        done: list[str] = []
        try:
            with _locking.InterfaceLock(self._cfg.lock_path, timeout=0.5):
                current = _record.read(self._cfg.record_path)
                if ipcheck.record_key(current) != ipcheck.record_key(record) or (
                        _record.in_progress(current) and not set(wanted) <= set(_record.kept(current))):
                    log.info("Fast retake skipped: the assignment record changed")
                    return done
                for act in actions.take(self._cfg, self._nl, record, actions.specs_of(record, wanted)):
                    if act.kind == "take" and not act.error:
                        self._on_retake()
                        log.warning("Fast retake: %s", act.message)
                    elif act.error:
                        log.error("Fast retake failed: %s", act.message)
                    if not act.error:
                        done.append(act.pip.cidr)
        except _locking.LockTimeout:
            log.info("Fast retake skipped: interface lock busy (a takeover run is changing this node)")
        finally:
            self._taking = set()
        return done
