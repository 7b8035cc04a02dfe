"""The wire between watchdogs, operators and the listener: paths, names, and request authentication.
Shared by the node and the controller side; pure apart from the clock and the random nonce.

Each node has its own secret. A request carries its node, a timestamp and a
random nonce; the signature is HMAC-SHA256 over node, path, timestamp, nonce
and body, so a request cannot be replayed under a new timestamp, moved to
another node, or turned from a heartbeat into a takeover-run request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from typing import Any, TypeGuard

TAKEOVER_RUN_PATH = "/v1/takeover-run"  # POST: ask for a takeover run (?wait=SECONDS for its result)
HEARTBEAT_PATH = "/v1/heartbeat"  # POST: a sign of life; the signed answer may carry fast takeover orders
ADMIN_PATH = "/v1/admin"  # POST: operations (disable, enable, moveip, reloadips), signed as ADMIN
STATUS_PATH = "/v1/status"  # GET: the cluster as the listener sees it
METRICS_PATH = "/metrics"  # GET: Prometheus text
ADMIN = "_admin"  # the secrets file's key, and the signer's name, for operations
# The signed part of a heartbeat's answer (answer_signature covers exactly these keys).
ANSWER_FIELDS = ("orders", "declared_dead", "running", "hold_retake", "generation", "completed", "lease_ack", "tick",
                 "step_down", "leave", "gratarp", "held_elsewhere")

NODE_HEADER = "X-Pubip-Node"
TIME_HEADER = "X-Pubip-Timestamp"
NONCE_HEADER = "X-Pubip-Nonce"
SIGNATURE_HEADER = "X-Pubip-Signature"


def is_number(value: Any) -> TypeGuard[float]:
    """A finite JSON number of sane size (not a bool, not NaN): what a heartbeat's numbers must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e9


def retake_refused(answer: dict[str, Any], generation: int) -> str | None:
    """Why a fast retake of the IPs a record of GENERATION gives a node may not go ahead, by the listener's
    heartbeat ANSWER to the node asking (None: it may). The node decides by it; the listener counts the IPs
    asked for as held by that node only when it is None (a run would otherwise pin IPs nobody took to a node
    it cannot reach). A record newer than the listener's view only makes a refusal less likely, so a refusal
    the listener computes from the record the node reports is one the node makes too."""
    if answer.get("hold_retake"):
        return "a takeover run has not gathered this node yet"
    if is_number(answer.get("generation")) and int(answer["generation"]) > generation:
        return f"the record (generation {generation}) is older than the last run's ({answer['generation']})"
    if is_number(answer.get("declared_dead")) and int(answer["declared_dead"]) >= generation:
        return f"the listener gave this node's IPs away under generation {answer['declared_dead']}"
    elsewhere = answer.get("held_elsewhere")
    if isinstance(elsewhere, dict) and elsewhere:  # whatever the records say: never beside a holder
        return "; ".join(f"{ip} is held by {holder} (its heartbeat)" for ip, holder in sorted(elsewhere.items()))
    return None


def signature(secret: str, node: str, path: str, timestamp: str, nonce: str, body: bytes) -> str:
    message = b"\n".join([node.encode(), path.encode(), timestamp.encode(), nonce.encode(), body])
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def sign(secret: str, node: str, body: bytes, path: str = TAKEOVER_RUN_PATH,
         now: float | None = None) -> dict[str, str]:
    timestamp = f"{time.time() if now is None else now:.6f}"
    nonce = os.urandom(16).hex()
    return {NODE_HEADER: node, TIME_HEADER: timestamp, NONCE_HEADER: nonce,
            SIGNATURE_HEADER: signature(secret, node, path, timestamp, nonce, body)}


def read_headers(secrets: dict[str, str], path: str) -> dict[str, str]:
    """Headers for a GET of the status or metrics: signed with the operations secret (_admin) when SECRETS
    (a listener secrets file's content) has it, else with a node's (a watchdog's own)."""
    node = ADMIN if ADMIN in secrets else next(iter(secrets))
    return sign(secrets[node], node, b"", path)


def verify(secret: str, headers: dict[str, str], body: bytes, path: str = TAKEOVER_RUN_PATH) -> bool:
    try:
        expected = signature(secret, headers[NODE_HEADER], path, headers[TIME_HEADER], headers[NONCE_HEADER], body)
    except KeyError:
        return False
    # bytes: a non-ASCII header (http.server decodes headers as Latin-1) must fail, not raise
    return hmac.compare_digest(expected.encode(), str(headers.get(SIGNATURE_HEADER, "")).encode("utf-8", "replace"))


def answer_signature(secret: str, request_headers: dict[str, str], path: str, body: bytes) -> str:
    """The listener's signature on its answer to one request: bound to that request's node, timestamp and
    nonce, so an answer cannot be forged, replayed, or handed to another node."""
    return signature(secret, request_headers[NODE_HEADER], path + "#answer", request_headers[TIME_HEADER],
                     request_headers[NONCE_HEADER], body)


def verify_answer(secret: str, request_headers: dict[str, str], path: str, body: bytes, sig: str) -> bool:
    return hmac.compare_digest(answer_signature(secret, request_headers, path, body).encode(),
                               str(sig).encode("utf-8", "replace"))


class Rejected(Exception):
    """A request the listener refuses: the HTTP code and a reason that names the culprit."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


# --- peer heartbeats (UDP, between watchdogs) ---------------------------------------------------------
PEER_PORT = 8751
_PEER_CONTEXT = b"pubip-peer\n"  # a peer MAC never verifies as a request signature, nor the other way round


def pack_peer(secret: str, message: dict[str, object]) -> bytes:
    """One datagram: hex HMAC-SHA256, a space, the JSON message."""
    body = json.dumps(message, sort_keys=True, separators=(",", ":")).encode()
    mac = hmac.new(secret.encode(), _PEER_CONTEXT + body, hashlib.sha256).hexdigest().encode()
    return mac + b" " + body


def unpack_peer(secret: str, data: bytes) -> dict[str, object] | None:
    """The message of a datagram whose MAC holds; None for anything else."""
    mac, _sep, body = data.partition(b" ")
    expected = hmac.new(secret.encode(), _PEER_CONTEXT + body, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        message = json.loads(body)
    except ValueError:
        return None
    return message if isinstance(message, dict) else None
