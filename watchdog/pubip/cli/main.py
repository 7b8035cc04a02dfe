"""The `pubip` command line."""

from __future__ import annotations

import argparse
import json
import sys


def _lab_up(args: argparse.Namespace) -> int:
    from .. import lab

    vips = args.vips if args.vips is not None else 2 * args.nodes
    the_lab = lab.Lab(args.name, args.nodes, vips, ipv6=args.ipv6 or args.vips6 is not None, vips6=args.vips6,
                      eth1=args.eth1, listeners=args.listeners,
                      watchdog=not args.no_watchdog, fast_retake=not args.no_fast_retake)
    info = the_lab.up(progress=lambda line: print(line, flush=True))
    ok = lab.start_services(info, watchdogs=not args.no_watchdog, listener=not args.no_listener,
                            takeover=not args.no_takeover, progress=lambda line: print(line, flush=True))
    if not ok:
        print("pubip: the first takeover run failed; the lab stays up", file=sys.stderr)
    print(info["dir"] + "/lab.json")
    return 0


def _lab_down(args: argparse.Namespace) -> int:
    from .. import lab

    names = lab.existing_labs() if args.all else [args.name]
    for name in names:
        removed = lab.down(name)
        print(f"lab {name}: removed {len(removed)} namespaces and {lab.lab_dir(name)}")
    return 0


def _lab_status(args: argparse.Namespace) -> int:
    from .. import lab

    rows = lab.status(args.name)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from .table import render

    print(render(["node", "pnn", "address", "sshd", "public IPs"],
                       [[r["name"], r["pnn"], r["address"], "up" if r["sshd"] else "DOWN",
                         " ".join(r["public_ips"]) or "-"] for r in rows]))
    return 0


def _lab_exec(args: argparse.Namespace) -> int:
    from .. import lab

    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise lab.LabError("pubip lab exec needs a command after --")
    return lab.exec_in_controller(args.name, cmd)


def _lab_start(args: argparse.Namespace) -> int:
    from .. import lab

    started = lab.start_missing(lab.load(args.name))
    print(json.dumps({"started": started}))
    return 0


def _lab_arp(args: argparse.Namespace) -> int:
    from .. import lab

    print(json.dumps(lab.arp_answers(lab.load(args.name)), indent=1))
    return 0


def _lab_kill(args: argparse.Namespace) -> int:
    from .. import lab

    info = lab.load(args.name)
    if args.wait:
        ips, took = lab.kill_host(info, args.host, args.timeout)
        lab.save(info)
        print(f"{args.host}: dead (processes killed, links without carrier); its public IPs {' '.join(ips)} "
              f"held by survivors after {took:.3f}s")
        return 0
    lab.cut_host(info, args.host)
    lab.save(info)
    print(f"{args.host}: dead (processes killed, links without carrier)")
    return 0


def _lab_revive(args: argparse.Namespace) -> int:
    from .. import lab

    info = lab.load(args.name)
    lab.revive_host(info, args.host)
    if not args.no_watchdog:
        lab.start_watchdog(info, args.host)
    lab.save(info)
    print(f"{args.host}: booted again (no public IPs, links up, sshd{'' if args.no_watchdog else ' and watchdog'})")
    return 0


def _lab_partition(args: argparse.Namespace) -> int:
    from .. import lab

    info = lab.load(args.name)
    sides = [[m.strip() for m in side.split(",") if m.strip()] for side in args.side]
    lab.partition(info, *sides)
    print(f"lab {args.name}: partitioned {' | '.join(','.join(s) for s in sides)} (links keep their carrier)")
    return 0


def _lab_heal(args: argparse.Namespace) -> int:
    from .. import lab

    lab.heal(lab.load(args.name))
    print(f"lab {args.name}: partitions healed")
    return 0


def _lab_sshd(args: argparse.Namespace) -> int:
    from .. import lab

    info = lab.load(args.name)
    if args.action == "stop":
        print(f"{args.host}: {lab.stop_sshd(info, args.host)} sshd processes killed")
    else:
        print(f"{args.host}: sshd started (pid {lab.start_sshd(info, args.host)})")
    return 0


def _listen(args: argparse.Namespace) -> int:
    from ..controller import service

    return service.main(args)


def _status(args: argparse.Namespace) -> int:
    from . import status

    return status.main(args)


def _lab_restart_network(args: argparse.Namespace) -> int:
    from .. import lab

    info = lab.load(args.name)
    print(f"{args.host}: networking restart (flush eth0, re-add {args.host}'s own address)", flush=True)
    ips, took = lab.restart_network(info, args.host, args.timeout)
    print(f"{args.host}: public IPs {' '.join(ips)} back after {took:.3f}s")
    return 0


def _op(args: argparse.Namespace) -> int:
    from . import ops

    return ops.main(args)


def _secrets(args: argparse.Namespace) -> int:
    from . import secrets

    return secrets.main(args)


def _completion(args: argparse.Namespace) -> int:
    try:
        import shtab
    except ImportError:
        from ..errors import PubipError

        raise PubipError("pubip completion needs shtab (pip install 'pubip[controller]')") from None
    print(shtab.complete(parser(), shell=args.shell))
    return 0


# The help of options whose parsers do not give one: one text per name, the same everywhere.
HELPS = {
    "name": "the lab's name (default: demo)", "nodes": "how many hosts (default: 3)",
    "host": "a node's name, as in the inventory (e.g. node1)", "ip": "a public IP (address, or address/prefix)",
    "json": "print JSON instead of a table", "seconds": "how long, in seconds", "timeout": "seconds to wait at most",
    "no_watchdog": "do not start its watchdog", "action": "what to do with the host's sshd",
    "cmd": "the command and its arguments",
}


def _helps(p: argparse.ArgumentParser) -> None:
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _helps(sub)
        elif not action.help and action.dest in HELPS:
            action.help = HELPS[action.dest]


def _plan(args: argparse.Namespace) -> int:
    from . import plan

    return plan.run(args.input, args.explain)


def parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="pubip", description="Floating (public) IP management, CTDB-style.")
    p.add_argument("--version", action="version", version=f"pubip {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    pl = sub.add_parser("plan", help="compute an assignment from JSON input (CTDB vector schema)")
    pl.add_argument("--input", required=True, help="JSON file, or - for standard input")
    pl.add_argument("--explain", action="store_true", help="also print the moves, unassigned IPs and log lines")
    pl.set_defaults(func=_plan)

    co = sub.add_parser("completion", help="print a shell completion script: eval \"$(pubip completion bash)\"")
    co.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    co.set_defaults(func=_completion)

    se = sub.add_parser("secrets", help="make every secret a cluster needs, for an Ansible inventory's group_vars")
    se.add_argument("--nodes", required=True, help="the nodes' inventory names, comma-separated")
    se.add_argument("--out", required=True, help="a group_vars directory: vault.yml (secrets) and pubip.yml go there")
    se.add_argument("--force", action="store_true", help="replace an existing vault.yml (new secrets everywhere)")
    se.set_defaults(func=_secrets)

    ls = sub.add_parser("listen", help="the listener: coalesced takeover runs on request, node liveness")
    ls.add_argument("--config", help="a YAML file of these settings (some_option for --some-option); the command "
                    "line goes over it")
    ls.add_argument("--check-config", action="store_true",
                    help="check the settings, the files they name and the bind address; change nothing")
    ls.add_argument("--inventory", help="the inventory of the cluster's nodes (required)")
    ls.add_argument("--playbook", default=None,
                    help="the takeover run's playbook (default: the collection's pubip.cluster.takeover_run)")
    ls.add_argument("--trusted-proxy", default=None,
                    help="address of a TLS-terminating reverse proxy in front of the listener: requests from it "
                    "are taken to come from the last X-Forwarded-For address (the node, for liveness probes)")
    ls.add_argument("--ansible-cfg", default=None,
                    help="an ansible.cfg for the runs, instead of pubip's settings (pipelining, ControlPersist)")
    ls.add_argument("--secrets",
                    help="JSON file: node name -> secret, and _admin -> the operators' (mode 0600; required)")
    ls.add_argument("--state-dir", help="the listener's state (default: /var/lib/pubip/listener)")
    ls.add_argument("--bind",
                    help="the address to listen on (required, explicit: the nodes' network, never all interfaces by "
                    "accident)")
    ls.add_argument("--port", type=int, help="the TCP port (default: 8750)")
    ls.add_argument("--read-token-file", help="file (mode 0600) with a Bearer token that may GET /v1/status and "
                    "/metrics (Prometheus); otherwise those need a request signed with a node's or _admin's secret")
    ls.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM; with --tls-key)")
    ls.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ls.add_argument("--ban-credits", type=int,
                    help="takeover runs in a row a live node may keep from completing before it is banned")
    ls.add_argument("--ban-period", type=float, help="seconds such a ban lasts (default: CTDB's 300)")
    ls.add_argument("--lease", type=float,
                    help="the nodes' lease in seconds (watchdog 'lease'); a silent node is dead after "
                    "(1+1e-3) x lease + 0.5 s without a quorum hearing it")
    ls.add_argument("--probe-port", type=int,
                    help="TCP port knocked on before a silent node is declared dead (any answer: alive)")
    ls.add_argument("--no-fast-takeover", action="store_true", default=None,
                    help="a dead node's IPs wait for the takeover run instead of being ordered to survivors")
    ls.add_argument("--backend", choices=["runner", "awx"],
                    help="run takeover runs here with ansible-runner, or as jobs of an AWX job template")
    ls.add_argument("--awx-url", help="AWX / Automation Controller URL, e.g. https://awx.example.com")
    ls.add_argument("--awx-job-template", type=int, help="id of the takeover-run job template")
    ls.add_argument("--awx-token-file", help="file (mode 0600) holding an OAuth2 token")
    ls.add_argument("--awx-api-prefix", help="/api/v2/ (the default), or /api/controller/v2/ for AAP 2.5 and newer")
    ls.add_argument("--awx-insecure", action="store_true", default=None, help="do not verify AWX's TLS certificate")
    ls.add_argument("--log-file", help="log here as well as to standard error")
    ls.add_argument("--name", help="this listener's name among HA listeners, in status and in etcd (default: the "
                    "host name)")
    ls.add_argument("--etcd", help="HA listeners: etcd v3 endpoints, comma-separated (http://192.0.2.250:2379,...); "
                    "one listener leads through a lease there, the others stand by. Unset: the only listener")
    ls.add_argument("--cluster", help="the cluster's name in etcd (the leader key /pubip/CLUSTER/leader; default: "
                    "pubip)")
    ls.add_argument("--etcd-ca-file", help="https etcd: the CA that signed its certificates (else the system's)")
    ls.add_argument("--etcd-cert-file", help="https etcd: this listener's client certificate (with --etcd-key-file)")
    ls.add_argument("--etcd-key-file", help="https etcd: the client certificate's private key")
    ls.set_defaults(func=_listen)

    for name, helptext, description in (
            ("status", "public IPs and holders, nodes and liveness, the last takeover runs",
             "Exit status: 0 all is well; 1 a node is dead or unreachable, or a public IP is held by no node or by "
             "two (each named on stderr); 2 no answer"),
            ("ip", "public IPs and their holders, now and by plan (CTDB's ctdb ip)",
             "Exit status: 0 every public IP held by one node; 1 one held by none or by two (named on stderr); 2 "
             "no answer")):
        stp = sub.add_parser(name, help=helptext, description=description + ". Without --listener and --secrets: "
                             "PUBIP_LISTENER and PUBIP_SECRETS, else /etc/pubip/cli.yml (listener, secrets).")
        where = stp.add_mutually_exclusive_group()
        where.add_argument("--listener", help="the listener's URL, e.g. http://192.0.2.254:8750")
        where.add_argument("--lab", help="a local lab's name: ask its listener from the controller namespace")
        stp.add_argument("--secrets", help="the listener's secrets file (its _admin secret signs the request)")
        stp.add_argument("--json", action="store_true", help="the status as JSON (the listener's own)")
        stp.set_defaults(func=_status, ips=name == "ip")

    from .ops import add_parsers

    add_parsers(sub, _op)

    lp = sub.add_parser("lab", help="a local lab of network-namespace hosts with real sshd")
    lsub = lp.add_subparsers(dest="lab_command", required=True)
    up = lsub.add_parser("up", help="create a lab; prints the path of lab.json last")
    up.add_argument("--nodes", type=int, default=3)
    up.add_argument("--vips", type=int, default=None, help="number of public IPs (default: 2 per node)")
    up.add_argument("--name", default="demo")
    up.add_argument("--ipv6", action="store_true", help="add IPv6 public IPs from 2001:db8:100::/64")
    up.add_argument("--vips6", type=int, default=None, help="number of IPv6 public IPs (implies --ipv6; "
                    "default: as many as --vips)")
    up.add_argument("--eth1", action="store_true", help="give every host a second interface on a second bridge")
    up.add_argument("--listeners", type=int, default=1,
                    help="HA listeners: 2 or 3 listener hosts (listener1..N), one leading through a lease in a "
                    "3-member etcd on listener1..3 (or etcd3 beside 2); default 1, the embedded listener")
    up.add_argument("--no-watchdog", action="store_true", help="do not start watchdogs and listener")
    up.add_argument("--no-takeover", action="store_true", help="do not run the first takeover run")
    up.add_argument("--no-listener", action="store_true", help="start the watchdogs but not the listener")
    up.add_argument("--no-fast-retake", action="store_true", help="run the watchdogs without fast retake "
                    "(on by default)")
    up.add_argument("--fast-retake", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old scripts
    up.set_defaults(func=_lab_up)
    down = lsub.add_parser("down", help="remove a lab: namespaces, processes, keys, files")
    down.add_argument("--name", default="demo")
    down.add_argument("--all", action="store_true", help="remove every pubip lab on this machine")
    down.set_defaults(func=_lab_down)
    st = lsub.add_parser("status", help="hosts and the public IPs each kernel holds")
    st.add_argument("--name", default="demo")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_lab_status)
    rn = lsub.add_parser("restart-network", help="the seed scenario: flush a host's eth0, time until its IPs return")
    rn.add_argument("--name", default="demo")
    rn.add_argument("--host", default="node1")
    rn.add_argument("--timeout", type=float, default=60.0)
    rn.set_defaults(func=_lab_restart_network)
    sta = lsub.add_parser("start", help="start the listener and watchdogs that are not running (prints JSON)")
    sta.add_argument("--name", default="demo")
    sta.set_defaults(func=_lab_start)
    arp = lsub.add_parser("arp", help="who answers ARP / neighbour solicitation for each public IP (JSON)")
    arp.add_argument("--name", default="demo")
    arp.set_defaults(func=_lab_arp)
    kl = lsub.add_parser("kill", help="a host dies: its processes stop and its links lose carrier")
    kl.add_argument("--name", default="demo")
    kl.add_argument("--host", required=True)
    kl.add_argument("--wait", action="store_true", help="wait until survivors hold its public IPs, and time it")
    kl.add_argument("--timeout", type=float, default=60.0)
    kl.set_defaults(func=_lab_kill)
    rv = lsub.add_parser("revive", help="a dead host boots again: no public IPs, links up, sshd and watchdog")
    rv.add_argument("--name", default="demo")
    rv.add_argument("--host", required=True)
    rv.add_argument("--no-watchdog", action="store_true")
    rv.set_defaults(func=_lab_revive)
    pa = lsub.add_parser("partition", help="split the lab, every link keeping its carrier (blackhole routes)")
    pa.add_argument("--name", default="demo")
    pa.add_argument("--side", action="append", required=True,
                    help="members of one side, comma-separated: node names and 'listener'; give two or more")
    pa.set_defaults(func=_lab_partition)
    he = lsub.add_parser("heal", help="remove every partition")
    he.add_argument("--name", default="demo")
    he.set_defaults(func=_lab_heal)
    sd = lsub.add_parser("sshd", help="stop or start a host's sshd (the host and its watchdog stay up)")
    sd.add_argument("action", choices=["stop", "start"])
    sd.add_argument("--name", default="demo")
    sd.add_argument("--host", required=True)
    sd.set_defaults(func=_lab_sshd)
    ex = lsub.add_parser("exec", help="run a command in the controller namespace, with the lab inventory")
    ex.add_argument("--name", default="demo")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    ex.set_defaults(func=_lab_exec)
    _helps(p)
    return p


def _through_lab(args: argparse.Namespace, argv: list[str]) -> int:
    """An operator command with --lab NAME: the same command inside the lab's controller namespace, pointed at
    its listener and secrets (the lab is reachable from there only)."""
    import subprocess

    from .. import lab

    where = lab.target(args.lab)
    rest, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word == "--lab":
            skip = True
        elif not word.startswith("--lab="):
            rest.append(word)
    rest += ["--listener", where["listener"], "--secrets", where["secrets"]]
    return subprocess.call(["ip", "netns", "exec", where["netns"], where["python"], "-m", "pubip.cli", *rest])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)
    from ..errors import PubipError

    try:
        if getattr(args, "lab", None):
            return _through_lab(args, argv)
        return int(args.func(args))
    except PubipError as exc:
        print(f"pubip: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
