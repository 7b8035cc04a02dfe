# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Public IP specs: parsing and validation. Pure: no I/O."""

from __future__ import annotations

import ipaddress


class SpecError(ValueError):
    """An address list that cannot be used; the message names the culprit."""


class PublicIP(object):
    """One public IP: address, prefix and the interfaces allowed to carry it."""

    __slots__ = ("address", "prefixlen", "version", "interfaces")

    def __init__(self, address, prefixlen, version, interfaces):
        self.address = address
        self.prefixlen = prefixlen
        self.version = version
        self.interfaces = interfaces

    @property
    def cidr(self):
        return "%s/%d" % (self.address, self.prefixlen)

    def __repr__(self):
        return "PublicIP(%s on %s)" % (self.cidr, ",".join(self.interfaces))


def parse_ip(text, need_prefix=True):
    """'198.51.100.7/24' -> (address, prefixlen, version); IPv6 alike."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("public IP %r is not an address" % (text,))
    text = text.strip()
    if "/" not in text:
        if need_prefix:
            raise SpecError("public IP %s has no prefix: write it as address/prefix, e.g. 198.51.100.7/24" % text)
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            raise SpecError("public IP %r is not a valid IPv4 or IPv6 address" % text)
        return str(addr), addr.max_prefixlen, addr.version
    addr_text, prefix_text = text.split("/", 1)
    try:
        addr = ipaddress.ip_address(addr_text)
    except ValueError:
        raise SpecError("public IP %r: %r is not a valid IPv4 or IPv6 address" % (text, addr_text))
    if not prefix_text.isdigit() or not 0 < int(prefix_text) <= addr.max_prefixlen:
        raise SpecError("public IP %r: prefix %r is invalid (1..%d for IPv%d)"
                        % (text, prefix_text, addr.max_prefixlen, addr.version))
    if addr.is_multicast or addr.is_unspecified or addr.is_loopback:
        raise SpecError("public IP %r cannot be a multicast, unspecified or loopback address" % text)
    check_usable(text, addr, int(prefix_text))
    return str(addr), int(prefix_text), addr.version


MIN_PREFIX = {4: 8, 6: 16}


def check_usable(text, addr, prefixlen):
    """What a public IP cannot be: scoped, link-local, IPv4-mapped, on a prefix wider than /8 (/16 for
    IPv6), or the network or broadcast address of its prefix."""
    if getattr(addr, "scope_id", None):
        raise SpecError("public IP %r is a scoped IPv6 address: drop the %%%s" % (text, addr.scope_id))
    if addr.is_link_local:
        raise SpecError("public IP %r is a link-local address: clients beyond the link cannot reach it" % text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        raise SpecError("public IP %r is an IPv4-mapped IPv6 address: write it as %s" % (text, addr.ipv4_mapped))
    if prefixlen < MIN_PREFIX[addr.version]:
        raise SpecError("public IP %r: prefix /%d is wider than /%d; is it a typo?"
                        % (text, prefixlen, MIN_PREFIX[addr.version]))
    net = ipaddress.ip_network("%s/%d" % (addr, prefixlen), strict=False)
    if net.num_addresses > 2 and addr == net.network_address:
        raise SpecError("public IP %r is the network address of %s" % (text, net))
    if addr.version == 4 and net.num_addresses > 2 and addr == net.broadcast_address:
        raise SpecError("public IP %r is the broadcast address of %s" % (text, net))


def parse_specs(entries, need_interfaces=True):
    """A list of {ip, interfaces} into PublicIP objects, in input order.

    Duplicates with the same prefix are merged (their interfaces joined); the
    same address with two prefixes is an error.
    """
    result = {}
    for pos, entry in enumerate(entries or []):
        if isinstance(entry, str):
            entry = {"ip": entry}
        if not isinstance(entry, dict) or "ip" not in entry:
            raise SpecError("addresses[%d]: expected a mapping with an 'ip' key, got %r" % (pos, entry))
        address, prefixlen, version = parse_ip(entry["ip"])
        interfaces = entry.get("interfaces") or []
        if isinstance(interfaces, str):
            interfaces = [interfaces]
        for iface in interfaces:
            if not isinstance(iface, str) or not iface or len(iface) > 15 or "/" in iface or " " in iface:
                raise SpecError("public IP %s: %r is not a valid interface name" % (entry["ip"], iface))
        if need_interfaces and not interfaces:
            raise SpecError("public IP %s: no interfaces listed (interfaces: [eth0, ...])" % entry["ip"])
        known = result.get(address)
        if known is not None:
            if known.prefixlen != prefixlen:
                raise SpecError("public IP %s is listed with two prefixes: /%d and /%d"
                                % (address, known.prefixlen, prefixlen))
            known.interfaces.extend(i for i in interfaces if i not in known.interfaces)
            continue
        result[address] = PublicIP(address, prefixlen, version, list(interfaces))
    return list(result.values())
