"""The takeover_run action plugin phase by phase, with task vars as Ansible hands them and the module
calls recorded (as ansible.posix tests its action plugins): which host is called with what, and what
each phase returns."""

from __future__ import annotations

import tempfile
from unittest.mock import MagicMock

import pytest
from ansible.errors import AnsibleActionFail
from ansible.playbook.task import Task

from ansible_collections.pubip.cluster.plugins.action.takeover_run import ActionModule

HOSTS = ["n1", "n2", "n3"]
IPS = [{"ip": "198.51.100.%d/24" % i, "interfaces": ["eth0"]} for i in range(1, 4)]
LOCKS = tempfile.mkdtemp(prefix="pubip-runlock-")  # this test session's own run locks


def report(held=()):
    return {"interfaces": [{"name": "eth0", "link": "up"}], "can_host": [i["ip"] for i in IPS],
            "public_ips": [{"ip": ip, "interface": "eth0", "link": "up"} for ip in held],
            "record": {"generation": 0}, "time": 100.0}


def task_vars(host, gathered=None, plan=None, releases=None, public_ips=IPS, **extra):
    hostvars = {}
    for h in HOSTS:
        hv = {"pubip_public_ips": public_ips, "inventory_hostname": h}
        if gathered is not None and h in gathered:
            hv["takeover_gather"] = gathered[h]
        if releases is not None:
            hv["takeover_release"] = releases.get(h, {"failed_ips": []})
        hostvars[h] = hv
    out = {"inventory_hostname": host, "hostvars": hostvars, "groups": {"pubip_nodes": HOSTS},
           "ansible_play_hosts_all": HOSTS, "pubip_public_ips": public_ips, "pubip_run_lock_dir": LOCKS, **extra}
    if plan is not None:
        out["pubip_plan"] = plan
    return out


@pytest.fixture
def action():
    calls = []

    def make(phase, check_mode=False, results=None):
        task = MagicMock(Task)
        task.args = {"phase": phase}
        task.check_mode = check_mode
        task.diff = False
        task.async_val = 0
        plugin = ActionModule(task, MagicMock(), MagicMock(), loader=None, templar=None, shared_loader_obj=None)

        def execute_module(module_name, module_args, task_vars):
            calls.append((task_vars["inventory_hostname"], module_args))
            return dict((results or {}).get(task_vars["inventory_hostname"], {"changed": True, "actions": []}))

        plugin._execute_module = execute_module
        return plugin

    make.calls = calls
    return make


def planned(gathered):
    plugin = ActionModule(MagicMock(Task, args={"phase": "plan"}, check_mode=False, diff=False, async_val=0),
                          MagicMock(), MagicMock(), loader=None, templar=None, shared_loader_obj=None)
    return plugin.run(task_vars=task_vars("n1", gathered))["ansible_facts"]["pubip_plan"]


def test_gather_skips_a_node_the_operator_named_dead_without_connecting(action):
    out = action("gather").run(task_vars=task_vars("n3", pubip_dead_nodes=["n3"]))
    assert out["skipped"] and "n3" in out["skip_reason"] and action.calls == []


def test_gather_queries_the_node_for_every_public_ip(action):
    results = {"n1": report(["198.51.100.1/24"])}
    out = action("gather", results=results).run(task_vars=task_vars("n1"))
    assert out["public_ips"][0]["ip"] == "198.51.100.1/24" and not out["changed"]
    (host, args), = action.calls
    assert host == "n1" and args["state"] == "query" and [a["ip"] for a in args["addresses"]] == [i["ip"] for i in IPS]


def test_plan_gives_each_node_one_ip_and_calls_no_host(action):
    out = action("plan").run(task_vars=task_vars("n1", {h: report() for h in HOSTS}))
    plan = out["ansible_facts"]["pubip_plan"]
    assert sorted(plan["assignment"].values()) == HOSTS and action.calls == []


def test_a_bad_inventory_stops_the_run_naming_the_culprit(action):
    bad = [{"ip": "198.51.100.1/24", "interfaces": []}]
    with pytest.raises(AnsibleActionFail, match=r"stopped before any host changed.*198.51.100.1/24"):
        action("plan").run(task_vars=task_vars("n1", {h: report() for h in HOSTS}, public_ips=bad))


def test_release_in_check_mode_calls_no_host(action):
    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    out = action("release", check_mode=True).run(task_vars=task_vars("n1", gathered, plan))
    assert out["changed"] and len(out["released"]) == 2 and action.calls == []


def test_no_host_takes_an_ip_its_holder_failed_to_release(action):
    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    stuck = plan["release"]["n1"][0]
    taker = plan["assignment"][stuck]
    releases = {"n1": {"failed_ips": [stuck], "release_msg": "EPERM"}}
    out = action("take").run(task_vars=task_vars(taker, gathered, plan, releases))
    assert out["not_taken"] == [stuck]
    assert all(a["ip"] != stuck for _h, args in action.calls for a in args["addresses"])
    holder = action("take").run(task_vars=task_vars("n1", gathered, plan, releases))
    assert holder["failed"] and stuck in holder["msg"] and "n1" in holder["msg"]


def test_a_failed_run_that_changed_hosts_says_where_it_left_every_ip(action):
    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    stuck = plan["release"]["n1"][0]
    releases = {"n1": {"failed_ips": [stuck], "release_msg": "EPERM"}}
    tv = task_vars("n1", gathered, plan, releases)
    for h in ("n2", "n3"):
        tv["hostvars"][h]["takeover_result"] = {"changed": True}  # n1 failed: it recorded nothing
    out = action("finish").run(task_vars=tv)
    assert out["failed"] and out["problem_nodes"] == ["n1"]
    where = {e["ip"]: e["node"] for e in out["achieved"]["public_ips"]}
    assert where[stuck] == "n1"  # its holder failed to release it: still there, nobody took it
    assert {ip: n for ip, n in where.items() if ip != stuck} == {ip: n for ip, n in plan["assignment"].items()
                                                                if ip != stuck}
    assert out["achieved"]["generation"] == plan["generation"] and out["achieved"]["recorded_on"] == ["n2", "n3"]
    assert "achieved" not in action("finish").run(task_vars=task_vars("n1", gathered, plan))  # it completed


def test_an_ip_whose_taker_refused_it_before_any_change_is_nobodys_in_what_the_run_achieved(action):
    """Chaos found it: a taker whose watchdog restarted between the gather and the take had no lease and
    refused; the run's account still gave it the IP, held by nobody until a later run (15 s)."""
    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    (moved, taker), = [(ip, n) for ip, n in plan["assignment"].items() if n == "n2"]
    refused = {"failed": True, "msg": "n2 has no lease", "refused_before_change": True, "public_ips": []}
    took = action("take", results={"n2": refused}).run(task_vars=task_vars(taker, gathered, plan, releases={}))
    assert took["failed"] and took["untaken"] == [moved]
    lost = {"failed": True, "msg": "Task failed: connection lost"}  # ansible-core 2.19: a connection lost mid-call
    assert action("take", results={"n2": lost}).run(task_vars=task_vars(taker, gathered, plan, releases={}))[
        "untaken"] == []
    tv = task_vars("n1", gathered, plan, releases={})
    tv["hostvars"]["n2"]["takeover_take"] = took
    for h in ("n1", "n3"):
        tv["hostvars"][h]["takeover_result"] = {"changed": True}
    out = action("finish").run(task_vars=tv)
    where = {e["ip"]: e["node"] for e in out["achieved"]["public_ips"]}
    assert where[moved] is None and out["problem_nodes"] == ["n2"]
    assert {ip: n for ip, n in where.items() if ip != moved} == {ip: n for ip, n in plan["assignment"].items()
                                                                 if ip != moved}


def test_release_passes_what_the_node_keeps_and_marks_the_run(action):
    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    action("release").run(task_vars=task_vars("n1", gathered, plan))
    (_host, args), = action.calls
    # what n1 holds after the run; anything else held there is released, even if the gather did not see it
    assert args["keep"] == [t["ip"] for t in plan["take"]["n1"]] and len(args["keep"]) == 1
    assert args["run_started"] == plan["run_started"] and sorted(a["ip"] for a in args["addresses"]) == \
        plan["release"]["n1"]


def test_a_run_the_listener_cancelled_changes_no_host(action, tmp_path):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runstate

    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    state = str(tmp_path / "runstate.json")
    assert runstate.cancel(state)
    with pytest.raises(AnsibleActionFail, match="cancelled by the listener"):
        action("release").run(task_vars=task_vars("n1", gathered, plan, pubip_run_state=state))
    assert action.calls == []


def test_once_a_host_changed_the_run_cannot_be_cancelled_and_skips_nodes_declared_dead(action, tmp_path):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runstate

    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    state = str(tmp_path / "runstate.json")
    action("release").run(task_vars=task_vars("n1", gathered, plan, pubip_run_state=state))
    assert not runstate.cancel(state)  # too late: n1 has changed
    runstate.declare_dead(state, ["n3"])
    calls = len(action.calls)
    for phase in ("release", "take", "record"):
        out = action(phase).run(task_vars=task_vars("n3", gathered, plan, pubip_run_state=state))
        assert out["skipped"] and "declared dead during the run" in out["skip_reason"]
    assert len(action.calls) == calls  # n3 was not contacted


def test_the_record_phase_tells_the_listener_where_the_takes_left_every_ip(action, tmp_path):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runstate

    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    state = str(tmp_path / "runstate.json")
    action("release").run(task_vars=task_vars("n1", gathered, plan, pubip_run_state=state))
    assert runstate.read(state)["taken"] is None  # takes may still come: no orders yet
    runstate.declare_dead(state, ["n3"])
    out = action("record").run(task_vars=task_vars("n3", gathered, plan, releases={}, pubip_run_state=state))
    assert out["skipped"]
    taken = runstate.read(state)["taken"]
    assert taken["generation"] == plan["generation"] and taken["run_id"] == plan["run_id"]
    assert {e["ip"]: e["node"] for e in taken["public_ips"]} == plan["assignment"]
    assert sorted(taken["connected"]) == ["n1", "n2", "n3"] and taken["nodes"] == plan["record"]["nodes"]
    # the first record call says it; later ones do not change it
    action("record").run(task_vars=task_vars("n1", gathered, {**plan, "generation": 99}, releases={},
                                             pubip_run_state=state))
    assert runstate.read(state)["taken"] == taken


def test_every_record_of_a_run_says_the_same_when_a_node_is_declared_dead_between_them(action, tmp_path):
    """Chaos found it: n1 failed to release an IP (so nobody took it), and the listener declared n1 dead between
    two hosts' record calls. The first call kept "the IP stays on n1" for the listener, which ordered it from the
    dead n1 to a third node; the later call, seeing n1 dead, recorded it as its planned taker's, whose watchdog
    then put it back: two holders. Every record, and the finish's account, must be the first call's."""
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runstate

    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    stuck = plan["release"]["n1"][0]
    taker = plan["assignment"][stuck]
    other = next(h for h in ("n2", "n3") if h != taker)
    releases = {"n1": {"failed_ips": [stuck], "release_msg": "EPERM"}}
    state = str(tmp_path / "runstate.json")
    action("release").run(task_vars=task_vars("n1", gathered, plan, releases, pubip_run_state=state))
    action("record").run(task_vars=task_vars(other, gathered, plan, releases, pubip_run_state=state))
    runstate.declare_dead(state, ["n1"])  # the listener, between the two record calls
    action("record").run(task_vars=task_vars(taker, gathered, plan, releases, pubip_run_state=state))
    records = {host: {e["ip"]: e["node"] for e in args["record"]["public_ips"]}
               for host, args in action.calls if "record" in args}
    assert records[taker] == records[other] and records[taker][stuck] == "n1"
    assert {e["ip"]: e["node"] for e in runstate.read(state)["taken"]["public_ips"]} == records[taker]
    tv = task_vars("n2", gathered, plan, releases, pubip_run_state=state)
    out = action("finish").run(task_vars=tv)
    assert {e["ip"]: e["node"] for e in out["achieved"]["public_ips"]} == records[taker]


def test_a_call_to_a_host_declared_dead_meanwhile_is_abandoned_not_waited_for(action, tmp_path):
    import threading
    import time

    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import runstate

    gathered = {"n1": report(["198.51.100.1/24", "198.51.100.2/24", "198.51.100.3/24"]), "n2": report(),
                "n3": report()}
    plan = planned(gathered)
    state = str(tmp_path / "runstate.json")
    hung = threading.Event()
    plugin = action("release")
    plugin._execute_module = lambda **kw: hung.wait(30) or {"changed": False}  # SSH to a host that died
    threading.Timer(0.3, runstate.declare_dead, (state, ["n1"])).start()
    started = time.monotonic()
    out = plugin.run(task_vars=task_vars("n1", gathered, plan, pubip_run_state=state))
    took = time.monotonic() - started
    hung.set()
    assert out["skipped"] and "n1 was declared dead during the run" in out["skip_reason"]
    assert took < 5, took
    # without a listener there is no one to declare it dead: the call is waited for
    plugin = action("release")
    plugin._execute_module = lambda **kw: {"changed": True, "actions": []}
    assert plugin.run(task_vars=task_vars("n1", gathered, plan))["changed"] is True


def test_a_public_ip_equal_to_a_hosts_address_or_the_listeners_stops_the_run(action):
    tv = task_vars("n1", {h: report() for h in HOSTS})
    tv["hostvars"]["n2"]["ansible_host"] = "198.51.100.2"
    with pytest.raises(AnsibleActionFail, match=r"198.51.100.2 \(pubip_public_ips\[1\]\) is n2's ansible_host"):
        action("plan").run(task_vars=tv)
    tv = task_vars("n1", {h: report() for h in HOSTS}, pubip_listener_address="198.51.100.3")
    with pytest.raises(AnsibleActionFail, match=r"198.51.100.3 .* is the listener's address"):
        action("plan").run(task_vars=tv)
    assert action.calls == []
