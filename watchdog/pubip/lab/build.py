"""The local lab: N hosts as network namespaces with their own sshd.

Layout of one lab called NAME (every namespace is prefixed ``pubip-NAME-`` so
labs of parallel test runs never collide):

* ``pubip-NAME-br``   holds the bridges ``br0`` (and ``br1`` with ``--eth1``);
* ``pubip-NAME-ctl``  the controller, 192.0.2.254, from which Ansible runs;
* ``pubip-NAME-nodeK`` host K: ``eth0`` 192.0.2.K/24 (``eth1`` 203.0.113.K/24),
  ``lo``, and an sshd listening on 192.0.2.K only.

Nothing is configured in the root namespace, and only documentation ranges
are used. The lab directory holds keys, sshd configs, per-host state
directories, the inventory and ``lab.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import protocol
from .base import (
    CONTROLLER_ADDR,
    ETH1_NET,
    HOST_NET,
    LISTENER_PORT,
    MAX_LISTENERS,
    MAX_NODES,
    MAX_VIPS,
    NAME_RE,
    SSHD,
    VIP6_NET,
    VIP_NET,
    LabError,
    controller_env,
    ip_batch,
    kill_netns_processes,
    lab_dir,
    list_netns,
    load,
    ns_name,
    run,
    save,
)


def validate(name: str, nodes: int, vips: int) -> None:
    if not NAME_RE.match(name):
        raise LabError(
            f"invalid lab name {name!r}: use 1-16 characters of a-z, 0-9 and '-', starting with a letter or digit"
        )
    if not 1 <= nodes <= MAX_NODES:
        raise LabError(f"--nodes {nodes} is out of range: a lab has 1 to {MAX_NODES} hosts")
    if not 0 <= vips <= MAX_VIPS:
        raise LabError(f"--vips {vips} is out of range: a lab has 0 to {MAX_VIPS} public IPs")


def public_ips(vips: int, ipv6: bool, vips6: int | None = None) -> list[str]:
    """VIPS IPv4 public IPs, and with IPV6 as many IPv6 ones (VIPS6 of them when given)."""
    ips = [f"{VIP_NET}.{i}/24" for i in range(1, vips + 1)]
    if ipv6:
        ips += [f"{VIP6_NET}{i:x}/64" for i in range(1, (vips if vips6 is None else vips6) + 1)]
    return ips


@dataclass
class Lab:
    name: str
    nodes: int
    vips: int = 0
    ipv6: bool = False
    eth1: bool = False
    watchdog: bool = True
    fast_retake: bool = True
    vips6: int | None = None
    listeners: int = 1  # 2 or more: HA listeners listener1..N, leading through a lease in a 3-member etcd
    dir: Path = field(init=False)

    def __post_init__(self) -> None:
        validate(self.name, self.nodes, self.vips)
        if not 1 <= self.listeners <= MAX_LISTENERS:
            raise LabError(f"--listeners {self.listeners} is out of range: a lab has 1 to {MAX_LISTENERS}")
        if self.vips6 is not None and not 0 <= self.vips6 <= MAX_VIPS:
            raise LabError(f"--vips6 {self.vips6} is out of range: a lab has 0 to {MAX_VIPS} IPv6 public IPs")
        self.dir = lab_dir(self.name)

    # --- naming -----------------------------------------------------------
    def host_name(self, i: int) -> str:
        return f"node{i}"

    def host_ns(self, i: int) -> str:
        return ns_name(self.name, self.host_name(i))

    @property
    def br_ns(self) -> str:
        return ns_name(self.name, "br")

    @property
    def ctl_ns(self) -> str:
        return ns_name(self.name, "ctl")

    def controller_hosts(self) -> list[dict[str, Any]]:
        """The listener hosts (HA: listener1..N; listener1 is the controller namespace) and the hosts of the etcd
        members (listener1..3, or etcdK beside 2 listeners): {name, netns, address, tag}."""
        if self.listeners == 1:
            return []
        hosts = [{"name": f"listener{k}", "netns": self.ctl_ns if k == 1 else ns_name(self.name, f"listener{k}"),
                  "address": f"{HOST_NET}.{255 - k}", "tag": "ctl" if k == 1 else f"l{k}", "listener": True}
                 for k in range(1, self.listeners + 1)]
        hosts += [{"name": f"etcd{k}", "netns": ns_name(self.name, f"etcd{k}"), "address": f"{HOST_NET}.{250 - k}",
                   "tag": f"x{k}", "listener": False} for k in range(self.listeners + 1, 4)]
        return hosts

    @property
    def interfaces(self) -> list[str]:
        return ["eth0", "eth1"] if self.eth1 else ["eth0"]

    # --- watchdogs -------------------------------------------------------------
    def _write_watchdog_configs(self, info: dict[str, Any]) -> None:
        secrets = {}
        _secret_file(self.dir / "peer-secret", os.urandom(24).hex())  # the cluster's secret for peer heartbeats
        for h in info["hosts"]:
            hdir = Path(h["dir"])
            secrets[h["name"]] = _secret_file(hdir / "secret", os.urandom(24).hex())
            (hdir / "watchdog.yml").write_text(watchdog_yaml(h, info, self.fast_retake))
            h["watchdog_config"] = str(hdir / "watchdog.yml")
        secrets[protocol.ADMIN] = os.urandom(24).hex()  # pubip disable / enable / moveip / reloadips
        fd = os.open(self.dir / "listener-secrets.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(secrets, f)

    # --- building -----------------------------------------------------------
    def up(self, progress: Any = print) -> dict[str, Any]:
        if any(ns.startswith(ns_name(self.name, "")) for ns in list_netns()) or self.dir.exists():
            raise LabError(f"lab {self.name!r} already exists (pubip lab down --name {self.name} removes it)")
        try:
            self.dir.mkdir(parents=True)
            progress(f"lab {self.name}: creating {self.nodes} hosts in {self.dir}")
            self._keys()
            self._network()
            hosts = self._sshds()
            info = self._describe(hosts)
            self._write_inventory(info)
            self._write_watchdog_configs(info)
            save(info)
            progress(f"lab {self.name}: {self.nodes} hosts up, sshd on {HOST_NET}.1-{self.nodes}")
            return info
        except BaseException:
            down(self.name)
            raise

    def _keys(self) -> None:
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"pubip-lab-{self.name}",
             "-f", str(self.dir / "id_ed25519")])
        shutil.copy(self.dir / "id_ed25519.pub", self.dir / "authorized_keys")
        (self.dir / "cp").mkdir(mode=0o700)
        (self.dir / "tmp").mkdir(mode=0o700)
        (self.dir / "sshd_config").write_text(
            "\n".join([
                "Port 22",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                f"AuthorizedKeysFile {self.dir / 'authorized_keys'}",
                "UsePAM no",
                "StrictModes no",
                "PrintMotd no",
                "UseDNS no",
                "MaxStartups 200:30:400",
                "MaxSessions 200",
                "Subsystem sftp internal-sftp",
                # Debian's bash sources ~/.bashrc for every command sshd runs unless it is nested
                # (SHLVL): the lab's hosts share the controller's /root, whose .bashrc may be slow
                # (pyenv init costs 0.15 s per command here), and a plain node's has no business
                # in a takeover run's timings.
                # A module killed with its host (a fault) leaves its payload in TMPDIR: the lab's, not /tmp.
                f"SetEnv SHLVL=1 TMPDIR={self.dir / 'tmp'}" + _pyc_cache_env(),
                "",
            ])
        )

    def _network(self) -> None:
        run(["ip", "netns", "add", self.br_ns])
        bridges = ["br0", "br1"] if self.eth1 else ["br0"]
        lines = ["link set lo up"]
        for br in bridges:
            lines += [f"link add {br} type bridge", f"link set {br} up"]
        ip_batch(self.br_ns, lines)
        ends = [(self.ctl_ns, "ctl", [(0, CONTROLLER_ADDR)])]
        ends += [(h["netns"], h["tag"], [(0, h["address"])]) for h in self.controller_hosts() if h["tag"] != "ctl"]
        for i in range(1, self.nodes + 1):
            addrs = [(0, f"{HOST_NET}.{i}")] + ([(1, f"{ETH1_NET}.{i}")] if self.eth1 else [])
            ends.append((self.host_ns(i), f"h{i}", addrs))
        for netns, tag, addrs in ends:
            run(["ip", "netns", "add", netns])
            br_lines, ns_lines = [], ["link set lo up"]
            for idx, addr in addrs:
                peer = f"{tag}e{idx}"
                br_lines += [f"link add {peer} type veth peer name eth{idx} netns {netns}",
                             f"link set {peer} master br{idx}", f"link set {peer} up"]
                ns_lines += [f"addr add {addr}/24 dev eth{idx}", f"link set eth{idx} up"]
            ip_batch(self.br_ns, br_lines)
            if tag == "ctl" or tag.startswith("l"):
                # The controller reaches public IPs on-link, so it sees ARP / NA.
                ns_lines += [f"route add {VIP_NET}.0/24 dev eth0"]
                if self.ipv6:
                    ns_lines += [f"route add {VIP6_NET}/64 dev eth0"]
            ip_batch(netns, ns_lines)

    def _sshds(self) -> list[dict[str, Any]]:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        hosts = []
        for i in range(1, self.nodes + 1):
            hdir = self.dir / "hosts" / self.host_name(i)
            (hdir / "hooks").mkdir(parents=True)
            key = hdir / "ssh_host_ed25519_key"
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
            addr = f"{HOST_NET}.{i}"
            run(["ip", "netns", "exec", self.host_ns(i), SSHD, "-f", str(self.dir / "sshd_config"),
                 "-o", f"ListenAddress={addr}", "-o", f"HostKey={key}", "-o", f"PidFile={hdir / 'sshd.pid'}",
                 "-E", str(hdir / "sshd.log")])
            hosts.append({"name": self.host_name(i), "pnn": i - 1, "netns": self.host_ns(i),
                          "address": addr, "interfaces": self.interfaces, "dir": str(hdir)})
        for host in hosts:
            host["sshd_pid"] = wait_pidfile(Path(str(host["dir"])) / "sshd.pid")
        return hosts

    def _describe(self, hosts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "name": self.name,
            "dir": str(self.dir),
            "inventory": str(self.dir / "inventory.yml"),
            "controller": {"netns": self.ctl_ns, "address": CONTROLLER_ADDR},
            "bridge_netns": self.br_ns,
            "hosts": hosts,
            "public_ips": public_ips(self.vips, self.ipv6, self.vips6),
            "ssh_key": str(self.dir / "id_ed25519"),
            "python": sys.executable,
            "watchdog": self.watchdog,
            "fast_retake": self.fast_retake,
            **self._ha(),
        }

    def _ha(self) -> dict[str, Any]:
        """lab.json's controllers (the first is `controller`) and etcd members: {name, netns, address}."""
        extra = self.controller_hosts()
        for h in extra:
            h["dir"] = str(self.dir / "hosts" / h["name"])
            h["ports"] = [f"{h['tag']}e0"]
            Path(h["dir"]).mkdir(parents=True, exist_ok=True)
        if not extra:
            return {"controllers": [{"name": "controller", "netns": self.ctl_ns, "address": CONTROLLER_ADDR}],
                    "etcd": []}
        return {"controllers": [h for h in extra if h["listener"]], "etcd": [h for h in extra][:3],
                "extra_hosts": [h for h in extra if not h["listener"]]}

    def _write_inventory(self, info: dict[str, Any]) -> None:
        (self.dir / "inventory.yml").write_text(render_inventory(info))
        (self.dir / "inventory-root.yml").write_text(render_inventory(info, from_root=True))


def _pyc_cache_env() -> str:
    """With PUBIP_LAB_PYC_CACHE=DIR (the test suite's), the hosts' Python sessions cache the bytecode of the
    modules Ansible sends them in DIR (pyc_cache/sitecustomize.py says why)."""
    cache = os.environ.get("PUBIP_LAB_PYC_CACHE")
    if not cache:
        return ""
    Path(cache).mkdir(mode=0o700, parents=True, exist_ok=True)
    return f" PYTHONPATH={Path(__file__).parent / 'pyc_cache'} PUBIP_PYC_CACHE={cache}"


def _secret_file(path: Path, secret: str) -> str:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    return secret


def watchdog_yaml(h: dict[str, Any], info: dict[str, Any], fast_retake: bool) -> str:
    d = h["dir"]
    peers = [f"    {p['name']}: {p['address']}" for p in info["hosts"] if p["name"] != h["name"]]
    return "\n".join([
        "# pubip-watchdog for lab host " + h["name"],
        f"node: {h['name']}",
        f"record_path: {d}/record.json",
        f"lock_path: {d}/lock",
        "interval: 1.0",
        *([] if fast_retake else ["fast_retake: false"]),  # on by default with the listener backend
        "backend: listener",
        "listener:",
        *listener_urls(info),
        f"  secret_file: {d}/secret",
        "retry:",
        "  initial: 0.2",
        "  max: 5.0",
        f"hook_dir: {d}/hooks",
        f"log_file: {d}/watchdog.log",
        f"lease_path: {d}/lease.json",
        "peers:",
        f"  bind: {h['address']}",
        f"  secret_file: {info['dir']}/peer-secret",
        "  nodes:" + ("" if peers else " {}"),
        *peers,
        "",
    ])


def listener_urls(info: dict[str, Any]) -> list[str]:
    """watchdog.yml's listener.url, or listener.urls for HA listeners (each gets the heartbeats)."""
    ha = [c for c in info.get("controllers", []) if c.get("ports")]
    if not ha:
        return [f"  url: http://{CONTROLLER_ADDR}:{LISTENER_PORT}{protocol.TAKEOVER_RUN_PATH}"]
    return ["  urls:", *[f"    - http://{c['address']}:{LISTENER_PORT}{protocol.TAKEOVER_RUN_PATH}" for c in ha]]


def render_inventory(info: dict[str, Any], from_root: bool = False, controller: dict[str, Any] | None = None) -> str:
    """The lab's Ansible inventory, in the contract the takeover run consumes; FROM_ROOT: for Ansible in the
    root namespace (inventory-root.yml, used by Molecule); CONTROLLER: an HA listener host's own (its SSH
    control sockets and run lock in its directory)."""
    d = info["dir"]
    hosts = {}
    for h in info["hosts"]:
        hosts[h["name"]] = {
            "ansible_host": h["address"],
            "pubip_pnn": h["pnn"],
            "pubip_netns": h["netns"],
            "pubip_record_path": f"{h['dir']}/record.json",
            "pubip_lock_path": f"{h['dir']}/lock",
            "pubip_hook_dir": f"{h['dir']}/hooks",
            "pubip_lease_path": f"{h['dir']}/lease.json",
        }
    group_vars = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": info["ssh_key"],
        "ansible_ssh_common_args": f"-o UserKnownHostsFile={d}/known_hosts -o StrictHostKeyChecking=accept-new",
        "ansible_control_path_dir": f"{d}/cp",
        "ansible_python_interpreter": info["python"],
        "pubip_run_lock_dir": d,  # the run lock (runlock.py) among the lab's own files, not in /run/pubip
        "pubip_public_ips": [
            {"ip": ip, "interfaces": list(info["hosts"][0]["interfaces"]) if info["hosts"] else ["eth0"]}
            for ip in info["public_ips"]
        ],
    }
    if controller is not None:
        Path(controller["dir"], "cp").mkdir(mode=0o700, exist_ok=True)
        group_vars["ansible_control_path_dir"] = f"{controller['dir']}/cp"
        group_vars["pubip_run_lock_dir"] = controller["dir"]
    if from_root:  # through the controller namespace: the root namespace has no route into the lab
        proxy = f"ip netns exec {info['controller']['netns']} {info['python']} -m pubip.lab.nsproxy %h %p"
        group_vars["ansible_ssh_common_args"] += f" -o ProxyCommand=\"{proxy}\""
        group_vars["ansible_control_path_dir"] = f"{d}/cp-root"
    doc = {"all": {"children": {"pubip_nodes": {"hosts": hosts, "vars": group_vars}}}}
    # JSON is valid YAML; keeps the lab free of a YAML dependency at write time.
    return "---\n# Generated by `pubip lab up`; removed by `pubip lab down`.\n" + json.dumps(doc, indent=2) + "\n"


def wait_pidfile(path: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
            return pid
        except (FileNotFoundError, ValueError, ProcessLookupError):
            time.sleep(0.01)
    raise LabError(f"sshd did not start: no pid in {path} after {timeout}s (see sshd.log beside it)")


def down(name: str) -> list[str]:
    """Remove every namespace, process and file of lab NAME; also after a crashed up."""
    if not NAME_RE.match(name):
        raise LabError(f"invalid lab name {name!r}")
    prefix = ns_name(name, "")
    mine = [ns for ns in list_netns() if ns.startswith(prefix) and "-" not in ns[len(prefix):]]
    for ns in mine:
        kill_netns_processes(ns)
    for ns in mine:
        run(["ip", "netns", "delete", ns], check=False)
    shutil.rmtree(lab_dir(name), ignore_errors=True)
    return mine


def exec_in_controller(name: str, cmd: list[str]) -> int:
    info = load(name)
    argv = ["ip", "netns", "exec", info["controller"]["netns"], *cmd]
    return subprocess.call(argv, env=controller_env(info))


def run_playbook(info: dict[str, Any], playbook: str, *extra: str) -> int:
    """Run one of the collection's playbooks (takeover_run.yml, deploy.yml) from the controller namespace
    against the lab."""
    from .. import _collection

    cmd = [str(Path(info["python"]).parent / "ansible-playbook"), str(_collection.PLAYBOOKS / playbook), *extra]
    return subprocess.call(["ip", "netns", "exec", info["controller"]["netns"], *cmd], env=controller_env(info))


def target(name: str) -> dict[str, str]:
    """How the operator commands reach lab NAME's listener: from its controller namespace, with its secrets; in
    an HA lab, the leading listener, from its host (else the first that answers)."""
    from .observe import leading_controller

    info = load(name)
    c = leading_controller(info)
    return {"netns": c["netns"], "python": info["python"], "listener": f"http://{c['address']}:{LISTENER_PORT}",
            "secrets": str(Path(info["dir"]) / "listener-secrets.json")}
