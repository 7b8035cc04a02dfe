"""The controller side: `pubip listen` (CTDB's recovery master, as a service beside Ansible).

- listener: the queue of takeover runs, liveness, fast takeover orders, node states;
- operations: pubip disable / enable / ban / moveip / ... checked, stored, carried out by a run;
- statusview: pubip status and the metrics;
- runners: a takeover run through ansible-runner, or as an AWX job;
- http: the HTTP front (authentication, routing);
- store: sqlite state (requests, runs, nodes, overrides);
- orders, fasttakeover (pure), liveness: fast takeover of a dead node's IPs.

Imports the shared modules (protocol, awx, secrets, errors, _collection) and nothing of the node side.
"""
