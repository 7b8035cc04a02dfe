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

import contextlib
import json
import os
import shutil
import signal
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
    MAX_NODES,
    MAX_VIPS,
    NAME_RE,
    SSHD,
    VIP6_NET,
    VIP_NET,
    LabError,
    alive,
    connect_in,
    controller_env,
    host_entry,
    ip_batch,
    kill_netns_processes,
    lab_dir,
    list_netns,
    load,
    ns_name,
    run,
    save,
)
from .observe import await_first_run


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
    dir: Path = field(init=False)

    def __post_init__(self) -> None:
        validate(self.name, self.nodes, self.vips)
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
            if tag == "ctl":
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
        }

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
        f"  url: http://{CONTROLLER_ADDR}:{LISTENER_PORT}{protocol.TAKEOVER_RUN_PATH}",
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


def start_watchdog(info: dict[str, Any], host: str) -> int:
    """Start HOST's watchdog as a process inside its namespace (no systemd in the lab)."""
    h = host_entry(info, host)
    log = open(Path(h["dir"]) / "watchdog.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", h["netns"], info["python"], "-m", "pubip.node.main",
                             "--config", h["watchdog_config"]], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    h["watchdog_pid"] = proc.pid
    return proc.pid


def start_listener(info: dict[str, Any]) -> int:
    """Start the listener in the controller namespace, on the lab's inventory and secrets."""
    d = Path(info["dir"])
    log = open(d / "listener.out", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(["ip", "netns", "exec", info["controller"]["netns"], info["python"], "-m", "pubip.cli",
                             "listen", "--inventory", info["inventory"], "--secrets", str(d / "listener-secrets.json"),
                             "--state-dir", str(d / "listener"), "--bind", CONTROLLER_ADDR,
                             "--port", str(LISTENER_PORT), "--log-file", str(d / "listener.log")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    info["listener_pid"] = proc.pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # ready when the port answers
        with contextlib.suppress(OSError):
            connect_in(info["controller"]["netns"], (CONTROLLER_ADDR, LISTENER_PORT), 1).close()
            return proc.pid
        time.sleep(0.1)
    raise LabError(f"the listener did not start: see {d / 'listener.out'}")


def stop(owner: dict[str, Any], key: str, sig: int) -> None:
    """Signal the process whose pid OWNER[KEY] holds and wait (3 s at most) until it is gone."""
    pid = owner.get(key)
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        owner[key] = None


def stop_listener(info: dict[str, Any]) -> None:
    """SIGKILL: the listener dies as a crash would (tests check that it recovers)."""
    stop(info, "listener_pid", signal.SIGKILL)


def stop_watchdog(info: dict[str, Any], host: str) -> None:
    stop(host_entry(info, host), "watchdog_pid", signal.SIGTERM)


def start_missing(info: dict[str, Any]) -> list[str]:
    """Start the listener and every live host's watchdog that is not running; returns what was started."""
    started = []
    if not (info.get("listener_pid") and alive(info["listener_pid"])):
        start_listener(info)
        started.append("listener")
    for h in info["hosts"]:
        if not (h.get("sshd_pid") and alive(h["sshd_pid"])):
            continue  # a dead host runs nothing
        if not (h.get("watchdog_pid") and alive(h["watchdog_pid"])):
            start_watchdog(info, h["name"])
            started.append(f"watchdog {h['name']}")
    save(info)
    return started


def render_inventory(info: dict[str, Any], from_root: bool = False) -> str:
    """The lab's Ansible inventory, in the contract the takeover run consumes; FROM_ROOT: for Ansible in the
    root namespace (inventory-root.yml, used by Molecule)."""
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


def start_services(info: dict[str, Any], *, watchdogs: bool = True, listener: bool = True, takeover: bool = True,
                   progress: Any = print) -> bool:
    """Start the lab's watchdogs and listener, as `lab up` does, and see the first takeover run done. With the
    listener, the first takeover run is its start-up run, which lab up waits for (the main job run here as
    well would be a second run straight after it, changing nothing); without it, the main job here, first.
    False: the first takeover run failed (the lab stays up)."""
    first = takeover and bool(info["public_ips"])
    ok = True
    if first and not (watchdogs and listener):
        progress(f"lab {info['name']}: first takeover run")
        ok = run_playbook(info, "takeover_run.yml") == 0
    if not watchdogs:
        return ok
    if listener:
        start_listener(info)
        progress(f"lab {info['name']}: listener on {CONTROLLER_ADDR}:{LISTENER_PORT}")
    for h in info["hosts"]:
        start_watchdog(info, h["name"])
    save(info)
    progress(f"lab {info['name']}: watchdogs started (fast retake {'on' if info.get('fast_retake', True) else 'off'})")
    if first and listener:
        progress(f"lab {info['name']}: first takeover run (the listener's start-up run)")
        ok = await_first_run(info) is not None
    return ok


def run_playbook(info: dict[str, Any], playbook: str, *extra: str) -> int:
    """Run one of the collection's playbooks (takeover_run.yml, deploy.yml) from the controller namespace
    against the lab."""
    from .. import _collection

    cmd = [str(Path(info["python"]).parent / "ansible-playbook"), str(_collection.PLAYBOOKS / playbook), *extra]
    return subprocess.call(["ip", "netns", "exec", info["controller"]["netns"], *cmd], env=controller_env(info))


def target(name: str) -> dict[str, str]:
    """How the operator commands reach lab NAME's listener: from its controller namespace, with its secrets."""
    info = load(name)
    return {"netns": info["controller"]["netns"], "python": info["python"],
            "listener": f"http://{CONTROLLER_ADDR}:{LISTENER_PORT}",
            "secrets": str(Path(info["dir"]) / "listener-secrets.json")}
