"""The roles document every option they take (meta/argument_specs.yml, what `ansible-doc -t role` shows and what
Ansible checks before the role's first task), and take no option they do not document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROLES = Path(__file__).resolve().parents[2] / "collection/ansible_collections/pubip/cluster/roles"


def options_of(role: str) -> dict[str, dict[str, object]]:
    spec = yaml.safe_load((ROLES / role / "meta/argument_specs.yml").read_text())
    return dict(spec["argument_specs"]["main"]["options"])


@pytest.mark.parametrize("role", ["watchdog", "listener"])
def test_every_default_is_a_documented_option_and_every_option_a_default(role: str) -> None:
    defaults = yaml.safe_load((ROLES / role / "defaults/main.yml").read_text())
    options = options_of(role)
    assert sorted(defaults) == sorted(options)
    undocumented = [name for name, spec in options.items() if not spec.get("type") or not spec.get("description")]
    assert undocumented == []


@pytest.mark.parametrize("role", ["watchdog", "listener"])
def test_ansible_doc_lists_every_option(role: str) -> None:
    doc = subprocess.run([str(Path(sys.executable).parent / "ansible-doc"), "-t", "role", f"pubip.cluster.{role}"],
                         capture_output=True, text=True, timeout=120)
    assert doc.returncode == 0, doc.stderr
    options = options_of(role)
    assert [name for name in options if name not in doc.stdout] == []
