"""Where the operator's commands find the listener and its secrets when the command line does not say: the
environment (PUBIP_LISTENER, PUBIP_SECRETS), then the CLI configuration file ($PUBIP_CONFIG, else
/etc/pubip/cli.yml, which the listener role writes on the controller):

    listener: http://192.0.2.254:8750
    secrets: /etc/pubip/listener-secrets.json
"""

from __future__ import annotations

import argparse
import os

from .. import yamlfile
from ..errors import PubipError

CONFIG = "/etc/pubip/cli.yml"


def fill(args: argparse.Namespace) -> None:
    """Set ARGS.listener and ARGS.secrets from the environment or the configuration file where not given."""
    if getattr(args, "lab", None):
        return
    path = os.environ.get("PUBIP_CONFIG", CONFIG)
    config: dict[str, object] = {}
    if (args.listener is None and "PUBIP_LISTENER" not in os.environ) or \
            (args.secrets is None and "PUBIP_SECRETS" not in os.environ):
        config = read(path)
    for key, env in (("listener", "PUBIP_LISTENER"), ("secrets", "PUBIP_SECRETS")):
        if getattr(args, key) is None:
            value = os.environ.get(env) or config.get(key)
            setattr(args, key, str(value) if value else None)
    if not args.listener or not args.secrets:
        raise PubipError(f"no listener: give --listener URL and --secrets FILE (or --lab NAME), set PUBIP_LISTENER "
                         f"and PUBIP_SECRETS, or write them in {path} (listener: URL, secrets: FILE)")


def read(path: str) -> dict[str, object]:
    data = yamlfile.load(path, missing=None)
    if data is None:
        return {}
    if not isinstance(data, dict) or set(data) - {"listener", "secrets"}:
        raise PubipError(f"{path}: must be a mapping with the keys listener and secrets")
    return dict(data)
