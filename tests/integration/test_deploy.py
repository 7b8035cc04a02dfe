"""playbooks/deploy.yml (role pubip.cluster.watchdog) on lab hosts, and its systemd units checked offline."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pubip.node import config as wdconfig
from tests.support import labkit

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
VENV = str(Path(sys.executable).parent.parent)
UNITS = ["pubip-watchdog.service", "pubip-watchdog-check.service", "pubip-watchdog-check.timer",
         "pubip-watchdog-leave.service"]


def deploy(handle: labkit.LabHandle, *extra: str) -> subprocess.CompletedProcess[str]:
    doc = handle.inventory_doc()
    for name, hv in doc["all"]["children"]["pubip_nodes"]["hosts"].items():
        d = next(h["dir"] for h in handle.hosts if h["name"] == name)
        hv.update(watchdog_config_dir=f"{d}/etc", watchdog_unit_dir=f"{d}/units", watchdog_secret=f"s-{name}")
    doc["all"]["children"]["pubip_nodes"]["vars"].update(
        watchdog_install=False, watchdog_manage_service=False, watchdog_venv=VENV, watchdog_peer_secret="peer-s3cret",
        watchdog_listener_url="http://192.0.2.254:8750/v1/takeover-run")
    handle.write_inventory(doc)
    return handle.playbook("playbooks/deploy.yml", *extra)


@pytest.mark.slow
def test_deploy_writes_a_valid_config_private_secret_and_hardened_units(lab_factory) -> None:  # type: ignore
    handle = lab_factory("--nodes", "2", "--vips", "2", "--no-watchdog", "--no-takeover")
    first = deploy(handle)
    assert first.returncode == 0, first.stdout[-3000:]
    for h in handle.hosts:
        etc = Path(h["dir"]) / "etc"
        cfg = wdconfig.load(str(etc / "watchdog.yml"))
        assert cfg.node == h["name"] and cfg.listener is not None and cfg.listener.secret == f"s-{h['name']}"
        # leases: every other node is a peer, by its address, with the cluster's peer secret
        assert cfg.lease == 1.0 and cfg.peers is not None and cfg.peers.secret == "peer-s3cret"
        assert cfg.peers.nodes == {o["name"]: o["address"] for o in handle.hosts if o["name"] != h["name"]}
        assert stat.S_IMODE((etc / "peer-secret").stat().st_mode) == 0o600
        assert stat.S_IMODE((etc / "secret").stat().st_mode) == 0o600
        units = Path(h["dir"]) / "units"
        for unit in UNITS:
            assert (units / unit).exists()
        service = (units / "pubip-watchdog.service").read_text()
        for line in ("Type=notify", "WatchdogSec=10", "Restart=always",
                     "NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                     "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW", "SystemCallFilter=@system-service",
                     "CPUSchedulingPolicy=fifo",
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"):
            assert line in service
        leave = (units / "pubip-watchdog-leave.service").read_text()  # graceful shutdown, not on restart
        assert "After=network-online.target pubip-watchdog.service" in leave and "RemainAfterExit=yes" in leave
        assert "--leave --timeout 15 --config" in leave and "PartOf" not in leave and "BindsTo" not in leave
        verify = subprocess.run(["systemd-analyze", "verify", *[str(units / u) for u in UNITS]],
                                capture_output=True, text=True)
        assert verify.returncode == 0, verify.stderr
        security = subprocess.run(["systemd-analyze", "security", "--offline=true", "--json=short",
                                   str(units / "pubip-watchdog.service")], capture_output=True, text=True)
        assert security.returncode == 0, security.stderr
        exposure = json.loads(security.stdout)
        assert isinstance(exposure, list) and exposure
    second = deploy(handle)
    assert second.returncode == 0
    assert " changed=0 " in second.stdout.replace("changed=0    ", " changed=0 ")
    # HA listeners: two pubip_controller hosts - every watchdog heartbeats both
    doc = handle.inventory_doc()
    doc["all"]["children"]["pubip_controller"] = {"hosts": {
        "ctl1": {"ansible_host": "192.0.2.254", "listener_bind": "192.0.2.254"},
        "ctl2": {"ansible_host": "192.0.2.253"}}}
    handle.write_inventory(doc)
    ha = handle.playbook("playbooks/deploy.yml", "--limit", "pubip_nodes")
    assert ha.returncode == 0, ha.stdout[-3000:]
    cfg = wdconfig.load(str(Path(handle.hosts[0]["dir"]) / "etc" / "watchdog.yml"))
    assert cfg.listener is not None and cfg.listener.urls == [
        "http://192.0.2.254:8750/v1/takeover-run", "http://192.0.2.253:8750/v1/takeover-run"]


def test_deploy_refuses_a_cluster_without_leases_and_runs_the_webhook_backend(lab_factory) -> None:  # type: ignore
    handle = lab_factory("--nodes", "1", "--vips", "1", "--no-watchdog", "--no-takeover")
    refused = deploy(handle, "-e", "watchdog_peer_secret=")  # the role's default: no peer secret
    assert refused.returncode != 0
    assert "watchdog_peer_secret is empty: without it the watchdogs hold no lease" in refused.stdout
    assert not (Path(handle.hosts[0]["dir"]) / "etc").exists()  # nothing changed on the host
    bad = deploy(handle, "-e", "watchdog_interval=often", "-e", "watchdog_mode=cron")  # checked by the role's spec
    assert bad.returncode != 0 and "watchdog_interval" in bad.stdout and "watchdog_mode" in bad.stdout, bad.stdout
    assert not (Path(handle.hosts[0]["dir"]) / "etc").exists()
    missing = deploy(handle, "-e", '{"pubip_public_ips": [{"ip": "198.51.100.1/24", "interfaces": ["eth0", "eth9"]}]}')
    assert missing.returncode != 0, missing.stdout[-2000:]
    assert "interface eth9 of pubip_public_ips is not on node1 (it has lo, eth0)" in missing.stdout, missing.stdout
    assert not (Path(handle.hosts[0]["dir"]) / "etc").exists()
    done = deploy(handle, "-e", "watchdog_backend=webhook", "-e", "watchdog_webhook_url=http://192.0.2.254:5000/endpoint",
                  "-e", "watchdog_webhook_token=eda-t0ken", "-e", "watchdog_release_foreign=false")
    assert done.returncode == 0, done.stdout[-3000:]
    cfg = wdconfig.load(str(Path(handle.hosts[0]["dir"]) / "etc" / "watchdog.yml"))
    assert cfg.backend == "webhook" and cfg.webhook is not None and cfg.webhook.token == "eda-t0ken"
    assert cfg.release_foreign is False and cfg.release_on_link_loss is True and cfg.fast_takeover is True


def test_deploy_the_listener_role_on_the_controller(tmp_path: Path) -> None:
    """The listener role into a prefix of this machine (no systemd here): secrets 0600, a state directory of its
    own, its settings in a file that pubip listen --check-config passed, a Type=notify unit that passes
    systemd-analyze; without a bind address, or with one that is not this host's, it refuses, naming it."""
    inventory = tmp_path / "inventory.yml"
    (tmp_path / "cluster.yml").write_text("all: {}\n")  # the cluster's inventory, there before the listener
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "listener_user": "root",
            "listener_install": False, "listener_venv": VENV, "listener_manage_service": False,
            "listener_config_dir": str(tmp_path / "etc"), "listener_unit_dir": str(tmp_path / "units"),
            "listener_state_dir": str(tmp_path / "state"), "listener_inventory": str(tmp_path / "cluster.yml"),
            "listener_secrets": {"node1": "s1" * 16, "node2": "s2" * 16, "_admin": "a" * 32}}
    inventory.write_text(json.dumps({"all": {"children": {"pubip_controller": {"hosts": {"ctl": host}}}}}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT / "collection")}
    cmd = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory), "pubip.cluster.deploy"]
    refused = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert refused.returncode != 0 and "listener_bind" in refused.stdout
    elsewhere = subprocess.run([*cmd, "-e", "listener_bind=192.0.2.254"], capture_output=True, text=True, env=env,
                               cwd=tmp_path, timeout=300)
    assert elsewhere.returncode != 0 and "listener_bind 192.0.2.254 is not an address of this host" in elsewhere.stdout
    assert not (tmp_path / "etc").exists()  # refused before any change
    done = subprocess.run([*cmd, "-e", "listener_bind=127.0.0.1"], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    secrets = tmp_path / "etc/listener-secrets.json"
    assert json.loads(secrets.read_text())["node1"] == "s1" * 16 and stat.S_IMODE(secrets.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    unit = tmp_path / "units/pubip-listener.service"
    text = unit.read_text()
    assert f"listen --config {tmp_path}/etc/listener.yml" in text and "Type=notify" in text
    assert "WatchdogSec=30" in text and "NoNewPrivileges=yes" in text
    settings = (tmp_path / "etc/listener.yml").read_text()
    assert 'bind: "127.0.0.1"' in settings and "port: 8750" in settings
    assert "listener: http://127.0.0.1:8750" in (tmp_path / "etc/cli.yml").read_text()
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    security = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)], capture_output=True,
                              text=True)
    assert security.returncode == 0, security.stderr
    again = subprocess.run([*cmd, "-e", "listener_bind=127.0.0.1"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
    assert again.returncode == 0 and "changed=0" in again.stdout
