# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netlink work on the local host, through pyroute2: no shelling out to `ip`."""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
import traceback

try:
    from pyroute2 import IPRoute
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.diag import SOCK_DESTROY, SS_ALL, DiagSocket, inet_diag_req
    from pyroute2.netlink.exceptions import NetlinkError

    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None
except ImportError:  # pragma: no cover - reported through missing_required_lib
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()

    class NetlinkError(Exception):  # type: ignore[no-redef]
        code = 0

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000
IFA_F_NODAD = 0x02
CAP_NET_ADMIN = 12


class Interface(object):
    __slots__ = ("name", "index", "admin_up", "carrier", "mac", "addresses")

    def __init__(self, name, index, admin_up, carrier, mac):
        self.name = name
        self.index = index
        self.admin_up = admin_up
        self.carrier = carrier
        self.mac = mac
        self.addresses = []  # (address, prefixlen, version)

    @property
    def usable(self):
        """Link up: administratively up and with carrier."""
        return self.admin_up and self.carrier

    def as_dict(self):
        return {"name": self.name, "index": self.index, "link": "up" if self.usable else "down",
                "admin_up": self.admin_up, "carrier": self.carrier, "mac": self.mac}


def has_cap_net_admin():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_NET_ADMIN))
    except OSError:
        pass
    return False


class Netlink(object):
    """A thin wrapper over one IPRoute socket; open it for one piece of work."""

    def __init__(self):
        self.ipr = IPRoute()

    def close(self):
        self.ipr.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def interfaces(self):
        """{name: Interface} with every address in the kernel (global scope)."""
        by_index = {}
        for link in self.ipr.get_links():
            flags = link["flags"]
            name = link.get("ifname")
            by_index[link["index"]] = Interface(
                name, link["index"], bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP), link.get("address"))
        for addr in self.ipr.get_addr():
            iface = by_index.get(addr["index"])
            address = addr.get("address")
            if iface is None or address is None or addr.get("scope", 0) >= 253:  # skip link and host scope
                continue
            version = 6 if addr["family"] == socket.AF_INET6 else 4
            iface.addresses.append((str(ipaddress.ip_address(address)), addr["prefixlen"], version))
        return {i.name: i for i in by_index.values()}

    def link_up(self, iface):
        self.ipr.link("set", index=iface.index, state="up")

    def add_address(self, iface, pip):
        """Add with broadcast (IPv4, `brd +`) or nodad (IPv6); EEXIST is success."""
        kwargs = {"index": iface.index, "address": pip.address, "prefixlen": pip.prefixlen}
        if pip.version == 4:
            net = ipaddress.ip_network(pip.cidr, strict=False)
            if pip.prefixlen < 31:
                kwargs["broadcast"] = str(net.broadcast_address)
        else:
            kwargs["flags"] = IFA_F_NODAD
        try:
            self.ipr.addr("add", **kwargs)
            return True
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise

    def delete_address(self, iface, address, prefixlen):
        """Delete; EADDRNOTAVAIL (already gone) is success."""
        try:
            self.ipr.addr("del", index=iface.index, address=address, prefixlen=prefixlen)
            return True
        except NetlinkError as exc:
            if exc.code == errno.EADDRNOTAVAIL:
                return False
            raise


def _words(address, version):
    packed = socket.inet_pton(socket.AF_INET6 if version == 6 else socket.AF_INET, address)
    if version == 4:
        return (struct.unpack(">I", packed)[0], 0, 0, 0)
    return struct.unpack(">4I", packed)


def kill_tcp(address, version):
    """Destroy every TCP socket whose local address is ADDRESS (as `ss -K src ADDRESS`).

    Returns the number of connections destroyed. Needs CONFIG_INET_DIAG_DESTROY.
    """
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    killed = 0
    with DiagSocket() as ds:
        ds.bind()
        for msg in ds.get_sock_stats(family=family, states=SS_ALL, protocol=socket.IPPROTO_TCP):
            if msg["idiag_src"] != address or msg["idiag_state"] == 10:  # keep listeners (TCP_LISTEN)
                continue
            req = inet_diag_req()
            req["sdiag_family"] = family
            req["sdiag_protocol"] = socket.IPPROTO_TCP
            req["idiag_states"] = SS_ALL
            req["idiag_sport"] = msg["idiag_sport"]
            req["idiag_dport"] = msg["idiag_dport"]
            req["idiag_src"] = _words(msg["idiag_src"], version)
            req["idiag_dst"] = _words(msg["idiag_dst"], version)
            req["idiag_if"] = msg["idiag_if"]
            req["idiag_cookie"] = msg["idiag_cookie"]
            try:
                tuple(ds.nlm_request(req, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK))
                killed += 1
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:  # already closed meanwhile
                    raise
    return killed
