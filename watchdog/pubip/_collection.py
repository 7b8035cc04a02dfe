"""Find the pubip.cluster collection of this checkout, so the CLI imports the
very same module_utils code as the action plugin and the modules."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "collection"
PLAYBOOKS = ROOT / "playbooks"
ANSIBLE_CFG = ROOT / "ansible.cfg"

if (COLLECTIONS / "ansible_collections").is_dir() and str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# Re-exported from here so that no import sorter can move them above the path set-up.
from ansible_collections.pubip.cluster.plugins.module_utils import ipalloc  # noqa: E402
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import (  # noqa: E402
    addresses,
    host,
    locking,
    netlink,
    record,
    rtdump,
)

__all__ = ["ANSIBLE_CFG", "COLLECTIONS", "PLAYBOOKS", "ROOT", "addresses", "host", "ipalloc", "locking", "netlink",
           "record", "rtdump"]
