"""`pubip secrets`: every secret a cluster needs, made once, in the two files an Ansible inventory takes -
`vault.yml` (the secrets: encrypt it with `ansible-vault encrypt`) and `pubip.yml` (the role variables that
use them) - in a group_vars directory.

- each node's listener secret (pubip_node_secrets), and the operators' (pubip_admin_secret): the listener
  verifies every request with them;
- the peer secret (pubip_peer_secret): the watchdogs' heartbeats to each other, which give every node its lease;
- the read token (pubip_read_token): GET /v1/status and /metrics, for Prometheus.
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from ..errors import PubipError

VARS = """\
# pubip: the role variables, from the secrets in vault.yml beside this file (pubip secrets made both).
watchdog_secret: "{{ pubip_node_secrets[inventory_hostname] | default('') }}"
watchdog_peer_secret: "{{ pubip_peer_secret }}"
listener_secrets: "{{ pubip_node_secrets | combine({'_admin': pubip_admin_secret}) }}"
listener_read_token: "{{ pubip_read_token }}"
"""


def make(nodes: list[str]) -> str:
    """The vault file's text: a fresh 256-bit secret for each node and each purpose."""
    lines = [f"# pubip secrets for {', '.join(nodes)}: encrypt this file with `ansible-vault encrypt`.",
             "pubip_node_secrets:"]
    lines += [f"  {node}: {secrets.token_hex(32)}" for node in nodes]
    lines += [f"pubip_admin_secret: {secrets.token_hex(32)}", f"pubip_peer_secret: {secrets.token_hex(32)}",
              f"pubip_read_token: {secrets.token_hex(32)}"]
    return "\n".join(lines) + "\n"


def node_names(text: str) -> list[str]:
    import re

    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", n) or n.startswith("_")]
    if not names or bad or len(set(names)) != len(names):
        raise PubipError(f"--nodes {text!r}: give each node's inventory name once, comma-separated "
                         f"(letters, digits, '.', '-', '_'; not starting with '_')")
    return names


def main(args: argparse.Namespace) -> int:
    nodes = node_names(args.nodes)
    out = Path(args.out)
    vault, plain = out / "vault.yml", out / "pubip.yml"
    if vault.exists() and not args.force:
        raise PubipError(f"{vault} exists: its secrets are in use (pass --force to make new ones, then deploy every "
                         f"node and the listener again)")
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(vault), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(make(nodes))
    os.chmod(vault, 0o600)
    plain.write_text(VARS)
    print(f"{vault}: the secrets of {len(nodes)} nodes (mode 0600): encrypt it with `ansible-vault encrypt {vault}`")
    print(f"{plain}: the role variables that use them")
    return 0
