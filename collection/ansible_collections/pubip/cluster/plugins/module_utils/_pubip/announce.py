# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tell the segment where a public IP lives now, as CTDB's ctdb_sys_send_arp does.

IPv4: a gratuitous ARP request and a gratuitous ARP reply (sender = target =
the public IP), broadcast. IPv6: an unsolicited neighbour advertisement to
all-nodes (ff02::1) with the override flag and the target link-layer address.
"""

from __future__ import annotations

import socket
import struct
import time

ETH_P_ARP = 0x0806
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST_MAC = b"\xff" * 6
ND_NEIGHBOR_ADVERT = 136
NA_FLAG_OVERRIDE = 0x20000000
ND_OPT_TARGET_LLADDR = 2


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def arp_frame(mac, address, op):
    """An Ethernet frame carrying a gratuitous ARP request or reply for ADDRESS."""
    hw = mac_bytes(mac)
    ip = socket.inet_aton(address)
    target_hw = b"\x00" * 6 if op == ARP_REQUEST else hw
    header = BROADCAST_MAC + hw + struct.pack("!H", ETH_P_ARP)
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + hw + ip + target_hw + ip
    return header + arp


def na_message(mac, address):
    """ICMPv6 neighbour advertisement body (the kernel fills in the checksum)."""
    target = socket.inet_pton(socket.AF_INET6, address)
    option = struct.pack("!BB", ND_OPT_TARGET_LLADDR, 1) + mac_bytes(mac)
    return struct.pack("!BBHI", ND_NEIGHBOR_ADVERT, 0, 0, NA_FLAG_OVERRIDE) + target + option


def announce(iface_name, iface_index, mac, address, version, count=3, interval=0.05):
    """Send COUNT rounds of announcements, INTERVAL seconds apart. Returns packets sent."""
    sent = 0
    if version == 4:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP)) as sock:
            sock.bind((iface_name, ETH_P_ARP))
            frames = [arp_frame(mac, address, ARP_REQUEST), arp_frame(mac, address, ARP_REPLY)]
            for round_ in range(count):
                if round_:
                    time.sleep(interval)
                for frame in frames:
                    sock.send(frame)
                    sent += 1
        return sent
    with socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6) as sock:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, iface_index)
        sock.bind((address, 0, 0, iface_index))
        message = na_message(mac, address)
        for round_ in range(count):
            if round_:
                time.sleep(interval)
            sock.sendto(message, ("ff02::1", 0, 0, iface_index))
            sent += 1
    return sent
