"""The watchdog's configuration: one YAML file, validated whole before anything starts.

Every error names the key and its line; secrets may live in separate files that
must not be readable by group or others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap

from .. import yamlfile
from ..awx import AwxBackend
from ..errors import PubipError
from ..secrets import SecretError, read_secret

DEFAULT_PATH = "/etc/pubip/watchdog.yml"


class ConfigError(PubipError):
    pass


@dataclass
class ListenerBackend:
    url: str  # the first listener's
    secret: str
    timeout: float = 2.0
    ca_file: str | None = None  # https:// listener: the CA that signed its certificate (else the system's)
    urls: list[str] = field(default_factory=list)  # every listener's (HA listeners: heartbeats go to each)

    def __post_init__(self) -> None:
        self.urls = self.urls or [self.url]


@dataclass
class WebhookBackend:
    """A plain webhook (Event-Driven Ansible's ansible.eda.webhook source): JSON with a Bearer token."""

    url: str
    token: str
    timeout: float = 5.0


@dataclass
class PeersConfig:
    """The other nodes' watchdogs, for heartbeats and leases (node/peers.py)."""

    secret: str
    nodes: dict[str, str]  # peer node name -> address
    port: int = 8751
    bind: str = "0.0.0.0"


@dataclass
class Config:
    node: str
    record_path: str = "/var/lib/pubip/record.json"
    lock_path: str = "/run/pubip/interfaces.lock"
    interval: float = 1.0
    netlink: bool = True
    debounce: float = 0.005
    fast_retake: bool | None = None  # None: on with the listener backend, which says whether a retake is safe
    fast_takeover: bool = True  # carry out the listener's signed orders to take a dead node's IPs
    order_max_age: float = 1.0  # an order not carried out this long after it arrived is refused
    release_on_link_loss: bool = True  # drop public IPs from an interface without carrier
    release_foreign: bool = True  # drop public IPs held here that the record gives to another node
    announce_count: int = 3
    announce_interval: float = 0.05
    backend: str = "listener"
    listener: ListenerBackend | None = None
    awx: AwxBackend | None = None
    webhook: WebhookBackend | None = None
    retry_initial: float = 0.2
    retry_max: float = 30.0
    retry_jitter: float = 0.2
    heartbeat_interval: float = 0.2
    metrics_port: int = 0
    metrics_address: str = "127.0.0.1"
    log_level: str = "info"
    log_file: str | None = None
    hook_dir: str | None = "/etc/pubip/events.d"  # the takeover run's default too (public_ip hook_dir)
    peers: PeersConfig | None = None
    lease: float = 0.0  # seconds; 1.0 by default when peers are configured, 0 = no lease
    lease_path: str = "/run/pubip/lease.json"
    monitor_interval: float = 5.0  # the hook directory's `monitor` event, CTDB's MonitorInterval; 0 = off
    monitor_timeout: float = 30.0
    monitor_failures: int = 1  # failures in a row before the node is UNHEALTHY
    tickle_interval: float = 5.0  # how often the TCP connections to held public IPs are listed; 0 = off
    announce_refresh: float = 0.0  # re-announce held public IPs this often (gratuitous ARP / NA); 0 = off
    realtime: bool = True  # SCHED_FIFO 1, as CTDB runs ctdbd: a loaded host must not delay a lost lease's release
    single_node: bool = False  # a cluster of one node: the listener backend without peers (no failover possible)


# key: (type, required)
TOP = {
    "node": (str, True), "record_path": (str, False), "lock_path": (str, False), "interval": (float, False),
    "netlink": (bool, False), "debounce": (float, False), "fast_retake": (bool, False),
    "fast_takeover": (bool, False), "order_max_age": (float, False), "release_on_link_loss": (bool, False),
    "release_foreign": (bool, False),
    "announce_count": (int, False), "announce_interval": (float, False), "backend": (str, False),
    "listener": (dict, False), "awx": (dict, False), "webhook": (dict, False), "retry": (dict, False),
    "heartbeat_interval": (float, False),
    "metrics": (dict, False), "log_level": (str, False), "log_file": (str, False), "hook_dir": (str, False),
    "peers": (dict, False), "lease": (float, False), "lease_path": (str, False),
    "monitor_interval": (float, False), "monitor_timeout": (float, False), "monitor_failures": (int, False),
    "tickle_interval": (float, False), "announce_refresh": (float, False), "realtime": (bool, False),
    "single_node": (bool, False),
}
PEERS = {"secret": (str, False), "secret_file": (str, False), "nodes": (dict, True), "port": (int, False),
         "bind": (str, False)}
LISTENER = {"url": (str, False), "urls": (list, False), "secret": (str, False), "secret_file": (str, False),
            "timeout": (float, False), "ca_file": (str, False)}
AWX = {"url": (str, True), "job_template": (int, True), "token": (str, False), "token_file": (str, False),
       "api_prefix": (str, False), "timeout": (float, False), "verify_tls": (bool, False)}
WEBHOOK = {"url": (str, True), "token": (str, False), "token_file": (str, False), "timeout": (float, False)}
RETRY = {"initial": (float, False), "max": (float, False), "jitter": (float, False)}
METRICS = {"port": (int, False), "address": (str, False)}
BACKENDS = ("listener", "awx", "webhook", "none")
LOG_LEVELS = ("debug", "info", "warning", "error")


def _line(node: Any, key: str) -> str:
    try:
        return f" (line {node.lc.key(key)[0] + 1})"
    except (AttributeError, KeyError, TypeError):
        return ""


def _check(section: str, data: Any, schema: Mapping[str, tuple[type, bool]], where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {section or 'the file'} must be a mapping")
    for key in data:
        if key not in schema:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{where}: unknown key '{section}{key}'{_line(data, key)}; known keys: {known}")
    out: dict[str, Any] = {}
    for key, (kind, required) in schema.items():
        if key not in data:
            if required:
                raise ConfigError(f"{where}: missing key '{section}{key}'")
            continue
        value = data[key]
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool)) if kind is float else (
            isinstance(value, int) and not isinstance(value, bool)) if kind is int else isinstance(value, kind)
        if not ok:
            raise ConfigError(f"{where}: '{section}{key}'{_line(data, key)} must be {kind.__name__}, "
                              f"got {value!r}")
        if kind in (int, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: '{section}{key}'{_line(data, key)} must be a finite number, got {value!r}")
        if kind is str and not value.strip():
            raise ConfigError(f"{where}: '{section}{key}'{_line(data, key)} must not be empty")
        out[key] = float(value) if kind is float else (dict(value) if kind is dict else value)
    return out


def _positive(where: str, name: str, value: float, minimum: float = 0.0) -> None:
    if value <= minimum:
        raise ConfigError(f"{where}: '{name}' must be greater than {minimum}, got {value}")


def load(path: str = DEFAULT_PATH) -> Config:
    where = path
    data = yamlfile.load(path, ConfigError, "the watchdog configuration ", round_trip=True)
    if data is None:
        data = CommentedMap()
    top = _check("", data, TOP, where)
    cfg = Config(node=top["node"])
    for key in ("record_path", "lock_path", "interval", "netlink", "debounce", "fast_retake", "fast_takeover",
                "order_max_age", "release_on_link_loss", "release_foreign", "announce_count",
                "announce_interval", "heartbeat_interval", "log_level", "log_file", "backend", "hook_dir",
                "monitor_interval", "monitor_timeout", "monitor_failures", "tickle_interval", "announce_refresh",
                "realtime", "single_node"):
        if key in top:
            setattr(cfg, key, top[key])
    _positive(where, "interval", cfg.interval)
    _positive(where, "heartbeat_interval", cfg.heartbeat_interval)
    _positive(where, "order_max_age", cfg.order_max_age)
    for key in ("tickle_interval", "announce_refresh"):
        if getattr(cfg, key) < 0:
            raise ConfigError(f"{where}: '{key}' must be 0 (off) or a positive number of seconds")
    if cfg.monitor_interval < 0:
        raise ConfigError(f"{where}: 'monitor_interval' must be 0 (off) or a positive number of seconds")
    _positive(where, "monitor_timeout", cfg.monitor_timeout)
    if cfg.monitor_failures < 1:
        raise ConfigError(f"{where}: 'monitor_failures' must be at least 1")
    if cfg.debounce < 0:
        raise ConfigError(f"{where}: 'debounce' must not be negative")
    if cfg.announce_count < 1:
        raise ConfigError(f"{where}: 'announce_count' must be at least 1")
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(f"{where}: 'log_level'{_line(data, 'log_level')} must be one of {', '.join(LOG_LEVELS)}")
    if cfg.backend not in BACKENDS:
        raise ConfigError(f"{where}: 'backend'{_line(data, 'backend')} must be one of {', '.join(BACKENDS)}")
    if cfg.backend == "listener":
        lst = _backend_section(top, data, "listener", LISTENER, "url (or urls), secret_file", where)
        if lst.get("ca_file") and not Path(lst["ca_file"]).is_file():
            raise ConfigError(f"{where}: 'listener.ca_file' {lst['ca_file']} is not a file")
        urls = lst.get("urls") or [lst["url"]]
        cfg.listener = ListenerBackend(url=urls[0], secret=_secret(lst, "secret", where), ca_file=lst.get("ca_file"),
                                       timeout=lst.get("timeout", 2.0), urls=urls)
    elif cfg.backend == "awx":
        awx = _backend_section(top, data, "awx", AWX, "url, job_template, token_file", where)
        cfg.awx = AwxBackend(url=awx["url"].rstrip("/"), job_template=awx["job_template"],
                             token=_secret(awx, "token", where), api_prefix=awx.get("api_prefix", "/api/v2/"),
                             timeout=awx.get("timeout", 5.0), verify_tls=awx.get("verify_tls", True))
    elif cfg.backend == "webhook":
        hook = _backend_section(top, data, "webhook", WEBHOOK, "url, token_file", where)
        cfg.webhook = WebhookBackend(url=hook["url"], token=_secret(hook, "token", where),
                                     timeout=hook.get("timeout", 5.0))
    if cfg.fast_retake is None:
        cfg.fast_retake = cfg.backend == "listener"
    if "retry" in top:
        retry = _check("retry.", data["retry"], RETRY, where)
        cfg.retry_initial = retry.get("initial", cfg.retry_initial)
        cfg.retry_max = retry.get("max", cfg.retry_max)
        cfg.retry_jitter = retry.get("jitter", cfg.retry_jitter)
        _positive(where, "retry.initial", cfg.retry_initial)
        if cfg.retry_max < cfg.retry_initial:
            raise ConfigError(f"{where}: 'retry.max' must be at least 'retry.initial'")
    if "peers" in top:
        peers = _check("peers.", data["peers"], PEERS, where)
        nodes = {str(k): v for k, v in peers["nodes"].items()}
        for name, address in nodes.items():
            _address(where, f"peers.nodes.{name}", address)
        if cfg.node in nodes:
            raise ConfigError(f"{where}: 'peers.nodes' lists this node ({cfg.node}) itself")
        cfg.peers = PeersConfig(secret=_secret(peers, "secret", where), nodes=nodes,
                                port=peers.get("port", 8751), bind=peers.get("bind", "0.0.0.0"))
        _address(where, "peers.bind", cfg.peers.bind)
        if not 1 <= cfg.peers.port <= 65535:
            raise ConfigError(f"{where}: 'peers.port' must be 1 to 65535")
        cfg.lease = 1.0
    if "lease" in top:
        cfg.lease = top["lease"]
        if cfg.lease < 0 or cfg.lease != cfg.lease or cfg.lease == float("inf"):
            raise ConfigError(f"{where}: 'lease' must be 0 (off) or a positive number of seconds")
        if cfg.lease and cfg.peers is None:
            raise ConfigError(f"{where}: 'lease' needs a 'peers' section (the other nodes' addresses and the peer "
                              f"secret): without peers a listener outage would take every public IP down")
    if cfg.backend == "listener" and cfg.peers is None and not cfg.single_node:
        raise ConfigError(f"{where}: backend listener without 'peers': this node would never hold a lease, so the "
                          f"listener could never declare it dead and its public IPs would never move (no failover). "
                          f"Give 'peers' (the other nodes' addresses and the peer secret), or 'single_node: true' "
                          f"for a cluster of one node")
    if cfg.single_node and cfg.peers is not None:
        raise ConfigError(f"{where}: 'single_node: true' and 'peers' contradict each other: a node with peers is not "
                          f"alone")
    if "lease_path" in top:
        cfg.lease_path = top["lease_path"]
    if "metrics" in top:
        metrics = _check("metrics.", data["metrics"], METRICS, where)
        cfg.metrics_port = metrics.get("port", 0)
        cfg.metrics_address = metrics.get("address", cfg.metrics_address)
        if not 0 <= cfg.metrics_port <= 65535:
            raise ConfigError(f"{where}: 'metrics.port' must be 0 (off) to 65535")
    return cfg


def _backend_section(top: dict[str, Any], data: Any, name: str, schema: Mapping[str, tuple[type, bool]], needs: str,
                     where: str) -> dict[str, Any]:
    """The chosen backend's section, validated, its URL checked."""
    if name not in top:
        raise ConfigError(f"{where}: backend {name} needs a '{name}' section ({needs})")
    section = _check(f"{name}.", data[name], schema, where)
    if "urls" in schema:  # the listener: url, or urls (HA listeners, each gets the heartbeats)
        if ("url" in section) == ("urls" in section):
            raise ConfigError(f"{where}: give '{name}.url' (one listener) or '{name}.urls' (HA listeners), not both")
        urls = section.get("urls") or [section["url"]]
        if not urls or not all(isinstance(u, str) for u in urls) or len(set(urls)) != len(urls):
            raise ConfigError(f"{where}: '{name}.urls' must be a list of different URLs, got {urls!r}")
        for i, url in enumerate(urls):
            _url(where, f"{name}.urls[{i}]" if "urls" in section else f"{name}.url", url)
        if section.get("ca_file") and not all(u.startswith("https://") for u in urls):
            raise ConfigError(f"{where}: 'listener.ca_file' needs https:// listener urls")
        return section
    _url(where, f"{name}.url", section["url"])
    return section


def _secret(section: dict[str, Any], name: str, where: str) -> str:
    if name in section and f"{name}_file" in section:
        raise ConfigError(f"{where}: give either '{name}' or '{name}_file', not both")
    if f"{name}_file" in section:
        try:
            return read_secret(section[f"{name}_file"], name)
        except SecretError as exc:
            raise ConfigError(str(exc)) from None
    if section.get(name):
        return str(section[name])
    raise ConfigError(f"{where}: missing '{name}_file' (or '{name}')")


def _address(where: str, name: str, address: object) -> None:
    import ipaddress

    try:
        ipaddress.ip_address(str(address))
    except ValueError:
        raise ConfigError(f"{where}: '{name}' must be an IP address, got {address!r}") from None


def _url(where: str, name: str, url: str) -> None:
    from urllib.parse import urlsplit

    if not (url.startswith("http://") or url.startswith("https://")):
        raise ConfigError(f"{where}: '{name}' must be an http:// or https:// URL, got {url!r}")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises on a port out of range or not a number
    except ValueError as exc:
        raise ConfigError(f"{where}: '{name}' {url!r} is not a valid URL: {exc}") from None
    if not parts.hostname:
        raise ConfigError(f"{where}: '{name}' {url!r} names no host")
    if port == 0:
        raise ConfigError(f"{where}: '{name}' {url!r}: port 0 is not a port")
    if any(c.isspace() for c in url):
        raise ConfigError(f"{where}: '{name}' {url!r} contains white space")
