"""Is a silent node dead? Heartbeats stopping is not enough: a killed watchdog on a live host stops
them too, and that host still holds its public IPs. Before a node is treated as DISCONNECTED the
listener knocks on the address its heartbeats came from: any answer, even a refused connection,
proves the host alive; only silence (timeout, host or network unreachable) lets it be dead."""

from __future__ import annotations

import errno
import socket

ALIVE, DEAD = "alive", "dead"
_ALIVE_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET}


def probe(address: str, port: int = 22, timeout: float = 0.3) -> str:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect((address, port))
        except TimeoutError:
            return DEAD
        except OSError as exc:
            return ALIVE if exc.errno in _ALIVE_ERRNOS else DEAD
    return ALIVE
