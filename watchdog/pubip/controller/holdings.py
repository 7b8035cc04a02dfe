"""What the nodes' heartbeats say: the public IPs each holds (and since which listener tick), what its kernel
holds, its record, its lease, its start-up grace, its TCP connections, the retakes it asked for - and the
starting run's snapshot of those reports (the pin). The facts only; their meaning is decided elsewhere.
Its lock is a leaf: held only inside these methods.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from .. import protocol
from ..membership import Timing
from . import death


class Holdings:
    def __init__(self, nodes: list[str], timing: Timing, clock: Callable[[], float] = time.monotonic) -> None:
        self._nodes = set(nodes)
        self._timing = timing
        self._clock = clock
        self._lock = threading.Lock()
        self._reports: dict[str, death.Report] = {}  # node -> what its last heartbeat said of its peers
        self._leases: dict[str, float] = {}  # node -> the lease length it runs with
        self._holds: dict[str, tuple[list[str], float]] = {}  # node -> (public IPs it holds, the tick it echoed)
        self._held: dict[str, list[str]] = {}  # node -> what its kernel held at its latest heartbeat (no more)
        self._taking: dict[str, set[str]] = {}  # node -> IPs it reported held while retaking them
        self._lease_left: dict[str, tuple[float, float] | None] = {}  # node -> (lease left, when it said so)
        self._lease_back: dict[str, float] = {}  # node -> when a heartbeat last showed its lease back
        self._records: dict[str, tuple[int, bool]] = {}  # node -> (its record's generation, marked by a run)
        self._marked_by: dict[str, str | None] = {}  # node -> the run whose mark its record carries
        self._newer_record: dict[str, Any] | None = None  # a whole record newer than the listener knew
        self._grace_until: dict[str, float] = {}  # node -> until when its watchdog may hold IPs without a lease
        self._longest_grace: dict[str, float] = {}  # node -> the longest start-up grace its watchdog announced
        # node -> (IPs it asked to retake, its record's generation, when): refused only because the starting run
        # had not gathered it
        self._asked: dict[str, tuple[frozenset[str], int, float]] = {}
        self._pinned: dict[str, frozenset[str]] | None = None  # the starting run's snapshot of the reports
        self._connections: dict[str, tuple[str, list[list[Any]]]] = {}  # public IP -> (node, its TCP connections)
        self._last_seen: dict[str, float] = {}

    # --- a heartbeat's report -------------------------------------------------------------------------------
    def report(self, node: str, beat: protocol.Heartbeat) -> None:
        now = self._clock()
        m = beat.membership
        with self._lock:
            self._last_seen[node] = now
            if m is not None:
                self._reports[node] = death.Report(now, m.tick, {k: v for k, v in m.hears.items() if k in self._nodes},
                                                   {k: v for k, v in m.shuns.items() if k in self._nodes})
                if m.lease is not None:
                    self._leases[node] = m.lease
                if beat.holds is not None and m.tick is not None:
                    self._holds[node] = (sorted(set(beat.holds)), m.tick)
                    self._held[node] = sorted(set(beat.held if beat.held is not None else beat.holds))
                    self._taking[node] = set(beat.taking)
                if m.lease_left is not None and m.lease_left > 0 and not self._has_lease(node, now):
                    self._lease_back[node] = now
                self._lease_left[node] = (m.lease_left, now) if m.lease_left is not None else None
                if m.grace is not None and 0 < m.grace <= 3600:
                    self._in_grace(node, now + m.grace * (1 + self._timing.drift))
                    self._longest_grace[node] = max(self._longest_grace.get(node, 0.0), m.grace)
            if beat.connections is not None:
                self._store_connections(node, beat.connections)
            record = beat.record
            if record is not None:
                self._records[node] = (record.generation, record.marked)
                self._marked_by[node] = record.run_id if record.marked and record.run_id else None
                if record.public_ips is not None and record.nodes is not None:
                    self._newer_record = asdict(record)

    def _store_connections(self, node: str, conns: dict[str, Any]) -> None:
        """A node's TCP connection lists (validated: [port, client address, client port] each)."""
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
            self._connections[str(ip)] = (node, good)
        for ip, (holder, _c) in list(self._connections.items()):
            if holder == node and ip not in conns:  # no longer held there
                del self._connections[ip]

    def drop_refused(self, node: str, tick: Any, holds: list[Any], drop: set[str]) -> None:
        """A retake refused: the IPs NODE reported held only because it was retaking them are not held - if its
        stored report is still the heartbeat's that said so."""
        with self._lock:
            stored = self._holds.get(node)
            if stored is not None and stored[1] == tick and set(stored[0]) == {str(ip)[:64] for ip in holds}:
                self._holds[node] = ([ip for ip in stored[0] if ip not in drop], stored[1])

    # --- what the reports say ---------------------------------------------------------------------------------
    def timing(self) -> Timing:
        """The listener's timing, with the longest lease any node runs with: D must cover it."""
        with self._lock:
            return self._timing_now()

    def _timing_now(self) -> Timing:
        longest = max([self._timing.lease, *self._leases.values()])
        return self._timing if longest == self._timing.lease else Timing(lease=longest)

    def failover(self) -> bool:
        """Whether failover is on: every node heard so far runs with a lease (and one was heard). Without leases
        no node is ever declared dead: a silent node's IPs never move."""
        with self._lock:
            return bool(self._leases) and all(lease > 0 for lease in self._leases.values())

    def leases_on(self) -> bool:
        """Whether any node reported running with a lease."""
        with self._lock:
            return bool(self._leases)

    def reports(self) -> dict[str, death.Report]:
        with self._lock:
            return dict(self._reports)

    def report_of(self, node: str) -> death.Report | None:
        with self._lock:
            return self._reports.get(node)

    def has_lease(self, node: str, now: float | None = None) -> bool:
        """Whether NODE's last heartbeat reported a lease that has not run out since."""
        with self._lock:
            return self._has_lease(node, self._clock() if now is None else now)

    def _has_lease(self, node: str, now: float) -> bool:
        left = self._lease_left.get(node)
        return left is not None and left[0] - (now - left[1]) > 0

    def lease_left(self, node: str, now: float) -> float | None:
        with self._lock:
            left = self._lease_left.get(node)
        return max(0.0, left[0] - (now - left[1])) if left else None

    def lease_back(self, node: str) -> float:
        with self._lock:
            return self._lease_back.get(node, 0.0)

    def last_seen(self, node: str) -> float | None:
        with self._lock:
            return self._last_seen.get(node)

    def holds_of(self, node: str) -> tuple[list[str] | None, float]:
        """(the IPs NODE's last report said it holds - None: no report - and the tick it echoed)."""
        with self._lock:
            ips, tick = self._holds.get(node, (None, 0.0))
            return (list(ips) if ips is not None else None), tick

    def holds(self) -> dict[str, tuple[list[str], float]]:
        with self._lock:
            return dict(self._holds)

    def reported(self, nodes: Iterable[str], since: float | None = None) -> list[str]:
        """Those of NODES without a report (made after the tick SINCE, when given)."""
        with self._lock:
            return [n for n in nodes if n not in self._holds or (since is not None and self._holds[n][1] < since)]

    def unheld(self, ips: list[str], live: Iterable[str]) -> list[str]:
        """Those of IPS that no node of LIVE says it holds ([] while one of them has not reported)."""
        with self._lock:
            live = list(live)
            if not ips or any(n not in self._holds for n in live):
                return []
            held = {ip for n in live for ip in self._holds[n][0]}
        return sorted(set(ips) - held)

    def held_by_others(self, node: str | None, live: set[str]) -> dict[str, str]:
        """Public IP -> a node of LIVE other than NODE whose kernel held it at its latest heartbeat: the last word
        against a second holder, whatever records and plans say."""
        with self._lock:
            return {ip: other for other, ips in sorted(self._held.items())
                    if other != node and other in live for ip in ips}

    def taking(self) -> list[str]:
        """The IPs nodes report retaking now."""
        with self._lock:
            return sorted(set().union(*self._taking.values()))

    def record_generations(self) -> list[int]:
        with self._lock:
            return [gen for gen, _marked in self._records.values()]

    def record_of(self, node: str) -> tuple[int, bool] | None:
        with self._lock:
            return self._records.get(node)

    def older_records(self, generation: int) -> set[str]:
        with self._lock:
            return {n for n, (gen, _marked) in self._records.items() if gen < generation}

    def marked(self) -> set[str]:
        """Nodes whose record a run still marks."""
        with self._lock:
            return {n for n, (_gen, is_marked) in self._records.items() if is_marked}

    def marked_by(self, run_id: str) -> set[str]:
        with self._lock:
            return {n for n, marked_by in self._marked_by.items() if marked_by == run_id}

    def newer_record(self, floor: int, live: list[str]) -> dict[str, Any] | None:
        """A whole record newer than FLOOR that every node of LIVE has recorded, unmarked; forgotten once it is
        no newer than FLOOR."""
        with self._lock:
            record, gen = self._newer_record, (self._newer_record or {}).get("generation")
            if record is None or not isinstance(gen, int):
                return None
            if gen <= floor:
                self._newer_record = None
                return None
            if any(self._records.get(n) != (gen, False) for n in live):
                return None
            self._newer_record = None
            return record

    def has_newer_record(self) -> bool:
        with self._lock:
            return self._newer_record is not None

    def connections(self) -> dict[str, tuple[str, list[list[Any]]]]:
        with self._lock:
            return dict(self._connections)

    # --- start-up grace -------------------------------------------------------------------------------------
    def in_grace(self, node: str, until: float) -> None:
        """NODE's watchdog may hold public IPs without a lease until UNTIL (its start-up grace): it is not dead
        before that, plus the time to release them."""
        with self._lock:
            self._in_grace(node, until)

    def _in_grace(self, node: str, until: float) -> None:
        timing = self._timing_now()
        self._grace_until[node] = max(self._grace_until.get(node, -math.inf),
                                      until + timing.release_bound + timing.margin)

    def grace_left(self, node: str, now: float) -> float:
        with self._lock:
            return self._grace_until.get(node, -math.inf) - now

    def start_grace(self, node: str) -> float:
        """The start-up grace a watchdog of NODE starting now would take (membership.Timing.start_grace)."""
        with self._lock:
            t = Timing(lease=self._leases.get(node, self._timing.lease))
            # the longest its watchdog announced covers a heartbeat interval of its own
            return max(t.start_grace, self._longest_grace.get(node, 0.0)) * (1 + t.drift)

    # --- retakes asked for, and the starting run's pin ----------------------------------------------------------
    def note_ask(self, node: str, ips: Iterable[Any], generation: int) -> None:
        with self._lock:
            self._asked[node] = (frozenset(str(ip)[:64] for ip in ips), generation, self._clock())

    def asks(self) -> dict[str, tuple[frozenset[str], int, float]]:
        with self._lock:
            return dict(self._asked)

    def pin(self, since: float, asked: dict[str, frozenset[str]]) -> dict[str, list[str]]:
        """The starting run's snapshot: what each node reported after SINCE (the run's mark), with the retakes
        it ASKED for; from now on a retake agrees with it or waits for the run's gather (pinned)."""
        with self._lock:
            holds = {node: sorted(set(ips) | asked.get(node, frozenset()))
                     for node, (ips, tick) in self._holds.items() if tick >= since}
            self._pinned = {node: frozenset(ips) for node, ips in holds.items()}
            return holds

    def snapshot(self, since: float) -> dict[str, list[str]]:
        """What each node reported after SINCE (a check run's: no pin)."""
        with self._lock:
            return {node: list(ips) for node, (ips, tick) in self._holds.items() if tick >= since}

    def unpin(self) -> None:
        with self._lock:
            self._pinned = None

    def pinned(self, node: str) -> frozenset[str] | None:
        """What the starting run's snapshot holds NODE to (None: no snapshot yet, or no report of NODE in it)."""
        with self._lock:
            return None if self._pinned is None else self._pinned.get(node)

    def last_holds(self) -> dict[str, set[str]]:
        with self._lock:
            return {node: set(ips) for node, (ips, _tick) in self._holds.items()}
