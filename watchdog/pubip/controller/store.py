"""The listener's state, kept in sqlite so that it survives a restart: requests, runs, node liveness."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    node TEXT NOT NULL,
    received REAL NOT NULL,
    reason TEXT NOT NULL,
    run_id INTEGER             -- the run that covers it; NULL while pending
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started REAL NOT NULL,
    finished REAL,
    success INTEGER,
    generation INTEGER,
    dead TEXT NOT NULL DEFAULT '[]',
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY,
    last_seen REAL,
    alive INTEGER NOT NULL DEFAULT 1,
    peer TEXT                  -- the address its heartbeats come from: where a liveness probe goes
);
CREATE TABLE IF NOT EXISTS overrides (
    kind TEXT NOT NULL,         -- state (node -> enabled/disabled) or moveip (ip -> node, one-shot)
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS nonces_seen ON nonces (seen);
"""

# Expired nonces are deleted at most this often: every request (5 heartbeats a second per node) would scan them.
NONCE_SWEEP = 1.0


class Store:
    def __init__(self, path: str):
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        # No fsync per commit (heartbeats and nonces commit several times a second per node); WAL stays consistent
        # after a crash, and a power loss can lose only the last commits: requests, liveness, nonces. Nothing the
        # one-holder rules rest on is here - generations come from the last run's file and the nodes' records.
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        self.lock = threading.Lock()
        self.nonces_swept = 0.0

    def _q(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    # --- requests ---------------------------------------------------------------
    def add_request(self, node: str, reason: str) -> int:
        with self.lock:
            cur = self.db.execute("INSERT INTO requests (node, received, reason) VALUES (?, ?, ?)",
                                  (node, time.time(), reason))
            return int(cur.lastrowid or 0)

    def pending(self) -> list[int]:
        return [r[0] for r in self._q("SELECT id FROM requests WHERE run_id IS NULL ORDER BY id")]

    def cover(self, request_ids: list[int], run_id: int) -> None:
        with self.lock:
            self.db.executemany("UPDATE requests SET run_id = ? WHERE id = ?", [(run_id, r) for r in request_ids])

    def uncover(self, run_id: int) -> None:
        """A run that did not finish covers nothing: its requests are pending again."""
        with self.lock:
            self.db.execute("UPDATE requests SET run_id = NULL WHERE run_id = ?", (run_id,))

    def request(self, request_id: int) -> dict[str, Any] | None:
        rows = self._q("SELECT r.id, r.node, r.run_id, u.finished, u.success, u.generation, u.started "
                       "FROM requests r LEFT JOIN runs u ON u.id = r.run_id WHERE r.id = ?", (request_id,))
        if not rows:
            return None
        rid, node, run_id, finished, success, generation, started = rows[0]
        done = finished is not None and bool(success)
        return {"request": rid, "node": node, "run": run_id, "done": done, "success": bool(success) if
                finished is not None else None, "generation": generation,
                "duration": (finished - started) if finished is not None else None}

    def count_runs(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM runs")[0][0])

    # --- runs ---------------------------------------------------------------------
    def start_run(self, dead: list[str]) -> int:
        with self.lock:
            cur = self.db.execute("INSERT INTO runs (started, dead) VALUES (?, ?)", (time.time(), json.dumps(dead)))
            return int(cur.lastrowid or 0)

    def finish_run(self, run_id: int, success: bool, generation: int | None, detail: str) -> None:
        with self.lock:
            self.db.execute("UPDATE runs SET finished = ?, success = ?, generation = ?, detail = ? WHERE id = ?",
                            (time.time(), int(success), generation, detail[-2000:], run_id))

    def unfinished_runs(self) -> list[int]:
        return [r[0] for r in self._q("SELECT id FROM runs WHERE finished IS NULL")]

    def abandon(self, run_id: int) -> None:
        self.uncover(run_id)
        self.finish_run(run_id, False, None, "listener stopped during the run")

    def last_runs(self, n: int = 5) -> list[dict[str, Any]]:
        rows = self._q("SELECT id, started, finished, success, generation, dead, detail FROM runs "
                       "ORDER BY id DESC LIMIT ?", (n,))
        return [{"run": r[0], "started": r[1], "finished": r[2], "success": None if r[3] is None else bool(r[3]),
                 "generation": r[4], "duration": (r[2] - r[1]) if r[2] else None, "dead": json.loads(r[5]),
                 "detail": r[6]} for r in rows]

    # --- nodes ------------------------------------------------------------------------
    def heartbeat(self, node: str, peer: str | None = None) -> None:
        with self.lock:
            self.db.execute("INSERT INTO nodes (name, last_seen, alive, peer) VALUES (?, ?, 1, ?) "
                            "ON CONFLICT(name) DO UPDATE SET last_seen = excluded.last_seen, "
                            "peer = coalesce(excluded.peer, peer)", (node, time.time(), peer))

    def set_alive(self, node: str, alive: bool) -> None:
        with self.lock:
            self.db.execute("INSERT INTO nodes (name, alive) VALUES (?, ?) ON CONFLICT(name) "
                            "DO UPDATE SET alive = excluded.alive", (node, int(alive)))

    def nodes(self) -> dict[str, dict[str, Any]]:
        return {r[0]: {"last_seen": r[1], "alive": bool(r[2]), "peer": r[3]} for r in
                self._q("SELECT name, last_seen, alive, peer FROM nodes ORDER BY name")}

    # --- operations (pubip disable / enable / moveip) ---------------------------------
    def overrides(self, kind: str) -> dict[str, str]:
        return {k: v for k, v in self._q("SELECT key, value FROM overrides WHERE kind = ?", (kind,))}

    def set_override(self, kind: str, key: str, value: str | None) -> None:
        with self.lock:
            if value is None:
                self.db.execute("DELETE FROM overrides WHERE kind = ? AND key = ?", (kind, key))
            else:
                self.db.execute("INSERT INTO overrides (kind, key, value) VALUES (?, ?, ?) ON CONFLICT(kind, key) "
                                "DO UPDATE SET value = excluded.value", (kind, key, value))

    def clear_overrides(self, kind: str, keys: list[str]) -> None:
        with self.lock:
            self.db.executemany("DELETE FROM overrides WHERE kind = ? AND key = ?", [(kind, k) for k in keys])

    # --- replay protection ------------------------------------------------------------
    def use_nonce(self, nonce: str, window: float) -> bool:
        """False when NONCE was seen within the window (a replay)."""
        now = time.time()
        with self.lock:
            if abs(now - self.nonces_swept) >= NONCE_SWEEP:
                self.db.execute("DELETE FROM nonces WHERE seen < ?", (now - 2 * window,))
                self.nonces_swept = now
            try:
                self.db.execute("INSERT INTO nonces (nonce, seen) VALUES (?, ?)", (nonce, now))
            except sqlite3.IntegrityError:
                return False
        return True
