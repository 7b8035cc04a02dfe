# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The assignment record: what the last takeover run decided, kept on each host.

JSON, written atomically (temporary file, fsync, rename), readable by the
watchdog without Ansible. ``run_started`` > ``run_finished`` marks a takeover
run in progress (CTDB's last_recovery_started / last_recovery_finished); the mark
carries the run's id and a deadline on this host's monotonic clock (``run_deadline``,
valid within one boot), so a watchdog never waits on a run that died.

    {"version": 1, "generation": 7, "node": "node1",
     "public_ips": [{"ip": "198.51.100.1/24", "node": "node2", "interfaces": ["eth0"]}, ...],
     "this_node": ["198.51.100.3/24"],
     "nodes": {"node1": {"pnn": 0, "state": "enabled"}, ...},
     "run_started": 1764085000.12, "run_finished": 1764085001.02}
"""

from __future__ import annotations

import json
import time

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import files as _files
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import leasefile as _lease

VERSION = 1


def empty(node=None):
    return {"version": VERSION, "generation": 0, "node": node, "public_ips": [], "this_node": [], "nodes": {},
            "run_started": 0.0, "run_finished": 0.0}


def read(path):
    """The record at PATH, or None when there is none yet."""
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError("%s is not a pubip assignment record (version %s)" % (path, VERSION))
    return data


def write(path, data):
    _files.write_json(path, data, ".record.")


def term(record):
    """The newest leadership term this node has seen (0: none; a single listener's runs and orders are term 0)."""
    found = (record or {}).get("term")
    return found if isinstance(found, int) and not isinstance(found, bool) and found > 0 else 0


def stale_term(record, given):
    """Why a takeover run or an order of term GIVEN may not change this node: the record has seen a newer
    leader's term (fencing). None: it may (also when GIVEN is None: not fenced)."""
    seen = term(record)
    if given is None or given >= seen:
        return None
    return "term %d is older than term %d, the newest this node has seen: a newer listener leads" % (given, seen)


def with_term(record, given):
    """RECORD noting term GIVEN too (the newest stays)."""
    new = dict(record)
    newest = max(term(record), given or 0)
    if newest:
        new["term"] = newest
    return new


def from_run(given, node):
    """The record NODE keeps for a takeover run's result GIVEN (generation, nodes, public_ips, run times).

    Pure; the public IPs sorted, so that an unchanged assignment gives an identical record (no rewrite).
    """
    new = empty(node)
    new.update(generation=given["generation"], nodes=given["nodes"], run_started=given["run_started"],
               run_finished=given["run_finished"])
    new["public_ips"] = sorted(({"ip": e["ip"], "node": e.get("node"), "interfaces": list(e.get("interfaces") or [])}
                                for e in given["public_ips"]), key=lambda e: e["ip"])
    new["this_node"] = sorted(e["ip"] for e in new["public_ips"] if e["node"] == node)
    return new


def assigned_node(record, cidr_or_address):
    """The node the record assigns an IP to (None: unassigned or unknown)."""
    if not record:
        return None
    address = cidr_or_address.split("/", 1)[0]
    for entry in record.get("public_ips", []):
        if entry["ip"].split("/", 1)[0] == address:
            return entry.get("node")
    return None


def marked(record):
    """A takeover run marked this record as in progress (run_started after run_finished)."""
    return bool(record) and float(record.get("run_started") or 0) > float(record.get("run_finished") or 0)


def mark(record, node, started, run_id, timeout, now=None, boot=None, keep=None):
    """RECORD marked in progress by run RUN_ID, until TIMEOUT seconds from now on this host's monotonic clock.
    KEEP: the IPs this node holds after the run (``run_after``: any other public IP held here meanwhile is
    foreign, and the watchdog releases it at once); those the record gives it too are kept through the run
    (``run_keep``): no host is given them, so the watchdog may retake them while the mark is on."""
    rec = dict(record or empty(node))
    again = mark_key(rec) == (started, run_id)  # the take phase marks again: what the release phase said stands
    rec["run_started"] = started
    rec["run_id"] = run_id
    if keep is not None:
        own = {e["ip"].split("/", 1)[0]: e["ip"] for e in rec.get("public_ips") or [] if e.get("node") == node}
        rec["run_keep"] = sorted(own[a] for a in {k.split("/", 1)[0] for k in keep} if a in own)
        rec["run_after"] = sorted(keep)
    elif not again:
        rec.pop("run_keep", None)
        rec.pop("run_after", None)
    rec["run_deadline"] = {"boot_id": _lease.boot_id() if boot is None else boot,
                           "monotonic": (time.monotonic() if now is None else now) + timeout}
    return rec


def mark_key(record):
    """Which mark a record carries: the same run marking it once (None: not marked)."""
    return (record.get("run_started"), record.get("run_id")) if marked(record) else None


def mark_expired(record, now=None, boot=None):
    """The run that marked RECORD is past its deadline (or the host rebooted since): it died mid-way."""
    if not marked(record):
        return False
    deadline = record.get("run_deadline")
    if not isinstance(deadline, dict):  # a mark without a deadline: its run is over after ten minutes
        return time.time() - float(record.get("run_started") or 0) > 600
    if deadline.get("boot_id") != (_lease.boot_id() if boot is None else boot):
        return True
    try:
        return (time.monotonic() if now is None else now) > float(deadline.get("monotonic"))
    except (TypeError, ValueError):
        return True


def forgo_keep(record, started, run_id, held):
    """RECORD with its run_keep less the IPs whose address HELD (the kernel's addresses) lacks, when run
    (STARTED, RUN_ID) marks it; None when nothing changes. For a take of that run refused before any change (no
    lease): the watchdog then retakes none of them either, so the run counts them as held by nobody."""
    if not record or mark_key(record) != (started, run_id) or not record.get("run_keep"):
        return None
    keep = [ip for ip in record["run_keep"] if ip.split("/", 1)[0] in held]
    return None if keep == record["run_keep"] else dict(record, run_keep=keep)


def kept(record):
    """The IPs a takeover run in progress keeps on this node (see mark)."""
    return list((record or {}).get("run_keep") or []) if marked(record) else []


def in_progress(record, now=None, boot=None):
    """A takeover run is changing this host: marked, and its mark has not expired."""
    return marked(record) and not mark_expired(record, now, boot)
