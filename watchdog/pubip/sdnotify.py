"""systemd's notify protocol for `Type=notify` with `WatchdogSec`: READY=1 once the service serves, WATCHDOG=1
while its loops run (the watchdog's checks, the listener's liveness watch), so systemd restarts a service whose
loop hangs. Does nothing outside systemd. Shared by both sides."""

from __future__ import annotations

import os
import socket


def notify(state: str) -> bool:
    """Send STATE (e.g. "READY=1") to systemd; False when not started by systemd or the socket is gone."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
