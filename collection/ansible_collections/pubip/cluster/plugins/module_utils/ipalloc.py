# -*- coding: utf-8 -*-
# Copyright: pubip developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Public IP allocation equal to CTDB's (``ctdb/server/ipalloc*.c``).

Pure functions over plain data: no I/O, no Ansible imports. The takeover run's
action plugin, ``pubip plan`` and the tests all call :func:`allocate`.

The three algorithms (``lcp2``, ``det``, ``nondet``) follow CTDB's code step by
step, tie-breaks and unsigned 32-bit metric arithmetic included, so that the
same input gives the same holders. What is not CTDB's is the bookkeeping: the
LCP2 distance sums are kept incrementally in a NumPy matrix (one column update
per move) instead of being recomputed for every candidate on every step; det and
nondet need no NumPy at all (it is imported only for lcp2: its import alone costs
more than a whole nondet run).
"""

from __future__ import annotations

import ipaddress
import socket

ALGORITHMS = ("lcp2", "det", "nondet")
OPTIONS = ("no_ip_takeover", "no_ip_failback", "force_rebalance_nodes", "home_nodes", "no_ip_host_on_all_disabled")

# CTDB node flag bits (ctdb/protocol/protocol.h).
NODE_FLAGS = {
    "DISCONNECTED": 0x01,
    "UNHEALTHY": 0x02,
    "PERMANENTLY_DISABLED": 0x04,
    "BANNED": 0x08,
    "DELETED": 0x10,
    "STOPPED": 0x20,
}
FLAGS_CANNOT_HOST = 0x3F  # INACTIVE | DISABLED
RUNSTATE_RUNNING = 5

LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG = 0, 1, 3, 5, 10

_M32 = 0xFFFFFFFF
_SELF = 128 * 128  # distance(ip, ip) squared: four equal 32-bit words
_NONE = -1
_BIG = 1 << 62


class AllocationInputError(ValueError):
    """The allocation input is invalid; the message names the culprit."""


def ip_key(text):
    """CTDB's 128-bit ordering key: IPv4 a.b.c.d sorts as ::a.b.c.d."""
    bare = text.split("/", 1)[0]
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            value = int.from_bytes(socket.inet_pton(family, bare), "big")
        except (OSError, ValueError):
            continue
        if family == socket.AF_INET6 and value >> 32 == 0xFFFF:
            value &= 0xFFFFFFFF  # IPv4-mapped: CTDB turns it into IPv4
        if "/" in text:
            ipaddress.ip_interface(text)  # validates the prefix
        return value
    # Not an address: let ipaddress raise its precise ValueError.
    addr = ipaddress.ip_interface(text).ip if "/" in text else ipaddress.ip_address(text)
    if addr.version == 6 and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return int(addr)


def _integer(value):
    return isinstance(value, int) and not isinstance(value, bool)


def check_input(nodes, public_ips, options):
    """Raise AllocationInputError naming the first field of the wrong shape (the values are checked later)."""
    if not isinstance(nodes, list):
        raise AllocationInputError("'nodes' must be a list")
    if not isinstance(public_ips, list):
        raise AllocationInputError("'public_ips' must be a list")
    if not isinstance(options, dict):
        raise AllocationInputError("'options' must be an object")
    for i, node in enumerate(nodes):
        if not isinstance(node, dict):
            raise AllocationInputError("nodes[%d] must be an object, got %r" % (i, node))
        for field in ("flags", "runstate"):
            if field in node and not _integer(node[field]):
                raise AllocationInputError("nodes[%d]: '%s' must be an integer, got %r" % (i, field, node[field]))
    for i, entry in enumerate(public_ips):
        if not isinstance(entry, dict):
            raise AllocationInputError("public_ips[%d] must be an object, got %r" % (i, entry))
        if entry.get("current_pnn") is not None and not _integer(entry["current_pnn"]):
            raise AllocationInputError("public_ips[%d]: 'current_pnn' must be an integer, got %r"
                                       % (i, entry["current_pnn"]))
        for field in ("known_on", "available_on"):
            listed = entry.get(field)
            if listed is not None and not (isinstance(listed, list) and all(_integer(p) for p in listed)):
                raise AllocationInputError("public_ips[%d]: '%s' must be a list of pnns, got %r" % (i, field, listed))
    for key in ("no_ip_takeover", "no_ip_failback", "no_ip_host_on_all_disabled"):
        if options.get(key) is not None and not isinstance(options[key], (bool, int)):
            raise AllocationInputError("option '%s' must be true or false, got %r" % (key, options[key]))
    rebalance = options.get("force_rebalance_nodes")
    if rebalance is not None and not (isinstance(rebalance, list) and all(_integer(p) for p in rebalance)):
        raise AllocationInputError("option 'force_rebalance_nodes' must be a list of pnns, got %r" % (rebalance,))
    home = options.get("home_nodes")
    if home is not None and not isinstance(home, list):
        raise AllocationInputError("option 'home_nodes' must be a list of {ip, pnn}, got %r" % (home,))


def node_can_host(node):
    return (int(node.get("flags", 0)) & FLAGS_CANNOT_HOST) == 0 and int(
        node.get("runstate", RUNSTATE_RUNNING)) == RUNSTATE_RUNNING


def allocate(nodes, public_ips, algorithm="lcp2", options=None):
    """Decide one holder per public IP.

    ``nodes``: ``[{"pnn", "flags", "runstate"}]`` (pnns 0..N-1).
    ``public_ips``: ``[{"ip", "current_pnn", "known_on"?, "available_on"?}]``;
    ``ip`` may carry a prefix (``198.51.100.7/24``), it is kept as given.
    Returns ``{"assignments": [{"ip", "pnn"}], "unassigned": [ip], "log": [(level, line)]}``,
    assignments in CTDB's processing order (descending address key).
    """
    check_input(nodes, public_ips, options if options is not None else {})
    state = _State(nodes, public_ips, algorithm, options or {})
    {"lcp2": _lcp2, "det": _det, "nondet": _nondet}[state.algorithm](state)
    return state.result()


class _State(object):
    def __init__(self, nodes, public_ips, algorithm, options):
        if algorithm not in ALGORITHMS:
            raise AllocationInputError("unknown algorithm %r: use one of %s" % (algorithm, ", ".join(ALGORITHMS)))
        unknown = sorted(set(options) - set(OPTIONS))
        if unknown:
            raise AllocationInputError("unknown option %r: known options are %s" % (unknown[0], ", ".join(OPTIONS)))
        self.algorithm = algorithm
        self.options = options
        self.log = []
        self.n_nodes = len(nodes)
        seen = set()
        for node in nodes:
            pnn = node.get("pnn")
            if not isinstance(pnn, int) or isinstance(pnn, bool) or not 0 <= pnn < len(nodes):
                raise AllocationInputError("node pnn %r out of range: pnns are 0..%d" % (pnn, len(nodes) - 1))
            if pnn in seen:
                raise AllocationInputError("node pnn %d is duplicated" % pnn)
            seen.add(pnn)
        by_pnn = sorted(nodes, key=lambda n: n["pnn"])
        hostable = [node_can_host(n) for n in by_pnn]

        entries = []
        keys = set()
        for entry in public_ips:
            text = entry.get("ip")
            try:
                key = ip_key(str(text))
            except ValueError:
                raise AllocationInputError("invalid public IP %r" % (text,))
            if key in keys:
                raise AllocationInputError("duplicate public IP %s" % text)
            keys.add(key)
            cur = entry.get("current_pnn", -1)
            if cur is None:
                cur = -1
            if not isinstance(cur, int) or not -1 <= cur < self.n_nodes:
                raise AllocationInputError("public IP %s: current_pnn %r is not a node (-1 for none)" % (text, cur))
            for field in ("known_on", "available_on"):
                for pnn in entry.get(field) or ():
                    if not isinstance(pnn, int) or not 0 <= pnn < self.n_nodes:
                        raise AllocationInputError("public IP %s: %s names node %r, which does not exist"
                                                   % (text, field, pnn))
            listed = entry.get("available_on", entry.get("known_on"))
            if listed is None:
                allowed = list(hostable)
            else:
                allowed = [False] * self.n_nodes
                for pnn in listed:
                    allowed[pnn] = hostable[pnn]
            entries.append((key, text, cur, allowed))
        entries.sort(key=lambda e: -e[0])  # CTDB's list order: descending key

        self.keys = [e[0] for e in entries]
        self.ips = [e[1] for e in entries]
        self.owner = [e[2] for e in entries]
        self.can = [e[3] for e in entries]  # can_host(n, ip): can[ip][n]
        no_takeover = bool(options.get("no_ip_takeover"))
        self.take = [[False] * self.n_nodes for _ in entries] if no_takeover else self.can
        self.no_failback = bool(options.get("no_ip_failback"))
        self._words = None

    # --- shared primitives (ipalloc_common.c) -------------------------------
    def emit(self, level, line):
        self.log.append((level, line))

    def coverage(self):
        cov = [0] * self.n_nodes
        for o in self.owner:
            if o >= 0:
                cov[o] += 1
        return cov

    def unassign_unsuitable(self):
        for i, o in enumerate(self.owner):
            if o >= 0 and not self.can[i][o]:
                self.emit(LOG_DEBUG, "Unassign IP: %s from %d" % (self.ips[i], o))
                self.owner[i] = _NONE

    def find_takeover_node(self, i, cov):
        node, best = -1, _BIG
        for n, ok in enumerate(self.take[i]):
            if ok and cov[n] < best:  # only strictly smaller: lowest pnn wins ties
                node, best = n, cov[n]
        if node < 0:
            self.emit(LOG_WARNING, "Could not find node to take over public address '%s'" % self.ips[i])
            return False
        old = self.owner[i]
        if old >= 0:
            cov[old] -= 1
        cov[node] += 1
        self.owner[i] = node
        return True

    def basic_allocate_unassigned(self, cov):
        for i in range(len(self.ips)):
            if self.owner[i] < 0 and not self.find_takeover_node(i, cov):
                self.emit(LOG_WARNING, "Failed to find node to cover ip %s" % self.ips[i])

    # --- LCP2 distances ---------------------------------------------------------
    def words(self, np):
        if self._words is None:
            k = self.keys
            words = [np.array([(x >> s) & _M32 for x in k], dtype=np.uint32) for s in (96, 64, 32, 0)]
            # A word equal across all IPs always contributes 32: skip it.
            self._words = [None if len(w) and (w == w[0]).all() else w for w in words]
        return self._words

    def dist2_rows(self, np, rows):
        """distance(ip_r, ip_c)**2 for r in rows (array) and every c: shape (len(rows), n)."""
        total = None
        for w in self.words(np):
            if w is None:
                part = 32
            else:
                x = w[rows][:, None] ^ w[None, :]
                # leading zeros of a 32-bit word, 32 when equal: 32 - bit_length
                part = 32 - np.frexp(x.astype(np.float64))[1]
            total = part if total is None else total + part
        total = np.broadcast_to(np.asarray(total, dtype=np.int64), (len(rows), len(self.ips)))
        return total ** 2

    def result(self):
        assignments = [{"ip": ip, "pnn": int(o)} for ip, o in zip(self.ips, self.owner)]
        return {
            "assignments": assignments,
            "unassigned": [a["ip"] for a in assignments if a["pnn"] < 0],
            "log": self.log,
        }


def _det(st):
    st.emit(LOG_NOTICE, "Deterministic IPs enabled. Resetting all ip allocations")
    home = {}
    for entry in st.options.get("home_nodes") or ():
        try:
            key, pnn = ip_key(str(entry["ip"])), int(entry["pnn"])
        except (KeyError, TypeError, ValueError):
            raise AllocationInputError("invalid home_nodes entry %r: needs an ip and a pnn" % (entry,))
        if pnn < 0:
            raise AllocationInputError("invalid home_nodes entry %r: pnn must be >= 0" % (entry,))
        home.setdefault(key, pnn)  # the first entry for an address wins
    n = st.n_nodes
    for i in range(len(st.ips)):
        st.owner[i] = i % n if n else _NONE
        pnn = home.get(st.keys[i])
        if pnn is not None:
            if pnn < n:
                st.owner[i] = pnn
            else:
                st.emit(LOG_WARNING, "ipalloc_deterministic: pnn %d too large" % pnn)
    if st.no_failback:
        st.emit(LOG_WARNING, "WARNING: 'NoIPFailback' set but ignored - incompatible with 'Deterministic IPs")
    st.unassign_unsuitable()
    st.basic_allocate_unassigned(st.coverage())


def _nondet(st):
    st.unassign_unsuitable()
    cov = st.coverage()
    st.basic_allocate_unassigned(cov)
    if st.no_failback:
        return
    # basic_failback: the per-IP max/min search depends only on which nodes may
    # take the IP, so it is computed once per distinct node set and scan.
    group_of = {}
    groups = []
    ip_group = []
    for i in range(len(st.ips)):
        row = tuple(st.take[i])
        if row not in group_of:
            group_of[row] = len(groups)
            groups.append([n for n, ok in enumerate(row) if ok])
        ip_group.append(group_of[row])
    num_ips = len(st.ips)
    retries = 0
    while True:
        verdict = {}
        moved = False
        for i in range(num_ips):
            if st.owner[i] < 0:
                continue
            g = ip_group[i]
            if g not in verdict:
                members = groups[g]
                if not members:
                    verdict[g] = None
                else:
                    maxnode, maxcov, mincov = members[0], cov[members[0]], cov[members[0]]
                    for n in members:  # first largest, first smallest (strict comparisons)
                        if cov[n] > maxcov:
                            maxnode, maxcov = n, cov[n]
                        mincov = min(mincov, cov[n])
                    verdict[g] = (maxnode, maxcov, mincov)
            v = verdict[g]
            if v is None:
                st.emit(LOG_WARNING, "Could not find maxnode. May not be able to serve ip '%s'" % st.ips[i])
                continue
            maxnode, maxcov, mincov = v
            if maxcov > mincov + 1 and retries < num_ips + 5:
                tt = st.owner.index(maxnode)
                st.find_takeover_node(tt, cov)
                retries += 1
                moved = True
                break
        if not moved:
            return


def _lcp2(st):
    import numpy as np

    st.unassign_unsuitable()
    can_take = np.array(st.take, dtype=bool).reshape(len(st.ips), st.n_nodes)
    n_ip, n_nodes = len(st.ips), st.n_nodes
    owner = np.array(st.owner, dtype=np.int64).reshape(n_ip)
    # D[i, n] = sum of distance(ip_i, u)**2 over u held by n, ip_i itself included.
    held = np.flatnonzero(owner >= 0)
    dsum = np.zeros((n_ip, n_nodes), dtype=np.int64)
    if len(held):
        onehot = np.zeros((len(held), n_nodes), dtype=np.float64)
        onehot[np.arange(len(held)), owner[held]] = 1.0
        for start in range(0, n_ip, 512):
            rows = np.arange(start, min(start + 512, n_ip))
            w = st.dist2_rows(np, rows)[:, held].astype(np.float64)
            dsum[rows] = np.rint(w @ onehot).astype(np.int64)  # exact: sums < 2**53
    imb = [0] * n_nodes
    for i in held:
        imb[owner[i]] += int(dsum[i, owner[i]]) - _SELF
    imb = [(v // 2) & _M32 for v in imb]

    def move(i, dst):
        col = st.dist2_rows(np, np.array([i]))[0]
        if owner[i] >= 0:
            dsum[:, owner[i]] -= col
        dsum[:, dst] += col
        owner[i] = dst

    candidates = [n for n in range(n_nodes) if not (owner == n).any()]
    for pnn in st.options.get("force_rebalance_nodes") or ():
        if not isinstance(pnn, int) or pnn < 0 or pnn >= n_nodes:
            st.emit(LOG_ERR, "unknown node %s" % pnn)
            continue
        st.emit(LOG_NOTICE, "Forcing rebalancing of IPs to node %d" % pnn)
        if pnn not in candidates:
            candidates.append(pnn)
    candidates.sort()

    # Allocate unassigned: one IP per round, the (ip, node) pair adding the least.
    while True:
        unassigned = np.flatnonzero(owner < 0)
        if len(unassigned) == 0:
            break
        cost = np.where(can_take[unassigned], dsum[unassigned], _BIG)
        flat = int(np.argmin(cost))  # row-major: first in (address, node) order wins ties
        t, d = divmod(flat, n_nodes)
        if cost[t, d] >= _BIG:
            break
        i, s = int(unassigned[t]), int(cost[t, d])
        imb[d] = (imb[d] + s) & _M32
        move(i, d)
        st.emit(LOG_INFO, " %s -> %d [+%d]" % (st.ips[i], d, s))
    for i in np.flatnonzero(owner < 0):
        st.emit(LOG_WARNING, "Failed to find node to cover ip %s" % st.ips[i])

    if not (st.no_failback or not candidates):
        cand = np.array(candidates, dtype=np.int64)
        while _lcp2_failback_once(np, st, can_take, owner, dsum, imb, cand, move):
            pass
    st.owner = [int(o) for o in owner]


def _lcp2_failback_once(np, st, can_take, owner, dsum, imb, cand, move):
    """One walk of the failback loop; True when it moved an IP."""
    order = sorted(range(st.n_nodes), key=lambda n: -imb[n])  # stable: ties keep ascending pnn
    for src in order:
        if imb[src] == 0:
            return False
        mine = np.flatnonzero(owner == src)
        if len(mine) == 0:
            continue
        sd = dsum[mine, src] - _SELF
        srcimbl = (imb[src] - sd) & _M32
        dd = dsum[np.ix_(mine, cand)] - np.where(cand == src, _SELF, 0)[None, :]
        imb_c = np.array([imb[c] for c in cand], dtype=np.int64)
        dstimbl = (imb_c[None, :] + dd) & _M32
        ok = can_take[np.ix_(mine, cand)] & (dstimbl < imb[src]) & (dd < sd[:, None])
        if not ok.any():
            continue
        score = np.where(ok, (srcimbl[:, None] + dstimbl) & _M32, _BIG)
        t, c = divmod(int(np.argmin(score)), len(cand))
        i, d = int(mine[t]), int(cand[c])
        st.emit(LOG_INFO, "%d [%d] -> %s -> %d [+%d]" % (
            src, _s32(int(srcimbl[t]) - imb[src]), st.ips[i], d, _s32(int(dstimbl[t, c]) - imb[d])))
        imb[src], imb[d] = int(srcimbl[t]), int(dstimbl[t, c])
        move(i, d)
        return True
    return False


def _s32(value):
    value &= _M32
    return value - (1 << 32) if value & 0x80000000 else value
