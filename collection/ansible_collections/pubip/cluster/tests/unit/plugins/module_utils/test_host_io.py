"""Hooks, the record and announcement frames: real files and processes, no network."""

from __future__ import annotations

import json
import os
import struct

import pytest

from ansible_collections.pubip.cluster.plugins.module_utils._pubip import announce, hooks, record


def test_hooks_run_in_name_order_with_argv(tmp_path):
    log = tmp_path / "log"
    for name in ("20.b", "10.a"):
        script = tmp_path / name
        script.write_text('#!/bin/sh\necho "%s $*" >> %s\n' % (name, log))
        script.chmod(0o755)
    (tmp_path / "30.not-executable").write_text("#!/bin/sh\nexit 1\n")
    assert hooks.run_hooks(str(tmp_path), "takeip", ["eth0", "198.51.100.1", 24]) == ["10.a", "20.b"]
    assert log.read_text().splitlines() == ["10.a takeip eth0 198.51.100.1 24", "20.b takeip eth0 198.51.100.1 24"]


def test_a_hook_sees_the_same_environment_whoever_runs_it(tmp_path, monkeypatch):
    """The takeover run's module over SSH and the watchdog under systemd run the same hooks: they see one
    environment, not their caller's."""
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir(mode=0o755)
    out = tmp_path / "env"
    hook = hook_dir / "10.env"
    hook.write_text("#!/bin/sh\nenv | sort > %s\n" % out)
    hook.chmod(0o755)
    seen = []
    for extra in ({"ANSIBLE_MODULE_ARGS": "x", "SSH_CONNECTION": "192.0.2.254 1 192.0.2.1 22"},
                  {"NOTIFY_SOCKET": "/run/systemd/notify", "INVOCATION_ID": "abc"}):
        for key, value in extra.items():
            monkeypatch.setenv(key, value)
        hooks.run_hooks(str(hook_dir), "takeip", ["eth0", "198.51.100.1", 24])
        seen.append({k: v for k, v in (line.split("=", 1) for line in out.read_text().splitlines())
                     if k not in ("PWD", "SHLVL", "_")})
    assert seen[0] == seen[1] == {"LANG": "C.UTF-8", "PATH": hooks.PATH, "PUBIP_EVENT": "takeip",
                                  "PUBIP_HOOK_DIR": str(hook_dir)}


def test_the_sandbox_file_gives_a_takeover_runs_hooks_the_watchdogs_unit(tmp_path):
    """Outside the watchdog (a takeover run's module), each hook runs in a transient unit with the properties of
    HOOK_DIR/.sandbox, through env -i with the one environment; without systemd or the file, as before."""
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir(mode=0o755)
    systemd = tmp_path / "systemd"
    assert hooks.sandbox_properties(str(hook_dir), str(systemd)) is None  # no file
    sandbox = hook_dir / hooks.SANDBOX_FILE
    sandbox.write_text("# the unit's\nProtectSystem=strict\n\nReadWritePaths=-/var/lib/pubip /var/log/pubip\n")
    sandbox.chmod(0o644)
    assert hooks.sandbox_properties(str(hook_dir), str(systemd)) is None  # no systemd
    systemd.mkdir()
    props = hooks.sandbox_properties(str(hook_dir), str(systemd))
    assert props == ["ProtectSystem=strict", "ReadWritePaths=-/var/lib/pubip /var/log/pubip"]
    argv = hooks.sandboxed_argv(["/etc/pubip/events.d/10.log", "takeip", "eth0"],
                                hooks.environment(str(hook_dir), "takeip"), props, 30)
    assert argv[:2] == ["systemd-run", "--quiet"] and "--wait" in argv and "--pipe" in argv
    assert "--property=ProtectSystem=strict" in argv and "--property=RuntimeMaxSec=30s" in argv
    tail = argv[argv.index("--") + 1:]
    assert tail[:2] == ["/usr/bin/env", "-i"] and tail[-3:] == ["/etc/pubip/events.d/10.log", "takeip", "eth0"]
    assert "PUBIP_EVENT=takeip" in tail and "PATH=%s" % hooks.PATH in tail
    sandbox.write_text("ProtectSystem=strict\nsh -c 'id'\n")
    with pytest.raises(hooks.HookError, match=r"line 2 is not a systemd property"):
        hooks.sandbox_properties(str(hook_dir), str(systemd))
    sandbox.chmod(0o666)
    with pytest.raises(hooks.HookError, match=r"refused: .*\.sandbox is writable by group or others"):
        hooks.sandbox_properties(str(hook_dir), str(systemd))


def test_a_hook_anyone_may_change_is_refused_and_not_run(tmp_path):
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir(mode=0o755)
    ran = tmp_path / "ran"
    hook = hook_dir / "10.hook"
    hook.write_text("#!/bin/sh\ntouch %s\n" % ran)
    hook.chmod(0o775)  # group-writable
    with pytest.raises(hooks.HookError, match=r"refused: .*10.hook is writable by group or others \(mode 775\)"):
        hooks.run_hooks(str(hook_dir), "takeip", ["eth0", "198.51.100.1", 24])
    hook.chmod(0o755)
    hook_dir.chmod(0o777)  # a world-writable directory: anyone could swap the hook
    with pytest.raises(hooks.HookError, match=r"refused: .*hooks is writable by group or others \(mode 777\)"):
        hooks.run_hooks(str(hook_dir), "takeip", ["eth0", "198.51.100.1", 24])
    assert not ran.exists()
    hook_dir.chmod(0o755)
    if os.geteuid() == 0:
        os.chown(hook, 65534, 65534)  # nobody's
        with pytest.raises(hooks.HookError, match="owned by uid 65534, not root"):
            hooks.run_hooks(str(hook_dir), "takeip", ["eth0", "198.51.100.1", 24])
    assert not ran.exists()


def test_failing_and_slow_hooks_name_themselves(tmp_path):
    bad = tmp_path / "10.bad"
    bad.write_text("#!/bin/sh\necho nope >&2\nexit 4\n")
    bad.chmod(0o755)
    with pytest.raises(hooks.HookError) as info:
        hooks.run_hooks(str(tmp_path), "releaseip", ["eth0", "198.51.100.1", 24])
    assert info.value.hook == str(bad) and "exit 4: nope" in str(info.value)
    bad.write_text("#!/bin/sh\nsleep 5\n")
    with pytest.raises(hooks.HookError, match="timed out"):
        hooks.run_hooks(str(tmp_path), "ipreallocated", [], timeout=0.2)


def test_record_write_is_atomic_and_versioned(tmp_path):
    path = str(tmp_path / "sub" / "record.json")
    assert record.read(path) is None
    data = dict(record.mark(record.empty("n1"), "n1", 5.0, "run-a", 60.0), generation=3, run_finished=4.0,
                public_ips=[{"ip": "198.51.100.1/24", "node": "n2"}])
    record.write(path, data)
    assert record.read(path) == json.loads(json.dumps(data))
    assert record.in_progress(record.read(path))
    assert record.assigned_node(record.read(path), "198.51.100.1") == "n2"
    assert os.listdir(tmp_path / "sub") == ["record.json"]
    (tmp_path / "bad.json").write_text('{"version": 99}')
    with pytest.raises(ValueError, match="not a pubip assignment record"):
        record.read(str(tmp_path / "bad.json"))


def test_a_run_mark_expires_at_its_deadline_or_with_a_reboot():
    rec = dict(record.mark(record.empty("n1"), "n1", 5.0, "run-a", 60.0, now=100.0, boot="b1"), run_finished=4.0)
    assert rec["run_id"] == "run-a"
    assert record.in_progress(rec, now=159.0, boot="b1") and not record.mark_expired(rec, now=159.0, boot="b1")
    assert record.mark_expired(rec, now=160.5, boot="b1") and not record.in_progress(rec, now=160.5, boot="b1")
    assert record.mark_expired(rec, now=101.0, boot="b2")  # the host rebooted: the run is gone
    finished = dict(rec, run_finished=6.0)
    assert not record.in_progress(finished, now=101.0, boot="b1") and not record.mark_expired(finished, 101.0, "b1")


def test_the_take_phase_marking_again_keeps_what_the_release_phase_said():
    rec = dict(record.empty("n1"), generation=3, run_finished=4.0,
               public_ips=[{"ip": "198.51.100.1/24", "node": "n1"}, {"ip": "198.51.100.2/24", "node": "n2"}])
    released = record.mark(rec, "n1", 5.0, "run-a", 60.0, keep=["198.51.100.1/24", "198.51.100.2/24"])
    assert released["run_keep"] == ["198.51.100.1/24"]
    assert released["run_after"] == ["198.51.100.1/24", "198.51.100.2/24"]
    taking = record.mark(released, "n1", 5.0, "run-a", 60.0)
    assert (taking["run_keep"], taking["run_after"]) == (released["run_keep"], released["run_after"])
    other = record.mark(released, "n1", 7.0, "run-b", 60.0)  # another run, saying nothing of this node
    assert "run_keep" not in other and "run_after" not in other


def test_lease_file_states(tmp_path):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import leasefile as lease

    path = str(tmp_path / "lease.json")
    assert lease.state(path) == lease.NONE and lease.state(None) == lease.NONE
    lease.write(path, "n1", 1000.0)
    assert lease.state(path, now=999.0) == lease.VALID and lease.state(path, now=1000.5) == lease.EXPIRED
    with open(path, "w") as f:
        f.write("{not json")
    assert lease.state(path, now=0.0) == lease.EXPIRED



def test_gratuitous_arp_frames():
    mac = "02:00:00:00:00:01"
    req = announce.arp_frame(mac, "198.51.100.7", announce.ARP_REQUEST)
    rep = announce.arp_frame(mac, "198.51.100.7", announce.ARP_REPLY)
    assert req[:6] == b"\xff" * 6 and req[6:12] == bytes.fromhex("020000000001")
    assert struct.unpack("!H", req[12:14])[0] == 0x0806
    assert struct.unpack("!H", req[20:22])[0] == 1 and struct.unpack("!H", rep[20:22])[0] == 2
    assert req[28:32] == req[38:42] == bytes([198, 51, 100, 7])  # sender IP == target IP
    assert req[32:38] == b"\0" * 6 and rep[32:38] == bytes.fromhex("020000000001")


def test_neighbour_advertisement_has_override_and_lladdr():
    msg = announce.na_message("02:00:00:00:00:01", "2001:db8:100::7")
    assert msg[0] == 136 and struct.unpack("!I", msg[4:8])[0] & 0x20000000
    assert msg[24:26] == b"\x02\x01" and msg[26:32] == bytes.fromhex("020000000001")


@pytest.mark.parametrize("src, dst", [("198.51.100.7", "192.0.2.254"), ("2001:db8:100::7", "2001:db8::fe")])
def test_a_tickle_ack_is_ctdbs(src, dst):
    from ansible_collections.pubip.cluster.plugins.module_utils._pubip import tickle

    data = tickle.packet(src, 445, dst, 40001)
    if ":" in src:
        ip_len, tcp = 40, data[40:]
        assert data[0] >> 4 == 6 and data[6] == 6 and data[7] == 255  # next header TCP, hop limit 255
        pseudo = data[8:40] + struct.pack("!I3xB", 20, 6)
    else:
        ip_len, tcp = 20, data[20:]
        assert data[0] == 0x45 and data[8] == 255 and data[9] == 6
        assert tickle._checksum(data[:20]) == 0  # the IPv4 header checksum holds
        pseudo = data[12:20] + struct.pack("!BBH", 0, 6, 20)
    assert len(data) == ip_len + 20
    sport, dport, seq, ack, offset, flags, window = struct.unpack("!HHIIBBH", tcp[:16])
    assert (sport, dport, seq, ack, offset >> 4, flags, window) == (445, 40001, 0, 0, 5, 0x10, 1234)
    assert tickle._checksum(pseudo + tcp) == 0  # the TCP checksum holds
