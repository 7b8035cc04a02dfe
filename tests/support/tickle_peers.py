"""Both ends of an idle TCP connection for the tickle tests (run inside lab namespaces).

    python tickle_peers.py server PORT            accept on every address, keep connections open, never send;
                                                  print "listening" once it does
    python tickle_peers.py client ADDRESS PORT    connect, block in recv() with no timeout; print
                                                  "connected", then "reset T" (T: CLOCK_MONOTONIC) when the
                                                  connection is reset, then "reconnected T" once a new
                                                  connection to ADDRESS succeeds
"""

from __future__ import annotations

import socket
import sys
import threading
import time


def server(port: int) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.listen(64)
    print("listening", flush=True)
    kept = []
    while True:
        conn, _addr = sock.accept()
        kept.append(conn)  # held open, silent


def client(address: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.connect((address, port))
    print("connected", sock.getsockname()[1], flush=True)
    try:
        data = sock.recv(1)  # blocks: no timeout, no keepalive
        print("closed" if not data else "data", time.monotonic(), flush=True)
    except OSError as exc:
        print("reset", time.monotonic(), type(exc).__name__, flush=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1):
                print("reconnected", time.monotonic(), flush=True)
                return
        except OSError:
            time.sleep(0.1)
    print("no reconnect", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        threading.Thread(target=server, args=(int(sys.argv[2]),)).start()
    else:
        client(sys.argv[2], int(sys.argv[3]))
