"""The public IPs this node took on the listener's fast takeover orders and no run has recorded yet.

The record still gives them to the node the order took them from, so a watchdog that forgot them would
release them as foreign, and nobody would hold them until a later run. They are kept in a file beside the
lease file - in /run, so a reboot, which empties the kernel of them too, forgets them - and a restarted
watchdog keeps only those its kernel still holds: it carries out no order while it is down.

    {"version": 1, "ordered": {"198.51.100.5/24": {"generation": 7, "run_id": "..."}}}
"""

from __future__ import annotations

import json
import os
from typing import Any

from .._collection import module_utils

_files = module_utils("files")
VERSION = 1


def path_beside(lease_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(lease_path)), "ordered.json")


def save(path: str, ordered: dict[str, Any]) -> None:
    _files.write_json(path, {"version": VERSION, "ordered": ordered}, ".ordered.", durable=False)


def load(path: str, held: set[str]) -> dict[str, Any]:
    """What the file names that HELD (the public IPs the kernel holds now) still has; {} without a file or
    with an unreadable one (the record speaks then, as before this file existed)."""
    try:
        with open(path) as f:
            data = json.load(f)
        entries = data.get("ordered") if isinstance(data, dict) and data.get("version") == VERSION else None
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {ip: {"generation": e.get("generation"), "run_id": e.get("run_id")}
            for ip, e in entries.items() if ip in held and isinstance(e, dict)}
