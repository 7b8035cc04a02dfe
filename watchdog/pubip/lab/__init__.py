"""The local lab (a test and demo bed, not part of a deployment): N hosts as network namespaces with
their own sshd, a bridge and a controller namespace.

- base: names, paths, lab.json, commands inside namespaces, processes;
- build: lab up / down, the inventory, the watchdogs' configuration;
- services: starting and stopping the watchdogs and the listener (HA: the listeners and etcd, etcd.py);
- faults: a host dies, is cut off, boots again, restarts its network;
- observe: public IPs in each kernel, ARP answers, the listener's status;
- pyc_cache: with PUBIP_LAB_PYC_CACHE (the test suite), the hosts cache the bytecode of Ansible's modules.

Only the CLI's `lab` commands (and the tests) import it; nothing of the node or controller side does.
"""

from __future__ import annotations

from .base import (
    CONTROLLER_ADDR,
    LISTENER_PORT,
    LabError,
    alive,
    controller_env,
    existing_labs,
    host_entry,
    ip_batch,
    lab_dir,
    lab_root,
    load,
    ns_name,
    run,
    save,
)
from .build import (
    Lab,
    down,
    exec_in_controller,
    public_ips,
    render_inventory,
    run_playbook,
    target,
    validate,
    watchdog_yaml,
)
from .faults import (
    cut_host,
    heal,
    kill_host,
    partition,
    restart_network,
    revive_host,
    set_host_links,
    start_sshd,
    stop_sshd,
)
from .observe import (
    arp_answers,
    kernel_addresses,
    listener_status,
    public_by_carrier,
    public_held,
    status,
    wait_listener_idle,
)
from .services import (
    start_etcd,
    start_listener,
    start_missing,
    start_services,
    start_watchdog,
    stop_listener,
    stop_watchdog,
)

__all__ = [
    "CONTROLLER_ADDR",
    "LISTENER_PORT",
    "Lab",
    "LabError",
    "alive",
    "arp_answers",
    "controller_env",
    "cut_host",
    "down",
    "exec_in_controller",
    "existing_labs",
    "heal",
    "host_entry",
    "ip_batch",
    "kernel_addresses",
    "kill_host",
    "lab_dir",
    "lab_root",
    "listener_status",
    "load",
    "ns_name",
    "partition",
    "public_by_carrier",
    "public_held",
    "public_ips",
    "render_inventory",
    "restart_network",
    "revive_host",
    "run",
    "run_playbook",
    "save",
    "set_host_links",
    "start_etcd",
    "start_listener",
    "start_missing",
    "start_services",
    "start_sshd",
    "start_watchdog",
    "status",
    "stop_listener",
    "stop_sshd",
    "stop_watchdog",
    "target",
    "validate",
    "wait_listener_idle",
    "watchdog_yaml",
]
