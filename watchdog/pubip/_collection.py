"""The pubip.cluster collection, imported as the ordinary package ansible_collections.pubip.cluster - from
the wheel's site-packages, or from this checkout under an editable install - so the CLI, the watchdog and
ansible-core load the very same module_utils code. Shared by both sides.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import ansible_collections.pubip.cluster as _cluster
from ansible_collections.pubip.cluster.plugins.module_utils import ipalloc

COLLECTION = Path(next(iter(_cluster.__path__)))  # .../ansible_collections/pubip/cluster
COLLECTIONS = COLLECTION.parents[2]  # the directory holding ansible_collections/: ANSIBLE_COLLECTIONS_PATH
PLAYBOOKS = COLLECTION / "playbooks"
TAKEOVER_RUN = "pubip.cluster.takeover_run"  # the main job, as a collection playbook
# Ansible settings for the runs pubip starts (the listener, the lab): what a hand-written ansible.cfg would
# say, as environment variables, so no config file from a checkout is needed. `--ansible-cfg` replaces them.
RUN_ENV = {
    "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
    "ANSIBLE_PIPELINING": "True",
    "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=120s -o ConnectTimeout=5 -o ServerAliveInterval=1 "
                        "-o ServerAliveCountMax=3",
    "ANSIBLE_FORKS": "50",
    "ANSIBLE_GATHERING": "explicit",
    "ANSIBLE_RETRY_FILES_ENABLED": "False",
    "ANSIBLE_PYTHON_INTERPRETER": "auto_silent",
    "ANSIBLE_CALLBACK_RESULT_FORMAT": "yaml",
    # ansible-core (2.19-2.21) imports cryptography's DSA classes for its ssh-agent support, and cryptography 51
    # deprecated them: every Ansible command warns "DSA is deprecated" on a fresh install. pubip uses no DSA.
    "PYTHONWARNINGS": "ignore:DSA is deprecated:UserWarning",
}


def module_utils(name: str) -> ModuleType:
    """One of the collection's private module_utils (_pubip.NAME), imported when first asked for:
    `pubip plan` must not pay for the host-side modules."""
    return importlib.import_module(f"ansible_collections.pubip.cluster.plugins.module_utils._pubip.{name}")


__all__ = ["COLLECTION", "COLLECTIONS", "PLAYBOOKS", "RUN_ENV", "TAKEOVER_RUN", "ipalloc", "module_utils"]
