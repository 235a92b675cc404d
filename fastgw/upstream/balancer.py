"""Load balancing over a cluster's endpoint pools.

A balancer only chooses; pools own connections. `pick()` returns an
`EndpointPool` or None when the cluster has no endpoint.
"""
from __future__ import annotations


class RoundRobin:
    """Smooth weighted round robin (as nginx does it): with weights 5,1,1 the
    order is a a b a c a a, not a a a a a b c, so no endpoint gets a burst."""

    __slots__ = ("pools", "weights", "current", "total")

    def __init__(self, pools):
        self.pools = list(pools)
        self.weights = [p.endpoint.weight for p in self.pools]
        self.current = [0] * len(self.pools)
        self.total = sum(self.weights)

    def pick(self):
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

    def pick(self):
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


BALANCERS = {"round_robin": RoundRobin, "least_request": LeastRequest}


def make_balancer(kind: str, pools):
    return BALANCERS[kind](pools)
