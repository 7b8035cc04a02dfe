"""pubip: floating (public) IP management for Linux clusters, CTDB-style.

Layers, lowest first; a module imports only from its own layer or below:
- shared: errors, protocol (the wire between watchdog and listener), membership, secrets, awx, logs, sdnotify,
  yamlfile, _collection
  (the pubip.cluster collection's module_utils: the same allocation and host code Ansible runs);
- node: the watchdog (pubip.node); controller: the listener (pubip.controller); neither imports the other;
- cli: the `pubip` command (pubip.cli); lab: the local test lab (pubip.lab), imported by the CLI only.
"""

__version__ = "0.2.0"
