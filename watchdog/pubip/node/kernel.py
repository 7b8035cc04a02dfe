"""What this host holds and records, read for the heartbeats: the public IPs in its kernel, and its record as
the listener needs it. Reads only."""

from __future__ import annotations

from .. import protocol
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


def record_report(cfg: Config, known: int | None) -> protocol.RecordReport | None:
    """This host's record for the listener: its generation and whether a run marks it (and which run), and all
    of it when it is newer than KNOWN, the generation the listener last said it knows (a run the listener did
    not start: it adopts it once every live node has recorded it)."""
    try:
        record = _record.read(cfg.record_path)
    except (OSError, ValueError):
        return None
    if not record:
        return None
    generation, marked = record.get("generation"), _record.marked(record)
    if not isinstance(generation, int):
        return None
    # the run that marked it: after a listener restart, its release is done
    run_id = str(record["run_id"]) if marked and record.get("run_id") else None
    if not marked and known is not None and generation > known:
        return protocol.RecordReport(generation, marked, run_id, record.get("public_ips"), record.get("nodes"),
                                     record.get("run_started"), record.get("run_finished"))
    return protocol.RecordReport(generation, marked, run_id)
