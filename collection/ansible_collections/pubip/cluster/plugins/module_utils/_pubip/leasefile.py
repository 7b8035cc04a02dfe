# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lease file: the watchdog writes until when this node may hold public IPs; public_ip reads it before
any take and reports it at gather.

Times are CLOCK_MONOTONIC of this host, valid only within the boot they were written in (boot_id), so
neither an NTP step nor a reboot can stretch a lease.

    {"version": 1, "node": "node1", "boot_id": "...", "until": 12345.6}
"""

from __future__ import annotations

import json
import time

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import files as _files

VERSION = 1
BOOT_ID = "/proc/sys/kernel/random/boot_id"
VALID, EXPIRED, NONE = "valid", "expired", "none"


def boot_id():
    try:
        with open(BOOT_ID) as f:
            return f.read().strip()
    except OSError:
        return ""


def write(path, node, until):
    # not synced to disk: it lives in /run, and a reboot ends every lease anyway (boot_id)
    _files.write_json(path, {"version": VERSION, "node": node, "boot_id": boot_id(),
                             "until": until if until != float("inf") else 1e18}, ".lease.", durable=False)


def read_until(path):
    """(NONE, None) without a lease file; else (VALID or EXPIRED, until) - an unreadable file, one from
    another boot, is EXPIRED: never a reason to take."""
    if not path:
        return NONE, None
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        return NONE, None
    except (OSError, ValueError):
        return EXPIRED, None
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("boot_id") != boot_id():
        return EXPIRED, None
    try:
        until = float(data.get("until"))
    except (TypeError, ValueError):
        return EXPIRED, None
    return VALID, until


def state(path, now=None):
    """VALID, EXPIRED, or NONE (no lease file: this node runs no watchdog with leases)."""
    found, until = read_until(path)
    if found != VALID:
        return found
    return VALID if until > (time.monotonic() if now is None else now) else EXPIRED
