# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The controller side of a takeover run (CTDB's ctdb_takeover_run), one phase per task.

gather (every node: public_ip state=query) -> plan (run_once, on the controller)
-> release (every node) -> take (every node) -> record (every node) -> finish (run_once).
Unreachable is not dead: a node that cannot be gathered keeps its IPs (pinned) unless it is dead by the
listener's quorum or the operator's word (pubip_dead_nodes), or the inventory says pubip_unreachable_is_dead.
Ansible's linear strategy finishes a task on every host before the next task
starts: that is the barrier that keeps every release before any take.
Phases with nothing to do for a host return without connecting to it.
"""

from __future__ import annotations

import threading
import time

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

# Imported here so that the strategy, which loads this plugin before forking
# its workers, pays for NumPy once rather than every worker.
from ansible_collections.pubip.cluster.plugins.module_utils import ipalloc
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runlock as _runlock
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runstate as _runstate
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import takeover as _takeover

try:
    import numpy  # noqa: F401
except ImportError:  # pragma: no cover - only lcp2 needs it, and says so
    pass

display = Display()
MODULE = "pubip.cluster.public_ip"
ABANDON_POLL = 0.1  # seconds between looks at the run state while a public_ip call runs
HOST_SETTINGS = {
    "record_path": "pubip_record_path",
    "lock_path": "pubip_lock_path",
    "hook_dir": "pubip_hook_dir",
    "hook_timeout": "pubip_hook_timeout",
    "announce_count": "pubip_announce_count",
    "announce_interval": "pubip_announce_interval",
    "lease_path": "pubip_lease_path",
    "run_timeout": "pubip_run_timeout",
    "term": "pubip_term",  # the leader's term (HA listeners): a node that has seen a newer one refuses the run
}

ARGUMENT_SPEC = dict(
    phase=dict(type="str", required=True, choices=["gather", "plan", "release", "take", "record", "finish"]),
    group=dict(type="str", default="pubip_nodes"),
    public_ips=dict(type="list", elements="raw"),
    algorithm=dict(type="str"),
    no_ip_failback=dict(type="bool"),
    no_ip_takeover=dict(type="bool"),
    gather_var=dict(type="str", default="takeover_gather"),
    release_var=dict(type="str", default="takeover_release"),
    take_var=dict(type="str", default="takeover_take"),
    record_var=dict(type="str", default="takeover_result"),
)


def _addresses_in_use(hosts, hostvars, task_vars):
    """Addresses no public IP may be: every node's ansible_host, and the listener's (pubip_listener_address)."""
    import ipaddress

    out = {}
    for h in hosts:
        value = hostvars[h].get("ansible_host")
        try:
            out[str(ipaddress.ip_address(str(value)))] = "%s's ansible_host" % h
        except ValueError:
            pass  # a name, not an address
    listener = task_vars.get("pubip_listener_address")
    if listener:
        try:
            out[str(ipaddress.ip_address(str(listener)))] = "the listener's address"
        except ValueError:
            pass
    return out


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _VALID_ARGS = frozenset(ARGUMENT_SPEC)

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        host = task_vars["inventory_hostname"]
        try:
            handler = getattr(self, "_" + args["phase"])
            result.update(handler(args, host, task_vars))
        except (_takeover.InventoryError, ipalloc.AllocationInputError) as exc:
            raise AnsibleActionFail("Takeover run stopped before any host changed: %s" % exc)
        return result

    # --- helpers --------------------------------------------------------------
    def _cluster(self, args, task_vars):
        """The inventory contract, validated: (nodes, ips, options)."""
        hostvars = task_vars["hostvars"]
        group = args["group"]
        hosts = list(task_vars["groups"].get(group) or [])
        if not hosts:
            raise _takeover.InventoryError("group %s has no hosts" % group)
        first = hostvars[hosts[0]]

        def setting(name, default):
            value = args.get(name)
            return value if value is not None else first.get("pubip_" + name, default)

        host_vars = {h: {k: hostvars[h][k] for k in ("pubip_pnn", "pubip_state") if k in hostvars[h]} for h in hosts}
        # Runtime node states from the listener (pubip disable / enable) win over the inventory.
        for h, state in (task_vars.get("pubip_state_overrides") or {}).items():
            if h not in host_vars:
                raise _takeover.InventoryError("pubip_state_overrides names %r, which is not a host of group %s"
                                               % (h, group))
            host_vars[h]["pubip_state"] = state
        algorithm = setting("algorithm", "lcp2")
        nodes, ips = _takeover.validate_inventory(hosts, setting("public_ips", []), algorithm, host_vars,
                                                  _addresses_in_use(hosts, hostvars, task_vars))
        options = {"algorithm": algorithm, "no_ip_failback": bool(setting("no_ip_failback", False)),
                   "no_ip_takeover": bool(setting("no_ip_takeover", False))}
        return nodes, ips, options

    def _module_args(self, task_vars, **args):
        for option, var in HOST_SETTINGS.items():
            if task_vars.get(var) is not None:
                args[option] = task_vars[var]
        args["node"] = task_vars["inventory_hostname"]
        return args

    def _call(self, task_vars, **args):
        """public_ip on this host. With a listener (pubip_run_state), a call still waiting on a host the
        listener declares dead meanwhile is abandoned: its lease is gone, so it holds nothing and takes
        nothing whatever the call does, and the run need not wait for SSH to give up on it (seconds)."""
        module_args = self._module_args(task_vars, **args)
        state_path = task_vars.get("pubip_run_state")
        if not state_path:
            return self._execute_module(module_name=MODULE, module_args=module_args, task_vars=task_vars)
        host = task_vars["inventory_hostname"]
        done = {}

        def call():
            try:
                done["result"] = self._execute_module(module_name=MODULE, module_args=module_args,
                                                      task_vars=task_vars)
            except BaseException as exc:  # handed to the task's own thread
                done["error"] = exc

        worker = threading.Thread(target=call, name="pubip-public-ip", daemon=True)
        worker.start()
        while True:
            worker.join(ABANDON_POLL)
            if not worker.is_alive():
                break
            if host in _runstate.read(state_path)["dead"]:
                display.warning("%s was declared dead during the run: not waiting for its public_ip call" % host)
                return {"failed": True, "abandoned": True, "msg": "%s was declared dead during the run" % host}
        if "error" in done:
            raise done["error"]
        return done["result"]

    @staticmethod
    def _plan_of(task_vars):
        plan = task_vars.get("pubip_plan") or (task_vars.get("ansible_facts") or {}).get("pubip_plan")
        if not plan:
            raise AnsibleActionFail("no takeover plan: the plan phase must run before release, take and record")
        return plan

    # --- phases ---------------------------------------------------------------
    def _gather(self, args, host, task_vars):
        _nodes, ips, _options = self._cluster(args, task_vars)
        if host in (task_vars.get("pubip_dead_nodes") or []):
            # The listener saw this node's heartbeats stop: do not wait on SSH to a dead host.
            return {"changed": False, "skipped": True, "skip_reason": "%s is dead (no heartbeats)" % host}
        addresses = [{"ip": ip["ip"], "interfaces": ip["interfaces"]} for ip in ips]
        res = self._call(task_vars, state="query", addresses=addresses)
        if res.get("failed"):
            return res
        keep = ("interfaces", "public_ips", "can_host", "conflicts", "record", "time")
        out = {k: res.get(k) for k in keep}
        out["changed"] = False
        for c in res.get("conflicts") or []:
            display.warning("Conflict on %s: IP %s is held on interface %s, the record gives it to %s"
                            % (host, c["ip"], c["interface"], c["assigned"]))
        return out

    def _plan(self, args, host, task_vars):
        nodes, ips, options = self._cluster(args, task_vars)
        hostvars = task_vars["hostvars"]
        play_hosts = set(task_vars.get("ansible_play_hosts_all") or [])
        dead = set(task_vars.get("pubip_dead_nodes") or [])
        unreachable_is_dead = bool(hostvars[nodes[0]["name"]].get("pubip_unreachable_is_dead", False))
        gathered, pinned = {}, {}
        for node in nodes:
            name = node["name"]
            if play_hosts and name not in play_hosts:
                raise _takeover.InventoryError(
                    "host %s of group %s is not in this play (--limit?): a takeover run needs every node"
                    % (name, args["group"]))
            report = hostvars[name].get(args["gather_var"])
            if report and not report.get("failed") and not report.get("unreachable") and "can_host" in report:
                gathered[name] = report
            elif name not in dead and not unreachable_is_dead:
                why = (report or {}).get("msg") or ("unreachable" if (report or {}).get("unreachable") else "no report")
                pinned[name] = " ".join(str(why).split())[:300]
        for name, why in sorted(pinned.items()):
            display.warning("%s could not be gathered (%s): alive as far as anyone knows, so its public IPs stay "
                            "with it (pubip_dead_nodes names a node that is down)" % (name, why))
        plan = _takeover.plan(nodes, ips, gathered, now=time.time(),
                              move_requests=task_vars.get("pubip_moveip") or {}, pinned=pinned,
                              reported=task_vars.get("pubip_reported_holds") or {},
                              may_hold=task_vars.get("pubip_may_hold") or {},
                              rebalance=task_vars.get("pubip_rebalance_nodes") or [],
                              generation_floor=task_vars.get("pubip_generation_floor") or 0, **options)
        plan["run_id"] = "%s-%d" % (time.strftime("%Y%m%dT%H%M%S"), int(time.time() * 1000) % 1000000)
        if plan["changed"] and not self._task.check_mode:
            # One run at a time per cluster on this controller, whoever started it (runlock.py).
            key = "%s|%s|%s" % (task_vars.get("inventory_dir") or "", args["group"],
                                ",".join(sorted(n["name"] for n in nodes)))
            try:
                _runlock.acquire(_runlock.path_for(key, task_vars.get("pubip_run_lock_dir")), plan["run_id"])
            except _runlock.RunLocked as exc:
                raise AnsibleActionFail("Takeover run stopped before any host changed: %s" % exc)
        plan["summary"] = _takeover.summary(plan, nodes)
        for line in plan["log"]:
            display.vv("ipalloc: %s" % line)
        msg = ["%s %s -> %s" % (m["ip"], m["from"] or "-", m["to"] or "-") for m in plan["moves"]]
        # Reported as a change only to preview it (check or diff mode): the callback shows diffs of changes.
        preview = bool(self._task.check_mode or self._task.diff) and plan["moving"]
        out = {"changed": preview, "ansible_facts": {"pubip_plan": plan}, "moves": plan["moves"],
               "msg": "Planned moves: " + ("; ".join(msg) if msg else "none")}
        if self._task.diff:
            before = {}
            for name, report in gathered.items():
                for held in report.get("public_ips") or []:
                    before[held["ip"]] = name
            out["diff"] = {"before": "".join("%s %s\n" % (ip, before.get(ip, "-")) for ip in plan["assignment"]),
                           "after": "".join("%s %s\n" % (ip, n or "-") for ip, n in plan["assignment"].items()),
                           "before_header": "holders now", "after_header": "holders after the run"}
        return out

    @staticmethod
    def _failed_releases(plan, args, hostvars, dead):
        """host -> the IPs it failed to release (takeover.failed_releases), from the registered results."""
        recorded = {name: _takeover.recorded_ips((hostvars[name].get(args["gather_var"]) or {}).get("record"), name)
                    for name in plan["connected"]}
        return _takeover.failed_releases(plan, {name: hostvars[name].get(args["release_var"])
                                                for name in plan["connected"]}, recorded, dead)

    @staticmethod
    def _for_listener(plan, public_ips, **extra):
        """What the listener plans fast takeover orders from during this run (runstate.py)."""
        return dict({"generation": plan["generation"], "run_id": plan.get("run_id"), "public_ips": public_ips,
                     "nodes": plan["record"]["nodes"], "connected": plan["connected"],
                     "algorithm": plan.get("algorithm"), "options": plan.get("options"),
                     "allowed": plan.get("allowed")}, **extra)

    @staticmethod
    def _dead_now(task_vars):
        """Nodes the listener declared dead during this run (pubip_run_state): skipped from then on."""
        return set(_runstate.read(task_vars.get("pubip_run_state"))["dead"])

    def _release(self, args, host, task_vars):
        plan = self._plan_of(task_vars)
        if host not in plan["connected"]:
            return {"changed": False, "skipped": True, "skip_reason": "%s is disconnected" % host}
        mine = plan["release"].get(host, [])
        if not plan["changed"] or self._task.check_mode:
            return {"changed": bool(mine), "released": mine if self._task.check_mode else [], "failed_ips": []}
        go_on, state = _runstate.begin_changes(task_vars.get("pubip_run_state"), self._for_listener(
            plan, plan["record"]["public_ips"], moving=sorted({m["ip"] for m in plan["moves"]})))
        if not go_on:
            raise AnsibleActionFail("Takeover run cancelled by the listener before any host changed "
                                    "(a node died: fast takeover instead, and a new run)")
        if host in state["dead"]:
            return {"changed": False, "skipped": True, "skip_reason": "%s was declared dead during the run" % host}
        # Every public IP held here that this node does not keep is released, not only those gathered held.
        keep = [t["ip"] for t in plan["take"].get(host, [])]
        res = self._call(task_vars, state="absent", addresses=[{"ip": ip} for ip in mine], keep=keep,
                         run_started=plan["run_started"], run_id=plan.get("run_id"))
        if res.get("abandoned"):
            return {"changed": False, "skipped": True, "skip_reason": res["msg"]}
        failed_ips = sorted(a["ip"] for a in res.get("actions") or [] if a.get("error"))
        if res.get("failed") and not failed_ips:
            failed_ips = list(mine)  # the module failed before it could say which
        if not res.get("failed"):
            _runstate.released(task_vars.get("pubip_run_state"), host)
        return {"changed": bool(res.get("changed")), "released": sorted(set(mine) - set(failed_ips)),
                "failed_ips": failed_ips, "messages": res.get("messages") or [], "release_msg": res.get("msg")}

    def _take(self, args, host, task_vars):
        plan = self._plan_of(task_vars)
        if host not in plan["connected"]:
            return {"changed": False, "skipped": True, "skip_reason": "%s is disconnected" % host}
        hostvars = task_vars["hostvars"]
        dead = self._dead_now(task_vars)
        if host in dead:
            return {"changed": False, "skipped": True, "skip_reason": "%s was declared dead during the run" % host}
        failed = self._failed_releases(plan, args, hostvars, dead)
        held_ok = {h["ip"] for h in (hostvars[host].get(args["gather_var"]) or {}).get("public_ips") or []
                   if h.get("link") == "up"}
        step = _takeover.take_phase(plan, host, failed, held_ok)
        out = {"changed": False, "taken": [], "messages": []}
        if step["todo"] and self._task.check_mode:
            out.update(changed=True, taken=[t["ip"] for t in step["todo"]])
        elif step["todo"]:
            # the connections another node had to the IPs taken here (the listener's pubip_tickles)
            tickles = {ip: held[1] for ip, held in (task_vars.get("pubip_tickles") or {}).items()
                       if held and held[0] != host and any(t["ip"] == ip for t in step["todo"])}
            res = self._call(task_vars, state="present", addresses=step["wanted"], adopt=True,
                             run_started=plan["run_started"], run_id=plan.get("run_id"),
                             **({"tickles": tickles} if tickles else {}))
            if res.get("abandoned"):
                return {"changed": False, "skipped": True, "skip_reason": res["msg"]}
            out.update(changed=bool(res.get("changed")), messages=res.get("messages") or [],
                       taken=[a["ip"] for a in res.get("actions") or [] if a["action"] in ("take", "move")])
            if res.get("failed"):
                record = (hostvars[host].get(args["gather_var"]) or {}).get("record")
                out.update(failed=True, msg="Takeover on %s failed: %s" % (host, res.get("msg")),
                           untaken=_takeover.untaken_ips(step["wanted"], res, record, host))
                return out
        if step["own_stuck"]:
            rel = hostvars[host].get(args["release_var"]) or {}
            out.update(failed=True, msg="Release of IP %s on %s failed, so no other node took it: %s"
                       % (", ".join(step["own_stuck"]), host, rel.get("release_msg") or "see the release task"))
        if step["not_taken"]:
            out["not_taken"] = step["not_taken"]
            display.warning("%s did not take %s: its holder failed to release it"
                            % (host, ", ".join(step["not_taken"])))
        return out

    def _record(self, args, host, task_vars):
        plan = self._plan_of(task_vars)
        out = {"changed": False, "summary": plan["summary"], "moves": plan["moves"], "counts": plan["counts"],
               "generation": plan["generation"]}
        if host not in plan["connected"]:
            out.update(skipped=True, skip_reason="%s is disconnected" % host)
            return out
        if not plan["changed"]:
            return out
        if self._task.check_mode:
            out.update(changed=True, summary="Check mode: planned, nothing changed.\n" + plan["summary"])
            return out
        # What the run achieved, not only what it planned: an IP whose holder failed to release it stays that
        # holder's in every record (no watchdog may think it should hold it and put it back).
        public_ips = self._where_takes_left(plan, args, task_vars)
        dead = self._dead_now(task_vars)
        if host in dead:
            out.update(skipped=True, skip_reason="%s was declared dead during the run" % host)
            return out
        record = {"generation": plan["generation"], "public_ips": public_ips,
                  "nodes": plan["record"]["nodes"], "run_started": plan["run_started"], "run_finished": time.time()}
        res = self._call(task_vars, state="record", record=record, ipreallocated=True)
        if res.get("abandoned"):
            out.update(skipped=True, skip_reason=res["msg"])
            return out
        if res.get("failed"):
            out.update(failed=True, msg="Recording the assignment on %s failed: %s" % (host, res.get("msg")))
            return out
        out.update(changed=True, hooks=res.get("hooks") or [])
        return out

    def _where_takes_left(self, plan, args, task_vars):
        """Where the run's takes left each IP, the same for every host's record and for the listener: the first
        host to ask decides (runstate.takes_done). Every take is done (the record task starts after the take
        task ended on every host), so the listener may order the IPs of nodes dying from now on at once."""
        dead = self._dead_now(task_vars)
        hostvars = task_vars["hostvars"]
        untaken = {name: (hostvars[name].get(args["take_var"]) or {}).get("untaken") or []
                   for name in plan["connected"] if name not in dead}
        public_ips = _takeover.achieved(plan, self._failed_releases(plan, args, hostvars, dead), untaken)
        kept = _runstate.takes_done(task_vars.get("pubip_run_state"), self._for_listener(plan, public_ips))
        if kept and kept.get("run_id") == plan.get("run_id") and isinstance(kept.get("public_ips"), list):
            return kept["public_ips"]
        return public_ips

    def _finish(self, args, host, task_vars):
        """Run once, last: the summary, and a failure naming every host that kept the run from completing."""
        plan = self._plan_of(task_vars)
        hostvars = task_vars["hostvars"]
        results = {name: {"release": hostvars[name].get(args["release_var"]),
                          "take": hostvars[name].get(args["take_var"]),
                          "record": hostvars[name].get(args["record_var"])} for name in plan["connected"]}
        dead = self._dead_now(task_vars)
        problems = _takeover.finish(plan, results, dead)
        out = {"changed": False, "summary": plan["summary"], "generation": plan["generation"]}
        if problems:
            if plan["changed"] and not self._task.check_mode:
                # What the hosts that recorded this run recorded (as _record): where the IPs are now, for the
                # listener's fast takeover until a run completes.
                out["achieved"] = {"generation": plan["generation"],
                                   "public_ips": self._where_takes_left(plan, args, task_vars),
                                   "recorded_on": sorted(n for n in plan["connected"]
                                                         if (hostvars[n].get(args["record_var"]) or {}).get("changed"))}
            out.update(failed=True, problems=[why for _name, why in problems],
                       problem_nodes=sorted({name for name, _why in problems}),
                       msg="Takeover run generation %d incomplete: %s"
                       % (plan["generation"], "; ".join(why for _name, why in problems)))
        return out
