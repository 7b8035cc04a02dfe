"""`pubip plan`: the allocation engine on JSON input (the vectors' schema)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from .._collection import ipalloc

LEVELS = {"ERR": ipalloc.LOG_ERR, "WARNING": ipalloc.LOG_WARNING, "NOTICE": ipalloc.LOG_NOTICE,
          "INFO": ipalloc.LOG_INFO, "DEBUG": ipalloc.LOG_DEBUG}
KNOWN_KEYS = {"algorithm", "nodes", "options", "public_ips"}


def plan_one(doc: Any, where: str, explain: bool) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ipalloc.AllocationInputError(f"{where}: expected a JSON object, got {type(doc).__name__}")
    for key in ("nodes", "public_ips"):
        if not isinstance(doc.get(key), list):
            raise ipalloc.AllocationInputError(f"{where}: '{key}' must be a list")
    options = doc.get("options") or {}
    if not isinstance(options, dict):
        raise ipalloc.AllocationInputError(f"{where}: 'options' must be an object")
    try:
        result = ipalloc.allocate(doc["nodes"], doc["public_ips"], doc.get("algorithm", "lcp2"), options)
    except ipalloc.AllocationInputError as exc:
        raise ipalloc.AllocationInputError(f"{where}: {exc}") from None
    out: dict[str, Any] = {"assignments": result["assignments"]}
    if explain:
        before = {e["ip"]: e.get("current_pnn", -1) for e in doc["public_ips"]}
        out["moves"] = [{"ip": a["ip"], "from": before[a["ip"]], "to": a["pnn"]}
                        for a in result["assignments"] if before[a["ip"]] != a["pnn"]]
        out["unassigned"] = result["unassigned"]
        out["log"] = [line for _level, line in result["log"]]
    return out


def run(source: str, explain: bool, stdout: TextIO = sys.stdout) -> int:
    try:
        if source == "-":
            text = sys.stdin.read()
        else:
            with open(source, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        print(f"pubip plan: cannot read {source}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        print(f"pubip plan: malformed JSON in {source}: {exc}", file=sys.stderr)
        return 2
    try:
        if isinstance(doc, list):
            out: Any = [plan_one(d, f"input {i}", explain) for i, d in enumerate(doc)]
        else:
            out = plan_one(doc, "input", explain)
    except ipalloc.AllocationInputError as exc:
        print(f"pubip plan: {exc}", file=sys.stderr)
        return 2
    json.dump(out, stdout)
    stdout.write("\n")
    return 0
