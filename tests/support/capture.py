"""Capture ARP and IPv6 neighbour advertisements on an interface (run inside a namespace).

Usage: python capture.py IFACE SECONDS  -> prints one JSON object per packet seen, then exits.
Started before the takeover; prints "ready" on stderr once listening.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003


def mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def main() -> None:
    iface, seconds = sys.argv[1], float(sys.argv[2])
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.bind((iface, 0))
    sock.settimeout(0.1)
    print("ready", file=sys.stderr, flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            frame = sock.recv(2048)
        except TimeoutError:
            continue
        ethertype = struct.unpack("!H", frame[12:14])[0]
        if ethertype == 0x0806:
            _h, _p, _hl, _pl, op = struct.unpack("!HHBBH", frame[14:22])
            print(json.dumps({"kind": "arp", "eth_src": mac(frame[6:12]), "eth_dst": mac(frame[0:6]), "op": op,
                              "sender_mac": mac(frame[22:28]), "sender_ip": socket.inet_ntoa(frame[28:32]),
                              "target_mac": mac(frame[32:38]), "target_ip": socket.inet_ntoa(frame[38:42])}),
                  flush=True)
        elif ethertype == 0x86DD and frame[20] == 58 and frame[54] == 136:  # ICMPv6 neighbour advertisement
            flags = struct.unpack("!I", frame[58:62])[0]
            target = socket.inet_ntop(socket.AF_INET6, frame[62:78])
            opt_mac = mac(frame[80:86]) if len(frame) >= 86 and frame[78] == 2 else None
            print(json.dumps({"kind": "na", "eth_src": mac(frame[6:12]), "src": socket.inet_ntop(
                socket.AF_INET6, frame[22:38]), "dst": socket.inet_ntop(socket.AF_INET6, frame[38:54]),
                "override": bool(flags & 0x20000000), "solicited": bool(flags & 0x40000000), "target": target,
                "target_mac": opt_mac, "hop_limit": frame[21]}), flush=True)


if __name__ == "__main__":
    main()
