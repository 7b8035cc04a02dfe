"""The watchdog configuration: every bad key named with its line; nothing half-configured."""

from __future__ import annotations

from pathlib import Path

import pytest

from pubip.node import config as wdconfig

GOOD = """\
node: node1
record_path: /var/lib/pubip/record.json
interval: 0.5
fast_retake: true
backend: listener
listener:
  url: http://192.0.2.254:8750/v1/takeover-run
  secret_file: {secret}
retry:
  initial: 0.1
  max: 10
metrics:
  port: 9750
peers:
  secret_file: {secret}
  nodes:
    node2: 192.0.2.2
"""


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("abc123\n")
    path.chmod(0o600)
    return path


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "watchdog.yml"
    path.write_text(text)
    return str(path)


def test_good_config(tmp_path: Path, secret: Path) -> None:
    cfg = wdconfig.load(write(tmp_path, GOOD.format(secret=secret)))
    assert cfg.node == "node1" and cfg.interval == 0.5 and cfg.fast_retake
    default = wdconfig.load(write(tmp_path, GOOD.format(secret=secret).replace("fast_retake: true\n", "")))
    assert default.fast_retake is True  # on by default with the listener backend
    assert cfg.listener is not None and cfg.listener.secret == "abc123"
    assert cfg.retry_initial == 0.1 and cfg.retry_max == 10.0 and cfg.metrics_port == 9750


@pytest.mark.parametrize("edit, message", [
    (("interval: 0.5", "intervall: 0.5"), "unknown key 'intervall' (line 3)"),
    (("interval: 0.5", "interval: fast"), "'interval' (line 3) must be float, got 'fast'"),
    (("interval: 0.5", "interval: 0"), "'interval' must be greater than 0"),
    (("  max: 10", "  maximum: 10"), "unknown key 'retry.maximum' (line 11)"),
    (("backend: listener", "backend: carrier-pigeon"),
     "'backend' (line 5) must be one of listener, awx, webhook, none"),
    (("node: node1\n", ""), "missing key 'node'"),
    (("  url: http://192.0.2.254:8750/v1/takeover-run", "  url: 192.0.2.254"), "must be an http:// or https://"),
    (("  port: 9750", "  port: 70000"), "'metrics.port' must be 0 (off) to 65535"),
    (("fast_retake: true", "fast_retake: [1]"), "'fast_retake' (line 4) must be bool"),
    (("interval: 0.5", "interval: .nan"), "'interval' (line 3) must be a finite number"),
    (("interval: 0.5", "interval: .inf"), "'interval' (line 3) must be a finite number"),
    (("  max: 10", "  max: .inf"), "'retry.max' (line 11) must be a finite number"),
    (("  url: http://192.0.2.254:8750/v1/takeover-run", "  url: http://192.0.2.254:99999/v1/takeover-run"),
     "is not a valid URL: Port out of range"),
    (("  url: http://192.0.2.254:8750/v1/takeover-run", "  url: http://192.0.2.254:port/v1/takeover-run"),
     "is not a valid URL"),
    (("  url: http://192.0.2.254:8750/v1/takeover-run", "  url: http:///v1/takeover-run"), "names no host"),
    (("node: node1", "node: ''"), "'node' (line 1) must not be empty"),
    (("  url: http://192.0.2.254:8750/v1/takeover-run", "  url: https://192.0.2.254:8750/v1/takeover-run\n"
      "  ca_file: /nonexistent/ca.pem"), "'listener.ca_file' /nonexistent/ca.pem is not a file"),
    (("  url: http://192.0.2.254:8750/v1/takeover-run", "  url: http://192.0.2.254:8750/v1/takeover-run\n"
      "  ca_file: /etc/hostname"), "'listener.ca_file' needs https:// listener urls"),
])
def test_bad_config_names_the_key(tmp_path: Path, secret: Path, edit: tuple[str, str], message: str) -> None:
    text = GOOD.format(secret=secret).replace(*edit)
    with pytest.raises(wdconfig.ConfigError) as info:
        wdconfig.load(write(tmp_path, text))
    assert message in str(info.value)


def test_secret_file_must_be_private(tmp_path: Path, secret: Path) -> None:
    secret.chmod(0o644)
    with pytest.raises(wdconfig.ConfigError, match="readable by others"):
        wdconfig.load(write(tmp_path, GOOD.format(secret=secret)))


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(wdconfig.ConfigError, match="not valid YAML"):
        wdconfig.load(write(tmp_path, "node: [unclosed\n"))
    with pytest.raises(wdconfig.ConfigError, match="cannot read"):
        wdconfig.load(str(tmp_path / "nope.yml"))


def test_the_listener_backend_without_peers_is_refused_unless_the_cluster_is_one_node(tmp_path: Path,
                                                                                      secret: Path) -> None:
    """Without peers no node ever holds a lease, so the listener never declares one dead: no failover at all."""
    alone = GOOD.format(secret=secret).split("peers:")[0]
    with pytest.raises(wdconfig.ConfigError, match=r"backend listener without 'peers': .* \(no failover\)"):
        wdconfig.load(write(tmp_path, alone))
    cfg = wdconfig.load(write(tmp_path, alone + "single_node: true\n"))
    assert cfg.single_node and cfg.peers is None and cfg.lease == 0.0
    with pytest.raises(wdconfig.ConfigError, match="'single_node: true' and 'peers' contradict each other"):
        wdconfig.load(write(tmp_path, GOOD.format(secret=secret) + "single_node: true\n"))


def test_daemon_refuses_to_start_on_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pubip.node import main as wdmain

    code = wdmain.main(["--config", write(tmp_path, "node: n1\nbogus: 1\n")])
    assert code == wdmain.EXIT_ERROR
    assert "unknown key 'bogus' (line 2)" in capsys.readouterr().err


def test_metrics_exporter_serves_the_counters() -> None:
    import socket
    import urllib.request

    from pubip.node.metrics import Metrics

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    metrics = Metrics(port, "127.0.0.1")
    metrics.checks.labels("netlink").inc()
    metrics.findings.labels("missing").inc(2)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'pubip_watchdog_checks_total{trigger="netlink"} 1.0' in text
    assert 'pubip_watchdog_findings_total{rule="missing"} 2.0' in text
