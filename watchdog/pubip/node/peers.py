"""Heartbeats between watchdogs (UDP, HMAC-signed with the cluster's peer secret).

Every heartbeat interval this node sends {k: hb, n: ME, s: SEQ} to every peer. A peer that hears it notes
the time (its Ears) and, unless it shuns this node, answers {k: ack, n: PEER, to: ME, s: SEQ}; the ack
renews this node's lease from the moment SEQ was sent. Sequence numbers only grow (they start from the
wall clock in microseconds), so a replayed heartbeat or ack is worth nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from .leasekeeper import LeaseKeeper

log = logging.getLogger("pubip.watchdog")


class Peers:
    def __init__(self, me: str, addresses: dict[str, str], port: int, bind: str, secret: str, keeper: LeaseKeeper,
                 interval: float, clock: Callable[[], float] = time.monotonic):
        self.me = me
        self.addresses = addresses
        self.port = port
        self.bind = bind
        self.secret = secret
        self.keeper = keeper  # this node's lease and ears
        self.interval = interval
        self.clock = clock
        self.seq = time.time_ns() // 1000
        self.sent: OrderedDict[int, float] = OrderedDict()  # seq -> when sent
        self.last_seq: dict[str, int] = {}  # peer -> highest heartbeat seq seen from it
        self.rejected = 0

    def _socket(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((self.bind, self.port))
        return sock

    def run(self, stopped: threading.Event) -> None:
        """Send and answer heartbeats until STOPPED (its own thread); any error is logged and survived."""
        sock: socket.socket | None = None
        next_send = self.clock()
        while not stopped.is_set():
            try:
                if sock is None:
                    sock = self._socket()
                now = self.clock()
                if now >= next_send:
                    self._send_all(sock, now)
                    next_send = max(next_send + self.interval, now)
                sock.settimeout(max(0.001, next_send - self.clock()))
                try:
                    data, addr = sock.recvfrom(2048)
                except TimeoutError:
                    continue
                self.handle(sock, data, addr)
            except OSError as exc:
                log.warning("Peer heartbeats: %s; retrying", exc)
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.close()
                sock = None
                stopped.wait(self.interval)
            except Exception:  # a bug or a malformed datagram must not end membership
                log.exception("Peer heartbeats failed unexpectedly; going on")
                stopped.wait(self.interval)

    def _send_all(self, sock: socket.socket, now: float) -> None:
        self.seq += 1
        self.sent[self.seq] = now
        while len(self.sent) > 64:
            self.sent.popitem(last=False)
        data = pack_peer(self.secret, {"k": "hb", "n": self.me, "s": self.seq})
        for address in self.addresses.values():
            with contextlib.suppress(OSError):  # a peer unreachable now: its silence speaks for itself
                sock.sendto(data, (address, self.port))

    def handle(self, sock: socket.socket, data: bytes, addr: tuple[str, int]) -> None:
        msg = unpack_peer(self.secret, data)
        sender = msg.get("n") if msg else None
        seq = msg.get("s") if msg else None
        if msg is None or sender not in self.addresses or not isinstance(seq, int):
            self.rejected += 1
            return
        assert isinstance(sender, str)
        if msg.get("k") == "hb":
            if seq <= self.last_seq.get(sender, 0):
                self.rejected += 1  # replayed or reordered
                return
            self.last_seq[sender] = seq
            if not self.keeper.hear_from(sender):
                with contextlib.suppress(OSError):
                    sock.sendto(pack_peer(self.secret, {"k": "ack", "n": self.me, "to": sender, "s": seq}),
                                (self.addresses[sender], self.port))
        elif msg.get("k") == "ack" and msg.get("to") == self.me:
            sent = self.sent.get(seq)
            if sent is not None:
                self.keeper.acknowledged(sender, sent)


# --- the datagrams ------------------------------------------------------------------------------------------
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
