#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: public_ip
short_description: Take, release, move and report public (floating) IPs on a host
version_added: 0.1.0
description:
  - The host side of a pubip takeover run, after CTDB's TAKEOVER_IP / RELEASE_IP controls and its
    C(10.interface) event script, made idempotent. Works through netlink (pyroute2).
  - With O(state=present) each public IP not held is added to the best usable allowed interface (link up,
    then the fewest public IPs on it; an administratively down link is brought up), announced (gratuitous ARP
    request and reply for IPv4, unsolicited neighbour advertisement with the override flag for IPv6), then the
    C(takeip) hooks run. An IP already held on a usable interface is a redundant takeover; one held on an
    interface whose link is down moves to a usable one (C(updateip) hooks).
  - With O(state=absent) each public IP held is released - C(releaseip) hooks, TCP connections to it destroyed
    (as C(ss -K) does), address deleted; one not held is a redundant release.
  - With O(state=record) the assignment record is written atomically for the watchdog.
  - O(state=query) reports interfaces, the public IPs held, conflicts with the record and the record itself.
  - Changes are serialised with the watchdog by an interface lock (O(lock_path)).
author:
  - pubip developers
requirements:
  - pyroute2 >= 0.9.7 on the managed host (to take and release; reports need only the standard library)
  - CAP_NET_ADMIN (and CAP_NET_RAW for announcements) to change addresses
extends_documentation_fragment:
  - pubip.cluster._attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  state:
    description:
      - V(query) reports; V(present) takes the listed public IPs; V(absent) releases them;
        V(record) writes the assignment record given in O(record).
    type: str
    choices: [query, present, absent, record]
    default: query
  addresses:
    description:
      - The public IPs to take or release, or to report on with V(query) (besides those in the record).
    type: list
    elements: dict
    default: []
    suboptions:
      ip:
        description: Address with prefix, V(198.51.100.7/24) or V(2001:db8:100::7/64).
        type: str
        required: true
      interfaces:
        description: Interfaces allowed to carry it, in order of preference on ties. Required for O(state=present).
        type: list
        elements: str
        default: []
  node:
    description:
      - This host's node name, as the takeover run calls it; used to spot conflicts with the record
        (an IP held here that the record gives to another node).
      - Defaults to the node name stored in the record.
    type: str
  adopt:
    description:
      - Take over (keep) a public IP found on this host even though the record assigns it to another node.
        Without it such a conflict fails that IP.
    type: bool
    default: false
  hook_dir:
    description:
      - Directory of event hooks (CTDB's event-script convention); the same directory as the watchdog's
        C(hook_dir), so that the takeover run and the watchdog run the same hooks. Hooks must be owned by root
        and writable by nobody else.
    type: path
    default: /etc/pubip/events.d
  hook_timeout:
    description: Seconds each hook may run.
    type: float
    default: 30.0
  announce_count:
    description: Rounds of announcements after a takeover (each round is an ARP request and reply, or one NA).
    type: int
    default: 3
  announce_interval:
    description: Seconds between announcement rounds.
    type: float
    default: 0.05
  kill_connections:
    description: Destroy TCP connections to a released IP so that clients reconnect to its new holder at once.
    type: bool
    default: true
  record_path:
    description: The assignment record (JSON). Every per-host path is configurable, for hosts sharing a filesystem.
    type: path
    default: /var/lib/pubip/record.json
  lock_path:
    description: The interface lock shared with the watchdog.
    type: path
    default: /run/pubip/interfaces.lock
  lock_timeout:
    description: Seconds to wait for the interface lock.
    type: float
    default: 30.0
  run_started:
    description:
      - With O(state=present) or O(state=absent), mark a takeover run as in progress (the record's
        C(run_started), epoch seconds) before changing anything, so that the watchdog holds off.
    type: float
  run_id:
    description:
      - The takeover run's id, kept with the in-progress mark.
    type: str
  tickles:
    description:
      - With O(state=present), the TCP connections the IPs' last holder had, as a mapping of public IP address to
        a list of C([port, client address, client port]). After taking an IP this node sends each such client
        three tickle ACKs from the IP (CTDB's ctdb_sys_send_tcp - sequence and acknowledgement 0, window 1234), so
        the client's stale connection is reset at once and it reconnects.
    type: dict
  keep:
    description:
      - With O(state=absent) and O(run_started), the public IPs this node holds after the takeover run.
        Every public IP of the record held here and not listed is released too (a fast retake or order may
        have added it after the run gathered this node), and the IPs listed that the record gives this node
        are kept through the run, so the watchdog may retake them while the mark is on. The mark keeps the list
        too, and the watchdog releases at once any other public IP it finds here while the mark is on.
    type: list
    elements: str
  run_timeout:
    description:
      - Seconds after which the in-progress mark expires, on this host's monotonic clock; a watchdog never
        waits longer on a run that died mid-way.
    type: float
    default: 120.0
  lease_path:
    description:
      - The watchdog's lease file. With O(state=present), a node whose lease has run out takes nothing (it
        lost the cluster). O(state=query) reports the lease. Unset or absent file means no lease is kept.
    type: path
  term:
    description:
      - The leadership term of the listener that runs this takeover run (HA listeners; the leader key's create
        revision in etcd, which only grows). Under the interface lock, a node whose record has seen a newer term
        refuses to change anything (fencing, against a deposed leader's run), and a run records its term. Unset - not
        fenced (a run from an operator, or a single listener's, term 0).
    type: int
  record:
    description:
      - With O(state=record), the record to write. C(this_node) is derived from O(node).
    type: dict
    suboptions:
      generation:
        description: Takeover run generation.
        type: int
        required: true
      public_ips:
        description: Every public IP with its assigned node (V(null) when unassigned) and interfaces.
        type: list
        elements: dict
        required: true
      nodes:
        description: Node name to C({pnn, state}).
        type: dict
        default: {}
      run_started:
        description: Start of the takeover run, epoch seconds.
        type: float
        required: true
      run_finished:
        description: End of the takeover run, epoch seconds.
        type: float
        required: true
  ipreallocated:
    description: With O(state=record), run the C(ipreallocated) hooks after writing the record.
    type: bool
    default: false
notes:
  - IPv6 public IPs are added with C(nodad) so that they are usable at once.
  - Use M(pubip.cluster.takeover_run) to place public IPs across a cluster; this module works on one host.
seealso:
  - module: pubip.cluster.takeover_run
"""

EXAMPLES = r"""
- name: Take two public IPs on eth0 or eth1
  pubip.cluster.public_ip:
    state: present
    node: "{{ inventory_hostname }}"
    addresses:
      - ip: 198.51.100.7/24
        interfaces: [eth0, eth1]
      - ip: 2001:db8:100::7/64
        interfaces: [eth0]

- name: Release a public IP
  pubip.cluster.public_ip:
    state: absent
    addresses:
      - ip: 198.51.100.7/24

- name: Report what this host holds
  pubip.cluster.public_ip:
    state: query
  register: pubip_host
"""

RETURN = r"""
lease:
  description: The node's lease from O(lease_path) - C(valid), C(expired) (lost the cluster), or C(none).
  returned: state is query
  type: str
  sample: valid
actions:
  description: One entry per public IP with what was done (or would be, in check mode) and a CTDB-style message.
  returned: state is present or absent
  type: list
  elements: dict
  sample:
    - ip: 198.51.100.7/24
      action: take
      interface: eth0
      message: Takeover of IP 198.51.100.7/24 on interface eth0, announced (6 packets)
messages:
  description: The actions' messages, in order.
  returned: state is present or absent
  type: list
  elements: str
  sample: ["Redundant release of IP 198.51.100.8/24 (ip not held)"]
interfaces:
  description: Every interface with its index, link state, MAC and the public IPs on it.
  returned: always
  type: list
  elements: dict
  sample:
    - {name: eth0, index: 2, link: up, admin_up: true, carrier: true, mac: "02:00:00:00:00:01",
       public_ips: ["198.51.100.7/24"]}
public_ips:
  description: Public IPs (those listed and those in the record) held by this host, and where.
  returned: always
  type: list
  elements: dict
  sample: [{ip: 198.51.100.7/24, interface: eth0, link: up}]
conflicts:
  description: Public IPs held here that the record assigns to another node.
  returned: always
  type: list
  elements: dict
  sample: [{ip: 198.51.100.9/24, interface: eth0, node: node1, assigned: node2}]
can_host:
  description: Listed public IPs this host could carry (an allowed interface is up, or down only administratively).
  returned: always
  type: list
  elements: str
  sample: ["198.51.100.7/24"]
record:
  description: The assignment record after the module ran (null when none was written yet).
  returned: always
  type: dict
  sample: {generation: 3, node: node1, this_node: ["198.51.100.7/24"], run_started: 1764085000.1,
           run_finished: 1764085001.0}
refused_before_change:
  description:
    - True when a take was refused before anything changed (no lease); V(public_ips) then says what the host
      held, read under the interface lock, so a takeover run knows it took none of the other IPs. Under the
      mark of the same run (O(run_started), O(run_id)), the IPs that run kept here but the host does not hold
      leave the mark's keep list (V(record)), so the watchdog retakes none of them either.
  returned: when a take is refused that way (the task fails)
  type: bool
fenced:
  description:
    - True when the run's O(term) is older than the newest this node has seen; nothing was changed.
  returned: when the run is refused that way (the task fails)
  type: bool
  sample: true
hooks:
  description: The ipreallocated hooks that ran.
  returned: state is record
  type: list
  elements: str
  sample: ["50.services"]
"""

import json

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import hooks as _hooks
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import host as _host
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import leasefile as _lease
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import netlink as _netlink
from ansible_collections.pubip.cluster.plugins.module_utils._pubip import record as _record
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.addresses import SpecError, parse_specs
from ansible_collections.pubip.cluster.plugins.module_utils._pubip.locking import InterfaceLock, LockTimeout

ARGUMENT_SPEC = dict(
    state=dict(type="str", default="query", choices=["query", "present", "absent", "record"]),
    addresses=dict(type="list", elements="dict", default=[], options=dict(
        ip=dict(type="str", required=True),
        interfaces=dict(type="list", elements="str", default=[]),
    )),
    node=dict(type="str"),
    adopt=dict(type="bool", default=False),
    hook_dir=dict(type="path", default="/etc/pubip/events.d"),
    hook_timeout=dict(type="float", default=30.0),
    announce_count=dict(type="int", default=3),
    announce_interval=dict(type="float", default=0.05),
    kill_connections=dict(type="bool", default=True),
    record_path=dict(type="path", default="/var/lib/pubip/record.json"),
    lock_path=dict(type="path", default="/run/pubip/interfaces.lock"),
    lock_timeout=dict(type="float", default=30.0),
    run_started=dict(type="float"),
    run_id=dict(type="str"),
    keep=dict(type="list", elements="str"),
    tickles=dict(type="dict"),
    run_timeout=dict(type="float", default=120.0),
    lease_path=dict(type="path", default="/run/pubip/lease.json"),
    term=dict(type="int"),
    record=dict(type="dict", options=dict(
        generation=dict(type="int", required=True),
        public_ips=dict(type="list", elements="dict", required=True),
        nodes=dict(type="dict", default={}),
        run_started=dict(type="float", required=True),
        run_finished=dict(type="float", required=True),
    )),
    ipreallocated=dict(type="bool", default=False),
)


def main():
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_if=[("state", "record", ("record",))],
        supports_check_mode=True,
    )
    p = module.params
    state = p["state"]
    if state in ("present", "absent") and not _netlink.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2"), exception=_netlink.PYROUTE2_IMPORT_ERROR)
    try:
        specs = parse_specs(p["addresses"], need_interfaces=(state == "present"))
        existing = _record.read(p["record_path"])
    except (SpecError, ValueError) as exc:
        module.fail_json(msg=str(exc))
    node = p["node"] or (existing or {}).get("node")
    settings = _host.Settings(
        node=node, hook_dir=p["hook_dir"], hook_timeout=p["hook_timeout"], announce_count=p["announce_count"],
        announce_interval=p["announce_interval"], record_path=p["record_path"], lock_path=p["lock_path"],
        lock_timeout=p["lock_timeout"], adopt=p["adopt"], kill_connections=p["kill_connections"], hook_sandbox=True,
        tickles={str(k).split("/", 1)[0]: v for k, v in (p["tickles"] or {}).items() if isinstance(v, list)})
    with _netlink.Netlink() as nl:
        ifaces = nl.interfaces()
        if state == "query":
            module.exit_json(changed=False, lease=_lease.state(p["lease_path"]),
                             **_host.report(ifaces, specs, existing, settings))
        if state == "record":
            _record_state(module, nl, settings, existing)
        _change_state(module, nl, ifaces, specs, existing, settings)


def _public_addresses(specs, record):
    known = {pip.address for pip in specs}
    known.update(e["ip"].split("/", 1)[0] for e in (record or {}).get("public_ips", []))
    return known


def _change_state(module, nl, ifaces, specs, existing, settings):
    p = module.params
    try:
        if p["state"] == "present":
            _host.validate_interfaces(ifaces, specs)
    except SpecError as exc:
        module.fail_json(msg=str(exc))
    public = _public_addresses(specs, existing)
    unkept_release = p["state"] == "absent" and p["keep"] is not None and p["run_started"] is not None
    if p["state"] == "present":
        if _lease.state(p["lease_path"]) == _lease.EXPIRED:
            msg = "%s has no lease (%s): it lost the cluster, so it takes no public IP" % (node_name(settings),
                                                                                          p["lease_path"])
            try:  # what it holds, read under the lock (the watchdog adds only while holding it): the run counts
                with InterfaceLock(settings.lock_path, settings.lock_timeout):  # on this take having added none
                    now = nl.interfaces()
                    record = _record.read(settings.record_path)
                    # and what the run kept here but this take does not add, the watchdog must not add either
                    forgone = _record.forgo_keep(record, p["run_started"], p["run_id"],
                                                 {a for i in now.values() for a, _p, _v in i.addresses})
                    if forgone is not None and not module.check_mode:
                        _record.write(settings.record_path, forgone)
                        record = forgone
                    module.fail_json(msg=msg, refused_before_change=True, **_host.report(now, specs, record, settings))
            except LockTimeout:
                module.fail_json(msg=msg)
        actions = _host.plan_take(ifaces, specs, existing, settings, public)
    else:
        actions = _release_actions(p, ifaces, specs, existing)
    changed = any(a.changes for a in actions)
    before, after = _host.diff_lists(ifaces, actions, public)
    if (changed or unkept_release) and not module.check_mode:
        if not _netlink.has_cap_net_admin():
            module.fail_json(msg="changing addresses needs CAP_NET_ADMIN, which this process lacks (run as root)")
        try:
            with InterfaceLock(settings.lock_path, settings.lock_timeout):
                if unkept_release:  # again under the lock: the watchdog adds only while holding it
                    ifaces = nl.interfaces()
                    existing = _record.read(settings.record_path)
                    actions = _release_actions(p, ifaces, specs, existing)
                    changed = any(a.changes for a in actions)
                    before, after = _host.diff_lists(ifaces, actions, public)
                _refuse_stale_term(module, settings)
                if p["run_started"] is not None:
                    _mark_run_started(module, settings, existing)
                _host.apply_actions(nl, actions, settings)
                ifaces = nl.interfaces()
        except LockTimeout as exc:
            module.fail_json(msg=str(exc))
    elif p["run_started"] is not None and not module.check_mode and not unkept_release:
        with InterfaceLock(settings.lock_path, settings.lock_timeout):
            _refuse_stale_term(module, settings)
            _mark_run_started(module, settings, existing)
    result = dict(changed=changed, actions=[a.as_dict() for a in actions], messages=[a.message for a in actions])
    result.update(_host.report(ifaces, specs, _record.read(settings.record_path), settings))
    if module._diff:
        result["diff"] = dict(before="".join(x + "\n" for x in before), after="".join(x + "\n" for x in after))
    failed = [a for a in actions if a.error]
    if failed:
        module.fail_json(msg="; ".join(a.message for a in failed), **result)
    module.exit_json(**result)


def _release_actions(p, ifaces, specs, existing):
    if p["keep"] is None:
        return _host.plan_release(ifaces, specs)
    return _host.plan_release(ifaces, specs + _host.unkept(ifaces, existing, p["keep"], specs))


def node_name(settings):
    return settings.node or "this node"


def _refuse_stale_term(module, settings):
    """Under the interface lock: a run of an older leader's term changes nothing here (fencing)."""
    stale = _record.stale_term(_record.read(settings.record_path), module.params["term"])
    if stale:
        module.fail_json(msg="Takeover run refused on %s: %s" % (node_name(settings), stale), fenced=True)


def _mark_run_started(module, settings, existing):
    p = module.params
    _record.write(settings.record_path, _record.with_term(
        _record.mark(existing, settings.node, p["run_started"], p["run_id"], p["run_timeout"], keep=p["keep"]),
        p["term"]))


def _record_state(module, nl, settings, existing):
    new = _record.with_term(_record.from_run(module.params["record"], settings.node),
                            max(_record.term(existing), module.params["term"] or 0))
    changed = new != existing
    result = dict(changed=changed, hooks=[])
    if changed and not module.check_mode:
        try:
            with InterfaceLock(settings.lock_path, settings.lock_timeout):
                _refuse_stale_term(module, settings)
                _record.write(settings.record_path, new)
        except (LockTimeout, OSError) as exc:
            module.fail_json(msg="cannot write the assignment record %s: %s" % (settings.record_path, exc))
    if module.params["ipreallocated"] and not module.check_mode:
        try:
            result["hooks"] = _hooks.run_hooks(settings.hook_dir, "ipreallocated", [], settings.hook_timeout,
                                               settings.hook_sandbox)
        except _hooks.HookError as exc:
            module.fail_json(msg=str(exc), **result)
    if module._diff:
        result["diff"] = dict(before=_dump(existing), after=_dump(new))
    result.update(_host.report(nl.interfaces(), [], new if not module.check_mode else existing, settings))
    module.exit_json(**result)


def _dump(rec):
    return json.dumps(rec, indent=1, sort_keys=True) + "\n" if rec else ""


if __name__ == "__main__":
    main()
