"""Benchmark output: a table on stdout and a JSON file under .bench/."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "watchdog"))
from pubip.cli.table import render

OUT = Path(__file__).resolve().parents[2] / ".bench"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def report(name: str, headers: list[str], rows: list[list[Any]], records: list[dict[str, Any]]) -> Path:
    print(render(headers, rows))
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
                                "results": records}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
