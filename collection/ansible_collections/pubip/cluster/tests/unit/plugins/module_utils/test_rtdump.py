"""The standard-library netlink reads against this machine's kernel: real sockets on loopback only."""

from __future__ import annotations

import contextlib
import socket

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import rtdump


@contextlib.contextmanager
def connection(family, listen_on, dual_stack=False, connect_to=None):
    """An established TCP connection on loopback: (listening port, client's port)."""
    with socket.socket(family) as srv:
        if dual_stack:
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        srv.bind((listen_on, 0))
        srv.listen()
        port = srv.getsockname()[1]
        with socket.create_connection((connect_to or listen_on, port)) as client:
            accepted, _ = srv.accept()
            with accepted:
                yield port, client.getsockname()[1]


def ours(found, port):
    return sorted(c for c in found if port in (c[1], c[3]))


def test_established_connections_on_the_given_addresses_ipv4_and_ipv6():
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with connection(family, address) as (port, client_port):
            found = rtdump.tcp_established([address])
            # both ends are local on loopback: the server's side and the client's
            assert ours(found, port) == sorted([(address, port, address, client_port),
                                                (address, client_port, address, port)])
            assert ours(rtdump.tcp_established(["198.51.100.7"]), port) == []


def test_an_ipv4_connection_to_a_dual_stack_socket_is_listed_under_its_ipv4_address():
    with connection(socket.AF_INET6, "::", dual_stack=True, connect_to="127.0.0.1") as (port, client_port):
        found = ours(rtdump.tcp_established(["127.0.0.1"]), port)
    # the accepted socket is AF_INET6 (::ffff:127.0.0.1), the client's AF_INET: both as 127.0.0.1
    assert found == sorted([("127.0.0.1", port, "127.0.0.1", client_port),
                            ("127.0.0.1", client_port, "127.0.0.1", port)])


def test_no_address_asked_reads_nothing():
    assert rtdump.tcp_established([]) == []
