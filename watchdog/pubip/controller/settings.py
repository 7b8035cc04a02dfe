"""`pubip listen`'s settings: a YAML file (--config; the listener role writes /etc/pubip/listener.yml) with the
command line over it. Every key is checked and a wrong one named; `pubip listen --check-config` checks them all -
the files, the backend, and that the bind address is one of this host's - and changes nothing.

    inventory: /etc/pubip/inventory.yml
    secrets: /etc/pubip/listener-secrets.json
    bind: 192.0.2.254
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import stat
from pathlib import Path
from typing import Any

from .. import yamlfile
from ..errors import PubipError

# key -> (type, default); the command line's --some-option is the file's some_option
KEYS: dict[str, tuple[type, Any]] = {
    "inventory": (str, None), "secrets": (str, None), "bind": (str, None), "port": (int, 8750),
    "state_dir": (str, "/var/lib/pubip/listener"), "lease": (float, 1.0), "playbook": (str, None),
    "trusted_proxy": (str, None), "ansible_cfg": (str, None), "read_token_file": (str, None),
    "tls_cert": (str, None), "tls_key": (str, None), "ban_credits": (int, 3), "ban_period": (float, 300.0),
    "probe_port": (int, 22), "no_fast_takeover": (bool, False), "backend": (str, "runner"),
    "awx_url": (str, None), "awx_job_template": (int, None), "awx_token_file": (str, None),
    "awx_api_prefix": (str, "/api/v2/"), "awx_insecure": (bool, False), "log_file": (str, None),
    "name": (str, None), "etcd": (str, None), "cluster": (str, "pubip"), "etcd_ca_file": (str, None),
    "etcd_cert_file": (str, None), "etcd_key_file": (str, None),
}
REQUIRED = ("inventory", "secrets", "bind")
BACKENDS = ("runner", "awx")


def settle(args: argparse.Namespace) -> None:
    """ARGS with every setting: the command line's, else the --config file's, else the default. Raises
    PubipError naming the first wrong or missing one."""
    where = getattr(args, "config", None)
    given = read(where) if where else {}
    for key, (_kind, default) in KEYS.items():
        if getattr(args, key, None) is None:
            setattr(args, key, given.get(key, default))
    missing = [f"--{k.replace('_', '-')}" for k in REQUIRED if not getattr(args, k)]
    if missing:
        raise PubipError(f"pubip listen: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                         f"(on the command line, or in --config FILE)")
    if args.backend not in BACKENDS:
        raise PubipError(f"pubip listen: backend {args.backend!r} must be one of {', '.join(BACKENDS)}")
    if args.backend == "awx" and not (args.awx_url and args.awx_job_template and args.awx_token_file):
        raise PubipError("pubip listen: backend awx needs awx_url, awx_job_template and awx_token_file")
    if not 0 < args.port < 65536:
        raise PubipError(f"pubip listen: port {args.port} is not a TCP port")
    if not (math.isfinite(args.lease) and args.lease > 0):
        raise PubipError(f"pubip listen: lease {args.lease} must be a positive number of seconds")
    args.name = args.name or socket.gethostname()
    if bool(args.etcd_cert_file) != bool(args.etcd_key_file):
        raise PubipError("pubip listen: etcd_cert_file and etcd_key_file go together (etcd's client certificate)")
    if args.etcd:
        from .etcdelector import parse_endpoint

        for url in etcd_endpoints(args.etcd):
            parse_endpoint(url)


def etcd_endpoints(value: str) -> list[str]:
    return [u.strip() for u in value.split(",") if u.strip()]


def read(path: str) -> dict[str, Any]:
    data = yamlfile.load(path, what="the listener's settings ")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PubipError(f"pubip listen: {path} must be a mapping of settings")
    out = {}
    for key, value in data.items():
        if key not in KEYS:
            raise PubipError(f"pubip listen: {path}: unknown setting {key!r}; known: {', '.join(sorted(KEYS))}")
        kind = KEYS[key][0]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind is float else \
            (isinstance(value, int) and not isinstance(value, bool)) if kind is int else isinstance(value, kind)
        if value is not None and not ok:
            raise PubipError(f"pubip listen: {path}: {key!r} must be {kind.__name__}, got {value!r}")
        out[key] = float(value) if kind is float and value is not None else value
    return out


def check(args: argparse.Namespace) -> list[str]:
    """What --check-config finds wrong beyond the settings' types: files that are not there, a bind address that
    is not this host's. Empty: ready to start."""
    problems = []
    try:
        load_secrets(args.secrets)
    except PubipError as exc:
        problems.append(str(exc))
    for key in ("inventory", "read_token_file", "tls_cert", "tls_key", "awx_token_file", "playbook", "etcd_ca_file",
                "etcd_cert_file", "etcd_key_file"):
        path = getattr(args, key)
        if key == "playbook" and path and "/" not in path:
            continue  # a collection playbook's name
        if path and not Path(path).is_file():
            problems.append(f"{key} {path} is not a file")
    family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((args.bind, 0))
    except OSError as exc:
        problems.append(f"bind address {args.bind} is not an address of this host ({exc.strerror})")
    return problems


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
