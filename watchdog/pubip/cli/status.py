"""`pubip status`: CTDB's `ctdb ip`, `ctdb status` and `ctdb uptime` in one view, from the listener."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .. import protocol
from ..errors import PubipError
from .table import render


def fetch(url: str, secrets_file: str) -> dict[str, Any]:
    """The listener's status, asked with a request signed by the secrets file's _admin (or a node's) secret."""
    try:
        secrets = json.loads(Path(secrets_file).read_text())
        headers = protocol.read_headers(secrets, protocol.STATUS_PATH)
    except (OSError, ValueError, StopIteration, AttributeError) as exc:
        raise PubipError(f"{secrets_file}: not a listener secrets file ({exc})") from None
    req = urllib.request.Request(url.rstrip("/") + protocol.STATUS_PATH, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return protocol.Status.parse(json.loads(resp.read())).wire()
    except urllib.error.HTTPError as exc:
        raise PubipError(f"the listener refused the status: HTTP {exc.code} {exc.read()[:200].decode()}") from None
    except OSError as exc:
        raise PubipError(f"cannot reach the listener at {url}: {exc}") from None
    except (ValueError, protocol.Rejected) as exc:
        raise PubipError(f"the listener's status is not pubip's: {exc}") from None


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _lease(left: float | None) -> str:
    if left is None:
        return "-"
    return f"{left:.1f}s" if left > 0 else "NONE (lost the cluster)"


def _state(v: dict[str, Any]) -> str:
    state = str(v.get("runtime_state") or v.get("state") or "-")
    if v.get("banned_for"):
        state += f" ({v['banned_for']:.0f}s left)"
    if v.get("ban_credits"):
        state += f", {v['ban_credits']} ban credit{'s' if v['ban_credits'] > 1 else ''}"
    return state


def _health(h: dict[str, Any] | None) -> str:
    if not h:
        return "-"
    if h.get("ok"):
        return "OK"
    return f"UNHEALTHY: {h.get('hook') or '?'}: {h.get('message') or 'failed'}"[:80]


def _ip_row(e: dict[str, Any]) -> list[Any]:
    """Where the IP is now (from heartbeats), and the last run's plan when that differs."""
    holders = e.get("holders")
    if holders is None:  # a listener from before heartbeat holds: the plan only
        return [e["ip"], e.get("node") or "-1 (unassigned)", ""]
    now = " + ".join(holders) if holders else "-1 (unheld)"
    if e.get("from_plan"):
        now += " (no heartbeat: as planned)"
    planned = e.get("planned")
    return [e["ip"], now, "" if holders == [planned] else (planned or "-1 (unassigned)")]


def _liveness(v: dict[str, Any]) -> str:
    return str(v.get("liveness") or ("alive" if v.get("alive") else "dead"))


FAILOVER_OFF = ("WARNING: failover is OFF: not every node runs with a lease (watchdogs without peers), so no node "
                "is ever declared dead and a dead node's public IPs stay unheld")


def problems(st: dict[str, Any]) -> list[str]:
    """What keeps the cluster from being well, as `ctdb status` would say it: a node dead or unreachable, a public
    IP held by no node or by two. `pubip status` exits 1 when there is any."""
    out = [f"node {node} is {_liveness(v)}" for node, v in st["nodes"].items() if _liveness(v) != "alive"]
    if st.get("role", "leader") != "leader" and not st.get("leader"):
        out.append(f"no listener leads ({st.get('leadership') or 'unknown'}): no orders, no takeover runs")
    for e in st.get("public_ips") or []:
        holders = e.get("holders") or []
        if not holders:
            out.append(f"public IP {e['ip']} is held by no node")
        elif len(holders) > 1:
            out.append(f"public IP {e['ip']} is held by {' and '.join(holders)}")
    return out


def leadership_line(st: dict[str, Any]) -> str | None:
    """HA listeners: who leads, in which term, and what the answering listener is (None: a single listener)."""
    if not st.get("term") and st.get("role", "leader") == "leader":
        return None
    if not st.get("leader"):
        return f"WARNING: no listener leads ({st.get('leadership') or 'unknown'}): no orders, no takeover runs"
    return f"Leader {st['leader']}, term {st['term']}; this listener is the {st.get('role')}"


def render_status(st: dict[str, Any]) -> str:
    out = [FAILOVER_OFF, ""] if st.get("failover") is False else []
    lead = leadership_line(st)
    out += [lead, ""] if lead else []
    out += [render(["Node", "PNN", "State", "Health", "Liveness", "Last heartbeat", "Lease", "Does not hear"],
                  [[n, v.get("pnn") if v.get("pnn") is not None else "-", _state(v), _health(v.get("health")),
                    _liveness(v) if _liveness(v) == "alive" else _liveness(v).upper(),
                    f"{v['last_heartbeat_ago']:.1f}s ago" if v.get("last_heartbeat_ago") is not None else "never",
                    _lease(v.get("lease_left")), ", ".join(v.get("does_not_hear") or []) or "-"]
                   for n, v in st["nodes"].items()]), ""]
    out.append(render(["Public IP", "Node", "Planned"], [_ip_row(e) for e in st.get("public_ips") or []]))
    orders = [o for o in st.get("fast_takeover_orders") or [] if not o.get("result") and not o.get("withdrawn")]
    if orders:
        out.append("")
        out.append(render(["Fast takeover order", "Node", "Generation", "IPs", "Delivered"],
                          [[o["id"], o["node"], o["generation"], ", ".join(o["ips"]),
                            "yes" if o["delivered"] else "no"] for o in orders]))
    out.append("")
    runs = st.get("runs") or []
    out.append(f"Generation {st.get('generation')}; pending requests {st['pending_requests']}; "
               f"{'run ' + str(st['running']) + ' in progress' if st.get('running') else 'no run in progress'}")
    if runs:
        out.append(render(["Run", "Started", "Finished", "Duration", "Result", "Dead nodes"],
                          [[r["run"], _when(r["started"]), _when(r["finished"]),
                            f"{r['duration']:.2f}s" if r["duration"] is not None else "-",
                            "ok" if r["success"] else ("running" if r["success"] is None else "FAILED"),
                            ", ".join(r["dead"]) or "-"] for r in runs]))
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    from .defaults import fill

    fill(args)
    st = fetch(args.listener, args.secrets)
    if getattr(args, "ips", False):
        print(render(["Public IP", "Node", "Planned"], [_ip_row(e) for e in st.get("public_ips") or []]))
        wrong = [line for line in problems(st) if line.startswith("public IP")]
        for line in wrong:
            print(f"pubip ip: {line}", file=sys.stderr)
        return 1 if wrong else 0
    if args.json:
        json.dump(st, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(render_status(st))
    wrong = problems(st)
    for line in wrong:
        print(f"pubip status: {line}", file=sys.stderr)
    return 1 if wrong else 0
