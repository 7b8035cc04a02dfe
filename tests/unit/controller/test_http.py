"""The listener's HTTP front against bad and hostile requests: a real server on 127.0.0.1, raw sockets.

Every refusal names its culprit, and none queues a takeover run or stores an operation. The runs
themselves are not what is tested here: the Listener's runner is a stand-in that is never called.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pubip import protocol
from pubip.controller import http
from pubip.controller.http import peer_address
from pubip.controller.listener import Listener
from pubip.controller.placement import Placement
from tests.support.listeners import make_listener
from tests.support.tlscert import self_signed

SECRET = "s" * 32
ADMIN = "a" * 32


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Listener, int, http.Server]]:
    monkeypatch.setattr(http.Handler, "timeout", 0.5)
    listener = make_listener(tmp_path, {"node1": SECRET, protocol.ADMIN: ADMIN}, fast_takeover=False)
    listener.placement.set(Placement(generation=3, assignment={"198.51.100.1/24": "node1"},
                                     public_ips=[{"ip": "198.51.100.1/24", "node": "node1", "interfaces": ["eth0"]}]))
    srv = http.Server(("127.0.0.1", 0), http.Handler, max_connections=4)
    srv.listener = listener
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield listener, srv.server_address[1], srv
    srv.shutdown()
    srv.server_close()


def raw(port: int, data: bytes, half_close: bool = True, timeout: float = 5.0) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if half_close:
            with contextlib.suppress(OSError):  # the listener may have answered and closed already (503)
                sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    answer = b"".join(chunks).decode("latin-1")
    code = int(answer.split(" ", 2)[1]) if answer else 0
    return code, answer


def request(port: int, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    head = [f"POST {path} HTTP/1.1", "Host: x", "Connection: close", *[f"{k}: {v}" for k, v in headers.items()]]
    if not any(k.lower() == "content-length" for k in headers):
        head.append(f"Content-Length: {len(body)}")
    return raw(port, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)


def signed(body: bytes, path: str = protocol.TAKEOVER_RUN_PATH, node: str = "node1", secret: str = SECRET,
           **override: str) -> dict[str, str]:
    return {**protocol.sign(secret, node, body, path), **override}


BODY = json.dumps({"reason": "test", "version": protocol.VERSION}).encode()
CASES = [
    # (what, path, body, headers, code, the culprit named in the answer)
    ("negative Content-Length", protocol.TAKEOVER_RUN_PATH, BODY, {"Content-Length": "-1"}, 400,
     "Content-Length '-1' is not a byte count"),
    ("non-numeric Content-Length", protocol.TAKEOVER_RUN_PATH, BODY, {"Content-Length": "ten"}, 400,
     "Content-Length 'ten' is not a byte count"),
    ("huge Content-Length", protocol.TAKEOVER_RUN_PATH, BODY, {"Content-Length": "1000000000"}, 413,
     "body of 1000000000 bytes exceeds 65536"),
    ("body shorter than announced", protocol.TAKEOVER_RUN_PATH, BODY, {"Content-Length": "100"}, 400,
     f"body ended after {len(BODY)} of 100 bytes"),
    ("unknown node", protocol.TAKEOVER_RUN_PATH, BODY, "intruder", 403, "unknown node 'intruder'"),
    ("no signature headers", protocol.TAKEOVER_RUN_PATH, BODY, {}, 403, "unknown node ''"),
    ("non-ASCII signature", protocol.TAKEOVER_RUN_PATH, BODY, {protocol.SIGNATURE_HEADER: "\xe9" * 64}, 401,
     "bad signature for node node1"),
    ("NaN timestamp", protocol.TAKEOVER_RUN_PATH, BODY, {protocol.TIME_HEADER: "nan"}, 401,
     "timestamp 'nan' is not a finite number"),
    ("infinite timestamp", protocol.TAKEOVER_RUN_PATH, BODY, {protocol.TIME_HEADER: "inf"}, 401,
     "timestamp 'inf' is not a finite number"),
    ("timestamp an hour old", protocol.TAKEOVER_RUN_PATH, BODY, {protocol.TIME_HEADER: f"{time.time() - 3600:.6f}"},
     401, "beyond the 30s window"),
    ("body not a JSON object", protocol.TAKEOVER_RUN_PATH, b"[1, 2]", None, 400, "body is not a JSON object"),
    ("body not JSON", protocol.TAKEOVER_RUN_PATH, b"{nope", None, 400, "malformed request"),
    ("wait that is not a number", protocol.TAKEOVER_RUN_PATH + "?wait=abc", BODY, None, 400,
     "wait='abc' is not a number of seconds"),
    ("negative wait", protocol.TAKEOVER_RUN_PATH + "?wait=-5", BODY, None, 400, "wait='-5' is not a number"),
    ("heartbeat 'done' a string", protocol.HEARTBEAT_PATH, b'{"done": "abc", "version": 2}', None, 400,
     "heartbeat: 'done' must be a list of objects"),
    ("heartbeat of protocol 1", protocol.HEARTBEAT_PATH, b'{"node": "node1"}', None, 409,
     "heartbeat: the watchdog speaks protocol 1, this listener speaks protocol 2"),
    ("heartbeat naming another node", protocol.HEARTBEAT_PATH, b'{"node": "node2", "version": 2}', None, 400,
     "a request signed by node1 names node 'node2'"),
    ("heartbeat with a key of no message", protocol.HEARTBEAT_PATH, b'{"heard": {}, "version": 2}', None, 400,
     "heartbeat: unknown key heard"),
    ("takeover request of protocol 1", protocol.TAKEOVER_RUN_PATH, b'{"reason": "x"}', None, 409,
     "takeover request: the watchdog speaks protocol 1, this listener speaks protocol 2"),
    ("node secret on the admin path", protocol.ADMIN_PATH, b'{"op": "reloadips"}', None, 403,
     "unknown node 'node1'"),
    ("unknown path", "/v1/nothing", BODY, None, 404, "not found"),
]


@pytest.mark.parametrize(("what", "path", "body", "headers", "code", "culprit"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_request_is_refused_naming_its_culprit_and_queues_nothing(
        server: tuple[Listener, int, http.Server], what: str, path: str, body: bytes, headers: Any, code: int,
        culprit: str) -> None:
    listener, port, _srv = server
    url_path = path.split("?", 1)[0]
    if headers is None:
        headers = signed(body, url_path)
    elif isinstance(headers, str):
        headers = signed(body, url_path, node=headers)
    elif "Content-Length" not in headers and headers:
        headers = signed(body, url_path, **headers)
    got, answer = request(port, path, body, headers)
    assert got == code, answer
    assert culprit in answer, answer
    assert listener.store.pending() == [listener.store.pending()[0]]  # only the start-up request, nothing more
    assert listener.status().accepted_requests == 0


def test_a_replayed_request_is_refused(server: tuple[Listener, int, http.Server]) -> None:
    listener, port, _srv = server
    headers = signed(BODY)
    assert request(port, protocol.TAKEOVER_RUN_PATH, BODY, headers)[0] == 202
    code, answer = request(port, protocol.TAKEOVER_RUN_PATH, BODY, headers)
    assert code == 401 and "replayed nonce from node node1" in answer
    assert listener.status().accepted_requests == 1


def test_moveip_of_an_ip_that_is_not_public_is_refused_and_never_stored(
        server: tuple[Listener, int, http.Server]) -> None:
    listener, port, _srv = server
    for ip, says in (("10.9.9.9", "moveip: 10.9.9.9 is not a public IP of this cluster (public IPs: "
                                  "198.51.100.1/24)"), ("bogus", "moveip: 'bogus' is not an IP address")):
        body = json.dumps({"op": "moveip", "ip": ip, "node": "node1"}).encode()
        code, answer = request(port, protocol.ADMIN_PATH, body,
                               signed(body, protocol.ADMIN_PATH, node=protocol.ADMIN, secret=ADMIN))
        assert code == 400 and says in answer, answer
    assert listener.store.overrides("moveip") == {}


def test_a_silent_connection_is_closed_and_does_not_hold_up_others(server: tuple[Listener, int, http.Server]
                                                                   ) -> None:
    _listener, port, _srv = server
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
        idle.sendall(b"POST /v1/takeover-run HTTP/1.1\r\nContent-Length: 10\r\n")  # and then nothing
        assert raw(port, b"GET /v1/nothing HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 404
        assert idle.recv(100) == b""  # closed by the listener after its timeout
    assert time.monotonic() - started < 3.0


def test_connections_beyond_the_cap_are_answered_503(server: tuple[Listener, int, http.Server],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    _listener, port, srv = server
    monkeypatch.setattr(http.Handler, "timeout", 5.0)  # the idle connections hold their slots meanwhile
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)
        code, _answer = raw(port, b"GET /v1/nothing HTTP/1.1\r\n\r\n", half_close=False)
        assert code == 503 and srv.refused >= 1
    finally:
        for sock in idle:
            sock.close()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # the slots come back once those connections are gone
        if raw(port, b"GET /v1/nothing HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 404:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the listener did not serve again after the idle connections closed")


def heartbeat_on(channel: Any, port: int) -> protocol.HeartbeatAnswer:
    from pubip.node.config import ListenerBackend
    from pubip.node.requester import listener_exchange, signed_answer

    backend = ListenerBackend(url=f"http://127.0.0.1:{port}{protocol.TAKEOVER_RUN_PATH}", secret=SECRET)
    status, answer, signed_headers, path = listener_exchange(backend, "node1", protocol.Heartbeat("node1").wire(),
                                                             protocol.HEARTBEAT_PATH, channel)
    assert status == 200
    return signed_answer(backend, answer, signed_headers, path)


def test_a_watchdogs_heartbeats_keep_one_connection_and_outlive_its_close(
        server: tuple[Listener, int, http.Server]) -> None:
    from pubip.node.requester import Channel

    listener, port, srv = server
    channel = Channel(f"http://127.0.0.1:{port}{protocol.TAKEOVER_RUN_PATH}", timeout=2.0)
    for _ in range(20):
        assert heartbeat_on(channel, port).lease_ack is True
    assert channel.connections == 1 and listener.view.alive("node1") is True
    local = channel.sock.getsockname()
    heartbeat_on(channel, port)
    assert channel.sock.getsockname() == local  # the same TCP connection, not only the same count
    # The listener closes a connection idle for longer than its timeout (0.5 s here): the next heartbeat
    # finds it closed and goes through at once on a new one, signed anew (no replay refusal).
    time.sleep(0.8)
    assert heartbeat_on(channel, port).orders == [] and channel.connections == 2
    # A listener restarted on the same port (its connections gone with it): the first heartbeat goes through.
    srv.shutdown()
    srv.server_close()
    time.sleep(0.8)  # the old server's connection threads end (idle timeout) and close the kept connection
    again = http.Server(("127.0.0.1", port), http.Handler)
    again.listener = listener
    threading.Thread(target=again.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        assert heartbeat_on(channel, port).orders == [] and channel.connections == 3
    finally:
        again.shutdown()
        again.server_close()
    channel.close()


def test_a_nodes_kept_connection_is_served_through_a_flood(server: tuple[Listener, int, http.Server],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pubip.node.requester import Channel

    _listener, port, srv = server
    monkeypatch.setattr(http.Handler, "timeout", 5.0)
    channel = Channel(f"http://127.0.0.1:{port}{protocol.TAKEOVER_RUN_PATH}", timeout=2.0)
    heartbeat_on(channel, port)
    flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]  # every other slot
    try:
        time.sleep(0.2)
        assert raw(port, b"GET /v1/nothing HTTP/1.1\r\n\r\n", half_close=False)[0] == 503
        for _ in range(5):
            assert heartbeat_on(channel, port).orders == []
        assert channel.connections == 1 and srv.refused >= 1
    finally:
        for sock in flood:
            sock.close()
        channel.close()


def test_cancel_drops_a_pending_moveip(server: tuple[Listener, int, http.Server]) -> None:
    listener, port, _srv = server
    listener.store.set_override("moveip", "198.51.100.1/24", "node1")  # stored, not yet carried out
    body = json.dumps({"op": "cancel"}).encode()
    code, answer = request(port, protocol.ADMIN_PATH, body,
                           signed(body, protocol.ADMIN_PATH, node=protocol.ADMIN, secret=ADMIN))
    assert code == 200 and '"dropped": {"198.51.100.1/24": "node1"}' in answer, answer
    assert listener.store.overrides("moveip") == {}


def test_corrupt_state_files_are_set_aside_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "placement.json").write_text("{half a file")
    (state / "listener.sqlite").write_bytes(b"this is not a database" * 100)
    listener = make_listener(tmp_path, {"node1": SECRET}, fast_takeover=False)
    assert listener.placement.get() == Placement() and listener.store.pending()  # a fresh store, its start-up request
    aside = sorted(p.name.split(".corrupt-")[0] for p in state.iterdir() if ".corrupt-" in p.name)
    assert aside == ["listener.sqlite", "placement.json"]
    assert "placement.json is corrupt" in caplog.text and "listener.sqlite is corrupt" in caplog.text


def admin(port: int, payload: dict[str, Any]) -> tuple[int, str]:
    body = json.dumps(payload).encode()
    return request(port, protocol.ADMIN_PATH, body, signed(body, protocol.ADMIN_PATH, node=protocol.ADMIN,
                                                             secret=ADMIN))


def test_node_operations_name_a_bad_node_or_duration_and_store_nothing(server: tuple[Listener, int, http.Server]
                                                                       ) -> None:
    listener, port, _srv = server
    for payload, says in (({"op": "ban", "node": "node9", "seconds": 20}, "ban: 'node9' is not a node"),
                          ({"op": "ban", "node": "node1"}, "ban: --for None is not a number of seconds"),
                          ({"op": "ban", "node": "node1", "seconds": -5}, "ban: --for -5 is not a number"),
                          ({"op": "ban", "node": "node1", "seconds": "soon"}, "ban: --for 'soon' is not"),
                          ({"op": "stop", "node": ""}, "stop: '' is not a node of this cluster"),
                          ({"op": "ipinfo", "ip": "10.0.0.1"}, "ipinfo: 10.0.0.1 is not a public IP"),
                          ({"op": "shutdown"}, "unknown operation 'shutdown'")):
        code, answer = admin(port, payload)
        assert code == 400 and says in answer, answer
    assert listener.store.overrides("ban") == {} and listener.store.overrides("state") == {}


def test_ipinfo_says_where_an_ip_is_and_who_may_host_it(server: tuple[Listener, int, http.Server]) -> None:
    _listener, port, _srv = server
    code, answer = admin(port, {"op": "ipinfo", "ip": "198.51.100.1"})
    info = json.loads(answer.split("\r\n\r\n", 1)[1])
    assert code == 200 and info["ip"] == "198.51.100.1/24" and info["planned"] == "node1"
    assert info["known_on"] == ["node1"] and info["interfaces"] == ["eth0"] and info["last_move"] is None


def test_tls_a_watchdog_verifies_the_listener_and_plain_http_gets_nothing(tmp_path: Path) -> None:
    from pubip.node.config import ListenerBackend
    from pubip.node.requester import Channel, RequestFailed, listener_exchange, signed_answer

    cert, key = self_signed(tmp_path)
    listener = make_listener(tmp_path, {"node1": SECRET}, fast_takeover=False)
    srv = http.Server(("127.0.0.1", 0), http.Handler, tls=http.tls_context(cert, key))
    srv.listener = listener
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = srv.server_address[1]
    try:
        url = f"https://127.0.0.1:{port}{protocol.TAKEOVER_RUN_PATH}"
        backend = ListenerBackend(url=url, secret=SECRET, ca_file=cert)
        status, answer, signed_headers, path = listener_exchange(backend, "node1", protocol.Heartbeat("node1").wire(),
                                                                 protocol.HEARTBEAT_PATH)
        assert status == 200 and signed_answer(backend, answer, signed_headers, path).lease_ack is True
        stranger = ListenerBackend(url=url, secret=SECRET)  # the system's CAs do not know this certificate
        with pytest.raises(RequestFailed, match="CERTIFICATE_VERIFY_FAILED"):
            listener_exchange(stranger, "node1", {"node": "node1"}, protocol.HEARTBEAT_PATH)
        kept = Channel(url, backend.timeout, cert)  # heartbeats: one TLS handshake, then the same connection
        for _ in range(3):
            status, answer, signed_headers, path = listener_exchange(
                backend, "node1", protocol.Heartbeat("node1").wire(), protocol.HEARTBEAT_PATH, kept)
            assert status == 200 and signed_answer(backend, answer, signed_headers, path).lease_ack is True
        assert kept.connections == 1
        kept.close()
        with pytest.raises(RequestFailed, match="CERTIFICATE_VERIFY_FAILED"):
            listener_exchange(stranger, "node1", {"node": "node1"}, protocol.HEARTBEAT_PATH,
                              Channel(url, backend.timeout))
        code, _answer = raw(port, b"GET /v1/status HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert code == 0  # plain HTTP on the TLS port: no HTTP answer at all
    finally:
        srv.shutdown()
        srv.server_close()


def get(port: int, path: str, headers: dict[str, str]) -> tuple[int, str]:
    head = [f"GET {path} HTTP/1.1", "Host: x", "Connection: close", *[f"{k}: {v}" for k, v in headers.items()]]
    return raw(port, ("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))


def test_status_and_metrics_need_a_signed_request_or_the_read_token(server: tuple[Listener, int, http.Server]
                                                                    ) -> None:
    listener, port, _srv = server
    listener.auth.set_read_token("r" * 32)
    for path in (protocol.STATUS_PATH, protocol.METRICS_PATH):
        code, answer = get(port, path, {})
        assert code == 401 and "needs a signed request or the read token" in answer
        assert get(port, path, {"Authorization": "Bearer wrong"})[0] == 401
        assert get(port, path, {"Authorization": "Bearer " + "r" * 32})[0] == 200
        assert get(port, path, protocol.read_headers({protocol.ADMIN: ADMIN}, path))[0] == 200
        assert get(port, path, protocol.read_headers({"node1": SECRET}, path))[0] == 200
        forged = protocol.read_headers({"node1": "x" * 32}, path)
        assert get(port, path, forged)[0] == 401


def test_a_chunked_answer_is_read_whole_and_keeps_the_connection(tmp_path: Path) -> None:
    """A proxy in front of the listener, or a webhook, may answer with chunked transfer encoding: the watchdog
    reads the whole answer, split across reads, and the kept connection carries the next request."""
    from pubip.node.requester import Channel, plain_post

    body = json.dumps({"ok": True, "orders": [], "pad": "x" * 5000}).encode()
    chunks = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(body[i:i + 1000]), body[i:i + 1000])
                      for i in range(0, len(body), 1000)) + b"0\r\nX-Trailer: t\r\n\r\n"
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" + chunks
    seen: list[int] = []
    listening = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):  # the kept connection (two requests), then plain_post's own
            conn, _addr = listening.accept()
            with conn:
                while True:
                    request = b""
                    while b"\r\n\r\n" not in request:
                        data = conn.recv(65536)
                        if not data:
                            break
                        request += data
                    if not request:
                        break
                    seen.append(conn.fileno())
                    for i in range(0, len(answer), 700):  # in pieces, as a network delivers it
                        conn.sendall(answer[i:i + 700])
                        time.sleep(0.001)
                    if b"Connection: close" in request:
                        break

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{listening.getsockname()[1]}/hook"
    try:
        channel = Channel(url, timeout=2.0)
        for _ in range(2):
            status, parsed = channel.post("/hook", b"{}", {"Content-Type": "application/json"})
            assert status == 200 and parsed["pad"] == "x" * 5000
        assert channel.connections == 1 and len(seen) == 2
        channel.close()
        status, parsed = plain_post(url, b"{}", {}, timeout=2.0)
        assert status == 200 and parsed["ok"] is True and len(seen) == 3
    finally:
        listening.close()


def test_a_direct_request_is_its_tcp_peer() -> None:
    assert peer_address("192.0.2.1", "198.51.100.9", None) == "192.0.2.1"
    assert peer_address("192.0.2.1", "198.51.100.9", "192.0.2.250") == "192.0.2.1"  # not the proxy: header ignored


def test_behind_the_trusted_proxy_it_is_the_address_the_proxy_saw() -> None:
    assert peer_address("192.0.2.250", "203.0.113.7, 192.0.2.3", "192.0.2.250") == "192.0.2.3"
    assert peer_address("192.0.2.250", "2001:db8::3", "192.0.2.250") == "2001:db8::3"
    assert peer_address("192.0.2.250", "not-an-ip", "192.0.2.250") == "192.0.2.250"
    assert peer_address("192.0.2.250", None, "192.0.2.250") == "192.0.2.250"


def test_pubip_status_exits_0_when_all_is_well_and_1_naming_what_is_not(
        server: tuple[Listener, int, http.Server], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from pubip.cli import status as status_cli

    listener, port, _srv = server
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({protocol.ADMIN: ADMIN}))
    secrets.chmod(0o600)
    args = argparse.Namespace(listener=f"http://127.0.0.1:{port}", secrets=str(secrets), json=True)
    assert status_cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["public_ips"][0]["holders"] == ["node1"]
    listener.node_died("node1", 3.0, "a quorum shuns it")
    assert status_cli.main(args) == 1
    assert capsys.readouterr().err.splitlines() == ["pubip status: node node1 is dead",
                                                    "pubip status: public IP 198.51.100.1/24 is held by no node"]
