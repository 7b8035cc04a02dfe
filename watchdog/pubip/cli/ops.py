"""Operations through the listener: `pubip disable|enable|stop|continue|unban HOST`, `pubip ban HOST --for S`,
`pubip moveip IP HOST`, `pubip reloadips`, `pubip cancel`, `pubip ipinfo IP`.

Each is a takeover run under the hood (CTDB's `ctdb disable`, `ctdb moveip`, `ctdb reloadips`);
`--check` previews the moves with a check-mode run and changes nothing. Requests are signed with
the secrets file's `_admin` secret.
"""

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


class Refused(PubipError):
    """The listener refused the operation (an unknown node or IP, a bad duration): exit 1, nothing stored."""


def call(listener: str, secrets_file: str, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        secret = json.loads(Path(secrets_file).read_text())[protocol.ADMIN]
    except (OSError, ValueError, KeyError):
        raise PubipError(f"{secrets_file} has no '{protocol.ADMIN}' secret for operations") from None
    body = json.dumps(payload).encode()
    req = urllib.request.Request(listener.rstrip("/") + protocol.ADMIN_PATH, data=body, method="POST", headers={
        "Content-Type": "application/json", **protocol.sign(secret, protocol.ADMIN, body, protocol.ADMIN_PATH)})
    try:
        with urllib.request.urlopen(req, timeout=900) as resp:
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        raise Refused(f"the listener refused {payload['op']}: HTTP {exc.code} {detail}") from None
    except OSError as exc:
        raise PubipError(f"cannot reach the listener at {listener}: {exc}") from None


def main(args: argparse.Namespace) -> int:
    payload = {"op": args.op, "check": bool(args.check)}
    if getattr(args, "host", None):
        payload["node"] = args.host
    if getattr(args, "ip", None):
        payload["ip"] = args.ip
    if getattr(args, "seconds", None) is not None:
        payload["seconds"] = args.seconds
    from .defaults import fill

    fill(args)
    try:
        result = call(args.listener, args.secrets, payload)
    except Refused as exc:
        print(f"pubip: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    elif args.op == "ipinfo":
        print(render_ipinfo(result))
    elif args.op == "tickle":
        print(f"{result['ip']} on {result.get('node') or 'no node'}: {len(result['connections'])} TCP connections")
        for c in result["connections"]:
            print(f"  {c['client']}:{c['client_port']} -> port {c['port']}")
    elif args.op == "gratarp":
        print(f"{result['ip']}: announced again by {', '.join(result['nodes'])}" if result["success"] else
              f"{result['ip']}: {result['detail']}")
    elif args.op == "cancel":
        dropped = result.get("dropped") or {}
        print("Dropped: " + (", ".join(f"moveip {ip} {node}" for ip, node in dropped.items()) or "nothing pending"))
    else:
        what = "Planned (check mode, nothing changed)" if result.get("check") else "Done"
        ok = result.get("success")
        print(f"{what}: pubip {args.op} - takeover run {'succeeded' if ok else 'FAILED'}")
        if not ok and result.get("detail"):
            print(f"  {result['detail']}")
        for m in result.get("moves") or []:
            print(f"  move {m['ip']}: {m['from'] or '-'} -> {m['to'] or '-'}")
        if result.get("summary"):
            print(result["summary"])
    return 0 if result.get("success") else 1


def render_ipinfo(info: dict[str, Any]) -> str:
    move = info.get("last_move")
    rows = [("Public IP", info["ip"]),
            ("Held by", " + ".join(info.get("holders") or []) or "nobody"),
            ("Planned node", info.get("planned") or "-1 (unassigned)"),
            ("Known on", ", ".join(info.get("known_on") or []) or "-"),
            ("Available on", ", ".join(info.get("available_on") or []) or "-"),
            ("Interfaces", ", ".join(info.get("interfaces") or []) or "-"),
            ("Last move", f"{move['from'] or '-'} -> {move['to'] or '-'} (generation {move['generation']}, "
                          f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(move['when']))})" if move else "-")]
    width = max(len(k) for k, _v in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def add_parsers(sub: Any, func: Any) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--check", action="store_true", help="preview the moves; change nothing")
        p.add_argument("--json", action="store_true")
        p.add_argument("--listener", help="the listener's URL, e.g. http://192.0.2.254:8750")
        p.add_argument("--secrets", help="the listener's secrets file (holds the _admin secret)")
        p.add_argument("--lab", help="a local lab's name instead of --listener/--secrets")
        p.set_defaults(func=func)

    for op, helptext in (("disable", "disable a node: its public IPs move away"),
                         ("enable", "enable a node again: it takes its share back per the policy"),
                         ("stop", "stop a node (CTDB's STOPPED): it holds no public IP but stays in the cluster"),
                         ("continue", "continue a stopped node: it takes its share back"),
                         ("ban", "ban a node for a while: it drops every public IP, they move away, and come "
                                 "back by themselves when the ban ends"),
                         ("unban", "end a node's ban now")):
        p = sub.add_parser(op, help=helptext)
        p.add_argument("host")
        if op == "ban":
            p.add_argument("--for", dest="seconds", type=float, required=True, metavar="SECONDS")
        p.set_defaults(op=op)
        common(p)
    p = sub.add_parser("moveip", help="move one public IP to a node")
    p.add_argument("ip")
    p.add_argument("host")
    p.set_defaults(op="moveip")
    common(p)
    p = sub.add_parser("reloadips", help="apply public IPs added to or removed from the inventory")
    p.set_defaults(op="reloadips")
    common(p)
    p = sub.add_parser("cancel", help="drop pending moveip operations that no takeover run has carried out yet")
    p.set_defaults(op="cancel")
    common(p)
    for op, helptext in (("ipinfo", "one public IP: holder now and by plan, who may host it, its last move"),
                         ("tickle", "the TCP connections to one public IP that its next holder will tickle"),
                         ("gratarp", "the holder of one public IP sends gratuitous ARP / unsolicited NA again")):
        p = sub.add_parser(op, help=helptext)
        p.add_argument("ip")
        p.set_defaults(op=op)
        common(p)
