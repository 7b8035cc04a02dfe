"""How the listener carries out one takeover run: ansible-runner here, or a job of an AWX job template.

A runner knows nothing of queues or liveness: run(run_id, dead, extravars, check) -> Outcome, with the
plan the run computed (from its plan task's result) for the listener to adopt.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .. import _collection
from ..awx import AwxBackend

log = logging.getLogger("pubip.listener")


@dataclass
class Outcome:
    ok: bool
    generation: int | None
    detail: str  # why it failed ("" when ok)
    plan: dict[str, Any] | None = None  # the run's plan (pubip_plan fact), when it got that far
    failures: list[str] = field(default_factory=list)
    problem_nodes: list[str] | None = None  # the hosts the finish phase blamed, when it got that far
    # a failed run that changed hosts: the record its hosts wrote (public_ips, recorded_on), from the finish phase
    achieved: dict[str, Any] | None = None


class Runner(Protocol):
    # Whether the run's action plugin shares the listener's filesystem (pubip_run_state): then the listener can
    # cancel it before it changes any host, and name nodes that died meanwhile.
    shares_run_state: bool
    # The nodes the running run has gathered (their gather answered): only those may retake an IP meanwhile.
    gathered: set[str]

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome: ...


@dataclass
class PlaybookRunner:
    """The main job through ansible-runner, from the listener's state directory."""

    state_dir: Path
    inventory: str
    stopping: threading.Event
    playbook: str = _collection.TAKEOVER_RUN  # a collection playbook's FQCN, or a path
    ssh_timeout: int = 2
    ansible_cfg: str | None = None  # a config file of the user's instead of pubip's settings (RUN_ENV)
    shares_run_state: bool = True
    gathered: set[str] = field(default_factory=set)

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        import ansible_runner

        started = time.monotonic()
        self.gathered.clear()
        found: dict[str, Any] = {"generation": None, "failures": []}

        def on_event(event: dict[str, Any]) -> bool:
            data = event.get("event_data") or {}
            kind = event.get("event")
            if kind == "playbook_on_task_start":
                task = data.get("task", "").split(" : ")[-1]
                if task != found.get("task"):  # one progress line per phase
                    log.info("Takeover run %d: %s", run_id, task)
                found["task"] = task
            elif kind == "runner_on_ok":
                res = data.get("res") or {}
                if "Gather every node" in str(data.get("task")) and not res.get("skipped"):
                    self.gathered.add(str(data.get("host")))
                if "generation" in res:
                    found["generation"] = res["generation"]
                plan = (res.get("ansible_facts") or {}).get("pubip_plan")
                if plan:
                    if found["generation"] is None:
                        found["generation"] = plan.get("generation")
                    found["plan"] = plan
            elif kind in ("runner_on_failed", "runner_on_unreachable") and not data.get("ignore_errors"):
                res = data.get("res") or {}
                found["failures"].append(f"{data.get('host')}: {res.get('msg', kind)}")
                if isinstance(res.get("problem_nodes"), list):
                    found["problem_nodes"] = [str(n) for n in res["problem_nodes"]]
                if isinstance(res.get("achieved"), dict):
                    found["achieved"] = res["achieved"]
            return True

        run_state = extravars.get("pubip_run_state")
        runstate = _collection.module_utils("runstate")

        log.info("Takeover run %d started%s", run_id, f" (dead: {', '.join(dead)})" if dead else "")
        bin_dir = str(Path(sys.executable).parent)
        ident = f"run{run_id}-{int(time.time())}"
        # A cancelled run is killed (SIGKILL, ansible-runner): Ansible's own clean-up of its local temporary
        # directory never runs, and ~/.ansible/tmp would keep one per cancelled run. The run's is the
        # listener's to remove.
        local_tmp = self.state_dir / "runner" / "tmp" / ident
        envvars = {
            **({"ANSIBLE_CONFIG": self.ansible_cfg} if self.ansible_cfg else _collection.RUN_ENV),
            "ANSIBLE_TIMEOUT": str(self.ssh_timeout),
            "ANSIBLE_LOCAL_TEMP": str(local_tmp),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        }
        # ansible-runner keeps env/ files (cmdline, extravars) between runs: a check run's --check would
        # stick to the next real run. Every run starts from a clean env/.
        shutil.rmtree(self.state_dir / "runner" / "env", ignore_errors=True)
        try:
            runner = ansible_runner.run(
                private_data_dir=str(self.state_dir / "runner"), playbook=self.playbook, inventory=self.inventory,
                extravars=extravars, envvars=envvars, quiet=True, event_handler=on_event,
                cmdline="--check --diff" if check else None,
                # a cancelled run can change no host (runstate.py): stopped at once
                cancel_callback=lambda: self.stopping.is_set() or runstate.read(run_state)["cancelled"],
                settings={"pexpect_timeout": 0.1}, ident=ident, rotate_artifacts=10)
        finally:
            shutil.rmtree(local_tmp, ignore_errors=True)
        ok = runner.status == "successful" and runner.rc == 0
        log.info("Takeover run %d %s in %.2fs (generation %s)", run_id, "finished" if ok else "FAILED",
                 time.monotonic() - started, found["generation"])
        detail = "; ".join(found["failures"]) or f"{runner.status} (rc {runner.rc})"
        return Outcome(ok, found["generation"], "" if ok else detail, found.get("plan"), found["failures"],
                       found.get("problem_nodes"), found.get("achieved"))


@dataclass
class AwxRunner:
    """The takeover run as a job of the AWX job template: launch it, follow it, read its plan."""

    awx: AwxBackend
    stopping: threading.Event
    shares_run_state: bool = False  # the job runs on an AWX execution node
    gathered: set[str] = field(default_factory=set)  # not followed per host: no retake during an AWX job

    def run(self, run_id: int, dead: list[str], extravars: dict[str, Any], check: bool = False) -> Outcome:
        from ..awx import AwxClient, AwxError

        awx = self.awx
        client = AwxClient(awx.url, awx.token, awx.api_prefix, awx.timeout, awx.verify_tls)
        started = time.monotonic()
        try:
            other = client.active_job(awx.job_template)
            if other and other.get("id"):  # one takeover run at a time, whoever launched the other
                log.info("Takeover run %d: waiting for AWX job %s (%s) of template %d", run_id, other["id"],
                         other.get("status"), awx.job_template)
                client.wait(int(other["id"]), 3600, cancelled=self.stopping.is_set)
            job = client.launch(awx.job_template, extravars, check=check)
            log.info("Takeover run %d%s: AWX job %d of template %d launched%s", run_id, " (check)" if check else "",
                     job, awx.job_template, f" (dead: {', '.join(dead)})" if dead else "")
            result = client.wait(job, 3600, on_status=lambda st: log.info("Takeover run %d: AWX job %d %s",
                                                                           run_id, job, st),
                                 cancelled=self.stopping.is_set)
            ok = result.get("status") == "successful"
            plan = client.plan(job)
        except AwxError as exc:
            log.info("Takeover run %d FAILED in %.2fs: %s", run_id, time.monotonic() - started, exc)
            return Outcome(False, None, f"AWX: {exc}")
        generation = plan.get("generation") if plan else None
        log.info("Takeover run %d %s in %.2fs (AWX job %d, generation %s)", run_id, "finished" if ok else "FAILED",
                 time.monotonic() - started, job, generation)
        detail = "" if ok else f"AWX job {job} {result.get('status')}: {result.get('job_explanation')}"
        return Outcome(ok, generation, detail, plan or None)
