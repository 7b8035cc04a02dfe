"""`pubip listen`: the controller side of CTDB's recovery master.

Watchdogs ask for takeover runs (authenticated: per-node secret, HMAC over
node, timestamp, nonce and body); requests are queued and coalesced - however
many arrive during a run, at most one more run follows - and each caller can
learn the result of the run that covered its request. One takeover run at a
time, through ansible-runner; a failed run is retried with backoff until one
succeeds (CTDB's need_takeover_run). Heartbeats give node liveness: a node
silent for `dead_after` is dead, and a run treats it as DISCONNECTED.
State (requests, runs, liveness) lives in sqlite and survives a restart.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

from . import _collection, auth, fasttakeover, liveness
from .orders import Orders
from .store import Store
from .wdconfig import AwxBackend

log = logging.getLogger("pubip.listener")
ADMIN = "_admin"  # the secrets file's key for operations (pubip disable / enable / moveip / reloadips)
OPS = ("disable", "enable", "moveip", "reloadips")


class Rejected(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Listener:
    def __init__(self, inventory: str, secrets: dict[str, str], state_dir: str, *, dead_after: float = 1.5,
                 window: float = 30.0, max_body: int = 65536, retry_initial: float = 0.5, retry_max: float = 5.0,
                 playbook: str | None = None, ssh_timeout: int = 2, probe_port: int = 22,
                 probe_timeout: float = 0.25, fast_takeover: bool = True, awx: AwxBackend | None = None):
        self.inventory = inventory
        self.admin_secret = secrets.get(ADMIN)
        self.secrets = {k: v for k, v in secrets.items() if not k.startswith("_")}
        self.state_dir = Path(state_dir)
        (self.state_dir / "runner").mkdir(parents=True, exist_ok=True)
        self.store = Store(str(self.state_dir / "listener.sqlite"))
        self.dead_after = dead_after
        self.window = window
        self.max_body = max_body
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.playbook = playbook or str(_collection.PLAYBOOKS / "takeover_run.yml")
        self.ssh_timeout = ssh_timeout
        self.awx = awx  # launch the job template on AWX instead of running the playbook here
        self.probe_port = probe_port
        self.probe_timeout = probe_timeout
        self.fast_takeover = fast_takeover
        self.orders = Orders()
        self.order_lock = threading.Lock()  # orders are issued only while no run is running, and vice versa
        self.silent: set[str] = set()  # nodes without heartbeats whose host still answers the probe
        self.wake = threading.Event()
        self.membership = threading.Event()  # a node died or came back: a failed run is retried at once
        self.run_lock = threading.Lock()  # one ansible run at a time, real or check
        self.stopping = threading.Event()
        self.running_run: int | None = None
        self.rejections: dict[str, int] = {}
        self.last_found: dict[str, Any] = {}
        self.accepted = 0
        self.last_seen: dict[str, float] = {}
        try:
            self.assignment: dict[str, Any] = json.loads((self.state_dir / "assignment.json").read_text())
        except (OSError, ValueError):
            self.assignment = {}
        self.orders.issued_for = self.assignment.get("orders_issued_for")
        known = self.store.nodes()
        self.alive: dict[str, bool] = {n: v["alive"] for n, v in known.items() if n in secrets}
        self.peers: dict[str, str] = {n: v["peer"] for n, v in known.items() if v.get("peer")}
        if fast_takeover:
            fasttakeover.preload()  # the planner imported now, not when the first node dies
        for run_id in self.store.unfinished_runs():
            log.warning("Takeover run %d was cut short by a listener restart: redoing it", run_id)
            self.store.abandon(run_id)
            self.store.add_request("listener", f"redo of run {run_id}")
        # Like a new CTDB recovery master: start with a takeover run, to know (and enforce) the assignment.
        self.store.add_request("listener", "listener started")

    # --- authentication -----------------------------------------------------------
    def authenticate(self, headers: dict[str, str], body: bytes, path: str) -> str:
        node = headers.get(auth.NODE_HEADER, "")
        secrets = self.secrets if not path.startswith("/v1/admin") else (
            {ADMIN: self.admin_secret} if self.admin_secret else {})
        if node not in secrets:
            raise Rejected(403, f"unknown node {node!r}")
        try:
            stamp = float(headers.get(auth.TIME_HEADER, ""))
        except ValueError:
            raise Rejected(401, "missing or malformed timestamp") from None
        if abs(time.time() - stamp) > self.window:
            raise Rejected(401, f"clock skew {time.time() - stamp:+.1f}s beyond the {self.window:.0f}s window")
        if not auth.verify(secrets[node], headers, body, path):
            raise Rejected(401, f"bad signature for node {node}")
        if not self.store.use_nonce(headers.get(auth.NONCE_HEADER, ""), self.window):
            raise Rejected(401, f"replayed nonce from node {node}")
        return node

    def reject(self, peer: str, exc: Rejected) -> None:
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
        self.last_seen[node] = time.monotonic()
        if peer:
            self.peers[node] = peer
        self.store.heartbeat(node, peer)
        if node in self.silent:
            self.silent.discard(node)
            log.info("Node %s sends heartbeats again", node)
        for order in self.orders.acknowledge(node, list((payload or {}).get("done") or [])):
            res = order.result or {}
            if res.get("refused"):
                log.warning("Fast takeover order %d refused by %s: %s", order.id, node, res["refused"])
            else:
                log.info("Fast takeover order %d done by %s: took %s%s", order.id, node,
                         ", ".join(res.get("taken") or []) or "nothing",
                         f"; errors: {'; '.join(res['errors'])}" if res.get("errors") else "")
        if not self.alive.get(node, True):
            self.alive[node] = True
            self.store.set_alive(node, True)
            log.warning("Node %s is back (heartbeat): takeover run to bring it back", node)
            self.membership.set()
            self.store.add_request("listener", f"node {node} is back")
            self.wake.set()
        self.alive.setdefault(node, True)
        if not self.alive[node]:
            return []
        return [o.wire() for o in self.orders.deliver(node)]

    def wait_for(self, request_id: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            state = self.store.request(request_id) or {}
            if state.get("done") or time.monotonic() >= deadline:
                return state
            time.sleep(0.05)

    # --- liveness -------------------------------------------------------------------------
    def watch_liveness(self) -> None:
        # Watchdogs get a grace period after the listener starts to send their first heartbeat.
        start = time.monotonic() + max(5.0, self.dead_after) - self.dead_after
        probed: dict[str, float] = {}
        while not self.stopping.is_set():
            now = time.monotonic()
            for node in self.secrets:
                seen = self.last_seen.get(node, start)
                if not self.alive.get(node, True) or now - seen <= self.dead_after:
                    continue
                if now - probed.get(node, 0.0) < self.dead_after:
                    continue  # its host answered the probe lately: wait before knocking again
                peer = self.peers.get(node)
                if peer and liveness.probe(peer, self.probe_port, self.probe_timeout) == liveness.ALIVE:
                    probed[node] = time.monotonic()
                    if node not in self.silent:
                        self.silent.add(node)
                        log.warning("Node %s sent no heartbeat for %.1fs but its host %s answers: not dead "
                                    "(is its watchdog down?)", node, now - seen, peer)
                    continue
                self.node_died(node, now - seen, "its host does not answer" if peer else "no address to probe")
            self.stopping.wait(0.05)

    def node_died(self, node: str, silent_for: float, why: str) -> None:
        self.alive[node] = False
        self.silent.discard(node)
        self.store.set_alive(node, False)
        log.warning("Node %s is dead (no heartbeat for %.1fs, %s): takeover run without it", node, silent_for, why)
        if self.fast_takeover:
            self.issue_orders()
        self.membership.set()
        self.store.add_request("listener", f"node {node} is dead")
        self.wake.set()

    def issue_orders(self) -> None:
        """Tell live watchdogs to take the dead nodes' IPs now, as the verifying run will plan them."""
        with self.order_lock:
            snapshot = self.assignment
            if self.running_run is not None or not snapshot.get("public_ips"):
                log.info("No fast takeover: %s", "a takeover run is running" if self.running_run is not None
                         else "no completed takeover run to start from")
                return
            dead = self.dead_nodes()
            try:
                by_node = fasttakeover.orders(snapshot, dead)
            except Exception:  # a plan that cannot be made leaves it to the takeover run
                log.exception("No fast takeover: cannot plan it")
                return
            batch = self.orders.issue(int(snapshot.get("generation") or 0), by_node)
            if not batch and by_node:
                log.info("No fast takeover: generation %s already had its orders", snapshot.get("generation"))
            for order in batch:
                log.info("Fast takeover order %d to %s (generation %d): %s", order.id, order.node,
                         order.generation, ", ".join(f"{i['ip']} from {i['from']}" for i in order.ips))
            if batch:
                # Their owners must not put these IPs back by themselves under this generation (fast retake):
                # each heartbeat answer tells a node the generation it was given away under.
                given_away = self.assignment.setdefault("declared_dead", {})
                for order in batch:
                    for entry in order.ips:
                        given_away[entry["from"]] = order.generation
                self.assignment["orders_issued_for"] = self.orders.issued_for
                self._save_assignment()

    def _save_assignment(self) -> None:
        (self.state_dir / "assignment.json").write_text(json.dumps(self.assignment))

    def dead_nodes(self) -> list[str]:
        return sorted(n for n, ok in self.alive.items() if not ok)

    # --- runs ---------------------------------------------------------------------------------
    def work(self) -> None:
        delay = self.retry_initial
        while not self.stopping.is_set():
            pending = self.store.pending()
            if not pending:
                self.wake.wait(1.0)
                self.wake.clear()
                continue
            self.settle_orders()
            pending = self.store.pending()  # with what arrived while orders settled
            dead = self.dead_nodes()
            run_id = self.store.start_run(dead)
            self.store.cover(pending, run_id)  # everything queued so far: later requests wait for the next run
            self.running_run = run_id
            moves = self.store.overrides("moveip")
            try:
                with self.run_lock:
                    ok, generation, detail = self.run(run_id, dead, self.extravars(dead, moves))
                if ok and moves:
                    self.store.clear_overrides("moveip", list(moves))  # one-shot, like CTDB's moveip
            except Exception as exc:  # a broken run must not stop the queue
                log.exception("Takeover run %d could not run", run_id)
                ok, generation, detail = False, None, f"{type(exc).__name__}: {exc}"
            self.running_run = None
            self.store.finish_run(run_id, ok, generation, detail)
            if ok:
                delay = self.retry_initial
                continue
            self.store.uncover(run_id)
            log.error("Takeover run %d failed: %s; retrying in %.1fs", run_id, detail, delay)
            # Most runs fail because a node vanished mid-run; once the listener knows it (dead, or back), the
            # next run can succeed: retry then rather than at the end of the backoff, as CTDB's main loop would.
            self.membership.clear()
            if self.membership.wait(delay):
                log.info("Takeover run %d: retrying now, a node died or came back", run_id)
            delay = min(delay * 2, self.retry_max)

    def settle_orders(self) -> None:
        """Return once no fast takeover order can still be carried out (orders.py); from then on no new
        orders are issued until the run that follows has finished."""
        waited = time.monotonic()
        while not self.stopping.is_set():
            with self.order_lock:
                if not self.orders.outstanding():
                    self.running_run = 0  # a run is starting
                    break
            self.stopping.wait(0.02)
        if time.monotonic() - waited > 0.05:
            log.info("Takeover run waited %.2fs for fast takeover orders to settle", time.monotonic() - waited)

    def extravars(self, dead: list[str], moves: dict[str, str], states: dict[str, str] | None = None
                  ) -> dict[str, Any]:
        return {"pubip_dead_nodes": dead, "pubip_moveip": moves,
                "pubip_state_overrides": self.store.overrides("state") if states is None else states}

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False
            ) -> tuple[bool, int | None, str]:
        if self.awx is not None:
            return self.run_awx(run_id, dead, extravars, check)
        return self.run_playbook(run_id, dead, extravars, check)

    def adopt(self, plan: dict[str, Any]) -> None:
        """Keep a completed run's plan: the status, and what a fast takeover plans from (fasttakeover.py)."""
        record = plan.get("record") or {}
        self.assignment = {"generation": plan.get("generation"), "assignment": plan.get("assignment"),
                           "nodes": record.get("nodes"), "public_ips": record.get("public_ips"),
                           "algorithm": plan.get("algorithm"), "options": plan.get("options"),
                           "allowed": plan.get("allowed"), "orders_issued_for": self.orders.issued_for,
                           "declared_dead": self.assignment.get("declared_dead") or {}}
        self._save_assignment()

    def run_awx(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False
                ) -> tuple[bool, int | None, str]:
        """The takeover run as a job of the AWX job template: launch it, follow it, read its plan."""
        from .awx import AwxClient, AwxError

        assert self.awx is not None
        awx = self.awx
        client = AwxClient(awx.url, awx.token, awx.api_prefix, awx.timeout, awx.verify_tls)
        started = time.monotonic()
        self.last_found = {"generation": None, "failures": []}
        try:
            other = client.active_job(awx.job_template)
            if other and other.get("id"):  # one takeover run at a time, whoever launched the other
                log.info("Takeover run %d: waiting for AWX job %s (%s) of template %d", run_id, other["id"],
                         other.get("status"), awx.job_template)
                client.wait(int(other["id"]), 3600, cancelled=self.stopping.is_set)
            job = client.launch(awx.job_template, extravars, check=check)
            log.info("Takeover run %d%s: AWX job %d of template %d launched%s", run_id, " (check)" if check else "",
                     job, awx.job_template, f" (dead: {', '.join(dead)})" if dead else "")
            result = client.wait(job, 3600, on_status=lambda st: log.info("Takeover run %d: AWX job %d %s",
                                                                           run_id, job, st),
                                 cancelled=self.stopping.is_set)
            ok = result.get("status") == "successful"
            plan = client.plan(job)
        except AwxError as exc:
            log.info("Takeover run %d FAILED in %.2fs: %s", run_id, time.monotonic() - started, exc)
            return False, None, f"AWX: {exc}"
        generation = plan.get("generation") if plan else None
        self.last_found = {"generation": generation, "plan": plan, "failures": []}
        if ok and plan and not check:
            self.adopt(plan)
        log.info("Takeover run %d %s in %.2fs (AWX job %d, generation %s)", run_id, "finished" if ok else "FAILED",
                 time.monotonic() - started, job, generation)
        return ok, generation, "" if ok else f"AWX job {job} {result.get('status')}: {result.get('job_explanation')}"

    def run_playbook(self, run_id: int, dead: list[str], extravars: dict[str, Any],
                     check: bool = False) -> tuple[bool, int | None, str]:
        import ansible_runner

        started = time.monotonic()
        found: dict[str, Any] = {"generation": None, "failures": []}

        def on_event(event: dict[str, Any]) -> bool:
            data = event.get("event_data") or {}
            kind = event.get("event")
            if kind == "playbook_on_task_start":
                task = data.get("task", "").split(" : ")[-1]
                if task != found.get("task"):  # one progress line per phase
                    log.info("Takeover run %d: %s", run_id, task)
                found["task"] = task
            elif kind == "runner_on_ok":
                res = data.get("res") or {}
                if "generation" in res:
                    found["generation"] = res["generation"]
                plan = (res.get("ansible_facts") or {}).get("pubip_plan")
                if plan:
                    if found["generation"] is None:
                        found["generation"] = plan.get("generation")
                    found["plan"] = plan
            elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
                res = data.get("res") or {}
                found["failures"].append(f"{data.get('host')}: {res.get('msg', kind)}")
            return True

        log.info("Takeover run %d started%s", run_id, f" (dead: {', '.join(dead)})" if dead else "")
        bin_dir = str(Path(sys.executable).parent)
        envvars = {
            "ANSIBLE_CONFIG": str(_collection.ANSIBLE_CFG),
            "ANSIBLE_COLLECTIONS_PATH": str(_collection.COLLECTIONS),
            "ANSIBLE_TIMEOUT": str(self.ssh_timeout),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        # ansible-runner keeps env/ files (cmdline, extravars) between runs: a check run's --check would
        # stick to the next real run. Every run starts from a clean env/.
        shutil.rmtree(self.state_dir / "runner" / "env", ignore_errors=True)
        runner = ansible_runner.run(
            private_data_dir=str(self.state_dir / "runner"), playbook=self.playbook, inventory=self.inventory,
            extravars=extravars, envvars=envvars, quiet=True, event_handler=on_event,
            cmdline="--check --diff" if check else None,
            cancel_callback=lambda: self.stopping.is_set(), ident=f"run{run_id}-{int(time.time())}",
            rotate_artifacts=10)
        ok = runner.status == "successful" and runner.rc == 0
        self.last_found = found
        if ok and found.get("plan") and not check:
            self.adopt(found["plan"])
        took = time.monotonic() - started
        detail = "; ".join(found["failures"]) or f"{runner.status} (rc {runner.rc})"
        log.info("Takeover run %d %s in %.2fs (generation %s)", run_id, "finished" if ok else "FAILED", took,
                 found["generation"])
        return ok, found["generation"], detail if not ok else ""

    # --- operations ----------------------------------------------------------------------
    def operation(self, payload: dict[str, Any]) -> dict[str, Any]:
        """pubip disable / enable / moveip / reloadips: a takeover run under the hood; with check, a preview."""
        op = payload.get("op")
        if op not in OPS:
            raise Rejected(400, f"unknown operation {op!r}: use one of {', '.join(OPS)}")
        node, ip = str(payload.get("node") or ""), str(payload.get("ip") or "")
        if op in ("disable", "enable", "moveip") and node not in self.secrets:
            raise Rejected(400, f"{op}: {node!r} is not a node of this cluster")
        if op == "moveip" and not ip:
            raise Rejected(400, "moveip needs an ip")
        states = dict(self.store.overrides("state"))
        moves = dict(self.store.overrides("moveip"))
        if op == "disable":
            states[node] = "disabled"
        elif op == "enable":
            states.pop(node, None)
        elif op == "moveip":
            moves[ip] = node
        if payload.get("check"):
            with self.run_lock:
                ok, _gen, detail = self.run(0, self.dead_nodes(), self.extravars(self.dead_nodes(), moves, states),
                                            check=True)
            plan = self.last_found.get("plan") or {}
            return {"op": op, "check": True, "success": ok, "moves": plan.get("moves", []),
                    "summary": plan.get("summary", ""), "detail": detail}
        if op == "disable":
            self.store.set_override("state", node, "disabled")
        elif op == "enable":
            self.store.set_override("state", node, None)
        elif op == "moveip":
            self.store.set_override("moveip", ip, node)
        log.info("Operation %s%s%s: takeover run", op, f" {ip}" if ip else "", f" {node}" if node else "")
        request_id = self.store.add_request(ADMIN, f"pubip {op}")
        self.wake.set()
        result = self.wait_for(request_id, 600)
        plan = self.last_found.get("plan") or {}
        return {"op": op, "check": False, **result, "moves": plan.get("moves", []),
                "summary": plan.get("summary", "")}

    # --- status -----------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        nodes = {}
        known = self.assignment.get("nodes") or {}
        for node in sorted(self.secrets):
            seen = self.last_seen.get(node)
            nodes[node] = {"alive": self.alive.get(node, True), "pnn": (known.get(node) or {}).get("pnn"),
                           "state": (known.get(node) or {}).get("state"),
                           "last_heartbeat_ago": round(now - seen, 3) if seen is not None else None}
        public = [{"ip": ip, "node": node} for ip, node in (self.assignment.get("assignment") or {}).items()]
        return {"nodes": nodes, "generation": self.assignment.get("generation"), "public_ips": public,
                "pending_requests": len(self.store.pending()), "running": self.running_run,
                "runs": self.store.last_runs(5), "accepted_requests": self.accepted, "rejections": self.rejections,
                "fast_takeover_orders": self.orders.recent()}

    def metrics(self) -> str:
        st = self.status()
        lines = [
            "# TYPE pubip_listener_requests_accepted_total counter",
            f"pubip_listener_requests_accepted_total {self.accepted}",
            "# TYPE pubip_listener_rejections_total counter",
            *[f'pubip_listener_rejections_total{{reason="{k}"}} {v}' for k, v in sorted(self.rejections.items())],
            "# TYPE pubip_listener_runs_total counter",
            f"pubip_listener_runs_total {self.store.count_runs()}",
            "# TYPE pubip_listener_nodes_alive gauge",
            f"pubip_listener_nodes_alive {sum(1 for n in st['nodes'].values() if n['alive'])}",
            "# TYPE pubip_listener_pending_requests gauge",
            f"pubip_listener_pending_requests {st['pending_requests']}",
        ]
        last = next((r for r in st["runs"] if r["duration"] is not None), None)
        if last:
            lines += ["# TYPE pubip_listener_last_run_seconds gauge",
                      f"pubip_listener_last_run_seconds {last['duration']:.3f}"]
        return "\n".join(lines) + "\n"

    # --- serving ---------------------------------------------------------------------------
    def serve(self, bind: str, port: int) -> None:
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def send(self, code: int, body: Any, ctype: str = "application/json") -> None:
                raw = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                if path == "/v1/status":
                    return self.send(200, listener.status())
                if path == "/metrics":
                    return self.send(200, listener.metrics(), "text/plain; version=0.0.4")
                return self.send(404, {"error": "not found"})

            def do_POST(self) -> None:
                url = urlparse(self.path)
                peer = self.client_address[0]
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > listener.max_body:
                        raise Rejected(413, f"body of {length} bytes exceeds {listener.max_body}")
                    body = self.rfile.read(length)
                    if url.path not in ("/v1/takeover-run", "/v1/heartbeat", "/v1/admin"):
                        return self.send(404, {"error": "not found"})
                    node = listener.authenticate(dict(self.headers.items()), body, url.path)
                    payload = json.loads(body or b"{}")
                    if not isinstance(payload, dict):
                        raise Rejected(400, "body is not a JSON object")
                except Rejected as exc:
                    listener.reject(peer, exc)
                    return self.send(exc.code, {"error": exc.reason})
                except (ValueError, json.JSONDecodeError):
                    listener.reject(peer, Rejected(400, "malformed request"))
                    return self.send(400, {"error": "malformed request"})
                if url.path == "/v1/heartbeat":
                    signed = {"orders": listener.heartbeat(node, peer, payload),
                              "declared_dead": (listener.assignment.get("declared_dead") or {}).get(node),
                              "running": listener.running_run is not None,
                              "generation": listener.assignment.get("generation")}
                    # Signed: a watchdog acts on orders only with the listener's signature over them.
                    sig = auth.answer_signature(listener.secrets[node], dict(self.headers.items()), url.path,
                                                json.dumps(signed, sort_keys=True).encode())
                    return self.send(200, {"ok": True, **signed, "signature": sig})
                if url.path == "/v1/admin":
                    try:
                        return self.send(200, listener.operation(payload))
                    except Rejected as exc:
                        listener.reject(peer, exc)
                        return self.send(exc.code, {"error": exc.reason})
                listener.heartbeat(node, peer)
                request_id = listener.takeover_request(node, payload)
                wait = float((parse_qs(url.query).get("wait") or ["0"])[0])
                if wait > 0:
                    return self.send(200, listener.wait_for(request_id, min(wait, 600.0)))
                return self.send(202, {"request": request_id, "queued": True})

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256  # a whole cluster's watchdogs may call at once

        server = Server((bind, port), Handler)
        threading.Thread(target=self.work, name="pubip-runs", daemon=True).start()
        threading.Thread(target=self.watch_liveness, name="pubip-liveness", daemon=True).start()
        log.info("Listener on %s:%d for %d nodes; inventory %s", bind, port, len(self.secrets), self.inventory)
        try:
            server.serve_forever(poll_interval=0.2)
        finally:
            self.stopping.set()
            server.server_close()


def main(args: Any) -> int:
    import signal

    handler: logging.Handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s pubip-listener[%(process)d]: %(levelname)s %(message)s"))
    logging.getLogger("pubip").addHandler(handler)
    logging.getLogger("pubip").setLevel(logging.INFO)
    secrets = json.loads(Path(args.secrets).read_text())
    awx = None
    if args.backend == "awx":
        from .wdconfig import read_secret

        if not (args.awx_url and args.awx_job_template and args.awx_token_file):
            raise SystemExit("pubip listen: --backend awx needs --awx-url, --awx-job-template and --awx-token-file")
        awx = AwxBackend(url=args.awx_url.rstrip("/"), job_template=args.awx_job_template,
                         token=read_secret(args.awx_token_file, "AWX token"), api_prefix=args.awx_api_prefix,
                         verify_tls=not args.awx_insecure)
    listener = Listener(args.inventory, secrets, args.state_dir, dead_after=args.dead_after,
                        probe_port=args.probe_port, fast_takeover=not args.no_fast_takeover, awx=awx)

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        listener.serve(args.bind, args.port)
    except KeyboardInterrupt:
        log.info("Listener stopping")
    return 0
