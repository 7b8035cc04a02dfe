"""pubip-watchdog in lab hosts: real netlink events, real HTTP to a stand-in controller."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pubip import lab as labmod
from tests.support import labkit

pytestmark = pytest.mark.lab
FAKE = str(labkit.SUPPORT / "fake_controller.py")


class Controller:
    """tests/support/fake_controller.py in the lab's controller namespace."""

    def __init__(self, handle: labkit.LabHandle, mode: str = "listener", *args: str, port: int = 8750):
        self.out = handle.dir / f"fake-{mode}-{port}.jsonl"
        self.out.write_text("")
        extra = ["--secrets", str(handle.dir / "listener-secrets.json")] if mode == "listener" else []
        self.proc = subprocess.Popen(["ip", "netns", "exec", handle.ctl, sys.executable, FAKE, mode, str(port),
                                      str(self.out), *extra, *args], stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None and self.proc.stderr.readline().strip() == "ready"

    def requests(self) -> list[dict[str, Any]]:
        """Takeover-run requests (and AWX calls); heartbeats left out."""
        return [r for r in (json.loads(line) for line in self.out.read_text().splitlines() if line.strip())
                if r.get("path") != "/v1/heartbeat"]

    def heartbeats(self) -> list[dict[str, Any]]:
        return [r for r in (json.loads(line) for line in self.out.read_text().splitlines() if line.strip())
                if r.get("path") == "/v1/heartbeat"]

    def wait(self, count: int = 1, timeout: float = 5.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if len(got) >= count:
                return got
            time.sleep(0.02)
        return self.requests()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def lab(lab_factory) -> Iterator[labkit.LabHandle]:  # type: ignore[no-untyped-def]
    # the request machinery: without fast retake, every finding is asked for
    yield lab_factory("--nodes", "2", "--vips", "4", "--no-listener", "--no-fast-retake")


@pytest.fixture
def controller(lab: labkit.LabHandle) -> Iterator[Controller]:
    ctl = Controller(lab)
    yield ctl
    ctl.stop()


def network_restart(lab: labkit.LabHandle, host: str) -> float:
    """The seed's `networking restart`: flush eth0, put the host's own address back."""
    h = next(h for h in lab.hosts if h["name"] == host)
    subprocess.run(["ip", "-n", h["netns"], "addr", "flush", "dev", "eth0"], check=True)
    t = time.monotonic()
    subprocess.run(["ip", "-n", h["netns"], "addr", "add", f"{h['address']}/24", "dev", "eth0"], check=True)
    return t


def mine(lab: labkit.LabHandle, host: str) -> list[str]:
    return sorted(ip for ip, hs in lab.holders().items() if hs == [host])


def log_of(lab: labkit.LabHandle, host: str) -> str:
    return (Path(next(h["dir"] for h in lab.hosts if h["name"] == host)) / "watchdog.log").read_text()


def test_network_restart_is_detected_and_a_signed_request_reaches_the_listener(lab, controller) -> None:  # type: ignore
    lost = mine(lab, "node1")
    assert len(lost) == 2
    time.sleep(1.2)  # the watchdogs' first checks have run: a clean state asks nothing
    assert controller.requests() == []
    beats = controller.heartbeats()
    assert {b["node"] for b in beats} == {"node1", "node2"} and all(b["verified"] for b in beats)
    flushed = network_restart(lab, "node1")
    got = controller.wait(1)
    assert len(got) >= 1, log_of(lab, "node1")
    first = got[0]
    assert first["node"] == "node1" and first["verified"] is True
    assert sorted(f["ip"] for f in first["body"]["findings"] if f["rule"] == "missing") == lost
    assert first["t"] - flushed < 0.5  # netlink: well before the next 1 s tick
    assert f"Public address '{lost[0]}' is missing and we should serve this ip" in log_of(lab, "node1")


def test_foreign_ip_added_by_hand_is_detected(lab, controller) -> None:  # type: ignore[no-untyped-def]
    theirs = mine(lab, "node2")[0]
    lab.in_host("node1", "ip", "addr", "add", theirs, "dev", "eth0")
    got = controller.wait(1)
    assert got and got[0]["node"] == "node1"
    assert {"rule": "foreign", "ip": theirs} in got[0]["body"]["findings"]
    assert "that we should not be serving (assigned to node2)" in log_of(lab, "node1")
    # Removed from node1 at once, as CTDB does; node2 keeps serving it.
    deadline = time.monotonic() + 5
    while theirs in mine(lab, "node1") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert theirs not in mine(lab, "node1") and theirs in mine(lab, "node2")
    assert f"We are still serving a public IP '{theirs}' that we should not be serving. Removing it" in \
        log_of(lab, "node1")


def test_unassigned_ip_on_a_healthy_node_is_detected(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "2", "--vips", "2", "--no-takeover", "--no-watchdog")
    handle.set_group_var("pubip_no_ip_takeover", True)  # the run records every IP as unassigned
    assert handle.takeover_run().returncode == 0
    ctl = Controller(handle)
    try:
        labmod.start_watchdog(handle.info, "node1")
        got = ctl.wait(1)
        assert got and {f["rule"] for f in got[0]["body"]["findings"]} == {"unassigned"}
    finally:
        ctl.stop()


def test_nothing_is_requested_while_a_run_is_in_progress(lab, controller) -> None:  # type: ignore[no-untyped-def]
    rec_path = Path(lab.hosts[0]["dir"]) / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["run_started"] = rec["run_finished"] + 1.0
    rec_path.write_text(json.dumps(rec))
    network_restart(lab, "node1")
    time.sleep(2.5)
    assert controller.requests() == []
    assert "Check skipped: takeover run in progress" in log_of(lab, "node1")
    rec["run_finished"] = rec["run_started"] + 0.5
    rec_path.write_text(json.dumps(rec))
    assert controller.wait(1, timeout=3.0)


def test_controller_unreachable_backs_off_one_request_in_flight(lab) -> None:  # type: ignore[no-untyped-def]
    held_elsewhere = mine(lab, "node2")
    network_restart(lab, "node1")
    time.sleep(4.0)
    delays = [float(x) for x in re.findall(r"Takeover run request failed: .*retrying in ([0-9.]+)s",
                                            log_of(lab, "node1"))]
    assert len(delays) >= 3
    # exponential: each wait about twice the last (jitter 20 %)
    assert all(b > a * 1.2 for a, b in itertools.pairwise(delays))
    assert len(delays) <= 6  # one request at a time: no pile-up across 4 checks
    assert mine(lab, "node2") == held_elsewhere  # nothing else dropped


def test_fast_retake_puts_the_ip_back_at_once(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "2", "--vips", "4", "--no-listener")  # fast retake: the default
    ctl = Controller(handle)
    try:
        lost = mine(handle, "node1")
        time.sleep(1.2)
        flushed = network_restart(handle, "node1")
        deadline = time.monotonic() + 3
        while mine(handle, "node1") != lost and time.monotonic() < deadline:
            time.sleep(0.005)
        restored = time.monotonic() - flushed
        assert mine(handle, "node1") == lost
        assert restored < 0.5
        # the kernel matches the record again: no takeover run is asked for
        assert not ctl.wait(1, timeout=1.5), "a takeover run was requested after a complete fast retake"
        assert "Fast retake: Takeover of IP" in log_of(handle, "node1")
        assert "the record holds, no takeover run needed" in log_of(handle, "node1")
    finally:
        ctl.stop()


def awx_config(h: dict[str, Any], token_value: str, extra: list[str]) -> Path:
    """The lab host's watchdog configuration, with the AWX backend instead of the listener."""
    token = Path(h["dir"]) / "awx-token"
    token.write_text(token_value + "\n")
    token.chmod(0o600)
    cfg = Path(h["dir"]) / "watchdog-awx.yml"
    cfg.write_text(Path(h["watchdog_config"]).read_text().split("backend:")[0] + "\n".join([
        "backend: awx", "awx:", "  url: http://192.0.2.254:8052", "  job_template: 7", f"  token_file: {token}",
        *extra, ""]))
    return cfg


def test_awx_backend_launches_once_and_coalesces(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "2", "--vips", "2", "--no-watchdog")
    h = handle.hosts[0]
    cfg = awx_config(h, "s3cret-token", [f"log_file: {h['dir']}/watchdog-awx.log"])
    awx = Controller(handle, "awx", "--token", "s3cret-token", "--job-seconds", "60", port=8052)
    try:
        network_restart(handle, "node1")
        once = [sys.executable, "-m", "pubip.node.main", "--once", "--config", str(cfg)]
        first = subprocess.run(["ip", "netns", "exec", h["netns"], *once], capture_output=True, text=True)
        assert first.returncode == 1, first.stderr
        calls = awx.requests()
        assert [c["path"].split("?")[0] for c in calls] == ["/api/v2/job_templates/7/jobs/",
                                                           "/api/v2/job_templates/7/launch/"]
        assert "status__in=pending,waiting,running" in calls[0]["path"]
        assert calls[1]["body"]["extra_vars"]["pubip_requested_by"] == "node1"
        # The job launched is still active: a second finding does not launch another one.
        second = subprocess.run(["ip", "netns", "exec", h["netns"], *once], capture_output=True, text=True)
        assert second.returncode == 1
        assert [c["path"].split("?")[0] for c in awx.requests()][2:] == ["/api/v2/job_templates/7/jobs/"]
        assert re.search(r"job 100 of template 7 is already (pending|running)",
                         (Path(h["dir"]) / "watchdog-awx.log").read_text())
    finally:
        awx.stop()


def test_awx_errors_are_retried_not_fatal(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "1", "--vips", "1", "--no-watchdog")
    h = handle.hosts[0]
    cfg = awx_config(h, "wrong", ["retry:", "  initial: 0.1", "  max: 0.3", f"log_file: {h['dir']}/wd.log"])
    awx = Controller(handle, "awx", "--token", "right", port=8052)
    try:
        network_restart(handle, "node1")
        once = subprocess.run(["ip", "netns", "exec", h["netns"], sys.executable, "-m", "pubip.node.main",
                               "--once", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
        assert once.returncode == 2  # a finding, and no request got through
        assert "HTTP 401" in (Path(h["dir"]) / "wd.log").read_text()
    finally:
        awx.stop()


def test_webhook_backend_posts_the_finding_with_its_token(lab_factory) -> None:  # type: ignore[no-untyped-def]
    handle = lab_factory("--nodes", "2", "--vips", "2", "--no-watchdog")
    h = handle.hosts[0]
    token = Path(h["dir"]) / "eda-token"
    token.write_text("eda-t0ken\n")
    token.chmod(0o600)
    hook = Controller(handle, "webhook", "--token", "eda-t0ken", port=5000)
    try:
        network_restart(handle, "node1")
        for token_value, code in (("eda-t0ken", 1), ("wrong", 2)):
            token.write_text(token_value + "\n")
            cfg = Path(h["dir"]) / "watchdog-eda.yml"
            cfg.write_text(Path(h["watchdog_config"]).read_text().split("backend:")[0] + "\n".join([
                "backend: webhook", "webhook:", "  url: http://192.0.2.254:5000/endpoint", f"  token_file: {token}",
                "retry:", "  initial: 0.1", "  max: 0.3", f"log_file: {h['dir']}/wd-eda.log", ""]))
            once = subprocess.run(["ip", "netns", "exec", h["netns"], sys.executable, "-m", "pubip.node.main",
                                   "--once", "--config", str(cfg)], capture_output=True, text=True, timeout=30)
            assert once.returncode == code, once.stderr
        posted = hook.requests()
        assert len(posted) == 1 and posted[0]["path"] == "/endpoint"
        assert posted[0]["body"]["node"] == "node1"
        assert {f["rule"] for f in posted[0]["body"]["findings"]} == {"missing"}
        assert "HTTP 401" in (Path(h["dir"]) / "wd-eda.log").read_text()
    finally:
        hook.stop()


def test_once_exit_codes(lab) -> None:  # type: ignore[no-untyped-def]
    h = lab.hosts[1]
    labmod.stop_watchdog(lab.info, "node2")
    clean = subprocess.run(["ip", "netns", "exec", h["netns"], sys.executable, "-m", "pubip.node.main", "--once",
                            "--config", h["watchdog_config"]], capture_output=True, text=True)
    assert clean.returncode == 0, clean.stderr
