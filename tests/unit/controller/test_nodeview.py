"""The listener's view of its nodes (nodeview.NodeView with holdings): the start-up grace a silent node's death
waits for."""

from __future__ import annotations

from pubip.controller.listener import Listener
from pubip.membership import Timing
from tests.support.listeners import heartbeat


def test_a_watchdog_in_its_start_up_grace_is_not_dead_before_it_ends(listener: Listener) -> None:
    """A (re)started watchdog keeps what its host holds for its start-up grace, without a lease: its heartbeat
    says how long; the listener's death verdict waits for that, plus the time to release."""


    now = listener.clock()
    heartbeat(listener, "node3", "192.0.2.3", {"membership": {"tick": None, "hears": {}, "shuns": {}, "grace": 2.5}})
    t = Timing(lease=1.0)
    assert listener.holdings.grace_left("node3", now) >= 2.5 + t.release_bound + t.margin
    # a watchdog that never reached the listener: the grace one would take (membership.Timing.start_grace), at least
    watchdog = Timing(lease=1.0)
    assert listener.holdings.start_grace("node1") >= watchdog.start_grace
    # or the longest the node's watchdog announced (its own heartbeat interval)
    heartbeat(listener, "node1", "192.0.2.1", {"membership": {"tick": None, "hears": {}, "shuns": {}, "grace": 4.5}})
    assert listener.holdings.start_grace("node1") >= 4.5
