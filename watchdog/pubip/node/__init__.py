"""The node side: `pubip-watchdog`, one per host (CTDB's recovery daemon check).

- config: the watchdog's YAML, checked;
- check: the kernel against the assignment record (pure);
- actions: what the watchdog changes by itself, under the interface lock (fast retake, orders, releases);
- requester: asks the controller for takeover runs, heartbeats (listener, AWX, webhook);
- daemon: the scheduler, the netlink thread, the heartbeat thread.

Imports the shared modules (protocol, awx, secrets, errors, _collection) and nothing of the controller side.
"""
