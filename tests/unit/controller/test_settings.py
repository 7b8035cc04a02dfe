"""`pubip listen`'s settings: a file with the command line over it, every key checked, and --check-config that
names what is wrong and changes nothing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from pubip.cli.main import parser
from pubip.controller import service
from pubip.controller.settings import check, settle
from pubip.errors import PubipError


def listen_args(*argv: str) -> argparse.Namespace:
    return parser().parse_args(["listen", *argv])


@pytest.fixture
def files(tmp_path: Path) -> Path:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"node1": "s" * 32, "_admin": "a" * 32}))
    secrets.chmod(0o600)
    (tmp_path / "inventory.yml").write_text("all: {}\n")
    (tmp_path / "listener.yml").write_text(f"inventory: {tmp_path}/inventory.yml\nsecrets: {secrets}\n"
                                           f"bind: 127.0.0.1\nport: 8760\n")
    return tmp_path


def test_the_command_line_goes_over_the_file_and_defaults_fill_the_rest(files: Path) -> None:
    args = listen_args("--config", str(files / "listener.yml"), "--port", "9000")
    settle(args)
    assert (args.bind, args.port, args.lease, args.state_dir) == ("127.0.0.1", 9000, 1.0, "/var/lib/pubip/listener")
    assert args.no_fast_takeover is False and args.backend == "runner"


@pytest.mark.parametrize(("text", "culprit"), [
    ("binds: 127.0.0.1\n", "unknown setting 'binds'"),
    ("probe_port: eighty\n", "'probe_port' must be int, got 'eighty'"),
    ("- a list\n", "must be a mapping of settings"),
    ("lease: -1\n", "lease -1.0 must be a positive number of seconds"),
    ("backend: awx\n", "backend awx needs awx_url, awx_job_template and awx_token_file"),
])
def test_a_wrong_setting_is_named(files: Path, text: str, culprit: str) -> None:
    config = files / "bad.yml"
    config.write_text((files / "listener.yml").read_text() + text if not text.startswith("-") else text)
    with pytest.raises(PubipError, match=culprit):
        settle(listen_args("--config", str(config)))


def test_the_required_settings_are_named_when_missing() -> None:
    with pytest.raises(PubipError, match="--inventory, --secrets, --bind are required"):
        settle(listen_args())


def test_check_config_names_what_is_not_ready(files: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = listen_args("--config", str(files / "listener.yml"), "--check-config")
    assert service.main(args) == 0 and "listener.yml: valid" in capsys.readouterr().out
    (files / "secrets.json").chmod(0o644)
    args = listen_args("--config", str(files / "listener.yml"), "--bind", "192.0.2.254", "--tls-cert", "/nope")
    settle(args)
    problems = check(args)
    assert any("readable by others" in p for p in problems)
    assert "tls_cert /nope is not a file" in problems
    assert any(p.startswith("bind address 192.0.2.254 is not an address of this host") for p in problems)
