"""Ask the controller for a takeover run: one request in flight per node, retried with backoff.

Backends: the pubip listener (HMAC-signed POST), an AWX / Automation
Controller job template (API v2, Bearer token; no launch while a job of the
template is pending, waiting or running), or a plain webhook such as an
Event-Driven Ansible rulebook (JSON, Bearer token).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import ssl

from .. import protocol
from .config import AwxBackend, Config, ListenerBackend, WebhookBackend

log = logging.getLogger("pubip.watchdog")


class RequestFailed(Exception):
    pass


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str], timeout: float,
          context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    # Imported on the first request: an idle watchdog never pays for urllib and OpenSSL.
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300].decode("utf-8", "replace")
        raise RequestFailed(f"{method} {url}: HTTP {exc.code} {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise RequestFailed(f"{method} {url}: {getattr(exc, 'reason', exc)}") from None


class Stale(Exception):
    """A reused connection ended before a byte of the answer: the server had closed it (idle, restarted)."""


def _request(method_target: str, netloc: str, body: bytes, headers: dict[str, str], keep_alive: bool) -> bytes:
    head = [f"POST {method_target} HTTP/1.1", f"Host: {netloc}", f"Content-Length: {len(body)}"]
    head += [] if keep_alive else ["Connection: close"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


MAX_ANSWER = 4 << 20  # bytes; a heartbeat's answer is a few hundred


def _answer(sock: Any, url: str, until_eof: bool) -> tuple[int, bytes, bool]:
    """Read one HTTP answer: (status, body, whether the connection may carry another request). Raises Stale
    when the connection ends before any byte of it."""
    buf = bytearray()

    def more() -> bool:
        chunk = sock.recv(65536)
        buf.extend(chunk)
        if len(buf) > MAX_ANSWER:
            raise RequestFailed(f"POST {url}: answer longer than {MAX_ANSWER} bytes")
        return bool(chunk)

    while b"\r\n\r\n" not in buf:
        if not more():
            if not buf:
                raise Stale()
            break
    head = bytes(buf).partition(b"\r\n\r\n")[0]
    del buf[:len(head) + 4]
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        raise RequestFailed(f"POST {url}: malformed answer {lines[0][:80]!r}") from None
    fields = {k.strip().lower(): v.strip().lower() for k, _, v in (line.partition(b":") for line in lines[1:])}
    length = fields.get(b"content-length", b"")
    chunked = fields.get(b"transfer-encoding", b"").endswith(b"chunked")
    reusable = (not until_eof and (length.isdigit() or chunked) and fields.get(b"connection") != b"close"
                and lines[0].startswith(b"HTTP/1.1"))
    if chunked:  # a proxy in front of the listener, or a webhook, may answer so
        payload = bytearray()
        while True:
            while b"\r\n" not in buf:
                if not more():
                    raise RequestFailed(f"POST {url}: answer ended inside a chunk")
            line, _, _ = bytes(buf).partition(b"\r\n")
            try:
                size = int(line.split(b";")[0], 16)
            except ValueError:
                raise RequestFailed(f"POST {url}: malformed chunk size {line[:20]!r}") from None
            start = len(line) + 2
            # the last chunk (size 0) ends with trailers, if any, and an empty line
            while (buf.find(b"\r\n\r\n", len(line)) < 0) if size == 0 else (len(buf) < start + size + 2):
                if not more():
                    raise RequestFailed(f"POST {url}: answer ended inside a chunk")
            if size == 0:
                return status, bytes(payload), reusable
            payload += buf[start:start + size]
            del buf[:start + size + 2]
    # Without a length to go by, the answer ends where the connection does.
    wanted = int(length) if reusable else None
    while wanted is None or len(buf) < wanted:
        if not more():
            break
    return status, bytes(buf), reusable


def _result(url: str, status: int, payload: bytes) -> tuple[int, Any]:
    if status >= 400:
        raise RequestFailed(f"POST {url}: HTTP {status} {payload[:300].decode('utf-8', 'replace')}")
    try:
        return status, json.loads(payload) if payload else None
    except ValueError:
        return status, None


def plain_post(url: str, body: bytes, headers: dict[str, str], timeout: float, ca_file: str | None = None
               ) -> tuple[int, Any]:
    """HTTP/1.1 POST over a bare socket, for http:// URLs: the heartbeat every half second must not
    cost the daemon urllib and OpenSSL (about 10 MB of its 30 MB budget)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.scheme != "http":
        return _http("POST", url, body, headers, timeout, tls_context(ca_file))
    target = f"{parts.path or '/'}{'?' + parts.query if parts.query else ''}"
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout) as sock:
            sock.sendall(_request(target, parts.netloc, body, headers, keep_alive=False))
            status, payload, _reusable = _answer(sock, url, until_eof=True)
    except Stale:
        raise RequestFailed(f"POST {url}: connection closed without an answer") from None
    except OSError as exc:
        raise RequestFailed(f"POST {url}: {exc}") from None
    return _result(url, status, payload)


class Channel:
    """One persistent HTTP/1.1 connection to the listener (http:// or https://), for a thread that calls it
    every heartbeat: no TCP or TLS handshake per heartbeat for the node, and no connection and thread per
    heartbeat for the listener. One per thread: not thread-safe."""

    def __init__(self, url: str, timeout: float, ca_file: str | None = None) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.tls = parts.scheme == "https"
        self.address = (parts.hostname or "", parts.port or (443 if self.tls else 80))
        self.netloc, self.timeout, self.ca_file = parts.netloc, timeout, ca_file
        self.sock: Any = None
        self.connections = 0  # opened so far (the tests and the benchmark count them)

    def close(self, abort: bool = False) -> None:
        """ABORT: the request in flight is given up - reset the connection, so that what the kernel has not yet
        delivered of it (a partition drops it; a heal would let it through) never reaches the listener. Its
        answer would go nowhere, and a fast takeover order in it - sent once - would be lost with it."""
        if self.sock is not None:
            with contextlib.suppress(OSError):
                if abort:
                    import socket
                    import struct

                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.sock.close()
            self.sock = None

    def _connect(self) -> None:
        import socket

        sock = socket.create_connection(self.address, timeout=self.timeout)
        if self.tls:
            try:
                sock = tls_context(self.ca_file).wrap_socket(sock, server_hostname=self.address[0])
            except BaseException:
                sock.close()
                raise
        self.sock = sock
        self.connections += 1

    def post(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        """POST on the open connection, or a new one. Raises Stale when the open connection turned out to be
        closed by the listener before it answered (the caller may send again, signed anew), RequestFailed
        otherwise."""
        url = f"{'https' if self.tls else 'http'}://{self.netloc}{target}"
        reused = self.sock is not None
        try:
            if not reused:
                self._connect()
            self.sock.settimeout(self.timeout)
            self.sock.sendall(_request(target, self.netloc, body, headers, keep_alive=True))
            status, payload, reusable = _answer(self.sock, url, until_eof=False)
        except (Stale, BrokenPipeError, ConnectionResetError) as exc:
            self.close(abort=True)
            if reused:
                raise Stale() from None
            raise RequestFailed(f"POST {url}: {exc or 'connection closed without an answer'}") from None
        except OSError as exc:  # a timeout among them
            self.close(abort=True)
            raise RequestFailed(f"POST {url}: {getattr(exc, 'reason', None) or exc}") from None
        except RequestFailed:
            self.close(abort=True)
            raise
        if not reusable:
            self.close()
        return _result(url, status, payload)


_CONTEXTS: dict[str | None, Any] = {}


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verified, against CA_FILE or the system's CAs; one context per CA file."""
    import ssl

    if ca_file not in _CONTEXTS:
        _CONTEXTS[ca_file] = ssl.create_default_context(cafile=ca_file)
    return _CONTEXTS[ca_file]  # type: ignore[no-any-return]


def listener_exchange(backend: ListenerBackend, node: str, payload: dict[str, Any], path: str | None = None,
                      channel: Channel | None = None) -> tuple[int, Any, dict[str, str], str]:
    """One signed POST to the listener: (status, answer, the request's signed headers, the URL path). On
    CHANNEL, its open connection; once more on a new one if the listener had closed it (signed anew)."""
    body = json.dumps(payload, sort_keys=True).encode()
    url = backend.url if path is None else backend.url.rsplit(protocol.TAKEOVER_RUN_PATH, 1)[0] + path
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    for _attempt in range(2):
        signed = protocol.sign(backend.secret, node, body, parts.path)
        headers = {"Content-Type": "application/json", **signed}
        if channel is None:
            status, answer = plain_post(url, body, headers, backend.timeout, backend.ca_file)
            break
        try:
            status, answer = channel.post(parts.path + (f"?{parts.query}" if parts.query else ""), body, headers)
            break
        except Stale:
            continue
    else:
        raise RequestFailed(f"POST {url}: connection closed without an answer")
    return status, answer, signed, parts.path


def listener_send(backend: ListenerBackend, node: str, payload: dict[str, Any], path: str | None = None) -> str:
    status, answer, _signed, _path = listener_exchange(backend, node, payload, path)
    return f"listener answered {status}: {answer}"


def signed_answer(backend: ListenerBackend, answer: Any, signed: dict[str, str], path: str
                  ) -> protocol.HeartbeatAnswer:
    """A heartbeat's answer, if the listener's signature over it holds and it speaks this watchdog's protocol."""
    if not isinstance(answer, dict):
        raise RequestFailed("heartbeat answer is not a JSON object")
    part = {key: value for key, value in answer.items() if key not in ("ok", "signature")}
    raw = json.dumps(part, sort_keys=True).encode()
    if not protocol.verify_answer(backend.secret, signed, path, raw, str(answer.get("signature", ""))):
        raise RequestFailed("heartbeat answer without a valid listener signature: ignored")
    try:
        return protocol.HeartbeatAnswer.parse(answer)
    except protocol.Rejected as exc:
        raise RequestFailed(exc.reason) from None


def awx_send(backend: AwxBackend, node: str, payload: dict[str, Any]) -> str:
    from ..awx import AwxClient, AwxError

    client = AwxClient(backend.url, backend.token, backend.api_prefix, backend.timeout, backend.verify_tls)
    try:
        job = client.active_job(backend.job_template)
        if job:
            return f"job {job.get('id') or '?'} of template {backend.job_template} is already {job.get('status')}"
        launched = client.launch(backend.job_template, {"pubip_requested_by": node,
                                                        "pubip_reason": payload.get("reason", "")})
    except AwxError as exc:
        raise RequestFailed(str(exc)) from None
    return f"launched job {launched}"


def webhook_send(backend: WebhookBackend, node: str, payload: dict[str, Any]) -> str:
    """POST the finding to a webhook (an Event-Driven Ansible rulebook's ansible.eda.webhook source)."""
    body = json.dumps({**payload, "node": node, "sent_at": time.time()}, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {backend.token}"}
    status, _answer = plain_post(backend.url, body, headers, backend.timeout)
    return f"webhook answered {status}"


class Requester:
    """Coalesces requests: at most one in flight; findings during it fold into one follow-up."""

    def __init__(self, cfg: Config, on_result: Callable[[bool], None] | None = None):
        self.cfg = cfg
        self.on_result = on_result or (lambda ok: None)
        self._lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._busy = False
        self._withdrawn = False
        self._stop = threading.Event()
        self.sent = 0
        self.failed = 0
        self.in_flight_max = 0

    def _to_listeners(self, payload: dict[str, Any]) -> str:
        """Every listener queues the request (HA: a standby's runs once it leads); sent once one took it."""
        assert self.cfg.listener is not None
        said, failed = [], None
        for url in self.cfg.listener.urls:
            try:
                said.append(listener_send(replace(self.cfg.listener, url=url), self.cfg.node, payload))
            except RequestFailed as exc:
                failed = exc
        if not said and failed is not None:
            raise failed
        return "; ".join(said)

    def send_once(self, payload: dict[str, Any]) -> str:
        if self.cfg.backend == "listener" and self.cfg.listener:
            return self._to_listeners(payload)
        if self.cfg.backend == "awx" and self.cfg.awx:
            return awx_send(self.cfg.awx, self.cfg.node, payload)
        if self.cfg.backend == "webhook" and self.cfg.webhook:
            return webhook_send(self.cfg.webhook, self.cfg.node, payload)
        return "backend none: nothing sent"

    def request(self, payload: dict[str, Any]) -> bool:
        """Queue a request; False when one is already in flight (it is folded in)."""
        with self._lock:
            self._pending = payload
            self._withdrawn = False
            if self._busy:
                return False
            self._busy = True
        threading.Thread(target=self._run, name="pubip-request", daemon=True).start()
        return True

    def withdraw(self) -> None:
        """The findings are gone (a fast retake put the IPs back): a request not yet delivered is dropped."""
        with self._lock:
            if self._busy:
                self._withdrawn = True
                self._pending = None

    def stop(self) -> None:
        self._stop.set()

    @property
    def busy(self) -> bool:
        return self._busy

    def _run(self) -> None:
        try:
            self._serve()
        except Exception:  # never leave the requester busy for good
            log.exception("Takeover run requester failed")
        finally:
            with self._lock:
                self._busy = False

    def _serve(self) -> None:
        delay = self.cfg.retry_initial
        while not self._stop.is_set():
            with self._lock:
                payload = self._pending
                self._pending = None
                if payload is None:
                    self._busy = False
                    return
            while not self._stop.is_set():
                try:
                    answer = self.send_once(payload)
                    self.sent += 1
                    log.info("Takeover run requested (%s): %s", payload.get("reason"), answer)
                    self.on_result(True)
                    delay = self.cfg.retry_initial
                    break
                except RequestFailed as exc:
                    self.failed += 1
                    self.on_result(False)
                    wait = min(delay, self.cfg.retry_max) * (1 + random.uniform(-1, 1) * self.cfg.retry_jitter)
                    log.warning("Takeover run request failed: %s; retrying in %.2fs", exc, wait)
                    self._stop.wait(max(wait, 0.0))
                    delay = min(delay * 2, self.cfg.retry_max)
                    with self._lock:  # a newer finding replaces what we retry
                        if self._withdrawn:
                            self._withdrawn = False
                            log.info("Takeover run request withdrawn: the findings are gone")
                            break
                        if self._pending is not None:
                            payload, self._pending = self._pending, None
