"""`pubip listen`: the listener as a service - logging, secrets, the runner backend, signals, then serve."""

from __future__ import annotations

import json
import logging
import os
import stat
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

    logging.getLogger("pubip").addHandler(logs.handler("pubip-listener", args.log_file))
    logging.getLogger("pubip").setLevel(logging.INFO)
    secrets = load_secrets(args.secrets)
    lock = state_lock(args.state_dir)  # held for the life of the process
    awx = None
    if args.backend == "awx":
        if not (args.awx_url and args.awx_job_template and args.awx_token_file):
            raise SystemExit("pubip listen: --backend awx needs --awx-url, --awx-job-template and --awx-token-file")
        awx = AwxBackend(url=args.awx_url.rstrip("/"), job_template=args.awx_job_template,
                         token=read_secret(args.awx_token_file, "AWX token"), api_prefix=args.awx_api_prefix,
                         verify_tls=not args.awx_insecure)
    listener = Listener(args.inventory, secrets, args.state_dir, lease=args.lease,
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
    try:
        serve(listener, args.bind, args.port, tls)
    except KeyboardInterrupt:
        log.info("Listener stopping")
    finally:
        os.close(lock)
    return 0


def load_secrets(path: str) -> dict[str, str]:
    """The node secrets file: private (0600), a JSON object of non-empty strings; the message names the flaw."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise PubipError(f"pubip listen: secrets file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise PubipError(f"pubip listen: secrets file {path} is not JSON: {exc}") from None
    if mode & 0o077:
        raise PubipError(f"pubip listen: secrets file {path} is readable by others (mode {mode:o}): chmod 600 it")
    if not isinstance(data, dict) or not data:
        raise PubipError(f"pubip listen: secrets file {path} must be a JSON object: node name -> secret")
    for node, secret in data.items():
        if not isinstance(secret, str) or len(secret) < 16:
            raise PubipError(f"pubip listen: secrets file {path}: the secret of {node!r} must be a string of at "
                             f"least 16 characters")
    return data


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
