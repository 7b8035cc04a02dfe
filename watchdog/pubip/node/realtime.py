"""Real-time scheduling for the watchdog, as CTDB gives ctdbd (SCHED_FIFO, priority 1).

The lease rule (docs/safety.md: D > (1 + rho) L + R + m) allows m = 0.2 s of scheduling delay between this
node's lease running out and its release of every public IP. On a host whose CPUs are busy a normal
process can wait seconds longer than that. A SCHED_FIFO process runs before every normal one, so the
lease loop and the release keep to m. Set before the watchdog starts its threads: they inherit it.
Hooks go back to normal scheduling in the child (hooks.py); the kernel's real-time throttling
(sched_rt_runtime_us, 95 % by default) keeps a runaway watchdog from taking a whole CPU.
"""

from __future__ import annotations

import os

PRIORITY = 1  # CTDB's: above every normal process, below anything else real-time


def enter(priority: int = PRIORITY) -> str | None:
    """Switch this process to SCHED_FIFO; None when done (or already real-time), else why not."""
    try:
        if os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR):
            return None  # systemd set it (CPUSchedulingPolicy=fifo)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        return str(exc)
    return None


def policy(pid: int = 0) -> str:
    """The scheduling policy of PID (0: this process), by name."""
    names = {os.SCHED_OTHER: "SCHED_OTHER", os.SCHED_FIFO: "SCHED_FIFO", os.SCHED_RR: "SCHED_RR"}
    which = os.sched_getscheduler(pid)
    return names.get(which, str(which))
