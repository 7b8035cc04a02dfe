"""Lab hosts that boot systemd: a real host for the tests that deploy with the roles' defaults.

Each machine is systemd-nspawn over an overlay of this machine's root (its own /etc, /opt, /var; the packages
this machine has), booted in a lab host's network namespace: systemd starts its sshd, the roles' units run
under systemd with their sandboxes, and the deployment's default paths (/etc/pubip, /opt/pubip/venv) are the
machine's own. Killing the lab host's namespace processes kills the machine (its systemd is one of them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOTS = Path("/var/tmp/pubip-machines")
# Units this machine may have that a lab host has no use for (they slow the boot, or start servers).
KEEP = {"ssh.service", "systemd-networkd.service", "remote-fs.target", "machines.target"}
WANTS = ("multi-user.target.wants", "timers.target.wants", "getty.target.wants", "sysinit.target.wants")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class Machine:
    name: str
    netns: str
    dir: Path
    nspawn: subprocess.Popen[bytes]

    @property
    def root(self) -> Path:
        return self.dir / "root"

    def init_pid(self) -> int | None:
        """The machine's systemd, as this machine's pid (None once it is gone)."""
        return _init_of(self.nspawn.pid)

    def sh(self, script: str, timeout: float = 600, cwd: str = "/root") -> subprocess.CompletedProcess[str]:
        """SCRIPT in bash on the machine as root: its mounts, processes and network, a login's plain environment."""
        pid = self.init_pid()
        if pid is None:
            raise RuntimeError(f"machine {self.name} is not running")
        env = {"PATH": PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8", "TERM": "dumb"}
        # -r and -w without a directory: the target's root and working directory (a directory given is the
        # caller's, opened before entering)
        return subprocess.run(["nsenter", "-t", str(pid), "-a", "-r", "-w", "--", "/usr/bin/env", "-i",
                               *[f"{k}={v}" for k, v in env.items()], "/bin/bash", "-c", f"cd {cwd}\n{script}"],
                              text=True, capture_output=True, timeout=timeout)

    def wait_running(self, timeout: float = 60) -> str:
        """Wait until systemd finished booting; returns its state (running, or degraded with a failed unit)."""
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):
                state = self.sh("systemctl is-system-running", timeout=10).stdout.strip()
                if state in ("running", "degraded"):
                    return state
            time.sleep(0.2)
        raise AssertionError(f"machine {self.name} did not finish booting in {timeout:.0f}s (state {state})")


def _init_of(nspawn_pid: int) -> int | None:
    """The descendant of NSPAWN_PID that is pid 1 in its own pid namespace."""
    todo = [nspawn_pid]
    while todo:
        pid = todo.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            nspid = next((line.split()[1:] for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                          if line.startswith("NSpid:")), [])
        except OSError:
            continue
        if pid != nspawn_pid and nspid[-1:] == ["1"]:
            return pid
        todo += [int(c) for c in children]
    return None


def _mask_units(root: Path) -> None:
    system = root / "etc/systemd/system"
    for wants in WANTS:
        for unit in (system / wants).glob("*") if (system / wants).is_dir() else []:
            if unit.name not in KEEP:
                target = system / unit.name
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                target.symlink_to("/dev/null")


def boot(name: str, netns: str, *, tag: str, authorized_key: str, private_key: Path | None = None) -> Machine:
    """Boot machine NAME in NETNS; root logs in with AUTHORIZED_KEY; PRIVATE_KEY becomes root's own key."""
    d = ROOTS / f"{tag}-{name}"
    remove_dir(d)
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True)
    # root's home is a new host's (Debian's skeleton), none of this machine's: opaque over the lower /root
    home = d / "upper/root"
    shutil.copytree("/etc/skel", home)
    home.chmod(0o700)
    os.setxattr(home, "trusted.overlay.opaque", b"y")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir=/,upperdir={d / 'upper'},workdir={d / 'work'}", str(d / "root")], check=True)
    root = d / "root"
    (root / "etc/machine-id").write_text(subprocess.run(["systemd-id128", "new"], capture_output=True, text=True,
                                                        check=True).stdout)
    (root / "etc/hostname").write_text(name + "\n")
    # A fresh host: nothing of this machine's pubip, root's SSH or Ansible state.
    for stale in ("etc/pubip", "opt/pubip", "var/lib/pubip"):
        if (root / stale).is_symlink() or (root / stale).is_file():
            (root / stale).unlink()
        elif (root / stale).exists():
            shutil.rmtree(root / stale)
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(authorized_key)
    if private_key is not None:
        shutil.copy(private_key, ssh / "id_ed25519")
        (ssh / "id_ed25519").chmod(0o600)
    _mask_units(root)
    log = open(d / "console.log", "wb")  # noqa: SIM115 - the machine's console, for a failing test's eyes
    proc = subprocess.Popen(["systemd-nspawn", "--quiet", "-D", str(root), "--register=no", "--keep-unit",
                             f"--network-namespace-path=/run/netns/{netns}", f"--hostname={name}",
                             f"--machine={tag}-{name}", "--capability=all", "--boot"],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    machine = Machine(name, netns, d, proc)
    deadline = time.monotonic() + 30
    while machine.init_pid() is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            remove(machine)
            raise AssertionError(f"machine {name} did not start:\n{(d / 'console.log').read_text()[-3000:]}")
        time.sleep(0.05)
    # As on a host: one boot id for the whole machine (nspawn mounts one of its own over /proc's, which a
    # unit's fresh /proc, ProtectProc=, does not show; the lease file names the boot it was written in), and
    # root may change the network's sysctls (nspawn's /proc/sys is read-only).
    fixes = ("umount /proc/sys/kernel/random/boot_id && mount --bind /proc/sys/net /proc/sys/net"
             " && mount -o remount,bind,rw /proc/sys/net")
    deadline = time.monotonic() + 10
    while (fixed := machine.sh(fixes, timeout=10)).returncode != 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"machine {name}: /proc could not be made a host's: {fixed.stderr}")
        time.sleep(0.05)
    return machine


def remove(machine: Machine) -> None:
    """Stop the machine (if it still runs), unmount its root and remove its files."""
    pid = machine.init_pid()
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    try:
        machine.nspawn.wait(timeout=30)
    except subprocess.TimeoutExpired:
        machine.nspawn.kill()
        machine.nspawn.wait(timeout=10)
    remove_dir(machine.dir)


def remove_dir(d: Path) -> None:
    """Remove a machine's directory, its overlay unmounted first: never a walk through a mounted root."""
    root = d / "root"
    if os.path.ismount(root):
        subprocess.run(["umount", str(root)], check=False)
        if os.path.ismount(root):
            subprocess.run(["umount", "-l", str(root)], check=True)
    if os.path.ismount(root):
        raise RuntimeError(f"{root} is still mounted: not removing {d}")
    if d.exists():
        shutil.rmtree(d)
