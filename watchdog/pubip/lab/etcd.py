"""A 3-member etcd for the lab's HA listeners: Debian's etcd-server, one member per lab host, started in that
host's namespace like its sshd (and killed with it). Fast timings for a LAN: a 100 ms heartbeat and a 500 ms
election timeout, so that etcd's shortest lease is 1 s and a member's death costs well under a second."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from .base import LabError, run

CLIENT_PORT, PEER_PORT = 2379, 2380
ETCD, ETCDCTL = "/usr/bin/etcd", "/usr/bin/etcdctl"


def endpoints(members: list[dict[str, Any]], tls: dict[str, str] | None = None) -> list[str]:
    return [f"{'https' if tls else 'http'}://{m['address']}:{CLIENT_PORT}" for m in members]


def make_tls(d: Path, members: list[dict[str, Any]]) -> dict[str, str]:
    """A CA, a certificate per member (its address as the subject alternative name; for clients and peers) and
    a client certificate, with openssl, into D: {ca, cert, key} of the client, and each member's in its dir."""
    d.mkdir(parents=True, exist_ok=True)

    def ssl(*args: str) -> None:
        run(["openssl", *args])

    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
        "-subj", "/CN=pubip lab etcd CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
    for who, address in [*((m["name"], m["address"]) for m in members), ("client", None)]:
        key, csr, crt = d / f"{who}.key", d / f"{who}.csr", d / f"{who}.crt"
        ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={who}",
            "-keyout", str(key), "-out", str(csr))
        ext = d / f"{who}.ext"
        san = f"subjectAltName=IP:{address}\n" if address else ""
        ext.write_text("extendedKeyUsage=serverAuth,clientAuth\n" + san)
        ssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(crt))
    for m in members:
        m["tls"] = {"ca": str(d / "ca.crt"), "cert": str(d / f"{m['name']}.crt"), "key": str(d / f"{m['name']}.key")}
    return {"ca": str(d / "ca.crt"), "cert": str(d / "client.crt"), "key": str(d / "client.key")}


def start_member(member: dict[str, Any], members: list[dict[str, Any]], state: str = "new") -> int:
    """Start MEMBER ({name, netns, address, dir}; with `tls` from make_tls: TLS between members and with the
    clients, client certificates required) of the cluster MEMBERS; returns its pid."""
    if not Path(ETCD).exists():
        raise LabError("etcd is not installed: apt-get install etcd-server (make deps does)")
    d = Path(member["dir"])
    d.mkdir(parents=True, exist_ok=True)
    tls = member.get("tls")
    scheme = "https" if tls else "http"
    cluster = ",".join(f"{m['name']}={scheme}://{m['address']}:{PEER_PORT}" for m in members)
    secure = [] if not tls else [
        "--cert-file", tls["cert"], "--key-file", tls["key"], "--trusted-ca-file", tls["ca"], "--client-cert-auth",
        "--peer-cert-file", tls["cert"], "--peer-key-file", tls["key"], "--peer-trusted-ca-file", tls["ca"],
        "--peer-client-cert-auth"]
    log = open(d / "etcd.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        ["ip", "netns", "exec", member["netns"], ETCD, "--name", member["name"], "--data-dir", str(d / "etcd"),
         "--listen-client-urls", f"{scheme}://{member['address']}:{CLIENT_PORT}",
         "--advertise-client-urls", f"{scheme}://{member['address']}:{CLIENT_PORT}",
         "--listen-peer-urls", f"{scheme}://{member['address']}:{PEER_PORT}",
         "--initial-advertise-peer-urls", f"{scheme}://{member['address']}:{PEER_PORT}",
         "--initial-cluster", cluster, "--initial-cluster-state", state, "--initial-cluster-token", "pubip-lab",
         "--heartbeat-interval", "100", "--election-timeout", "500", "--logger", "zap", "--log-level", "warn",
         *secure],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    member["etcd_pid"] = proc.pid
    return proc.pid


def start_cluster(members: list[dict[str, Any]], timeout: float = 20.0) -> None:
    for m in members:
        start_member(m, members)
    wait_healthy(members, timeout)


def wait_healthy(members: list[dict[str, Any]], timeout: float = 20.0) -> None:
    """Until the cluster answers a linearizable read through the first member."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        tls = members[0].get("tls")
        auth = [] if not tls else ["--cacert", tls["ca"], "--cert", tls["cert"], "--key", tls["key"]]
        proc = run(["ip", "netns", "exec", members[0]["netns"], ETCDCTL, "--endpoints",
                    ",".join(endpoints(members, tls)), "--command-timeout", "1s", *auth, "endpoint", "health",
                    "--cluster"], check=False)
        last = proc.stdout + proc.stderr
        if proc.returncode == 0:
            return
        time.sleep(0.2)
    raise LabError(f"the lab's etcd is not healthy after {timeout:.0f}s: {last.strip()[-500:]}")
