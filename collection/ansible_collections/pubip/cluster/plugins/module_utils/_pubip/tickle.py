# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tickle ACKs (CTDB's ctdb_sys_send_tcp): after a takeover, make each client of the IP notice at once.

For every connection the old holder had, the new holder sends the client a bare ACK from the public IP with
sequence and acknowledgement numbers 0 and window 1234, three times, as CTDB does. The client's kernel
answers with an ACK of its own (the numbers are out of its window); this host's kernel has no such
connection and answers that with a reset: the client's blocked recv() fails at once and it reconnects,
instead of waiting for its retransmission or keepalive timers.

Packets are built whole (IPv4 header or IPv6 header, then TCP) and sent on a raw socket.
"""

from __future__ import annotations

import socket
import struct

TICKLES = 3
WINDOW = 1234  # CTDB's
IPV6_HDRINCL = 36  # linux/in6.h


def _checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return (~total) & 0xFFFF


def _tcp(src, dst, sport, dport, seq, ack, rst, pseudo):
    flags = 0x10 | (0x04 if rst else 0)  # ACK (and RST)
    header = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, WINDOW, 0, 0)
    check = _checksum(pseudo + header)
    return header[:16] + struct.pack("!H", check) + header[18:]


def packet(src, sport, dst, dport, seq=0, ack=0, rst=False):
    """The whole IP packet from SRC:SPORT to DST:DPORT (addresses as text, both IPv4 or both IPv6)."""
    if ":" in src:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s + d + struct.pack("!I3xB", 20, socket.IPPROTO_TCP)
        tcp = _tcp(s, d, sport, dport, seq, ack, rst, pseudo)
        ip6 = struct.pack("!IHBB", 6 << 28, len(tcp), socket.IPPROTO_TCP, 255) + s + d
        return ip6 + tcp
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!BBH", 0, socket.IPPROTO_TCP, 20)
    tcp = _tcp(s, d, sport, dport, seq, ack, rst, pseudo)
    ip4 = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 255, socket.IPPROTO_TCP, 0, s, d)
    ip4 = ip4[:10] + struct.pack("!H", _checksum(ip4)) + ip4[12:]
    return ip4 + tcp


def send(connections, count=TICKLES):
    """Tickle every connection [(public IP, port, client IP, client port)]; returns how many were sent.
    Errors per connection are skipped (a client address that is unreachable from here now)."""
    sent = 0
    socks = {}
    try:
        for local, lport, remote, rport in connections:
            family = socket.AF_INET6 if ":" in local else socket.AF_INET
            if family not in socks:
                sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, IPV6_HDRINCL, 1)
                socks[family] = sock
            data = packet(local, int(lport), remote, int(rport))
            try:
                for _ in range(count):
                    socks[family].sendto(data, (remote, 0))
                sent += 1
            except OSError:
                continue
    finally:
        for sock in socks.values():
            sock.close()
    return sent
