"""Who may talk to the listener: signed requests (a node's secret, or the operations secret for /v1/admin), a
read token for status and metrics, nonces used once, and a count of what was rejected and why."""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from collections.abc import Callable

from .. import protocol

log = logging.getLogger("pubip.listener")
ADMIN = protocol.ADMIN


class Auth:
    def __init__(self, secrets: dict[str, str], window: float, use_nonce: Callable[[str, float], bool],
                 read_token: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self._nodes = {k: v for k, v in secrets.items() if not k.startswith("_")}
        self._admin = secrets.get(ADMIN)
        self._window = window
        self._use_nonce = use_nonce
        self._read_token = read_token  # a Bearer token for GET /v1/status and /metrics (Prometheus)
        self._clock = clock  # wall clock: request timestamps are compared across hosts
        self._rejections: dict[str, int] = {}
        self._lock = threading.Lock()

    def nodes(self) -> list[str]:
        return sorted(self._nodes)

    def secret(self, node: str) -> str:
        return self._nodes[node]

    def set_read_token(self, token: str | None) -> None:
        self._read_token = token

    def authenticate(self, headers: dict[str, str], body: bytes, path: str,
                     secrets: dict[str, str] | None = None) -> str:
        """The node a request is signed by; Rejected (401, 403) names what is wrong."""
        node = headers.get(protocol.NODE_HEADER, "")
        if secrets is None:
            secrets = self._nodes if path != protocol.ADMIN_PATH else ({ADMIN: self._admin} if self._admin else {})
        if node not in secrets:
            raise protocol.Rejected(403, f"unknown node {node!r}")
        try:
            stamp = float(headers.get(protocol.TIME_HEADER, ""))
        except ValueError:
            raise protocol.Rejected(401, "missing or malformed timestamp") from None
        if not math.isfinite(stamp):
            raise protocol.Rejected(401, f"timestamp {headers.get(protocol.TIME_HEADER)!r} is not a finite number")
        now = self._clock()
        if abs(now - stamp) > self._window:
            raise protocol.Rejected(401, f"clock skew {now - stamp:+.1f}s beyond the {self._window:.0f}s window")
        if not protocol.verify(secrets[node], headers, body, path):
            raise protocol.Rejected(401, f"bad signature for node {node}")
        if not self._use_nonce(headers.get(protocol.NONCE_HEADER, ""), self._window):
            raise protocol.Rejected(401, f"replayed nonce from node {node}")
        return node

    def authorize_read(self, headers: dict[str, str], path: str) -> None:
        """GET /v1/status and /metrics: the read token, or a request signed by a node or the operator."""
        auth = headers.get("Authorization", "")
        if self._read_token and auth.startswith("Bearer ") and hmac.compare_digest(
                auth[7:].strip().encode("utf-8", "replace"), self._read_token.encode()):
            return
        node = headers.get(protocol.NODE_HEADER, "")
        if node == ADMIN and self._admin:
            self.authenticate(headers, b"", path, {ADMIN: self._admin})
            return
        if not node and not auth:
            raise protocol.Rejected(401, f"{path} needs a signed request or the read token")
        if auth and not node:
            raise protocol.Rejected(401, f"{path}: wrong read token")
        self.authenticate(headers, b"", path)

    def reject(self, peer: str, exc: protocol.Rejected) -> None:
        reason = exc.reason.split(" ")[0]
        with self._lock:
            self._rejections[reason] = self._rejections.get(reason, 0) + 1
        log.warning("Rejected request from %s: %s", peer, exc.reason)

    def rejections(self) -> dict[str, int]:
        with self._lock:
            return dict(self._rejections)
