"""playbooks/deploy.yml (role pubip.cluster.watchdog) on lab hosts, and its systemd units checked offline."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pubip.node import config as wdconfig
from tests import labkit

pytestmark = pytest.mark.lab
VENV = str(Path(sys.executable).parent.parent)
UNITS = ["pubip-watchdog.service", "pubip-watchdog-check.service", "pubip-watchdog-check.timer"]


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
                     "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET"):
            assert line in service
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


def test_deploy_with_the_webhook_backend_for_event_driven_ansible(lab_factory) -> None:  # type: ignore
    handle = lab_factory("--nodes", "1", "--vips", "1", "--no-watchdog", "--no-takeover")
    done = deploy(handle, "-e", "watchdog_backend=webhook", "-e", "watchdog_webhook_url=http://192.0.2.254:5000/endpoint",
                  "-e", "watchdog_webhook_token=eda-t0ken", "-e", "watchdog_release_foreign=false")
    assert done.returncode == 0, done.stdout[-3000:]
    cfg = wdconfig.load(str(Path(handle.hosts[0]["dir"]) / "etc" / "watchdog.yml"))
    assert cfg.backend == "webhook" and cfg.webhook is not None and cfg.webhook.token == "eda-t0ken"
    assert cfg.release_foreign is False and cfg.release_on_link_loss is True and cfg.fast_takeover is True
