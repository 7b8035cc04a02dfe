"""This node's health: the hook directory's `monitor` event (CTDB's convention), every monitor_interval -
and every second while UNHEALTHY, so that a recovery is seen at once. monitor_failures failures in a row make
the node UNHEALTHY; every heartbeat says so, and the listener moves its IPs away."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from .._collection import module_utils
from .config import Config

log = logging.getLogger("pubip.watchdog")


class Health:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg, self._clock = cfg, clock
        self._verdict: dict[str, Any] = {"ok": True, "hook": "", "message": ""}
        self._failed = 0  # failures in a row
        self._ran = float("-inf")  # when the hooks last ran

    def ok(self) -> bool:
        return bool(self._verdict["ok"])

    def report(self) -> protocol.Health:
        """For the heartbeat."""
        return protocol.Health(**self._verdict)

    def tick(self) -> None:
        """Every second at most (the scheduler's job): the hooks, when due."""
        if self._verdict["ok"] and self._clock() - self._ran < self._cfg.monitor_interval - 0.05:
            return
        self._ran = self._clock()
        try:
            self.run_hooks()
        except Exception:
            log.exception("Monitor failed")

    def run_hooks(self) -> None:
        _hooks = module_utils("hooks")
        try:
            _hooks.run_hooks(self._cfg.hook_dir, "monitor", [], self._cfg.monitor_timeout)
        except _hooks.HookError as exc:
            self._failed += 1
            if self._failed >= self._cfg.monitor_failures and self._verdict["ok"]:
                log.error("Monitor: this node is UNHEALTHY: %s", exc)
            if self._failed >= self._cfg.monitor_failures:
                self._verdict = {"ok": False, "hook": os.path.basename(exc.hook), "message": str(exc.detail)[:300]}
            return
        if not self._verdict["ok"]:
            log.warning("Monitor: this node is healthy again")
        self._failed = 0
        self._verdict = {"ok": True, "hook": "", "message": ""}
