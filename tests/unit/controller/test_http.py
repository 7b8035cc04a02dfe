"""Where a request came from, behind a trusted TLS-terminating reverse proxy or not."""

from __future__ import annotations

from pubip.controller.http import peer_address


def test_a_direct_request_is_its_tcp_peer() -> None:
    assert peer_address("192.0.2.1", "198.51.100.9", None) == "192.0.2.1"
    assert peer_address("192.0.2.1", "198.51.100.9", "192.0.2.250") == "192.0.2.1"  # not the proxy: header ignored


def test_behind_the_trusted_proxy_it_is_the_address_the_proxy_saw() -> None:
    assert peer_address("192.0.2.250", "203.0.113.7, 192.0.2.3", "192.0.2.250") == "192.0.2.3"
    assert peer_address("192.0.2.250", "2001:db8::3", "192.0.2.250") == "2001:db8::3"
    assert peer_address("192.0.2.250", "not-an-ip", "192.0.2.250") == "192.0.2.250"
    assert peer_address("192.0.2.250", None, "192.0.2.250") == "192.0.2.250"
