"""`pubip listen`: the controller side of CTDB's recovery master.

Watchdogs ask for takeover runs (authenticated: per-node secret, HMAC over
node, timestamp, nonce and body); requests are queued and coalesced - however
many arrive during a run, at most one more run follows - and each caller can
learn the result of the run that covered its request. One takeover run at a
time, through ansible-runner; a failed run is retried with backoff until one
succeeds (CTDB's need_takeover_run). Heartbeats give membership: the listener
is a voter, acknowledges the nodes' leases, collects whom each node hears, and
declares a node dead only with a quorum, after its lease (death.py); a run
treats a dead node as DISCONNECTED.
State (requests, runs, liveness) lives in sqlite and survives a restart.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from .. import _collection, protocol
from ..awx import AwxBackend
from ..membership import LISTENER, Ears, Timing, quorum
from . import death, fasttakeover, liveness, nodestates, operations, ordering, statusview
from .orders import Orders
from .runners import AwxRunner, PlaybookRunner, Runner
from .store import Store

log = logging.getLogger("pubip.listener")
_lease = _collection.module_utils("lease")  # boot_id: the orders' monotonic times hold within one boot
ADMIN = protocol.ADMIN
ORDERS_FILE = "orders.json"  # in the state directory: the fast takeover orders, across a restart
BATCH_WAIT = 0.5  # seconds a death waits for other nodes a quorum already shuns, to share one batch of orders
RETAKE_WAIT = 3.0  # seconds a run waits for a retake once the quorum is back and the node has its lease
RETAKE_CAP = 8.0  # ... and at most this long after the quorum is back, for a node whose lease is not back yet
ASK_FRESH = 1.0  # seconds an ask to retake held back by a starting run counts for that run's snapshot (asked)


class Listener:
    def __init__(self, inventory: str, secrets: dict[str, str], state_dir: str, *, lease: float = 1.0,
                 window: float = 30.0, max_body: int = 65536, retry_initial: float = 0.5, retry_max: float = 5.0,
                 playbook: str | None = None, ssh_timeout: int = 2, probe_port: int = 22,
                 probe_timeout: float = 0.25, fast_takeover: bool = True, awx: AwxBackend | None = None,
                 ansible_cfg: str | None = None, trusted_proxy: str | None = None, address: str | None = None,
                 ban_credits: int = 3, ban_period: float = 300.0, read_token: str | None = None):
        self.inventory = inventory
        self.address = address  # the listener's own address: no public IP may be it
        self.read_token = read_token  # a Bearer token for GET /v1/status and /metrics (Prometheus)
        self.admin_secret = secrets.get(ADMIN)
        self.secrets = {k: v for k, v in secrets.items() if not k.startswith("_")}
        self.state_dir = Path(state_dir)
        (self.state_dir / "runner").mkdir(parents=True, exist_ok=True)
        self.store = open_store(self.state_dir / "listener.sqlite")
        self.timing = Timing(lease=lease)
        self.trusted_proxy = trusted_proxy  # a TLS-terminating reverse proxy whose X-Forwarded-For is believed
        self.ears = Ears(sorted(self.secrets), self.timing)  # the listener as a voter: whom it hears and shuns
        self.reports: dict[str, death.Report] = {}  # node -> what its last heartbeat said of its peers
        self.leases: dict[str, float] = {}  # node -> the lease length it runs with
        self.holds: dict[str, tuple[list[str], float]] = {}  # node -> (public IPs it holds, the tick it echoed)
        self.held: dict[str, list[str]] = {}  # node -> what its kernel held at its latest heartbeat (no more)
        self.run_marked = 0.0  # when the current run was marked running: reports made after it count
        self.run_pinned: dict[str, frozenset[str]] | None = None  # those reports, as the current run got them
        self.lease_left: dict[str, tuple[float, float] | None] = {}  # node -> (lease left, when it said so)
        self.lease_back: dict[str, float] = {}  # node -> when a heartbeat last showed its lease back (monotonic)
        self.records: dict[str, tuple[int, bool]] = {}  # node -> (its record's generation, marked by a run)
        self.marked_by: dict[str, str | None] = {}  # node -> the run whose mark its record carries (heartbeats)
        self.health: dict[str, dict[str, Any]] = {}  # node -> its monitor hooks' verdict (heartbeats)
        self.rebalance: set[str] = set()  # nodes that came back: force_rebalance_nodes in the next run
        self.credits = nodestates.Credits(ban_credits)
        self.ban_period = ban_period
        self.moved: dict[str, dict[str, Any]] = {}  # public IP -> its last move (pubip ipinfo)
        self.leaving: dict[str, float] = {}  # node -> when it asked to leave (graceful shutdown), not yet gone
        self.stepping: dict[str, tuple[str, float, bool]] = {}  # node -> (why, since, handed over): step_down
        self.connections: dict[str, tuple[str, list[list[Any]]]] = {}  # public IP -> (node, its TCP connections)
        self.gratarp: dict[str, set[str]] = {}  # node -> IPs to announce again (pubip gratarp)
        self.left: set[str] = set()  # nodes that left gracefully: dead until their watchdog starts again
        self.newer_record: dict[str, Any] | None = None  # a record newer than the last run: a run not ours
        self.ears_lock = threading.Lock()
        self.window = window
        self.max_body = max_body
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.probe_port = probe_port
        self.probe_timeout = probe_timeout
        self.fast_takeover = fast_takeover
        self.orders = Orders()
        self.order_lock = threading.Lock()  # orders are issued only while no run is running, and vice versa
        self.silent: set[str] = set()  # nodes without heartbeats whose host still answers the probe
        self.suspected: set[str] = set()  # nodes not heard for suspect_after (logged once)
        self.wake = threading.Event()
        # a node died, came back or was banned: a failed run is retried at once
        self.membership_changed = threading.Event()
        self.run_lock = threading.Lock()  # one ansible run at a time, real or check
        self.stopping = threading.Event()
        # Runs are AWX jobs of a job template, or the main job through ansible-runner here.
        self.runner: Runner = AwxRunner(awx, self.stopping) if awx is not None else PlaybookRunner(
            self.state_dir, inventory, self.stopping, playbook or _collection.TAKEOVER_RUN, ssh_timeout, ansible_cfg)
        self.running_run: int | None = None
        self.run_dead: set[str] = set()  # the nodes the running run was started without (dead then)
        self.run_state: str | None = None  # the current run's pubip_run_state file (runstate.py), if it shares it
        self.runstate = _collection.module_utils("runstate")
        self.rejections: dict[str, int] = {}
        self.awaited: set[int] = set()  # requests of operations waiting for the first run that covers them
        self.attempts: dict[int, dict[str, Any]] = {}  # such a request -> that run's outcome
        self.last_found: dict[str, Any] = {}
        self.accepted = 0
        self.last_seen: dict[str, float] = {}
        self.last_run: dict[str, Any] = read_last_run(self.state_dir / "last_run.json")
        if not self._resume_orders():  # the earlier batches are unknown: no more orders of their generation
            self.orders.issued_for = self.orders.sealed = self.last_run.get("orders_issued_for")
        self.orders.saver = self._save_orders
        self.orders_wanted = False  # a later death's orders wait for the earlier batch, or for a run's takes
        self.wanted_gone: set[str] = set()  # nodes stepped down whose IPs those waiting orders are for
        self.waiting_logged = False  # "Fast takeover waits" said once per wait
        self.beside_logged: set[tuple[str, str, str]] = set()  # (IP, to, holder): an order held back, said once
        # node -> until when its watchdog may hold public IPs without a lease (its start-up grace): not dead before
        self.grace_until: dict[str, float] = {}
        self.longest_grace: dict[str, float] = {}  # node -> the longest start-up grace its watchdog announced
        self.graced: set[str] = set()  # nodes whose death waits for that grace (logged once)
        self.quorum_heard = True  # hears_quorum's last answer
        self.quorum_back: float | None = None  # when hears_quorum last found a quorum again (monotonic)
        self.taking: dict[str, set[str]] = {}  # node -> IPs its last heartbeat reported held while retaking them
        # node -> (IPs it asked to retake, its record's generation, when): refused only because the running run
        # had not gathered it - the run's snapshot pins them to it (extravars), so its next ask may go ahead
        self.asked: dict[str, tuple[frozenset[str], int, float]] = {}
        self.retakes_awaited = False  # "waits for retakes" said once per wait
        self.dropped_planned: tuple[set[tuple[str, str]], set[str]] = (set(), set())  # order_dropped's last plan
        self.run_told: tuple[Any, bool] | None = None  # (the run and the dead told to it, cancelled): tell_run
        self.cancelled_for: frozenset[str] = frozenset()  # the deaths a run was cancelled for, until a run ends
        self.cancelled_for_dropped: set[tuple[int, str]] = set()  # (generation, IP): cancel_for_dropped did
        self.untaken_during: tuple[Any, list[str]] | None = None  # (run, IPs): order_untaken_during_run did
        # (generation, when it ended, IP -> node): a failed run's IPs whose release on that node failed (dropped)
        self.stuck: tuple[int, float, dict[str, str]] = (0, 0.0, {})
        self.left_unrecorded: tuple[int, float, dict[str, str]] = (0, 0.0, {})  # see dropped()
        self.cut_short_moved = False  # order_cut_short_moves done (once, before the first run)
        self.untaken_ordered = False  # order_untaken_at_start done (once, before the first run)
        known = self.store.nodes()
        self.alive: dict[str, bool] = {n: v["alive"] for n, v in known.items() if n in secrets}
        self.peers: dict[str, str] = {n: v["peer"] for n, v in known.items() if v.get("peer")}
        if fast_takeover:
            fasttakeover.preload()  # the planner imported now, not when the first node dies
        cut_short = self.store.unfinished_runs()
        unchanged, said = self.cancel_cut_short() if cut_short else (False, None)
        taken = (said or {}).get("taken")
        if not isinstance(taken, dict) or not isinstance(taken.get("public_ips"), list) or \
                not isinstance(taken.get("generation"), int) or taken["generation"] <= int(self.generation() or 0):
            taken = None
        for run_id in cut_short:
            self.store.abandon(run_id)
            self.store.add_request("listener", f"redo of run {run_id}")
            if unchanged:
                log.warning("Takeover run %d was cut short by a listener restart: redoing it (cancelled: it had "
                            "changed no host)", run_id)
                continue
            if taken is not None:
                log.warning("Takeover run %d was cut short by a listener restart: redoing it (its takes were all done: "
                            "where it left the IPs, generation %d, stands until a run completes)", run_id,
                            taken["generation"])
                continue
            log.warning("Takeover run %d was cut short by a listener restart: redoing it", run_id)
            # It may have changed hosts and recorded a newer generation on some: no fast takeover from the last
            # completed run, and no retake from an older record, until a run completes (as after a failed run)
            settled = int(self.last_run.get("planned_generation") or 0) <= int(self.last_run.get("generation") or 0)
            self.last_run["planned_generation"] = max(int(self.last_run.get("planned_generation") or 0),
                                                      int(self.last_run.get("generation") or 0) + 1)
            plan = (said or {}).get("plan") or {}
            if said is not None and settled and isinstance(plan.get("generation"), int) and \
                    isinstance(plan.get("connected"), list):
                # Its nodes (but those it declared dead) may still retake from their records: it gathered them,
                # so it releases on each (marking it: a marked record retakes only what the run keeps there)
                # before any take, and takes nothing a node failed to release - no IP of theirs went elsewhere.
                # Its plan's generation is on no host before its takes are all done (takes_done).
                self.last_run["cut_short"] = {"generation": self.generation(),
                                              "retake_ok": sorted(set(map(str, plan["connected"]))
                                                                  - set(said["dead"])),
                                              # what orders start from until a run records (order_base)
                                              "plan": plan, "released": said["released"], "dead": said["dead"]}
            self._save_last_run()
        if taken is not None and said is not None:
            # As a run that failed after its takes (run()): its hosts record where its takes left every IP, and it
            # takes nothing more - whether its ansible-playbook still runs or not. Its orders go to the nodes it
            # released (marked: only those may have recorded it; one still marked refuses, and is left out), and
            # the deaths it skipped are ordered as after such a run.
            # IPs its takers refused before changing anything are held by nobody (as after a failed run): ordered
            # to other nodes before the first run (order_untaken_at_start)
            untaken = ordering.untaken((said.get("plan") or {}).get("public_ips"), taken["public_ips"])
            if untaken:
                log.warning("Takeover run cut short: its takers refused %s before changing anything: held by "
                            "nobody, ordered to other nodes once the nodes report", ", ".join(untaken))
            self.adopt({"generation": taken["generation"], "algorithm": taken.get("algorithm"),
                        "options": taken.get("options"), "allowed": taken.get("allowed"),
                        "record": {"nodes": taken.get("nodes"), "public_ips": taken["public_ips"]}},
                       recorded_on=sorted(set(said["released"]) - set(said["dead"])), untaken=untaken)
            self.wanted_gone |= set(said["dead"]) - set(self.dead_nodes())
            self.orders_wanted = bool(said["dead"]) and fast_takeover
        # Like a new CTDB recovery master: start with a takeover run, to know (and enforce) the assignment.
        self.store.add_request("listener", "listener started")

    def cancel_cut_short(self) -> tuple[bool, dict[str, Any] | None]:
        """At start-up, for a run a listener restart cut short (its ansible-playbook may still run): cancel it by
        its pubip_run_state file (runstate.py). (True, None) when it changed no host and now never will - the
        cancel and its first release take one lock - so the records and the last completed run still say where
        the IPs are (chaos: two restarts before any release closed fast takeover until a run completed, 17 s).
        (False, its state) once a host may have changed - its ``taken`` says where it left the IPs if its takes
        were all done; (False, None) without such a file (AWX)."""
        leftovers = sorted((self.state_dir / "runner").glob("runstate-*.json"))
        unchanged = bool(leftovers) and all([self.runstate.cancel(str(p)) for p in leftovers])
        changing = [said for p in leftovers if not (said := self.runstate.read(str(p)))["cancelled"]]
        for path in leftovers:  # a cancelled file stays a while: a run still going finds it and changes nothing
            if not self.runstate.read(str(path))["cancelled"] or time.time() - path.stat().st_mtime > 86400:
                for leftover in (path, Path(f"{path}.lock")):
                    leftover.unlink(missing_ok=True)
        return unchanged, (changing[0] if len(changing) == 1 else None)

    # --- authentication -----------------------------------------------------------
    def authenticate(self, headers: dict[str, str], body: bytes, path: str,
                     secrets: dict[str, str] | None = None) -> str:
        node = headers.get(protocol.NODE_HEADER, "")
        if secrets is None:
            secrets = self.secrets if path != protocol.ADMIN_PATH else (
                {ADMIN: self.admin_secret} if self.admin_secret else {})
        if node not in secrets:
            raise protocol.Rejected(403, f"unknown node {node!r}")
        try:
            stamp = float(headers.get(protocol.TIME_HEADER, ""))
        except ValueError:
            raise protocol.Rejected(401, "missing or malformed timestamp") from None
        if not math.isfinite(stamp):
            raise protocol.Rejected(401, f"timestamp {headers.get(protocol.TIME_HEADER)!r} is not a finite number")
        if abs(time.time() - stamp) > self.window:
            raise protocol.Rejected(401, f"clock skew {time.time() - stamp:+.1f}s beyond the {self.window:.0f}s window")
        if not protocol.verify(secrets[node], headers, body, path):
            raise protocol.Rejected(401, f"bad signature for node {node}")
        if not self.store.use_nonce(headers.get(protocol.NONCE_HEADER, ""), self.window):
            raise protocol.Rejected(401, f"replayed nonce from node {node}")
        return node

    def authorize_read(self, headers: dict[str, str], path: str) -> None:
        """GET /v1/status and /metrics: the read token, or a request signed by a node or the operator."""
        auth = headers.get("Authorization", "")
        if self.read_token and auth.startswith("Bearer ") and hmac.compare_digest(
                auth[7:].strip().encode("utf-8", "replace"), self.read_token.encode()):
            return
        node = headers.get(protocol.NODE_HEADER, "")
        if node == ADMIN and self.admin_secret:
            self.authenticate(headers, b"", path, {ADMIN: self.admin_secret})
            return
        if not node and not auth:
            raise protocol.Rejected(401, f"{path} needs a signed request or the read token")
        if auth and not node:
            raise protocol.Rejected(401, f"{path}: wrong read token")
        self.authenticate(headers, b"", path)

    def reject(self, peer: str, exc: protocol.Rejected) -> None:
        self.rejections[exc.reason.split(" ")[0]] = self.rejections.get(exc.reason.split(" ")[0], 0) + 1
        log.warning("Rejected request from %s: %s", peer, exc.reason)

    # --- requests ---------------------------------------------------------------------
    def takeover_request(self, node: str, payload: dict[str, Any]) -> int:
        reason = str(payload.get("reason", ""))[:500]
        request_id = self.store.add_request(node, reason)
        self.accepted += 1
        log.info("Takeover run requested by %s (request %d): %s", node, request_id, reason or "no reason given")
        self.wake.set()
        return request_id

    def heartbeat(self, node: str, peer: str | None = None, payload: dict[str, Any] | None = None
                  ) -> list[dict[str, Any]]:
        """A sign of life; returns the fast takeover orders for NODE (see orders.py)."""
        now = time.monotonic()
        self.last_seen[node] = now
        report = (payload or {}).get("membership")
        with self.ears_lock:
            self.ears.hear(node)
            if isinstance(report, dict):
                self.reports[node] = _report(now, report, set(self.secrets))
                if protocol.is_number(report.get("lease")):
                    self.leases[node] = float(report["lease"])
                holds = (payload or {}).get("holds")
                tick = report.get("tick")
                if isinstance(holds, list) and len(holds) <= 4096 and protocol.is_number(tick):
                    self.holds[node] = (sorted({str(ip)[:64] for ip in holds}), float(tick))
                    held = (payload or {}).get("held")
                    self.held[node] = sorted({str(ip)[:64] for ip in (held if isinstance(held, list) else holds)})
                    taking = (payload or {}).get("taking")
                    self.taking[node] = {str(ip)[:64] for ip in taking} if isinstance(taking, list) else set()
                left = report.get("lease_left")
                if protocol.is_number(left) and float(left) > 0 and not self.has_lease(node, now):
                    self.lease_back[node] = now
                self.lease_left[node] = (float(left), now) if protocol.is_number(left) else None
                grace = report.get("grace")
                if protocol.is_number(grace) and 0 < float(grace) <= 3600:
                    self.in_grace(node, now + float(grace) * (1 + self.timing.drift))
                    self.longest_grace[node] = max(self.longest_grace.get(node, 0.0), float(grace))
            conns = (payload or {}).get("connections")
            if isinstance(conns, dict) and len(conns) <= 1024:
                self.store_connections(node, conns)
            record = (payload or {}).get("record")
            if isinstance(record, dict) and isinstance(record.get("generation"), int):
                self.records[node] = (record["generation"], record.get("marked") is True)
                self.marked_by[node] = str(record["run_id"])[:64] if record.get("marked") is True \
                    and record.get("run_id") else None
                if isinstance(record.get("public_ips"), list) and isinstance(record.get("nodes"), dict):
                    self.newer_record = record
        health = (payload or {}).get("health")
        if isinstance(health, dict) and isinstance(health.get("ok"), bool):
            self.health_report(node, health)  # not under ears_lock: a replan takes order_lock, which comes first
        if self.newer_record is not None:
            self.adopt_record()
        if peer:
            self.peers[node] = peer
        self.store.heartbeat(node, peer)
        if node in self.silent or node in self.suspected:
            self.silent.discard(node)
            self.suspected.discard(node)
            log.info("Node %s sends heartbeats again", node)
        for order in self.orders.acknowledge(node, list((payload or {}).get("done") or [])):
            res = order.result or {}
            if res.get("refused"):
                log.warning("Fast takeover order %d refused by %s: %s; its IPs go to another node", order.id, node,
                            res["refused"])
                self.orders_wanted = True  # watch_liveness orders them again once the batch settles
            else:
                log.info("Fast takeover order %d done by %s: took %s%s", order.id, node,
                         ", ".join(res.get("taken") or []) or "nothing",
                         f"; errors: {'; '.join(res['errors'])}" if res.get("errors") else "")
        if (payload or {}).get("leave") is True and node not in self.leaving and node not in self.left:
            self.leaving[node] = now
            log.warning("Node %s is leaving (graceful shutdown): it drops its public IPs, the others take them", node)
        if node in self.leaving:
            self.leave_when_empty(node)
        if node in self.stepping:
            self.hand_over(node)
        if node in self.left and (payload or {}).get("leaving") is True:
            return []  # the leaving watchdog's last heartbeats: not back yet
        if not self.alive.get(node, True):
            self.left.discard(node)
            self.alive[node] = True
            self.store.set_alive(node, True)
            log.warning("Node %s is back (heartbeat): takeover run to bring it back", node)
            self.cancelled_for -= {node}  # its next death is news
            self.rebalance.add(node)
            self.membership_changed.set()
            self.store.add_request("listener", f"node {node} is back")
            self.wake.set()
            self.cancel_for_return(node)
        self.alive.setdefault(node, True)
        if not self.alive[node]:
            return []
        return [o.wire() for o in self.orders.deliver(node)]

    def cancel_for_return(self, node: str) -> None:
        """NODE, which the running run was started without (dead), is back: cancel that run if it has changed no
        host yet, so the next one includes NODE now rather than one run later (a healed partition settles a
        whole run sooner). A cancelled run changed nothing; after its first release it goes on - and so it does
        while some public IP is held by no live node: it places them, and a cancel would only leave them unheld
        for another gather (chaos: faults 1-3 s apart cancelled run after run while IPs waited)."""
        with self.order_lock:  # the run's end clears run_state under it: no cancel of a finished run
            if self.run_state is None or node not in self.run_dead:
                return
            unheld = self.unheld_now(besides=node)
            if unheld:
                log.info("Takeover run %s goes on without %s (back): it places %s, held by no node",
                         self.running_run or "starting", node, ", ".join(unheld))
                return
            said = self.runstate.read(self.run_state)
            if said["cancelled"] or not self.runstate.cancel(self.run_state):
                return
        log.warning("Takeover run %s cancelled before it changed any host (%s back): the next run includes it",
                    self.running_run or "starting", node)

    def unheld_now(self, besides: str | None = None) -> list[str]:
        """The last run's public IPs that no live node's heartbeat says it holds ([] while one has not reported);
        BESIDES: a node back from the dead, whose holds count for nothing - what it said before it died, or a
        first heartbeat before its watchdog read the kernel (chaos: node4 back after its death cancelled the
        run placing its IPs, by its last word from before; 19.6 s unheld)."""
        ips = [str(e.get("ip")) for e in self.last_run.get("public_ips") or [] if isinstance(e, dict)]
        with self.ears_lock:
            live = [n for n in self.secrets if self.alive.get(n, True) and n != besides]
            if not ips or any(n not in self.holds for n in live):
                return []
            held = {ip for n in live for ip in self.holds[n][0]}
        return sorted(set(ips) - held)

    def dropped(self, generation: int) -> dict[str, str]:
        """IP -> node, for the IPs an order of GENERATION put on a live node that no longer holds them, nor
        does any other live node: its heartbeats since the order was carried out say so (it lost the cluster,
        say, and forgot them with its lease). Nobody can put them back by a retake (retakeable): only an
        order or a run can. So too the IPs a failed run of GENERATION left with a node whose release of them
        failed (stuck): its heartbeats since the run ended say it holds them no more - its release went through,
        its answer was lost (chaos: sshd killed during the release; 10 s unheld until the next run took them).
        That node cannot retake them: its record is older than the run's, or marked by it. And the IPs a failed
        run of GENERATION kept on a node that did not record it, once that node's heartbeats since the run ended
        say it holds them no more and its record is older than the run's (it cannot retake them; chaos: a flush
        on a node whose sshd then died during a run, 16.1 s unheld until the next run)."""
        unheld = set(self.unheld_now())
        if not unheld:
            return {}
        stuck_generation, ended, stuck = self.stuck
        left_generation, left_ended, left = self.left_unrecorded
        # an IP an open order may still place is not dropped (chaos: a run was cancelled for IPs a death's orders
        # had just given to another node, by the carried-out order before those)
        unheld -= {e["ip"] for order in self.orders.outstanding() for e in order.ips}
        out = {}
        with self.ears_lock:
            lost: dict[str, tuple[str, float]] = {}
            if stuck_generation == generation:
                lost.update((ip, (node, ended)) for ip, node in stuck.items())
            may_retake = set()  # left with a node whose record may give it them: never dropped
            if left_generation == generation:
                for ip, node in left.items():
                    if node in self.records and self.records[node][0] < generation:
                        lost[ip] = (node, left_ended)
                    else:
                        may_retake.add(ip)
            # an order carried out says who had it last: a run that skipped a dead node left the IP with it in
            # its record while an order during the run gave it to another (chaos: "dropped" by the dead node,
            # and no order went out - an IP is ordered again only from the node an earlier order put it on)
            lost.update(self.orders.carried_out(generation))
            for ip, (node, since) in lost.items():
                if ip in may_retake:
                    continue
                ips, tick = self.holds.get(node, (None, 0.0))
                if ip in unheld and self.alive.get(node, True) and ips is not None and tick >= since and ip not in ips:
                    out[ip] = node
        return out

    def heartbeat_answer(self, node: str, peer: str, payload: dict[str, Any]) -> dict[str, Any]:
        """What a heartbeat's signed answer carries (protocol.ANSWER_FIELDS)."""
        orders = self.heartbeat(node, peer, payload)
        with self.ears_lock:
            ack = not self.ears.shuns(node)
        step_down = self.step_down(node)  # before the tick: a report echoing this tick is from after it
        answer = {"orders": orders,
                "declared_dead": (self.last_run.get("declared_dead") or {}).get(node),
                "running": self.running_run is not None,
                "hold_retake": self.holds_retake(node, (payload or {}).get("retake")),
                "generation": self.retake_generation(node),
                "completed": self.last_run.get("generation"),  # the last run known to have completed
                "lease_ack": ack, "tick": time.monotonic(),
                "step_down": step_down,
                "leave": node in self.leaving or node in self.left,
                "gratarp": sorted(self.gratarp.pop(node, set())),
                "held_elsewhere": self.held_elsewhere(node, (payload or {}).get("retake"))}
        self.drop_refused_retake(node, payload, answer)
        self.note_held_ask(node, payload or {}, answer)
        return answer

    def note_held_ask(self, node: str, payload: dict[str, Any], answer: dict[str, Any]) -> None:
        """Remember an ask to retake that only holds_retake refused (self.asked)."""
        record, wanted = payload.get("record"), payload.get("retake")
        if not (answer.get("hold_retake") and isinstance(wanted, list) and wanted and isinstance(record, dict)
                and isinstance(record.get("generation"), int)):
            return
        if protocol.retake_refused({**answer, "hold_retake": False}, record["generation"]) is None:
            with self.ears_lock:
                self.asked[node] = (frozenset(str(ip)[:64] for ip in wanted), record["generation"], time.monotonic())

    def asked_to_pin(self, node: str, now: float) -> frozenset[str]:
        """What NODE asked to retake less than ASK_FRESH ago, held back only because the run starting now had not
        gathered it, and that it may still retake by everything else the listener knows: the starting run's
        snapshot counts them as held by NODE. The run, if it then cannot reach NODE, keeps them there (pinned,
        given to no other node), which is what the node's next ask - allowed by holds_retake from then on -
        brings about; under load, waiting for the run to gather the node held retakes back 8.5 s (chaos)."""
        ips, generation, when = self.asked.get(node, (frozenset(), 0, 0.0))
        if not ips or now - when > ASK_FRESH or not self.alive.get(node, True):
            return frozenset()
        others = self.held_by_others(node)
        verdict = {"generation": self.retake_generation(node),
                   "declared_dead": (self.last_run.get("declared_dead") or {}).get(node),
                   "held_elsewhere": {ip: others[ip] for ip in ips if ip in others}}
        return ips if protocol.retake_refused(verdict, generation) is None else frozenset()

    def held_by_others(self, node: str | None = None) -> dict[str, str]:
        """Public IP -> a live node other than NODE whose latest heartbeat says it holds it. The last word
        against a second holder, whatever records and plans say (chaos: a record gave an IP to a node that
        retook it while another, which a failed run could not reach, still held it - 1.3 s on two hosts)."""
        with self.ears_lock:
            return {ip: other for other, ips in sorted(self.held.items())
                    if other != node and self.alive.get(other, True) for ip in ips}

    def held_elsewhere(self, node: str, wanted: Any) -> dict[str, str]:
        """The IPs NODE asks to retake that another live node's heartbeat says it holds: it may not."""
        if not isinstance(wanted, list) or not wanted:
            return {}
        others = self.held_by_others(node)
        return {str(ip): others[str(ip)] for ip in wanted if str(ip) in others}

    def drop_refused_retake(self, node: str, payload: dict[str, Any], answer: dict[str, Any]) -> None:
        """A node asking to retake reports those IPs as held already (a run starting after a yes must count
        them); when the answer is no, they are not held: a run that then cannot reach the node would pin them
        to it, unheld until a later run (chaos: 10 s)."""
        record, taking, wanted = payload.get("record"), payload.get("taking"), payload.get("retake")
        if not (isinstance(record, dict) and isinstance(record.get("generation"), int)
                and isinstance(taking, list) and isinstance(wanted, list)):
            return
        if protocol.retake_refused(answer, record["generation"]) is None:
            return
        drop = {str(ip) for ip in taking} & {str(ip) for ip in wanted}
        report, holds = payload.get("membership"), payload.get("holds")
        if not drop or not isinstance(report, dict) or not isinstance(holds, list):
            return
        with self.ears_lock:
            stored = self.holds.get(node)
            if stored is not None and stored[1] == report.get("tick") and \
                    set(stored[0]) == {str(ip)[:64] for ip in holds}:  # still this heartbeat's report
                self.holds[node] = ([ip for ip in stored[0] if ip not in drop], stored[1])

    def holds_retake(self, node: str, wanted: Any) -> bool:
        """A run that has not gathered NODE yet would, if it then cannot reach it, pin it with what it
        reported after the run was marked (run_pinned): a retake of those IPs agrees with that, any other
        waits for the gather. Before the run takes its snapshot of the reports, every retake waits."""
        if self.running_run is None or node in self.runner.gathered:
            return False
        with self.ears_lock:
            pinned = None if self.run_pinned is None else self.run_pinned.get(node)
        return not (pinned is not None and isinstance(wanted, list) and wanted
                    and {str(ip) for ip in wanted} <= pinned)

    def generation(self) -> int | None:
        """The newest generation any host may have recorded: the last completed run's, or a later failed
        run's that got as far as changing hosts. A record older than this is no ground for a fast retake."""
        gens = [g for g in (self.last_run.get("generation"), self.last_run.get("planned_generation")) if g is not None]
        return max(gens) if gens else None

    def retake_generation(self, node: str) -> int | None:
        """The generation NODE's record must have for a fast retake (protocol.retake_refused): generation(),
        but after a run cut short between its first release and its last take (cancel_cut_short), the last
        completed run's for the nodes that run gathered and did not declare dead - it moved none of their IPs
        elsewhere - until a run records again."""
        newest = self.generation()
        cut = self.last_run.get("cut_short")
        if isinstance(cut, dict) and newest == cut.get("generation") and node in (cut.get("retake_ok") or []):
            return self.last_run.get("generation")
        return newest

    def generation_floor(self) -> int:
        """The newest generation any host may have recorded, as far as the listener knows: runs it knows of,
        orders it issued, and what every node's heartbeats said its record is - a node a run did not reach
        may hold the record of a run cut short (a listener restart) that the next run would otherwise reuse."""
        last = self.last_run
        known = [last.get("generation"), last.get("planned_generation"), last.get("orders_issued_for"),
                 *(last.get("declared_dead") or {}).values()]
        with self.ears_lock:
            known += [gen for gen, _marked in self.records.values()]
        return max([int(g) for g in known if isinstance(g, int)] or [0])

    def wait_for(self, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.store.request(request_id) or {}
            if state.get("done") or time.monotonic() >= deadline:
                return state
            time.sleep(0.05)

    # --- liveness -------------------------------------------------------------------------
    def timing_now(self) -> Timing:
        """The listener's timing, with the longest lease any node runs with: D must cover it."""
        longest = max([self.timing.lease, *self.leases.values()])
        return self.timing if longest == self.timing.lease else Timing(lease=longest)

    def watch_liveness(self) -> None:
        """Every 50 ms, the death verdict (death.py) for every live node. A node dead by it whose host still
        answers a TCP knock is not dead either: its watchdog is down, and nobody would release its IPs.
        Nodes that fall together (a partition) are declared dead together, in one batch of fast takeover
        orders: a death waits (up to BATCH_WAIT) for the other nodes a quorum already shuns."""
        probed: dict[str, float] = {}
        suspected = self.suspected
        ready_since: float | None = None
        while not self.stopping.is_set():
            self.hears_quorum()  # also while a run runs: a partition it outlasted is one awaits_retakes must know
            now = time.monotonic()
            nodes = sorted(self.secrets)
            with self.ears_lock:
                reports = dict(self.reports)
                heard = dict(self.ears.heard)
            timing = self.timing_now()
            died: list[tuple[str, float, str]] = []
            shunned = []  # a quorum shuns them; their leases are running out
            for node in nodes:
                silent = now - heard[node]
                if silent < timing.suspect_after:
                    suspected.discard(node)
                if not self.alive.get(node, True):
                    continue
                verdict = death.verdict(node, now, nodes, heard[node], reports, timing)
                if not verdict.dead:
                    if silent >= timing.suspect_after and node not in suspected:
                        suspected.add(node)
                        log.warning("Node %s sent no heartbeat for %.1fs: suspected (%s)", node, silent, verdict.why)
                    if verdict.quorum:
                        shunned.append(node)
                    continue
                if now - probed.get(node, -timing.dead_after) < timing.dead_after:
                    continue  # its host answered the probe lately: wait before knocking again
                peer = self.peers.get(node)
                if peer and liveness.probe(peer, self.probe_port, self.probe_timeout) == liveness.ALIVE:
                    probed[node] = time.monotonic()
                    if node not in self.silent:
                        self.silent.add(node)
                        log.warning("Node %s sent no heartbeat for %.1fs but its host %s answers: not dead "
                                    "(is its watchdog down?)", node, silent, peer)
                    continue
                with self.ears_lock:
                    if node in self.silent:
                        # Its host answered while its watchdog was silent: a watchdog may have started there since,
                        # keeping what the host holds for its start-up grace before it has a lease.
                        self.silent.discard(node)
                        self.in_grace(node, time.monotonic() + self.start_grace(node))
                    grace = self.grace_until.get(node, -math.inf) - time.monotonic()
                if grace > 0:
                    if node not in self.graced:
                        self.graced.add(node)
                        log.warning("Node %s is silent and its host does not answer, but its watchdog may still "
                                    "hold its IPs in its start-up grace: not dead for %.1fs more", node, grace)
                    continue
                self.graced.discard(node)
                died.append((node, silent, f"{verdict.why}; "
                             + ("its host does not answer" if peer else "no address to probe")))
            if died and shunned:
                ready_since = now if ready_since is None else ready_since
                if now - ready_since < BATCH_WAIT:
                    self.stopping.wait(0.05)
                    continue  # the others fall within moments: one batch for all
            ready_since = None
            if self.orders_wanted and self.fast_takeover:
                self.issue_orders(exclude=set(suspected) | set(shunned))
            elif self.fast_takeover and not died and self.running_run is None and self.hears_quorum():
                ordering.order_dropped(self, exclude=set(suspected) | set(shunned))
            elif self.fast_takeover and not died and self.running_run and self.hears_quorum() and self.run_state:
                said = self.runstate.read(self.run_state)  # once a tick, for both
                ordering.cancel_for_dropped(self, said)
                ordering.order_untaken_during_run(self, said)
            if died:
                for node, silent, why in died:
                    self.node_died(node, silent, why)
                # One batch of orders for all (a later death's batch waits until this one has settled).
                if self.fast_takeover:
                    self.issue_orders(exclude=set(suspected) | set(shunned))
                self.membership_changed.set()
                names = [n for n, _s, _w in died]
                self.store.add_request("listener", f"node{'s' if len(names) > 1 else ''} {', '.join(names)} dead")
                self.wake.set()
            self.stopping.wait(0.05)

    def in_grace(self, node: str, until: float) -> None:
        """NODE's watchdog may hold public IPs without a lease until UNTIL (its start-up grace, node/daemon.py):
        it is not dead before that, plus the time to release them (the caller holds ears_lock or is the
        liveness thread)."""
        timing = self.timing_now()
        self.grace_until[node] = max(self.grace_until.get(node, -math.inf),
                                     until + timing.release_bound + timing.margin)

    def start_grace(self, node: str) -> float:
        """The start-up grace a watchdog of NODE starting now would take (node/daemon.py: start_grace)."""
        t = Timing(lease=self.leases.get(node, self.timing.lease))
        # the longest its watchdog announced covers a heartbeat interval of its own
        return max(t.shun_hold + t.lease + 2 * t.heartbeat, self.longest_grace.get(node, 0.0)) * (1 + t.drift)

    def node_died(self, node: str, silent_for: float | None, why: str) -> None:
        self.alive[node] = False
        self.silent.discard(node)
        self.store.set_alive(node, False)
        # Its IPs may go to others now (orders, or a running run that from now on takes it to hold nothing)
        # while its record stays as it was: when it comes back, no fast retake from that record - only a run
        # that records it again (a newer generation) lets it retake (the heartbeat answer's declared_dead).
        with self.ears_lock:  # the record it last reported may be newer than any run the listener knows of
            recorded = self.records.get(node, (0, False))[0]
        with self.order_lock:  # not lost to a run's adopt() replacing last_run at the same moment
            given_away = self.last_run.setdefault("declared_dead", {})
            given_away[node] = max(int(given_away.get(node) or 0), self.generation() or 0, int(recorded or 0))
            self._save_last_run()
        if silent_for is None:
            log.warning("Node %s is gone (%s): takeover run without it", node, why)
        else:
            log.warning("Node %s is dead (no heartbeat for %.1fs; %s): takeover run without it", node, silent_for, why)

    def step_down(self, node: str) -> str | None:
        """Why NODE must hold no public IP now (the heartbeat answer's step_down): banned, or UNHEALTHY while
        another live node is healthy (CTDB hosts on unhealthy nodes when all are). The node drops them itself;
        once it says it holds none, its IPs go to the others at once (hand_over)."""
        state = self.node_states().get(node)
        why = None
        if state == "banned":
            why = "banned"
        elif state == "unhealthy" and any(self.alive.get(n, True) and n not in self.unhealthy() and n != node
                                           for n in self.secrets):
            why = "unhealthy"
        if why is None:
            self.stepping.pop(node, None)
        elif self.stepping.get(node, ("",))[0] != why:
            self.stepping[node] = (why, time.monotonic(), False)
        return why

    def hand_over(self, node: str) -> None:
        """A node stepping down said (in a heartbeat made after it was told) that it holds nothing: fast
        takeover orders give its IPs to the others now, as for a dead node; the takeover run follows."""
        why, since, done = self.stepping[node]
        with self.ears_lock:
            ips, tick = self.holds.get(node, (None, 0.0))
        if done or ips is None or ips or tick < since:
            return
        self.stepping[node] = (why, since, True)
        log.info("Node %s (%s) holds no public IP now: fast takeover of its IPs", node, why)
        if self.fast_takeover:
            self.issue_orders(exclude=set(self.suspected), gone={node})

    def leave_when_empty(self, node: str) -> None:
        """A leaving node is gone once a heartbeat made after its leave (it echoes a tick from after it) says it
        holds nothing: it refuses every take from then on, so its IPs go to the others at once (fast takeover
        orders), as they would on its death - without waiting for one."""
        with self.ears_lock:
            ips, tick = self.holds.get(node, (None, 0.0))
        if ips is None or ips or tick < self.leaving[node]:
            return
        self.leaving.pop(node)
        self.left.add(node)
        self.node_died(node, None, "it left gracefully and holds no public IP")
        if self.fast_takeover:
            self.issue_orders(exclude=set(self.suspected))
        self.store.add_request("listener", f"node {node} left")
        self.wake.set()

    # --- fast takeover orders (ordering.py) ----------------------------------------------------
    def issue_orders(self, exclude: set[str] | None = None, gone: set[str] | None = None) -> None:
        ordering.issue_orders(self, exclude, gone)

    def order_base(self, gone: list[str]) -> ordering.OrderBase | None:
        return ordering.order_base(self, gone)

    def tell_run(self, gone: list[str]) -> bool:
        return ordering.tell_run(self, gone)

    def stop_run(self, gone: list[str]) -> bool:
        return ordering.stop_run(self, gone)

    def _save_last_run(self) -> None:
        (self.state_dir / "last_run.json").write_text(json.dumps(self.last_run))

    def _save_orders(self, state: dict[str, Any]) -> None:
        """The fast takeover orders, for the listener after a restart (orders.py); CLOCK_MONOTONIC times: valid
        in this boot only."""
        path = self.state_dir / ORDERS_FILE
        try:
            path.with_suffix(".tmp").write_text(json.dumps({"boot_id": _lease.boot_id(), **state}))
            os.replace(path.with_suffix(".tmp"), path)
        except OSError as exc:  # the orders go on; a restart would then seal their generation
            log.warning("Cannot keep the fast takeover orders in %s: %s", path, exc)

    def _resume_orders(self) -> bool:
        """Go on with the orders the listener before a restart issued (chaos: a death right after a restart got no
        orders - its generation's earlier batches were unknown, so sealed - and waited 18 s for a run)."""
        try:
            state = json.loads((self.state_dir / ORDERS_FILE).read_text())
            if state.get("boot_id") != _lease.boot_id():
                return False
            self.orders.resume(state)
        except (OSError, ValueError, TypeError, KeyError):
            return False
        if self.orders.issued_for is not None:
            log.info("Fast takeover orders of generation %d go on from before the restart (%d kept)",
                     self.orders.issued_for, len(state["orders"]))
        return True

    def dead_nodes(self) -> list[str]:
        return sorted(n for n, ok in self.alive.items() if not ok)

    # --- runs ---------------------------------------------------------------------------------
    def work(self) -> None:
        delay = self.retry_initial
        while not self.stopping.is_set():
            self.end_bans()
            pending = self.store.pending()
            if not pending:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            if not self.hears_quorum():
                self.wake.wait(0.1)  # no run can complete, and a failed one only blocks fast paths after
                self.wake.clear()
                continue
            if self.awaits_retakes():
                self.wake.wait(0.1)
                self.wake.clear()
                continue
            ordering.order_cut_short_moves(self)
            ordering.order_untaken_at_start(self)
            self.settle_orders()
            self.await_reports()
            if not self.hears_quorum():  # lost while orders settled: cancel_for_quorum found no run to cancel
                with self.order_lock:
                    self.running_run, self.run_state = None, None
                continue
            pending = self.store.pending()  # with what arrived while orders settled
            self.membership_changed.clear()  # a death or a return from now on is news to this run
            dead = self.dead_nodes()
            self.run_dead = set(dead)
            run_id = self.store.start_run(dead)
            self.store.cover(pending, run_id)  # everything queued so far: later requests wait for the next run
            self.running_run = run_id
            moves = self.store.overrides("moveip")
            run_state = self.run_state
            extravars: dict[str, Any] = {}
            try:
                if run_state and self.runstate.read(run_state)["cancelled"]:
                    ok, generation, detail = False, None, "cancelled before it started"
                else:
                    extravars = {**self.extravars(dead, moves, pin=True),
                                 **({"pubip_run_state": run_state} if run_state else {})}
                    with self.run_lock:
                        ok, generation, detail = self.run(run_id, dead, extravars)
                if ok and moves:
                    self.store.clear_overrides("moveip", list(moves))  # one-shot, like CTDB's moveip
            except Exception as exc:  # a broken run must not stop the queue
                log.exception("Takeover run %d could not run", run_id)
                ok, generation, detail = False, None, f"{type(exc).__name__}: {exc}"
            said = self.runstate.read(run_state) if run_state else self.runstate.EMPTY
            if said["cancelled"]:
                detail = "cancelled before it changed any host (the cluster changed: replanned)"
                log.info("Takeover run %d %s", run_id, detail)
            self.store.finish_run(run_id, ok, generation, detail)
            if not ok:
                self.store.uncover(run_id)  # its requests wait for the next run
            with self.order_lock:  # only now: a status never shows the cluster idle with a run to come
                self.running_run, self.run_state, self.run_dead = None, None, set()
                if not said["cancelled"]:
                    self.cancelled_for = frozenset()  # a run got to plan with them: a death from now on is news
                if said["dead"] and self.fast_takeover:
                    # The deaths it skipped. A node among them that is back already holds nothing (it lost its
                    # lease before it was declared dead, and may not retake from its record) until a run gives it
                    # IPs again: its IPs go to the others all the same, and it is no order's target - from the
                    # moment the run is over, also for orders another thread issues first (wanted_gone).
                    self.wanted_gone |= set(said["dead"]) - set(self.dead_nodes())
            if run_state:
                for leftover in (run_state, run_state + ".lock"):
                    Path(leftover).unlink(missing_ok=True)
            if (said["dead"] or self.last_found.get("untaken")) and self.fast_takeover:
                # orders now for the deaths it skipped, and for the IPs its takers refused
                self.issue_orders(exclude=set(self.suspected))
            # A run cancelled, or incomplete only because nodes died during it (its plan stands, a retry follows
            # at once): an operation waiting on it gets the next run's answer
            retried = said["cancelled"] or (not ok and self.last_found.get("plan_stands") is True)
            for request_id in set(pending) & self.awaited if not retried else ():
                # what an operation waiting on it answers (a cancelled run: the next one will)
                self.attempts[request_id] = {"run": run_id, "success": ok, "generation": generation,
                                             "detail": detail, "done": True}
            if ok:
                self.credits.succeeded()
                self.rebalance -= set(extravars.get("pubip_rebalance_nodes") or [])
                delay = self.retry_initial
                continue
            if said["cancelled"]:
                continue  # not a failure: the next run starts at once
            self.charge((self.last_found.get("problem_nodes") or []) if extravars else [], run_id)
            if moves and "moveip:" in detail:  # the plan refused it: retrying would fail forever
                self.store.clear_overrides("moveip", list(moves))
                log.error("Dropped the pending moveip %s: the takeover run refused it (%s)",
                          ", ".join(f"{i} -> {n}" for i, n in moves.items()), detail)
            log.error("Takeover run %d failed: %s; retrying in %.1fs", run_id, detail, delay)
            # Most runs fail because a node vanished mid-run; once the listener knows it (dead, or back), the
            # next run can succeed: retry then rather than at the end of the backoff, as CTDB's main loop would.
            if self.membership_changed.wait(delay):  # also when it happened during the run
                log.info("Takeover run %d: retrying now, a node died, came back or was banned", run_id)
            delay = min(delay * 2, self.retry_max)

    def hears_quorum(self) -> bool:
        """Whether the listener hears a quorum of voters (membership.quorum), when the nodes run with leases:
        without one (a partition leaving it in the minority) nodes on its side have no lease either - they
        take nothing - and the others cannot be reached: a takeover run would fail after changing what it
        can, and its failure would hold back the fast retakes and orders that follow the heal. Runs wait
        (logged once per wait)."""
        if not self.leases:
            return True  # no node reported a lease: nothing to lose one
        now = time.monotonic()
        with self.ears_lock:
            heard = [n for n, t in self.ears.heard.items() if now - t < self.timing.suspect_after]
        ok = quorum([LISTENER, *heard], [LISTENER, *self.secrets])
        if ok == self.quorum_heard:
            return ok
        self.quorum_heard = ok
        if ok:
            self.quorum_back = now
            log.info("The listener hears a quorum of voters again: takeover runs go on")
        else:
            log.warning("The listener hears only %s of %d voters (no quorum): takeover runs wait",
                        ", ".join([LISTENER, *sorted(heard)]), len(self.secrets) + 1)
            self.cancel_for_quorum()
        return ok

    def cancel_for_quorum(self) -> None:
        """The listener lost the quorum while a run runs: cancel the run if it has changed no host yet. It
        could reach only the listener's side of the partition, so it would fail - after up to a minute of SSH
        timeouts, holding back the retakes after the heal (chaos: a run started 2 s before a partition ran 18
        s). Its requests wait for the quorum (work)."""
        with self.order_lock:  # the run's end clears run_state under it: no cancel of a finished run
            if self.run_state is None:
                return
            said = self.runstate.read(self.run_state)
            if said["cancelled"] or not self.runstate.cancel(self.run_state):
                return
        log.warning("Takeover run %s cancelled before it changed any host (the listener lost the quorum): it "
                    "could not complete; runs wait for the quorum", self.running_run or "starting")

    def awaits_retakes(self) -> bool:
        """Whether a run should wait a moment after a partition that left the listener in the minority. The
        nodes on its side lost their leases and released their IPs; nobody moved them (no quorum, no
        orders). As their leases come back they retake them at once (fast retake) - unless a run has started
        and not gathered them yet (holds_retake), which under load took 10 s and more. So no run starts while
        some public IP held by no live node is one a retake can bring back (retakeable) and its node either
        has no lease yet (at most RETAKE_CAP after the quorum is back: under load a lease took over 3 s to
        come back) or got it back less than RETAKE_WAIT ago; nor while a node reports a retake in progress."""
        now = time.monotonic()
        since = now - self.quorum_back if self.quorum_back is not None else RETAKE_CAP
        unheld: list[str] = []
        if since < RETAKE_CAP:
            holder = self.last_run_holders()
            unheld = [ip for ip in self.retakeable(self.unheld_now())
                      if not self.has_lease(holder[ip], now)
                      or now - max(self.quorum_back or 0.0, self.lease_back.get(holder[ip], 0.0)) < RETAKE_WAIT]
            if not unheld:  # a retake asked for, not yet done: a run now would hold it back - unless refused
                with self.ears_lock:  # (a node asks again at each check: chaos waited 2.7 s for refused asks)
                    asked = sorted(set().union(*self.taking.values()))
                unheld = self.retakeable(asked)
        if unheld and not self.retakes_awaited:
            log.info("Takeover run waits up to %.1fs after the quorum came back: nodes with their leases back may "
                     "retake %s first", RETAKE_CAP, ", ".join(unheld))
        self.retakes_awaited = bool(unheld)
        return bool(unheld)

    def has_lease(self, node: str, now: float) -> bool:
        """Whether NODE's last heartbeat reported a lease that has not run out since."""
        left = self.lease_left.get(node)
        return left is not None and left[0] - (now - left[1]) > 0

    def last_run_holders(self) -> dict[str, str]:
        return {str(e.get("ip")): str(e.get("node")) for e in self.last_run.get("public_ips") or []
                if isinstance(e, dict)}

    def retakeable(self, ips: list[str]) -> list[str]:
        """Those of IPS a fast retake may bring back: the last run gave them to a live node that was not
        declared dead since and whose record is not older than the newest generation a host may have recorded
        (else its retake would be refused: CI chaos waited 8 s for such retakes after a run failed after
        changing hosts), and no order of this generation moved them (the node that took one forgets it with
        its lease: nobody retakes it)."""
        if not ips:
            return []
        generation = int(self.last_run.get("generation") or 0)
        holder = self.last_run_holders()
        declared = self.last_run.get("declared_dead") or {}
        moved = self.orders.overlay(generation)
        newest = self.generation() or 0  # a record older than that: the node refuses (protocol.retake_refused)
        with self.ears_lock:
            older = {n for n, (gen, _marked) in self.records.items() if gen < newest}
        return [ip for ip in ips if ip not in moved and self.alive.get(str(holder.get(ip)), False)
                and holder.get(ip) not in older
                and not (protocol.is_number(declared.get(holder.get(ip))) and declared[holder[ip]] >= generation)]

    def settle_orders(self) -> None:
        """Return once no fast takeover order can still be carried out (orders.py); from then on no new
        orders are issued until the run that follows has finished."""
        waited = time.monotonic()
        while not self.stopping.is_set():
            if self.fast_takeover and not self.orders.outstanding():
                # The last moment the fast paths are open: IPs dropped since (Listener.dropped) are ordered now,
                # not placed by the run's takes many seconds later. Chaos under load: a failed run left two IPs
                # on a node that then lost them and could not retake them (its record was older); back-to-back
                # runs left no moment between them for the liveness loop's order_dropped - 13.3 s unheld.
                ordering.order_dropped(self, exclude=set(self.suspected))
            with self.order_lock:
                if not self.orders.outstanding():
                    self.running_run = 0  # a run is starting
                    self.runner.gathered.clear()  # no node gathered by it yet: no retake until it is
                    with self.ears_lock:  # ... or until its snapshot of the reports pins the IPs asked for
                        self.run_pinned = None
                    if self.runner.shares_run_state:  # cancellable from now until it changes a host
                        self.run_state = str(self.state_dir / "runner" / f"runstate-{time.time_ns()}.json")
                        self.runstate.create(self.run_state)  # on disk before the run is: cancel_cut_short
                    break
            self.stopping.wait(0.02)
        if time.monotonic() - waited > 0.05:
            log.info("Takeover run waited %.2fs for fast takeover orders to settle", time.monotonic() - waited)

    def await_reports(self, timeout: float = 0.5) -> None:
        """Once the run is marked running (no fast retake or order from now on), wait until every live node
        has reported what it holds in a heartbeat made after the mark (it echoes a tick from after it): a
        node the run cannot reach keeps exactly those IPs. A node that does not report in time is pinned
        with what the records give it."""
        self.run_marked = time.monotonic()
        deadline = self.run_marked + timeout
        while time.monotonic() < deadline and not self.stopping.is_set():
            with self.ears_lock:
                missing = [n for n in self.secrets if self.alive.get(n, True) and
                           (n not in self.holds or self.holds[n][1] < self.run_marked)]
            if not missing:
                return
            self.stopping.wait(0.02)

    def extravars(self, dead: list[str], moves: dict[str, str], states: dict[str, str] | None = None,
                  pin: bool = False) -> dict[str, Any]:
        """The run's variables; PIN: they are the starting run's, whose snapshot of the reports holds_retake
        goes by (taken under the same lock as the snapshot, so no report slips between the two)."""
        asked = {node: self.asked_to_pin(node, time.monotonic()) for node in list(self.asked)} if pin else {}
        with self.ears_lock:  # only reports made after this run was marked running (fast paths closed since)
            holds = {node: list(ips) for node, (ips, tick) in self.holds.items() if tick >= self.run_marked}
            if pin:
                for node in holds:
                    holds[node] = sorted(set(holds[node]) | asked.get(node, frozenset()))
                self.run_pinned = {node: frozenset(ips) for node, ips in holds.items()}
            last = {node: set(ips) for node, (ips, _tick) in self.holds.items()}
        # a live node without such a report, if the run cannot reach it, keeps what it may hold: what it last
        # reported and what orders put on it since - no record gives it those (chaos: a double holding)
        issued = self.orders.issued_for
        overlay = self.orders.overlay(issued) if issued is not None else {}
        may_hold = {node: sorted(last.get(node, set()) | {ip for ip, n in overlay.items() if n == node})
                    for node in self.secrets if node not in holds and self.alive.get(node, True)}
        return {"pubip_dead_nodes": dead, "pubip_moveip": moves,
                "pubip_state_overrides": self.node_states() if states is None else states,
                "pubip_rebalance_nodes": sorted(self.rebalance),
                # the TCP connections each IP's holder last reported: whoever takes an IP tickles them
                "pubip_tickles": {ip: [holder, conns] for ip, (holder, conns) in self.connections.items() if conns},
                # what each node said it holds: a node the run cannot reach keeps these (pinned)
                "pubip_reported_holds": holds,
                "pubip_may_hold": {node: ips for node, ips in may_hold.items() if ips},
                # no two assignments share a generation: a changing run records a newer one than any host has
                "pubip_generation_floor": self.generation_floor(),
                **({"pubip_listener_address": self.address} if self.address else {})}

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False
            ) -> tuple[bool, int | None, str]:
        self.last_found = {}
        out = self.runner.run(run_id, dead, extravars, check)
        self.last_found = {"generation": out.generation, "plan": out.plan, "failures": out.failures,
                           "problem_nodes": out.problem_nodes}
        if out.ok and out.plan and not check:
            for move in out.plan.get("moves") or []:
                self.moved[move["ip"]] = {"from": move.get("from"), "to": move.get("to"),
                                          "generation": out.plan.get("generation"), "when": time.time()}
        if out.ok and out.plan and not check:
            self.adopt(out.plan)
        elif (out.plan and not check and out.problem_nodes and set(out.problem_nodes) <= set(self.dead_nodes())
              and {f.split(":", 1)[0] for f in out.failures[:-1]} <= set(self.dead_nodes())):
            # Only nodes now dead (quorum: their leases are gone) kept it from completing - the finish phase
            # blames only them, and every other failed task was theirs: every live host carried out its plan
            # and recorded it, so it is what fast takeover orders start from.
            log.info("Takeover run %d: only dead nodes (%s) kept it from completing; its plan stands",
                     run_id, ", ".join(out.problem_nodes))
            self.adopt(out.plan)
            self.last_found["plan_stands"] = True
        elif (out.plan and out.plan.get("changed") and not check and out.achieved
              and out.achieved.get("generation") == out.plan.get("generation")
              and isinstance(out.achieved.get("public_ips"), list)):
            # Failed after changing hosts, but its finish phase said where it left every IP (the record its hosts
            # wrote): fast takeover starts from that, with orders only to the nodes that recorded it.
            log.info("Takeover run %d failed after changing hosts; what it achieved (recorded on %s) stands until "
                     "a run completes", run_id, ", ".join(out.achieved.get("recorded_on") or []) or "no node")
            planned = {e.get("ip"): e.get("node") for e in (out.plan.get("record") or {}).get("public_ips") or []}
            untaken = ordering.untaken((out.plan.get("record") or {}).get("public_ips"), out.achieved["public_ips"])
            if untaken:
                log.warning("Takeover run %d: its takers refused %s before changing anything: held by nobody, "
                            "ordered to other nodes now", run_id, ", ".join(untaken))
                self.last_found["untaken"] = untaken  # this run's: ordered once, when it ends
            self.adopt({**out.plan, "record": {**(out.plan.get("record") or {}),
                                               "public_ips": out.achieved["public_ips"]}},
                       recorded_on=[str(n) for n in out.achieved.get("recorded_on") or []], untaken=untaken)
            # IPs it left with a holder whose release failed: if that holder's kernel lets them go after all
            # (its release went through, its answer did not come back), they are dropped (Listener.dropped)
            self.stuck = (int(out.plan.get("generation") or 0), time.monotonic(),
                          {str(e["ip"]): str(e["node"]) for e in out.achieved["public_ips"]
                           if e.get("node") is not None and planned.get(e.get("ip")) not in (None, e["node"])})
            # and IPs it kept on a node that did not record it (Listener.dropped)
            recorded = {str(n) for n in out.achieved.get("recorded_on") or []}
            self.left_unrecorded = (self.stuck[0], self.stuck[1],
                                    {str(e["ip"]): str(e["node"]) for e in out.achieved["public_ips"]
                                     if e.get("node") is not None and planned.get(e.get("ip")) == e["node"]
                                     and e["node"] not in recorded})
        elif out.plan and out.plan.get("changed") and not check and not self.changed_no_host():
            # failed after planning: some hosts may have recorded its generation
            self.last_run["planned_generation"] = max(int(out.plan.get("generation") or 0),
                                                      int(self.last_run.get("planned_generation") or 0))
            self._save_last_run()
        return out.ok, out.generation, out.detail

    def changed_no_host(self) -> bool:
        """The running run's state file says no host began a change: cancelled, or failed before its first
        release. Its generation is then on no host, and orders stay open (chaos: a run cancelled for a node's
        return counted as one that changed hosts, and held back the next death's orders until a run completed
        - 11.7 s)."""
        return bool(self.run_state) and not self.runstate.read(self.run_state)["changing"]

    def adopt(self, plan: dict[str, Any], recorded_on: list[str] | None = None, untaken: list[str] | None = None
              ) -> None:
        """Keep a completed run's plan: the status, and what a fast takeover plans from (fasttakeover.py).
        RECORDED_ON: a failed run's, the nodes that recorded it (only they take its generation's orders);
        UNTAKEN: its IPs whose takers refused them before changing anything (ordered to others)."""
        record = plan.get("record") or {}
        assignment = {e["ip"]: e.get("node") for e in record.get("public_ips") or []} if recorded_on is not None \
            else plan.get("assignment")
        with self.order_lock:  # node_died may be adding to declared_dead meanwhile
            self.last_run = {"generation": plan.get("generation"), "assignment": assignment,
                             **({"recorded_on": recorded_on} if recorded_on is not None else {}),
                             **({"untaken": untaken} if untaken else {}),
                             "nodes": record.get("nodes"), "public_ips": record.get("public_ips"),
                             "algorithm": plan.get("algorithm"), "options": plan.get("options"),
                             "allowed": plan.get("allowed"), "orders_issued_for": self.orders.issued_for,
                             "declared_dead": self.last_run.get("declared_dead") or {},
                             "planned_generation": self.last_run.get("planned_generation")}
            self._save_last_run()

    def adopt_record(self) -> None:
        """A takeover run the listener did not start (the main job by hand, an AWX job) completed: once every
        live node has recorded its generation, unmarked - so none dropped out of it - its assignment is what
        status shows and fast takeover orders start from."""
        with self.ears_lock:
            record, gen = self.newer_record, (self.newer_record or {}).get("generation")
            live = [n for n in self.secrets if self.alive.get(n, True)]
            if record is None or self.running_run is not None or not isinstance(gen, int):
                return
            if gen <= (self.generation() or 0):
                self.newer_record = None
                return
            if any(self.records.get(n) != (gen, False) for n in live):
                return
            self.newer_record = None
        try:
            public = [{"ip": str(e["ip"]), "node": e.get("node"), "interfaces": list(e.get("interfaces") or [])}
                      for e in record["public_ips"]]
        except (KeyError, TypeError):
            return
        with self.order_lock:
            previous = self.last_run
            self.last_run = {"generation": gen, "assignment": {e["ip"]: e["node"] for e in public},
                             "nodes": record["nodes"], "public_ips": public,
                             "algorithm": previous.get("algorithm"), "options": previous.get("options"),
                             "allowed": previous.get("allowed"), "orders_issued_for": self.orders.issued_for,
                             "declared_dead": previous.get("declared_dead") or {},
                             "planned_generation": previous.get("planned_generation")}
            self._save_last_run()
        log.warning("Adopted generation %d from the nodes' records: a takeover run the listener did not start "
                    "(every live node recorded it)", gen)

    # --- operations (operations.py) and what the listener shows (statusview.py) ---------------
    def operation(self, payload: dict[str, Any]) -> dict[str, Any]:
        return operations.operation(self, payload)

    def ipinfo(self, ip: str) -> dict[str, Any]:
        return operations.ipinfo(self, ip)

    def known_public_ip(self, ip: str, op: str = "moveip") -> str:
        return operations.known_public_ip(self, ip, op)

    def status(self) -> dict[str, Any]:
        return statusview.status(self)

    def where_now(self, now: float, fresh: float = 2.0) -> list[dict[str, Any]]:
        return statusview.where_now(self, now, fresh)

    def metrics(self) -> str:
        return statusview.metrics(self)

    # --- node states (nodestates.py) -------------------------------------------------------
    def bans(self) -> dict[str, float]:
        out = {}
        for node, until in self.store.overrides("ban").items():
            try:
                out[node] = float(until)
            except ValueError:
                continue
        return out

    def unhealthy(self) -> set[str]:
        return {n for n, h in self.health.items() if h.get("ok") is False and self.alive.get(n, True)}

    def node_states(self) -> dict[str, str]:
        """node -> the runtime state a takeover run gives it (enabled nodes left out)."""
        return nodestates.effective(self.store.overrides("state"), self.bans(), self.unhealthy(), time.time())

    def ban(self, node: str, seconds: float, why: str) -> None:
        self.store.set_override("ban", node, repr(time.time() + seconds))
        log.warning("Banning node %s for %gs: %s", node, seconds, why)
        self.store.add_request("listener", f"node {node} banned")
        self.membership_changed.set()  # the run that failed on it can now succeed without it: no backoff
        self.wake.set()

    def store_connections(self, node: str, conns: dict[str, Any]) -> None:
        """A node's TCP connection lists (validated: [port, client address, client port] each)."""
        import ipaddress

        for ip, entries in conns.items():
            if not isinstance(entries, list):
                continue
            good = []
            for entry in entries[:2000]:
                try:
                    port, client, cport = entry
                    ipaddress.ip_address(str(client))
                    if isinstance(port, int) and isinstance(cport, int) and 0 < port < 65536 and 0 < cport < 65536:
                        good.append([port, str(client), cport])
                except (TypeError, ValueError):
                    continue
            self.connections[str(ip)] = (node, good)
        for ip, (holder, _c) in list(self.connections.items()):
            if holder == node and ip not in conns:  # no longer held there
                del self.connections[ip]

    def replan(self, why: str) -> None:
        """The cluster changed under a run that has not changed any host yet: cancel it, so that the next
        run plans with the change now rather than after this one (runstate.py)."""
        with self.order_lock:
            if self.running_run is not None and self.run_state and self.runstate.cancel(self.run_state):
                log.info("Takeover run %s cancelled before it changed any host: %s; replanning",
                         self.running_run or "starting", why)

    def charge(self, nodes: list[str], run_id: int) -> None:
        """Ban credits for the live, unbanned nodes a failed run named; a ban when they pile up."""
        states = self.node_states()
        culprits = [n for n in nodes if n in self.secrets and self.alive.get(n, True) and states.get(n) != "banned"]
        for node in self.credits.failed(culprits):
            self.ban(node, self.ban_period, f"it kept {self.credits.limit} takeover runs in a row from completing "
                                           f"(the last: run {run_id})")

    def end_bans(self) -> None:
        """Bans end by themselves: the node is back in the next run, with its share (rebalance)."""
        ended = nodestates.expired(self.bans(), time.time())
        if ended:
            self.store.clear_overrides("ban", ended)
            self.rebalance.update(ended)
            log.warning("Ban of %s ended: takeover run to give %s back", ", ".join(ended),
                        "it its share" if len(ended) == 1 else "them their share")
            self.store.add_request("listener", f"ban of {', '.join(ended)} ended")
            self.replan(f"ban of {', '.join(ended)} ended")
            self.wake.set()

    def health_report(self, node: str, health: dict[str, Any]) -> None:
        """A node's monitor verdict, from its heartbeat: a change is a takeover run (UNHEALTHY: its IPs move)."""
        was = self.health.get(node, {}).get("ok")
        self.health[node] = {"ok": health["ok"], "hook": str(health.get("hook") or "")[:200],
                             "message": str(health.get("message") or "")[:500]}
        if (was is None and health["ok"]) or was == health["ok"]:
            return
        if health["ok"]:
            log.warning("Node %s is healthy again: takeover run to give it its share", node)
            self.rebalance.add(node)
        else:
            log.warning("Node %s is UNHEALTHY (monitor hook %s: %s): takeover run to move its IPs away", node,
                        self.health[node]["hook"] or "?", self.health[node]["message"] or "failed")
        self.store.add_request("listener", f"node {node} {'healthy' if health['ok'] else 'unhealthy'}")
        self.replan(f"node {node} is {'healthy again' if health['ok'] else 'UNHEALTHY'}")
        self.wake.set()

def _set_aside(path: Path, why: str) -> None:
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
    path.rename(aside)
    log.error("%s is corrupt (%s): moved to %s; starting without it (the start-up takeover run learns the "
              "cluster again)", path, why, aside)


def read_last_run(path: Path) -> dict[str, Any]:
    """The last completed run's plan as saved; a corrupt file is set aside, loudly, not silently ignored."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        _set_aside(path, str(exc))
        return {}
    if not isinstance(data, dict):
        _set_aside(path, "not a JSON object")
        return {}
    return data


def open_store(path: Path) -> Store:
    """The sqlite state; a corrupt file is set aside (with its WAL) and a new one started."""
    import sqlite3

    try:
        store = Store(str(path))
        store.pending()
        return store
    except sqlite3.DatabaseError as exc:
        for extra in ("-wal", "-shm"):
            Path(str(path) + extra).unlink(missing_ok=True)
        _set_aside(path, str(exc))
        return Store(str(path))


def _report(received: float, report: dict[str, Any], nodes: set[str]) -> death.Report:
    """A node's membership report, with anything malformed left out (a missing entry is never a vote)."""
    def table(key: str) -> dict[str, float]:
        raw = report.get(key)
        if not isinstance(raw, dict):
            return {}
        return {str(k): float(v) for k, v in raw.items() if k in nodes and protocol.is_number(v) and v >= 0}

    tick = report.get("tick")
    return death.Report(received, float(tick) if protocol.is_number(tick) else None, table("hears"), table("shuns"))
