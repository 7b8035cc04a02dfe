# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Event hooks, CTDB's event-script convention: every executable file in the
hook directory, in name order, as ``HOOK EVENT ARGS...``:

* ``takeip IFACE IP MASKBITS``
* ``releaseip IFACE IP MASKBITS``
* ``updateip OLDIFACE NEWIFACE IP MASKBITS``
* ``ipreallocated``
* ``monitor`` (the watchdog, every monitor_interval: a non-zero exit makes the node UNHEALTHY)

argv only: no shell, no string built from inputs; the environment is environment()'s on every path.

The watchdog runs hooks from inside its systemd unit, so they share its sandbox. A takeover run's module runs
them with ``sandboxed=True``: where systemd runs and the hook directory has a ``.sandbox`` file (the
watchdog role writes it: the unit's sandbox properties, one per line), each hook runs in a transient unit
with those properties (``systemd-run``), so that a hook is allowed the same on every path.
"""

from __future__ import annotations

import os
import re
import subprocess

EVENTS = ("takeip", "releaseip", "updateip", "ipreallocated", "monitor")
# A hook sees the same environment on every path - a takeover run's module over SSH, the watchdog's fast paths,
# its monitor event, a leave: this, and nothing inherited from whatever runs it.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


SANDBOX_FILE = ".sandbox"
_PROPERTY = re.compile(r"^[A-Z][A-Za-z]+=[^\n]*$")


def environment(hook_dir, event):
    return {"PATH": PATH, "LANG": "C.UTF-8", "PUBIP_HOOK_DIR": hook_dir, "PUBIP_EVENT": event}


class HookError(Exception):
    def __init__(self, hook, event, detail):
        Exception.__init__(self, "hook %s %s failed: %s" % (hook, event, detail))
        self.hook = hook
        self.event = event
        self.detail = detail


def list_hooks(hook_dir):
    if not hook_dir or not os.path.isdir(hook_dir):
        return []
    found = []
    for name in sorted(os.listdir(hook_dir)):
        path = os.path.join(hook_dir, name)
        if name.startswith(".") or not os.path.isfile(path) or not os.access(path, os.X_OK):
            continue
        found.append(path)
    return found


def check_owner(path):
    """A hook runs as root: it and its directory must be owned by root (or by this process's user) and
    writable by nobody else; otherwise anyone who can write there runs code as root. Returns why not, or None."""
    for item in (os.path.dirname(path), path):
        st = os.stat(item)
        if st.st_uid not in (0, os.geteuid()):
            return "%s is owned by uid %d, not root" % (item, st.st_uid)
        if st.st_mode & 0o022:
            return "%s is writable by group or others (mode %o): chmod go-w it" % (item, st.st_mode & 0o7777)
    return None


def _normal_scheduling():
    """In the child: a hook of a real-time watchdog (SCHED_FIFO, realtime.py) runs as a normal process."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except (OSError, AttributeError):
        pass


def _realtime():
    try:
        return os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
    except (OSError, AttributeError):
        return False


def sandbox_properties(hook_dir, systemd="/run/systemd/system"):
    """The systemd properties hooks run under outside the watchdog (HOOK_DIR/.sandbox), or None: no such file,
    or no systemd (SYSTEMD: the directory that exists when it runs). A file anyone but root may write, or a
    line that is not Key=Value, raises HookError."""
    path = os.path.join(hook_dir or "", SANDBOX_FILE)
    if not hook_dir or not os.path.isfile(path) or not os.path.isdir(systemd):
        return None
    unsafe = check_owner(path)
    if unsafe:
        raise HookError(path, "sandbox", "refused: %s" % unsafe)
    props = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if not _PROPERTY.match(line):
                raise HookError(path, "sandbox", "line %d is not a systemd property (Key=Value): %r" % (number, line))
            props.append(line)
    return props


def sandboxed_argv(argv, env, props, timeout):
    """ARGV in a transient systemd unit with PROPS, waited for, its output and exit status passed on; through
    env -i, so that it sees ENV alone (not the variables systemd adds to a unit)."""
    cmd = ["systemd-run", "--quiet", "--wait", "--pipe", "--collect", "--service-type=exec",
           "--property=RuntimeMaxSec=%ds" % max(1, int(timeout))]
    cmd += ["--property=%s" % p for p in props]
    return cmd + ["--", "/usr/bin/env", "-i"] + ["%s=%s" % (k, v) for k, v in sorted(env.items())] + argv


def run_hooks(hook_dir, event, args, timeout=30.0, sandboxed=False):
    """Run every hook for EVENT; raise HookError naming the first one that fails or may not run. SANDBOXED:
    in the watchdog's sandbox (sandbox_properties), for callers outside its unit."""
    ran = []
    hooks = list_hooks(hook_dir)
    props = sandbox_properties(hook_dir) if sandboxed and hooks else None
    for path in hooks:
        unsafe = check_owner(path)
        if unsafe:
            raise HookError(path, event, "refused: %s" % unsafe)
        argv = [path, event] + [str(a) for a in args]
        env = environment(hook_dir, event)
        if props is not None:
            argv = sandboxed_argv(argv, env, props, timeout)
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout + (5 if props is not None else 0), close_fds=True, check=False,
                                  env=env, preexec_fn=_normal_scheduling if _realtime() else None)
        except subprocess.TimeoutExpired:
            raise HookError(path, event, "timed out after %ss" % timeout)
        except OSError as exc:
            raise HookError(path, event, "could not run: %s" % exc.strerror)
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            raise HookError(path, event, "exit %d: %s" % (proc.returncode, stderr or "(no stderr)"))
        ran.append(os.path.basename(path))
    return ran
