"""Request authentication between watchdogs and the listener.

Each node has its own secret. A request carries its node, a timestamp and a
random nonce; the signature is HMAC-SHA256 over node, path, timestamp, nonce
and body, so a request cannot be replayed under a new timestamp, moved to
another node, or turned from a heartbeat into a takeover-run request.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time

NODE_HEADER = "X-Pubip-Node"
TIME_HEADER = "X-Pubip-Timestamp"
NONCE_HEADER = "X-Pubip-Nonce"
SIGNATURE_HEADER = "X-Pubip-Signature"


def signature(secret: str, node: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = b"\n".join([node.encode(), path.encode(), timestamp.encode(), nonce.encode(), body])
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, node: str, body: bytes, path: str = "/v1/takeover-run",
         now: float | None = None) -> dict[str, str]:
    timestamp = f"{time.time() if now is None else now:.6f}"
    nonce = os.urandom(16).hex()
    return {NODE_HEADER: node, TIME_HEADER: timestamp, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: signature(secret, node, path, timestamp, nonce, body)}


def verify(secret: str, headers: dict[str, str], body: bytes, path: str = "/v1/takeover-run") -> bool:
    try:
        expected = signature(secret, headers[NODE_HEADER], path, headers[TIME_HEADER], headers[NONCE_HEADER], body)
    except KeyError:
        return False
    return hmac.compare_digest(expected, headers.get(SIGNATURE_HEADER, ""))


def answer_signature(secret: str, request_headers: dict[str, str], path: str, body: bytes) -> str:
    """The listener's signature on its answer to one request: bound to that request's node, timestamp and
    nonce, so an answer cannot be forged, replayed, or handed to another node."""
    return signature(secret, request_headers[NODE_HEADER], path + "#answer", request_headers[TIME_HEADER],
                     request_headers[NONCE_HEADER], body)


def verify_answer(secret: str, request_headers: dict[str, str], path: str, body: bytes, sig: str) -> bool:
    return hmac.compare_digest(answer_signature(secret, request_headers, path, body), sig)
