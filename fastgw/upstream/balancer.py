"""Load balancing over a cluster's endpoint pools.

A balancer only chooses; pools own connections. `pick(exchange)` returns an
`EndpointPool` or None when the cluster has no endpoint. The exchange is
there for balancers that choose by request (ring_hash reads its headers or
client address); the others ignore it, so round robin costs nothing more.
Balancers live in one worker and are called from its event loop only.
"""
from __future__ import annotations

import random
from bisect import bisect_left, bisect_right
from hashlib import blake2b

from fastgw.policy.client_ip import client_ip
from fastgw.proxy.errors import ProxyError


class RoundRobin:
    """Smooth weighted round robin (as nginx does it): with weights 5,1,1 the
    order is a a b a c a a, not a a a a a b c, so no endpoint gets a burst."""

    __slots__ = ("pools", "weights", "current", "total")

    def __init__(self, pools):
        self.pools = list(pools)
        self.weights = [p.endpoint.weight for p in self.pools]
        self.current = [0] * len(self.pools)
        self.total = sum(self.weights)

    def pick(self, exchange=None):
        pools = self.pools
        if len(pools) == 1:
            return pools[0]
        if not pools:
            return None
        current, weights = self.current, self.weights
        best = 0
        for i in range(len(pools)):
            current[i] += weights[i]
            if current[i] > current[best]:
                best = i
        current[best] -= self.total
        return pools[best]


class LeastRequest:
    """Fewest requests in flight relative to weight; ties go round robin, so an
    idle cluster still spreads its load."""

    __slots__ = ("pools", "next")

    def __init__(self, pools):
        self.pools = list(pools)
        self.next = 0

    def pick(self, exchange=None):
        pools = self.pools
        n = len(pools)
        if n <= 1:
            return pools[0] if pools else None
        start = self.next
        self.next = (start + 1) % n
        best = pools[start]
        best_load = best.active / best.endpoint.weight
        for k in range(1, n):
            pool = pools[(start + k) % n]
            load = pool.active / pool.endpoint.weight
            if load < best_load:
                best, best_load = pool, load
        return best


class PowerOfTwo:
    """Power of two random choices: draw two different endpoints, each with
    probability proportional to its weight, and take the one with fewer
    requests in flight per unit of weight; on a tie the first drawn. An idle
    cluster therefore gets traffic in proportion to the weights, a loaded one
    moves traffic away from the busiest endpoints without scanning them all.

    `rng` is per worker (a `random.Random` seeded from the OS when the worker
    builds its clusters), so workers do not draw the same sequence.
    """

    __slots__ = ("pools", "weights", "bounds", "total", "uniform", "rng")

    def __init__(self, pools, rng: random.Random | None = None):
        self.pools = list(pools)
        self.weights = [p.endpoint.weight for p in self.pools]
        self.bounds = []          # cumulative weights: endpoint i owns [bounds[i] - w_i, bounds[i])
        running = 0
        for weight in self.weights:
            running += weight
            self.bounds.append(running)
        self.total = running
        self.uniform = len(set(self.weights)) <= 1
        self.rng = rng if rng is not None else random.Random()

    def pick(self, exchange=None):
        pools = self.pools
        n = len(pools)
        if n <= 1:
            return pools[0] if pools else None
        rng = self.rng
        if self.uniform:
            i = rng.randrange(n)
            j = rng.randrange(n - 1)
            if j >= i:
                j += 1
        else:
            # Weighted draw of i, then of j among the others (i's share cut out).
            bounds, weights = self.bounds, self.weights
            i = min(bisect_right(bounds, rng.random() * self.total), n - 1)
            r = rng.random() * (self.total - weights[i])
            if r >= bounds[i] - weights[i]:
                r += weights[i]
            j = min(bisect_right(bounds, r), n - 1)
            if j == i:  # only by float rounding at a boundary
                j = (i + 1) % n
        a, b = pools[i], pools[j]
        if b.active * a.endpoint.weight < a.active * b.endpoint.weight:
            return b
        return a


# Ring points per unit of weight. More points spread keys more evenly (with
# 100, each endpoint's share is within a few percent of its weight's); the
# ring is built once per worker, a request costs one hash and one bisect.
POINTS_PER_WEIGHT = 100
# A cap on the ring's size for very large weights: beyond it the points per
# unit of weight are scaled down (the same in every worker, as it depends on
# the config only).
MAX_RING_POINTS = 160_000


def stable_hash(data: bytes) -> int:
    """64-bit, the same in every process and on every run (no hash seed)."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class RingHash:
    """Consistent hashing on a request key (`hash_on`): `header:NAME` (the
    header's values joined with ", "), `cookie:NAME` or `client_ip` (the
    address client_ip.py resolves, X-Forwarded-For only from trusted proxies).

    Each endpoint owns `POINTS_PER_WEIGHT * weight` points on a 64-bit ring,
    placed by hashing "host:port#n". A request goes to the owner of the first
    point at or after the hash of its key. The ring depends on the endpoint
    addresses and weights only, so every worker and every restart maps a key
    to the same endpoint, and adding an endpoint to N moves only the keys on
    its new arcs, about 1/(N+1) of them.

    A request without the key (no such header or cookie, or an empty value)
    is balanced by smooth weighted round robin instead.
    """

    __slots__ = ("pools", "points", "owners", "kind", "name", "trusted", "fallback")

    def __init__(self, pools, hash_on: str, trusted_proxies: tuple = (), ring: list | None = None):
        """`ring` (from `build_ring`) may hold more endpoints than `pools`: the
        points of the others are skipped, so a key whose endpoint is out of
        service goes to the next point's owner, and every other key stays
        where it was (only the missing endpoint's keys move)."""
        self.pools = list(pools)
        self.fallback = RoundRobin(self.pools)
        kind, _, name = hash_on.partition(":")
        if kind not in ("header", "cookie", "client_ip"):
            raise ValueError(f"unknown hash_on {hash_on!r}")
        self.kind = kind
        # Header names compare case-insensitively, cookie names exactly.
        self.name = name.lower().encode("ascii") if kind == "header" else name.encode("ascii")
        self.trusted = tuple(trusted_proxies)
        if ring is None:
            ring = build_ring(self.pools)
        members = set(self.pools)
        self.points = [point for point, pool in ring if pool in members]
        self.owners = [pool for point, pool in ring if pool in members]

    def key(self, exchange) -> bytes | None:
        """The bytes hashed for this request, or None when it has none."""
        kind = self.kind
        if kind == "header":
            target = self.name
            values = [v for n, v in exchange.request_headers if n.lower() == target]
            return b", ".join(values) or None
        if kind == "cookie":
            target = self.name
            for n, v in exchange.request_headers:
                if n.lower() != b"cookie":
                    continue
                for pair in v.split(b";"):
                    name, eq, value = pair.strip().partition(b"=")
                    if eq and name == target:
                        return value or None
            return None
        peer = exchange.client.peer_ip
        if not self.trusted:
            return peer
        xff = [v for n, v in exchange.request_headers if n.lower() == b"x-forwarded-for"]
        return client_ip(peer, xff, self.trusted)

    def pick(self, exchange=None):
        pools = self.pools
        if len(pools) <= 1:
            return pools[0] if pools else None
        key = self.key(exchange) if exchange is not None else None
        if key is None:
            return self.fallback.pick()
        return self.owner(key)

    def owner(self, key: bytes):
        points = self.points
        index = bisect_left(points, stable_hash(key))  # the first point at or after the hash
        return self.owners[index if index < len(points) else 0]


def build_ring(pools) -> list:
    """[(point, pool)] sorted, for every endpoint in `pools`. The ring depends
    on the endpoints' addresses and weights only; a cluster builds it when its
    endpoint set changes, not when an endpoint's health does."""
    total_weight = sum(p.endpoint.weight for p in pools)
    per_weight = POINTS_PER_WEIGHT
    if total_weight * per_weight > MAX_RING_POINTS:
        per_weight = max(1, MAX_RING_POINTS // total_weight)
    ring = []
    for pool in pools:
        address = pool.endpoint.address.encode()
        for n in range(per_weight * pool.endpoint.weight):
            # The address breaks (astronomically unlikely) hash ties the same way everywhere.
            ring.append((stable_hash(b"%s#%d" % (address, n)), address, pool))
    ring.sort(key=lambda point: point[:2])
    return [(point, pool) for point, _, pool in ring]


class NoHealthyEndpoint:
    """The balancer of a cluster whose endpoints are all out of service
    (failing health checks or ejected) and that has no panic mode: every
    pick is a 503 `no_healthy_endpoint`, decided once when the states
    changed, not per request."""

    __slots__ = ("error_args",)

    def __init__(self, cluster_name: str, total: int):
        self.error_args = (503, "no_healthy_endpoint",
                           f"cluster '{cluster_name}' has no healthy endpoint "
                           f"(all {total} failing health checks or ejected)")

    def pick(self, exchange=None):
        raise ProxyError(*self.error_args)


BALANCERS = {"round_robin": RoundRobin, "least_request": LeastRequest, "p2c": PowerOfTwo,
             "ring_hash": RingHash}


def make_balancer(kind: str, pools, *, hash_on: str | None = None, trusted_proxies: tuple = (),
                  ring: list | None = None):
    """A balancer over `pools` (the endpoints in service). For ring_hash,
    `ring` is the cluster's whole ring (`build_ring` of every endpoint)."""
    if kind == "ring_hash":
        if not hash_on:
            raise ValueError("ring_hash needs hash_on")
        return RingHash(pools, hash_on, trusted_proxies, ring)
    return BALANCERS[kind](pools)
