"""The listener's AWX backend, and the AWX client's error handling, against tests/support/fake_controller.py:
a stand-in for AWX's documented API v2 (no AWX server can run here). With --run-playbook its jobs
really run the takeover run on the lab hosts."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pubip import lab as labmod
from tests.integration.test_listener import status, wait_idle, wait_until
from tests.support import labkit

pytestmark = pytest.mark.lab
FAKE = str(labkit.SUPPORT / "fake_controller.py")
TOKEN = "awx-t0ken"


class FakeAwx:
    def __init__(self, lab: labkit.LabHandle, port: int, *args: str):
        self.out = lab.dir / f"fake-awx-{port}.jsonl"
        self.out.write_text("")
        self.proc = subprocess.Popen(["ip", "netns", "exec", lab.ctl, sys.executable, FAKE, "awx", str(port),
                                      str(self.out), "--token", TOKEN, *args], stderr=subprocess.PIPE, text=True,
                                     env=lab.env())
        assert self.proc.stderr is not None and self.proc.stderr.readline().strip() == "ready"

    def calls(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.read_text().splitlines() if line.strip()]

    def launches(self) -> list[dict[str, Any]]:
        return [c for c in self.calls() if c["path"].endswith("/launch/")]

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def lab(lab_factory) -> Iterator[labkit.LabHandle]:  # type: ignore[no-untyped-def]
    # Watchdogs without a listener yet: the AWX-backed listener started by each test gets their heartbeats.
    yield lab_factory("--nodes", "3", "--vips", "6", "--no-listener", "--no-takeover")


def start_awx_listener(lab: labkit.LabHandle, port: int, template: int = 7) -> subprocess.Popen[bytes]:
    token = lab.dir / "awx-token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", lab.ctl, sys.executable, "-m", "pubip.cli", "listen", "--inventory", lab.inventory,
         "--secrets", str(lab.dir / "listener-secrets.json"), "--state-dir", str(lab.dir / "listener"),
         "--bind", labmod.CONTROLLER_ADDR, "--port", str(labmod.LISTENER_PORT),
         "--log-file", str(lab.dir / "listener.log"), "--backend", "awx",
         "--awx-url", f"http://{labmod.CONTROLLER_ADDR}:{port}", "--awx-job-template", str(template),
         "--awx-token-file", str(token)], env=lab.env())
    lab.info["listener_pid"] = proc.pid
    labmod.save(lab.info)
    wait_until(lambda: (lab.dir / "listener.log").exists() and "Listener on" in (lab.dir / "listener.log")
               .read_text(), 20)
    return proc


def test_the_listener_runs_takeover_runs_as_awx_jobs(lab: labkit.LabHandle) -> None:
    awx = FakeAwx(lab, 8052, "--run-playbook")
    try:
        start_awx_listener(lab, 8052)  # a new listener starts with a takeover run
        wait_until(lambda: any(r["success"] for r in status(lab)["runs"]), 120, lab)
        st = wait_idle(lab)
        holders = lab.holders()
        assert all(len(hs) == 1 for hs in holders.values()), holders
        assert st["generation"] == 1 and len(st["public_ips"]) == 6
        launch = awx.launches()[0]
        assert launch["path"] == "/api/v2/job_templates/7/launch/"
        # no pubip_run_state: the job runs elsewhere, so the listener cannot cancel it by that file
        assert set(launch["body"]["extra_vars"]) == {"pubip_dead_nodes", "pubip_moveip", "pubip_state_overrides",
                                                        "pubip_reported_holds", "pubip_rebalance_nodes",
                                                        "pubip_listener_address", "pubip_tickles",
                                                        "pubip_generation_floor", "pubip_may_hold", "pubip_term"}
        log = (lab.dir / "listener.log").read_text()
        assert "AWX job 100 of template 7 launched" in log and "AWX job 100 successful" in log
        # A preview goes to AWX as a check job and changes nothing.
        before = lab.holders()
        preview = json.loads(labkit.pubip("disable", "node2", "--check", "--lab", lab.name, "--json",
                                          timeout=300).stdout)
        assert preview["success"] is True and {m["from"] for m in preview["moves"]} == {"node2"}
        assert awx.launches()[-1]["body"]["job_type"] == "check"
        assert lab.holders() == before
    finally:
        awx.stop()


def test_a_refused_launch_is_retried_with_backoff_until_a_job_runs(lab: labkit.LabHandle) -> None:
    awx = FakeAwx(lab, 8053, "--fail-first", "2", "--fail-code", "503", "--job-seconds", "0.3")
    try:
        start_awx_listener(lab, 8053)
        wait_until(lambda: any(r["success"] for r in status(lab)["runs"]), 60, lab)
        runs = status(lab)["runs"]
        failed = [r for r in runs if r["success"] is False]
        assert len(failed) == 2 and all("HTTP 503" in r["detail"] for r in failed)
        assert len(awx.launches()) == 3
        assert "retrying in" in (lab.dir / "listener.log").read_text()
    finally:
        awx.stop()


DRIVER = """
import json, sys
from pubip.awx import AwxClient, AwxError
url, token, template = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = AwxClient(url, token, timeout=3)
out = {}
for name, call in (("active", lambda: client.active_job(template)),
                   ("launch", lambda: client.launch(template, {"pubip_dead_nodes": []})),
                   ("job", lambda: client.job(999))):
    try:
        out[name] = {"ok": call()}
    except AwxError as exc:
        out[name] = {"code": exc.code, "retryable": exc.retryable, "message": str(exc)}
print(json.dumps(out))
"""


@pytest.mark.parametrize(("fake_args", "token", "template", "expect"), [
    ((), "wrong", 7, {"active": 401, "launch": 401}),  # a bad token
    ((), TOKEN, 8, {"active": 404, "launch": 404}),  # no such job template
    (("--status", "400"), TOKEN, 7, {"launch": 400}),  # missing launch input
    (("--status", "409"), TOKEN, 7, {"launch": 409}),  # cannot launch now
    (("--status", "500"), TOKEN, 7, {"launch": 500}),  # the server broke
])
def test_awx_client_names_each_error_and_retries_only_what_may_pass(
        lab: labkit.LabHandle, fake_args: tuple[str, ...], token: str, template: int, expect: dict[str, int]) -> None:
    awx = FakeAwx(lab, 8054, *fake_args)
    try:
        out = lab.in_controller(sys.executable, "-c", DRIVER, f"http://{labmod.CONTROLLER_ADDR}:8054", token,
                                str(template), check=True)
        result = json.loads(out.stdout)
        for call, code in expect.items():
            assert result[call]["code"] == code, result
            assert f"HTTP {code}" in result[call]["message"]
            assert result[call]["retryable"] is (code >= 500 or code == 409)
        assert result["job"]["code"] in (401, 404)  # unknown job, or unknown token
        if token == TOKEN and template == 7:
            assert result["active"] == {"ok": None}
    finally:
        awx.stop()
        time.sleep(0.1)
    assert not Path(f"/proc/{awx.proc.pid}").exists() or awx.proc.returncode is not None
