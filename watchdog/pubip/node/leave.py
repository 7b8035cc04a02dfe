"""`pubip-watchdog --leave`: graceful shutdown (CTDB moves a node's IPs away before ctdbd exits).

Run by the pubip-watchdog-leave unit's ExecStop when the host shuts down - not when the watchdog service
restarts. It tells the listener this node is leaving; the running watchdog hears it in its next heartbeat
answer, releases every public IP and takes none; the listener then hands them to the others at once (fast
takeover orders). This waits, bounded, until the others hold them. Without a running watchdog it releases
them itself.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.request
from dataclasses import replace
from typing import Any

from .. import _collection, protocol
from . import actions
from .config import Config
from .requester import RequestFailed, listener_exchange, signed_answer, tls_context

_netlink = _collection.module_utils("netlink")
_record = _collection.module_utils("record")
log = logging.getLogger("pubip.watchdog")


def _held(cfg: Config, nl: Any) -> list[str]:
    record = _record.read(cfg.record_path) or {}
    public = {e["ip"].split("/", 1)[0]: e["ip"] for e in record.get("public_ips") or []}
    return sorted(public[a] for i in nl.interfaces().values() for a, _p, _v in i.addresses if a in public)


def _holders(cfg: Config) -> dict[str, list[str]]:
    """Who holds each public IP, by the leading listener's status (HA: the first that says it leads)."""
    assert cfg.listener is not None
    failed: Exception | None = None
    for url in cfg.listener.urls:
        base = url.rsplit(protocol.TAKEOVER_RUN_PATH, 1)[0]
        req = urllib.request.Request(base + protocol.STATUS_PATH, headers=protocol.read_headers(
            {cfg.node: cfg.listener.secret}, protocol.STATUS_PATH))
        context = tls_context(cfg.listener.ca_file) if base.startswith("https://") else None
        try:
            with urllib.request.urlopen(req, timeout=cfg.listener.timeout, context=context) as resp:
                status = protocol.Status.parse(json.loads(resp.read()))
        except OSError as exc:
            failed = exc
            continue
        if status.role == "leader":
            return {e["ip"]: list(e.get("holders") or []) for e in status.public_ips}
    raise failed or OSError("no listener leads")


def leave(cfg: Config, timeout: float = 15.0) -> bool:
    """True once every public IP this node held is held by another node."""
    if cfg.backend != "listener" or cfg.listener is None:
        log.error("Leave: needs the listener backend; nothing moved (the IPs wait for death detection)")
        return False
    deadline = time.monotonic() + timeout
    nl = _netlink.Netlink()
    mine = _held(cfg, nl)
    log.warning("Leaving the cluster: asking the listener to move %s away", ", ".join(mine) or "nothing")
    told = []  # every listener hears it (HA: whoever leads now or next)
    for url in cfg.listener.urls:
        backend = replace(cfg.listener, url=url)
        try:
            _status, answer, signed, path = listener_exchange(
                backend, cfg.node, protocol.Heartbeat(cfg.node, leave=True, leaving=True).wire(),
                protocol.HEARTBEAT_PATH)
            told.append(signed_answer(backend, answer, signed, path).leader)
        except (RequestFailed, protocol.Rejected) as exc:
            log.error("Leave: the listener at %s did not answer (%s)", url, exc)
    if not any(told):
        log.error("Leave: no leading listener answered; nothing moved")
        return False
    while _held(cfg, nl) and time.monotonic() < deadline:  # the running watchdog releases them
        time.sleep(0.02)
        if time.monotonic() > deadline - timeout + 2.0:  # no watchdog running: release them here
            actions.release_all(cfg, nl, _record.read(cfg.record_path), "Leaving")
    while time.monotonic() < deadline:
        try:
            holders = _holders(cfg)
        except (OSError, ValueError, protocol.Rejected) as exc:
            log.warning("Leave: cannot read the listener's status: %s", exc)
            holders = {}
        if mine and all(set(holders.get(ip) or []) - {cfg.node} for ip in mine):
            log.warning("Left the cluster: %s held by the others", ", ".join(mine))
            return True
        if not mine:
            return True
        time.sleep(0.1)
    log.error("Leave: %s not all held elsewhere after %.0fs", ", ".join(mine), timeout)
    return False
