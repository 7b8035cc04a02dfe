"""Talk to the listener from the controller namespace, as watchdogs (and attackers) would.

Usage: python listener_client.py URL SECRETS MODE N
MODE: burst (N signed takeover-run requests at once, spread over the nodes), forged (N requests: wrong
secret, unknown node, replayed nonce, stale timestamp, no signature, oversized body), wait (one signed
request that waits for its run). Prints a JSON summary of the HTTP answers.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "watchdog"))
from pubip import protocol as auth


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json",
                                                                        **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return -1  # no answer at all


def main() -> None:
    url, secrets_file, mode, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    secrets = json.loads(Path(secrets_file).read_text())
    nodes = sorted(n for n in secrets if not n.startswith("_"))
    codes: list[int] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        node = nodes[i % len(nodes)]
        body = json.dumps({"node": node, "version": auth.VERSION, "reason": f"test {mode} {i}"}).encode()
        if mode == "burst":
            headers = auth.sign(secrets[node], node, body)
        else:
            kind = i % 6
            if kind == 0:
                headers = auth.sign("not-the-secret", node, body)
            elif kind == 1 and i % 12 == 7:  # a genuine heartbeat's headers, moved to takeover-run
                headers = auth.sign(secrets[node], node, body, "/v1/heartbeat")
            elif kind == 1:
                headers = auth.sign("x", "intruder", body)
            elif kind == 2:  # a replay of a valid request made before
                headers = replay_headers
            elif kind == 3:
                headers = auth.sign(secrets[node], node, body, now=1_000_000.0)
            elif kind == 4:
                headers = {}
            else:
                headers = auth.sign(secrets[node], node, body)
                body = b"{" + b" " * 70000 + b"}"
        code = post(url, body if not (mode == "forged" and i % 6 == 2) else replay_body, headers)
        with lock:
            codes.append(code)

    replay_body = json.dumps({"node": nodes[0], "version": auth.VERSION, "reason": "original"}).encode()
    replay_headers = auth.sign(secrets[nodes[0]], nodes[0], replay_body)
    if mode == "forged":  # the original goes through once (it is genuine, and waits for its run); replays must not
        print(json.dumps({"original": post(url + "?wait=120", replay_body, replay_headers)}), flush=True)
    if mode == "wait":
        node = nodes[0]
        body = json.dumps({"node": node, "version": auth.VERSION, "reason": "waiting"}).encode()
        req = urllib.request.Request(url + "?wait=120", data=body, method="POST",
                                     headers={"Content-Type": "application/json", **auth.sign(secrets[node], node,
                                                                                             body)})
        with urllib.request.urlopen(req, timeout=130) as resp:
            print(resp.read().decode())
        return
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"codes": sorted(codes)}))


if __name__ == "__main__":
    main()
