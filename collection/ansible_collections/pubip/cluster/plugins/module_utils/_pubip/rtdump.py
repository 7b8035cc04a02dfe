# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read links and addresses with one rtnetlink dump each, using only the standard library.

Reading is the hot path of every takeover run (one query per node) and of
every watchdog check; importing pyroute2 alone costs more than the whole read,
so reads use this and changes use pyroute2 (netlink.py).
"""

from __future__ import annotations

import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_GETADDR = 16, 18, 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_ADDRESS, IFLA_IFNAME = 1, 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP, IFF_LOWER_UP = 0x1, 0x10000
RTMGRP_LINK, RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR = 0x1, 0x10, 0x100
RTM_DELLINK, RTM_DELADDR = 17, 21
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY, TCP_ESTABLISHED = 4, 20, 1
_DIAG_REQ = struct.Struct("=BBBBI")  # inet_diag_req_v2: family, protocol, ext, pad, states; then a zero sockid
_SOCKID = struct.Struct(">HH16s16s")  # inet_diag_sockid: ports and addresses in network order
EVENTS = (RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR)
_HDR = struct.Struct("=IHHII")


def _attrs(data, offset):
    attrs = {}
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        attrs.setdefault(kind, data[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return attrs


def _dump(sock, msg_type, payload, seq):
    sock.send(_HDR.pack(_HDR.size + len(payload), msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + payload)
    messages = []
    while True:
        data = sock.recv(1 << 16)
        offset = 0
        while offset + _HDR.size <= len(data):
            length, kind, _flags, mseq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                raise OSError("malformed netlink message")
            body = data[offset + _HDR.size:offset + length]
            offset += (length + 3) & ~3
            if mseq != seq:
                continue
            if kind == NLMSG_DONE:
                return messages
            if kind == NLMSG_ERROR:
                code = struct.unpack_from("=i", body)[0]
                if code:
                    raise OSError(-code, os.strerror(-code))
                continue
            messages.append((kind, body))


def read_links_and_addresses(sock=None):
    """([(index, name, flags, mac)], [(index, family, address, prefixlen, scope)]). SOCK: an unbound
    NETLINK_ROUTE socket to read with (one made in another network namespace reads that one's)."""
    with sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        links = []
        for kind, body in _dump(sock, RTM_GETLINK, struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0), 1):
            if kind != RTM_NEWLINK:
                continue
            _family, _type, index, flags, _change = struct.unpack_from("=BxHiII", body)
            attrs = _attrs(body, 16)
            name = attrs.get(IFLA_IFNAME, b"").rstrip(b"\0").decode("utf-8", "replace")
            mac = ":".join("%02x" % b for b in attrs.get(IFLA_ADDRESS, b"")) or None
            links.append((index, name, flags, mac))
        addrs = []
        for kind, body in _dump(sock, RTM_GETADDR, struct.pack("=BBBBI", socket.AF_UNSPEC, 0, 0, 0, 0), 2):
            if kind != RTM_NEWADDR:
                continue
            family, prefixlen, _flags, scope, index = struct.unpack_from("=BBBBI", body)
            attrs = _attrs(body, 8)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if raw is None or family not in (socket.AF_INET, socket.AF_INET6):
                continue
            addrs.append((index, family, socket.inet_ntop(family, raw), prefixlen, scope))
    return links, addrs


def subscribe():
    """A netlink socket that receives link and address events (IPv4 and IPv6)."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    return sock


def wait_event(sock):
    """Block until a datagram with a link or address event arrives; its event types.

    An overflow (ENOBUFS: events were dropped) counts as an event too: something changed.
    """
    try:
        data = sock.recv(1 << 16)
    except OSError as exc:
        if exc.errno == 105:  # ENOBUFS
            return [RTM_NEWLINK]
        raise
    kinds = []
    offset = 0
    while offset + _HDR.size <= len(data):
        length, kind = _HDR.unpack_from(data, offset)[:2]
        if length < _HDR.size:
            break
        if kind in EVENTS:
            kinds.append(kind)
        offset += (length + 3) & ~3
    return kinds


def tcp_established(addresses, sock=None):
    """Established TCP connections whose local address is one of ADDRESSES (as `ss -tn state established`),
    one sock_diag dump per family: [(local address, local port, remote address, remote port)], IPv4 and IPv6
    - CTDB's connection list. SOCK: an unbound NETLINK_SOCK_DIAG socket to read with."""
    wanted = set(addresses)
    found = []
    if not wanted:
        return found
    with sock or socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as sock:
        sock.bind((0, 0))
        for seq, family in ((1, socket.AF_INET), (2, socket.AF_INET6)):
            request = _DIAG_REQ.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_ESTABLISHED) + bytes(48)
            for kind, body in _dump(sock, SOCK_DIAG_BY_FAMILY, request, seq):
                if kind != SOCK_DIAG_BY_FAMILY or len(body) < 4 + _SOCKID.size:
                    continue
                size = 4 if body[0] == socket.AF_INET else 16
                sport, dport, src, dst = _SOCKID.unpack_from(body, 4)
                local = _unmapped(socket.inet_ntop(body[0], src[:size]))
                if local in wanted:
                    found.append((local, sport, _unmapped(socket.inet_ntop(body[0], dst[:size])), dport))
    return sorted(found)


def _unmapped(address):
    """An IPv4 connection to a dual-stack socket shows as ::ffff:a.b.c.d: the IPv4 address it is."""
    if address.startswith("::ffff:") and "." in address:
        return address[7:]
    return address
