#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

# This file only documents the takeover_run action plugin (plugins/action/takeover_run.py).

from __future__ import annotations

DOCUMENTATION = r"""
---
module: takeover_run
short_description: One phase of a pubip takeover run - gather, plan, release, take, record, finish
version_added: 0.1.0
description:
  - The controller side of CTDB's C(ctdb_takeover_run), split in phases that the role
    M(pubip.cluster.takeover) (and C(playbooks/takeover_run.yml)) runs in order. Each phase finishes on every
    node before the next starts (linear strategy), so every node releases before any node takes over.
  - V(gather) queries every node with M(pubip.cluster.public_ip) (C(state=query)); register its result as
    C(takeover_gather). A node named in the extra var C(pubip_dead_nodes) - the listener's quorum decision, or
    the operator's word that the host is down - is not even contacted and is DISCONNECTED; its IPs move.
  - Unreachable is not dead. A node that is unreachable or fails the gather (use C(ignore_unreachable) and
    C(ignore_errors)) is pinned - the IPs the newest assignment record gives it stay its own, counted as held,
    and it gets nothing new - and the run ends failed naming it. From the listener, C(pubip_reported_holds) (node
    to the IPs its watchdog reported holding after the run closed the fast paths) replaces the record for a pinned
    node, and C(pubip_may_hold) (for nodes without such a report, what they last reported and what fast takeover
    orders put on them) adds to it. A cluster that runs no watchdogs can keep
    CTDB's old rule (unreachable means DISCONNECTED) with the group var C(pubip_unreachable_is_dead=true).
  - A node whose watchdog reports no lease (C(pubip_lease_path); it lost the cluster) hosts nothing.
  - The extra var C(pubip_state_overrides) (node to state, from the listener - C(pubip disable), C(pubip stop),
    C(pubip ban), a failing C(monitor) hook - and their undoing) wins over C(pubip_state); C(pubip_moveip) (IP to
    node, from C(pubip moveip)) makes the plan start as if that node held the IP, so it stays there when the node
    can host it; C(pubip_rebalance_nodes) (nodes that came back) get their share back (CTDB's
    force_rebalance_nodes) unless C(pubip_no_ip_failback).
  - With C(pubip_run_state) (a file on the controller, from the listener) the run can be cancelled before it
    changes any host, and skips nodes the listener declares dead during the run; it tells the listener its plan,
    the nodes it has released and, as its record phase begins, where its takes left every IP.
  - C(pubip_generation_floor) (from the listener) is the newest generation any host may have recorded, gathered
    here or not (a run cut short, a host not reached); a run that changes anything records a newer one, so no two
    assignments share a generation.
  - V(plan) (C(run_once)) validates the inventory and computes the assignment once with the allocation engine
    (CTDB's lcp2, det or nondet); the plan becomes the fact C(pubip_plan) on every node. Any inventory error stops
    the run here, before any node changes. In check and diff mode it shows the holders before and after.
  - V(release) releases on each node what it must no longer hold, and marks the run in progress in the node's
    assignment record; register it as C(takeover_release). A node that fails to release an IP keeps it and no other
    node takes it in this run; the run then fails naming the node and the IP.
  - V(take) takes over on each node what is assigned to it (adopting IPs it already holds); register it as
    C(takeover_take). Use C(ignore_unreachable) on release, take and record - a node lost mid-run keeps what it may
    hold (no other node takes an IP it did not release), the others go on.
  - V(record) writes the assignment record (new generation, run start and end) on every connected node and runs
    the C(ipreallocated) hooks. Its result carries C(summary), a C(ctdb ip)-like table with the counts moved,
    kept and unassigned.
  - V(finish) (C(run_once), last) fails naming every node that kept the run from completing - pinned, unreachable,
    or failing a phase - and why.
  - A phase with nothing to do for a node returns without connecting to it; a run that changes nothing changes
    no record either.
  - "Inventory contract: hosts in one group (O(group)); group vars C(pubip_public_ips) (a list of
    C({ip: 198.51.100.10/24, interfaces: [eth0, eth1], nodes: [optional host names]})), C(pubip_algorithm)
    (V(lcp2), V(det), V(nondet)), C(pubip_no_ip_failback), C(pubip_no_ip_takeover); host vars C(pubip_pnn)
    (else the inventory order), C(pubip_state) (V(enabled), V(disabled), V(stopped), V(banned), V(unhealthy)),
    and the per-node paths and knobs C(pubip_record_path), C(pubip_lock_path), C(pubip_hook_dir), C(pubip_hook_timeout),
    C(pubip_announce_count), C(pubip_announce_interval)."
author:
  - pubip developers
requirements:
  - numpy on the controller (lcp2)
  - pyroute2 on the nodes (see M(pubip.cluster.public_ip))
extends_documentation_fragment:
  - pubip.cluster._attributes
attributes:
  check_mode:
    support: full
    details: Gathers and plans; prints the planned moves; changes no node.
  diff_mode:
    support: full
    details: The plan phase shows every public IP's holder before and after the run.
  platform:
    platforms: posix
options:
  phase:
    description: The phase to run; see the description.
    type: str
    required: true
    choices: [gather, plan, release, take, record, finish]
  group:
    description: The inventory group of the cluster's nodes. Every node must be in the play (no C(--limit)).
    type: str
    default: pubip_nodes
  public_ips:
    description: The public IPs; defaults to the group var C(pubip_public_ips).
    type: list
    elements: raw
  algorithm:
    description: Allocation algorithm; defaults to C(pubip_algorithm), else V(lcp2).
    type: str
  no_ip_failback:
    description: Do not move IPs back to nodes that become healthy (CTDB's NoIPFailback); defaults to
      C(pubip_no_ip_failback).
    type: bool
  no_ip_takeover:
    description: Place and move no IPs (CTDB's NoIPTakeover); defaults to C(pubip_no_ip_takeover).
    type: bool
  gather_var:
    description: Name of the variable the gather phase is registered as.
    type: str
    default: takeover_gather
  release_var:
    description: Name of the variable the release phase is registered as.
    type: str
    default: takeover_release
  take_var:
    description: Name of the variable the take phase is registered as.
    type: str
    default: takeover_take
  record_var:
    description: Name of the variable the record phase is registered as.
    type: str
    default: takeover_result
notes:
  - Use the role M(pubip.cluster.takeover) rather than calling the phases by hand.
seealso:
  - module: pubip.cluster.public_ip
"""

EXAMPLES = r"""
- name: Gather every node's interfaces and public IPs
  pubip.cluster.takeover_run:
    phase: gather
  ignore_unreachable: true
  ignore_errors: true
  register: takeover_gather

- name: Plan the assignment
  pubip.cluster.takeover_run:
    phase: plan
  run_once: true

- name: Release public IPs that must leave a node
  pubip.cluster.takeover_run:
    phase: release
  ignore_unreachable: true
  register: takeover_release

- name: Take over assigned public IPs
  pubip.cluster.takeover_run:
    phase: take
  ignore_unreachable: true
  register: takeover_take

- name: Record the assignment and run ipreallocated hooks
  pubip.cluster.takeover_run:
    phase: record
  ignore_unreachable: true
  register: takeover_result

- name: Fail for every node that kept the run from completing
  pubip.cluster.takeover_run:
    phase: finish
  run_once: true
"""

RETURN = r"""
moves:
  description: Public IPs whose holder changes (from V(null) when unheld, to V(null) when left unassigned).
  returned: phases plan and record
  type: list
  elements: dict
  sample: [{ip: 198.51.100.7/24, from: node1, to: node3, also_held_by: []}]
summary:
  description: A C(ctdb ip)-like table of every public IP and its node, with the counts moved, kept and unassigned.
  returned: phase record
  type: str
  sample: "Takeover run generation 4 (lcp2): 2 moved, 4 kept, 0 unassigned"
counts:
  description: How many public IPs moved, kept their node, or stayed unassigned.
  returned: phase record
  type: dict
  sample: {moved: 2, kept: 4, unassigned: 0}
generation:
  description: The takeover run's generation (unchanged when the run changed nothing).
  returned: phase record
  type: int
  sample: 4
released:
  description: Public IPs this node released.
  returned: phase release
  type: list
  elements: str
  sample: ["198.51.100.7/24"]
failed_ips:
  description: Public IPs this node failed to release (no other node takes them in this run).
  returned: phase release
  type: list
  elements: str
  sample: []
taken:
  description: Public IPs this node took over or moved to another interface.
  returned: phase take
  type: list
  elements: str
  sample: ["198.51.100.8/24"]
problems:
  description: Why the run is incomplete, one line per node (pinned, unreachable, or failing a phase).
  returned: phase finish, when the run failed
  type: list
  elements: str
  sample: ["node1 could not be gathered (unreachable); its public IPs 198.51.100.1/24 stay with it"]
ansible_facts:
  description: The plan, as the fact C(pubip_plan), for the later phases.
  returned: phase plan
  type: dict
  sample: {pubip_plan: {generation: 4, assignment: {198.51.100.7/24: node3}}}
"""
