"""A cluster inside one worker: one keep-alive pool per endpoint and a balancer.

Pool identity is the endpoint (host, port): a connection is reused only for
the endpoint it was opened to. The pool itself (`EndpointPool`) is native,
in fastgw/_native/proxy.pyx, because it is called for every request.
"""
from __future__ import annotations

from fastgw._native.proxy import EndpointPool
from fastgw.policy.circuit import CircuitBreaker
from fastgw.policy.retry import RetryBudget
from fastgw.upstream.balancer import make_balancer


class ClusterRuntime:
    """A cluster inside one worker: its endpoint pools and its balancer.

    The exchange calls `pick(exchange)` in phase 5 (it may raise a ProxyError
    to refuse, e.g. 503) and, when `watches_outcomes` is set, `report(pool,
    outcome)` once per use of an endpoint (outcome codes in
    fastgw._native.proxy: OK, CONNECT_FAILURE, TIMEOUT, RESET, BAD_RESPONSE,
    STATUS_5XX, CANCELLED). A policy that watches outcomes (circuit breaker,
    outlier detection) sets the flag and provides `report`; without one the
    hot path pays one attribute read.

    The circuit breaker (fastgw/policy/circuit.py, per worker) is such a
    policy: present only when the cluster configures `circuit_breaker`.
    """

    __slots__ = ("config", "pools", "balancer", "watches_outcomes", "breaker", "retry_budget")

    def __init__(self, loop, cluster, trusted_proxies=()):
        self.config = cluster
        self.pools = [EndpointPool(loop, ep, cluster) for ep in cluster.endpoints]
        self.balancer = make_balancer(cluster.lb, self.pools, hash_on=cluster.hash_on,
                                      trusted_proxies=trusted_proxies)
        self.breaker = None
        if cluster.circuit_breaker is not None:
            self.breaker = CircuitBreaker(cluster.circuit_breaker, cluster.name)
        self.watches_outcomes = self.breaker is not None
        self.retry_budget = RetryBudget(cluster.retry_budget)

    def pick(self, exchange):
        breaker = self.breaker
        if breaker is None:
            return self.balancer.pick(exchange)
        breaker.admit()  # ProxyError 503 circuit_open while open
        pool = self.balancer.pick(exchange)
        if pool is None:
            breaker.release()
        return pool

    def pick_retry(self, exchange, failed):
        """Phase 5 again for a retry: another endpoint than the one that just
        failed, where the cluster has one (the balancer is asked twice more,
        then the next endpoint in order is taken: ring_hash would keep
        answering the same one)."""
        pool = self.pick(exchange)
        if pool is not failed or len(self.pools) < 2:
            return pool
        for _ in range(2):
            other = self.balancer.pick(exchange)
            if other is not None and other is not failed:
                return other
        return self.pools[(self.pools.index(failed) + 1) % len(self.pools)]

    def report(self, pool, outcome):
        self.breaker.record(outcome)

    def endpoint_states(self):
        """[(pool, state)] for the admin API and readiness. Without health
        checking or outlier detection every endpoint counts as healthy (as in
        Envoy): traffic goes to all of them."""
        return [(pool, "healthy") for pool in self.pools]

