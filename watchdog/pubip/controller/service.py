"""`pubip listen`: the listener as a service - logging, secrets, the runner backend, signals, then serve."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from .. import logs
from ..awx import AwxBackend
from .http import serve
from .listener import Listener

log = logging.getLogger("pubip.listener")


def main(args: Any) -> int:
    import signal

    logging.getLogger("pubip").addHandler(logs.handler("pubip-listener", args.log_file))
    logging.getLogger("pubip").setLevel(logging.INFO)
    secrets = json.loads(Path(args.secrets).read_text())
    awx = None
    if args.backend == "awx":
        from ..secrets import read_secret

        if not (args.awx_url and args.awx_job_template and args.awx_token_file):
            raise SystemExit("pubip listen: --backend awx needs --awx-url, --awx-job-template and --awx-token-file")
        awx = AwxBackend(url=args.awx_url.rstrip("/"), job_template=args.awx_job_template,
                         token=read_secret(args.awx_token_file, "AWX token"), api_prefix=args.awx_api_prefix,
                         verify_tls=not args.awx_insecure)
    listener = Listener(args.inventory, secrets, args.state_dir, lease=args.lease,
                        probe_port=args.probe_port, fast_takeover=not args.no_fast_takeover, awx=awx,
                        playbook=args.playbook, ansible_cfg=args.ansible_cfg, trusted_proxy=args.trusted_proxy)

    def stop(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        serve(listener, args.bind, args.port)
    except KeyboardInterrupt:
        log.info("Listener stopping")
    return 0
