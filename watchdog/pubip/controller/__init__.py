"""The controller side: `pubip listen` (CTDB's recovery master, as a service beside Ansible).

- listener: the queue of takeover runs, liveness, fast takeover orders, operations, status;
- runners: a takeover run through ansible-runner, or as an AWX job;
- http: the HTTP front (authentication, routing);
- store: sqlite state (requests, runs, nodes, overrides);
- orders, fasttakeover (pure), liveness: fast takeover of a dead node's IPs.

Imports the shared modules (protocol, awx, secrets, errors, _collection) and nothing of the node side.
"""
