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
"""

from __future__ import annotations

import os
import subprocess

EVENTS = ("takeip", "releaseip", "updateip", "ipreallocated", "monitor")
# A hook sees the same environment on every path - a takeover run's module over SSH, the watchdog's fast paths,
# its monitor event, a leave: this, and nothing inherited from whatever runs it.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


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


def run_hooks(hook_dir, event, args, timeout=30.0):
    """Run every hook for EVENT; raise HookError naming the first one that fails or may not run."""
    ran = []
    for path in list_hooks(hook_dir):
        unsafe = check_owner(path)
        if unsafe:
            raise HookError(path, event, "refused: %s" % unsafe)
        argv = [path, event] + [str(a) for a in args]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  timeout=timeout, close_fds=True, check=False, env=environment(hook_dir, event),
                                  preexec_fn=_normal_scheduling if _realtime() else None)
        except subprocess.TimeoutExpired:
            raise HookError(path, event, "timed out after %ss" % timeout)
        except OSError as exc:
            raise HookError(path, event, "could not run: %s" % exc.strerror)
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            raise HookError(path, event, "exit %d: %s" % (proc.returncode, stderr or "(no stderr)"))
        ran.append(os.path.basename(path))
    return ran
