"""docs/install.md, followed literally on lab hosts that boot systemd (tests/support/machines.py).

Its `bash` block builds the release here (in a copy of the checkout); its `sh` blocks run on the controller
machine, in order, in one shell. Then a node dies and the survivors must hold its IPs; a hook shows that a
takeover run's hooks and the watchdog's run under the same sandbox.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pubip import lab
from tests.support import labkit, machines

pytestmark = [pytest.mark.lab, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "install.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)

# A hook of the test's own beside the document's 10.log: what a hook may do, as it saw it on each path.
PROBE = """#!/bin/sh
out=/var/log/pubip/probe.$1.$$
{ echo "uid=$(id -u)"; grep '^CapEff' /proc/self/status
  if touch /etc/pubip-probe 2>/dev/null; then echo "etc=writable"; rm -f /etc/pubip-probe; else echo "etc=read-only"; fi
  env | grep -v -e '^_=' -e '^PWD=' -e '^SHLVL=' -e '^PUBIP_EVENT=' | sort | sed 's/^/env:/'; } > "$out"
"""


def blocks(kind: str) -> list[str]:
    return [body for lang, body in FENCE.findall(DOC.read_text()) if lang == kind]


def build_release(dest: Path) -> Path:
    """The document's bash block, in a copy of the checkout (a build in this one would race other tests'),
    with this checkout's venv; returns the dist directory."""
    labkit.copy_checkout(dest)  # mtimes kept: make sees the venv up to date
    (script,) = blocks("bash")
    env = {**os.environ, "VENV": str(ROOT / ".venv")}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=dest, env=env, text=True,
                          capture_output=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return dest / "dist"


def wait_held(handle: labkit.LabHandle, ips: list[str], among: list[str], timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        holders = handle.holders()
        if all(len(holders.get(ip, [])) == 1 and holders[ip][0] in among for ip in ips):
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"not every one of {ips} held once by {among} within {timeout}s: {handle.holders()}")


def probes(node: machines.Machine) -> dict[str, dict[str, str]]:
    """event -> what the probe hook saw (the last run of each event)."""
    seen: dict[str, dict[str, str]] = {}
    for f in sorted((node.root / "var/log/pubip").glob("probe.*"), key=lambda p: p.stat().st_mtime):
        event = f.name.split(".")[1]
        lines = f.read_text().splitlines()
        seen[event] = dict(line.split(":", 1) if line.startswith("CapEff:") else line.split("=", 1)
                           for line in lines if not line.startswith("env:"))
        seen[event]["env"] = " ".join(line[4:] for line in lines if line.startswith("env:"))
    return seen


def test_install_md_on_hosts_that_boot_systemd(lab_factory: Any, tmp_path: Path) -> None:
    handle = lab_factory("--nodes", "3", "--vips", "6", "--no-watchdog", "--no-takeover")
    ips = handle.info["public_ips"]
    doc = DOC.read_text()
    assert all(f"{{ip: {ip}, interfaces: [eth0]}}" in doc for ip in ips), "the document's public IPs are the lab's"
    dist = build_release(tmp_path / "checkout")
    for h in handle.hosts:  # the machines' own sshds (systemd's) take port 22
        os.kill(h["sshd_pid"], 15)
    key = (handle.dir / "authorized_keys").read_text()
    booted: list[machines.Machine] = []
    try:
        nodes = {h["name"]: machines.boot(h["name"], h["netns"], tag=handle.name, authorized_key=key)
                 for h in handle.hosts}
        booted += nodes.values()
        ctl = machines.boot("controller", handle.ctl, tag=handle.name, authorized_key=key,
                            private_key=handle.dir / "id_ed25519")
        booted.append(ctl)
        shutil.copytree(dist, ctl.root / "root/pubip-dist", ignore=shutil.ignore_patterns("*.tar.gz"))
        for m in booted:
            assert m.wait_running() in ("running", "degraded")

        # The document, literally.
        script = "set -euo pipefail\n" + "\n".join(blocks("sh"))
        t0 = time.monotonic()
        done = ctl.sh(script, timeout=1200)
        took = time.monotonic() - t0
        assert done.returncode == 0, f"docs/install.md failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
        print(f"docs/install.md ran in {took:.0f}s")
        wait_held(handle, ips, list(nodes), timeout=10)

        # What it made: the units under systemd, the listener as its own user.
        for name, node in nodes.items():
            active = node.sh("systemctl is-active pubip-watchdog.service pubip-watchdog-leave.service")
            assert active.stdout.split() == ["active", "active"], (name, active.stdout, active.stderr)
        listener = ctl.sh("systemctl show -p ActiveState -p User -p Type pubip-listener.service")
        assert sorted(listener.stdout.split()) == ["ActiveState=active", "Type=notify", "User=pubip"], listener.stdout

        # Hooks on both paths: the probe beside the document's hook, on every node.
        for node in nodes.values():
            probe = node.root / "etc/pubip/events.d/20.probe"
            probe.write_text(PROBE)
            probe.chmod(0o755)

        # A node dies: its IPs go to the survivors (the watchdogs' takeip: the fast path).
        victim = "node3"
        lost = [ip for ip, hs in handle.holders().items() if hs == [victim]]
        assert lost
        t0 = time.monotonic()
        lab.cut_host(handle.info, victim)
        survivors = [n for n in nodes if n != victim]
        moved = wait_held(handle, lost, survivors, timeout=30)
        print(f"{victim}'s {len(lost)} IPs held by the survivors {moved:.2f}s after it died")
        assert moved <= 10

        # A takeover run by the listener (as its own user), which knows node3 is dead: ipreallocated on the
        # survivors, the run's path.
        again = ctl.sh("PATH=/opt/pubip/venv/bin:$PATH pubip reloadips")
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        for name in survivors:
            seen = probes(nodes[name])
            assert {"takeip", "ipreallocated"} <= set(seen), (name, sorted(seen))
            fast, run = seen["takeip"], seen["ipreallocated"]
            assert fast == run, f"{name}: a hook saw {fast} under the watchdog and {run} in a takeover run"
            assert fast["etc"] == "read-only" and fast["uid"] == "0"
            log = (nodes[name].root / "var/log/pubip/events").read_text()
            assert "takeip eth0" in log and "ipreallocated" in log, log

        status = ctl.sh("PATH=/opt/pubip/venv/bin:$PATH pubip status --json")
        assert status.returncode == 1, status.stdout + status.stderr  # a node is dead
        assert json.loads(status.stdout)["nodes"][victim]["liveness"] == "dead"
    except BaseException:
        for m in (m for m in booted if m.init_pid() is not None):  # the journals, for whoever reads the failure
            units = "-u pubip-listener" if m.name == "controller" else "-u pubip-watchdog"
            print(f"--- {m.name}: journalctl {units}\n" + m.sh(f"journalctl --no-pager -n 40 {units}").stdout)
        raise
    finally:
        for m in booted:
            machines.remove(m)
