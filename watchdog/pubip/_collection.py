"""Find the pubip.cluster collection of this checkout, so the CLI imports the
very same module_utils code as the action plugin and the modules."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "collection"
PLAYBOOKS = ROOT / "playbooks"
ANSIBLE_CFG = ROOT / "ansible.cfg"

if (COLLECTIONS / "ansible_collections").is_dir() and str(COLLECTIONS) not in sys.path:
    sys.path.insert(0, str(COLLECTIONS))

# Re-exported from here so that no import sorter can move it above the path set-up.
from ansible_collections.pubip.cluster.plugins.module_utils import ipalloc  # noqa: E402


def module_utils(name: str) -> ModuleType:
    """One of the collection's private module_utils (_pubip.NAME), imported when first asked for:
    `pubip plan` must not pay for the host-side modules."""
    return importlib.import_module(f"ansible_collections.pubip.cluster.plugins.module_utils._pubip.{name}")


__all__ = ["ANSIBLE_CFG", "COLLECTIONS", "PLAYBOOKS", "ROOT", "ipalloc", "module_utils"]
