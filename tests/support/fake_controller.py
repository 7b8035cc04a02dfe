"""Stand-ins for the controller side in watchdog tests (run inside the lab's controller namespace).

listener: verifies the watchdogs' HMAC exactly as the pubip listener must, records each request.
webhook: an Event-Driven Ansible ansible.eda.webhook source with a token: Bearer checked, body recorded.
awx: the AWX / Automation Controller API v2 endpoints the watchdog and the listener call (job list
filtered by status, job template launch, job detail, job events), with its error answers; it
follows AWX's documented API. With --run-playbook a launched job really runs the takeover run
(ansible-runner, the lab inventory from the environment) and its events are served as job events.

Usage: python fake_controller.py listener|awx|webhook PORT OUT [--secrets FILE] [--status CODE] [--token T]
       [--busy N] [--prefix /api/v2/] [--fail-first N --fail-code CODE] [--run-playbook]
       [--job-seconds S]
Each request is written to OUT as a JSON line with CLOCK_MONOTONIC receive time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "watchdog"))
from pubip import protocol as auth

ARGS = argparse.Namespace()
JOBS: dict[int, dict] = {}
LAUNCHES: list[float] = []
LOCK = threading.Lock()
ROOT = Path(__file__).resolve().parents[2]


def public(job: dict) -> dict:
    return {k: v for k, v in job.items() if k != "events"}


def run_job(job: dict, launch: dict) -> None:
    """What AWX does with a launched job: pending, running, then the playbook's outcome."""
    try:
        _run_job(job, launch)
    except Exception as exc:  # AWX's "error" status: the job could not run at all
        job.update(status="error", failed=True, job_explanation=f"{type(exc).__name__}: {exc}")


def _run_job(job: dict, launch: dict) -> None:
    time.sleep(0.1)
    job["status"] = "running"
    if not ARGS.run_playbook:
        time.sleep(ARGS.job_seconds)
        job["status"] = "successful"
        return
    import ansible_runner

    def keep(event: dict) -> bool:
        data = event.get("event_data") or {}
        job["events"].append({"event": event.get("event"), "task": data.get("task"),
                              "event_data": {"host": data.get("host"), "res": data.get("res")}})
        return True

    private = Path(ARGS.out).parent / f"fake-awx-job{job['id']}"
    private.mkdir(parents=True, exist_ok=True)
    runner = ansible_runner.run(
        private_data_dir=str(private), playbook=str(ROOT / "playbooks/takeover_run.yml"),
        inventory=os.environ["ANSIBLE_INVENTORY"], extravars=launch.get("extra_vars") or {}, quiet=True,
        event_handler=keep, cmdline="--check --diff" if launch.get("job_type") == "check" else None,
        envvars={"ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"), "PATH": os.environ.get("PATH", "")})
    ok = runner.status == "successful" and runner.rc == 0
    job.update(status="successful" if ok else "failed", failed=not ok,
               job_explanation="" if ok else f"playbook {runner.status} (rc {runner.rc})")


def record(entry: dict) -> None:
    with open(ARGS.out, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    # as the listener's (pubip/controller/http.py): kept connections, each answer in one write
    protocol_version = "HTTP/1.1"
    wbufsize = -1
    timeout = 10.0

    def log_message(self, *args: object) -> None:
        pass

    def answer(self, code: int, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        t = time.monotonic()
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if ARGS.mode == "listener":
            secrets = json.loads(Path(ARGS.secrets).read_text())
            node = self.headers.get(auth.NODE_HEADER, "")
            ok = node in secrets and auth.verify(secrets[node], dict(self.headers.items()), body, self.path)
            record({"t": t, "path": self.path, "node": node, "verified": ok, "body": json.loads(body or b"{}")})
            if not ok:
                return self.answer(401, {"error": "bad signature"})
            if self.path == "/v1/heartbeat":  # signed, as the listener answers: no orders, never declared dead
                part: dict[str, Any] = auth.HeartbeatAnswer(lease_ack=True, tick=time.monotonic()).wire()
                sig = auth.answer_signature(secrets[node], dict(self.headers.items()), self.path,
                                            json.dumps(part, sort_keys=True).encode())
                return self.answer(200, {"ok": True, **part, "signature": sig})
            return self.answer(ARGS.status, {"queued": ARGS.status < 300})
        if not self._authorized():
            return None
        record({"t": t, "path": self.path, "body": json.loads(body or b"{}")})
        if ARGS.mode == "webhook":  # ansible.eda.webhook answers 200 with nothing to say
            return self.answer(200, {})
        prefix = ARGS.prefix.rstrip("/")
        if self.path.split("?")[0] != f"{prefix}/job_templates/{ARGS.template}/launch/":
            return self.answer(404, {"detail": "Not found."})
        LAUNCHES.append(t)
        if ARGS.status >= 300:
            return self.answer(ARGS.status, {"detail": "launch refused"})
        if len(LAUNCHES) <= ARGS.fail_first:
            return self.answer(ARGS.fail_code, {"detail": f"launch refused ({ARGS.fail_code})"})
        data = json.loads(body or b"{}")
        with LOCK:
            job = {"id": 100 + len(JOBS), "status": "pending", "failed": False, "job_explanation": "",
                   "job_type": data.get("job_type", "run"), "extra_vars": json.dumps(data.get("extra_vars") or {}),
                   "events": []}
            JOBS[job["id"]] = job
        threading.Thread(target=run_job, args=(job, data), daemon=True).start()
        return self.answer(201, {"job": job["id"], "id": job["id"], "status": "pending", "ignored_fields": {}})

    def do_GET(self) -> None:
        if ARGS.mode != "awx" or not self._authorized():
            return None
        record({"t": time.monotonic(), "path": self.path})
        prefix = ARGS.prefix.rstrip("/")
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == f"{prefix}/job_templates/{ARGS.template}/jobs/":
            wanted = (query.get("status__in") or [""])[0].split(",")
            with LOCK:
                busy = [{"id": 90 + i, "status": "running"} for i in range(ARGS.busy)] + \
                    [public(j) for j in sorted(JOBS.values(), key=lambda j: -j["id"]) if j["status"] in wanted]
            return self.answer(200, {"count": len(busy), "results": busy[:1]})
        parts = url.path[len(prefix):].strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "jobs" and parts[1].isdigit() and int(parts[1]) in JOBS:
            job = JOBS[int(parts[1])]
            if len(parts) == 2:
                return self.answer(200, public(job))
            if parts[2:] == ["job_events"]:
                filters = {k: v[0] for k, v in query.items() if k not in ("page_size", "order_by", "page")}
                events = [e for e in job["events"] if all(e.get(k) == v for k, v in filters.items())]
                return self.answer(200, {"count": len(events), "results": events})
        return self.answer(404, {"detail": "Not found."})

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {ARGS.token}":
            self.answer(401, {"detail": "Authentication credentials were not provided."})
            return False
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["listener", "awx", "webhook"])
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("--secrets")
    ap.add_argument("--status", type=int, default=202)
    ap.add_argument("--token", default="")
    ap.add_argument("--template", type=int, default=7)
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument("--prefix", default="/api/v2/")
    ap.add_argument("--fail-first", type=int, default=0, help="refuse the first N launches with --fail-code")
    ap.add_argument("--fail-code", type=int, default=503)
    ap.add_argument("--run-playbook", action="store_true", help="a job really runs the takeover run")
    ap.add_argument("--job-seconds", type=float, default=0.5, help="without --run-playbook: how long a job runs")
    ap.parse_args(namespace=ARGS)
    server = ThreadingHTTPServer(("0.0.0.0", ARGS.port), Handler)
    print("ready", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
