from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from tests.support import labkit

# A peer of the same version sends no key the messages do not know: in the tests (and the labs they start), an
# unknown key is an error (protocol.strict).
os.environ["PUBIP_STRICT_PROTOCOL"] = "1"


def _can_build_labs() -> str | None:
    if os.geteuid() != 0:
        return "labs need root"
    for tool in ("ip", "/usr/sbin/sshd", "ssh-keygen"):
        if not shutil.which(tool):
            return f"labs need {tool} (make deps installs it)"
    return None


def _start_order(item: pytest.Item) -> int:
    if "slow" in item.keywords:
        return 0 if item.nodeid.startswith("tests/suite/") else 1
    return 2 if "lab" in item.keywords or "install" in item.keywords else 3


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _can_build_labs()
    if reason:
        for item in items:
            if "lab" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=reason))
    # Longest first: with `--dist load` each free worker takes the next test, so the long ones
    # overlap instead of leaving one worker busy at the end (a stable sort keeps file order).
    items.sort(key=_start_order)


@pytest.fixture(scope="session", autouse=True)
def module_bytecode_cache() -> Iterator[None]:
    """Labs built by this test process cache the bytecode of Ansible's modules on their hosts (the hosts
    share two cores: half of a module call is compiling; pubip/lab/pyc_cache says how), in a directory
    removed at the end."""
    cache = tempfile.mkdtemp(prefix="pubip-pyc-")
    os.environ["PUBIP_LAB_PYC_CACHE"] = cache
    yield
    os.environ.pop("PUBIP_LAB_PYC_CACHE", None)
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def no_lab_left_behind() -> Iterator[None]:
    """Whatever happened to a test, no lab this test process made survives the session."""
    yield
    for name in labkit.own_labs():
        print(f"lab {name} was left behind by a test: removing it")
        labkit.lab_down(name)


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., labkit.LabHandle]]:
    """Build labs with unique names; every one is torn down, also on failure."""
    made: list[str] = []

    def make(*args: str, tag: str = "t") -> labkit.LabHandle:
        name = labkit.unique_name(tag)
        made.append(name)
        return labkit.lab_up(name, *args)

    yield make
    for name in made:
        labkit.lab_down(name)


@pytest.fixture
def lab3(lab_factory: Callable[..., labkit.LabHandle]) -> labkit.LabHandle:
    return lab_factory("--nodes", "3", "--vips", "6", "--no-watchdog", "--no-takeover")
