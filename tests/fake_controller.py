"""Stand-ins for the controller side in watchdog tests (run inside the lab's controller namespace).

listener: verifies the watchdogs' HMAC exactly as the pubip listener must, records each request.
awx: the AWX / Automation Controller API v2 endpoints the watchdog calls (job list filtered by
status, job template launch), with its error answers; it follows AWX's documented API.

Usage: python fake_controller.py listener|awx PORT OUT [--secrets FILE] [--status CODE] [--token T]
       [--busy N] [--prefix /api/v2/]
Each request is written to OUT as a JSON line with CLOCK_MONOTONIC receive time.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "watchdog"))
from pubip import auth

ARGS = argparse.Namespace()
JOBS: list[dict] = []


def record(entry: dict) -> None:
    with open(ARGS.out, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
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
            return self.answer(ARGS.status, {"queued": ARGS.status < 300})
        if not self._authorized():
            return None
        record({"t": t, "path": self.path, "body": json.loads(body or b"{}")})
        if ARGS.status >= 300:
            return self.answer(ARGS.status, {"detail": "launch refused"})
        job = {"id": 100 + len(JOBS), "status": "pending"}
        JOBS.append(job)
        return self.answer(201, {"job": job["id"], "id": job["id"], "status": "pending"})

    def do_GET(self) -> None:
        if ARGS.mode != "awx" or not self._authorized():
            return None
        record({"t": time.monotonic(), "path": self.path})
        prefix = ARGS.prefix.rstrip("/")
        if not self.path.startswith(f"{prefix}/job_templates/{ARGS.template}/jobs/"):
            return self.answer(404, {"detail": "Not found."})
        busy = [{"id": 90 + i, "status": "running"} for i in range(ARGS.busy)] + \
            [j for j in JOBS if j["status"] in ("pending", "waiting", "running")]
        return self.answer(200, {"count": len(busy), "results": busy[:1]})

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {ARGS.token}":
            self.answer(401, {"detail": "Authentication credentials were not provided."})
            return False
        return True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["listener", "awx"])
    ap.add_argument("port", type=int)
    ap.add_argument("out")
    ap.add_argument("--secrets")
    ap.add_argument("--status", type=int, default=202)
    ap.add_argument("--token", default="")
    ap.add_argument("--template", type=int, default=7)
    ap.add_argument("--busy", type=int, default=0)
    ap.add_argument("--prefix", default="/api/v2/")
    ap.parse_args(namespace=ARGS)
    server = ThreadingHTTPServer(("0.0.0.0", ARGS.port), Handler)
    print("ready", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
