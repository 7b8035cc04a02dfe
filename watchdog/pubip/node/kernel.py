"""What this host holds and records, read for the heartbeats: the public IPs in its kernel, and its record as
the listener needs it. Reads only."""

from __future__ import annotations

from typing import Any

from .._collection import module_utils
from .config import Config

_record = module_utils("record")
_rtdump = module_utils("rtdump")


def held_public(cfg: Config) -> set[str] | None:
    """The public IPs this host's kernel holds now (None: unknown)."""
    try:
        record = _record.read(cfg.record_path)
        public = {e["ip"].split("/", 1)[0]: e["ip"] for e in (record or {}).get("public_ips") or []}
        _links, addrs = _rtdump.read_links_and_addresses()
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return {public[a] for _i, _f, a, _p, _s in addrs if a in public}


def record_report(cfg: Config, known: Any) -> dict[str, Any] | None:
    """This host's record for the listener: its generation and whether a run marks it (and which run), and all
    of it when it is newer than KNOWN, the generation the listener last said it knows (a run the listener did
    not start: it adopts it once every live node has recorded it)."""
    try:
        record = _record.read(cfg.record_path)
    except (OSError, ValueError):
        return None
    if not record:
        return None
    out = {"generation": record.get("generation"), "marked": _record.marked(record)}
    if out["marked"] and record.get("run_id"):
        out["run_id"] = record["run_id"]  # the run that marked it: after a listener restart, its release is done
    if not out["marked"] and isinstance(known, int) and int(record.get("generation") or 0) > known:
        out.update({k: record.get(k) for k in ("public_ips", "nodes", "run_started", "run_finished")})
    return out
