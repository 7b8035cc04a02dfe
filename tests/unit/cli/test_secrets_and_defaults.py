"""`pubip secrets` makes every secret once, in the files an inventory takes; the operator's commands find the
listener from the environment or the controller's cli.yml when the command line does not say."""

from __future__ import annotations

import argparse
import stat
from pathlib import Path

import jinja2
import pytest
import yaml

from pubip.cli import defaults
from pubip.cli import secrets as cli_secrets
from pubip.errors import PubipError


def test_secrets_for_every_node_and_purpose_and_the_role_variables_that_use_them(tmp_path: Path) -> None:
    out = tmp_path / "group_vars" / "all"
    assert cli_secrets.main(argparse.Namespace(nodes="node1,node2,node3", out=str(out), force=False)) == 0
    vault = yaml.safe_load((out / "vault.yml").read_text())
    assert stat.S_IMODE((out / "vault.yml").stat().st_mode) == 0o600
    assert sorted(vault["pubip_node_secrets"]) == ["node1", "node2", "node3"]
    made = [*vault["pubip_node_secrets"].values(), vault["pubip_admin_secret"], vault["pubip_peer_secret"],
            vault["pubip_read_token"]]
    assert len(set(made)) == 6 and all(len(s) == 64 for s in made)  # 256 bits each, none shared
    env = jinja2.Environment()
    env.filters["combine"] = lambda a, b: {**a, **b}
    roles = {k: env.from_string(v).render(inventory_hostname="node2", **vault)
             for k, v in yaml.safe_load((out / "pubip.yml").read_text()).items()}
    assert roles["watchdog_secret"] == vault["pubip_node_secrets"]["node2"]
    assert roles["watchdog_peer_secret"] == vault["pubip_peer_secret"]
    assert yaml.safe_load(roles["listener_secrets"].replace("'", '"'))["_admin"] == vault["pubip_admin_secret"]


def test_secrets_in_use_are_never_replaced_by_accident(tmp_path: Path) -> None:
    args = argparse.Namespace(nodes="node1", out=str(tmp_path), force=False)
    cli_secrets.main(args)
    before = (tmp_path / "vault.yml").read_text()
    with pytest.raises(PubipError, match=r"vault\.yml exists: its secrets are in use"):
        cli_secrets.main(args)
    assert (tmp_path / "vault.yml").read_text() == before
    with pytest.raises(PubipError, match="give each node's inventory name once"):
        cli_secrets.main(argparse.Namespace(nodes="node1,node1", out=str(tmp_path / "x"), force=False))


def test_the_listener_comes_from_the_command_line_then_the_environment_then_cli_yml(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "cli.yml"
    config.write_text("listener: http://192.0.2.254:8750\nsecrets: /etc/pubip/listener-secrets.json\n")
    monkeypatch.setenv("PUBIP_CONFIG", str(config))
    args = argparse.Namespace(listener=None, secrets=None, lab=None)
    defaults.fill(args)
    assert (args.listener, args.secrets) == ("http://192.0.2.254:8750", "/etc/pubip/listener-secrets.json")
    monkeypatch.setenv("PUBIP_LISTENER", "http://198.51.100.254:8750")
    args = argparse.Namespace(listener=None, secrets="mine.json", lab=None)
    defaults.fill(args)
    assert (args.listener, args.secrets) == ("http://198.51.100.254:8750", "mine.json")
    monkeypatch.setenv("PUBIP_CONFIG", str(tmp_path / "none.yml"))
    monkeypatch.delenv("PUBIP_LISTENER")
    with pytest.raises(PubipError, match="no listener: give --listener URL and --secrets FILE"):
        defaults.fill(argparse.Namespace(listener=None, secrets=None, lab=None))
