"""`pubip listen`: the listener as a service - logging, secrets, the runner backend, signals, then serve."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from .. import logs
from ..awx import AwxBackend
from ..errors import PubipError
from ..secrets import read_secret
from .http import serve
from .listener import Listener

log = logging.getLogger("pubip.listener")


def main(args: Any) -> int:
    import signal

    from .settings import check, load_secrets, settle

    settle(args)
    if args.check_config:
        problems = check(args)
        for problem in problems:
            print(f"pubip listen: {problem}", file=sys.stderr)
        if not problems:
            print(f"{args.config or 'the command line'}: valid")
        return 2 if problems else 0
    logging.getLogger("pubip").addHandler(logs.handler("pubip-listener", args.log_file))
    logging.getLogger("pubip").setLevel(logging.INFO)
    secrets = load_secrets(args.secrets)
    lock = state_lock(args.state_dir)  # held for the life of the process
    awx = None
    if args.backend == "awx":
        awx = AwxBackend(url=args.awx_url.rstrip("/"), job_template=args.awx_job_template,
                         token=read_secret(args.awx_token_file, "AWX token"), api_prefix=args.awx_api_prefix,
                         verify_tls=not args.awx_insecure)
    leadership = None
    if args.etcd:
        from .etcdelector import EtcdElector
        from .leadership import Leadership, Timing
        from .settings import etcd_endpoints

        timing = Timing()
        elector = EtcdElector(etcd_endpoints(args.etcd), args.cluster, timing.timeout, args.etcd_ca_file,
                              args.etcd_cert_file, args.etcd_key_file)
        leadership = Leadership(args.name, elector, timing)
        log.info("HA listener %s: leads through a lease in etcd (%s), cluster %s", args.name, args.etcd,
                 args.cluster)
    listener = Listener(args.inventory, secrets, args.state_dir, lease=args.lease, leadership=leadership,
                        name=args.name,
                        probe_port=args.probe_port, fast_takeover=not args.no_fast_takeover, awx=awx,
                        playbook=args.playbook, ansible_cfg=args.ansible_cfg, trusted_proxy=args.trusted_proxy,
                        address=args.bind if args.bind not in ("0.0.0.0", "::") else None,
                        ban_credits=args.ban_credits, ban_period=args.ban_period,
                        read_token=read_secret(args.read_token_file, "read token") if args.read_token_file else None)

    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise PubipError("pubip listen: TLS needs both --tls-cert and --tls-key")
        from .http import tls_context

        try:
            tls = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ValueError) as exc:
            raise PubipError(f"pubip listen: cannot load --tls-cert/--tls-key: {exc}") from None

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    import threading

    leading = threading.Thread(target=listener.leadership.run, args=(listener.stopping,), name="pubip-leadership",
                               daemon=True)
    leading.start()
    try:
        serve(listener, args.bind, args.port, tls)
    except KeyboardInterrupt:
        log.info("Listener stopping")
    finally:
        listener.stopping.set()
        leading.join(2.0)  # a leader resigns: a standby leads at once
        os.close(lock)
    return 0


def state_lock(state_dir: str) -> int:
    """One listener per state directory: two would run takeover runs side by side on one sqlite file."""
    import fcntl

    Path(state_dir).mkdir(parents=True, exist_ok=True)
    fd = os.open(str(Path(state_dir) / "listener.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise PubipError(f"pubip listen: another listener (pid {holder}) runs on state directory {state_dir}; "
                         f"one listener per state directory") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
