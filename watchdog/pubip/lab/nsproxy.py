"""ssh ProxyCommand into a lab: relay stdin/stdout to HOST:PORT (run inside the controller namespace).

Lets Ansible in the root namespace (Molecule, say) reach lab hosts without a
route into the lab: `-o ProxyCommand="ip netns exec CTL python -m pubip.lab.nsproxy %h %p"`.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def relay(host: str, port: int) -> int:
    sock = socket.create_connection((host, port), timeout=10)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    sel.register(stdin, selectors.EVENT_READ)
    sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _mask in sel.select():
            if key.fileobj == stdin:
                data = os.read(stdin, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    sel.unregister(stdin)
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return 0
                os.write(stdout, data)


def main() -> int:
    if len(sys.argv) != 3:
        print("usage: python -m pubip.lab.nsproxy HOST PORT", file=sys.stderr)
        return 2
    try:
        return relay(sys.argv[1], int(sys.argv[2]))
    except OSError as exc:
        print(f"pubip.lab.nsproxy: {sys.argv[1]}:{sys.argv[2]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
