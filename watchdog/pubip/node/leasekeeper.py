"""The lease keeper: this node's lease (lease.py) and whom it hears (membership.Ears), the membership report
its heartbeats carry, the lease file public_ip reads before any take, and "lost the cluster": without a lease,
after the start-up grace, every public IP held here is released, and none is taken.

The lease file may say less than the lease, never more (lease.file_due).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import protocol
from .._collection import module_utils
from ..membership import LISTENER, Ears, Timing
from .config import Config
from .lease import Lease, file_due

_leasefile = module_utils("leasefile")
_netlink = module_utils("netlink")
log = logging.getLogger("pubip.watchdog")


class LeaseKeeper:
    def __init__(self, cfg: Config, clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg, self._clock = cfg, clock
        self.timing = Timing(lease=cfg.lease or Timing.lease, heartbeat=cfg.heartbeat_interval)
        peers = sorted(cfg.peers.nodes) if cfg.peers else []
        voters = {cfg.node, *peers} | ({LISTENER} if cfg.backend == "listener" else set())
        self._lease = Lease(cfg.node, voters, cfg.lease, clock) if cfg.lease else None
        self._ears = Ears(peers, self.timing, clock)
        self._lock = threading.Lock()  # the lease and the ears: the peers' thread, the heartbeats, this loop
        self._started = clock()
        self._lost = False
        if self._lease is not None:
            # A restart of the watchdog, not of the host: the lease the previous process held still counts.
            found, until = _leasefile.read_until(cfg.lease_path)
            if found == _leasefile.VALID:
                self._lease.carried = until

    def on(self) -> bool:
        """Whether this node runs with a lease at all."""
        return self._lease is not None

    def has_lease(self) -> bool:
        if self._lease is None:
            return True
        with self._lock:
            return self._lease.valid()

    def acknowledged(self, voter: str, sent: float) -> None:
        if self._lease is not None:
            with self._lock:
                self._lease.acknowledged(voter, sent)

    def hear_from(self, peer: str) -> bool:
        """PEER's heartbeat came: whether this node shuns it (then no acknowledgement)."""
        with self._lock:
            self._ears.hear(peer)
            return self._ears.shuns(peer)

    def grace_left(self) -> float:
        """How long this watchdog may still hold public IPs without a lease (its start-up grace)."""
        return self.timing.start_grace - (self._clock() - self._started)

    def report(self, tick: float | None) -> protocol.Membership:
        """The membership part of a heartbeat: the listener's last TICK echoed, the lease, whom it hears and
        shuns, and the start-up grace left (the listener declares it dead only after)."""
        with self._lock:
            ears = self._ears.report()
            left = round(self._lease.remaining(), 3) if self._lease else None
            grace = self.grace_left()
        return protocol.Membership(tick=tick, lease=self._cfg.lease, lease_left=left,
                                   grace=math.ceil(grace * 1000) / 1000 if self._lease is not None and grace > 0
                                   else None, hears=ears["hears"], shuns=ears["shuns"])

    def keep(self, stopped: threading.Event, release_all: Callable[[Any], None], regained: Callable[[], None]
             ) -> None:
        """Every 50 ms (its own thread): the lease file; without a lease, RELEASE_ALL (after the start-up grace);
        REGAINED when the lease comes back."""
        assert self._lease is not None
        nl = _netlink.Netlink()
        written: float | None = None
        while not stopped.wait(0.05):
            try:
                with self._lock:
                    expiry = self._lease.expiry()
                    report = self._ears.report()
                now = self._clock()
                if file_due(written, expiry, self.timing.heartbeat):
                    _leasefile.write(self._cfg.lease_path, self._cfg.node, expiry)
                    written = expiry
                if expiry > now:
                    if self._lost:
                        log.warning("Lease regained: a quorum of voters hears this node again; public IPs "
                                    "come back by a fast retake if the listener allows it, else a takeover run")
                        self._lost = False
                        regained()
                    continue
                if now - self._started < self.timing.start_grace:
                    continue  # start-up: time to hear a quorum, past the shuns a restart may have caused
                if not self._lost:
                    silent = sorted(p for p, ago in report["hears"].items() if ago >= self.timing.suspect_after)
                    log.error("Lost the cluster: no lease from a quorum of voters (peers not heard: %s; listener "
                              "acknowledged %s): releasing all public IPs", ", ".join(silent) or "none",
                              "never" if LISTENER not in self._lease.acks else
                              f"{now - self._lease.acks[LISTENER]:.1f}s ago")
                    self._lost = True
                release_all(nl)
            except Exception:  # the lease loop must outlive anything
                log.exception("Lease check failed")
                stopped.wait(0.5)
