"""pubip: floating (public) IP management for Linux clusters, CTDB-style."""

__version__ = "0.1.0"
