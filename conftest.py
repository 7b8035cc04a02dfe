"""Root conftest: the checkout's collection is importable by every test."""

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
COLLECTIONS = str(ROOT / "collection")
os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)
os.environ.setdefault("ANSIBLE_CONFIG", str(ROOT / "ansible.cfg"))
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
