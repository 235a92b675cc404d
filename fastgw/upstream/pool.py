"""A cluster inside one worker: one keep-alive pool per endpoint and a balancer.

Pool identity is the endpoint (host, port): a connection is reused only for
the endpoint it was opened to. The pool itself (`EndpointPool`) is native,
in fastgw/_native/proxy.pyx, because it is called for every request.
"""
from __future__ import annotations

import logging

from fastgw._native.proxy import EndpointPool
from fastgw.config.schema import format_address
from fastgw.policy.circuit import CircuitBreaker
from fastgw.policy.retry import RetryBudget
from fastgw.proxy.errors import ProxyError
from fastgw.upstream.balancer import NoHealthyEndpoint, build_ring, make_balancer
from fastgw.upstream.discovery import DnsWatcher, FileWatcher
from fastgw.upstream.health import HealthChecker
from fastgw.upstream.outlier import OutlierDetector

log = logging.getLogger("fastgw")

HEALTHY = "healthy"
UNHEALTHY = "unhealthy"   # failing active health checks
EJECTED = "ejected"       # ejected by outlier detection


class ClusterRuntime:
    """A cluster inside one worker: its endpoint pools and its balancer.

    The exchange calls `pick(exchange)` in phase 5 (it may raise a ProxyError
    to refuse, e.g. 503) and, when `watches_outcomes` is set, `report(pool,
    outcome)` once per use of an endpoint (outcome codes in
    fastgw._native.codes: OK, CONNECT_FAILURE, TIMEOUT, RESET, BAD_RESPONSE,
    STATUS_5XX, CANCELLED). A policy that watches outcomes (circuit breaker,
    outlier detection) sets the flag and provides `report`; without one the
    hot path pays one attribute read.

    The circuit breaker (fastgw/policy/circuit.py, per worker) is such a
    policy: present only when the cluster configures `circuit_breaker`.

    Health: the balancer only ever sees the endpoints in service. Active
    checks (upstream/health.py) and outlier detection (upstream/outlier.py)
    call `_states_changed()` when an endpoint goes out or comes back, and the
    balancer is rebuilt over the healthy ones then, never per request (for
    ring_hash from the whole ring built once per endpoint set, so only the
    missing endpoint's keys move). With none healthy, the balancer is a
    `NoHealthyEndpoint` (503 `no_healthy_endpoint`), unless `panic_threshold`
    is set: while fewer than that share of the endpoints are healthy, traffic
    goes to all of them (Envoy's panic mode), as a cluster that is mostly
    "down" is more often a failing check than a failing fleet. A cluster
    without these features builds its balancer once and pays nothing more.

    Discovery (upstream/discovery.py) replaces the endpoint set with
    `set_endpoints`: pools of new endpoints are created, pools of removed
    ones drained (idle connections closed now, connections in use closed
    when their exchange ends).
    """

    __slots__ = ("config", "loop", "pools", "balancer", "watches_outcomes", "breaker", "checker",
                 "outliers", "watcher", "ring", "trusted_proxies", "default_host", "panic",
                 "_return_timer", "retry_budget", "serving")

    def __init__(self, loop, cluster, trusted_proxies=()):
        self.config = cluster
        self.loop = loop
        self.trusted_proxies = trusted_proxies
        self.pools = [EndpointPool(loop, ep, cluster) for ep in cluster.endpoints]
        self.breaker = None
        if cluster.circuit_breaker is not None:
            self.breaker = CircuitBreaker(cluster.circuit_breaker, cluster.name)
        self.checker = None
        self.outliers = None
        self.watcher = None
        self.panic = False
        self._return_timer = None
        if cluster.outlier_detection is not None:
            self.outliers = OutlierDetector(cluster.outlier_detection, cluster.name, clock=loop.time)
        if cluster.health_check is not None:
            self.checker = HealthChecker(loop, cluster.health_check, cluster.name, self._states_changed)
        for pool in self.pools:
            self._watch_pool(pool)
        self.watches_outcomes = self.breaker is not None or self.outliers is not None
        self.retry_budget = RetryBudget(cluster.retry_budget)
        # Host for HTTP/1.0 requests that came without one.
        if cluster.endpoints:
            self.default_host = cluster.endpoints[0].address.encode()
        elif cluster.dns is not None:
            self.default_host = format_address(cluster.dns.name, cluster.dns.port).encode()
        else:
            self.default_host = cluster.name.encode()
        self.ring = build_ring(self.pools) if cluster.lb == "ring_hash" else None
        self.balancer = None
        self._rebuild()
        if cluster.dns is not None:
            self.watcher = DnsWatcher(loop, cluster.dns, cluster.name, "dns", self.set_endpoints, 0)
        elif cluster.endpoints_file is not None:
            self.watcher = FileWatcher(loop, cluster.endpoints_file, cluster.name, "endpoints_file",
                                       self.set_endpoints, len(self.pools))
        if self.watcher is not None:
            self.watcher.start()

    # -- per request -----------------------------------------------------------
    def pick(self, exchange):
        breaker = self.breaker
        if breaker is None:
            return self.balancer.pick(exchange)
        breaker.admit()  # ProxyError 503 circuit_open while open
        try:
            pool = self.balancer.pick(exchange)
        except ProxyError:
            breaker.release()  # e.g. no healthy endpoint: the admission was not used
            raise
        if pool is None:
            breaker.release()
        return pool

    def pick_retry(self, exchange, failed):
        """Phase 5 again for a retry: another endpoint than the one that just
        failed, where the cluster has one in service (the balancer is asked
        twice more, then the next endpoint in service is taken: ring_hash
        would keep answering the same one)."""
        pool = self.pick(exchange)
        serving = self.serving
        if pool is not failed or len(serving) < 2:
            return pool
        for _ in range(2):
            other = self.balancer.pick(exchange)
            if other is not None and other is not failed:
                return other
        try:
            return serving[(serving.index(failed) + 1) % len(serving)]
        except ValueError:  # out of service meanwhile: any endpoint in service will do
            return serving[0]

    def report(self, pool, outcome):
        if self.breaker is not None:
            self.breaker.record(outcome)
        outliers = self.outliers
        if outliers is not None and outliers.record(pool, outcome):
            self._states_changed()
            self._schedule_return()

    # -- endpoint states -------------------------------------------------------
    def state_of(self, pool) -> str:
        if self.checker is not None and not self.checker.is_healthy(pool):
            return UNHEALTHY
        if self.outliers is not None and self.outliers.is_ejected(pool):
            return EJECTED
        return HEALTHY

    def endpoint_states(self):
        """[(pool, state)] for the admin API and readiness: "healthy",
        "unhealthy" (failing active health checks) or "ejected" (outlier
        detection). Without health checking or outlier detection every
        endpoint counts as healthy (as in Envoy): traffic goes to all of them."""
        return [(pool, self.state_of(pool)) for pool in self.pools]

    def _states_changed(self):
        self._rebuild()

    def _rebuild(self):
        """Point the balancer at the endpoints in service (see the class docstring)."""
        pools = self.pools
        cluster = self.config
        serving = pools
        if self.checker is not None or self.outliers is not None:
            serving = [pool for pool in pools if self.state_of(pool) == HEALTHY]
            panic = bool(cluster.panic_threshold) and len(serving) * 100 < cluster.panic_threshold * len(pools)
            if panic != self.panic:
                self.panic = panic
                if panic:
                    log.warning("cluster '%s': %d of %d endpoints healthy, below panic_threshold %g%%: "
                                "balancing over all endpoints (this worker)",
                                cluster.name, len(serving), len(pools), cluster.panic_threshold)
                else:
                    log.info("cluster '%s': %d of %d endpoints healthy, out of panic mode (this worker)",
                             cluster.name, len(serving), len(pools))
            if panic:
                serving = pools
        self.serving = serving
        if pools and not serving:
            self.balancer = NoHealthyEndpoint(cluster.name, len(pools))
            return
        self.balancer = make_balancer(cluster.lb, serving, hash_on=cluster.hash_on,
                                      trusted_proxies=self.trusted_proxies, ring=self.ring)

    def _schedule_return(self):
        """One timer, at the next ejected endpoint's return."""
        when = self.outliers.next_return()
        timer = self._return_timer
        if timer is not None:
            if when is not None and timer.when() <= when:
                return
            timer.cancel()
            self._return_timer = None
        if when is not None:
            self._return_timer = self.loop.call_at(when, self._returns_due)

    def _returns_due(self):
        self._return_timer = None
        if self.outliers.expire():
            self._states_changed()
        self._schedule_return()

    # -- discovery ---------------------------------------------------------------
    def _watch_pool(self, pool):
        if self.outliers is not None:
            self.outliers.add(pool)
        if self.checker is not None:
            self.checker.add(pool)

    def set_endpoints(self, endpoints):
        """Make `endpoints` the cluster's set: keep the pools of endpoints
        still listed (with their weight updated), add new ones, drain removed ones."""
        by_address = {(pool.endpoint.host, pool.endpoint.port): pool for pool in self.pools}
        wanted = {(ep.host, ep.port): ep for ep in endpoints}
        added, removed, reweighted = [], [], False
        pools = []
        for key, endpoint in wanted.items():
            pool = by_address.get(key)
            if pool is None:
                pool = EndpointPool(self.loop, endpoint, self.config)
                self._watch_pool(pool)
                added.append(endpoint.address)
            elif pool.endpoint.weight != endpoint.weight:
                pool.endpoint = endpoint
                reweighted = True
            pools.append(pool)
        for key, pool in by_address.items():
            if key not in wanted:
                removed.append(pool.endpoint.address)
                self._drain(pool)
        if not (added or removed or reweighted):
            return
        self.pools = pools
        if self.config.lb == "ring_hash":
            self.ring = build_ring(pools)
        log.info("discovery: cluster '%s' now has %d endpoint(s)%s%s%s (this worker)", self.config.name, len(pools),
                 f"; added {', '.join(added)}" if added else "", f"; removed {', '.join(removed)}" if removed else "",
                 "; weights changed" if reweighted else "")
        self._rebuild()
        if self.outliers is not None:
            self._schedule_return()

    def _drain(self, pool):
        if self.checker is not None:
            self.checker.remove(pool)
        if self.outliers is not None:
            self.outliers.remove(pool)
        pool.max_idle = 0  # connections in use close when their exchange ends
        pool.close_idle()

    def close(self):
        """Stop the checks, watchers and timers (the worker is draining)."""
        if self.checker is not None:
            self.checker.close()
        if self.watcher is not None:
            self.watcher.close()
        if self._return_timer is not None:
            self._return_timer.cancel()
            self._return_timer = None
