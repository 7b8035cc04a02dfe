"""The wire between watchdogs, operators and the listener: paths, request authentication, and the messages
(dataclasses with one parser each). Shared by the node and the controller side; pure apart from the clock and the
random nonce.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeGuard

TAKEOVER_RUN_PATH = "/v1/takeover-run"  # POST: ask for a takeover run (?wait=SECONDS for its result)
HEARTBEAT_PATH = "/v1/heartbeat"  # POST: a sign of life; the signed answer may carry fast takeover orders
ADMIN_PATH = "/v1/admin"  # POST: operations (disable, enable, moveip, reloadips), signed as ADMIN
STATUS_PATH = "/v1/status"  # GET: the cluster as the listener sees it
METRICS_PATH = "/metrics"  # GET: Prometheus text
ADMIN = "_admin"  # the secrets file's key, and the signer's name, for operations
VERSION = 2  # the wire's version: every message says its sender's; peers of different versions refuse each other

NODE_HEADER = "X-Pubip-Node"
TIME_HEADER = "X-Pubip-Timestamp"
NONCE_HEADER = "X-Pubip-Nonce"
SIGNATURE_HEADER = "X-Pubip-Signature"


def is_number(value: Any) -> TypeGuard[float]:
    """A finite JSON number of sane size (not a bool, not NaN): what a heartbeat's numbers must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value and abs(value) < 1e9


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


# --- messages ---------------------------------------------------------------------------------------------------
# Each message is a dataclass with one parser (parse: a JSON object in, the message out, or Rejected naming the
# key that is wrong) and one writer (wire). Both sides and the tests use them. An absent key takes its default;
# a key of the wrong type is refused; an unknown key is refused when PUBIP_STRICT_PROTOCOL=1 (the tests): a
# peer of the same version sends none.
MAX_IPS = 4096  # public IPs in one list
MAX_CONNECTIONS = 1024  # public IPs with TCP connections in one heartbeat


def strict() -> bool:
    return os.environ.get("PUBIP_STRICT_PROTOCOL") == "1"


class _Reader:
    """One JSON object being parsed into a message: each key read once, checked, named when wrong."""

    def __init__(self, what: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise Rejected(400, f"{what}: not a JSON object")
        self.what, self.raw = what, raw
        self.seen: set[str] = set()

    def need(self, key: str, check: Callable[[Any], Any]) -> Any:
        """A key the message cannot be without."""
        value = self.get(key, check)
        if value is None:
            raise Rejected(400, f"{self.what}: {key!r} is missing")
        return value

    def get(self, key: str, check: Callable[[Any], Any], default: Any = None) -> Any:
        self.seen.add(key)
        value = self.raw.get(key)
        if value is None:
            return default
        try:
            return check(value)
        except (TypeError, ValueError) as exc:
            raise Rejected(400, f"{self.what}: {key!r} {exc}") from None

    def done(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown and strict():
            raise Rejected(400, f"{self.what}: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")


def _number(v: Any) -> float:
    if not is_number(v):
        raise TypeError(f"must be a number, not {v!r}"[:120])
    return float(v)


def _moment(v: Any) -> float:
    """A wall-clock time (seconds since the epoch): finite, of any size."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v in (float("inf"), float("-inf")):
        raise TypeError(f"must be a time in seconds, not {v!r}"[:120])
    return float(v)


def _integer(v: Any) -> int:
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"must be an integer, not {v!r}"[:120])
    return v


def _flag(v: Any) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"must be true or false, not {v!r}"[:120])
    return v


def _text(limit: int) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if not isinstance(v, str):
            raise TypeError(f"must be a string, not {type(v).__name__}")
        return v[:limit]
    return check


def _texts(limit: int = MAX_IPS) -> Callable[[Any], list[str]]:
    def check(v: Any) -> list[str]:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise TypeError("must be a list of strings")
        if len(v) > limit:
            raise ValueError(f"has {len(v)} entries, more than {limit}")
        return [x[:64] for x in v]
    return check


def _seconds_by_name(v: Any) -> dict[str, float]:
    if not isinstance(v, dict) or not all(isinstance(k, str) and is_number(x) and x >= 0 for k, x in v.items()):
        raise TypeError("must map names to seconds")
    return {k: float(x) for k, x in v.items()}


def _object(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise TypeError("must be an object")
    return v


def _objects(v: Any) -> list[dict[str, Any]]:
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        raise TypeError("must be a list of objects")
    return v


def _version(reader: _Reader, peer: str) -> int:
    version = reader.get("version", _integer, 1)  # a peer from before versions says none: 1
    if version != VERSION:
        raise Rejected(409, f"{reader.what}: the {peer} speaks protocol {version}, this {OTHER[peer]} speaks "
                            f"protocol {VERSION}: run the same pubip version on both")
    return int(version)


OTHER = {"watchdog": "listener", "listener": "watchdog", "operator": "listener"}


@dataclass(frozen=True)
class Membership:
    """What a node says of its lease and its peers."""

    tick: float | None = None  # the listener's tick it echoes: the report was made after it
    lease: float | None = None  # the lease length it runs with
    lease_left: float | None = None
    grace: float | None = None  # its start-up grace left
    hears: dict[str, float] = field(default_factory=dict)  # peer -> seconds since heard
    shuns: dict[str, float] = field(default_factory=dict)  # peer -> seconds its shun still holds

    @classmethod
    def parse(cls, raw: Any) -> Membership:
        r = _Reader("heartbeat membership", raw)
        out = cls(tick=r.get("tick", _number), lease=r.get("lease", _number), lease_left=r.get("lease_left", _number),
                  grace=r.get("grace", _number), hears=r.get("hears", _seconds_by_name, {}),
                  shuns=r.get("shuns", _seconds_by_name, {}))
        r.done()
        return out


@dataclass(frozen=True)
class RecordReport:
    """A node's record, as its heartbeat reports it: all of it only when newer than the listener knows."""

    generation: int
    marked: bool = False
    run_id: str | None = None  # the run whose mark it carries
    public_ips: list[dict[str, Any]] | None = None
    nodes: dict[str, Any] | None = None
    run_started: float | None = None
    run_finished: float | None = None

    @classmethod
    def parse(cls, raw: Any) -> RecordReport:
        r = _Reader("heartbeat record", raw)
        out = cls(r.need("generation", _integer), marked=r.get("marked", _flag, False),
                  run_id=r.get("run_id", _text(64)), public_ips=r.get("public_ips", _objects),
                  nodes=r.get("nodes", _object), run_started=r.get("run_started", _moment),
                  run_finished=r.get("run_finished", _moment))
        r.done()
        return out


@dataclass(frozen=True)
class Health:
    """A node's monitor hooks' verdict."""

    ok: bool
    hook: str = ""
    message: str = ""

    @classmethod
    def parse(cls, raw: Any) -> Health:
        r = _Reader("heartbeat health", raw)
        out = cls(r.need("ok", _flag), r.get("hook", _text(200), ""), r.get("message", _text(500), ""))
        r.done()
        return out


@dataclass(frozen=True)
class OrderResult:
    """What a node did with an order: the IPs it took, errors, or why it refused before changing anything."""

    id: int
    taken: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    refused: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> OrderResult:
        r = _Reader("order result", raw)
        out = cls(r.need("id", _integer), r.get("taken", _texts(), []), r.get("errors", _texts(), []),
                  r.get("refused", _text(500)))
        r.done()
        return out

    def wire(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Heartbeat:
    """A watchdog's sign of life, with what its node holds and hears; version: the sender's protocol."""

    node: str
    membership: Membership | None = None
    holds: list[str] | None = None  # what it holds, with what a retake or an order is adding
    held: list[str] | None = None  # what its kernel holds, no more
    taking: list[str] = field(default_factory=list)  # held only because a retake may be adding them
    done: list[OrderResult] = field(default_factory=list)
    record: RecordReport | None = None
    health: Health | None = None
    connections: dict[str, list[list[Any]]] | None = None  # public IP -> [port, client, client port]
    retake: list[str] | None = None  # the IPs it asks to retake
    leave: bool = False  # it asks to leave (graceful shutdown)
    leaving: bool = False  # its watchdog is leaving
    term: int = 0  # the newest leadership term its record has seen (fencing)
    version: int = VERSION

    @classmethod
    def parse(cls, raw: Any) -> Heartbeat:
        r = _Reader("heartbeat", raw)
        version = _version(r, "watchdog")

        def conns(v: Any) -> dict[str, list[list[Any]]]:
            if not isinstance(v, dict) or not all(isinstance(x, list) for x in v.values()):
                raise TypeError("must map public IPs to lists")
            if len(v) > MAX_CONNECTIONS:
                raise ValueError(f"has {len(v)} entries, more than {MAX_CONNECTIONS}")
            return v

        out = cls(node=r.get("node", _text(64), ""), membership=r.get("membership", Membership.parse),
                  holds=r.get("holds", _texts()), held=r.get("held", _texts()), taking=r.get("taking", _texts(), []),
                  done=[OrderResult.parse(d) for d in r.get("done", _objects, [])],
                  record=r.get("record", RecordReport.parse), health=r.get("health", Health.parse),
                  connections=r.get("connections", conns), retake=r.get("retake", _texts()),
                  leave=r.get("leave", _flag, False), leaving=r.get("leaving", _flag, False),
                  term=r.get("term", _integer, 0), version=version)
        r.done()
        return out

    def wire(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, [], False) or k in ("holds", "version")}


@dataclass(frozen=True)
class Order:
    """Take these public IPs now (a fast takeover order), under a generation - and, during a run, its id."""

    id: int
    generation: int
    ips: list[dict[str, Any]]  # {ip, interfaces, from, tickles?}
    run_id: str | None = None
    term: int = 0  # the ordering leader's term: a node that has seen a newer one refuses it (fencing)

    @classmethod
    def parse(cls, raw: Any) -> Order:
        r = _Reader("order", raw)
        out = cls(r.get("id", _integer, 0), r.get("generation", _integer, 0), r.get("ips", _objects, []),
                  r.get("run_id", _text(64)), r.get("term", _integer, 0))
        r.done()
        return out

    def wire(self) -> dict[str, Any]:
        return {"id": self.id, "generation": self.generation, "ips": self.ips, "term": self.term,
                **({"run_id": self.run_id} if self.run_id is not None else {})}


@dataclass(frozen=True)
class HeartbeatAnswer:
    """The listener's signed answer to a heartbeat (answer_signature covers wire())."""

    orders: list[Order] = field(default_factory=list)
    declared_dead: int | None = None  # the generation this node's IPs were last given away under
    running: bool = False  # a takeover run is running
    retake_wait: bool = False  # a retake waits: a run has not gathered this node yet
    retake_floor: int | None = None  # the generation a record needs for a fast retake
    generation: int | None = None  # the last completed run's
    lease_ack: bool = False  # the listener acknowledges this node's lease
    tick: float | None = None  # the listener's clock: the next heartbeat echoes it
    step_down: str | None = None  # why this node must hold nothing (banned, unhealthy)
    leave: bool = False  # this node is leaving (or left)
    gratarp: list[str] = field(default_factory=list)  # IPs to announce again
    held_elsewhere: dict[str, str] = field(default_factory=dict)  # IPs asked to retake -> who holds them
    leader: bool = True  # the answering listener leads (a standby's answer acknowledges and orders nothing)
    term: int = 0  # the leader's term as the answering listener knows it (0: a single listener)
    version: int = VERSION

    @classmethod
    def parse(cls, raw: Any) -> HeartbeatAnswer:
        r = _Reader("heartbeat answer", raw)
        r.seen |= {"ok", "signature"}  # the envelope
        version = _version(r, "listener")

        def names(v: Any) -> dict[str, str]:
            if not isinstance(v, dict) or not all(isinstance(x, str) for x in v.values()):
                raise TypeError("must map public IPs to nodes")
            return v

        out = cls(orders=[Order.parse(o) for o in r.get("orders", _objects, [])],
                  declared_dead=r.get("declared_dead", _integer), running=r.get("running", _flag, False),
                  retake_wait=r.get("retake_wait", _flag, False), retake_floor=r.get("retake_floor", _integer),
                  generation=r.get("generation", _integer), lease_ack=r.get("lease_ack", _flag, False),
                  tick=r.get("tick", _number), step_down=r.get("step_down", _text(64)),
                  leave=r.get("leave", _flag, False), gratarp=r.get("gratarp", _texts(), []),
                  held_elsewhere=r.get("held_elsewhere", names, {}), leader=r.get("leader", _flag, True),
                  term=r.get("term", _integer, 0), version=version)
        r.done()
        return out

    def wire(self) -> dict[str, Any]:
        return {**asdict(self), "orders": [o.wire() for o in self.orders]}


@dataclass(frozen=True)
class TakeoverRequest:
    """A watchdog asks for a takeover run: its findings."""

    node: str = ""
    reason: str = ""
    trigger: str = ""  # what woke the check (interval, netlink, lease)
    generation: int | None = None  # its record's
    findings: list[dict[str, Any]] = field(default_factory=list)  # {rule, ip}
    version: int = VERSION

    @classmethod
    def parse(cls, raw: Any) -> TakeoverRequest:
        r = _Reader("takeover request", raw)
        version = _version(r, "watchdog")
        out = cls(r.get("node", _text(64), ""), r.get("reason", _text(1000), ""), r.get("trigger", _text(32), ""),
                  r.get("generation", _integer), r.get("findings", _objects, []), version)
        r.done()
        return out

    def wire(self) -> dict[str, Any]:
        return asdict(self)


STATUS_NODE_KEYS = ("alive", "liveness", "pnn", "state", "last_heartbeat_ago", "lease_left", "does_not_hear",
                    "runtime_state", "banned_for", "health", "ban_credits")
STATUS_IP_KEYS = ("ip", "node", "holders", "planned", "from_plan")


@dataclass(frozen=True)
class Status:
    """The cluster as the listener sees it (GET /v1/status, `pubip status --json`): nodes (each with
    STATUS_NODE_KEYS; liveness is alive, unreachable - not heard for longer than the death threshold, yet not
    declared dead - or dead), public IPs (each with STATUS_IP_KEYS), runs and orders."""

    nodes: dict[str, dict[str, Any]]
    public_ips: list[dict[str, Any]]
    failover: bool = True  # every node runs with a lease: a silent one is declared dead and its IPs move
    generation: int | None = None
    pending_requests: int = 0
    running: int | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    accepted_requests: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    fast_takeover_orders: list[dict[str, Any]] = field(default_factory=list)
    leader: str | None = None  # the leading listener's name (None: no leader known)
    term: int | None = None  # its term
    role: str = "leader"  # this listener's: leader, standby, unknown
    leadership: str = ""  # why (etcd's answer, or the embedded single listener)
    version: int = VERSION

    @classmethod
    def parse(cls, raw: Any) -> Status:
        r = _Reader("status", raw)
        version = _version(r, "listener")

        def entries(what: str, keys: tuple[str, ...]) -> Callable[[Any], Any]:
            def check(v: Any) -> Any:
                items = v.values() if isinstance(v, dict) else v
                for entry in items:
                    if not isinstance(entry, dict) or (strict() and set(entry) != set(keys)):
                        raise TypeError(f"has {what} without the keys {', '.join(keys)}")
                return v
            return check

        nodes = r.get("nodes", lambda v: entries("a node", STATUS_NODE_KEYS)(_object(v)), {})
        public = r.get("public_ips", lambda v: entries("a public IP", STATUS_IP_KEYS)(_objects(v)), [])
        out = cls(nodes, public, r.get("failover", _flag, True), r.get("generation", _integer),
                  r.get("pending_requests", _integer, 0),
                  r.get("running", _integer), r.get("runs", _objects, []), r.get("accepted_requests", _integer, 0),
                  r.get("rejections", _object, {}), r.get("fast_takeover_orders", _objects, []),
                  r.get("leader", _text(64)), r.get("term", _integer), r.get("role", _text(16), "leader"),
                  r.get("leadership", _text(500), ""), version)
        r.done()
        return out

    def wire(self) -> dict[str, Any]:
        return asdict(self)


def retake_refused(answer: HeartbeatAnswer, generation: int) -> str | None:
    """Why a fast retake of the IPs a record of GENERATION gives a node may not go ahead, by the listener's
    heartbeat ANSWER to the node asking (None: it may). The node decides by it; the listener counts the IPs
    asked for as held by that node only when it is None. A record newer than the listener's view only makes a
    refusal less likely, so a refusal the listener computes from the record the node reports is one the node
    makes too."""
    if answer.retake_wait:
        return "a takeover run has not gathered this node yet"
    if answer.retake_floor is not None and answer.retake_floor > generation:
        return f"the record (generation {generation}) is older than the last run's ({answer.retake_floor})"
    if answer.declared_dead is not None and answer.declared_dead >= generation:
        return f"the listener gave this node's IPs away under generation {answer.declared_dead}"
    if answer.held_elsewhere:  # whatever the records say: never beside a holder
        return "; ".join(f"{ip} is held by {holder} (its heartbeat)"
                         for ip, holder in sorted(answer.held_elsewhere.items()))
    return None
