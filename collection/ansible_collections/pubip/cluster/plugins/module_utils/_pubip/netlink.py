# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Netlink work on the local host: no shelling out to `ip`.

Changes go through pyroute2, imported on first use (see rtdump.py: reads need
only the standard library and are the hot path).
"""

from __future__ import annotations

import errno
import importlib.util
import ipaddress
import socket
import struct

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import rtdump as _rtdump

HAS_PYROUTE2 = importlib.util.find_spec("pyroute2") is not None
PYROUTE2_IMPORT_ERROR = None if HAS_PYROUTE2 else "No module named 'pyroute2'"


class NetlinkError(Exception):
    """A failed netlink change: errno in .code."""

    def __init__(self, code, message):
        Exception.__init__(self, "%s (errno %d)" % (message, code))
        self.code = code


def _ipr_errors(fn):
    """Run FN translating pyroute2's NetlinkError into ours."""
    from pyroute2.netlink.exceptions import NetlinkError as _Pyroute2Error

    try:
        return fn()
    except _Pyroute2Error as exc:
        raise NetlinkError(exc.code, str(exc))

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
    """Reads through rtdump; changes through one pyroute2 IPRoute socket, opened on first change."""

    def __init__(self):
        self._ipr = None

    @property
    def ipr(self):
        if self._ipr is None:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
        return self._ipr

    def close(self):
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def interfaces(self):
        """{name: Interface} with every address in the kernel (global scope)."""
        links, addrs = _rtdump.read_links_and_addresses()
        by_index = {}
        for index, name, flags, mac in links:
            by_index[index] = Interface(name, index, bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP), mac)
        for index, family, address, prefixlen, scope in addrs:
            iface = by_index.get(index)
            if iface is None or scope >= 253:  # skip link and host scope
                continue
            version = 6 if family == socket.AF_INET6 else 4
            iface.addresses.append((str(ipaddress.ip_address(address)), prefixlen, version))
        return {i.name: i for i in by_index.values()}

    @staticmethod
    def promote_secondaries(iface):
        """Deleting a primary IPv4 address must not take the other public IPs of its subnet along
        (CTDB's 10.interface sets this too)."""
        path = "/proc/sys/net/ipv4/conf/%s/promote_secondaries" % iface.name
        try:
            with open(path) as f:
                if f.read().strip() == "1":
                    return
            with open(path, "w") as f:
                f.write("1\n")
        except OSError as exc:
            raise NetlinkError(exc.errno or errno.EPERM, "cannot enable %s: %s" % (path, exc.strerror))

    def link_up(self, iface):
        _ipr_errors(lambda: self.ipr.link("set", index=iface.index, state="up"))

    def add_address(self, iface, pip):
        """Add with broadcast (IPv4, `brd +`) or nodad (IPv6); EEXIST is success."""
        kwargs = {"index": iface.index, "address": pip.address, "prefixlen": pip.prefixlen}
        if pip.version == 4:
            self.promote_secondaries(iface)
            net = ipaddress.ip_network(pip.cidr, strict=False)
            if pip.prefixlen < 31:
                kwargs["broadcast"] = str(net.broadcast_address)
        else:
            kwargs["flags"] = IFA_F_NODAD
        try:
            _ipr_errors(lambda: self.ipr.addr("add", **kwargs))
            return True
        except NetlinkError as exc:
            if exc.code == errno.EEXIST:
                return False
            raise

    def delete_address(self, iface, address, prefixlen):
        """Delete; EADDRNOTAVAIL (already gone) is success."""
        if ":" not in address:
            self.promote_secondaries(iface)
        try:
            _ipr_errors(lambda: self.ipr.addr("del", index=iface.index, address=address, prefixlen=prefixlen))
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
    from pyroute2.netlink import NLM_F_ACK, NLM_F_REQUEST
    from pyroute2.netlink.diag import SOCK_DESTROY, SS_ALL, DiagSocket, inet_diag_req

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
                _ipr_errors(lambda r=req: tuple(ds.nlm_request(r, SOCK_DESTROY, NLM_F_REQUEST | NLM_F_ACK)))
                killed += 1
            except NetlinkError as exc:
                if exc.code != errno.ENOENT:  # already closed meanwhile
                    raise
    return killed


def tcp_connections(addresses):
    """Established TCP connections whose local address is one of ADDRESSES (as `ss -tn state established`):
    [(local address, local port, remote address, remote port)], IPv4 and IPv6 - CTDB's connection list. Read
    with the standard library (rtdump.py): the watchdog lists them every tickle_interval, and pyroute2's
    import would be a third of its memory."""
    return _rtdump.tcp_established(addresses)
