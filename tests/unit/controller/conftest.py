"""The listener of a three-node cluster (tests/support/cluster.py), for the controller's unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubip.controller.listener import Listener
from tests.support.cluster import three_nodes


@pytest.fixture
def listener(tmp_path: Path) -> Listener:
    return three_nodes(tmp_path)
