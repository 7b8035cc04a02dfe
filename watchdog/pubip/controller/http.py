"""The listener's HTTP front: reads a request, authenticates it, routes it to the Listener, answers.

No decisions here beyond the wire: the Listener decides, this file speaks protocol.py's paths.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import math
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlparse

from .. import protocol, sdnotify

if TYPE_CHECKING:
    from .listener import Listener

log = logging.getLogger("pubip.listener")
POST_PATHS = (protocol.TAKEOVER_RUN_PATH, protocol.HEARTBEAT_PATH, protocol.ADMIN_PATH)


def peer_address(client: str, forwarded_for: str | None, trusted_proxy: str | None) -> str:
    """The address a request came from: the TCP peer, or - when that is the trusted TLS-terminating reverse
    proxy - the last address the proxy put in X-Forwarded-For. Liveness probes knock on it, so it must be the
    node's own address, never the proxy's."""
    if trusted_proxy and client == trusted_proxy and forwarded_for:
        last = forwarded_for.split(",")[-1].strip()
        try:
            return str(ipaddress.ip_address(last))
        except ValueError:
            return client
    return client


MAX_CONNECTIONS = 128  # served at once beside the nodes'; more are answered 503 and closed (no flood exhausts threads)
CONNECTION_TIMEOUT = 10.0  # seconds a connection may take to send its request (slowloris), or stay idle


def connection_slots(nodes: int) -> int:
    """Connections served at once: two per node (heartbeats, retake asks), kept open between requests and so
    served through a flood, and MAX_CONNECTIONS more."""
    return MAX_CONNECTIONS + 2 * nodes


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a whole cluster's watchdogs may call at once
    listener: Listener

    def __init__(self, address: tuple[str, int], handler: Any, max_connections: int = MAX_CONNECTIONS,
                 tls: ssl.SSLContext | None = None) -> None:
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)
        self.refused = 0
        self.tls = tls

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.tls is not None:  # the handshake happens in the connection's thread, under its timeout
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            with contextlib.suppress(OSError):
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def content_length(value: str | None, limit: int) -> int:
    """The body size a request announces, checked before a byte of it is read."""
    if value is None or value == "":
        return 0
    if not value.isascii() or not value.isdigit():
        raise protocol.Rejected(400, f"Content-Length {value[:20]!r} is not a byte count")
    length = int(value)
    if length > limit:
        raise protocol.Rejected(413, f"body of {length} bytes exceeds {limit}")
    return length


def wait_seconds(query: str) -> float:
    raw = (parse_qs(query).get("wait") or ["0"])[0]
    try:
        wait = float(raw)
    except ValueError:
        raise protocol.Rejected(400, f"wait={raw[:20]!r} is not a number of seconds") from None
    if not math.isfinite(wait) or wait < 0:
        raise protocol.Rejected(400, f"wait={raw[:20]!r} is not a number of seconds")
    return min(wait, 600.0)


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = CONNECTION_TIMEOUT
    # Keep-alive: a watchdog's heartbeats (5 a second) reuse one connection instead of a TCP (and TLS) handshake
    # and a thread each. Buffered: each answer leaves in one write, at the end of the request (a header write
    # then a body write would wait for a delayed ACK on a kept connection).
    protocol_version = "HTTP/1.1"
    wbufsize = -1

    def log_message(self, *args: object) -> None:
        pass

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            self.close_connection = True  # a client too slow or gone: nothing to answer
        except Exception as exc:  # a bug must cost one answer, not the connection silently
            log.exception("Request %s failed", getattr(self, "path", "?"))
            with contextlib.suppress(Exception):
                self.send(500, {"error": f"internal error: {type(exc).__name__}"})
            self.close_connection = True

    def send(self, code: int, body: Any, ctype: str = "application/json") -> None:
        raw = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self) -> None:
        listener = self.server.listener
        path = urlparse(self.path).path
        if path not in (protocol.STATUS_PATH, protocol.METRICS_PATH):
            return self.send(404, {"error": "not found"})
        try:
            listener.auth.authorize_read(dict(self.headers.items()), path)
        except protocol.Rejected as exc:
            listener.auth.reject(peer_address(self.client_address[0], self.headers.get("X-Forwarded-For"),
                                         listener.trusted_proxy), exc)
            return self.send(exc.code, {"error": exc.reason})
        if path == protocol.STATUS_PATH:
            return self.send(200, listener.status().wire())
        if path == protocol.METRICS_PATH:
            return self.send(200, listener.metrics(), "text/plain; version=0.0.4")
        return self.send(404, {"error": "not found"})

    def do_POST(self) -> None:
        listener = self.server.listener
        url = urlparse(self.path)
        peer = peer_address(self.client_address[0], self.headers.get("X-Forwarded-For"), listener.trusted_proxy)
        try:
            length = content_length(self.headers.get("Content-Length"), listener.max_body)
            if url.path not in POST_PATHS:
                return self.send(404, {"error": "not found"})
            body = self.rfile.read(length)
            if len(body) < length:
                raise protocol.Rejected(400, f"body ended after {len(body)} of {length} bytes")
            node = listener.auth.authenticate(dict(self.headers.items()), body, url.path)
            payload = json.loads(body or b"{}")
            if not isinstance(payload, dict):
                raise protocol.Rejected(400, "body is not a JSON object")
            beat = protocol.Heartbeat.parse(payload) if url.path == protocol.HEARTBEAT_PATH else None
            request = protocol.TakeoverRequest.parse(payload) if url.path == protocol.TAKEOVER_RUN_PATH else None
            for message in (beat, request):
                if message is not None and message.node not in ("", node):
                    raise protocol.Rejected(400, f"a request signed by {node} names node {message.node!r}")
            wait = wait_seconds(url.query) if url.path == protocol.TAKEOVER_RUN_PATH else 0.0
        except protocol.Rejected as exc:
            listener.auth.reject(peer, exc)
            return self.send(exc.code, {"error": exc.reason})
        except (ValueError, json.JSONDecodeError):
            listener.auth.reject(peer, protocol.Rejected(400, "malformed request"))
            return self.send(400, {"error": "malformed request"})
        if beat is not None:
            signed = listener.heartbeat_answer(node, peer, beat).wire()
            # Signed: a watchdog acts on orders only with the listener's signature over them.
            sig = protocol.answer_signature(listener.auth.secret(node), dict(self.headers.items()), url.path,
                                            json.dumps(signed, sort_keys=True).encode())
            return self.send(200, {"ok": True, **signed, "signature": sig})
        if url.path == protocol.ADMIN_PATH:
            try:
                return self.send(200, listener.operation(payload))
            except protocol.Rejected as exc:
                listener.auth.reject(peer, exc)
                return self.send(exc.code, {"error": exc.reason})
        assert request is not None
        listener.heartbeat(node, peer)
        request_id = listener.takeover_request(node, request)
        if wait > 0:
            return self.send(200, listener.wait_for(request_id, wait))
        return self.send(202, {"request": request_id, "queued": True})


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


def serve(listener: Listener, bind: str, port: int, tls: ssl.SSLContext | None = None) -> None:
    """Serve until interrupted; the listener's run queue and liveness watch run in their own threads."""
    server = Server((bind, port), Handler, max_connections=connection_slots(len(listener.auth.nodes())), tls=tls)
    server.listener = listener
    threading.Thread(target=listener.work, name="pubip-runs", daemon=True).start()
    threading.Thread(target=listener.watch_liveness, name="pubip-liveness", daemon=True).start()
    log.info("Listener on %s:%d%s for %d nodes; inventory %s", bind, port, " (TLS)" if tls else "",
             len(listener.auth.nodes()), listener.inventory)
    sdnotify.notify("READY=1")
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        listener.stopping.set()
        server.server_close()
