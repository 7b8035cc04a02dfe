"""The election in etcd v3 (leadership.Elector), through its JSON gateway with etcd3gw.

One key per cluster, `/pubip/<cluster>/leader`, holding the leader's name under its lease. A standby creates
it only if absent (a transaction on create_revision == 0); the key's create revision is the term. A leader
renews its lease and checks, in the same round, that the key is still the one it created.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from ..errors import PubipError


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode()


def _session(ca_file: str | None, cert_file: str | None, key_file: str | None) -> Any:
    """requests' session for etcd: its CA and client certificate, and nothing from the environment (a
    REQUESTS_CA_BUNDLE would replace the CA, an HTTPS_PROXY would route the lease through a proxy)."""
    import requests

    session = requests.Session()
    session.trust_env = False
    system = "/etc/ssl/certs/ca-certificates.crt"  # Debian's and Ubuntu's bundle of the system's CAs
    session.verify = ca_file or (system if os.path.isfile(system) else True)
    if cert_file and key_file:
        session.cert = (cert_file, key_file)
    return session


def parse_endpoint(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an etcd endpoint http(s)://HOST:PORT; PubipError naming it otherwise."""
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rstrip("/").rpartition(":")
    if scheme not in ("http", "https") or not host or not port.isdigit():
        raise PubipError(f"pubip listen: etcd endpoint {url!r} is not http(s)://HOST:PORT")
    return scheme, host.strip("[]"), int(port)


class EtcdElector:
    def __init__(self, endpoints: list[str], cluster: str, timeout: float, ca_file: str | None = None,
                 cert_file: str | None = None, key_file: str | None = None) -> None:
        """ENDPOINTS http(s)://HOST:PORT; over https, etcd's certificate checked against CA_FILE (else the system's
        CAs), and this listener's client certificate CERT_FILE with KEY_FILE when etcd asks for one."""
        try:
            import etcd3gw
        except ImportError as exc:  # the controller extra has it
            raise PubipError("pubip listen: HA needs etcd3gw (pip install 'pubip[controller]')") from exc
        if not endpoints:
            raise PubipError("pubip listen: etcd needs at least one endpoint")
        self._clients = []
        for url in endpoints:
            scheme, host, port = parse_endpoint(url)
            self._clients.append(etcd3gw.client(host=host, port=port, protocol=scheme,
                                                timeout=timeout, api_path="/v3/",
                                                session=_session(ca_file, cert_file, key_file)))
        self.key = f"/pubip/{cluster}/leader"
        self._lease_id: int | None = None
        self._current = 0

    # Each call goes to one endpoint; a failure moves on to the next for the following call.
    def _client(self) -> Any:
        return self._clients[self._current % len(self._clients)]

    def _call(self, fn: Any) -> Any:
        import requests

        client = self._client()
        try:
            return fn(client)
        except (requests.RequestException, ValueError, KeyError) as exc:
            self._current += 1
            raise OSError(f"etcd {client.base_url}: {exc}") from exc
        except Exception as exc:  # etcd3gw's own errors (Etcd3Exception and its kinds)
            if type(exc).__module__.startswith("etcd3gw"):
                self._current += 1
                raise OSError(f"etcd {client.base_url}: {type(exc).__name__}: {exc}") from exc
            raise

    def _refresh(self, client: Any) -> bool:
        """Renew our lease through CLIENT (any endpoint): True while it lives."""
        from etcd3gw.lease import Lease

        return self._lease_id is not None and Lease(self._lease_id, client).refresh() > 0

    def campaign(self, name: str, ttl: int) -> tuple[str | None, int | None]:
        def attempt(client: Any) -> tuple[str | None, int | None]:
            found = client.get(self.key, metadata=True)
            if found:
                value, meta = found[0]
                term = int(meta["create_revision"])
                holder = value.decode()
                if holder == name and str(self._lease_id) == str(meta.get("lease")):
                    # still ours from before a failed renewal: ours again only with the lease renewed now
                    return (name, term) if self._refresh(client) else (None, None)
                return holder, term
            lease = client.lease(ttl=ttl)
            txn = {"compare": [{"key": _b64(self.key), "result": "EQUAL", "target": "CREATE",
                                "create_revision": 0}],
                   "success": [{"request_put": {"key": _b64(self.key), "value": _b64(name), "lease": lease.id}}],
                   "failure": [{"request_range": {"key": _b64(self.key)}}]}
            result = client.transaction(txn)
            if result.get("succeeded"):
                self._lease_id = int(lease.id)
                return name, int(result["header"]["revision"])
            lease.revoke()
            kvs = result["responses"][0]["response_range"].get("kvs", [])
            if not kvs:
                return None, None
            return base64.b64decode(kvs[0]["value"]).decode(), int(kvs[0]["create_revision"])

        return self._call(attempt)  # type: ignore[no-any-return]

    def renew(self, term: int) -> bool:
        def attempt(client: Any) -> bool:
            if not self._refresh(client):
                return False
            found = client.get(self.key, metadata=True)
            return bool(found) and int(found[0][1]["create_revision"]) == term

        return self._call(attempt)  # type: ignore[no-any-return]

    def resign(self, term: int) -> None:
        def attempt(client: Any) -> None:
            from etcd3gw.lease import Lease

            if self._lease_id is not None:
                Lease(self._lease_id, client).revoke()
                self._lease_id = None

        self._call(attempt)
